//! The devnet as real OS processes on loopback (DESIGN §12): four validators,
//! `kill -9` of one under load, restart, and afterwards every acknowledged
//! transaction is finalized and the restarted node agrees on every root.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use quartier_ledger::{MeterRole, Tx, TxBody};
use quartier_types::{AccountId, RegionId};
use std::process::Command;
use std::time::Duration;

mod support;

use support::validators::{
    Devnet, EXE, clients, height, http, ledger_genesis, signing_key as key, wait_for,
};

/// The settlement of region 1's `slot` on the node at `port`, once there.
fn wait_for_settlement(port: u16, slot: u64) -> serde_json::Value {
    let path = format!("/api/v1/regions/1/slots/{slot}");
    let mut found = serde_json::Value::Null;
    wait_for("a settlement", Duration::from_secs(60), || {
        found = http(port, "GET", &path, "")
            .map(|(_, v)| v["settlement"].clone())
            .unwrap_or_default();
        !found.is_null()
    });
    found
}

#[test]
fn four_processes_survive_kill_9_and_agree() {
    let base = 21_000 + (std::process::id() % 500) as u16 * 10;
    // tmpfs when there is one (see support::scratch); kill -9 semantics are unchanged.
    let dir = support::scratch("e2e");
    let mut net = Devnet::lay_out(dir.clone(), base, &[]);
    for i in 0..4 {
        net.start_node(i);
    }
    let ports = net.api_ports.clone();
    wait_for(
        "all validators to finalize",
        Duration::from_secs(120),
        || ports.iter().all(|&p| height(p) >= 3),
    );

    // The DSO registers 40 meters, submitting round-robin to all validators
    // (gossip must carry each to the proposers); validator 3 is killed halfway.
    let dso = key(&dir, "dso");
    let chain_id = {
        let genesis: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("genesis.json")).unwrap())
                .unwrap();
        let ledger: quartier_ledger::Genesis =
            serde_json::from_value(genesis["ledger"].clone()).unwrap();
        ledger.chain_id()
    };
    let signed: Vec<String> = (0..40u64)
        .map(|nonce| {
            let tx = Tx {
                chain_id,
                signer: AccountId(dso.verifying_key().to_bytes()),
                nonce,
                body: TxBody::RegisterMeter {
                    // A real verifying key (the ledger takes prime-order meter
                    // keys only), of a seed no later meter of this test uses.
                    meter: AccountId(
                        ed25519_dalek::SigningKey::from_bytes(&[nonce as u8 + 100; 32])
                            .verifying_key()
                            .to_bytes(),
                    ),
                    region: RegionId(1),
                    role: MeterRole::Consumer,
                    pv_watts: 0,
                },
            }
            .sign(&dso);
            format!(r#"{{"tx":"{}"}}"#, hex::encode(tx.encode()))
        })
        .collect();
    let dso_id = AccountId(dso.verifying_key().to_bytes()).to_string();
    let nonce_at = |port: u16| {
        http(port, "GET", &format!("/api/v1/accounts/{dso_id}"), "")
            .and_then(|(_, v)| v["nonce"].as_u64())
            .unwrap_or(0)
    };
    let mut finalized_seen = 0;
    for (nonce, body) in signed.iter().enumerate() {
        if nonce == 20 {
            finalized_seen = nonce_at(ports[0]);
            net.kill(3);
        }
        let live = if nonce >= 20 { 3 } else { 4 };
        let port = ports[nonce % live];
        let (code, reply) = http(port, "POST", "/api/v1/txs", body).unwrap();
        assert_eq!(code, 202, "{reply}");
    }
    // A 202 means admitted, not finalized: a node killed before gossiping loses
    // its pending txs, so the client resubmits what is not finalized yet
    // (idempotent: a tx applies once, by nonce).
    wait_for("every tx to finalize", Duration::from_secs(120), || {
        let done = nonce_at(ports[0]);
        for body in &signed[done as usize..] {
            for &p in &ports[..3] {
                let _ = http(p, "POST", "/api/v1/txs", body);
            }
        }
        ports[..3].iter().all(|&p| nonce_at(p) == 40)
    });
    let acknowledged = 40;
    assert!(finalized_seen <= acknowledged);

    // Restart the killed validator: it resumes from its log and catches up.
    net.start_node(3);
    let target = height(ports[0]);
    wait_for(
        "the restarted validator to catch up",
        Duration::from_secs(120),
        || height(ports[3]) >= target,
    );
    assert_eq!(
        nonce_at(ports[3]),
        acknowledged,
        "a finalized tx is missing after restart"
    );
    for h in [1, target / 2, target] {
        let root = |p: u16| {
            http(p, "GET", &format!("/api/v1/blocks/{h}"), "").map(|(_, v)| v["root"].clone())
        };
        let expected = root(ports[0]).unwrap();
        for &p in &ports[1..] {
            assert_eq!(
                root(p).unwrap(),
                expected,
                "root at height {h} differs on port {p}"
            );
        }
    }

    // A market slot on the live chain, then anyone can re-run its clearing.
    let utility = key(&dir, "utility");
    let buyer = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let seller = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
    let account = |k: &ed25519_dalek::SigningKey| AccountId(k.verifying_key().to_bytes());
    let sign = |k: &ed25519_dalek::SigningKey, nonce: u64, body: TxBody| {
        let tx = Tx {
            chain_id,
            signer: account(k),
            nonce,
            body,
        }
        .sign(k);
        format!(r#"{{"tx":"{}"}}"#, hex::encode(tx.encode()))
    };
    let setup = [
        sign(
            &dso,
            40,
            TxBody::RegisterMeter {
                meter: account(&buyer),
                region: RegionId(1),
                role: MeterRole::Consumer,
                pv_watts: 0,
            },
        ),
        sign(
            &dso,
            41,
            TxBody::RegisterMeter {
                meter: account(&seller),
                region: RegionId(1),
                role: MeterRole::Prosumer,
                pv_watts: 10_000,
            },
        ),
        sign(
            &utility,
            0,
            TxBody::Mint {
                to: account(&buyer),
                amount: quartier_types::Money::new(100_000_000),
            },
        ),
    ];
    for body in &setup {
        assert_eq!(http(ports[0], "POST", "/api/v1/txs", body).unwrap().0, 202);
    }
    wait_for("meters registered", Duration::from_secs(60), || {
        nonce_at(ports[1]) == 42
    });
    let tip = height(ports[0]);
    let time_ms = http(ports[0], "GET", &format!("/api/v1/blocks/{tip}"), "")
        .unwrap()
        .1["time_ms"]
        .as_u64()
        .unwrap();
    let slot = time_ms / 5_000 + 1;
    let order = |k, side, limit: u64, energy: u64| {
        sign(
            k,
            0,
            TxBody::PlaceOrder {
                region: RegionId(1),
                slot: quartier_types::Slot(slot),
                side,
                limit: quartier_types::Price::new(limit),
                energy: quartier_types::Energy::new(energy),
            },
        )
    };
    let buy = order(&buyer, quartier_types::Side::Buy, 18_000, 900);
    let sell = order(&seller, quartier_types::Side::Sell, 9_000, 600);
    assert_eq!(http(ports[1], "POST", "/api/v1/txs", &buy).unwrap().0, 202);
    assert_eq!(http(ports[2], "POST", "/api/v1/txs", &sell).unwrap().0, 202);
    let slot_path = format!("/api/v1/regions/1/slots/{slot}");
    wait_for(
        "the slot to settle on every node",
        Duration::from_secs(60),
        || {
            ports.iter().all(|&p| {
                http(p, "GET", &slot_path, "").is_some_and(|(_, v)| !v["settlement"].is_null())
            })
        },
    );
    let settled = http(ports[3], "GET", &slot_path, "").unwrap().1;
    assert_eq!(
        settled["settlement"]["clearing"]["totals"]["local_energy"],
        600
    );
    let out = Command::new(EXE)
        .args([
            "verify-slot",
            "--node",
            &format!("http://127.0.0.1:{}", ports[2]),
            "--region",
            "1",
            "--slot",
        ])
        .arg(slot.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("MATCH"),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The websocket stream delivers finalized blocks (an idle chain still
    // makes a heartbeat block every 2 s).
    let (mut socket, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{}/api/v1/stream", ports[1])).unwrap();
    let message = socket.read().unwrap();
    let event: serde_json::Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
    assert_eq!(event["type"], "block", "{event}");
    assert!(event["height"].as_u64().unwrap() > 0);

    // Meter agents keep every order when the validator they talk to dies:
    // 8 households for 6 slots, validator 0 (the first node of a quarter of
    // the agents, and the first they ask for the time) killed after slot 1.
    use quartier_devnet::fleet::{Fleet, FleetEvent, FleetPlan};
    let ledger = ledger_genesis(&dir);
    let apis = clients(&ports);
    let plan = FleetPlan {
        households: 8,
        prosumers: 5,
        seed: 4,
        strategy: quartier_meter::StrategyKind::Random,
        start_interval: 171 * 96 + 40,
        top_up: quartier_types::Money::new(100 * 100_000_000),
    };
    let mut fleet = Fleet::enrol(
        apis,
        ledger,
        &dso,
        &utility,
        &plan,
        Duration::from_secs(120),
    )
    .unwrap();
    let (sender, events) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        fleet.run(Some(6), |e| {
            let _ = sender.send(e);
        })
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, FleetEvent::Placed { .. })) {
        seen.push(events.recv_timeout(Duration::from_secs(120)).unwrap());
    }
    net.kill(0);
    runner.join().unwrap().unwrap();
    seen.extend(events.try_iter());
    let placed: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            FleetEvent::Placed {
                slot,
                orders,
                abandoned,
                pending,
            } => Some((*slot, *orders, *abandoned, *pending)),
            FleetEvent::Settled { .. }
            | FleetEvent::Receipts { .. }
            | FleetEvent::Abandoned { .. } => None,
        })
        .collect();
    assert_eq!(placed.len(), 6, "{seen:?}");
    for (slot, orders, abandoned, pending) in &placed {
        assert_eq!((abandoned, pending), (&0, &0), "slot {slot:?}: {seen:?}");
        let settlement = wait_for_settlement(ports[1], slot.0);
        assert_eq!(
            settlement["orders"].as_array().unwrap().len(),
            *orders,
            "slot {slot:?}: an order the agents saw final is missing"
        );
    }
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
