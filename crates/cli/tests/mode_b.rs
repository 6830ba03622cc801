//! Privacy mode B end to end, as a user starts it: `quartier devnet --privacy
//! enclave --enclaves 3` with 37 households, 4 validator processes and 3
//! enclave processes (simulated TEE). Every slot every household sends one
//! sealed order and opens its receipt after checking the enclave's receipts
//! against the root on chain. One enclave is stopped (t = 2 of 3 still
//! settle), restarted (it unseals its state, catches up and signs again:
//! the test then stops another one and slots still settle), and no
//! plaintext order reaches the chain or a log.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

mod support;

use quartier_node::client::NodeClient;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{ProcessGroup, scratch, wait_for};

const BASE_PORT: u16 = 7_900;
const HOUSEHOLDS: usize = 37;

/// Slots in which every household opened its receipt, from the devnet's output.
fn verified_slots(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("slot ")?;
            let (slot, rest) = rest.split_once(": ")?;
            let (verified, rest) = rest.split_once(" of ")?;
            let (expected, _) = rest.split_once(" households opened their receipt")?;
            let full = verified == expected && expected.parse::<usize>().ok()? == HOUSEHOLDS;
            full.then(|| slot.parse().ok()).flatten()
        })
        .collect()
}

/// Waits until `more` further slots were fully verified.
fn wait_slots(log: &Path, more: usize, what: &str) -> Vec<u64> {
    let before = verified_slots(log).len();
    // A generous deadline: on a loaded 2-core CI machine a slot can take 12 s.
    wait_for(what, Duration::from_secs(30 + 12 * more as u64), || {
        let now = verified_slots(log);
        (now.len() >= before + more).then_some(now)
    })
}

/// Kills the enclave process whose command line names `config`.
fn kill_enclave(config: &Path) {
    let needle = config.to_str().unwrap();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("enclave run") && cmdline.contains(needle) {
            let pid = entry.file_name().to_string_lossy().to_string();
            Command::new("kill").args(["-KILL", &pid]).status().unwrap();
            return;
        }
    }
    panic!("no enclave process for {needle}");
}

/// The latest slot an enclave cleared, from its status.
fn cleared(enclave: &NodeClient) -> Option<u64> {
    let (_, v) = enclave.get("/enclave/v1/status").ok()?;
    v["cleared"][0]["slot"].as_u64()
}

#[test]
fn households_trade_through_sealed_orders_and_an_enclave_committee() {
    let dir = scratch("mode-b");
    let log_path = std::env::temp_dir().join("quartier-mode-b-devnet.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _devnet = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_quartier"))
            .args(["devnet", "--privacy", "enclave", "--enclaves", "3"])
            .args([
                "--slot-seconds",
                "3",
                "--households",
                "37",
                "--prosumers",
                "27",
            ])
            .args(["--base-port", &BASE_PORT.to_string(), "--dir"])
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    );
    let api = NodeClient::new(&format!("http://127.0.0.1:{}", BASE_PORT + 1)).unwrap();
    let enclave =
        |i: u16| NodeClient::new(&format!("http://127.0.0.1:{}", BASE_PORT + 8 + i)).unwrap();
    let config = |i: usize| -> PathBuf { dir.join(format!("enclave-{i}/enclave.toml")) };

    // All three enclaves working.
    let first = wait_for("the first verified slot", Duration::from_secs(300), || {
        let v = verified_slots(&log_path);
        (!v.is_empty()).then_some(v)
    });
    assert!(!first.is_empty());
    wait_slots(&log_path, 7, "8 slots with every receipt verified");

    // One enclave down: t = 2 of 3 still settle every slot.
    kill_enclave(&config(2));
    wait_slots(&log_path, 5, "5 slots with enclave 2 down");

    // It restarts from its sealed state, catches up and clears again...
    let restart_log = std::fs::File::create(dir.join("enclave-2-restart.log")).unwrap();
    let _restarted = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_quartier"))
            .args(["enclave", "run", "--config"])
            .arg(config(2))
            .stdout(Stdio::from(restart_log.try_clone().unwrap()))
            .stderr(Stdio::from(restart_log)),
    );
    let latest = *verified_slots(&log_path).last().unwrap();
    wait_for("enclave 2 to catch up", Duration::from_secs(60), || {
        cleared(&enclave(2)).filter(|s| *s > latest)
    });
    // ...and signs: with enclave 0 stopped, 1 and 2 settle alone.
    kill_enclave(&config(0));
    let so_far = verified_slots(&log_path).len();
    let slots = wait_slots(
        &log_path,
        5.max(20usize.saturating_sub(so_far)),
        "slots signed by enclaves 1 and 2",
    );
    assert!(slots.len() >= 20, "only {} slots verified", slots.len());
    // No slot settled with a household unable to open its receipt.
    let text = std::fs::read_to_string(&log_path).unwrap();
    let partial: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("opened their receipt") && !l.contains("37 of 37"))
        .collect();
    assert!(partial.is_empty(), "{partial:?}");

    // A household checks its own receipts from the command line: the
    // enclave's receipts match the signed roots and its own open.
    let genesis: quartier_node::config::NetworkGenesis =
        serde_json::from_str(&std::fs::read_to_string(dir.join("genesis.json")).unwrap()).unwrap();
    let wallet = quartier_node::meters::meter_key(&genesis.ledger, 1, 0);
    let key_file = dir.join("household-0.key");
    quartier_node::config::write_key(&key_file, &wallet.to_bytes()).unwrap();
    let enclaves: Vec<String> = (0..3u16)
        .map(|i| format!("http://127.0.0.1:{}", BASE_PORT + 8 + i))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_quartier"))
        .args(["wallet", "receipts", "--key"])
        .arg(&key_file)
        .args(["--node", &format!("http://127.0.0.1:{}", BASE_PORT + 1)])
        .args(["--enclave", &enclaves.join(","), "--last", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let opened = text.lines().filter(|l| l.contains(": verified; ")).count();
    assert!(opened >= 8, "{text}");
    assert!(!text.contains("MISMATCH"), "{text}");

    // Nothing in the clear: no open order was ever settled, every order on
    // chain is a sealed one of the one size, and no log names an order's
    // price or energy.
    let (_, v) = api.get("/api/v1/regions/1/settlements?last=100").unwrap();
    assert_eq!(v["settlements"], serde_json::json!([]));
    let (_, v) = api.get("/api/v1/regions/1/reports?last=100").unwrap();
    let reports = v["reports"].as_array().unwrap();
    assert!(reports.len() >= 20);
    for r in reports {
        assert_eq!(r["summary"]["aggregates"]["sealed"], 37, "{r}");
    }
    let (_, sealed) = api.get("/api/v1/sealed").unwrap();
    for b in sealed["batches"].as_array().unwrap() {
        let path = format!("/api/v1/regions/{}/batches/{}", b["region"], b["slot"]);
        // Reported meanwhile: gone (404), fine.
        let Ok((200, batch)) = api.get(&path) else {
            continue;
        };
        for o in batch["batch"]["orders"].as_array().unwrap() {
            let hex = o["sealed"]["ciphertext"].as_str().unwrap();
            assert_eq!(hex.len(), 2 * quartier_enclave::sealed::CIPHERTEXT_LEN);
        }
    }
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap();
            for word in ["PlaceOrder", "place_order", "limit", "energy"] {
                assert!(!text.contains(word), "{} mentions {word}", path.display());
            }
        }
    }
}
