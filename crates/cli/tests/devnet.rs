//! `quartier devnet` as a supervisor: `kill -9` of one validator leaves the
//! other three finalizing and settling every slot, and the devnet says what
//! happened; SIGTERM to the devnet stops every validator and enclave it
//! started (no orphans).
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use quartier_client::NodeClient;
use quartier_devnet::fleet::FleetManifest;
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

/// Where a test's devnet writes its output.
fn log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("quartier-{name}.log"))
}

/// `quartier devnet` with 8 households (4 with PV) and 3-second slots in
/// `dir`, its output in `log`, once its households trade.
fn trading_devnet(dir: &Path, port: u16, log: &Path) -> (ProcessGroup, FleetManifest) {
    let log = std::fs::File::create(log).unwrap();
    let devnet = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_quartier"))
            .args(["devnet", "--slot-seconds", "3"])
            .args(["--households", "8", "--prosumers", "4"])
            .args(["--base-port", &port.to_string(), "--dir"])
            .arg(dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    );
    let manifest = wait_for("meters.json", Duration::from_secs(240), || {
        let text = std::fs::read_to_string(dir.join("meters.json")).ok()?;
        serde_json::from_str(&text).ok()
    });
    (devnet, manifest)
}

/// The last slot from `first` on that `api` has settled, without a gap.
fn last_settled(api: &NodeClient, first: u64) -> u64 {
    let mut last = first;
    while settled(api, last + 1) {
        last += 1;
    }
    last
}

/// Waits until every one of `slots` settled on each of `apis`.
fn settle_all(apis: &[&NodeClient], slots: std::ops::RangeInclusive<u64>) {
    for slot in slots {
        wait_for(
            &format!("slot {slot} to settle"),
            Duration::from_secs(60),
            || apis.iter().all(|a| settled(a, slot)).then_some(()),
        );
    }
}

fn settled(api: &NodeClient, slot: u64) -> bool {
    api.get(&format!("/api/v1/regions/1/slots/{slot}"))
        .is_ok_and(|(_, v)| !v["settlement"].is_null())
}

#[test]
fn a_validator_killed_leaves_the_devnet_settling_and_sigterm_leaves_no_orphans() {
    let (dir, log_path) = (scratch("devnet-supervisor"), log("devnet-supervisor"));
    let (mut devnet, manifest) = trading_devnet(&dir, BASE_PORT, &log_path);
    let api = |i: u16| NodeClient::new(&format!("http://127.0.0.1:{}", BASE_PORT + 2 * i + 1));
    let (v0, v2) = (api(0).unwrap(), api(2).unwrap());
    let first = manifest.first_slot;
    wait_for("the first slot to settle", Duration::from_secs(60), || {
        settled(&v0, first).then_some(())
    });

    let last = last_settled(&v0, first);
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
    settle_all(&[&v0, &v2], first..=last + 4);

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

/// What the flood did, per kind of attack.
#[derive(Debug, Default)]
struct Flood {
    websockets_open: usize,
    websockets_refused: usize,
    slow_heads: usize,
    syncs: usize,
    blocks: usize,
    writes: u64,
}

/// A devnet under an API flood on validator 0, all from loopback and
/// bounded in count (1 000 websocket attempts held open, 300 slow heads
/// opened again every two seconds, bundle and block reads and well-formed
/// junk transfers from 5 threads until `stop`):
/// every slot still settles on the flooded validator and the others.
#[test]
fn a_devnet_under_an_api_flood_settles_every_slot() {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    const PORT: u16 = 8_560;
    let dir = scratch("devnet-flood");
    let (_devnet, manifest) = trading_devnet(&dir, PORT, &log("devnet-flood"));
    let target = format!("127.0.0.1:{}", PORT + 1);
    let chain_id = quartier_node::config::NetworkGenesis::load(&dir.join("genesis.json"))
        .unwrap()
        .ledger
        .chain_id();
    let v0 = NodeClient::new(&format!("http://{target}")).unwrap();
    let v2 = NodeClient::new(&format!("http://127.0.0.1:{}", PORT + 5)).unwrap();
    let first = manifest.first_slot;
    wait_for("the first slot to settle", Duration::from_secs(60), || {
        settled(&v0, first).then_some(())
    });
    let last = last_settled(&v0, first);
    let stop = AtomicBool::new(false);
    /// Stops the flood however the test's own part ends: a scope waits for
    /// its threads even when its body panics, so a failed wait must release
    /// them, or the failure becomes a hang.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let flood = std::thread::scope(|scope| {
        let stopper = StopOnDrop(&stop);
        // Websockets: 1 000 attempts, each one that opens held until the end.
        let sockets = scope.spawn(|| {
            let mut open = Vec::new();
            let mut flood = Flood::default();
            for _ in 0..1_000 {
                let Ok(stream) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                match tungstenite::client(format!("ws://{target}/api/v1/stream"), stream) {
                    Ok(socket) => {
                        open.push(socket);
                        flood.websockets_open += 1;
                    }
                    Err(_) => flood.websockets_refused += 1,
                }
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
            flood
        });
        // Slow heads: 300 connections that never finish their request,
        // opened again as the server closes them, until the end.
        let slow = scope.spawn(|| {
            let mut opened = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut held = Vec::new();
                for _ in 0..300 {
                    if let Ok(mut s) = std::net::TcpStream::connect(&target)
                        && s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
                            .is_ok()
                    {
                        held.push(s);
                        opened += 1;
                    }
                }
                for _ in 0..20 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            opened
        });
        let reader = |path: &'static str| {
            let stop = &stop;
            let v0 = v0.clone();
            scope.spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = path.replace("{h}", &(n % 50 + 1).to_string());
                    let _ = v0.get_bytes(&path, 1 << 28);
                    n += 1;
                }
                n
            })
        };
        let syncs = [reader("/api/v1/sync"), reader("/api/v1/sync")];
        let blocks = [
            reader("/api/v1/blocks/{h}?full=true"),
            reader("/api/v1/blocks/{h}"),
        ];
        let writes = {
            let stop = &stop;
            let v0 = v0.clone();
            scope.spawn(move || {
                // Well-formed transfers from keys without funds: they reach
                // the address's quota and the signature check.
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = ed25519_dalek::SigningKey::from_bytes(&[(n % 251) as u8 + 1; 32]);
                    let tx = quartier_ledger::Tx {
                        chain_id,
                        signer: quartier_types::AccountId(key.verifying_key().to_bytes()),
                        nonce: n / 251,
                        body: quartier_ledger::TxBody::Transfer {
                            to: quartier_types::AccountId([7; 32]),
                            amount: quartier_types::Money::new(1),
                        },
                    }
                    .sign(&key);
                    let body = format!(r#"{{"tx":"{}"}}"#, hex::encode(tx.encode()));
                    let _ = v0.post("/api/v1/txs", &body);
                    n += 1;
                }
                n
            })
        };
        // Meanwhile every slot settles, four more after the flood began.
        settle_all(&[&v0, &v2], first..=last + 4);
        drop(stopper);
        let mut flood = sockets.join().unwrap();
        flood.slow_heads = slow.join().unwrap();
        flood.syncs = syncs.into_iter().map(|h| h.join().unwrap()).sum();
        flood.blocks = blocks.into_iter().map(|h| h.join().unwrap()).sum();
        flood.writes = writes.join().unwrap();
        flood
    });
    println!("{flood:?}");
    let limits = quartier_node::api_guard::ApiLimits::default();
    assert!(
        flood.websockets_open <= limits.max_websockets_per_ip,
        "{flood:?}"
    );
    assert!(flood.websockets_refused > 0, "{flood:?}");
    assert!(
        flood.syncs > 0 && flood.blocks > 0 && flood.writes > 0,
        "{flood:?}"
    );
    // And the API answers again once the flood is over.
    wait_for("the API to answer", Duration::from_secs(30), || {
        v0.get("/api/v1/status").ok().filter(|(c, _)| *c == 200)
    });
}
