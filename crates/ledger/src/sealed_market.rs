//! Privacy mode B on chain (DESIGN §7): enclave registration, the committee,
//! epoch keys, sealed orders, custody and threshold-signed reports.
//!
//! The chain never sees an order's content. It checks who may do what, keeps
//! the sealed orders of each slot in arrival order, and at the slot's gate
//! freezes them with the region's deposits and withdrawal requests into a
//! [`SealedBatch`]. Every enclave clears the same batch from the same prepaid
//! ledger, so honest enclaves compute the same [`SlotSummary`]; the chain
//! accepts it only with the committee's group signature and moves the money
//! it implies between custody, the utility, the DSO and the payees.
//!
//! # Invariant
//! IOU supply = Σ balances + escrow + custody.

use crate::accounts::{credit, lock, positive, set_balance};
use crate::books::check_slot_open;
use crate::context::Event;
use crate::error::require;
use crate::registry::active_meter;
use crate::state::StateKey;
use crate::state::{
    Committee, CommitteeCandidate, CommitteeVote, CustodyFlows, Enclave, PostedReport, Predecessor,
    SealedBatch, SealedEntry,
};
use crate::tx::MeterRole;
use crate::{BlockContext, Role, State, TxError};
use quartier_enclave_proto::attestation::Quote;
use quartier_enclave_proto::committee::{
    GroupPublicKey, GroupSignature, committee_message, report_message,
};
use quartier_enclave_proto::epoch::KEPT_EPOCHS_BEHIND;
use quartier_enclave_proto::epoch::epoch_key_message;
use quartier_enclave_proto::report::{FIRST_LEDGER, SlotSummary};
use quartier_enclave_proto::sealed::{CIPHERTEXT_LEN, Epoch, SealedOrder};
use quartier_types::{AccountId, Energy, Height, Money, RegionId, Slot};

/// The most members a committee may have (bounds the transaction size).
pub const MAX_COMMITTEE: usize = 16;
/// The most payouts one report may carry (bounds the transaction size).
pub const MAX_PAYOUTS: usize = 8;
/// How many recent epoch keys the state keeps.
pub const KEPT_EPOCHS: usize = 16;

/// Whether a batch of `epoch` is past the erasure schedule once `newest` is
/// the newest published epoch.
fn past_erasure(epoch: Epoch, newest: Option<Epoch>) -> bool {
    newest.is_some_and(|n| epoch.0 < n.0.saturating_sub(KEPT_EPOCHS_BEHIND))
}

pub(crate) fn policy(state: &State) -> Result<crate::SealedMarketPolicy, TxError> {
    state
        .genesis()
        .sealed_market
        .clone()
        .ok_or(TxError::NoSealedMarket)
}

fn registered_enclave(state: &State, signer: &AccountId) -> Result<(), TxError> {
    require(state.records.enclaves.contains_key(signer), Role::Enclave)
}

pub(crate) fn register_enclave(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    quote: &Quote,
    identity_key: [u8; 32],
) -> Result<Vec<Event>, TxError> {
    let policy = policy(state)?;
    if state.records.enclaves.contains_key(&signer) {
        return Err(TxError::EnclaveRegistered);
    }
    let (vendor, attested) = quartier_enclave_proto::attestation::verify_vendor(
        &policy.attestation,
        quote,
        &state.records.measurements,
    )
    .map_err(TxError::Attestation)?;
    if attested.report_data[..32] != identity_key || attested.report_data[32..] != signer.0 {
        return Err(TxError::QuoteBinding);
    }
    state.records.enclaves.insert(
        signer,
        Enclave {
            identity_key,
            measurement: attested.measurement,
            vendor,
            registered: ctx.height,
        },
    );
    state.touch(StateKey::Enclave(signer));
    Ok(vec![Event::EnclaveRegistered { enclave: signer }])
}

pub(crate) fn activate_committee(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    members: &[AccountId],
    (group_key, signature): (GroupPublicKey, &GroupSignature),
) -> Result<Vec<Event>, TxError> {
    let policy = policy(state)?;
    registered_enclave(state, &signer)?;
    let ascending = members.windows(2).all(|w| w[0] < w[1]);
    let valid = ascending
        && members.len() >= usize::from(policy.threshold)
        && members.len() <= MAX_COMMITTEE
        && members.contains(&signer)
        && members
            .iter()
            .all(|m| state.records.enclaves.contains_key(m));
    if !valid {
        return Err(TxError::InvalidCommittee);
    }
    let vendors: Vec<u16> = members
        .iter()
        .filter_map(|m| state.records.enclaves.get(m).map(|e| e.vendor))
        .collect();
    if !policy.vendors.admits(&vendors, policy.threshold) {
        return Err(TxError::VendorPolicy);
    }
    // The group itself says what it is: its key signs these members and the
    // policy's threshold only if at least that many members ran their DKG
    // for exactly them and that threshold (each signs its own DKG's).
    let accounts: Vec<[u8; 32]> = members.iter().map(|m| m.0).collect();
    group_key
        .verify(
            &committee_message(&state.chain_id().0.0, policy.threshold, &accounts),
            signature,
        )
        .map_err(|_| TxError::InvalidGroupSignature)?;
    let vote = CommitteeVote {
        members: members.to_vec(),
        group_key,
    };
    let unanimous = members
        .iter()
        .all(|m| *m == signer || state.records.committee_votes.get(m) == Some(&vote));
    if !unanimous {
        state.records.committee_votes.insert(signer, vote);
        state.touch(StateKey::CommitteeVote(signer));
        return Ok(Vec::new());
    }
    // The committee in office holds the prepaid ledgers behind custody: a
    // DKG of any enclaves whose hosts agree (registering needs only a
    // genuine quote) does not take over by their votes. Only the chain's
    // first committee does, under a genesis that says so; any other is a
    // candidate the validators may seat.
    let by_itself = state.records.committee.is_none()
        && policy.first_committee == crate::FirstCommittee::ByItsMembers;
    let known = state.records.committee_candidates.contains_key(&group_key)
        || state
            .records
            .committee
            .as_ref()
            .is_some_and(|c| c.group_key == group_key);
    // An enclave stands in one candidate at a time: a later one of its
    // members replaces the earlier (a few enclaves can not fill every place
    // with committee after committee of themselves).
    let sharing: Vec<GroupPublicKey> = state
        .records
        .committee_candidates
        .values()
        .filter(|c| c.members.iter().any(|m| members.contains(m)))
        .map(|c| c.group_key)
        .collect();
    // Checked before anything is written.
    let dropped = if by_itself || known || !sharing.is_empty() {
        None
    } else {
        room_for_a_candidate(state)?
    };
    for m in members {
        if state.records.committee_votes.remove(m).is_some() {
            state.touch(StateKey::CommitteeVote(*m));
        }
    }
    let candidate = CommitteeCandidate {
        members: vote.members,
        group_key,
        threshold: policy.threshold,
        voted: ctx.height,
    };
    if by_itself {
        return Ok(seat(state, ctx.height, candidate));
    }
    if known {
        // Voted for again (a host that restarted): it stays as recorded.
        return Ok(Vec::new());
    }
    for key in dropped.into_iter().chain(sharing) {
        state.records.committee_candidates.remove(&key);
    }
    state
        .records
        .committee_candidates
        .insert(group_key, candidate);
    state.touch(StateKey::CommitteeCandidates);
    Ok(vec![Event::CommitteeCandidate { group_key }])
}

/// The most committee candidates the chain keeps.
pub const MAX_CANDIDATES: usize = 8;

/// Whether another candidate fits: `Ok(None)` if there is room, the key of
/// the oldest candidate no open `SeatCommittee` proposal names (dropped to
/// make room) if they are [`MAX_CANDIDATES`], and an error if every one is
/// named: enclaves that vote for committee after committee can not push
/// out the candidate the validators are voting on.
fn room_for_a_candidate(state: &State) -> Result<Option<GroupPublicKey>, TxError> {
    let candidates = &state.records.committee_candidates;
    if candidates.len() < MAX_CANDIDATES {
        return Ok(None);
    }
    let proposed: Vec<GroupPublicKey> = state
        .proposals()
        .filter_map(|(_, p)| match p.change {
            crate::GovernanceChange::SeatCommittee(key) => Some(key),
            _ => None,
        })
        .collect();
    candidates
        .values()
        .filter(|c| !proposed.contains(&c.group_key))
        .min_by_key(|c| c.voted)
        .map(|c| Some(c.group_key))
        .ok_or(TxError::CandidatesFull)
}

/// Seats `candidate` from the next block on, in place of the committee in
/// office: it clears from that committee's prepaid ledgers and after its
/// last closed batches (so it takes over only with their state, handed on
/// by members of both), and keys only epochs after the last one published.
pub(crate) fn seat(state: &mut State, height: Height, candidate: CommitteeCandidate) -> Vec<Event> {
    let previous = state.records.committee.take();
    let first_epoch = match (&previous, state.records.epochs.last_key_value()) {
        (Some(p), Some((last, _))) => p.first_epoch.max(Epoch(last.0.saturating_add(1))),
        (Some(p), None) => p.first_epoch,
        (None, _) => Epoch(0),
    };
    let identities = candidate
        .members
        .iter()
        .map(|m| {
            state
                .records
                .enclaves
                .get(m)
                .map_or([0; 32], |e| e.identity_key)
        })
        .collect();
    let (ledgers, closed, last_reported, predecessor) = match previous {
        Some(c) => {
            // A committee that never reported may never have taken its
            // predecessor's state over: the state is still theirs (two
            // seats in a row lost it for good; found by review).
            let predecessor = match c.predecessor {
                Some(p) if !c.reported => Some(p),
                _ => Some(Predecessor {
                    group_key: c.group_key,
                    members: c.members,
                    identities: c.identities,
                }),
            };
            (c.ledgers, c.closed, c.last_reported, predecessor)
        }
        None => Default::default(),
    };
    let group_key = candidate.group_key;
    if state
        .records
        .committee_candidates
        .remove(&group_key)
        .is_some()
    {
        state.touch(StateKey::CommitteeCandidates);
    }
    state.records.committee = Some(Committee {
        members: candidate.members,
        group_key,
        threshold: candidate.threshold,
        since: height,
        ledgers,
        closed,
        evicted: Vec::new(),
        first_epoch,
        identities,
        predecessor,
        last_reported,
        reported: false,
    });
    state.touch(StateKey::Committee);
    vec![Event::CommitteeActivated { group_key }]
}

/// Evicts the enclaves of a revoked `measurement`: they leave the registry
/// (and with it every transaction an enclave signs), votes and candidates
/// with one of them are dropped, and the committee in office records its
/// members of it as evicted.
pub(crate) fn evict(
    state: &mut State,
    measurement: quartier_enclave_proto::attestation::Measurement,
) {
    let evicted: Vec<AccountId> = state
        .records
        .enclaves
        .iter()
        .filter(|(_, e)| e.measurement == measurement)
        .map(|(a, _)| *a)
        .collect();
    for account in &evicted {
        state.records.enclaves.remove(account);
        state.touch(StateKey::Enclave(*account));
    }
    // Their votes, and every vote or candidate naming one of them (it could
    // never take office now).
    let names_one = |members: &[AccountId]| members.iter().any(|m| evicted.contains(m));
    let stale: Vec<AccountId> = state
        .records
        .committee_votes
        .iter()
        .filter(|(voter, v)| evicted.contains(voter) || names_one(&v.members))
        .map(|(voter, _)| *voter)
        .collect();
    for voter in stale {
        state.records.committee_votes.remove(&voter);
        state.touch(StateKey::CommitteeVote(voter));
    }
    let before = state.records.committee_candidates.len();
    state
        .records
        .committee_candidates
        .retain(|_, c| !names_one(&c.members));
    if state.records.committee_candidates.len() != before {
        state.touch(StateKey::CommitteeCandidates);
    }
    if let Some(c) = state.records.committee.as_mut() {
        let members: Vec<AccountId> = c
            .members
            .iter()
            .filter(|m| evicted.contains(m) && !c.evicted.contains(m))
            .copied()
            .collect();
        if !members.is_empty() {
            c.evicted.extend(members);
            c.evicted.sort();
            state.touch(StateKey::Committee);
        }
    }
}

/// The committee in office, refused while it is evicting: what it would
/// take now (an order, a deposit, an epoch key) its evicted members could
/// read or hold.
fn committee_not_evicting(state: &State) -> Result<&Committee, TxError> {
    let c = state
        .records
        .committee
        .as_ref()
        .ok_or(TxError::NoCommittee)?;
    if c.evicting() {
        return Err(TxError::CommitteeEvicting);
    }
    Ok(c)
}

fn committee_key(state: &State) -> Result<GroupPublicKey, TxError> {
    state
        .records
        .committee
        .as_ref()
        .map(|c| c.group_key)
        .ok_or(TxError::NoCommittee)
}

pub(crate) fn publish_epoch_key(
    state: &mut State,
    (ctx, signer): (&BlockContext, AccountId),
    epoch: Epoch,
    public_key: [u8; 32],
    signature: &GroupSignature,
) -> Result<Vec<Event>, TxError> {
    let policy = policy(state)?;
    registered_enclave(state, &signer)?;
    let committee = committee_not_evicting(state)?;
    let (key, first_epoch) = (committee.group_key, committee.first_epoch);
    if epoch < first_epoch {
        return Err(TxError::FormerCommitteeEpoch(epoch.0));
    }
    // At most the epoch after the block's own: a key published far ahead
    // (one compromised member's, signed with an honest one) would make the
    // chain refuse every earlier epoch's key as stale, and each one
    // published would move the next step on.
    // Nor one that skips an epoch whose time has not come yet (its slots
    // could then take no sealed order): after the last published, or the
    // block's own if that is later.
    let now = policy.epoch_of(state.genesis().slot_at(ctx.time));
    let after_now = now.0.saturating_add(1);
    let furthest = match state.records.epochs.last_key_value() {
        None => after_now,
        Some((last, _)) => last.0.saturating_add(1).max(now.0).min(after_now),
    };
    if epoch.0 > furthest {
        return Err(TxError::EpochTooFar(epoch.0));
    }
    if let Some((last, _)) = state.records.epochs.last_key_value()
        && epoch <= *last
    {
        return Err(TxError::StaleEpoch(epoch.0));
    }
    // Signed for this chain: a committee serving another chain too can not
    // have its signatures replayed here.
    key.verify(
        &epoch_key_message(&state.chain_id().0.0, epoch, &public_key),
        signature,
    )
    .map_err(|_| TxError::InvalidGroupSignature)?;
    state.records.epochs.insert(epoch, public_key);
    while state.records.epochs.len() > KEPT_EPOCHS {
        state.records.epochs.pop_first();
    }
    state.touch(StateKey::Epochs);
    // The enclaves erase older keys now: batches of those epochs still
    // waiting are cleared with their orders refused.
    let expiring: Vec<(RegionId, Slot)> = state
        .records
        .batches
        .iter()
        .filter(|((_, slot), b)| !b.expired && past_erasure(policy.epoch_of(*slot), Some(epoch)))
        .map(|(k, _)| *k)
        .collect();
    for (region, slot) in expiring {
        if let Some(b) = state.records.batches.get_mut(&(region, slot)) {
            b.expired = true;
        }
        state.touch(StateKey::SealedBatch(region, slot));
    }
    Ok(Vec::new())
}

pub(crate) fn submit_sealed_order(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    sealed: &SealedOrder,
) -> Result<Vec<Event>, TxError> {
    policy(state)?;
    let meter = active_meter(state, &signer)?;
    if state.region(sealed.region).is_none() {
        return Err(TxError::UnknownRegion(sealed.region));
    }
    if meter.region != sealed.region {
        return Err(TxError::WrongRegion);
    }
    check_slot_open(state, sealed.slot, ctx.time)?;
    if sealed.ciphertext.len() != CIPHERTEXT_LEN {
        return Err(TxError::SealedOrderSize);
    }
    // Sealed to keys of the committee in office only, and none while it is
    // evicting.
    let first_epoch = committee_not_evicting(state)?.first_epoch;
    let slot_epoch = policy(state)?.epoch_of(sealed.slot);
    for epoch in [sealed.epoch, slot_epoch] {
        if epoch < first_epoch {
            return Err(TxError::FormerCommitteeEpoch(epoch.0));
        }
    }
    // An old epoch is accepted: the enclaves drop it and the receipt says so.
    if !state.records.epochs.contains_key(&sealed.epoch) {
        return Err(TxError::UnknownEpoch(sealed.epoch.0));
    }
    // But only for a slot whose own epoch key is published: the enclaves
    // clear a slot with it, and a batch they could not open would stop the
    // region's reports for good.
    if !state.records.epochs.contains_key(&slot_epoch) {
        return Err(TxError::UnknownEpoch(slot_epoch.0));
    }
    let key = (sealed.slot, sealed.region);
    let book = state.records.sealed_books.entry(key).or_default();
    if book.iter().any(|e| e.meter == signer) {
        return Err(TxError::DuplicateOrder);
    }
    book.push(SealedEntry {
        meter: signer,
        sealed: sealed.clone(),
    });
    state.touch(StateKey::SealedBook(sealed.region, sealed.slot));
    Ok(Vec::new())
}

pub(crate) fn deposit(
    state: &mut State,
    signer: AccountId,
    amount: Money,
) -> Result<Vec<Event>, TxError> {
    policy(state)?;
    let meter = active_meter(state, &signer)?;
    positive(amount)?;
    // Custody only an active committee can pay back: no deposit before one
    // took office, nor while its members are being evicted.
    committee_not_evicting(state)?;
    lock(state, signer, amount, |m| &mut m.custody)?;
    state
        .records
        .custody_flows
        .entry(meter.region)
        .or_default()
        .deposits
        .push((signer, amount));
    state.touch(StateKey::CustodyFlows(meter.region));
    Ok(Vec::new())
}

pub(crate) fn request_withdrawal(
    state: &mut State,
    signer: AccountId,
    amount: Money,
) -> Result<Vec<Event>, TxError> {
    policy(state)?;
    // A retired meter still gets its custody back: it only places no orders.
    let meter = *state
        .meter(&signer)
        .ok_or(TxError::NotAuthorised { role: Role::Meter })?;
    positive(amount)?;
    let flows = state.records.custody_flows.entry(meter.region).or_default();
    if flows.withdrawals.iter().any(|(w, _)| *w == signer) {
        return Err(TxError::DuplicateOrder);
    }
    flows.withdrawals.push((signer, amount));
    state.touch(StateKey::CustodyFlows(meter.region));
    Ok(Vec::new())
}

/// The most batches of a region that may wait for a report before
/// [`open_books_for_withdrawals`] opens no more.
pub const MAX_WAITING_BATCHES: usize = 2;

/// Opens the book of the slot open now for each region whose withdrawal
/// requests wait with no book open to carry them, so they are paid by that
/// slot's report whether or not anybody trades (before, a request waited
/// for somebody's order, and a committee that evicts members, taking none,
/// paid nothing out). Not while [`MAX_WAITING_BATCHES`] of the region wait:
/// a committee that does not report does not pile up batches.
pub(crate) fn open_books_for_withdrawals(state: &mut State, ctx: &BlockContext) {
    if state.records.committee.is_none() {
        return;
    }
    let slot = state.genesis().slot_at(ctx.time);
    let regions: Vec<RegionId> = state
        .records
        .custody_flows
        .iter()
        .filter(|(_, f)| !f.withdrawals.is_empty())
        .map(|(r, _)| *r)
        .filter(|r| {
            let open = state.records.sealed_books.keys().any(|(_, b)| b == r);
            let waiting = state.records.batches.keys().filter(|(b, _)| b == r).count();
            !open && waiting < MAX_WAITING_BATCHES
        })
        .collect();
    for region in regions {
        state
            .records
            .sealed_books
            .insert((slot, region), Vec::new());
        state.touch(StateKey::SealedBook(region, slot));
    }
}

/// Freezes every sealed book whose gate closed by `ctx.time` into a batch,
/// with its region's pending deposits and withdrawal requests.
pub(crate) fn close_sealed_books(state: &mut State, ctx: &BlockContext) {
    let due: Vec<(Slot, RegionId)> = state
        .records
        .sealed_books
        .keys()
        .take_while(|(slot, _)| state.genesis().close_of(*slot) <= ctx.time)
        .copied()
        .collect();
    for (slot, region) in due {
        // A sealed order is only taken for a known region.
        let Some(params) = state.region(region).copied() else {
            continue;
        };
        let orders = state
            .records
            .sealed_books
            .remove(&(slot, region))
            .unwrap_or_default();
        state.touch(StateKey::SealedBook(region, slot));
        let flows = state
            .records
            .custody_flows
            .remove(&region)
            .unwrap_or_default();
        state.touch(StateKey::CustodyFlows(region));
        let traders = traders(state, &orders);
        let newest = state.records.epochs.last_key_value().map(|(e, _)| *e);
        // (A batch of custody flows only may fall in an epoch nobody keyed,
        // while the committee evicts members: the enclaves clear it without
        // entering an epoch, as one past the schedule.)
        let expired = policy(state)
            .map(|p| {
                let epoch = p.epoch_of(slot);
                past_erasure(epoch, newest) || !state.records.epochs.contains_key(&epoch)
            })
            .unwrap_or(false);
        let previous = match state.records.committee.as_mut() {
            Some(c) => {
                let previous = c.closed.insert(region, slot);
                state.touch(StateKey::Committee);
                previous
            }
            None => None,
        };
        state.records.batches.insert(
            (region, slot),
            SealedBatch {
                params,
                orders,
                flows,
                closed: ctx.height,
                traders,
                expired,
                previous,
            },
        );
        state.touch(StateKey::SealedBatch(region, slot));
    }
}

pub(crate) fn post_settlement_report(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    summary: &SlotSummary,
    signature: &GroupSignature,
) -> Result<Vec<Event>, TxError> {
    policy(state)?;
    // A registered enclave, or a member of the committee in office: one
    // evicted still reports the batches its committee closed (the
    // withdrawals that pay custody out among them).
    let member = state
        .records
        .committee
        .as_ref()
        .is_some_and(|c| c.members.contains(&signer));
    if !member {
        registered_enclave(state, &signer)?;
    }
    let key = committee_key(state)?;
    let (region, slot) = (summary.region, summary.slot);
    let batch = state
        .records
        .batches
        .get(&(region, slot))
        .ok_or(TxError::NoSuchBatch)?;
    let earlier = state
        .records
        .batches
        .range((region, Slot(0))..(region, slot))
        .next()
        .is_some();
    if earlier {
        return Err(TxError::ReportOutOfOrder);
    }
    let a = &summary.aggregates;
    let t = &a.totals;
    let count_fits =
        usize::try_from(a.sealed).ok() == Some(batch.orders.len()) && a.cleared <= a.sealed;
    let payouts_requested = summary.payouts.len() <= MAX_PAYOUTS
        && is_subsequence(&summary.payouts, &batch.flows.withdrawals);
    // Whatever the committee signs, it can not sell more than the traders'
    // PV produces: energy sold locally or fed in comes from sells.
    let sold = t.local_energy.checked_add(t.grid_export);
    let sells_fit = matches!((sold, sell_bound(batch)), (Some(s), Some(b)) if s <= b);
    // And the money the chain moves follows from those energies at the
    // frozen tariffs, to the µRp (the clearing prices grid flows and fees
    // exactly so): no feed-in paid for energy nobody fed in.
    let p = &batch.params;
    let priced = Some(t.utility_buys) == t.grid_export.value_at(p.feed_in_tariff())
        && Some(t.utility_sells) == t.grid_import.value_at(p.grid_tariff())
        && Some(t.dso_fees) == t.local_energy.value_at(p.local_fee());
    // Cleared from the ledger the region's last report left (a member that
    // lost or forged its ledger can not get a report built on another one
    // taken, whoever signs it).
    let continues = summary.ledger_before
        == state
            .records
            .committee
            .as_ref()
            .and_then(|c| c.ledgers.get(&region).copied())
            .unwrap_or(FIRST_LEDGER);
    if !count_fits || !t.is_balanced() || !payouts_requested || !sells_fit || !priced || !continues
    {
        return Err(TxError::ReportMismatch);
    }
    key.verify(&report_message(&state.chain_id().0.0, summary), signature)
        .map_err(|_| TxError::InvalidGroupSignature)?;
    // Custody: +feed-in paid by the utility, −grid supply, −fees, −payouts.
    let (utility, dso) = (
        state.authority(crate::Authority::Utility),
        state.authority(crate::Authority::Dso),
    );
    let paid_out = summary
        .payouts
        .iter()
        .try_fold(0u128, |s, (_, m)| s.checked_add(u128::from(m.get())))
        .ok_or(TxError::Overflow)?;
    let custody = i128::from(state.meta().custody.get()) + i128::from(t.utility_buys.get())
        - i128::from(t.utility_sells.get())
        - i128::from(t.dso_fees.get())
        - i128::try_from(paid_out).map_err(|_| TxError::Overflow)?;
    let custody = u64::try_from(custody).map_err(|_| TxError::ReportMismatch)?;
    let utility_balance = i128::from(state.account(&utility).balance.get())
        + i128::from(t.utility_sells.get())
        - i128::from(t.utility_buys.get());
    // Feed-in the utility can not pay is issued to it, as in the open market.
    let utility_cover = u64::try_from((-utility_balance).max(0)).map_err(|_| TxError::Overflow)?;
    let utility_balance = u64::try_from(utility_balance.max(0)).map_err(|_| TxError::Overflow)?;
    let dso_balance = credit(state.account(&dso), t.dso_fees)?;
    let mut payees = Vec::with_capacity(summary.payouts.len());
    for (wallet, amount) in &summary.payouts {
        let before = payees
            .iter()
            .rev()
            .find(|(w, _)| w == wallet)
            .map_or(state.account(wallet).balance, |(_, b)| *b);
        let after = before.checked_add(*amount).ok_or(TxError::Overflow)?;
        payees.push((*wallet, after));
    }
    // What the report keeps of the batch: each order's meter and size, and
    // its custody flows with one deposit per account (a meter's many small
    // deposits do not grow the kept record).
    let submissions = batch
        .orders
        .iter()
        .map(|e| {
            u32::try_from(e.sealed.ciphertext.len())
                .map(|len| (e.meter, len))
                .map_err(|_| TxError::Overflow)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut deposits: Vec<(AccountId, Money)> = Vec::new();
    for (account, amount) in &batch.flows.deposits {
        match deposits.iter_mut().find(|(a, _)| a == account) {
            Some((_, sum)) => *sum = sum.checked_add(*amount).ok_or(TxError::Overflow)?,
            None => deposits.push((*account, *amount)),
        }
    }
    let flows = CustodyFlows {
        deposits,
        withdrawals: batch.flows.withdrawals.clone(),
    };
    let cover = Money::new(utility_cover);
    let supply = state
        .meta()
        .supply
        .checked_add(cover)
        .ok_or(TxError::Overflow)?;
    let issued = state
        .meta()
        .issued
        .checked_add(cover)
        .ok_or(TxError::Overflow)?;
    // Checked; now write.
    set_balance(state, utility, Money::new(utility_balance));
    set_balance(state, dso, dso_balance);
    for (wallet, balance) in payees {
        set_balance(state, wallet, balance);
    }
    let meta = &mut state.records.meta;
    meta.custody = Money::new(custody);
    meta.supply = supply;
    meta.issued = issued;
    state.touch(StateKey::Meta);
    state.records.batches.remove(&(region, slot));
    state.touch(StateKey::SealedBatch(region, slot));
    state.records.reports.insert(
        (region, slot),
        PostedReport {
            summary: summary.clone(),
            signature: *signature,
            height: ctx.height,
            utility_cover: cover,
            submissions,
            flows,
        },
    );
    state.touch(StateKey::SealedReport(region, slot));
    if let Some(c) = state.records.committee.as_mut() {
        c.ledgers.insert(region, summary.ledger);
        c.last_reported.insert(region, slot);
        c.reported = true;
    }
    state.touch(StateKey::Committee);
    let mut events = vec![Event::SealedSlotSettled {
        region,
        slot,
        orders: a.sealed,
        local_energy: t.local_energy,
    }];
    if !cover.is_zero() {
        events.push(Event::UtilityCovered { amount: cover });
    }
    Ok(events)
}

/// The meters behind `orders`, ascending, each with the most it may sell in
/// one slot (a meter retired since it submitted keeps its PV: the order was
/// valid when placed).
pub(crate) fn traders(state: &State, orders: &[SealedEntry]) -> Vec<(AccountId, Energy)> {
    let meters: std::collections::BTreeSet<AccountId> = orders.iter().map(|e| e.meter).collect();
    meters
        .into_iter()
        .map(|m| {
            let cap = state
                .meter(&m)
                .filter(|meter| meter.role == MeterRole::Prosumer)
                .map_or(Energy::ZERO, |meter| state.capacity_per_slot(meter));
            (m, cap)
        })
        .collect()
}

/// The most the batch's traders may sell together (a sum of per-slot PV
/// figures, far below 64 bits; `None` only beyond it).
fn sell_bound(batch: &SealedBatch) -> Option<Energy> {
    batch
        .traders
        .iter()
        .try_fold(Energy::ZERO, |sum, (_, cap)| sum.checked_add(*cap))
}

/// Whether `part` is `whole` with some entries left out, order kept.
fn is_subsequence<T: PartialEq>(part: &[T], whole: &[T]) -> bool {
    let mut rest = whole.iter();
    part.iter().all(|p| rest.any(|w| w == p))
}
