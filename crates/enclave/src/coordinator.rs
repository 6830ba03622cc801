//! A committee's threshold signing, coordinated as a sans-IO state machine:
//! [`SigningSession::start`] and [`SigningSession::reply`] return the
//! requests to send ([`SignEffect`]), the executor (the enclave host, or a
//! deterministic test) sends them and hands every answer back, and
//! [`SigningSession::outcome`] says where the session stands. No clock, no
//! network, no randomness here; the coordinator's own enclave is the only
//! state it reads, for the requests' signatures, the signing package and the
//! aggregation.
//!
//! Byzantine members do not stop it while `t` honest members answer: a
//! member that stays silent, refuses, answers for another index, or returns
//! commitments or shares that do not decode or verify (FROST's cheater
//! detection names it) is left out and the next member asked; shares that
//! fail restart the session, with a new id, among the members left. Fewer
//! than `t` honest members can not get anything signed: the honest ones
//! sign only what they computed themselves, and a share is checked against
//! its member's verifying share.

use crate::committee::GroupSignature;
use crate::rpc::{Request, Response};
use crate::service::{EnclaveService, Purpose, ServiceError, SigningRound};
use std::collections::{BTreeMap, BTreeSet};

/// What a signing session asks its executor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignEffect {
    /// Send `request` to committee member `member` (by index; the
    /// coordinator's own enclave included) and hand its answer, or `None`
    /// if none came, to [`SigningSession::reply`].
    Call {
        /// The member, by committee index.
        member: u16,
        /// The request.
        request: Request,
    },
}

/// Why a session ended without a signature.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignFailure {
    /// Fewer than the threshold of members are left that answered as they
    /// should.
    #[error("fewer than {threshold} members answered correctly (left out: {excluded:?})")]
    TooFewHonest {
        /// The threshold.
        threshold: u16,
        /// The members left out, by index.
        excluded: Vec<u16>,
    },
    /// The coordinator's own enclave refused (e.g. it has no committee, or
    /// can not name the message).
    #[error("the coordinator's enclave: {0}")]
    Local(#[from] ServiceError),
}

/// Where a session stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignOutcome {
    /// Waiting for answers.
    Pending,
    /// Signed.
    Signed(GroupSignature),
    /// Ended without a signature.
    Failed(SignFailure),
}

/// The round a session is in.
#[derive(Clone, Debug)]
enum Round {
    /// Collecting nonce commitments.
    Committing {
        /// Asked, not answered yet.
        waiting: BTreeSet<u16>,
        /// Members asked in this round (answered or not).
        asked: BTreeSet<u16>,
        /// Commitments received, by member.
        commitments: BTreeMap<u16, Vec<u8>>,
    },
    /// Collecting signature shares for `package` from its signers.
    Sharing {
        /// The signing package.
        package: Vec<u8>,
        /// Signers not answered yet.
        waiting: BTreeSet<u16>,
        /// Shares received, by member.
        shares: BTreeMap<u16, Vec<u8>>,
    },
    /// Ended.
    Done,
}

/// One coordinator's attempt to get `purpose` signed by `t` members.
#[derive(Clone, Debug)]
pub struct SigningSession {
    purpose: Purpose,
    members: u16,
    threshold: u16,
    session: u64,
    excluded: BTreeSet<u16>,
    faulty: BTreeSet<u16>,
    round: Round,
    outcome: SignOutcome,
}

impl SigningSession {
    /// Starts signing `purpose` among a committee of `members` with
    /// threshold `threshold`, as session `session` (ids must increase per
    /// coordinator: a retry uses the next ones, see
    /// [`SigningSession::session`]). `local` is the coordinator's enclave.
    pub fn start(
        local: &EnclaveService,
        session: u64,
        purpose: Purpose,
        members: u16,
        threshold: u16,
    ) -> (SigningSession, Vec<SignEffect>) {
        let mut s = SigningSession {
            purpose,
            members,
            threshold,
            session,
            excluded: BTreeSet::new(),
            faulty: BTreeSet::new(),
            round: Round::Done,
            outcome: SignOutcome::Pending,
        };
        let effects = if threshold == 0 || threshold > members {
            s.too_few()
        } else {
            s.commit_round(local)
        };
        (s, effects)
    }

    /// Where the session stands.
    pub fn outcome(&self) -> &SignOutcome {
        &self.outcome
    }

    /// The latest session id used (the next session must be above it).
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The members left out so far, by index.
    pub fn excluded(&self) -> &BTreeSet<u16> {
        &self.excluded
    }

    /// The members left out for an answer they signed that FROST's checks
    /// refused (commitments that do not decode, a share that does not
    /// verify): the signed answer proves the member at fault. Members left
    /// out for silence, a refusal or an answer whose signature fails (it
    /// may have been altered on the way) are not named here.
    pub fn faulty(&self) -> &BTreeSet<u16> {
        &self.faulty
    }

    /// Member `member`'s answer to the request this session sent it
    /// (`None`: no answer); the requests to send next.
    pub fn reply(
        &mut self,
        local: &EnclaveService,
        member: u16,
        answer: Option<Response>,
    ) -> Vec<SignEffect> {
        match &mut self.round {
            Round::Committing {
                waiting,
                commitments,
                ..
            } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                match answer {
                    Some(Response::Committed(index, bytes, signature))
                        if index == member
                            && local.answer_signed(
                                (self.session, member),
                                SigningRound::Commit,
                                &borsh::to_vec(&self.purpose).unwrap_or_default(),
                                &bytes,
                                &signature,
                            ) =>
                    {
                        commitments.insert(member, bytes);
                    }
                    _ => {
                        self.excluded.insert(member);
                    }
                }
                self.after_commitment(local)
            }
            Round::Sharing {
                package,
                waiting,
                shares,
            } => {
                if !waiting.remove(&member) {
                    return Vec::new();
                }
                match answer {
                    Some(Response::Share(bytes, signature))
                        if local.answer_signed(
                            (self.session, member),
                            SigningRound::Share,
                            package,
                            &bytes,
                            &signature,
                        ) =>
                    {
                        shares.insert(member, bytes);
                    }
                    _ => {
                        self.excluded.insert(member);
                    }
                }
                self.after_share(local)
            }
            Round::Done => Vec::new(),
        }
    }

    /// Members not left out, in index order.
    fn candidates(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.members).filter(|m| !self.excluded.contains(m))
    }

    fn fail(&mut self, failure: SignFailure) -> Vec<SignEffect> {
        self.round = Round::Done;
        self.outcome = SignOutcome::Failed(failure);
        Vec::new()
    }

    fn too_few(&mut self) -> Vec<SignEffect> {
        let failure = SignFailure::TooFewHonest {
            threshold: self.threshold,
            excluded: self.excluded.iter().copied().collect(),
        };
        self.fail(failure)
    }

    /// A commitment round under the current session id: the first `t`
    /// members not left out are asked.
    fn commit_round(&mut self, local: &EnclaveService) -> Vec<SignEffect> {
        let asked: BTreeSet<u16> = self
            .candidates()
            .take(usize::from(self.threshold))
            .collect();
        if asked.len() < usize::from(self.threshold) {
            return self.too_few();
        }
        self.round = Round::Committing {
            waiting: asked.clone(),
            asked: asked.clone(),
            commitments: BTreeMap::new(),
        };
        match self.commit_requests(local, &asked) {
            Ok(effects) => effects,
            Err(e) => self.fail(e.into()),
        }
    }

    fn commit_requests(
        &self,
        local: &EnclaveService,
        to: &BTreeSet<u16>,
    ) -> Result<Vec<SignEffect>, ServiceError> {
        let what = borsh::to_vec(&self.purpose).map_err(|_| ServiceError::Invalid)?;
        self.requests(local, to, &what, |by, signature| Request::SignCommit {
            session: self.session,
            purpose: self.purpose,
            by,
            signature,
        })
    }

    /// One request about `what` to each member of `to`, each signed for
    /// that member only (a copy sent to another one does not verify there).
    fn requests(
        &self,
        local: &EnclaveService,
        to: &BTreeSet<u16>,
        what: &[u8],
        request: impl Fn(u16, [u8; 64]) -> Request,
    ) -> Result<Vec<SignEffect>, ServiceError> {
        to.iter()
            .map(|&member| {
                let (by, signature) = local.authorise(self.session, member, what)?;
                Ok(SignEffect::Call {
                    member,
                    request: request(by, signature),
                })
            })
            .collect()
    }

    /// After a commitment answer: ask another member for each one that
    /// failed, and once `t` are in, the signing package goes to them.
    fn after_commitment(&mut self, local: &EnclaveService) -> Vec<SignEffect> {
        let Round::Committing {
            waiting,
            asked,
            commitments,
        } = &self.round
        else {
            return Vec::new();
        };
        let t = usize::from(self.threshold);
        if commitments.len() < t {
            let missing = t.saturating_sub(commitments.len() + waiting.len());
            if missing == 0 {
                return Vec::new();
            }
            let more: BTreeSet<u16> = (0..self.members)
                .filter(|m| !self.excluded.contains(m) && !asked.contains(m))
                .take(missing)
                .collect();
            if more.len() < missing && waiting.is_empty() {
                return self.too_few();
            }
            let effects = match self.commit_requests(local, &more) {
                Ok(effects) => effects,
                Err(e) => return self.fail(e.into()),
            };
            if let Round::Committing { waiting, asked, .. } = &mut self.round {
                waiting.extend(more.iter().copied());
                asked.extend(more);
            }
            return effects;
        }
        let commitments = commitments.clone();
        let package = match local.signing_package(&self.purpose, &commitments) {
            Ok(package) => package,
            Err(ServiceError::BadAnswers { culprits }) => {
                // Undecodable commitments: those members are out, and the
                // round goes on with others asked in their place.
                self.excluded.extend(culprits.iter().copied());
                self.faulty.extend(culprits.iter().copied());
                if let Round::Committing { commitments, .. } = &mut self.round {
                    commitments.retain(|m, _| !culprits.contains(m));
                }
                return self.after_commitment(local);
            }
            Err(e) => return self.fail(e.into()),
        };
        let signers: BTreeSet<u16> = commitments.keys().copied().collect();
        let effects = self.requests(local, &signers, &package, |by, signature| {
            Request::SignShare {
                session: self.session,
                package: package.clone(),
                by,
                signature,
            }
        });
        let effects = match effects {
            Ok(effects) => effects,
            Err(e) => return self.fail(e.into()),
        };
        self.round = Round::Sharing {
            package,
            waiting: signers,
            shares: BTreeMap::new(),
        };
        effects
    }

    /// After a share answer: once every signer answered, aggregate; a
    /// signer that failed or cheated is left out and the session restarts
    /// among the members left.
    fn after_share(&mut self, local: &EnclaveService) -> Vec<SignEffect> {
        let Round::Sharing {
            package,
            waiting,
            shares,
        } = &self.round
        else {
            return Vec::new();
        };
        if !waiting.is_empty() {
            return Vec::new();
        }
        if shares.len() < usize::from(self.threshold) {
            return self.restart(local);
        }
        match local.aggregate(package, shares) {
            Ok(signature) => {
                self.round = Round::Done;
                self.outcome = SignOutcome::Signed(signature);
                Vec::new()
            }
            Err(ServiceError::BadAnswers { culprits }) if !culprits.is_empty() => {
                self.faulty.extend(culprits.iter().copied());
                self.excluded.extend(culprits);
                self.restart(local)
            }
            Err(e) => self.fail(e.into()),
        }
    }

    /// A new commitment round under the next session id (each member's
    /// nonces of the last one are spent or dropped).
    fn restart(&mut self, local: &EnclaveService) -> Vec<SignEffect> {
        let Some(next) = self.session.checked_add(1) else {
            return self.too_few();
        };
        self.session = next;
        self.commit_round(local)
    }
}
