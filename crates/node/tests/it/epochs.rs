//! Governance reaches consensus at epoch boundaries: four validators vote in
//! a fifth, which joins by state sync and signs from the next boundary on;
//! then they vote out one of the first four, whose signatures stop counting
//! from the boundary after. One validator is an equivocator (commonware's
//! mock) in every epoch, so each set has f = 1 Byzantine member; the honest
//! ones agree on every block.

use crate::harness::*;
use commonware_codec::Decode as _;
use commonware_consensus::simplex::elector::RoundRobin;
use commonware_consensus::simplex::mocks::{equivocator, relay::Relay};
use commonware_consensus::simplex::types::{Finalization, Finalize, Proposal};
use commonware_consensus::types::{Epoch, Participant, Round};
use commonware_cryptography::certificate::{Provider as _, Verifier as _};
use commonware_cryptography::{Sha256, Signer as _, ed25519};
use commonware_p2p::utils::mux::Muxer;
use commonware_parallel::Sequential;
use commonware_runtime::{Runner as _, Supervisor as _, deterministic};
use commonware_utils::iter::NonEmpty;
use commonware_utils::ordered::Set;
use ed25519_dalek::SigningKey;
use quartier_ledger::StateKey;
use quartier_ledger::{Genesis, GovernanceChange, State, TxBody};
use quartier_light::ChainAnchor;
use quartier_node::epochs::EpochSchemes;
use quartier_node::storage::BlockLog;
use quartier_node::sync::{BlockFinalization, EpochEvidence, SyncError, install};
use quartier_node::validator::{CHANNEL_CERTIFICATES, CHANNEL_VOTES};
use quartier_node::{LedgerApp, Scheme};
use quartier_types::AccountId;
use std::sync::Arc;

/// Blocks per epoch: epoch 1 is heights 16..32, epoch 2 from 32.
const EPOCH: u64 = 16;

/// Validator `k`'s key as the ledger's signing key (the same Ed25519 key).
fn ledger_key(k: &ed25519::PrivateKey) -> SigningKey {
    let seed: [u8; 32] = commonware_codec::Encode::encode(k).as_ref()[..32]
        .try_into()
        .unwrap();
    let key = SigningKey::from_bytes(&seed);
    assert_eq!(id(&key), account(k));
    key
}

fn account(k: &ed25519::PrivateKey) -> AccountId {
    AccountId(quartier_node::epochs::account_bytes(&k.public_key()))
}

/// Five validator keys and a genesis of 16-block epochs whose validators
/// are the first four (the fifth a key governance may vote in).
fn four_and_a_candidate() -> (Vec<ed25519::PrivateKey>, Genesis) {
    let keys = validator_keys(5);
    let genesis = Genesis {
        epoch_blocks: EPOCH,
        ..genesis(&keys[..4])
    };
    (keys, genesis)
}

fn set(keys: &[&ed25519::PrivateKey]) -> Set<ed25519::PublicKey> {
    Set::try_from(keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap()
}

/// `proposer` proposes `change` and each of `voters` votes yes, as ledger
/// transactions against `state`.
fn vote(
    state: &State,
    change: GovernanceChange,
    proposer: &ed25519::PrivateKey,
    voters: &[&ed25519::PrivateKey],
) -> Vec<quartier_ledger::SignedTx> {
    let id = state.meta().next_proposal;
    let nonce = |k: &ed25519::PrivateKey| state.account(&account(k)).nonce;
    let mut txs = vec![tx(
        state,
        &ledger_key(proposer),
        nonce(proposer),
        TxBody::Propose { change },
    )];
    for v in voters {
        txs.push(tx(
            state,
            &ledger_key(v),
            nonce(v),
            TxBody::Vote {
                proposal: id,
                approve: true,
            },
        ));
    }
    txs
}

/// Once governance voted `key` in (as `apps` see it), submits its
/// `JoinValidators` to them, as its node does.
async fn join(context: &deterministic::Context, apps: &[LedgerApp], key: &ed25519::PrivateKey) {
    let me = account(key);
    while !apps[0].with_state(|s| s.validators().contains(&me)) {
        commonware_runtime::Clock::sleep(context, std::time::Duration::from_millis(50)).await;
    }
    let join = apps[0].with_state(|s| {
        tx(
            s,
            &ledger_key(key),
            s.account(&me).nonce,
            TxBody::JoinValidators,
        )
    });
    submit_to_all(apps, &[join]);
}

/// Runs commonware's equivocating participant with `key` in each epoch of
/// `sets`: as the leader it notarizes two different proposals and sends
/// each to part of the set; it never votes for anyone else's.
async fn start_equivocator(
    context: deterministic::Context,
    oracle: &commonware_p2p::simulated::Oracle<ed25519::PublicKey, deterministic::Context>,
    key: &ed25519::PrivateKey,
    sets: Vec<(u64, Set<ed25519::PublicKey>)>,
) {
    let control = oracle.control(key.public_key());
    let votes = control.register(CHANNEL_VOTES, QUOTA).await.unwrap();
    let certificates = control.register(CHANNEL_CERTIFICATES, QUOTA).await.unwrap();
    let (mux, mut votes) = Muxer::new(context.child("votes"), votes.0, votes.1);
    mux.start();
    let (mux, mut certificates) = Muxer::new(
        context.child("certificates"),
        certificates.0,
        certificates.1,
    );
    mux.start();
    for (epoch, participants) in sets {
        let scheme = Scheme::signer(NAMESPACE, participants, key.clone()).unwrap();
        let config = equivocator::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            epoch: Epoch::new(epoch),
            relay: Arc::new(Relay::new()),
        };
        let byzantine = equivocator::Equivocator::<_, _, _, Sha256>::new(
            context.child("equivocator").with_attribute("epoch", epoch),
            config,
        );
        byzantine.start(
            votes.register(epoch).await.unwrap(),
            certificates.register(epoch).await.unwrap(),
        );
    }
}

/// The finalization certificates `app` stores for `heights`.
async fn certificates(app: &LedgerApp, heights: std::ops::Range<u64>) -> Vec<BlockFinalization> {
    let mut found = Vec::new();
    for h in heights {
        if let Some(bytes) = app.finalization(h).await {
            found.push(
                BlockFinalization::decode_cfg(
                    bytes::Bytes::from(bytes),
                    &Scheme::certificate_codec_config_unbounded(),
                )
                .unwrap(),
            );
        }
    }
    found
}

#[test]
fn validators_voted_in_and_out_sign_from_the_next_boundary_and_a_synced_node_follows() {
    let dir = fresh_dir("epochs");
    let d = dir.clone();
    deterministic::Runner::new(seeded(41)).start(|mut context| async move {
        let (keys, genesis) = four_and_a_candidate();
        let oracle = network(&context, &keys).await;
        let [k0, k1, k2, k3, k4] = [0, 1, 2, 3, 4].map(|i| &keys[i]);
        let set0 = set(&[k0, k1, k2, k3]);
        let set1 = set(&[k0, k1, k2, k3, k4]);
        let set2 = set(&[k1, k2, k3, k4]);
        // Validator 3 is Byzantine in every epoch.
        start_equivocator(
            context.child("byzantine"),
            &oracle,
            k3,
            vec![(0, set0.clone()), (1, set1.clone()), (2, set2.clone())],
        )
        .await;
        let apps: Vec<LedgerApp> = (0..3)
            .map(|i| open_logged(&genesis, &d.join(format!("v{i}.redb"))))
            .collect();
        start_all(&context, &oracle, &keys, &apps).await;

        // Epoch 0: the genesis four vote in validator 4 (3 of 4).
        let add =
            apps[0].with_state(|s| vote(s, GovernanceChange::Add(account(k4)), k0, &[k1, k2]));
        submit_to_all(&apps, &add);
        // Voted in, it joins with its own key (its node does so by itself).
        join(&context, &apps, k4).await;
        wait_for_height(&context, &apps, &[0, 1, 2], 10).await;
        assert!(apps[0].with_state(|s| s.validators().contains(&account(k4))));
        assert_eq!(apps[0].epochs().validators(1), None, "decided at height 15");

        // Validator 4 joins by state sync (a certificate of epoch 0) and
        // observes until its epoch.
        let bundle = apps[0].sync_bundle().await.unwrap();
        let path = d.join("v4.redb");
        let floor = {
            let log = BlockLog::open(&path).unwrap();
            let anchor = ChainAnchor::from_genesis(&genesis).unwrap();
            install(&log, &genesis, &anchor, &bundle, &mut context).unwrap()
        };
        let joiner = open_logged(&genesis, &path);
        start_joined(&context, &oracle, &keys, 4, &joiner, floor).await;
        let all = [apps.clone(), vec![joiner.clone()]].concat();
        wait_for_height(&context, &all, &[0, 1, 2, 3], EPOCH + 6).await;

        // Epoch 1: five validators, quorum four; with validator 3 voting for
        // nothing, every certificate counts validator 4.
        let in_epoch_1 = certificates(&apps[1], EPOCH..2 * EPOCH).await;
        assert!(!in_epoch_1.is_empty());
        let four = Participant::from_usize(set1.position(&k4.public_key()).unwrap());
        let epoch_1 = apps[1].epochs();
        let schemes = EpochSchemes::new(epoch_1, NAMESPACE, k1.clone());
        for f in &in_epoch_1 {
            assert_eq!(f.round().epoch(), Epoch::new(1));
            assert!(f.certificate.signers.iter().any(|p| p == four));
            let verifier = schemes.scoped(Epoch::new(1)).unwrap();
            assert!(f.verify(&mut context, &verifier, &Sequential));
        }

        // Epoch 1: four of the five vote out validator 0.
        let remove = apps[1]
            .with_state(|s| vote(s, GovernanceChange::Remove(account(k0)), k1, &[k2, k4, k0]));
        submit_to_all(&all, &remove);
        wait_for_height(&context, &all, &[1, 2, 3], 2 * EPOCH + 10).await;
        let stopped_at = apps[0].view().height;

        // Epoch 2: validators 1, 2, 4 and the equivocator; the joiner
        // followed both changes and signs every certificate.
        let in_epoch_2 = certificates(&joiner, 2 * EPOCH..3 * EPOCH).await;
        assert!(!in_epoch_2.is_empty());
        let four = Participant::from_usize(set2.position(&k4.public_key()).unwrap());
        let schemes = EpochSchemes::new(joiner.epochs(), NAMESPACE, k4.clone());
        let verifier = schemes.scoped(Epoch::new(2)).unwrap();
        for f in &in_epoch_2 {
            assert_eq!(f.round().epoch(), Epoch::new(2));
            assert!(f.certificate.signers.iter().any(|p| p == four));
            assert!(f.verify(&mut context, &verifier, &Sequential));
        }

        // The removed validator's signatures do not count from epoch 2 on:
        // an epoch-2 proposal finalized by the old set (validators 0, 1, 2
        // and 4, a quorum of epoch 1's five) is refused by the epoch-2
        // scheme consensus checks certificates with.
        let proposal = in_epoch_2[0].proposal.clone();
        let old =
            [k0, k1, k2, k4].map(|k| Scheme::signer(NAMESPACE, set1.clone(), k.clone()).unwrap());
        let votes: Vec<_> = old
            .iter()
            .map(|s| Finalize::sign(s, proposal.clone()).unwrap())
            .collect();
        let forged: BlockFinalization = Finalization::from_owned_finalizes(
            &old[0],
            NonEmpty::try_new(votes.into_iter()).unwrap(),
            &Sequential,
        )
        .unwrap();
        let old_verifier = Scheme::verifier(NAMESPACE, set1.clone());
        assert!(
            forged.verify(&mut context, &old_verifier, &Sequential),
            "the signatures are genuine"
        );
        assert!(!forged.verify(&mut context, &verifier, &Sequential));
        // Nor does the removed validator take part: its consensus stopped
        // at the boundary, the last block it finalized.
        assert_eq!(stopped_at, 2 * EPOCH - 1);

        // Safety: the honest nodes finalized the same blocks throughout.
        let roots: Vec<_> = all.iter().map(|a| a.finalized_roots()).collect();
        for (i, r) in roots.iter().enumerate() {
            for (h, root) in r {
                for other in &roots[i + 1..] {
                    if let Some(theirs) = other.get(h) {
                        assert_eq!(root, theirs, "root at height {h}");
                    }
                }
            }
        }
        let sets = joiner.with_state(|s| s.validator_sets().to_vec());
        assert_eq!(
            sets.iter().map(|s| s.from_epoch).collect::<Vec<_>>(),
            [0, 1, 2]
        );

        // A node that joins now follows the epoch chain in the bundle: the
        // genesis set certifies the first change, the five the second, and
        // the epoch-2 set the last block. Without the changes, or with the
        // first only, the certificate is not the set's it is checked with.
        let late = apps[1].sync_bundle().await.unwrap();
        assert_eq!(late.epochs.len(), 2);
        // The API serves the same evidence (what a mode B host reads).
        let router = quartier_node::api::router(apps[1].clone(), Arc::new(|_| {}));
        let request = axum::http::Request::get("/api/v1/epochs")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(router, request).await.unwrap();
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 26)
            .await
            .unwrap();
        let served: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let served: Vec<EpochEvidence> = serde_json::from_value(served["changes"].clone()).unwrap();
        assert_eq!(served, late.epochs);
        let anchor = ChainAnchor::from_genesis(&genesis).unwrap();
        let fresh = |name: &str| BlockLog::open(&d.join(name)).unwrap();
        for cut in [0, 1] {
            let mut forged = late.clone();
            forged.epochs.truncate(cut);
            let refused = install(&fresh("cut.redb"), &genesis, &anchor, &forged, &mut context);
            assert!(
                matches!(refused, Err(SyncError::BadCertificate)),
                "{refused:?}"
            );
        }
        // A change certified by the wrong set, or proving another record.
        let mut forged = late.clone();
        forged.epochs.swap(0, 1);
        let refused = install(
            &fresh("swap.redb"),
            &genesis,
            &anchor,
            &forged,
            &mut context,
        );
        assert!(
            matches!(refused, Err(SyncError::BadEpochChange(0))),
            "{refused:?}"
        );
        let mut forged = late.clone();
        let other_record = apps[1].with_state(|s| s.prove(StateKey::Validators).unwrap());
        forged.epochs[1].proof = hex::encode(borsh::to_vec(&other_record).unwrap());
        let refused = install(
            &fresh("record.redb"),
            &genesis,
            &anchor,
            &forged,
            &mut context,
        );
        assert!(
            matches!(refused, Err(SyncError::BadEpochChange(1))),
            "{refused:?}"
        );
        let log = fresh("late.redb");
        let floor = install(&log, &genesis, &anchor, &late, &mut context).unwrap();
        assert_eq!(floor.round().epoch(), Epoch::new(2));
        assert_eq!(log.epoch_changes().unwrap().len(), 2, "served on in turn");
        drop(log);

        // A light client (what a mode B enclave runs) learns the same
        // changes; the old set's certificate of the same block, in its own
        // epoch's round, is refused: a set signs its own epoch's heights.
        let mut light = ChainAnchor::from_genesis(&genesis).unwrap();
        let last_block = hex::decode(late.blocks.last().unwrap()).unwrap();
        assert!(
            light
                .verify_finalized(&last_block, &late.finalization, &mut context)
                .is_err()
        );
        for change in &late.epochs {
            light
                .advance(&change.decode().unwrap(), &mut context)
                .unwrap();
        }
        light
            .verify_finalized(&last_block, &late.finalization, &mut context)
            .unwrap();
        let real = BlockFinalization::decode_cfg(
            bytes::Bytes::from(late.finalization.clone()),
            &Scheme::certificate_codec_config_unbounded(),
        )
        .unwrap();
        let in_epoch_1 = Proposal::new(
            Round::new(Epoch::new(1), real.proposal.round.view()),
            real.proposal.parent,
            real.proposal.payload,
        );
        let votes: Vec<_> = old
            .iter()
            .map(|s| Finalize::sign(s, in_epoch_1.clone()).unwrap())
            .collect();
        let stale: BlockFinalization = Finalization::from_owned_finalizes(
            &old[0],
            NonEmpty::try_new(votes.into_iter()).unwrap(),
            &Sequential,
        )
        .unwrap();
        let stale = commonware_codec::Encode::encode(&stale).to_vec();
        assert_eq!(
            light
                .verify_finalized(&last_block, &stale, &mut context)
                .err(),
            Some(quartier_light::LightError::WrongEpoch)
        );
        assert_eq!(apps[0].view().height, stopped_at, "and it stays stopped");
        // Each epoch's consensus journal goes once the next epoch began.
        use commonware_runtime::Storage as _;
        let journal = |epoch: u64| format!("validator-1-simplex-{epoch}");
        for gone in [0, 1] {
            let blobs = context.scan(&journal(gone)).await.unwrap_or_default();
            assert!(blobs.is_empty(), "epoch {gone}: {blobs:?}");
        }
        assert!(!context.scan(&journal(2)).await.unwrap().is_empty());
        let late_node = open_logged(&genesis, &d.join("late.redb"));
        assert_eq!(
            late_node.epochs().validators(2),
            Some([k1, k2, k3, k4].iter().map(|k| account(k)).collect())
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A change and its undoing (validator 4 voted in, never runs, voted out):
/// the genesis set signs again from epoch 2, so a peer could leave both
/// changes out of a bundle and the tip's certificate would still verify.
/// The joiner would then hold a state recording changes it can not prove
/// to anyone it serves. Refused: a bundle must prove every change its
/// state records.
#[test]
fn a_bundle_must_prove_every_change_its_state_records() {
    let dir = fresh_dir("epochs-undo");
    let d = dir.clone();
    deterministic::Runner::new(seeded(43)).start(|mut context| async move {
        let (keys, genesis) = four_and_a_candidate();
        let oracle = network(&context, &keys).await;
        let [k0, k1, k2, k3, k4] = [0, 1, 2, 3, 4].map(|i| &keys[i]);
        let apps: Vec<LedgerApp> = (0..4)
            .map(|i| open_logged(&genesis, &d.join(format!("v{i}.redb"))))
            .collect();
        start_all(&context, &oracle, &keys, &apps).await;
        let all = [0, 1, 2, 3];
        let add =
            apps[0].with_state(|s| vote(s, GovernanceChange::Add(account(k4)), k0, &[k1, k2]));
        submit_to_all(&apps, &add);
        join(&context, &apps, k4).await;
        wait_for_height(&context, &apps, &all, EPOCH + 2).await;
        // Epoch 1: five, quorum four: the four running sign it.
        let remove = apps[0]
            .with_state(|s| vote(s, GovernanceChange::Remove(account(k4)), k0, &[k1, k2, k3]));
        submit_to_all(&apps, &remove);
        wait_for_height(&context, &apps, &all, 2 * EPOCH + 10).await;
        let bundle = apps[0].sync_bundle().await.unwrap();
        assert_eq!(bundle.epochs.len(), 2);
        let anchor = ChainAnchor::from_genesis(&genesis).unwrap();
        let mut forged = bundle.clone();
        forged.epochs.clear();
        let log = BlockLog::open(&d.join("joiner.redb")).unwrap();
        let refused = install(&log, &genesis, &anchor, &forged, &mut context);
        assert!(
            matches!(refused, Err(SyncError::MissingEpochChanges)),
            "{refused:?}"
        );
        assert_eq!(log.first_height().unwrap(), None, "nothing written");
        install(&log, &genesis, &anchor, &bundle, &mut context).unwrap();
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node that joined by state sync inside an epoch holds neither that
/// epoch's boundary block (its log starts at the snapshot after it) nor,
/// once restarted, the certificate it joined from: it restarts from the
/// latest certificate of the epoch consensus stored, and goes on into the
/// next epoch with the others.
#[test]
fn a_node_that_joined_inside_an_epoch_restarts_in_it() {
    let dir = fresh_dir("epochs-restart");
    let keys = validator_keys(4);
    let genesis = Genesis {
        epoch_blocks: EPOCH,
        ..genesis(&keys)
    };
    let d = dir.clone();
    let (k, g) = (keys.clone(), genesis.clone());
    let (joined_at, checkpoint) =
        deterministic::Runner::new(seeded(44)).start_and_recover(|mut context| async move {
            let (keys, genesis) = (k, g);
            let oracle = network(&context, &keys).await;
            let apps: Vec<LedgerApp> = (0..3)
                .map(|i| open_logged(&genesis, &d.join(format!("v{i}.redb"))))
                .collect();
            start_all(&context, &oracle, &keys, &apps).await;
            wait_for_height(&context, &apps, &[0, 1, 2], EPOCH + 9).await;
            let bundle = apps[0].sync_bundle().await.unwrap();
            assert!(
                bundle.snapshot_height >= EPOCH,
                "{}",
                bundle.snapshot_height
            );
            let path = d.join("v3.redb");
            let floor = {
                let log = BlockLog::open(&path).unwrap();
                let anchor = ChainAnchor::from_genesis(&genesis).unwrap();
                install(&log, &genesis, &anchor, &bundle, &mut context).unwrap()
            };
            assert_eq!(floor.round().epoch(), Epoch::new(1));
            let joiner = open_logged(&genesis, &path);
            start_joined(&context, &oracle, &keys, 3, &joiner, floor).await;
            let target = joiner.view().height + 2;
            let all = [apps, vec![joiner.clone()]].concat();
            wait_for_height(&context, &all, &[0, 1, 2, 3], target).await;
            joiner.view().height
        });
    assert!(joined_at < 2 * EPOCH, "still in epoch 1: {joined_at}");
    let d = dir.clone();
    deterministic::Runner::from(checkpoint).start(|context| async move {
        let oracle = network(&context, &keys).await;
        let apps: Vec<LedgerApp> = (0..4)
            .map(|i| open_logged(&genesis, &d.join(format!("v{i}.redb"))))
            .collect();
        let epochs = apps[3].epochs();
        assert_eq!(epochs.current(), 1);
        assert_eq!(
            epochs.boundary(1),
            None,
            "its log starts after the boundary"
        );
        // Started without a floor: it finds one of its epoch.
        start_all(&context, &oracle, &keys, &apps).await;
        wait_for_height(&context, &apps, &[0, 1, 2, 3], 2 * EPOCH + 8).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
