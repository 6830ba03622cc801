//! A committee's key generation, coordinated as a sans-IO state machine
//! (as [`crate::coordinator::SigningSession`] coordinates signing):
//! [`DkgSession::start`] and [`DkgSession::reply`] return the requests to
//! send ([`DkgEffect`]), the executor (the first member's host, or a
//! deterministic test) sends them and hands every answer back, and
//! [`DkgSession::outcome`] says where the DKG stands. No clock, no network,
//! no randomness here.
//!
//! A Pedersen DKG needs every member: one that stays silent or cheats ends
//! it. The session checks each answer before it passes anything on, so the
//! member named is the one that failed: a round-1 package must be signed by
//! the member's account over the chain, its index and the members (as the
//! other members check it), and round-2 packages must all be from the member
//! that sent them, one to each other member. A round-2 package that does not
//! open or verify at its recipient (sealed to it, so only the recipient can
//! tell) ends the DKG at that recipient: [`DkgFailure::Unfinished`] names
//! who could not finish, not who cheated. Honest members that finished then
//! hold a key only pending: a member takes a key as its committee's only
//! once every member signed that it finished with it (the confirmation,
//! round 4), so a DKG that some members finished and others did not leaves
//! nobody holding a key, and the coordinator's next attempt (numbered in
//! its invitation) starts every member over.

use crate::attestation::Quote;
use crate::committee::GroupPublicKey;
use crate::rpc::{Request, Response};
use crate::service::{EnclaveService, SealedDkgPackage, ServiceError, SignedPackage};
use std::collections::{BTreeMap, BTreeSet};

/// What a DKG asks its executor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DkgEffect {
    /// Send `request` to member `member` (by index; the coordinator's own
    /// enclave included) and hand its answer, or `None` if none came, to
    /// [`DkgSession::reply`].
    Call {
        /// The member, by index.
        member: u16,
        /// The request.
        request: Request,
    },
}

/// Why a DKG ended without a committee.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DkgFailure {
    /// A member did not answer a round as it must: silent, refused, or an
    /// answer that is not its own (a round-1 package its account did not
    /// sign, round-2 packages from another member or to the wrong ones).
    #[error("member {member} failed DKG round {round}")]
    Member {
        /// The member, by index.
        member: u16,
        /// The round (1, 2 or 3).
        round: u8,
    },
    /// A member could not finish: a round-2 package sealed to it did not
    /// open or verify (its sender may be the one that cheated), or it did
    /// not answer.
    #[error("member {member} could not finish the DKG")]
    Unfinished {
        /// The member, by index.
        member: u16,
    },
    /// The members that finished derived different group keys.
    #[error("the members derived different group keys")]
    Disagreement,
    /// A member did not confirm the key every member finished with (it
    /// keeps it pending; the next attempt starts it over).
    #[error("member {member} did not confirm the group key")]
    Unconfirmed {
        /// The member, by index.
        member: u16,
    },
    /// The coordinator's own enclave refused to invite (it is not the
    /// committee's first member).
    #[error("the coordinator's enclave: {0}")]
    Local(#[from] ServiceError),
}

/// Where a DKG stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DkgOutcome {
    /// Waiting for answers.
    Pending,
    /// Every member holds a share of this group key.
    Formed(GroupPublicKey),
    /// Ended without a committee.
    Failed(DkgFailure),
}

#[derive(Clone, Debug)]
enum Round {
    One {
        waiting: BTreeSet<u16>,
        packages: BTreeMap<u16, SignedPackage>,
    },
    Two {
        waiting: BTreeSet<u16>,
        sealed: Vec<SealedDkgPackage>,
        /// The round-1 set the members ran round 2 with.
        round1: [u8; 32],
    },
    Finish {
        waiting: BTreeSet<u16>,
        round1: [u8; 32],
        /// Each member's key and its signature over its finish.
        finished: BTreeMap<u16, (GroupPublicKey, [u8; 64])>,
    },
    Confirm {
        waiting: BTreeSet<u16>,
        key: GroupPublicKey,
    },
    Done,
}

/// The first member's DKG of a committee.
#[derive(Clone, Debug)]
pub struct DkgSession {
    chain: [u8; 32],
    attempt: u64,
    quotes: Vec<Quote>,
    members: u16,
    round: Round,
    outcome: DkgOutcome,
}

impl DkgSession {
    /// Starts attempt `attempt` at the DKG of the committee of `quotes`
    /// (ascending by account) with threshold `t` for chain `chain`; `local`
    /// is the coordinator's enclave, the committee's first member, which
    /// signs the invitation. Each attempt must be later than the last one
    /// the members answered (a member that has not confirmed a key starts
    /// over for it).
    pub fn start(
        local: &EnclaveService,
        chain: [u8; 32],
        t: u16,
        attempt: u64,
        quotes: Vec<Quote>,
    ) -> (DkgSession, Vec<DkgEffect>) {
        let members = u16::try_from(quotes.len()).unwrap_or(u16::MAX);
        let mut s = DkgSession {
            chain,
            attempt,
            quotes,
            members,
            round: Round::Done,
            outcome: DkgOutcome::Pending,
        };
        let invitation = match local.invite(chain, t, attempt, &s.quotes) {
            Ok(invitation) => invitation,
            Err(e) => {
                s.outcome = DkgOutcome::Failed(e.into());
                return (s, Vec::new());
            }
        };
        let everyone: BTreeSet<u16> = (0..members).collect();
        let effects = everyone
            .iter()
            .map(|&index| DkgEffect::Call {
                member: index,
                request: Request::DkgRound1 {
                    index,
                    t,
                    attempt,
                    chain,
                    members: s.quotes.clone(),
                    invitation,
                },
            })
            .collect();
        s.round = Round::One {
            waiting: everyone,
            packages: BTreeMap::new(),
        };
        (s, effects)
    }

    /// Where the DKG stands.
    pub fn outcome(&self) -> &DkgOutcome {
        &self.outcome
    }

    /// Member `member`'s answer to the request this DKG sent it (`None`: no
    /// answer); the requests to send next.
    pub fn reply(&mut self, member: u16, answer: Option<Response>) -> Vec<DkgEffect> {
        match &mut self.round {
            Round::One { waiting, packages } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                match answer {
                    Some(Response::DkgRound1(package, signature))
                        if crate::service::round1_signed_by(
                            &self.chain,
                            self.attempt,
                            &self.quotes,
                            member,
                            (&package, &signature),
                        ) =>
                    {
                        packages.insert(member, (package, signature));
                    }
                    _ => return self.fail(DkgFailure::Member { member, round: 1 }),
                }
                if !waiting.is_empty() {
                    return Vec::new();
                }
                let round1 = std::mem::take(packages);
                let set = crate::service::round1_digest(&round1).0;
                self.next_round(
                    Round::Two {
                        waiting: (0..self.members).collect(),
                        sealed: Vec::new(),
                        round1: set,
                    },
                    |_| Request::DkgRound2 {
                        round1: round1.clone(),
                    },
                )
            }
            Round::Two {
                waiting,
                sealed,
                round1,
            } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                let members = self.members;
                match answer {
                    Some(Response::DkgRound2(packages)) if own(&packages, member, members) => {
                        sealed.extend(packages);
                    }
                    _ => return self.fail(DkgFailure::Member { member, round: 2 }),
                }
                if !waiting.is_empty() {
                    return Vec::new();
                }
                let packages = std::mem::take(sealed);
                let round1 = *round1;
                self.next_round(
                    Round::Finish {
                        waiting: (0..self.members).collect(),
                        round1,
                        finished: BTreeMap::new(),
                    },
                    |to| Request::DkgFinish {
                        round1,
                        // Each member gets only the packages sealed to it.
                        packages: packages.iter().filter(|p| p.to == to).cloned().collect(),
                    },
                )
            }
            Round::Finish {
                waiting,
                round1,
                finished,
            } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                let set = quartier_types::hash::Digest(*round1);
                match answer {
                    Some(Response::DkgFinished(key, signature))
                        if crate::service::finish_signed_by(
                            &self.chain,
                            self.attempt,
                            &self.quotes,
                            member,
                            (&set, &key),
                            &signature,
                        ) =>
                    {
                        finished.insert(member, (key, signature));
                    }
                    _ => return self.fail(DkgFailure::Unfinished { member }),
                }
                if !waiting.is_empty() {
                    return Vec::new();
                }
                let mut distinct: Vec<GroupPublicKey> =
                    finished.values().map(|(key, _)| *key).collect();
                distinct.dedup();
                let [key] = distinct.as_slice() else {
                    return self.fail(DkgFailure::Disagreement);
                };
                let key = *key;
                let round1 = *round1;
                let signatures: Vec<[u8; 64]> = finished.values().map(|(_, s)| *s).collect();
                self.next_round(
                    Round::Confirm {
                        waiting: (0..self.members).collect(),
                        key,
                    },
                    |_| Request::DkgConfirm {
                        round1,
                        signatures: signatures.clone(),
                    },
                )
            }
            Round::Confirm { waiting, key } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                match answer {
                    Some(Response::DkgConfirmed(confirmed)) if confirmed == *key => {}
                    _ => return self.fail(DkgFailure::Unconfirmed { member }),
                }
                if !waiting.is_empty() {
                    return Vec::new();
                }
                let key = *key;
                self.round = Round::Done;
                self.outcome = DkgOutcome::Formed(key);
                Vec::new()
            }
            Round::Done => Vec::new(),
        }
    }

    fn fail(&mut self, failure: DkgFailure) -> Vec<DkgEffect> {
        self.round = Round::Done;
        self.outcome = DkgOutcome::Failed(failure);
        Vec::new()
    }

    /// Moves to `round`, asking every member `request(member)`.
    fn next_round(&mut self, round: Round, request: impl Fn(u16) -> Request) -> Vec<DkgEffect> {
        self.round = round;
        (0..self.members)
            .map(|member| DkgEffect::Call {
                member,
                request: request(member),
            })
            .collect()
    }
}

/// Whether `packages` are `member`'s round-2 packages: all from it, one to
/// each other member of `members`.
fn own(packages: &[SealedDkgPackage], member: u16, members: u16) -> bool {
    let to: BTreeSet<u16> = packages.iter().map(|p| p.to).collect();
    let others: BTreeSet<u16> = (0..members).filter(|m| *m != member).collect();
    packages.len() == others.len() && to == others && packages.iter().all(|p| p.from == member)
}

/// Runs attempt `attempt` at the DKG of `enclaves` (ascending by account,
/// their quotes `quotes`) with threshold `t` for chain `chain` in this
/// process, `enclaves[0]` coordinating: every request goes through the
/// member's RPC dispatch, as a host would deliver it. For benchmarks,
/// tests and tools that hold every member.
pub fn run_in_process(
    enclaves: &mut [EnclaveService],
    chain: [u8; 32],
    t: u16,
    attempt: u64,
    quotes: Vec<Quote>,
) -> DkgOutcome {
    let Some(first) = enclaves.first() else {
        return DkgOutcome::Failed(DkgFailure::Local(ServiceError::Invalid));
    };
    let (mut dkg, effects) = DkgSession::start(first, chain, t, attempt, quotes);
    let mut queue: std::collections::VecDeque<DkgEffect> = effects.into();
    while let Some(DkgEffect::Call { member, request }) = queue.pop_front() {
        let answer = enclaves
            .get_mut(usize::from(member))
            .map(|e| e.handle(request));
        queue.extend(dkg.reply(member, answer));
    }
    dkg.outcome().clone()
}
