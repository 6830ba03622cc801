//! Privacy mode B end to end, as a user starts it: `quartier devnet --privacy
//! enclave --enclaves 3` with 37 households, 4 validator processes and 3
//! enclave processes (simulated TEE). Every slot every household sends one
//! sealed order and opens its receipt after checking the enclave's receipts
//! against the root on chain. One enclave is stopped (t = 2 of 3 still
//! settle), refuses an older copy of its sealed state its host puts back
//! (rollback), restarted (it unseals its state, catches up and signs again:
//! the test then stops another one and slots still settle), and no
//! plaintext order reaches the chain or a log. Throughout, an outsider
//! process-level adversary calls every enclave RPC and sends forged epoch-key
//! shares: no slot goes unreported for it and it opens no order.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

mod support;

use quartier_client::NodeClient;
use quartier_client::enclave::call;
use quartier_enclave::attestation::{Measurement, Quote, SimulatedAttestationService};
use quartier_enclave::epoch::{IdentityKey, share};
use quartier_enclave::rpc::{Request, Response};
use quartier_enclave::sealed::{Epoch, EpochKeyPair, SealedOrder};
use quartier_enclave::service::{Purpose, SealedDkgPackage};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// What the outsider got out of the enclaves.
#[derive(Debug, Default)]
struct Loot {
    /// RPC calls answered (refused or not).
    calls: usize,
    /// Answers that were not a refusal, counted by request kind.
    accepted: BTreeMap<&'static str, usize>,
    /// Sealed orders on chain it opened with a key it planted.
    opened: usize,
    /// Its planted public keys (none may ever be published).
    planted: Vec<[u8; 32]>,
}

/// The adversary of issue 18 as an outside process would run it: it reads
/// the enclaves' public status (quotes, group key), then in rounds sends
/// every enclave each RPC request an attacker can form — a committee with
/// itself in it (quoted by a vendor of its own) or with a minority
/// threshold, forged DKG packages, a catch-up for itself, epoch-key shares
/// of keys it made for the coming epochs, signing requests it signed itself
/// — and tries its planted keys on every sealed order the chain shows.
fn outsider(base_port: u16, stop: &AtomicBool) -> Loot {
    let mut rng = ChaCha20Rng::from_seed([13; 32]);
    let me = IdentityKey::generate(&mut rng);
    let own_vendor = SimulatedAttestationService::new([66; 32]);
    let api = NodeClient::new(&format!("http://127.0.0.1:{}", base_port + 1)).unwrap();
    let enclaves: Vec<NodeClient> = (0..3u16)
        .map(|i| NodeClient::new(&format!("http://127.0.0.1:{}", base_port + 8 + i)).unwrap())
        .collect();
    let mut loot = Loot::default();
    let mut keys: Vec<EpochKeyPair> = Vec::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let status: Vec<serde_json::Value> = enclaves
            .iter()
            .filter_map(|e| e.get("/enclave/v1/status").ok().map(|(_, v)| v))
            .collect();
        let quotes: Vec<Quote> = status
            .iter()
            .filter_map(|s| serde_json::from_value(s["quote"].clone()).ok())
            .collect();
        let measurement = quotes
            .first()
            .map_or(Measurement([0; 32]), |q| q.measurement);
        let mine = own_vendor.quote(measurement, me.report_data([0xff; 32]));
        let group: [u8; 32] = status
            .iter()
            .find_map(|s| serde_json::from_value(s["group_key"].clone()).ok())
            .map_or([0; 32], |g: quartier_enclave::committee::GroupPublicKey| {
                g.0
            });
        let epoch = api
            .get("/api/v1/sealed")
            .ok()
            .and_then(|(_, v)| {
                v["epochs"]
                    .as_array()?
                    .iter()
                    .filter_map(|e| e["epoch"].as_u64())
                    .max()
            })
            .unwrap_or(0);
        let chain: [u8; 32] = api
            .get("/api/v1/status")
            .ok()
            .and_then(|(_, v)| hex::decode(v["chain_id"].as_str()?).ok())
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 32]);
        // Keys of its own for the next epochs, shared as if from a member.
        for e in epoch + 1..=epoch + 2 {
            if !keys.iter().any(|k| k.epoch() == Epoch(e)) {
                let key = EpochKeyPair::generate(Epoch(e), &mut rng);
                loot.planted.push(key.public_key());
                keys.push(key);
            }
        }
        let mut with_me = quotes.clone();
        with_me.push(mine.clone());
        for (i, enclave) in (0u16..).zip(&enclaves) {
            let identity: [u8; 32] = status
                .get(usize::from(i))
                .and_then(|s| hex::decode(s["identity_key"].as_str()?).ok())
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 32]);
            let mut requests = vec![
                (
                    "join",
                    Request::DkgRound1 {
                        index: i,
                        t: 3,
                        attempt: u64::MAX,
                        chain,
                        members: with_me.clone(),
                        invitation: [9; 64],
                    },
                ),
                (
                    "downgrade",
                    Request::DkgRound1 {
                        index: i,
                        t: 1,
                        attempt: u64::MAX,
                        chain,
                        members: quotes.clone(),
                        invitation: [9; 64],
                    },
                ),
                (
                    "takeover",
                    Request::DkgRound1 {
                        index: i,
                        t: 3,
                        attempt: u64::MAX,
                        chain,
                        members: quotes.clone(),
                        invitation: [9; 64],
                    },
                ),
                (
                    "round2",
                    Request::DkgRound2 {
                        round1: BTreeMap::from([(3, (vec![1; 64], [2; 64]))]),
                    },
                ),
                (
                    "finish",
                    Request::DkgFinish {
                        round1: [5; 32],
                        packages: vec![SealedDkgPackage {
                            from: 3,
                            to: i,
                            encapped_key: [3; 32],
                            ciphertext: vec![4; 80],
                        }],
                    },
                ),
                (
                    "confirm",
                    Request::DkgConfirm {
                        round1: [5; 32],
                        signatures: vec![[6; 64]; 3],
                    },
                ),
                (
                    "catch_up",
                    Request::CatchUp {
                        to: me.public_key(),
                    },
                ),
            ];
            for key in &keys {
                for s in share(key, &me, &[identity], &group, &mut rng) {
                    requests.push((
                        "epoch_key",
                        Request::ReceiveEpochKey {
                            share: s,
                            public_key: key.public_key(),
                        },
                    ));
                }
                requests.push((
                    "sign_planted",
                    Request::SignCommit {
                        session: u64::MAX - round,
                        purpose: Purpose::EpochKey {
                            epoch: key.epoch(),
                            public_key: key.public_key(),
                        },
                        by: i,
                        signature: [5; 64],
                    },
                ));
            }
            for (what, request) in &requests {
                if let Some(answer) = call(enclave, request) {
                    loot.calls += 1;
                    if !matches!(answer, Response::Refused(_)) {
                        *loot.accepted.entry(what).or_default() += 1;
                    }
                }
            }
        }
        // Every sealed order the chain shows, tried with every planted key.
        if let Ok((_, sealed)) = api.get("/api/v1/sealed") {
            for b in sealed["batches"].as_array().into_iter().flatten() {
                let path = format!("/api/v1/regions/{}/batches/{}", b["region"], b["slot"]);
                let Ok((200, batch)) = api.get(&path) else {
                    continue;
                };
                for o in batch["batch"]["orders"].as_array().into_iter().flatten() {
                    let Ok(order) = serde_json::from_value::<SealedOrder>(o["sealed"].clone())
                    else {
                        continue;
                    };
                    loot.opened += keys.iter().filter(|k| k.open(&order).is_ok()).count();
                }
            }
        }
        // Paced so the devnet keeps its slots on two cores (not a wait for
        // anything: the loop runs until the test stops it).
        std::thread::sleep(Duration::from_millis(200));
    }
    loot
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
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || outsider(BASE_PORT, &stop))
    };

    // All three enclaves working.
    let first = wait_for("the first verified slot", Duration::from_secs(300), || {
        let v = verified_slots(&log_path);
        (!v.is_empty()).then_some(v)
    });
    assert!(!first.is_empty());
    // Enclave 2's host keeps a copy of the state its enclave sealed by now.
    let state = dir.join("enclave-2/state.sealed");
    let older = std::fs::read(&state).unwrap();
    wait_slots(&log_path, 7, "8 slots with every receipt verified");

    // One enclave down: t = 2 of 3 still settle every slot.
    kill_enclave(&config(2));
    wait_slots(&log_path, 5, "5 slots with enclave 2 down");

    // Its host puts the older sealed state back (rollback: the enclave would
    // forget the slots, payouts and erasures since) and starts it: the
    // enclave refuses the copy (the simulated monotonic counter moved on).
    let latest = std::fs::read(&state).unwrap();
    assert_ne!(latest, older, "the enclave sealed again since the copy");
    std::fs::write(&state, &older).unwrap();
    let rollback_log = dir.join("enclave-2-rollback.log");
    let mut rolled_back = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_quartier"))
            .args(["enclave", "run", "--config"])
            .arg(config(2))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&rollback_log).unwrap()),
    );
    let exit = wait_for(
        "the enclave to refuse its rolled-back state",
        Duration::from_secs(60),
        || rolled_back.try_wait(),
    );
    let why = std::fs::read_to_string(&rollback_log).unwrap();
    assert!(!exit.success() && why.contains("rollback"), "{why}");
    drop(rolled_back);
    std::fs::write(&state, &latest).unwrap();

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
    // The outsider attacked throughout and got nothing: every request
    // refused, none of its keys published, no order opened.
    stop.store(true, Ordering::Relaxed);
    let loot = attacker.join().unwrap();
    assert!(
        loot.calls >= 100,
        "the outsider barely ran: {} calls",
        loot.calls
    );
    assert!(loot.accepted.is_empty(), "accepted: {:?}", loot.accepted);
    assert_eq!(loot.opened, 0, "the outsider opened {} orders", loot.opened);
    let (_, sealed) = api.get("/api/v1/sealed").unwrap();
    for e in sealed["epochs"].as_array().unwrap() {
        let published = e["public_key"].as_str().unwrap();
        assert!(
            !loot.planted.iter().any(|k| hex::encode(k) == published),
            "a planted key was published: {e}"
        );
    }
    // The committee in office spans the three simulated TEE vendors, one
    // member each (no vendor alone holds t = 2).
    let vendor_of = |account: &serde_json::Value| {
        sealed["enclaves"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["account"] == *account)
            .map(|e| e["enclave"]["vendor"].as_u64().unwrap())
            .unwrap()
    };
    let vendors: std::collections::BTreeSet<u64> = sealed["committee"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(vendor_of)
        .collect();
    assert_eq!(vendors.len(), 3, "{}", sealed["committee"]);
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
    let wallet = quartier_devnet::fleet::meter_key(&genesis.ledger, 1, 0);
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

    // The insider's attack on what mode B publishes: it runs three of the
    // households, learns from its own sealed orders which features (size;
    // its meter's deposits, withdrawal requests and payouts in the batch)
    // come with which kind of order, and names the household of every
    // other true order from them. Every sealed order looks alike: chance.
    let out = Command::new(env!("CARGO_BIN_EXE_quartier"))
        .args(["audit", "--json", "--slots", "2976", "--node"])
        .arg(format!("http://127.0.0.1:{}", BASE_PORT + 1))
        .arg("--truth")
        .arg(dir.join("meters.json"))
        .arg("--enclave")
        .arg(enclaves.join(","))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: serde_json::Value = serde_json::from_str(&text).unwrap();
    println!("{}", serde_json::to_string_pretty(&audit).unwrap());
    let sealed_audit = &audit["sealed"];
    let f = |k: &str| sealed_audit[k].as_f64().unwrap();
    assert_eq!(sealed_audit["insiders"], 3, "{sealed_audit}");
    assert!(f("orders") >= 20.0 * 30.0, "{sealed_audit}");
    assert!(f("top1") <= 1.5 * f("chance"), "{sealed_audit}");

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
