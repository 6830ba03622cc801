//! A crashed network restarts from its storage: consensus archives in the
//! runtime's storage, ledger blocks in each node's redb log.

use crate::api::{block_on, call};
use crate::harness::*;
use commonware_runtime::{Runner as _, deterministic};
use quartier_ledger::{Genesis, State};
use quartier_node::storage::BlockLog;
use quartier_node::{LedgerApp, Mempool, MempoolConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

type Roots = BTreeMap<u64, quartier_types::hash::Digest>;

fn log_path(dir: &std::path::Path, i: usize) -> PathBuf {
    dir.join(format!("validator-{i}.redb"))
}

fn open_app(genesis: &Genesis, dir: &std::path::Path, i: usize, prune: bool) -> LedgerApp {
    let app = LedgerApp::open(
        State::from_genesis(genesis.clone()).unwrap(),
        Mempool::new(MempoolConfig::default()),
        BlockLog::open(&log_path(dir, i)).unwrap(),
    )
    .unwrap()
    .with_snapshot_interval(SNAPSHOT_EVERY);
    if prune {
        // Keep nothing a restart does not need: every snapshot prunes below itself.
        app.with_block_retention(Duration::ZERO)
    } else {
        app
    }
}

/// A snapshot every 8 blocks: a restart re-executes fewer than 8.
const SNAPSHOT_EVERY: u64 = 8;

/// Blocks per consensus epoch.
const EPOCH_BLOCKS: u64 = 12;

async fn run_until(
    context: deterministic::Context,
    dir: PathBuf,
    target: u64,
    prune: bool,
) -> (Vec<u64>, Vec<Roots>, LedgerApp) {
    let keys = validator_keys(4);
    // Epochs of 12 blocks: both runs restart in a later epoch than genesis'.
    let genesis = if prune {
        // One-second slots and one slot of history: old slots are forgotten.
        Genesis {
            slot_ms: 1_000,
            gate_ms: 200,
            history_slots: 1,
            limits: Default::default(),
            epoch_blocks: EPOCH_BLOCKS,
            ..genesis(&keys)
        }
    } else {
        Genesis {
            epoch_blocks: EPOCH_BLOCKS,
            ..genesis(&keys)
        }
    };
    let oracle = network(&context, &keys).await;
    let apps: Vec<_> = (0..4).map(|i| open_app(&genesis, &dir, i, prune)).collect();
    let resumed: Vec<u64> = apps.iter().map(|a| a.view().height).collect();
    for (i, a) in apps.iter().enumerate() {
        // Only the blocks after the latest snapshot were re-executed.
        let replayed = a.metrics().replayed_blocks;
        assert!(
            replayed < SNAPSHOT_EVERY,
            "validator {i} replayed {replayed} blocks"
        );
        assert!(resumed[i] < SNAPSHOT_EVERY || replayed < resumed[i]);
    }
    if resumed.iter().all(|&h| h == 0) {
        let txs = apps[0].with_state(|s| registrations(s, 6));
        submit_to_all(&apps, &txs);
    }
    start_all(&context, &oracle, &keys, &apps).await;
    wait_for_height(&context, &apps, &[0, 1, 2, 3], target).await;
    if prune {
        for (i, a) in apps.iter().enumerate() {
            // Pruned up to the latest snapshot, and the pruned blocks are gone.
            let first = a.first_kept_height();
            assert!(
                first > 1 && first <= a.view().height,
                "validator {i}: {first}"
            );
            // At a snapshot, or at the block the current epoch starts from.
            assert!(
                first % SNAPSHOT_EVERY == 0 || (first + 1) % EPOCH_BLOCKS == 0,
                "validator {i}: {first}"
            );
            let epoch = a.epochs().current();
            assert!(epoch >= 1, "validator {i} in epoch {epoch}");
            assert!(first < epoch * EPOCH_BLOCKS, "validator {i}: {first}");
            assert!(a.finalized_block(first - 1).is_none(), "validator {i}");
            assert!(a.finalized_block(first).is_some(), "validator {i}");
        }
        // Marshal's archives dropped sections too (8 heights each in tests).
        let metrics = commonware_runtime::Metrics::encode(&context);
        let pruned: u64 = metrics
            .lines()
            .filter(|l| l.contains("indices_pruned") && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(pruned > 0, "no archive section pruned");
    }
    (
        resumed,
        apps.iter().map(LedgerApp::finalized_roots).collect(),
        apps[0].clone(),
    )
}

#[test]
fn a_crashed_network_resumes_from_storage_with_the_same_roots() {
    let dir = fresh_dir("restart");
    let config = seeded(21);
    let d = dir.clone();
    let ((resumed, before, _), checkpoint) = deterministic::Runner::new(config)
        .start_and_recover(|context| run_until(context, d, 15, false));
    assert!(resumed.iter().all(|&h| h == 0));
    let d = dir.clone();
    let (resumed, after, _) =
        deterministic::Runner::from(checkpoint).start(|context| run_until(context, d, 30, false));
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        // Resumed exactly where its log ended, without replaying into a different state.
        assert_eq!(resumed[i], *b.keys().last().unwrap(), "validator {i}");
        for (h, root) in b {
            assert_eq!(a.get(h), Some(root), "validator {i} height {h}");
        }
        assert!(a.len() > 30);
    }
    for other in &after[1..] {
        for (h, root) in other {
            if let Some(first) = after[0].get(h) {
                assert_eq!(first, root, "roots differ at height {h}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_pruning_network_resumes_from_its_snapshots_with_the_same_roots() {
    let dir = fresh_dir("prune");
    let config = seeded(22);
    let d = dir.clone();
    let ((_, before, _), checkpoint) = deterministic::Runner::new(config)
        .start_and_recover(|context| run_until(context, d, 20, true));
    // The logs were pruned: each starts at a snapshot, not at height 1.
    for i in 0..4 {
        let first = BlockLog::open(&log_path(&dir, i))
            .unwrap()
            .first_height()
            .unwrap();
        assert!(
            first.is_some_and(|h| h >= SNAPSHOT_EVERY),
            "validator {i}: {first:?}"
        );
    }
    let d = dir.clone();
    let (resumed, after, app) =
        deterministic::Runner::from(checkpoint).start(|context| run_until(context, d, 40, true));
    // The API says what is gone, and why, with 410.
    let router = quartier_node::api::router(app.clone(), std::sync::Arc::new(|_| {}));
    let first = app.first_kept_height();
    let get = |uri: String| block_on(call(&router, "GET", &uri, ""));
    let (status, body) = get(format!("/api/v1/blocks/{}", first - 1));
    assert_eq!(status, axum::http::StatusCode::GONE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("pruned"), "{body}");
    assert_eq!(
        get(format!("/api/v1/blocks/{first}")).0,
        axum::http::StatusCode::OK
    );
    assert_eq!(get("/api/v1/blocks/0".into()).0, axum::http::StatusCode::OK);
    let (status, body) = get("/api/v1/regions/1/slots/0".into());
    assert_eq!(status, axum::http::StatusCode::GONE, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("history window"),
        "{body}"
    );
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        // Resumed from the pruned log at its tip, and went on with the same roots.
        assert_eq!(resumed[i], *b.keys().last().unwrap(), "validator {i}");
        assert!(*a.keys().last().unwrap() >= 40, "validator {i}");
        for (h, root) in a {
            if let Some(other) = after[0].get(h) {
                assert_eq!(other, root, "validator {i} height {h}");
            }
            if let Some(earlier) = b.get(h) {
                assert_eq!(earlier, root, "validator {i} height {h}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
