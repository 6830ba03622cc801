//! A crashed network restarts from its storage: consensus archives in the
//! runtime's storage, ledger blocks in each node's redb log.

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

fn open_app(genesis: &Genesis, dir: &std::path::Path, i: usize) -> LedgerApp {
    LedgerApp::open(
        State::from_genesis(genesis.clone()).unwrap(),
        Mempool::new(MempoolConfig::default()),
        BlockLog::open(&log_path(dir, i)).unwrap(),
    )
    .unwrap()
    .with_snapshot_interval(SNAPSHOT_EVERY)
}

/// A snapshot every 8 blocks: a restart re-executes fewer than 8.
const SNAPSHOT_EVERY: u64 = 8;

async fn run_until(
    context: deterministic::Context,
    dir: PathBuf,
    target: u64,
) -> (Vec<u64>, Vec<Roots>) {
    let keys = validator_keys(4);
    let genesis = genesis(&keys);
    let oracle = network(&context, &keys).await;
    let apps: Vec<_> = (0..4).map(|i| open_app(&genesis, &dir, i)).collect();
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
    (
        resumed,
        apps.iter().map(LedgerApp::finalized_roots).collect(),
    )
}

#[test]
fn a_crashed_network_resumes_from_storage_with_the_same_roots() {
    let dir = std::env::temp_dir().join(format!("quartier-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = deterministic::Config::new()
        .with_seed(21)
        .with_timeout(Some(Duration::from_secs(600)));
    let d = dir.clone();
    let ((resumed, before), checkpoint) =
        deterministic::Runner::new(config).start_and_recover(|context| run_until(context, d, 15));
    assert!(resumed.iter().all(|&h| h == 0));
    let d = dir.clone();
    let (resumed, after) =
        deterministic::Runner::from(checkpoint).start(|context| run_until(context, d, 30));
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
