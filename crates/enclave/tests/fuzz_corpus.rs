//! Replays the enclave RPC's fuzz corpus and past crashes on stable Rust:
//! each input is refused as malformed or answered without a panic, by a
//! fresh enclave and by a member of a formed committee.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use quartier_enclave::attestation::{Measurement, SimulatedAttestationService};
use quartier_enclave::coordinator::SigningSession;
use quartier_enclave::rpc::{Request, Response, decode_request, decode_response};
use quartier_enclave::sealed::Epoch;
use quartier_enclave::service::{EnclaveService, Purpose, SimulatedPlatform};
use quartier_types::{RegionId, Slot};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// One seed per request kind (`QUARTIER_WRITE_FUZZ_SEEDS=1` writes them).
fn seeds() -> Vec<(&'static str, Request)> {
    vec![
        (
            "dkg_round1",
            Request::DkgRound1 {
                index: 0,
                t: 2,
                attempt: 1,
                chain: [0xc4; 32],
                members: (1..=3)
                    .map(|i| vendor().quote(MEASUREMENT, [i; 64]))
                    .collect(),
                invitation: [4; 64],
            },
        ),
        (
            "dkg_round2",
            Request::DkgRound2 {
                round1: BTreeMap::from([(1, (vec![4; 40], [5; 64]))]),
            },
        ),
        (
            "dkg_finish",
            Request::DkgFinish {
                round1: [0; 32],
                packages: vec![],
            },
        ),
        (
            "dkg_confirm",
            Request::DkgConfirm {
                round1: [0; 32],
                signatures: vec![[7; 64]; 3],
            },
        ),
        (
            "sign_commit_epoch_key",
            Request::SignCommit {
                session: 1,
                purpose: Purpose::EpochKey {
                    epoch: Epoch(2),
                    public_key: [5; 32],
                },
                by: 0,
                signature: [6; 64],
            },
        ),
        (
            "sign_commit_report",
            Request::SignCommit {
                session: 2,
                purpose: Purpose::Report {
                    region: RegionId(1),
                    slot: Slot(3),
                },
                by: 1,
                signature: [6; 64],
            },
        ),
        (
            "sign_share",
            Request::SignShare {
                session: 1,
                package: vec![6; 64],
                by: 2,
                signature: [7; 64],
            },
        ),
        ("catch_up", Request::CatchUp { to: [7; 32] }),
        (
            "identify",
            Request::Identify {
                nonce: [8; 32],
                url: "http://127.0.0.1:7501".into(),
            },
        ),
        (
            "report",
            Request::Report {
                region: RegionId(1),
                slot: Slot(3),
            },
        ),
    ]
}

const MEASUREMENT: Measurement = Measurement([1; 32]);

fn vendor() -> SimulatedAttestationService {
    SimulatedAttestationService::new([8; 32])
}

fn enclave() -> EnclaveService {
    EnclaveService::new(&SimulatedPlatform::new(
        [9; 32],
        MEASUREMENT,
        vendor().root(),
    ))
    .unwrap()
}

/// Three members after a DKG (t = 2).
fn committee() -> Vec<EnclaveService> {
    let mut members: Vec<EnclaveService> = (0..3).map(|_| enclave()).collect();
    members.sort_by_key(EnclaveService::account);
    let quotes: Vec<_> = members
        .iter()
        .map(|m| vendor().quote(MEASUREMENT, m.report_data()))
        .collect();
    for e in members.iter_mut() {
        e.trust_registry_unverified([0xc4; 32], &quotes);
    }
    let outcome = quartier_enclave::dkg::run_in_process(&mut members, [0xc4; 32], 2, 1, quotes);
    assert!(
        matches!(outcome, quartier_enclave::dkg::DkgOutcome::Formed(_)),
        "{outcome:?}"
    );
    members
}

#[test]
fn enclave_request_corpus_is_refused_or_answered_without_panic() {
    let corpus = fuzz_dir().join("corpus/enclave_request");
    if std::env::var_os("QUARTIER_WRITE_FUZZ_SEEDS").is_some() {
        for (name, request) in seeds() {
            std::fs::write(corpus.join(name), borsh::to_vec(&request).unwrap()).unwrap();
        }
    }
    let mut members = committee();
    let group = members[0].group_key();
    let mut decoded = 0;
    for dir in ["corpus/enclave_request", "regressions/enclave_request"] {
        for entry in std::fs::read_dir(fuzz_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if let Some(request) = decode_request(&bytes) {
                let _ = enclave().handle(request.clone());
                let _ = members[0].handle(request);
                decoded += 1;
            }
        }
    }
    assert!(
        decoded >= seeds().len(),
        "corpus missing: {decoded} inputs decoded"
    );
    // None of it re-formed the member's committee.
    assert_eq!(members[0].group_key(), group);
}

/// One seed per answer kind, real where the kind carries crypto.
fn response_seeds(members: &mut [EnclaveService]) -> Vec<(&'static str, Response)> {
    let to = members[1].identity_key();
    let catch_up = members[0].catch_up_for(&to).unwrap();
    let group = members[0].group_key().unwrap();
    vec![
        ("dkg_round1", Response::DkgRound1(vec![1; 40], [2; 64])),
        ("dkg_round2", Response::DkgRound2(Vec::new())),
        ("dkg_finished", Response::DkgFinished(group, [3; 64])),
        ("epoch_key_received", Response::EpochKeyReceived),
        ("committed", Response::Committed(1, vec![4; 69], [5; 64])),
        ("share", Response::Share(vec![6; 32], [7; 64])),
        ("report", Response::Report(None)),
        ("catch_up", Response::CatchUp(catch_up)),
        ("refused", Response::Refused("no".into())),
        ("dkg_confirmed", Response::DkgConfirmed(group)),
        (
            "identity",
            Response::Identity(quartier_types::AccountId([9; 32]), [10; 64]),
        ),
    ]
}

/// A host decodes a peer's answer and hands it to its signing session (and
/// a catch-up to its enclave): every corpus input is refused as malformed
/// or taken without a panic. (The seeds' signatures and sealed states are
/// of a committee of an earlier run: they exercise the refusals.)
#[test]
fn enclave_response_corpus_is_refused_or_taken_without_panic() {
    let corpus = fuzz_dir().join("corpus/enclave_response");
    let mut members = committee();
    if std::env::var_os("QUARTIER_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&corpus).unwrap();
        for (name, response) in response_seeds(&mut members) {
            std::fs::write(corpus.join(name), borsh::to_vec(&response).unwrap()).unwrap();
        }
    }
    let seeds = response_seeds(&mut members).len();
    let mut decoded = 0;
    let mut session = 1;
    for dir in ["corpus/enclave_response", "regressions/enclave_response"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir)) else {
            continue;
        };
        for entry in entries {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Some(response) = decode_response(&bytes) else {
                continue;
            };
            decoded += 1;
            assert_eq!(borsh::to_vec(&response).unwrap(), bytes);
            let purpose = Purpose::Report {
                region: RegionId(1),
                slot: Slot(3),
            };
            let (mut signing, _) = SigningSession::start(&members[0], session, purpose, 3, 2);
            session += 10;
            let _ = signing.reply(&members[0], 1, Some(response.clone()));
            let _ = signing.reply(&members[0], 0, Some(response.clone()));
            if let Response::CatchUp(state) = response {
                let _ = members[1].catch_up(&state, &[]);
            }
        }
    }
    assert!(decoded >= seeds, "corpus missing: {decoded} inputs decoded");
}
