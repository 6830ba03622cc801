//! Deterministic DKG tests: real enclaves (the simulated platform), reached
//! only through their RPC dispatch, and the sans-IO DKG coordinator, with
//! members whose hosts answer what a subverted host would and an outsider
//! who replays what it sees. An honest committee forms one group key; a
//! member that stays silent, refuses, or answers with packages that are not
//! its own ends the DKG with that member named, and no member holds a key
//! from it unless every member confirmed it; an outsider replaying what it
//! saw, of this attempt or an earlier one, does not stop it.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use quartier_enclave::attestation::{Measurement, Quote, SimulatedAttestationService};
use quartier_enclave::dkg::{DkgEffect, DkgFailure, DkgOutcome, DkgSession};
use quartier_enclave::rpc::{Request, Response};
use quartier_enclave::service::{EnclaveService, SimulatedPlatform};
use std::sync::atomic::{AtomicU64, Ordering};

const CHAIN: [u8; 32] = [0xc4; 32];
const MEASUREMENT: Measurement = Measurement([6; 32]);

/// What a member's host does with the DKG requests it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Never answers in this round (1, 2, 3: the finish, or 4: the
    /// confirmation).
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

const BYZANTINE: [Behaviour; 8] = [
    Behaviour::SilentIn(1),
    Behaviour::SilentIn(2),
    Behaviour::SilentIn(3),
    Behaviour::SilentIn(4),
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
            Request::DkgFinish { .. } => 3,
            _ => 4,
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

/// `n` registered enclaves ascending by account, their quotes, and the
/// platform they run on (to seal and unseal one).
fn enclaves(n: usize) -> (Vec<EnclaveService>, Vec<Quote>, SimulatedPlatform) {
    let vendor = SimulatedAttestationService::new([42; 32]);
    let platform = SimulatedPlatform::new([5; 32], MEASUREMENT, vendor.root());
    let mut enclaves: Vec<EnclaveService> = (0..n)
        .map(|_| EnclaveService::new(&platform).unwrap())
        .collect();
    enclaves.sort_by_key(EnclaveService::account);
    let quotes: Vec<Quote> = enclaves
        .iter()
        .map(|e| vendor.quote(MEASUREMENT, e.report_data()))
        .collect();
    // All of them registered on the chain (the registry check itself is
    // `chain.rs`'s): the DKG's own defences are what these tests try.
    for e in &mut enclaves {
        e.trust_registry_unverified(CHAIN, &quotes);
    }
    (enclaves, quotes, platform)
}

/// As [`members`], with the platform they run on (to seal and unseal one).
fn members_on_platform(behaviours: [Behaviour; 3]) -> (Vec<Member>, Vec<Quote>, SimulatedPlatform) {
    let (enclaves, quotes, platform) = enclaves(3);
    let members = enclaves
        .into_iter()
        .zip(behaviours)
        .map(|(enclave, behaviour)| Member { enclave, behaviour })
        .collect();
    (members, quotes, platform)
}

/// An enclave restarted from `sealed`, its host showing it the chain's
/// registry (of `registered`) again.
fn restarted(sealed: &[u8], platform: &SimulatedPlatform, registered: &[Quote]) -> EnclaveService {
    let mut enclave = EnclaveService::unseal(sealed, platform).unwrap();
    enclave.trust_registry_unverified(CHAIN, registered);
    enclave
}

/// The coordinator's next attempt (each later than the last).
fn next_attempt() -> u64 {
    static ATTEMPT: AtomicU64 = AtomicU64::new(1);
    ATTEMPT.fetch_add(1, Ordering::Relaxed)
}

/// Starts member 0's next DKG attempt.
fn start(members: &[Member], quotes: Vec<Quote>) -> (DkgSession, Vec<DkgEffect>) {
    DkgSession::start(&members[0].enclave, CHAIN, 2, next_attempt(), quotes)
}

/// Runs member 0's next DKG attempt to its end, delivering every request in
/// order; `between` runs before each request is delivered (an outsider's
/// turn).
fn run(
    members: &mut [Member],
    quotes: Vec<Quote>,
    mut between: impl FnMut(&mut [Member], &Request),
) -> DkgOutcome {
    run_delivering(members, quotes, |members, _, request| {
        between(members, request);
        true
    })
}

/// As [`run`]; `deliver(members, member, request)` runs before each request
/// and says whether it reaches its member (false: lost on the way).
fn run_delivering(
    members: &mut [Member],
    quotes: Vec<Quote>,
    mut deliver: impl FnMut(&mut [Member], u16, &Request) -> bool,
) -> DkgOutcome {
    let (mut dkg, mut queue) = start(members, quotes);
    let mut calls = 0;
    while !queue.is_empty() {
        let DkgEffect::Call { member, request } = queue.remove(0);
        calls += 1;
        assert!(calls < 100, "the DKG does not end");
        let answer = if deliver(members, member, &request) {
            members[usize::from(member)].call(&request)
        } else {
            None
        };
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
    assert_formed(&outcome, &members);
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
                Behaviour::SilentIn(4) => DkgFailure::Unconfirmed { member: byzantine },
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
                // Its enclave confirmed; its host only kept the answer
                // back: every member holds the one key (their votes can
                // form it).
                Behaviour::SilentIn(4) => assert_eq!(keys, [true; 3], "{behaviour:?}"),
                // Ended before every member confirmed: none holds a key (a
                // key some finished with stays pending, and the next
                // attempt starts them over).
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
    assert_formed(&outcome, &members);
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
    let (mut dkg, mut queue) = start(&members, quotes.clone());
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
    members[1].enclave = restarted(&sealed, &platform, &quotes);
    assert_eq!(members[1].enclave.group_key(), None);
    // The retry, with the outsider's replays before every finish.
    let outcome = run(&mut members, quotes, |members, request| {
        if matches!(request, Request::DkgFinish { .. }) {
            for (member, replay) in &recorded {
                let _ = rpc(&mut members[usize::from(*member)].enclave, replay);
            }
        }
    });
    assert_formed(&outcome, &members);
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
    assert_formed(&outcome, &members);
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
                Response::DkgFinished(..)
            ));
        }
    });
    assert!(matches!(outcome, DkgOutcome::Formed(_)), "{outcome:?}");
}

/// Member 2 restarts between round 2 and the finish (a DKG in progress
/// is not sealed), so the coordinator's finish reaches members 0 and 1,
/// which finish, and not member 2, which can not. Before, the two that
/// finished held the key as their committee's and refused the
/// coordinator's retry: no committee ever formed. Now a key is the
/// member's only once every member confirmed it finished with it, and the
/// retry forms the committee.
#[test]
fn a_dkg_only_some_members_finished_forms_on_the_retry() {
    let (mut members, quotes, platform) = members_on_platform([Behaviour::Honest; 3]);
    let outcome = run(&mut members, quotes.clone(), |members, request| {
        if let Request::DkgFinish { packages, .. } = request
            && packages[0].to == 2
        {
            let sealed = members[2].enclave.seal(&platform).unwrap();
            members[2].enclave = restarted(&sealed, &platform, &quotes);
        }
    });
    assert_eq!(
        outcome,
        DkgOutcome::Failed(DkgFailure::Unfinished { member: 2 })
    );
    for m in &members {
        assert_eq!(m.enclave.group_key(), None, "a key no one confirmed");
    }
    let outcome = run(&mut members, quotes, |_, _| {});
    assert_formed(&outcome, &members);
}

/// The review's attack on the finish: the first attempt ran round 2 (an
/// outsider recorded its requests and answers) and stopped before the
/// finish, when member 1 restarted; the coordinator tries again. Before
/// the retry's finish, the outsider sends members 0 and 2 the first
/// attempt's finish, built from what it recorded. Before, they finished
/// with the first attempt's key and then refused the retry's finish: no
/// committee.
#[test]
fn an_outsider_finishing_an_earlier_attempt_does_not_stop_the_retry() {
    let (mut members, quotes, platform) = members_on_platform([Behaviour::Honest; 3]);
    let (mut dkg, mut queue) = start(&members, quotes.clone());
    let mut round1 = None;
    let mut answers = Vec::new();
    let mut invitations = Vec::new();
    while !queue.is_empty() {
        let DkgEffect::Call { member, request } = queue.remove(0);
        if let Request::DkgFinish { round1: set, .. } = &request {
            round1 = Some(*set);
            break;
        }
        if matches!(request, Request::DkgRound1 { .. }) {
            invitations.push((member, request.clone()));
        }
        let answer = members[usize::from(member)].call(&request);
        if let Some(Response::DkgRound2(sealed)) = &answer {
            answers.extend(sealed.clone());
        }
        queue.extend(dkg.reply(member, answer));
    }
    let round1 = round1.unwrap();
    assert_eq!(answers.len(), 6, "round 2 ran");
    let sealed = members[1].enclave.seal(&platform).unwrap();
    members[1].enclave = restarted(&sealed, &platform, &quotes);
    let outcome = run(&mut members, quotes, |members, request| {
        // The first attempt's invitations again, before every request: an
        // earlier attempt does not start a member over.
        for (member, old) in &invitations {
            let _ = rpc(&mut members[usize::from(*member)].enclave, old);
        }
        if matches!(request, Request::DkgFinish { .. }) {
            for to in [0u16, 2] {
                let old = Request::DkgFinish {
                    round1,
                    packages: answers.iter().filter(|p| p.to == to).cloned().collect(),
                };
                let _ = rpc(&mut members[usize::from(to)].enclave, &old);
            }
        }
    });
    assert_formed(&outcome, &members);
}

/// An outsider sends every member a confirmation before the coordinator
/// does: signatures of its own, one member's signature three times, and
/// the genuine ones with one altered. None makes a member take the key; the
/// coordinator's confirmation forms the committee.
#[test]
fn a_forged_confirmation_does_not_give_a_member_the_key() {
    let (mut members, quotes) = members([Behaviour::Honest; 3]);
    let mut sent = false;
    let outcome = run(&mut members, quotes, |members, request| {
        if let Request::DkgConfirm { round1, signatures } = request
            && !std::mem::replace(&mut sent, true)
        {
            let mut altered = signatures.clone();
            altered[2][0] ^= 1;
            for forged in [
                vec![[9; 64]; 3],
                vec![signatures[0]; 3],
                altered,
                signatures[..2].to_vec(),
            ] {
                for m in members.iter_mut() {
                    let forged = Request::DkgConfirm {
                        round1: *round1,
                        signatures: forged.clone(),
                    };
                    let answer = rpc(&mut m.enclave, &forged);
                    assert!(matches!(answer, Response::Refused(_)), "{answer:?}");
                    assert_eq!(m.enclave.group_key(), None);
                }
            }
        }
    });
    assert_formed(&outcome, &members);
}

/// The committee formed: every member holds the outcome's key.
fn assert_formed(outcome: &DkgOutcome, members: &[Member]) {
    let DkgOutcome::Formed(key) = outcome else {
        panic!("no committee: {outcome:?}");
    };
    for m in members {
        assert_eq!(m.enclave.group_key(), Some(*key));
    }
}

/// What a confirmed member's host does until the committee is in office:
/// delivers its enclave's certificate to every other member.
fn deliver_certificate(members: &mut [Member], from: usize) {
    let (round1, signatures) = members[from].enclave.dkg_certificate().unwrap();
    let request = Request::DkgConfirm { round1, signatures };
    for (i, m) in members.iter_mut().enumerate() {
        if i != from {
            let _ = rpc(&mut m.enclave, &request);
        }
    }
}

/// Whether every member holds the same key.
fn one_key(members: &[Member]) -> bool {
    let key = members[0].enclave.group_key();
    key.is_some() && members.iter().all(|m| m.enclave.group_key() == key)
}

/// The review's first case: the confirmation does not reach member 2 (its
/// host is down a moment). Members 0 and 1 confirmed; before, they refused
/// every later attempt while the retry's invitation made member 2 drop its
/// key: no committee, ever. Now member 2 keeps the key it finished with,
/// and the certificate a confirmed member's host delivers confirms it, even
/// after the coordinator's retry reached it.
#[test]
fn a_confirmation_lost_at_one_member_is_delivered_again() {
    let (mut members, quotes) = members([Behaviour::Honest; 3]);
    let outcome = run_delivering(&mut members, quotes.clone(), |_, member, request| {
        member != 2 || !matches!(request, Request::DkgConfirm { .. })
    });
    assert_eq!(
        outcome,
        DkgOutcome::Failed(DkgFailure::Unconfirmed { member: 2 })
    );
    let retry = run(&mut members, quotes, |_, _| {});
    assert!(matches!(retry, DkgOutcome::Failed(_)), "{retry:?}");
    deliver_certificate(&mut members, 1);
    assert!(one_key(&members), "no committee");
}

/// The review's second case: member 2's host restarts it just before the
/// confirmation reaches it. Its host sealed each DKG step before answering
/// it, so the restarted enclave still holds the key it finished with, and
/// confirms (the confirmation that reached it, or one delivered later).
#[test]
fn a_member_restarted_before_the_confirmation_still_confirms() {
    for delivered_later in [false, true] {
        let (mut members, quotes, platform) = members_on_platform([Behaviour::Honest; 3]);
        let registered = quotes.clone();
        let outcome = run_delivering(&mut members, quotes, |members, member, request| {
            if member == 2 && matches!(request, Request::DkgConfirm { .. }) {
                let sealed = members[2].enclave.seal(&platform).unwrap();
                members[2].enclave = restarted(&sealed, &platform, &registered);
                return !delivered_later;
            }
            true
        });
        if delivered_later {
            deliver_certificate(&mut members, 0);
        } else {
            assert!(matches!(outcome, DkgOutcome::Formed(_)), "{outcome:?}");
        }
        assert!(one_key(&members), "no committee (later: {delivered_later})");
    }
}

/// The review's third case: the host of an enclave E that is not in the
/// committee but sorts before a member invites that member to a DKG of
/// its own (E and the member, t = 2; quotes are public) at attempt
/// u64::MAX. Before, the member then refused every attempt of the real
/// coordinator ("not a later DKG attempt"), forever. Now each inviter's
/// attempts are counted apart.
#[test]
fn another_inviters_attempt_does_not_lock_a_member_out() {
    let (mut all, quotes, _) = enclaves(4);
    let e = all.remove(0);
    let pair = vec![quotes[0].clone(), quotes[3].clone()];
    let quotes = quotes[1..].to_vec();
    let invitation = e.invite(CHAIN, 2, u64::MAX, &pair).unwrap();
    let bogus = Request::DkgRound1 {
        index: 1,
        t: 2,
        attempt: u64::MAX,
        chain: CHAIN,
        members: pair,
        invitation,
    };
    assert!(matches!(rpc(&mut all[2], &bogus), Response::DkgRound1(..)));
    let mut members: Vec<Member> = all
        .into_iter()
        .map(|enclave| Member {
            enclave,
            behaviour: Behaviour::Honest,
        })
        .collect();
    let outcome = run(&mut members, quotes, |_, _| {});
    assert!(matches!(outcome, DkgOutcome::Formed(_)), "{outcome:?}");
    assert!(one_key(&members));
}

/// The review's fourth case: E's host, watching the network, invites
/// member 2 to a DKG of its own as soon as it sees the confirmation go to
/// member 0. Before, member 2 dropped the key it finished with while 0 and
/// 1 confirmed theirs: no committee, ever. Now it keeps it and confirms.
#[test]
fn another_inviters_invitation_between_the_confirmations_does_not_split_the_committee() {
    let (mut all, quotes, _) = enclaves(4);
    let e = all.remove(0);
    let pair = vec![quotes[0].clone(), quotes[3].clone()];
    let quotes = quotes[1..].to_vec();
    let invitation = e.invite(CHAIN, 2, 2, &pair).unwrap();
    let bogus = Request::DkgRound1 {
        index: 1,
        t: 2,
        attempt: 2,
        chain: CHAIN,
        members: pair,
        invitation,
    };
    let mut members: Vec<Member> = all
        .into_iter()
        .map(|enclave| Member {
            enclave,
            behaviour: Behaviour::Honest,
        })
        .collect();
    let outcome = run(&mut members, quotes, |members, request| {
        if let Request::DkgConfirm { .. } = request {
            let _ = rpc(&mut members[2].enclave, &bogus);
        }
    });
    assert!(matches!(outcome, DkgOutcome::Formed(_)), "{outcome:?}");
    assert!(one_key(&members));
}

/// Runs a DKG of `members` (indices into `all`, ascending; the first one
/// coordinates) at `attempt`, every request through the RPC dispatch;
/// `drop(member, request)` says which requests are lost; `between` runs
/// before each delivery.
fn drive(
    all: &mut [EnclaveService],
    members: &[usize],
    quotes: &[Quote],
    attempt: u64,
    drop: impl Fn(u16, &Request) -> bool,
    mut between: impl FnMut(&mut [EnclaveService], u16, &Request),
) -> DkgOutcome {
    let q: Vec<Quote> = members.iter().map(|i| quotes[*i].clone()).collect();
    let (mut dkg, effects) = DkgSession::start(&all[members[0]], CHAIN, 2, attempt, q);
    let mut queue: std::collections::VecDeque<DkgEffect> = effects.into();
    while let Some(DkgEffect::Call { member, request }) = queue.pop_front() {
        between(all, member, &request);
        let answer = (!drop(member, &request))
            .then(|| rpc(&mut all[members[usize::from(member)]], &request));
        queue.extend(dkg.reply(member, answer));
    }
    dkg.outcome().clone()
}

/// [`deliver_certificate`] among raw enclaves: `from`'s certificate to the
/// rest of `committee`.
fn certificate_to_all(all: &mut [EnclaveService], committee: &[usize], from: usize) {
    let (round1, signatures) = all[from].dkg_certificate().unwrap();
    let request = Request::DkgConfirm { round1, signatures };
    for i in committee {
        if *i != from {
            let _ = rpc(&mut all[*i], &request);
        }
    }
}

/// Whether the enclaves `committee` (indices into `all`) hold one key.
fn holds_one_key(all: &[EnclaveService], committee: &[usize]) -> bool {
    let key = all[committee[0]].group_key();
    key.is_some() && committee.iter().all(|i| all[*i].group_key() == key)
}

/// The second review's first finding: the real committee {1,2,3}
/// finishes, the confirmation to T (= 3) is lost. E (= 0, a genuine enclave
/// that sorts first)'s host then runs four complete DKGs {E, T} with T,
/// which pushed the real finish out of T's kept finishes: the certificate
/// the confirmed members' hosts deliver no longer confirmed T, and no
/// committee ever formed (red before). Finishes are kept per inviter.
#[test]
fn four_foreign_finishes_flush_the_real_finish_before_the_certificate() {
    let (mut all, quotes, _) = enclaves(4);
    let committee = [1, 2, 3];
    let outcome = drive(
        &mut all,
        &committee,
        &quotes,
        10,
        |m, r| m == 2 && matches!(r, Request::DkgConfirm { .. }),
        |_, _, _| {},
    );
    assert!(matches!(outcome, DkgOutcome::Failed(_)), "{outcome:?}");
    for attempt in 1..=4 {
        let foreign = drive(
            &mut all,
            &[0, 3],
            &quotes,
            attempt,
            |_, r| matches!(r, Request::DkgConfirm { .. }),
            |_, _, _| {},
        );
        assert!(matches!(foreign, DkgOutcome::Failed(_)), "{foreign:?}");
    }
    certificate_to_all(&mut all, &committee, 1);
    assert!(
        holds_one_key(&all, &committee),
        "T can never confirm the real key"
    );
}

/// The second review's second finding: E's host invites T (a new attempt
/// of E's) whenever T is asked for round 2 of the real coordinator's
/// attempt. T's round-1 secret and membership were replaced, and every real
/// attempt failed (red before); a DKG in progress is kept per inviter.
#[test]
fn a_foreign_invitation_per_attempt_keeps_the_committee_from_forming() {
    let (mut all, quotes, _) = enclaves(4);
    let committee = [1, 2, 3];
    let pair = vec![quotes[0].clone(), quotes[3].clone()];
    let mut e_attempt = 0u64;
    let mut formed = false;
    for attempt in 10..20 {
        let outcome = drive(
            &mut all,
            &committee,
            &quotes,
            attempt,
            |_, _| false,
            |all, member, request| {
                if member == 2 && matches!(request, Request::DkgRound2 { .. }) {
                    e_attempt += 1;
                    let invitation = all[0].invite(CHAIN, 2, e_attempt, &pair).unwrap();
                    let bogus = Request::DkgRound1 {
                        index: 1,
                        t: 2,
                        attempt: e_attempt,
                        chain: CHAIN,
                        members: pair.clone(),
                        invitation,
                    };
                    assert!(matches!(rpc(&mut all[3], &bogus), Response::DkgRound1(..)));
                }
            },
        );
        formed |= matches!(outcome, DkgOutcome::Formed(_));
    }
    assert!(formed, "ten attempts, none formed");
}

/// The second review's third finding: every invitation of E's made T's
/// host seal (the counter moves on, an fsync), as many seals as E's host
/// sent invitations (red before). Round 1 changes nothing sealed now;
/// replays by an outsider do not move it either.
#[test]
fn seals_forced_at_a_member_by_another_enclaves_host() {
    let (mut all, quotes, _) = enclaves(4);
    let pair = vec![quotes[0].clone(), quotes[3].clone()];
    let before = all[3].durable_changes();
    let mut last = None;
    for attempt in 1..=1_000u64 {
        let invitation = all[0].invite(CHAIN, 2, attempt, &pair).unwrap();
        let request = Request::DkgRound1 {
            index: 1,
            t: 2,
            attempt,
            chain: CHAIN,
            members: pair.clone(),
            invitation,
        };
        assert!(matches!(
            rpc(&mut all[3], &request),
            Response::DkgRound1(..)
        ));
        last = Some(request);
    }
    let forced = all[3].durable_changes() - before;
    // Replays (an outsider's) change nothing.
    let replay = last.unwrap();
    for _ in 0..100 {
        let _ = rpc(&mut all[3], &replay);
    }
    assert_eq!(all[3].durable_changes() - before, forced, "replays move it");
    assert!(forced <= 64, "{forced} seals forced by one foreign inviter");
}

/// Outsider replays of every DKG request seen, after the committee formed,
/// change nothing sealed, and a confirmed member refuses another round-1
/// set's certificate.
#[test]
fn replays_after_formation_change_nothing() {
    let (mut all, quotes, platform) = enclaves(3);
    let committee = [0, 1, 2];
    let mut seen: Vec<(u16, Request)> = Vec::new();
    let outcome = drive(
        &mut all,
        &committee,
        &quotes,
        7,
        |_, _| false,
        |_, m, r| seen.push((m, r.clone())),
    );
    let DkgOutcome::Formed(key) = outcome else {
        panic!("{outcome:?}");
    };
    let changes: Vec<u64> = all.iter().map(EnclaveService::durable_changes).collect();
    for (m, r) in &seen {
        let _ = rpc(&mut all[usize::from(*m)], r);
    }
    let after: Vec<u64> = all.iter().map(EnclaveService::durable_changes).collect();
    assert_eq!(changes, after);
    // Seal / unseal round trip of a confirmed member.
    let cert = all[2].dkg_certificate();
    let sealed = all[2].seal(&platform).unwrap();
    all[2] = restarted(&sealed, &platform, &quotes);
    assert_eq!(all[2].group_key(), Some(key));
    assert_eq!(all[2].dkg_certificate(), cert);
    assert!(holds_one_key(&all, &committee));
}

/// Seal / unseal of an unconfirmed member keeps its finished list and its
/// per-inviter attempts: after the restart the replayed older invitation is
/// refused and the late certificate still confirms.
#[test]
fn sealed_finished_list_and_attempts_survive_a_restart() {
    let (mut all, quotes, platform) = enclaves(3);
    let committee = [0, 1, 2];
    let mut round1_to_2: Option<Request> = None;
    let outcome = drive(
        &mut all,
        &committee,
        &quotes,
        7,
        |m, r| m == 2 && matches!(r, Request::DkgConfirm { .. }),
        |_, m, r| {
            if m == 2 && matches!(r, Request::DkgRound1 { .. }) {
                round1_to_2 = Some(r.clone());
            }
        },
    );
    assert!(matches!(outcome, DkgOutcome::Failed(_)));
    let sealed = all[2].seal(&platform).unwrap();
    all[2] = restarted(&sealed, &platform, &quotes);
    let replay = round1_to_2.unwrap();
    assert!(matches!(rpc(&mut all[2], &replay), Response::Refused(_)));
    certificate_to_all(&mut all, &committee, 0);
    assert!(holds_one_key(&all, &committee));
}
