//! Deterministic committee tests: real enclaves (the simulated platform),
//! reached only through their RPC dispatch, and the sans-IO signing
//! coordinator, with Byzantine members that answer what a subverted host
//! would. `t` honest members get every slot's report and every epoch key
//! signed whatever one other member answers; fewer than `t` get nothing
//! signed.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use quartier_enclave::attestation::{Measurement, Quote, SimulatedAttestationService};
use quartier_enclave::auctioneer::{Batch, SlotSummary};
use quartier_enclave::committee::{
    GroupPublicKey, GroupSignature, committee_message, report_message,
};
use quartier_enclave::coordinator::{SignEffect, SignFailure, SignOutcome, SigningSession};
use quartier_enclave::epoch::epoch_key_message;
use quartier_enclave::rpc::{Request, Response};
use quartier_enclave::sealed::Epoch;
use quartier_enclave::service::{
    EnclaveService, Purpose, SigningRound, SimulatedPlatform, answer_message,
};
use quartier_types::{Price, RegionId, RegionParams, Slot};

const CHAIN: [u8; 32] = [0xc4; 32];
const MEASUREMENT: Measurement = Measurement([6; 32]);
const REGION: RegionId = RegionId(1);
const EPOCH: Epoch = Epoch(2);

/// What a member's host does with the requests it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Never answers.
    Silent,
    /// Refuses everything.
    Refuses,
    /// Commits as another member's index.
    WrongIndex,
    /// Answers a commitment that does not decode.
    GarbledCommitment,
    /// Equivocates: lets its enclave commit, but hands the coordinator the
    /// commitment of an earlier session (two commitments for one member;
    /// a changed one the first time).
    StaleCommitment,
    /// Lets its enclave sign, but hands back a share of an earlier session.
    ForgedShare,
    /// Answers a share that does not decode.
    GarbledShare,
    /// Answers honestly, but first sends a copy of every request it gets
    /// to every other member (to spend their sessions, so that the
    /// coordinator's own requests are refused and they are left out).
    Replays,
    /// Its answers are altered on the way (by a host relaying them, or on
    /// the network), the member's signature left as it was.
    AlteredInTransit,
}

const BYZANTINE: [Behaviour; 9] = [
    Behaviour::Silent,
    Behaviour::Refuses,
    Behaviour::WrongIndex,
    Behaviour::GarbledCommitment,
    Behaviour::StaleCommitment,
    Behaviour::ForgedShare,
    Behaviour::GarbledShare,
    Behaviour::Replays,
    Behaviour::AlteredInTransit,
];

/// A member behind its host.
struct Member {
    enclave: EnclaveService,
    behaviour: Behaviour,
    last_commitment: Option<Vec<u8>>,
    last_share: Option<Vec<u8>>,
}

impl Member {
    /// The request as the RPC decodes it, then whatever the host returns.
    /// A lying member is compromised: it signs its lies with its account
    /// key, as an honest answer is signed (only `AlteredInTransit` keeps
    /// the signature of the answer its enclave gave).
    fn call(&mut self, request: &Request) -> Option<Response> {
        let bytes = borsh::to_vec(request).unwrap();
        let request = quartier_enclave::rpc::decode_request(&bytes).unwrap();
        let (session, by, about) = match &request {
            Request::SignCommit {
                session,
                by,
                purpose,
                ..
            } => (*session, *by, borsh::to_vec(purpose).unwrap()),
            Request::SignShare {
                session,
                by,
                package,
                ..
            } => (*session, *by, package.clone()),
            _ => (0, 0, Vec::new()),
        };
        let answer = self.enclave.handle(request);
        let previous = match &answer {
            Response::Committed(_, c, _) => self.last_commitment.replace(c.clone()),
            Response::Share(s, _) => self.last_share.replace(s.clone()),
            _ => None,
        };
        let sign = |round, bytes: &[u8]| {
            let index = u16::try_from(
                self.enclave
                    .committee_members()
                    .unwrap()
                    .iter()
                    .position(|a| *a == self.enclave.account())
                    .unwrap(),
            )
            .unwrap();
            let message = answer_message(
                &self.enclave.group_key().unwrap(),
                (session, by, index),
                round,
                &about,
                bytes,
            );
            ed25519_dalek::Signer::sign(self.enclave.account_key(), &message.0).to_bytes()
        };
        let commit = |i: u16, c: Vec<u8>| {
            let signature = sign(SigningRound::Commit, &c);
            Some(Response::Committed(i, c, signature))
        };
        let share = |s: Vec<u8>| {
            let signature = sign(SigningRound::Share, &s);
            Some(Response::Share(s, signature))
        };
        match (self.behaviour, answer) {
            (Behaviour::Honest, a) => Some(a),
            (Behaviour::Silent, _) => None,
            (Behaviour::Refuses, _) => Some(Response::Refused("no".into())),
            (Behaviour::WrongIndex, Response::Committed(i, c, _)) => commit((i + 1) % 3, c),
            (Behaviour::GarbledCommitment, Response::Committed(i, _, _)) => {
                commit(i, vec![0xff; 12])
            }
            (Behaviour::StaleCommitment, Response::Committed(i, c, _)) => {
                commit(i, previous.unwrap_or_else(|| flip(&c)))
            }
            (Behaviour::ForgedShare, Response::Share(s, _)) => {
                share(previous.unwrap_or_else(|| flip(&s)))
            }
            (Behaviour::GarbledShare, Response::Share(..)) => share(vec![0xff; 32]),
            (Behaviour::AlteredInTransit, Response::Share(s, signature)) => {
                Some(Response::Share(flip(&s), signature))
            }
            (_, a) => Some(a),
        }
    }
}

/// A share with its first byte changed (another scalar).
fn flip(share: &[u8]) -> Vec<u8> {
    let mut s = share.to_vec();
    if let Some(first) = s.first_mut() {
        *first ^= 1;
    }
    s
}

fn params() -> RegionParams {
    RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500)).unwrap()
}

/// Three enclaves (t = 2) after a DKG run through their RPC, all holding
/// epoch 2's key; its public key.
fn committee(behaviours: [Behaviour; 3]) -> (Vec<Member>, GroupPublicKey, [u8; 32]) {
    committee_of(2, behaviours)
}

/// [`committee`] with a DKG invited for threshold `t`.
fn committee_of(t: u16, behaviours: [Behaviour; 3]) -> (Vec<Member>, GroupPublicKey, [u8; 32]) {
    let vendor = SimulatedAttestationService::new([42; 32]);
    let platform = SimulatedPlatform::new([5; 32], MEASUREMENT, vendor.root());
    let mut enclaves: Vec<EnclaveService> = (0..3)
        .map(|_| EnclaveService::new(&platform).unwrap())
        .collect();
    enclaves.sort_by_key(EnclaveService::account);
    let quotes: Vec<Quote> = enclaves
        .iter()
        .map(|e| vendor.quote(MEASUREMENT, e.report_data()))
        .collect();
    for e in enclaves.iter_mut() {
        e.trust_registry_unverified(CHAIN, &quotes);
    }
    let outcome = quartier_enclave::dkg::run_in_process(&mut enclaves, CHAIN, t, 1, quotes);
    let quartier_enclave::dkg::DkgOutcome::Formed(key) = outcome else {
        panic!("no committee: {outcome:?}");
    };
    let (public, shares) = enclaves[0].create_epoch_key(EPOCH).unwrap();
    for share in shares {
        for e in &mut enclaves {
            let request = Request::ReceiveEpochKey {
                share: share.clone(),
                public_key: public,
            };
            let _ = e.handle(request);
        }
    }
    for e in &mut enclaves {
        assert!(e.settle_epoch_key(EPOCH, &public));
    }
    let members = enclaves
        .into_iter()
        .zip(behaviours)
        .map(|(enclave, behaviour)| Member {
            enclave,
            behaviour,
            last_commitment: None,
            last_share: None,
        })
        .collect();
    (members, key, public)
}

/// Every member clears `slot` (no orders): each holds its report.
fn clear(members: &mut [Member], slot: u64) -> SlotSummary {
    let mut summaries = Vec::new();
    for m in members.iter_mut() {
        let batch = Batch {
            slot: Slot(slot),
            params: params(),
            epoch: EPOCH,
            deposits: &[],
            orders: &[],
            withdrawals: &[],
            traders: &[],
            expired: false,
        };
        summaries.push(
            m.enclave
                .clear_unverified(REGION, &batch)
                .unwrap()
                .summary
                .clone(),
        );
    }
    assert!(summaries.iter().all(|s| *s == summaries[0]));
    summaries.remove(0)
}

/// Who a session left out, by index: all, and those proven at fault (a
/// signed answer FROST's checks refused).
#[derive(Debug, PartialEq, Eq)]
struct Left {
    excluded: Vec<u16>,
    faulty: Vec<u16>,
}

/// Runs a session coordinated by member `by` to its end, delivering every
/// request in order: what it came to, the next free session id, and who
/// was left out.
fn run(
    members: &mut [Member],
    by: usize,
    session: u64,
    purpose: Purpose,
) -> (SignOutcome, u64, Left) {
    run_for(members, (by, 2), session, purpose)
}

/// [`run`] with the coordinator asking for `t` shares.
fn run_for(
    members: &mut [Member],
    (by, t): (usize, u16),
    session: u64,
    purpose: Purpose,
) -> (SignOutcome, u64, Left) {
    let (mut s, mut queue) = SigningSession::start(&members[by].enclave, session, purpose, 3, t);
    let mut calls = 0;
    while !queue.is_empty() {
        let SignEffect::Call { member, request } = queue.remove(0);
        calls += 1;
        assert!(calls < 100, "the session does not end");
        if members[usize::from(member)].behaviour == Behaviour::Replays {
            for (i, other) in members.iter_mut().enumerate() {
                if i != usize::from(member) {
                    let _ = other.call(&request);
                }
            }
        }
        let answer = members[usize::from(member)].call(&request);
        queue.extend(s.reply(&members[by].enclave, member, answer));
    }
    let left = Left {
        excluded: s.excluded().iter().copied().collect(),
        faulty: s.faulty().iter().copied().collect(),
    };
    (s.outcome().clone(), s.session() + 1, left)
}

/// The members' accounts, in committee order.
fn accounts(members: &[Member]) -> Vec<[u8; 32]> {
    members.iter().map(|m| m.enclave.account().0).collect()
}

fn signed(outcome: &SignOutcome) -> GroupSignature {
    match outcome {
        SignOutcome::Signed(signature) => *signature,
        other => panic!("not signed: {other:?}"),
    }
}

#[test]
fn t_honest_members_settle_every_slot_whatever_the_third_answers() {
    for behaviour in BYZANTINE {
        for byzantine in 0..3 {
            let mut behaviours = [Behaviour::Honest; 3];
            behaviours[byzantine] = behaviour;
            let (mut members, group, epoch_key) = committee(behaviours);
            let mut session = 1;
            for slot in 8..12 {
                let summary = clear(&mut members, slot);
                // Each honest member coordinates in its turn.
                let by = (0..3)
                    .filter(|i| *i != byzantine)
                    .nth(slot as usize % 2)
                    .unwrap();
                let purpose = Purpose::Report {
                    region: REGION,
                    slot: Slot(slot),
                };
                let (outcome, next, left) = run(&mut members, by, session, purpose);
                session = next;
                let signature = signed(&outcome);
                group
                    .verify(&report_message(&CHAIN, &summary), &signature)
                    .unwrap_or_else(|e| panic!("{behaviour:?} at {byzantine}: {e}"));
                // Only ever the Byzantine member is left out: always when it
                // is among the first two asked and lies, never when it
                // answers right (member 2 is asked only in place of one).
                let lies = behaviour != Behaviour::Replays;
                let expected: Vec<u16> = if byzantine < 2 && lies {
                    vec![u16::try_from(byzantine).unwrap()]
                } else {
                    Vec::new()
                };
                // Proven at fault only by a signed answer FROST refused:
                // not for silence, a refusal, a wrong index, nor an answer
                // altered after it was signed. (A stale commitment is
                // refused by the member itself at round 2, or does not
                // decode when first flipped: either may name it.)
                let proven = matches!(
                    behaviour,
                    Behaviour::GarbledCommitment | Behaviour::ForgedShare | Behaviour::GarbledShare
                );
                let faulty = if proven {
                    expected.clone()
                } else if behaviour == Behaviour::StaleCommitment {
                    left.faulty.clone()
                } else {
                    Vec::new()
                };
                assert!(left.faulty.iter().all(|f| expected.contains(f)));
                assert_eq!(
                    left,
                    Left {
                        excluded: expected,
                        faulty
                    },
                    "{behaviour:?} at {byzantine}"
                );
            }
            let by = usize::from(byzantine == 0);
            let purpose = Purpose::EpochKey {
                epoch: EPOCH,
                public_key: epoch_key,
            };
            let (outcome, next, _) = run(&mut members, by, session, purpose);
            group
                .verify(
                    &epoch_key_message(&CHAIN, EPOCH, &epoch_key),
                    &signed(&outcome),
                )
                .unwrap();
            // And the statement the committee takes office with.
            let (outcome, _, _) = run(&mut members, by, next, Purpose::Committee);
            group
                .verify(
                    &committee_message(&CHAIN, 2, &accounts(&members)),
                    &signed(&outcome),
                )
                .unwrap();
        }
    }
}

#[test]
fn with_two_members_down_or_lying_the_third_signs_nothing() {
    for behaviour in BYZANTINE.into_iter().filter(|b| *b != Behaviour::Replays) {
        let (mut members, _, epoch_key) =
            committee([Behaviour::Honest, behaviour, Behaviour::Silent]);
        clear(&mut members, 8);
        let purposes = [
            Purpose::Report {
                region: REGION,
                slot: Slot(8),
            },
            Purpose::EpochKey {
                epoch: EPOCH,
                public_key: epoch_key,
            },
            Purpose::Committee,
        ];
        let mut session = 1;
        for purpose in purposes {
            let (outcome, next, _) = run(&mut members, 0, session, purpose);
            session = next;
            assert!(
                matches!(
                    outcome,
                    SignOutcome::Failed(SignFailure::TooFewHonest { .. })
                ),
                "{behaviour:?}: {outcome:?}"
            );
        }
    }
}

#[test]
fn a_compromised_member_can_not_get_a_key_or_a_report_it_made_up_signed() {
    // Member 1 is compromised (its host coordinates as it likes): the
    // honest members sign only what they computed themselves.
    let (mut members, _, _) = committee([Behaviour::Honest; 3]);
    clear(&mut members, 8);
    let (planted, _) = members[1].enclave.create_epoch_key(Epoch(3)).unwrap();
    let forged = [
        Purpose::EpochKey {
            epoch: Epoch(3),
            public_key: planted,
        },
        Purpose::EpochKey {
            epoch: EPOCH,
            public_key: [9; 32],
        },
        Purpose::Report {
            region: REGION,
            slot: Slot(9),
        },
    ];
    let mut session = 1;
    for purpose in forged {
        let (outcome, next, left) = run(&mut members, 1, session, purpose);
        let excluded = left.excluded;
        session = next;
        assert!(
            matches!(
                outcome,
                SignOutcome::Failed(SignFailure::TooFewHonest { .. })
            ),
            "{purpose:?}: {outcome:?}"
        );
        // The honest members refused: they are the ones left out.
        assert!(
            excluded.contains(&0) && excluded.contains(&2),
            "{excluded:?}"
        );
    }
}

#[test]
fn members_sign_only_the_threshold_and_members_their_dkg_ran_with() {
    // The first member's host invited the DKG with t = 3 of 3 where the
    // chain's policy says 2. The members sign the committee statement of
    // what their DKG formed, t = 3, which the chain refuses (its policy
    // says 2); no coordinator gets the statement for t = 2 signed.
    let (mut members, group, _) = committee_of(3, [Behaviour::Honest; 3]);
    let everyone = accounts(&members);
    let (outcome, next, _) = run_for(&mut members, (0, 3), 1, Purpose::Committee);
    let signature = signed(&outcome);
    group
        .verify(&committee_message(&CHAIN, 3, &everyone), &signature)
        .unwrap();
    assert!(
        group
            .verify(&committee_message(&CHAIN, 2, &everyone), &signature)
            .is_err()
    );
    // Two members of a 3-of-3 committee sign nothing.
    let (outcome, _, _) = run_for(&mut members, (1, 2), next, Purpose::Committee);
    assert!(
        !matches!(outcome, SignOutcome::Signed(_)),
        "two shares of a 3-of-3 key: {outcome:?}"
    );
}
