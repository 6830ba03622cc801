//! `quartier devnet` as a supervisor: `kill -9` of one validator leaves the
//! other three finalizing and settling every slot, and the devnet says what
//! happened; SIGTERM to the devnet stops every validator and enclave it
//! started (no orphans).
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use quartier_node::client::NodeClient;
use quartier_node::meters::FleetManifest;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{ProcessGroup, scratch, wait_for};

mod support;

const BASE_PORT: u16 = 8_500;

/// The pids of the processes whose command line names `path`.
fn processes_naming(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&needle).then_some(pid)
        })
        .collect()
}

fn settled(api: &NodeClient, slot: u64) -> bool {
    api.get(&format!("/api/v1/regions/1/slots/{slot}"))
        .is_ok_and(|(_, v)| !v["settlement"].is_null())
}

#[test]
fn a_validator_killed_leaves_the_devnet_settling_and_sigterm_leaves_no_orphans() {
    let dir = scratch("devnet-supervisor");
    let log_path = std::env::temp_dir().join("quartier-devnet-supervisor.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut devnet = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_quartier"))
            .args(["devnet", "--slot-seconds", "3"])
            .args(["--households", "8", "--prosumers", "4"])
            .args(["--base-port", &BASE_PORT.to_string(), "--dir"])
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    );
    let manifest: FleetManifest = wait_for("meters.json", Duration::from_secs(240), || {
        let text = std::fs::read_to_string(dir.join("meters.json")).ok()?;
        serde_json::from_str(&text).ok()
    });
    let api = |i: u16| NodeClient::new(&format!("http://127.0.0.1:{}", BASE_PORT + 2 * i + 1));
    let (v0, v2) = (api(0).unwrap(), api(2).unwrap());
    let first = manifest.first_slot;
    wait_for("the first slot to settle", Duration::from_secs(60), || {
        settled(&v0, first).then_some(())
    });

    let mut last = first;
    while settled(&v0, last + 1) {
        last += 1;
    }
    // kill -9 of validator 1.
    let config = dir.join("validator-1");
    let victims = processes_naming(&config);
    assert_eq!(victims.len(), 1, "validator 1's process: {victims:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &victims[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    wait_for("the devnet to report it", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log_path).ok()?;
        (text.contains("validator 1 exited") && text.contains("the other validators go on"))
            .then_some(())
    });
    assert!(devnet.try_wait().is_none(), "the devnet stopped");
    // Every slot settles, four more after the kill, on two of the three left.
    for slot in first..=last + 4 {
        wait_for(
            &format!("slot {slot} to settle"),
            Duration::from_secs(60),
            || (settled(&v0, slot) && settled(&v2, slot)).then_some(()),
        );
    }

    // SIGTERM to the devnet alone (not its process group): every process it
    // started stops with it.
    let started = processes_naming(&dir);
    assert!(started.len() >= 3, "{started:?}");
    let term = Command::new("kill")
        .args(["-TERM", &devnet.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    wait_for("the devnet to stop", Duration::from_secs(30), || {
        devnet.try_wait()
    });
    wait_for("its validators to stop", Duration::from_secs(30), || {
        processes_naming(&dir).is_empty().then_some(())
    });
}
