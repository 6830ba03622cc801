//! State sync across OS processes: validators that keep one second of
//! blocks, and a fourth process that joins them with `--sync-from`.
//! (Its own test binary: two devnets at once overload the 2-core machine.)
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use std::process::Command;
use std::time::Duration;

mod support;

use support::validators::{Devnet, EXE, height, http, status, wait_for};

#[test]
fn a_new_process_joins_a_pruned_devnet_by_state_sync() {
    let base = 26_000 + (std::process::id() % 500) as u16 * 10;
    let dir = support::scratch("e2e-sync");
    // Validators keep a minute of blocks behind a snapshot every 8 blocks: a
    // debug-build validator takes 10-36 s from start to a running network on
    // the 2-core CI machine, and the joiner needs the blocks after its
    // snapshot until then (with one second it lost them and never caught up).
    let mut net = Devnet::lay_out(
        dir.clone(),
        base,
        &[
            "--idle-block-ms",
            "300",
            "--block-retention-ms",
            "60000",
            "--snapshot-every-blocks",
            "8",
        ],
    );
    for i in 0..3 {
        net.start_node(i);
    }
    let ports = net.api_ports.clone();
    // Until the first blocks are gone from every running validator: validator 3
    // can not catch up by replaying from genesis.
    wait_for("the validators to prune", Duration::from_secs(180), || {
        ports[..3]
            .iter()
            .all(|&p| http(p, "GET", "/api/v1/blocks/1", "").is_some_and(|(code, _)| code == 410))
    });
    net.start_node_synced(3, ports[0]);
    let target = height(ports[0]) + 5;
    wait_for(
        "the new validator to finalize with the others",
        Duration::from_secs(120),
        || height(ports[3]) >= target,
    );
    let digest = |p: u16, h: u64| {
        http(p, "GET", &format!("/api/v1/blocks/{h}"), "").map(|(_, v)| v["digest"].clone())
    };
    let h = height(ports[3]);
    wait_for("the others to reach it", Duration::from_secs(60), || {
        height(ports[0]) >= h
    });
    assert_eq!(digest(ports[3], h), digest(ports[0], h), "block {h}");
    let root = |p: u16| status(p).map(|s| (s["height"].clone(), s["root"].clone()));
    wait_for("one tip, one root", Duration::from_secs(60), || {
        let r = root(ports[3]);
        r.is_some() && r == root(ports[0])
    });

    // A node that has data refuses to sync over it, and says why.
    net.kill(3);
    let config = dir.join("validator-3/node.toml");
    let out = Command::new(EXE)
        .args(["node", "--config"])
        .arg(config)
        .arg("--sync-from")
        .arg(format!("http://127.0.0.1:{}", ports[0]))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty"), "{stderr}");
    // Restarted plainly, the synced node resumes from its own log and
    // consensus journal, and catches up again.
    net.start_node(3);
    let target = height(ports[0]) + 3;
    wait_for(
        "the synced node to resume after a restart",
        Duration::from_secs(120),
        || height(ports[3]) >= target,
    );
    wait_for("one tip, one root again", Duration::from_secs(60), || {
        let r = root(ports[3]);
        r.is_some() && r == root(ports[0])
    });
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
