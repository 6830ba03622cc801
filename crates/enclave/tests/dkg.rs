//! Deterministic DKG tests: real enclaves (the simulated platform), reached
//! only through their RPC dispatch, and the sans-IO DKG coordinator, with
//! members whose hosts answer what a subverted host would and an outsider
//! who replays what it sees. An honest committee forms one group key; a
//! member that stays silent, refuses, or answers with packages that are not
//! its own ends the DKG with that member named, and no honest member holds a
//! key from it; an outsider replaying the invitation does not stop it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use quartier_enclave::attestation::{Measurement, Quote, SimulatedAttestationService};
use quartier_enclave::dkg::{DkgEffect, DkgFailure, DkgOutcome, DkgSession};
use quartier_enclave::rpc::{Request, Response};
use quartier_enclave::service::{EnclaveService, SimulatedPlatform};

const CHAIN: [u8; 32] = [0xc4; 32];
const MEASUREMENT: Measurement = Measurement([6; 32]);

/// What a member's host does with the DKG requests it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Never answers in this round (1, 2 or 3).
    SilentIn(u8),
    /// Refuses everything.
    Refuses,
    /// Answers round 1 with a package its account did not sign (an
    /// outsider's, or garbled).
    ForgedRound1,
    /// Answers round 2 with a package that claims to be another member's.
    ClaimsAnother,
    /// Answers round 2 with one recipient's package altered (a share the
    /// recipient can not open).
    BadShare,
}

const BYZANTINE: [Behaviour; 7] = [
    Behaviour::SilentIn(1),
    Behaviour::SilentIn(2),
    Behaviour::SilentIn(3),
    Behaviour::Refuses,
    Behaviour::ForgedRound1,
    Behaviour::ClaimsAnother,
    Behaviour::BadShare,
];

struct Member {
    enclave: EnclaveService,
    behaviour: Behaviour,
}

/// One request as the RPC decodes it, then the enclave's dispatch.
fn rpc(enclave: &mut EnclaveService, request: &Request) -> Response {
    let bytes = borsh::to_vec(request).unwrap();
    enclave.handle(quartier_enclave::rpc::decode_request(&bytes).unwrap())
}

impl Member {
    fn call(&mut self, request: &Request) -> Option<Response> {
        let answer = rpc(&mut self.enclave, request);
        let round = match request {
            Request::DkgRound1 { .. } => 1,
            Request::DkgRound2 { .. } => 2,
            _ => 3,
        };
        match (self.behaviour, answer) {
            (Behaviour::SilentIn(r), _) if r == round => None,
            (Behaviour::Refuses, _) => Some(Response::Refused("no".into())),
            (Behaviour::ForgedRound1, Response::DkgRound1(package, mut signature)) => {
                signature[0] ^= 1;
                Some(Response::DkgRound1(package, signature))
            }
            (Behaviour::ClaimsAnother, Response::DkgRound2(mut sealed)) => {
                for p in &mut sealed {
                    p.from = (p.from + 1) % 3;
                }
                Some(Response::DkgRound2(sealed))
            }
            (Behaviour::BadShare, Response::DkgRound2(mut sealed)) => {
                if let Some(first) = sealed.first_mut().and_then(|p| p.ciphertext.first_mut()) {
                    *first ^= 1;
                }
                Some(Response::DkgRound2(sealed))
            }
            (_, answer) => Some(answer),
        }
    }
}

/// Three registered enclaves, ascending by account, behind their hosts.
fn members(behaviours: [Behaviour; 3]) -> (Vec<Member>, Vec<Quote>) {
    let (members, quotes, _) = members_on_platform(behaviours);
    (members, quotes)
}

/// As [`members`], with the platform they run on (to seal and unseal one).
fn members_on_platform(behaviours: [Behaviour; 3]) -> (Vec<Member>, Vec<Quote>, SimulatedPlatform) {
    let vendor = SimulatedAttestationService::new([42; 32]);
    let platform = SimulatedPlatform::new([5; 32], MEASUREMENT, vendor.root());
    let mut enclaves: Vec<EnclaveService> = (0..3)
        .map(|_| EnclaveService::new(&platform).unwrap())
        .collect();
    enclaves.sort_by_key(EnclaveService::account);
    let quotes = enclaves
        .iter()
        .map(|e| vendor.quote(MEASUREMENT, e.report_data()))
        .collect();
    let members = enclaves
        .into_iter()
        .zip(behaviours)
        .map(|(enclave, behaviour)| Member { enclave, behaviour })
        .collect();
    (members, quotes, platform)
}

/// Runs member 0's DKG to its end, delivering every request in order;
/// `between` runs before each request is delivered (an outsider's turn).
fn run(
    members: &mut [Member],
    quotes: Vec<Quote>,
    mut between: impl FnMut(&mut [Member], &Request),
) -> DkgOutcome {
    let (mut dkg, mut queue) = DkgSession::start(&members[0].enclave, CHAIN, 2, quotes);
    let mut calls = 0;
    while !queue.is_empty() {
        let DkgEffect::Call { member, request } = queue.remove(0);
        calls += 1;
        assert!(calls < 100, "the DKG does not end");
        between(members, &request);
        let answer = members[usize::from(member)].call(&request);
        queue.extend(dkg.reply(member, answer));
    }
    dkg.outcome().clone()
}

#[test]
fn an_outsider_replaying_the_invitation_during_the_dkg_does_not_stop_it() {
    // The outsider sees the coordinator's round-1 requests on the network
    // (or at the RPC) and sends each again to its member before every
    // later request: before, a member started its DKG over, and its round-2
    // shares no longer matched the round-1 package the others held.
    let (mut members, quotes) = members([Behaviour::Honest; 3]);
    let mut seen: Vec<Request> = Vec::new();
    let outcome = run(&mut members, quotes, |members, request| {
        if matches!(request, Request::DkgRound1 { .. }) {
            seen.push(request.clone());
        } else {
            for replay in &seen {
                if let Request::DkgRound1 { index, .. } = replay {
                    let _ = rpc(&mut members[usize::from(*index)].enclave, replay);
                }
            }
        }
    });
    let DkgOutcome::Formed(key) = outcome else {
        panic!("no committee: {outcome:?}");
    };
    for m in &members {
        assert_eq!(m.enclave.group_key(), Some(key));
    }
}

#[test]
fn a_byzantine_member_ends_the_dkg_named_and_no_honest_member_is_left_with_half_a_committee() {
    for behaviour in BYZANTINE {
        for byzantine in 0..3u16 {
            let mut behaviours = [Behaviour::Honest; 3];
            behaviours[usize::from(byzantine)] = behaviour;
            let (mut members, quotes) = members(behaviours);
            let outcome = run(&mut members, quotes, |_, _| {});
            // The member of the first round-2 package the cheater sends
            // (its lowest other member) can not open it.
            let victim = u16::from(byzantine == 0);
            let expected = match behaviour {
                Behaviour::SilentIn(3) => DkgFailure::Unfinished { member: byzantine },
                Behaviour::SilentIn(round) => DkgFailure::Member {
                    member: byzantine,
                    round,
                },
                Behaviour::Refuses | Behaviour::ForgedRound1 => DkgFailure::Member {
                    member: byzantine,
                    round: 1,
                },
                Behaviour::ClaimsAnother => DkgFailure::Member {
                    member: byzantine,
                    round: 2,
                },
                Behaviour::BadShare => DkgFailure::Unfinished { member: victim },
                Behaviour::Honest => unreachable!(),
            };
            assert_eq!(
                outcome,
                DkgOutcome::Failed(expected),
                "{behaviour:?} at {byzantine}"
            );
            let keys: Vec<bool> = members
                .iter()
                .map(|m| m.enclave.group_key().is_some())
                .collect();
            match behaviour {
                // Its enclave finished; its host only kept the answer back:
                // every member holds the one key (their votes can form it).
                Behaviour::SilentIn(3) => assert_eq!(keys, [true; 3], "{behaviour:?}"),
                // The member that could not open its share holds none, so
                // no unanimous vote ever puts the others' key in office.
                Behaviour::BadShare => {
                    assert!(!keys[usize::from(victim)], "{behaviour:?} at {byzantine}");
                }
                // Ended before anyone finished: no member holds a key.
                _ => assert_eq!(keys, [false; 3], "{behaviour:?} at {byzantine}"),
            }
        }
    }
}

#[test]
fn an_outsider_copying_round_2_requests_to_the_others_first_does_not_stop_it() {
    // Round 2's request is the same for every member: an outsider who sees
    // the one to member 0 delivers it to the others before the
    // coordinator does. Each answers the same request the same way.
    let (mut members, quotes) = members([Behaviour::Honest; 3]);
    let outcome = run(&mut members, quotes, |members, request| {
        if let Request::DkgRound2 { .. } = request {
            for m in members.iter_mut() {
                let _ = rpc(&mut m.enclave, request);
            }
        }
    });
    assert!(matches!(outcome, DkgOutcome::Formed(_)), "{outcome:?}");
}

#[test]
fn a_dkg_that_failed_forms_when_the_coordinator_tries_again() {
    // Member 2's host drops its round-2 answer once; the coordinator runs
    // the same DKG again (the same invitation: same members, same t). The
    // members answer the repeated rounds as before and finish.
    let (mut members, quotes) =
        members([Behaviour::Honest, Behaviour::Honest, Behaviour::SilentIn(2)]);
    let outcome = run(&mut members, quotes.clone(), |_, _| {});
    assert_eq!(
        outcome,
        DkgOutcome::Failed(DkgFailure::Member {
            member: 2,
            round: 2
        })
    );
    members[2].behaviour = Behaviour::Honest;
    let outcome = run(&mut members, quotes, |_, _| {});
    let DkgOutcome::Formed(key) = outcome else {
        panic!("no committee on the second try: {outcome:?}");
    };
    for m in &members {
        assert_eq!(m.enclave.group_key(), Some(key));
    }
}

/// A member restarts between round 2 and the finish (a DKG in progress is
/// not sealed: its host restores the enclave without it), so the first
/// attempt can not finish and the coordinator tries again, with the
/// restarted member's new round-1 package. An outsider who recorded the
/// first attempt's round-2 requests sends them to every member before each
/// finish of the retry. Before, that put the old round-1 set back under the
/// others' round 2, and their finish failed against the restarted member's
/// new shares, every retry; now the finish names its round-1 set.
#[test]
fn a_replayed_round_two_after_a_member_restarted_does_not_stop_the_retry() {
    let (mut members, quotes, platform) = members_on_platform([Behaviour::Honest; 3]);
    // The first attempt, up to its finish.
    let (mut dkg, mut queue) = DkgSession::start(&members[0].enclave, CHAIN, 2, quotes.clone());
    let mut recorded = Vec::new();
    while !queue.is_empty() {
        let DkgEffect::Call { member, request } = queue.remove(0);
        if matches!(request, Request::DkgFinish { .. }) {
            break;
        }
        if matches!(request, Request::DkgRound2 { .. }) {
            recorded.push((member, request.clone()));
        }
        let answer = members[usize::from(member)].call(&request);
        queue.extend(dkg.reply(member, answer));
    }
    assert_eq!(recorded.len(), 3, "round 2 ran");
    // Member 1 restarts from its sealed state.
    let sealed = members[1].enclave.seal(&platform).unwrap();
    members[1].enclave = EnclaveService::unseal(&sealed, &platform).unwrap();
    assert_eq!(members[1].enclave.group_key(), None);
    // The retry, with the outsider's replays before every finish.
    let outcome = run(&mut members, quotes, |members, request| {
        if matches!(request, Request::DkgFinish { .. }) {
            for (member, replay) in &recorded {
                let _ = rpc(&mut members[usize::from(*member)].enclave, replay);
            }
        }
    });
    let DkgOutcome::Formed(key) = outcome else {
        panic!("no committee: {outcome:?}");
    };
    for m in &members {
        assert_eq!(m.enclave.group_key(), Some(key));
    }
}

/// An outsider who saw the round-2 request sends each member, before its
/// finish, four round-2 requests that differ only in that member's own
/// entry (which round 2 does not read). Before, each ran and was kept under
/// its own round-1 digest, and the fourth pushed the coordinator's run out:
/// the member could not finish. Now a round-1 set must hold every member,
/// the member's own entry its own answer.
#[test]
fn round_two_sets_varying_a_members_own_entry_are_refused() {
    let (mut members, quotes) = members([Behaviour::Honest; 3]);
    let mut genuine = None;
    let outcome = run(&mut members, quotes, |members, request| match request {
        Request::DkgRound2 { round1 } => genuine = Some(round1.clone()),
        Request::DkgFinish { packages, .. } => {
            let round1 = genuine.clone().unwrap();
            let to = packages[0].to;
            for k in 0..4u8 {
                let mut varied = round1.clone();
                varied.insert(to, (vec![k; 40], [k; 64]));
                let refused = rpc(
                    &mut members[usize::from(to)].enclave,
                    &Request::DkgRound2 { round1: varied },
                );
                assert!(matches!(refused, Response::Refused(_)), "{refused:?}");
            }
        }
        _ => {}
    });
    let DkgOutcome::Formed(key) = outcome else {
        panic!("no committee: {outcome:?}");
    };
    for m in &members {
        assert_eq!(m.enclave.group_key(), Some(key));
    }
}

/// A finish delivered twice (an outsider may deliver the coordinator's
/// first) gives the same key again, so the coordinator's own does not
/// report the member as unfinished.
#[test]
fn a_finish_delivered_twice_gives_the_same_key() {
    let (mut members, quotes) = members([Behaviour::Honest; 3]);
    let outcome = run(&mut members, quotes, |members, request| {
        if let Request::DkgFinish { packages, .. } = request {
            let to = usize::from(packages[0].to);
            assert!(matches!(
                rpc(&mut members[to].enclave, request),
                Response::DkgFinished(_)
            ));
        }
    });
    assert!(matches!(outcome, DkgOutcome::Formed(_)), "{outcome:?}");
}
