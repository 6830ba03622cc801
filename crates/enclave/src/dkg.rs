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
//! hold a key no committee vote reaches unanimity for: the chain puts it in
//! office only once every member voted for it.

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
        keys: BTreeMap<u16, GroupPublicKey>,
    },
    Done,
}

/// The first member's DKG of a committee.
#[derive(Clone, Debug)]
pub struct DkgSession {
    chain: [u8; 32],
    quotes: Vec<Quote>,
    members: u16,
    round: Round,
    outcome: DkgOutcome,
}

impl DkgSession {
    /// Starts the DKG of the committee of `quotes` (ascending by account)
    /// with threshold `t` for chain `chain`; `local` is the coordinator's
    /// enclave, the committee's first member, which signs the invitation.
    pub fn start(
        local: &EnclaveService,
        chain: [u8; 32],
        t: u16,
        quotes: Vec<Quote>,
    ) -> (DkgSession, Vec<DkgEffect>) {
        let members = u16::try_from(quotes.len()).unwrap_or(u16::MAX);
        let mut s = DkgSession {
            chain,
            quotes,
            members,
            round: Round::Done,
            outcome: DkgOutcome::Pending,
        };
        let invitation = match local.invite(chain, t, &s.quotes) {
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
                        keys: BTreeMap::new(),
                    },
                    |to| Request::DkgFinish {
                        round1,
                        // Each member gets only the packages sealed to it.
                        packages: packages.iter().filter(|p| p.to == to).cloned().collect(),
                    },
                )
            }
            Round::Finish { waiting, keys } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                match answer {
                    Some(Response::DkgFinished(key)) => {
                        keys.insert(member, key);
                    }
                    _ => return self.fail(DkgFailure::Unfinished { member }),
                }
                if !waiting.is_empty() {
                    return Vec::new();
                }
                let mut distinct: Vec<GroupPublicKey> = keys.values().copied().collect();
                distinct.dedup();
                self.round = Round::Done;
                self.outcome = match distinct.as_slice() {
                    [key] => DkgOutcome::Formed(*key),
                    _ => DkgOutcome::Failed(DkgFailure::Disagreement),
                };
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
