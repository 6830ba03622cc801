//! State sync: a validator that was never online joins a network whose
//! validators have pruned the blocks it would need, from one peer's snapshot
//! bundle, and then finalizes with the others. Forged bundles are refused and
//! write nothing.

use crate::harness::*;
use commonware_cryptography::Signer as _;
use commonware_cryptography::ed25519;
use commonware_runtime::{Runner as _, Supervisor as _, deterministic};
use quartier_ledger::{Genesis, State};
use quartier_light::ChainAnchor;
use quartier_node::LedgerApp;
use quartier_node::storage::BlockLog;
use quartier_node::sync::{EpochEvidence, SyncBundle, SyncError, install};
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

/// The light anchor of `genesis` with `validators` in place of its own.
fn anchor(genesis: &Genesis, validators: &[ed25519::PublicKey]) -> ChainAnchor {
    let validators = validators
        .iter()
        .map(|k| {
            quartier_types::AccountId(
                commonware_codec::Encode::encode(k)
                    .as_ref()
                    .try_into()
                    .unwrap(),
            )
        })
        .collect();
    ChainAnchor::from_genesis(&Genesis {
        validators,
        ..genesis.clone()
    })
    .unwrap()
}

/// [`open_logged`] keeping no block a restart does not need.
fn open(genesis: &Genesis, path: &Path) -> LedgerApp {
    open_logged(genesis, path).with_block_retention(Duration::ZERO)
}

/// Flips one bit of a hex string's first byte.
fn flip(hex_text: &str) -> String {
    let mut bytes = hex::decode(hex_text).unwrap();
    bytes[0] ^= 1;
    hex::encode(bytes)
}

/// `len` zero bytes, zstd-compressed (a few kilobytes).
fn zstd_bomb(len: usize) -> Vec<u8> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    std::io::copy(&mut std::io::repeat(0).take(len as u64), &mut encoder).unwrap();
    encoder.finish().unwrap()
}

/// A peer that answers a sync request with a body longer than a node takes
/// (an endless one, as far as the client reads): the client stops at the
/// bound with a typed error instead of holding all of it.
#[test]
fn an_oversized_sync_response_is_refused_at_the_bound() {
    use std::io::Write as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let peer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n");
        let chunk = vec![b'0'; 1 << 20];
        let mut sent = 0usize;
        // Until the client hangs up, or twice the bound.
        while sent <= 2 * quartier_node::sync::MAX_SYNC_RESPONSE_BYTES {
            if stream.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let client = quartier_client::NodeClient::new(&url).unwrap();
    let reply = client.get_bytes("/api/v1/sync", quartier_node::sync::MAX_SYNC_RESPONSE_BYTES);
    assert!(
        matches!(reply, Err(quartier_client::ClientError::TooLarge(_))),
        "{reply:?}"
    );
    drop(client);
    let sent = peer.join().unwrap();
    assert!(sent <= 2 * quartier_node::sync::MAX_SYNC_RESPONSE_BYTES + (1 << 20));
}

#[test]
fn a_new_validator_joins_a_pruned_network_from_a_snapshot_bundle() {
    let dir = fresh_dir("sync");
    let config = seeded(23);
    let d = dir.clone();
    deterministic::Runner::new(config).start(|mut context| async move {
        let dir = d;
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<LedgerApp> = (0..3)
            .map(|i| open(&genesis, &dir.join(format!("v{i}.redb"))))
            .collect();
        let txs = apps[0].with_state(|s| registrations(s, 6));
        submit_to_all(&apps, &txs);
        for (i, a) in apps.iter().enumerate() {
            let child = context.child("validator").with_attribute("index", i);
            start_validator(child, &oracle, &keys, i, a.clone()).await;
        }
        wait_for_height(&context, &apps, &[0, 1, 2], 40).await;
        // Nobody keeps the early blocks: validator 3 can not replay from genesis.
        assert!(apps.iter().all(|a| a.first_kept_height() > 8));

        let bundle = apps[0].sync_bundle().await.unwrap();
        // The API serves the same bundle as JSON.
        let served = quartier_node::api::router(apps[0].clone(), std::sync::Arc::new(|_| {}));
        let request = axum::http::Request::get("/api/v1/sync")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = tower::ServiceExt::oneshot(served, request).await.unwrap();
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .unwrap();
        assert_eq!(serde_json::from_slice::<SyncBundle>(&body).unwrap(), bundle);
        // A client that asks for the bundle and does not read it held the
        // one place, and every joiner got 503 for a minute. Now the bundle
        // is built once per snapshot, written to the node's directory and
        // streamed from the file: two clients are served at once (each
        // address has two places), a third from the same address waits.
        let stored = quartier_node::api::router_with(
            apps[0].clone(),
            std::sync::Arc::new(|_| {}),
            quartier_node::api::Extras {
                sync_dir: Some(dir.join("bundles")),
                ..Default::default()
            },
        );
        let ask = || {
            let request = axum::http::Request::get("/api/v1/sync")
                .body(axum::body::Body::empty())
                .unwrap();
            tower::ServiceExt::oneshot(stored.clone(), request)
        };
        let held = ask().await.unwrap();
        let second = ask().await.unwrap();
        assert_eq!(held.status(), axum::http::StatusCode::OK);
        assert_eq!(second.status(), axum::http::StatusCode::OK);
        let third = ask().await.unwrap();
        assert_eq!(third.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let read = |r: axum::response::Response| axum::body::to_bytes(r.into_body(), 1 << 24);
        let (second, held) = (read(second).await.unwrap(), read(held).await.unwrap());
        assert_eq!(second, held);
        let served: SyncBundle = serde_json::from_slice(&held).unwrap();
        assert_eq!(served.snapshot, bundle.snapshot);
        let stored_files: Vec<_> = std::fs::read_dir(dir.join("bundles"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(stored_files.len(), 1, "{stored_files:?}");
        assert!(
            stored_files[0].starts_with("sync-v5-")
                && stored_files[0].ends_with(&format!("-{}.json", served.snapshot_height)),
            "{stored_files:?}"
        );
        // Their places went with the bodies.
        assert_eq!(ask().await.unwrap().status(), axum::http::StatusCode::OK);
        let path = dir.join("v3.redb");
        let validators: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
        let floor = {
            let log = BlockLog::open(&path).unwrap();
            let mut check = |b: &SyncBundle, vals: &[ed25519::PublicKey]| {
                install(&log, &genesis, &anchor(&genesis, vals), b, &mut context)
            };
            // Forgeries, each refused with its reason, writing nothing.
            let mut other = keys.clone();
            other[3] = validator_keys(5)[4].clone();
            let strangers: Vec<_> = other.iter().map(|k| k.public_key()).collect();
            assert!(matches!(
                check(&bundle, &strangers),
                Err(SyncError::BadCertificate)
            ));
            let mut forged = bundle.clone();
            forged.finalization = hex::decode(flip(&hex::encode(&bundle.finalization))).unwrap();
            assert!(check(&forged, &validators).is_err());
            let mut forged = bundle.clone();
            let last = forged.blocks.len() - 1;
            forged.blocks[last] = flip(&forged.blocks[last]);
            assert!(check(&forged, &validators).is_err());
            // Any state but the first block's: here the genesis state.
            let genesis_state = State::from_genesis(genesis.clone()).unwrap().snapshot();
            let mut forged = bundle.clone();
            forged.snapshot = zstd::bulk::compress(&genesis_state.unwrap(), 3).unwrap();
            let refused = check(&forged, &validators);
            assert!(
                matches!(refused, Err(SyncError::BadSnapshot(_))),
                "{refused:?}"
            );
            // A zstd bomb behind the copied certificate: refused when it
            // inflates past the bound, not decompressed to the end.
            let mut forged = bundle.clone();
            forged.snapshot = zstd_bomb(quartier_node::sync::MAX_SNAPSHOT_BYTES + 1);
            let refused = check(&forged, &validators);
            assert!(
                matches!(refused, Err(SyncError::TooLarge("snapshot"))),
                "{refused:?}"
            );
            // More blocks than a bundle may carry: refused before any decodes.
            let mut forged = bundle.clone();
            forged.blocks = vec![String::new(); quartier_node::sync::MAX_SYNC_BLOCKS + 1];
            let refused = check(&forged, &validators);
            assert!(
                matches!(refused, Err(SyncError::TooLarge("blocks"))),
                "{refused:?}"
            );
            assert_eq!(
                log.first_height().unwrap(),
                None,
                "a refused bundle wrote nothing"
            );
            let floor = check(&bundle, &validators).unwrap_or_else(|e| panic!("{e}"));
            // A log that holds blocks takes no bundle.
            assert!(matches!(
                check(&bundle, &validators),
                Err(SyncError::NotEmpty)
            ));
            floor
        };
        let joiner = open(&genesis, &path);
        let joined_at = joiner.view().height;
        assert_eq!(
            joined_at,
            bundle.snapshot_height + bundle.blocks.len() as u64 - 1
        );
        light_client_checks(&genesis, &bundle, &joiner, &keys, &mut context);
        start_joined(&context, &oracle, &keys, 3, &joiner, floor).await;
        let mut all = apps.clone();
        all.push(joiner.clone());
        let target = apps[0].view().height + 20;
        wait_for_height(&context, &all, &[0, 1, 2, 3], target).await;
        let (ours, theirs) = (joiner.finalized_roots(), apps[0].finalized_roots());
        let common: Vec<_> = ours.keys().filter(|h| theirs.contains_key(h)).collect();
        // Both prune behind every snapshot, so only the last few heights are
        // in both maps; they must agree.
        assert!(!common.is_empty(), "no common heights");
        for h in common {
            assert_eq!(ours[h], theirs[h], "root at height {h}");
        }
        assert!(joiner.view().height >= target && joined_at > 8);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A light client (what a mode B enclave runs) takes the bundle's certified
/// block and a state value under its root, from the chain's genesis alone;
/// every forgery is refused with its reason.
fn light_client_checks(
    genesis: &Genesis,
    bundle: &SyncBundle,
    synced: &LedgerApp,
    keys: &[commonware_cryptography::ed25519::PrivateKey],
    rng: &mut impl rand_core::CryptoRng,
) {
    use quartier_ledger::{Account, StateKey};
    use quartier_light::{ChainAnchor, LightError};
    let anchor = ChainAnchor::from_genesis(genesis).unwrap();
    let last = hex::decode(bundle.blocks.last().unwrap()).unwrap();
    let header = anchor
        .verify_finalized(&last, &bundle.finalization, rng)
        .unwrap_or_else(|e| panic!("{e}"));
    let height = synced.view().height;
    assert_eq!(header.height, height);
    assert_eq!(
        Some(header.state_root),
        synced.finalized_roots().get(&height).copied()
    );
    let dso = StateKey::Account(genesis.dso);
    let proof = synced.with_state(|s| s.prove(dso)).unwrap();
    let account: Account = header.verify(&dso, &proof).unwrap().unwrap();
    assert!(account.nonce > 0, "the DSO registered meters");
    // Another block than the certified one: its state root, or a
    // transaction byte, changed.
    for i in [45, last.len() - 1] {
        let mut other = last.clone();
        other[i] ^= 1;
        assert_eq!(
            anchor.verify_finalized(&other, &bundle.finalization, rng),
            Err(LightError::WrongBlock),
            "byte {i}"
        );
    }
    // The certificate of other validators (one stranger among four: no quorum).
    let mut strangers = genesis.clone();
    strangers.validators[3] = quartier_types::AccountId(
        validator_keys(5)[4]
            .public_key()
            .as_ref()
            .try_into()
            .unwrap(),
    );
    let stranger = ChainAnchor::from_genesis(&strangers).unwrap();
    let _ = keys;
    assert_eq!(
        stranger.verify_finalized(&last, &bundle.finalization, rng),
        Err(LightError::BadCertificate)
    );
    // Another chain's namespace.
    let mut renamed = genesis.clone();
    renamed.chain_name = "quartier-other".into();
    assert_eq!(
        ChainAnchor::from_genesis(&renamed)
            .unwrap()
            .verify_finalized(&last, &bundle.finalization, rng),
        Err(LightError::BadCertificate)
    );
    // Any flipped byte of the certificate is refused.
    for i in [
        0,
        bundle.finalization.len() / 2,
        bundle.finalization.len() - 1,
    ] {
        let mut forged = bundle.finalization.clone();
        forged[i] ^= 1;
        assert!(
            anchor.verify_finalized(&last, &forged, rng).is_err(),
            "byte {i}"
        );
    }
    // A proof under another root, and a proof of another key.
    let genesis_root = State::from_genesis(genesis.clone()).unwrap().root();
    let older = quartier_light::FinalizedHeader {
        state_root: genesis_root,
        ..header
    };
    assert_eq!(
        older.verify::<Account>(&dso, &proof),
        Err(LightError::BadProof)
    );
    assert_eq!(
        header.verify::<Account>(&StateKey::Account(genesis.utility), &proof),
        Err(LightError::WrongKey)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever bytes a peer sends, installing them fails with a typed error
    /// and writes nothing (every decoder on the way: hex, blocks, the
    /// certificate, zstd, the snapshot).
    #[test]
    fn arbitrary_bundles_are_refused_without_writing(
        height in 0u64..1_000,
        snapshot in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        blocks in proptest::collection::vec("[0-9a-f]{0,300}", 0..4),
        finalization in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        epochs in proptest::collection::vec(
            ("[0-9a-f]{0,300}", "[0-9a-f]{0,300}", "[0-9a-f]{0,300}"),
            0..3,
        ),
    ) {
        let dir = std::env::temp_dir().join(format!("quartier-sync-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = BlockLog::open(&dir.join("log.redb")).unwrap();
        let keys = validator_keys(4);
        let epochs = epochs
            .into_iter()
            .map(|(block, finalization, proof)| EpochEvidence { block, finalization, proof })
            .collect();
        let bundle = SyncBundle { snapshot_height: height, snapshot, blocks, epochs, finalization };
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([7; 32]);
        let genesis = Genesis { epoch_blocks: 16, ..genesis(&keys) };
        let keys: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
        let result = install(&log, &genesis, &anchor(&genesis, &keys), &bundle, &mut rng);
        proptest::prop_assert!(result.is_err());
        proptest::prop_assert_eq!(log.first_height().unwrap(), None);
    }
}
