//! What a member's host does, decided as a sans-IO state machine:
//! [`HostMachine::handle`] takes the time and one [`Input`] (a tick with the
//! chain's mode B state, or the result of the last effect) and returns the
//! next [`Effect`] to carry out, or `None` when the tick's work is done. The
//! executor (the `quartier enclave run` process, or a deterministic test)
//! does only I/O: it reads the chain, calls peers' enclaves, submits
//! transactions and writes the sealed state, and hands each result back.
//!
//! Each tick runs, in order: register the enclave; until a committee is in
//! office, show the enclave the chain's registry, run the DKG if this
//! enclave is the first the registry seats, deliver its confirmation and
//! vote its group key in; once in office, show the enclave the published
//! epoch keys, create the keys of its turn's epochs ahead of their slots
//! (any member for an epoch already open whose turn member has not
//! published it), send its published keys to the others now and then, catch
//! up from a peer when the chain reported slots it did not clear, clear
//! every closed batch in order and post each report when it is its turn (or
//! a turn before it has had a second per member to do so).
//!
//! One effect is outstanding at a time, and every effect gets exactly one
//! input back ([`Effect`] says which). No clock, network or randomness
//! here: the time comes with each call, the enclave's own randomness stays
//! inside the enclave.

use crate::attestation::{Quote, select_committee};
use crate::committee::{GroupPublicKey, GroupSignature};
use crate::coordinator::{SignEffect, SignOutcome, SigningSession};
use crate::dkg::{DkgEffect, DkgOutcome, DkgSession};
use crate::epoch::EpochKeyShare;
use crate::rpc::{Request, Response};
use crate::sealed::Epoch;
use crate::service::{
    ChainError, EnclaveService, FinalizedBatch, FinalizedRecords, KEPT_EPOCHS_BEHIND, KEPT_REPORTS,
    Purpose, ServiceError,
};
use quartier_enclave_proto::report::SlotSummary;
use quartier_ledger::{
    ChainId, Committee, Enclave, Genesis, PostedReport, SealedMarketPolicy, TxBody,
};
use quartier_types::{AccountId, RegionId, Slot};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Microseconds: the machine's clock (the executor's wall clock, so that
/// the ids it numbers keep increasing across restarts).
pub type Micros = u64;

const SECOND: Micros = 1_000_000;

/// The chain's mode B state as the host reads it, once per tick.
#[derive(Clone, Debug)]
pub struct ChainView {
    /// The chain's id.
    pub chain_id: ChainId,
    /// The chain's time (its latest block's), ms.
    pub time_ms: u64,
    /// Slot length, ms.
    pub slot_ms: u64,
    /// How many slots ahead orders may be placed.
    pub lead_slots: u64,
    /// The chain's regions.
    pub regions: Vec<RegionId>,
    /// The sealed market's policy.
    pub policy: SealedMarketPolicy,
    /// The registered enclaves.
    pub enclaves: BTreeMap<AccountId, Enclave>,
    /// The measurements the chain allows now.
    pub measurements: BTreeSet<crate::attestation::Measurement>,
    /// The committee in office.
    pub committee: Option<Committee>,
    /// The group keys of the committee candidates waiting for the
    /// validators' seat vote.
    pub candidates: Vec<GroupPublicKey>,
    /// The published epoch keys.
    pub epochs: BTreeMap<Epoch, [u8; 32]>,
    /// Closed batches awaiting a report.
    pub batches: Vec<(RegionId, Slot)>,
    /// The latest report the chain took, per region.
    pub reports: BTreeMap<RegionId, PostedReport>,
    /// How many consensus validator sets the chain has had (1: the
    /// genesis set only): the enclave learns each change before it checks
    /// a certificate of its epoch.
    pub validator_sets: usize,
}

/// What the machine asks its executor to do; each has one answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Read the chain's genesis document: answer [`Input::Genesis`].
    FetchGenesis,
    /// Read the chain's registry under a finalized block, with the
    /// registrations of `accounts`: answer [`Input::Records`].
    FetchRegistry {
        /// Whose registrations.
        accounts: Vec<AccountId>,
    },
    /// Read the chain's published epoch keys under a finalized block:
    /// answer [`Input::Records`].
    FetchEpochs,
    /// Read the evidence of every validator-set change of the chain:
    /// answer [`Input::ValidatorSets`].
    FetchValidatorSets,
    /// Read a closed batch under a finalized block: answer [`Input::Batch`].
    FetchBatch {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
    },
    /// Read a registered enclave's quote from its host: answer
    /// [`Input::Quote`].
    FetchQuote {
        /// The enclave's account.
        member: AccountId,
    },
    /// Send `request` to the enclave of `member` (this one's included):
    /// answer [`Input::Answer`].
    Call {
        /// The enclave's account.
        member: AccountId,
        /// The request.
        request: Request,
    },
    /// Sign `body` with the enclave's account key and submit it (one
    /// transaction at a time): answer [`Input::Submitted`].
    Submit(TxBody),
    /// Seal the enclave's state and write it: answer [`Input::Sealed`].
    Seal,
}

/// What the executor hands the machine.
#[derive(Clone, Debug)]
pub enum Input {
    /// Start a tick with the chain as read now (ignored while a tick runs).
    Tick(Box<ChainView>),
    /// The genesis document, if it was read.
    Genesis(Option<Genesis>),
    /// Records and their proofs, if they were read.
    Records(Option<FinalizedRecords>),
    /// The batch and its proof, if they were read.
    Batch(Option<Box<FinalizedBatch>>),
    /// The chain's validator-set changes, oldest first, if they were read.
    ValidatorSets(Option<Vec<quartier_light::EpochChange>>),
    /// The quote, if it was read.
    Quote(Option<Box<Quote>>),
    /// The enclave's answer, `None` if none came.
    Answer(Option<Response>),
    /// Whether the transaction was sent.
    Submitted(bool),
    /// Whether the state was written.
    Sealed(bool),
}

/// The host's settings.
#[derive(Clone, Debug)]
pub struct HostSettings {
    /// How many enclaves form the committee (every host of a chain must
    /// agree).
    pub committee_size: usize,
    /// This enclave's quote, registered with its identity key.
    pub quote: Quote,
    /// How many batches this member clears ahead of the chain's reports:
    /// at most [`HostSettings::MAX_CLEARED_AHEAD`] (a batch cleared and
    /// dropped from the enclave's reports before it was signed would never
    /// be signed).
    pub cleared_ahead: usize,
}

impl HostSettings {
    /// Half the reports an enclave keeps.
    pub const MAX_CLEARED_AHEAD: usize = KEPT_REPORTS / 2;

    /// Settings for a committee of `committee_size` and this `quote`, with
    /// the most batches cleared ahead.
    pub fn new(committee_size: usize, quote: Quote) -> HostSettings {
        HostSettings {
            committee_size,
            quote,
            cleared_ahead: Self::MAX_CLEARED_AHEAD,
        }
    }
}

/// A step of a tick's agenda.
#[derive(Clone, Copy, Debug)]
enum Step {
    LearnValidatorSets,
    Register,
    ObserveRegistry,
    FormCommittee,
    ObserveEpochs,
    PublishEpochKey,
    Reshare,
    CatchUp,
    ClearAndReport,
}

/// What to do once a signature is in.
#[derive(Clone, Debug)]
enum Then {
    Activate {
        members: Vec<AccountId>,
        group_key: GroupPublicKey,
    },
    Publish {
        epoch: Epoch,
        public_key: [u8; 32],
    },
    Report {
        summary: SlotSummary,
    },
}

/// What to do once a transaction went out.
#[derive(Clone, Copy, Debug)]
enum Sent {
    Nothing,
    Voted(GroupPublicKey),
}

/// The work in progress, waiting for one input.
#[derive(Debug)]
enum Job {
    Genesis,
    ValidatorSets,
    Registry,
    Epochs,
    /// Seal; then, if `then` is set, submit it (whether or not sealed).
    Seal {
        then: Option<Box<TxBody>>,
    },
    Submit(Sent),
    /// Calls whose answers change nothing here.
    Notify(VecDeque<(AccountId, Request)>),
    Quotes {
        members: Vec<AccountId>,
        quotes: Vec<Quote>,
    },
    Dkg {
        session: Box<DkgSession>,
        members: Vec<AccountId>,
        queue: VecDeque<DkgEffect>,
    },
    Sign {
        session: Box<SigningSession>,
        members: Vec<AccountId>,
        queue: VecDeque<SignEffect>,
        then: Box<Then>,
    },
    /// A new epoch key being sealed; then its shares go out and it is signed.
    Created {
        epoch: Epoch,
        public_key: [u8; 32],
        shares: Vec<EpochKeyShare>,
    },
    Sharing {
        calls: VecDeque<(AccountId, Request)>,
        epoch: Epoch,
        public_key: [u8; 32],
    },
    CatchingUp {
        from: VecDeque<AccountId>,
        signed: Vec<(SlotSummary, GroupSignature)>,
        reported: BTreeMap<RegionId, Slot>,
    },
    Clearing {
        region: RegionId,
        slot: Slot,
        rest: VecDeque<(RegionId, Slot)>,
    },
    /// Sealing after a clearing; then the batches go on from `slot`.
    Cleared {
        region: RegionId,
        slot: Slot,
        rest: VecDeque<(RegionId, Slot)>,
    },
}

/// One member's host, as a state machine.
#[derive(Debug)]
pub struct HostMachine {
    settings: HostSettings,
    view: Option<Box<ChainView>>,
    agenda: VecDeque<Step>,
    job: Option<Job>,
    genesis: Option<Genesis>,
    /// The group key this member voted for, and when.
    voted: Option<(GroupPublicKey, Micros)>,
    /// The committee whose member caught up last (taking over once is
    /// enough).
    took_over: Option<GroupPublicKey>,
    /// The latest signing session and DKG attempt this host coordinated.
    last_session: u64,
    last_attempt: u64,
    reshared_at: Option<Micros>,
    certified_at: Option<Micros>,
    observed_at: Option<Micros>,
    epochs_observed_at: Option<Micros>,
    epochs_seen: BTreeSet<Epoch>,
    /// When each batch was first seen cleared here.
    cleared_at: BTreeMap<(RegionId, Slot), Micros>,
    /// When each unpublished epoch was first seen due.
    due_at: BTreeMap<Epoch, Micros>,
    now: Micros,
}

impl HostMachine {
    /// A host with nothing done yet (a restarted host starts here too: what
    /// must survive a restart is in the enclave's sealed state).
    pub fn new(settings: HostSettings) -> HostMachine {
        HostMachine {
            settings,
            view: None,
            agenda: VecDeque::new(),
            job: None,
            genesis: None,
            voted: None,
            took_over: None,
            last_session: 0,
            last_attempt: 0,
            reshared_at: None,
            certified_at: None,
            observed_at: None,
            epochs_observed_at: None,
            epochs_seen: BTreeSet::new(),
            cleared_at: BTreeMap::new(),
            due_at: BTreeMap::new(),
            now: 0,
        }
    }

    /// Whether a tick is running (its effects not all answered).
    pub fn busy(&self) -> bool {
        self.job.is_some() || !self.agenda.is_empty()
    }

    /// Takes `input` at time `now`; the next effect, or `None` once the
    /// tick is done. `local` is this host's enclave.
    pub fn handle(
        &mut self,
        now: Micros,
        input: Input,
        local: &mut EnclaveService,
    ) -> Option<Effect> {
        self.now = now;
        match (self.job.take(), input) {
            (None, Input::Tick(view)) if self.agenda.is_empty() => {
                self.agenda = self.plan(&view, local);
                self.view = Some(view);
            }
            (None, _) => return None,
            // A tick while one runs: ignored, the job still waits for its
            // answer.
            (Some(job), Input::Tick(_)) => {
                self.job = Some(job);
                return None;
            }
            (Some(job), input) => {
                if let Some(effect) = self.resume(job, input, local) {
                    return Some(effect);
                }
            }
        }
        self.next_step(local)
    }

    /// The steps of a tick, from the chain's state and the enclave's.
    fn plan(&self, view: &ChainView, local: &EnclaveService) -> VecDeque<Step> {
        let mut steps = self.steps(view, local);
        // First the validator-set changes the enclave has not learnt: it
        // checks every certificate against the set of its epoch.
        let known = self
            .genesis
            .as_ref()
            .map_or(1, |g| local.validator_sets_known(g));
        if view.validator_sets > known {
            steps.push_front(Step::LearnValidatorSets);
        }
        steps
    }

    fn steps(&self, view: &ChainView, local: &EnclaveService) -> VecDeque<Step> {
        let me = local.account();
        let member = view
            .committee
            .as_ref()
            .is_some_and(|c| c.members.contains(&me));
        let predecessor = view
            .committee
            .as_ref()
            .and_then(|c| c.predecessor.as_ref())
            .is_some_and(|p| p.members.contains(&me));
        // (A member evicted by a revocation is no longer registered, and
        // can not register again; it still clears and reports below, or
        // hands its state over.)
        if !view.enclaves.contains_key(&me) && !member && !predecessor {
            // Not with a measurement the chain does not allow (one revoked:
            // every attempt would be refused).
            if !view.measurements.contains(&self.settings.quote.measurement) {
                return VecDeque::new();
            }
            return VecDeque::from([Step::Register]);
        }
        let Some(committee) = &view.committee else {
            return VecDeque::from([Step::ObserveRegistry, Step::FormCommittee]);
        };
        if !member {
            // Outside the committee: its registry stays current (a
            // committee in office, a revoked measurement), so no DKG takes
            // it in, and a member of the committee it took over from
            // hands its state to the members (who call for it). Registered
            // enclaves form a replacement of one whose members a
            // revocation evicted: it takes office by the validators' vote.
            if committee.evicting() && view.enclaves.contains_key(&me) {
                return VecDeque::from([Step::ObserveRegistry, Step::FormCommittee]);
            }
            return VecDeque::from([Step::ObserveRegistry]);
        }
        if local.group_key() != Some(committee.group_key) {
            return VecDeque::new();
        }
        if committee.predecessor.is_some()
            && local.registry_committee() != Some(committee.group_key)
        {
            // Just seated in another's place: the enclave checks whose state
            // it takes over against the registry that seats it.
            return VecDeque::from([Step::ObserveRegistry, Step::CatchUp]);
        }
        if committee.evicting() {
            // Members of it may read what it would take now: it keys no
            // epoch and hands none on; it clears and reports the batches
            // the chain closed (withdrawals among them) until a committee
            // without them takes office.
            return VecDeque::from([Step::ObserveEpochs, Step::CatchUp, Step::ClearAndReport]);
        }
        VecDeque::from([
            Step::ObserveEpochs,
            Step::PublishEpochKey,
            Step::Reshare,
            Step::CatchUp,
            Step::ClearAndReport,
        ])
    }

    fn view(&self) -> Option<&ChainView> {
        self.view.as_deref()
    }

    fn elapsed(&self, since: Option<Micros>, at_least: Micros) -> bool {
        since.is_none_or(|at| self.now.saturating_sub(at) >= at_least)
    }

    /// Runs agenda steps until one waits for an effect.
    fn next_step(&mut self, local: &mut EnclaveService) -> Option<Effect> {
        while let Some(step) = self.agenda.pop_front() {
            if let Some(effect) = self.start(step, local) {
                return Some(effect);
            }
        }
        self.view = None;
        None
    }

    /// The effect that reads the genesis document if it is not in (the
    /// step is started again once it is).
    fn need_genesis(&mut self, step: Step) -> Option<Effect> {
        if self.genesis.is_some() {
            return None;
        }
        self.agenda.push_front(step);
        self.job = Some(Job::Genesis);
        Some(Effect::FetchGenesis)
    }

    fn start(&mut self, step: Step, local: &mut EnclaveService) -> Option<Effect> {
        let view = self.view()?.clone();
        match step {
            Step::LearnValidatorSets => {
                if let Some(effect) = self.need_genesis(step) {
                    return Some(effect);
                }
                self.job = Some(Job::ValidatorSets);
                Some(Effect::FetchValidatorSets)
            }
            Step::Register => {
                self.job = Some(Job::Seal {
                    then: Some(Box::new(TxBody::RegisterEnclave {
                        quote: self.settings.quote.clone(),
                        identity_key: local.identity_key(),
                    })),
                });
                Some(Effect::Seal)
            }
            Step::ObserveRegistry => {
                if !self.elapsed(self.observed_at, SECOND) {
                    return None;
                }
                if let Some(effect) = self.need_genesis(step) {
                    return Some(effect);
                }
                self.observed_at = Some(self.now);
                self.job = Some(Job::Registry);
                Some(Effect::FetchRegistry {
                    accounts: self.would_invite(&view),
                })
            }
            Step::FormCommittee => self.form_committee(&view, local),
            Step::ObserveEpochs => self.observe_epochs(&view, local, step),
            Step::PublishEpochKey => self.publish_epoch_key(&view, local),
            Step::Reshare => self.reshare(&view, local),
            Step::CatchUp => self.catch_up(&view, local),
            Step::ClearAndReport => {
                // Batches reported since are no longer counted against the
                // cap below (before, a member at the cap never cleared
                // again: the pruning came after it).
                self.cleared_at.retain(|k, _| view.batches.contains(k));
                let mut batches = view.batches.clone();
                batches.sort_by_key(|(region, slot)| (*slot, *region));
                let rest = batches.into();
                self.clear_from(rest, local)
            }
        }
    }

    /// The committee the registry seats (every host computes the same from
    /// the same view).
    fn would_invite(&self, view: &ChainView) -> Vec<AccountId> {
        // (Outside the committee in office: a replacement's.)
        let registered: Vec<(AccountId, u16)> = view
            .enclaves
            .iter()
            .filter(|(a, _)| {
                view.committee
                    .as_ref()
                    .is_none_or(|c| !c.members.contains(a))
            })
            .map(|(a, e)| (*a, e.vendor))
            .collect();
        select_committee(&registered, self.settings.committee_size)
    }

    /// `n` registered enclaves, spread over the vendors, form the
    /// committee; the first of them runs the DKG; each member delivers its
    /// confirmation to the others every 2 s (one whose confirmation was
    /// lost takes its key with it) and votes for its result, naming the
    /// members the DKG ran with, with the group's signature over them.
    fn form_committee(&mut self, view: &ChainView, local: &mut EnclaveService) -> Option<Effect> {
        let formed = local
            .group_key()
            .zip(local.committee_members().zip(local.committee_threshold()));
        if let Some((group_key, (members, threshold))) = formed {
            let me = local.account();
            if self.elapsed(self.certified_at, 2 * SECOND) {
                self.certified_at = Some(self.now);
                if let Some((round1, signatures)) = local.dkg_certificate() {
                    let request = Request::DkgConfirm { round1, signatures };
                    let calls: VecDeque<_> = members
                        .iter()
                        .filter(|m| **m != me)
                        .map(|m| (*m, request.clone()))
                        .collect();
                    // The vote follows once they are out.
                    self.agenda.push_front(Step::FormCommittee);
                    return self.notify(calls);
                }
            }
            // Once, and again every 10 s while the chain records it neither
            // in office nor as a candidate (a candidate can be pushed out
            // while no seat vote names it).
            let recorded = view.candidates.contains(&group_key)
                || view
                    .committee
                    .as_ref()
                    .is_some_and(|c| c.group_key == group_key);
            if let Some((key, at)) = self.voted
                && key == group_key
                && (recorded || self.now.saturating_sub(at) < 10 * SECOND)
            {
                return None;
            }
            return self.sign(
                local,
                members.clone(),
                threshold,
                Purpose::Committee,
                Then::Activate { members, group_key },
            );
        }
        let members = self.would_invite(view);
        let me = local.account();
        if members.len() < self.settings.committee_size || members.first() != Some(&me) {
            return None;
        }
        self.job = Some(Job::Quotes {
            members: members.clone(),
            quotes: Vec::new(),
        });
        Some(Effect::FetchQuote { member: members[0] })
    }

    fn notify(&mut self, mut calls: VecDeque<(AccountId, Request)>) -> Option<Effect> {
        let (member, request) = calls.pop_front()?;
        self.job = Some(Job::Notify(calls));
        Some(Effect::Call { member, request })
    }

    fn observe_epochs(
        &mut self,
        view: &ChainView,
        local: &EnclaveService,
        step: Step,
    ) -> Option<Effect> {
        // A newly published epoch at once; one the enclave has not
        // settled (its share may come later) once a second.
        let new = view.epochs.keys().any(|e| !self.epochs_seen.contains(e));
        let newest = view.epochs.keys().next_back().map_or(0, |e| e.0);
        let kept = Epoch(newest.saturating_sub(KEPT_EPOCHS_BEHIND));
        let unsettled = view
            .epochs
            .range(kept..)
            .any(|(e, k)| local.settled_epoch_key(*e) != Some(*k));
        // The enclave's certified chain time, which the epochs to create
        // are held to, behind the node's by more than a few seconds (or
        // none yet, after a start): once a second, too.
        let stale = local
            .certified_time_ms()
            .is_none_or(|t| view.time_ms > t.saturating_add(5_000));
        let waited = self.elapsed(self.epochs_observed_at, SECOND);
        if !(new || ((unsettled || stale) && waited)) {
            return None;
        }
        if let Some(effect) = self.need_genesis(step) {
            return Some(effect);
        }
        self.epochs_observed_at = Some(self.now);
        self.epochs_seen = view.epochs.keys().copied().collect();
        self.job = Some(Job::Epochs);
        Some(Effect::FetchEpochs)
    }

    /// The key of the first epoch orders may be placed for now that the
    /// chain has not published: created by the member whose turn it is, or
    /// by any member once it has waited a second per member for it (a
    /// silent or Byzantine turn member does not hold the market up), sealed
    /// before a share leaves, shared with the others and signed. A member
    /// publishes only a key it created itself: a candidate another member
    /// planted (perhaps a different one at each member, which no `t` of
    /// them would sign) never stands in the way. "Now" is the chain time
    /// the enclave checked under a certificate, not the node's word: a
    /// node that shows a far future does not make it spend its candidate
    /// places on epochs the chain refuses.
    fn publish_epoch_key(
        &mut self,
        view: &ChainView,
        local: &mut EnclaveService,
    ) -> Option<Effect> {
        let committee = view.committee.as_ref()?;
        let index = committee
            .members
            .iter()
            .position(|m| *m == local.account())?;
        let now = Slot(local.certified_time_ms()? / view.slot_ms);
        let first = view.policy.epoch_of(now);
        let last = view
            .policy
            .epoch_of(Slot(now.0.saturating_add(view.lead_slots + 1)));
        let n = committee.members.len().max(1) as u64;
        self.due_at
            .retain(|e, _| !view.epochs.contains_key(e) && *e >= first);
        for e in first.0..=last.0 {
            let epoch = Epoch(e);
            if view.epochs.contains_key(&epoch) {
                continue;
            }
            let since = *self.due_at.entry(epoch).or_insert(self.now);
            let turn = usize::try_from(e % n).ok() == Some(index);
            let waited = self.now.saturating_sub(since) >= n * SECOND;
            if !(turn || epoch == first || waited) {
                continue;
            }
            if let Some(public_key) = local.own_epoch_key(epoch) {
                // Shared again first (a share may not have left: a failed
                // seal, a restart), then signed.
                let shares = local.reshare_epoch_key(epoch).ok()?;
                let calls = addressed(local, shares, public_key);
                return self.sharing(local, calls, epoch, public_key);
            }
            let (public_key, shares) = local.create_epoch_key(epoch).ok()?;
            // Sealed before a share leaves: a restart while sending does
            // not make this member create a second key (and if it can not
            // be sealed, no share leaves).
            self.job = Some(Job::Created {
                epoch,
                public_key,
                shares,
            });
            return Some(Effect::Seal);
        }
        None
    }

    /// Every 3 s, every published key this member holds goes again to the
    /// others, each share to its recipient (the member the chain registered
    /// with that identity key): a member that was down when a key was
    /// shared gets it.
    fn reshare(&mut self, view: &ChainView, local: &mut EnclaveService) -> Option<Effect> {
        if !self.elapsed(self.reshared_at, 3 * SECOND) {
            return None;
        }
        self.reshared_at = Some(self.now);
        let mut calls = VecDeque::new();
        for (epoch, public_key) in &view.epochs {
            let Ok(made) = local.reshare_epoch_key(*epoch) else {
                continue;
            };
            calls.extend(addressed(local, made, *public_key));
        }
        self.notify(calls)
    }

    /// Whether this member is in step with the chain's reports; if a slot
    /// was reported that it never cleared (it was down, or slower), or that
    /// it cleared otherwise than the chain took it, it takes a peer's
    /// clearing state at exactly the chain's reports, sealed to its
    /// identity (the enclave checks it against the group-signed reports).
    /// The batches are cleared only once it is in step.
    fn catch_up(&mut self, view: &ChainView, local: &EnclaveService) -> Option<Effect> {
        let committee = view.committee.as_ref()?;
        // What the chain's reports reached, per region, from the committee
        // record (the reports themselves may be pruned from history).
        let reported: BTreeMap<RegionId, Slot> = if committee.last_reported.is_empty() {
            view.reports
                .iter()
                .map(|(r, p)| (*r, p.summary.slot))
                .collect()
        } else {
            committee.last_reported.clone()
        };
        let signed: Vec<(SlotSummary, GroupSignature)> = view
            .reports
            .values()
            .map(|p| (p.summary.clone(), p.signature))
            .collect();
        let mut behind = false;
        for (region, latest) in &reported {
            let cleared = local.last_cleared(*region);
            let diverged = cleared == Some(*latest)
                && view.reports.get(region).is_some_and(|posted| {
                    posted.summary.slot == *latest
                        && local
                            .report(*region, *latest)
                            .is_some_and(|r| r.summary != posted.summary)
                });
            behind |= cleared.is_none_or(|c| c < *latest) || diverged;
        }
        // Seated in another's place and not reported yet: until this member
        // took the state over (the keys of the predecessor's epochs among it,
        // with no region reported at all).
        behind |= committee.predecessor.is_some()
            && !committee.reported
            && self.took_over != Some(committee.group_key);
        if !behind {
            return None;
        }
        // The enclave checks the state against the chain's record of the
        // last reports, in the registry: shown fresh first.
        if self.elapsed(self.observed_at, SECOND) {
            self.agenda.push_front(Step::CatchUp);
            self.agenda.push_front(Step::ObserveRegistry);
            return None;
        }
        let me = local.account();
        // The members of the committee it took over from first: just
        // seated, they alone hold the state.
        let from = committee
            .predecessor
            .iter()
            .flat_map(|p| p.members.iter())
            .chain(committee.members.iter())
            .filter(|m| **m != me)
            .copied()
            .collect();
        self.catch_up_from(from, signed, reported, local)
    }

    fn catch_up_from(
        &mut self,
        mut from: VecDeque<AccountId>,
        signed: Vec<(SlotSummary, GroupSignature)>,
        reported: BTreeMap<RegionId, Slot>,
        local: &EnclaveService,
    ) -> Option<Effect> {
        let Some(member) = from.pop_front() else {
            // No peer's state would do: nothing is cleared this tick.
            self.agenda.clear();
            return None;
        };
        self.job = Some(Job::CatchingUp {
            from,
            signed,
            reported,
        });
        Some(Effect::Call {
            member,
            request: Request::CatchUp {
                to: local.identity_key(),
            },
        })
    }

    /// Clears the closed batches in order from the first of `rest`; reports
    /// the first one due (one report per tick: the next waits for this
    /// one's transaction).
    fn clear_from(
        &mut self,
        mut rest: VecDeque<(RegionId, Slot)>,
        local: &mut EnclaveService,
    ) -> Option<Effect> {
        let view = self.view()?.clone();
        let committee = view.committee.as_ref()?;
        let index = committee
            .members
            .iter()
            .position(|m| *m == local.account())?;
        let n = committee.members.len().max(1);
        while let Some((region, slot)) = rest.pop_front() {
            let done = local.last_cleared(region).is_some_and(|last| last >= slot);
            if !done {
                // Not further ahead of the chain's reports than the
                // enclave keeps reports: one cleared and dropped before it
                // was signed would never be signed.
                let cap = self
                    .settings
                    .cleared_ahead
                    .min(HostSettings::MAX_CLEARED_AHEAD);
                if self.cleared_at.len() >= cap {
                    return None;
                }
                if let Some(effect) = self.need_genesis(Step::ClearAndReport) {
                    // Started again from the beginning once it is in.
                    return Some(effect);
                }
                self.job = Some(Job::Clearing { region, slot, rest });
                return Some(Effect::FetchBatch { region, slot });
            }
            let turn = (index + n - (slot.0 % n as u64) as usize) % n;
            let waited = self
                .cleared_at
                .get(&(region, slot))
                .map_or(Micros::MAX, |at| self.now.saturating_sub(*at));
            if waited < turn as u64 * SECOND {
                continue;
            }
            let Some(summary) = local.report(region, slot).map(|r| r.summary.clone()) else {
                continue;
            };
            return self.sign(
                local,
                committee.members.clone(),
                committee.threshold,
                Purpose::Report { region, slot },
                Then::Report { summary },
            );
        }
        self.cleared_at.retain(|k, _| view.batches.contains(k));
        None
    }

    /// Starts a signing session among `members`.
    fn sign(
        &mut self,
        local: &EnclaveService,
        members: Vec<AccountId>,
        threshold: u16,
        purpose: Purpose,
        then: Then,
    ) -> Option<Effect> {
        // Session ids only increase (the members refuse any other): the
        // clock, or one past the last.
        let session = self.now.max(self.last_session.saturating_add(1));
        let n = u16::try_from(members.len()).ok()?;
        let (session, effects) = SigningSession::start(local, session, purpose, n, threshold);
        self.last_session = session.session();
        self.signing(local, Box::new(session), members, effects.into(), then)
    }

    fn signing(
        &mut self,
        local: &EnclaveService,
        session: Box<SigningSession>,
        members: Vec<AccountId>,
        mut queue: VecDeque<SignEffect>,
        then: Then,
    ) -> Option<Effect> {
        self.last_session = self.last_session.max(session.session());
        if let Some(SignEffect::Call { member, request }) = queue.front().cloned() {
            let Some(account) = members.get(usize::from(member)).copied() else {
                // No such member: answered as silent.
                queue.pop_front();
                let more = {
                    let mut s = session;
                    let more = s.reply(local, member, None);
                    queue.extend(more);
                    s
                };
                return self.signing(local, more, members, queue, then);
            };
            self.job = Some(Job::Sign {
                session,
                members,
                queue,
                then: Box::new(then),
            });
            return Some(Effect::Call {
                member: account,
                request,
            });
        }
        let SignOutcome::Signed(signature) = session.outcome() else {
            return None;
        };
        let body = match then {
            Then::Activate { members, group_key } => {
                let body = TxBody::ActivateCommittee {
                    members,
                    group_key,
                    signature: *signature,
                };
                self.job = Some(Job::Submit(Sent::Voted(group_key)));
                return Some(Effect::Submit(body));
            }
            Then::Publish { epoch, public_key } => TxBody::PublishEpochKey {
                epoch,
                public_key,
                signature: *signature,
            },
            Then::Report { summary } => TxBody::PostSettlementReport {
                summary,
                signature: *signature,
            },
        };
        self.job = Some(Job::Submit(Sent::Nothing));
        Some(Effect::Submit(body))
    }

    /// Continues `job` with the answer to its effect; the next effect, or
    /// `None` when the step is done.
    fn resume(&mut self, job: Job, input: Input, local: &mut EnclaveService) -> Option<Effect> {
        match (job, input) {
            (Job::Genesis, Input::Genesis(genesis)) => {
                self.genesis = genesis;
                if self.genesis.is_none() {
                    // Not read: the step that needed it waits a tick.
                    self.agenda.pop_front();
                }
                None
            }
            (Job::ValidatorSets, Input::ValidatorSets(changes)) => {
                let (Some(changes), Some(genesis)) = (changes, &self.genesis) else {
                    return None;
                };
                // A change that does not follow (a node's forgery) is not
                // learnt; the next tick reads them again, perhaps from
                // another node.
                let _ = local.learn_validator_sets(genesis, &changes);
                None
            }
            (Job::Registry, Input::Records(records)) => {
                let (Some(records), Some(genesis)) = (records, &self.genesis) else {
                    return None;
                };
                if local.observe_registry(genesis, &records).is_err() {
                    // Perhaps a node's genesis of another chain: read it
                    // again.
                    self.genesis = None;
                }
                None
            }
            (Job::Epochs, Input::Records(records)) => {
                let (Some(records), Some(genesis)) = (records, &self.genesis) else {
                    return None;
                };
                match local.observe_epochs(genesis, &records) {
                    Ok(true) => {
                        self.job = Some(Job::Seal { then: None });
                        Some(Effect::Seal)
                    }
                    Ok(false) => None,
                    Err(why) => {
                        if matches!(why, ServiceError::Chain(ChainError::OtherChain)) {
                            self.genesis = None;
                        }
                        None
                    }
                }
            }
            (Job::Seal { then }, Input::Sealed(_)) => {
                let body = then?;
                self.job = Some(Job::Submit(Sent::Nothing));
                Some(Effect::Submit(*body))
            }
            (Job::Submit(sent), Input::Submitted(ok)) => {
                if let (Sent::Voted(key), true) = (sent, ok) {
                    self.voted = Some((key, self.now));
                }
                None
            }
            (Job::Notify(calls), Input::Answer(_)) => self.notify(calls),
            (
                Job::Quotes {
                    members,
                    mut quotes,
                },
                Input::Quote(quote),
            ) => {
                let view = self.view()?;
                let member = members.get(quotes.len())?;
                let registered = view.enclaves.get(member)?.identity_key;
                // The quote its host serves for the identity the chain
                // registered (the enclaves check the quotes themselves).
                let quote = quote.filter(|q| q.report_data[..32] == registered)?;
                quotes.push(*quote);
                if let Some(next) = members.get(quotes.len()) {
                    let member = *next;
                    self.job = Some(Job::Quotes { members, quotes });
                    return Some(Effect::FetchQuote { member });
                }
                self.run_dkg(local, members, quotes)
            }
            (
                Job::Dkg {
                    mut session,
                    members,
                    mut queue,
                },
                Input::Answer(answer),
            ) => {
                if let Some(DkgEffect::Call { member, .. }) = queue.pop_front() {
                    queue.extend(session.reply(member, answer));
                }
                self.dkg_next(session, members, queue)
            }
            (
                Job::Sign {
                    mut session,
                    members,
                    mut queue,
                    then,
                },
                Input::Answer(answer),
            ) => {
                if let Some(SignEffect::Call { member, .. }) = queue.pop_front() {
                    queue.extend(session.reply(local, member, answer));
                }
                self.signing(local, session, members, queue, *then)
            }
            (
                Job::Created {
                    epoch,
                    public_key,
                    shares,
                },
                Input::Sealed(sealed),
            ) => {
                if !sealed {
                    return None;
                }
                // Each share to its recipient (it opens only there).
                let calls = addressed(local, shares, public_key);
                self.sharing(local, calls, epoch, public_key)
            }
            (
                Job::Sharing {
                    calls,
                    epoch,
                    public_key,
                },
                Input::Answer(_),
            ) => self.sharing(local, calls, epoch, public_key),
            (
                Job::CatchingUp {
                    from,
                    signed,
                    reported,
                },
                Input::Answer(answer),
            ) => {
                if let Some(Response::CatchUp(state)) = answer {
                    // Only a state at exactly the chain's reports: one
                    // that cleared further holds slots whose reports this
                    // member would never have computed.
                    let cleared: BTreeMap<RegionId, Slot> = state.cleared.iter().copied().collect();
                    if cleared == reported && local.catch_up(&state, &signed).is_ok() {
                        self.took_over = local.group_key();
                        self.job = Some(Job::Seal { then: None });
                        return Some(Effect::Seal);
                    }
                }
                self.catch_up_from(from, signed, reported, local)
            }
            (Job::Clearing { region, slot, rest }, Input::Batch(batch)) => {
                let (Some(batch), Some(genesis)) = (batch, &self.genesis) else {
                    return None;
                };
                match local.clear_finalized(genesis, region, slot, &batch) {
                    Ok(_) => {
                        self.job = Some(Job::Cleared { region, slot, rest });
                        Some(Effect::Seal)
                    }
                    Err(why) => {
                        if matches!(why, ServiceError::Chain(ChainError::OtherChain)) {
                            self.genesis = None;
                        }
                        // E.g. a published epoch key whose share never
                        // arrived: the batches wait.
                        None
                    }
                }
            }
            (
                Job::Cleared {
                    region,
                    slot,
                    mut rest,
                },
                Input::Sealed(_),
            ) => {
                self.cleared_at.insert((region, slot), self.now);
                rest.push_front((region, slot));
                self.clear_from(rest, local)
            }
            // An answer that is not the one awaited: the step ends.
            (_, _) => None,
        }
    }

    fn sharing(
        &mut self,
        local: &EnclaveService,
        mut calls: VecDeque<(AccountId, Request)>,
        epoch: Epoch,
        public_key: [u8; 32],
    ) -> Option<Effect> {
        if let Some((member, request)) = calls.pop_front() {
            self.job = Some(Job::Sharing {
                calls,
                epoch,
                public_key,
            });
            return Some(Effect::Call { member, request });
        }
        let committee = self.view()?.committee.clone()?;
        self.sign(
            local,
            committee.members,
            committee.threshold,
            Purpose::EpochKey { epoch, public_key },
            Then::Publish { epoch, public_key },
        )
    }

    fn run_dkg(
        &mut self,
        local: &EnclaveService,
        members: Vec<AccountId>,
        quotes: Vec<Quote>,
    ) -> Option<Effect> {
        let view = self.view()?;
        let t = view.policy.threshold;
        let chain = view.chain_id.0.0;
        // Each attempt later than the last (members start over only for a
        // later one): the clock, or one past the last.
        let attempt = self.now.max(self.last_attempt.saturating_add(1));
        self.last_attempt = attempt;
        let (session, effects) = DkgSession::start(local, chain, t, attempt, quotes);
        self.dkg_next(Box::new(session), members, effects.into())
    }

    fn dkg_next(
        &mut self,
        mut session: Box<DkgSession>,
        members: Vec<AccountId>,
        mut queue: VecDeque<DkgEffect>,
    ) -> Option<Effect> {
        while let Some(DkgEffect::Call { member, request }) = queue.front().cloned() {
            if let Some(account) = members.get(usize::from(member)).copied() {
                self.job = Some(Job::Dkg {
                    session,
                    members,
                    queue,
                });
                return Some(Effect::Call {
                    member: account,
                    request,
                });
            }
            queue.pop_front();
            queue.extend(session.reply(member, None));
        }
        if matches!(session.outcome(), DkgOutcome::Formed(_)) {
            self.job = Some(Job::Seal { then: None });
            return Some(Effect::Seal);
        }
        None
    }
}

/// `shares` of the epoch key `public_key`, each addressed to the committee
/// member whose identity key its recipient is, as this enclave's DKG bound
/// them (not the node's word; none for a recipient it does not know).
fn addressed(
    local: &EnclaveService,
    shares: Vec<EpochKeyShare>,
    public_key: [u8; 32],
) -> VecDeque<(AccountId, Request)> {
    shares
        .into_iter()
        .filter_map(|share| {
            let member = local.member_with_identity(&share.to)?;
            Some((member, Request::ReceiveEpochKey { share, public_key }))
        })
        .collect()
}
