//! Governance changes the validator set of a running devnet (OS processes)
//! while meter agents trade: `quartier gov` votes in the spare seat, whose
//! process joins by state sync and signs from the next epoch boundary, then
//! votes out one of the genesis validators, whose consensus stops at the
//! boundary after. Every slot settles, and `verify-slot` re-runs a clearing
//! before and after the changes to the same result.
//! (Its own test binary: two devnets at once overload the 2-core machine.)
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod support;

use support::validators::{
    Devnet, EXE, clients, height, http, key_file, ledger_genesis, quartier, signing_key, wait_for,
};

/// Blocks per epoch on this devnet (a block every 300 ms when idle).
const EPOCH_BLOCKS: u64 = 16;

fn account(dir: &Path, name: &str) -> String {
    hex::encode(signing_key(dir, name).verifying_key().to_bytes())
}

/// `quartier gov ACTION --node NODE --key <validator-i's key> ARGS…`.
fn gov(action: &str, port: u16, dir: &Path, validator: usize, args: &[&str]) -> String {
    let node = format!("http://127.0.0.1:{port}");
    let key = key_file(dir, &format!("validator-{validator}"));
    let mut all = vec!["gov", action, "--node", &node, "--key", &key];
    all.extend_from_slice(args);
    quartier(&all)
}

/// The validators signing the node's current consensus epoch, and the epoch.
fn signing(port: u16) -> (u64, Vec<String>) {
    let Some((_, g)) = http(port, "GET", "/api/v1/governance", "") else {
        return (0, Vec::new());
    };
    let c = &g["consensus"];
    let keys = c["signing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    (c["epoch"].as_u64().unwrap_or(0), keys)
}

fn verify_slot(port: u16, slot: u64) {
    let out = Command::new(EXE)
        .args(["verify-slot", "--node", &format!("http://127.0.0.1:{port}")])
        .args(["--region", "1", "--slot", &slot.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("MATCH"),
        "slot {slot}: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn governance_adds_a_validator_process_and_removes_another_while_meters_trade() {
    // Below the ephemeral ports (32 768 up): a port an outgoing connection
    // holds made a node's p2p listener fail to bind.
    let base = 12_000 + (std::process::id() % 300) as u16 * 30;
    let dir = support::scratch("e2e-epochs");
    let mut net = Devnet::lay_out(
        dir.clone(),
        base,
        &[
            "--idle-block-ms",
            "300",
            "--epoch-blocks",
            &EPOCH_BLOCKS.to_string(),
            "--snapshot-every-blocks",
            "8",
        ],
    );
    for i in 0..4 {
        net.start_node(i);
    }
    let ports = net.api_ports.clone();
    let spare_port = net.spare_api_port;
    wait_for("the network to run", Duration::from_secs(180), || {
        ports.iter().all(|&p| height(p) >= 2)
    });

    // Households trade throughout, through validators 1-3 (validator 0 is
    // voted out, its process left running).
    use quartier_devnet::fleet::{Fleet, FleetEvent, FleetPlan};
    let ledger = ledger_genesis(&dir);
    let apis = clients(&ports[1..]);
    let plan = FleetPlan {
        households: 8,
        prosumers: 5,
        seed: 9,
        strategy: quartier_meter::StrategyKind::Random,
        start_interval: 171 * 96 + 40,
        top_up: quartier_types::Money::new(100 * 100_000_000),
    };
    let mut fleet = Fleet::enrol(
        apis,
        ledger,
        &signing_key(&dir, "dso"),
        &signing_key(&dir, "utility"),
        &plan,
        Duration::from_secs(120),
    )
    .unwrap();
    let slots = 12;
    let (sender, events) = std::sync::mpsc::channel();
    let runner = std::thread::spawn(move || {
        fleet.run(Some(slots), |e| {
            let _ = sender.send(e);
        })
    });

    // Once the households placed their first orders, the spare seat is
    // voted in by three of the four.
    let mut seen = Vec::new();
    while !seen.iter().any(|e| matches!(e, FleetEvent::Placed { .. })) {
        seen.push(events.recv_timeout(Duration::from_secs(180)).unwrap());
    }
    let newcomer = account(&dir, "validator-4");
    let change = format!(r#"{{"add":"{newcomer}"}}"#);
    let out = gov("propose", ports[1], &dir, 0, &["--change", &change]);
    assert!(out.contains("proposal 0 open"), "{out}");
    let status = quartier(&[
        "gov",
        "status",
        "--node",
        &format!("http://127.0.0.1:{}", ports[1]),
    ]);
    assert!(
        status.contains("signs from the epoch boundary after"),
        "{status}"
    );
    for v in [1, 2] {
        gov("vote", ports[1], &dir, v, &["--proposal", "0"]);
    }
    // Its process joins by state sync, then signs from the boundary on.
    net.start_node_synced(4, ports[1]);
    let mut signing_now = (0, Vec::new());
    wait_for("the newcomer to sign", Duration::from_secs(180), || {
        signing_now = signing(ports[1]);
        signing_now.1.contains(&newcomer)
    });
    assert_eq!(signing_now.1.len(), 5);
    let added_from = signing_now.0 * EPOCH_BLOCKS;
    wait_for("the newcomer to finalize", Duration::from_secs(120), || {
        height(spare_port) >= added_from + 2
    });

    // Four of the five vote out validator 0.
    let removed = account(&dir, "validator-0");
    let change = format!(r#"{{"remove":"{removed}"}}"#);
    let out = gov("propose", ports[2], &dir, 1, &["--change", &change]);
    assert!(out.contains("proposal 1 open"), "{out}");
    for v in [2, 3, 4] {
        gov("vote", ports[2], &dir, v, &["--proposal", "1"]);
    }
    wait_for("validator 0 to be out", Duration::from_secs(180), || {
        signing_now = signing(ports[2]);
        !signing_now.1.is_empty() && !signing_now.1.contains(&removed)
    });
    assert_eq!(signing_now.1.len(), 4);
    let removed_from = signing_now.0 * EPOCH_BLOCKS;
    // The four go on without it; its own consensus stopped.
    wait_for("the four to go on", Duration::from_secs(120), || {
        [ports[1], ports[2], ports[3], spare_port]
            .iter()
            .all(|&p| height(p) >= removed_from + 4)
    });
    let log = std::fs::read_to_string(dir.join("validator-0.log")).unwrap();
    assert!(log.contains("removed from the validator set"), "{log}");

    // Every slot the households traded in settled, before and after.
    runner.join().unwrap().unwrap();
    seen.extend(events.try_iter());
    let placed: Vec<u64> = seen
        .into_iter()
        .filter_map(|e| match e {
            FleetEvent::Placed {
                slot,
                abandoned,
                pending,
                ..
            } => {
                assert_eq!((abandoned, pending), (0, 0), "slot {slot:?}");
                Some(slot.0)
            }
            _ => None,
        })
        .collect();
    assert_eq!(placed.len() as u64, slots, "{placed:?}");
    let mut settled_at = Vec::new();
    for &slot in &placed {
        let path = format!("/api/v1/regions/1/slots/{slot}");
        wait_for("the slot to settle", Duration::from_secs(60), || {
            http(spare_port, "GET", &path, "").is_some_and(|(_, v)| {
                let height = v["settlement"]["height"].as_u64();
                settled_at.extend(height);
                height.is_some()
            })
        });
    }
    // The trading went on across the changes (orders were placed before
    // the first vote, and slots settled before and after the second).
    let (first, last) = (settled_at[0], settled_at[settled_at.len() - 1]);
    assert!(
        first < removed_from && last >= removed_from,
        "settled at {settled_at:?}; added from {added_from}, removed from {removed_from}"
    );
    // The newcomer signs: with validator 3 down too, the chain goes on
    // only with its signature (three of the four).
    net.kill(3);
    let at = height(ports[1]);
    wait_for(
        "three of the four to go on",
        Duration::from_secs(120),
        || {
            [ports[1], ports[2], spare_port]
                .iter()
                .all(|&p| height(p) >= at + 4)
        },
    );

    // Each clearing re-run on the newcomer (and the first and last on a
    // genesis validator): the same result across both changes.
    for &slot in &placed {
        verify_slot(spare_port, slot);
    }
    for slot in [placed[0], placed[placed.len() - 1]] {
        verify_slot(ports[1], slot);
    }
}
