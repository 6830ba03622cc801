//! A devnet of `quartier node` processes laid out by `quartier genesis`, and
//! the few API calls the OS-process tests make.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The binary under test.
pub const EXE: &str = env!("CARGO_BIN_EXE_quartier");

/// One request to the node on `port`; `None` if it does not answer.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, serde_json::Value)> {
    let client = quartier_client::NodeClient::new(&format!("http://127.0.0.1:{port}")).ok()?;
    match method {
        "POST" => client.post(path, body).ok(),
        _ => client.get(path).ok(),
    }
}

/// Runs `quartier` with `args`; its stdout, or a panic with its stderr.
pub fn quartier(args: &[&str]) -> String {
    let out = Command::new(EXE).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "quartier {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of a devnet's key file `keys/NAME.key`.
pub fn key_file(dir: &std::path::Path, name: &str) -> String {
    dir.join(format!("keys/{name}.key")).display().to_string()
}

/// A devnet's key file `keys/NAME.key` as a signing key.
pub fn signing_key(dir: &std::path::Path, name: &str) -> ed25519_dalek::SigningKey {
    let hex_seed = std::fs::read_to_string(dir.join(format!("keys/{name}.key"))).unwrap();
    let seed: [u8; 32] = hex::decode(hex_seed.trim()).unwrap().try_into().unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

/// The ledger genesis of the devnet laid out in `dir`.
pub fn ledger_genesis(dir: &std::path::Path) -> quartier_ledger::Genesis {
    let network: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("genesis.json")).unwrap()).unwrap();
    serde_json::from_value(network["ledger"].clone()).unwrap()
}

/// API clients of the nodes on `ports`.
pub fn clients(ports: &[u16]) -> Vec<quartier_client::NodeClient> {
    ports
        .iter()
        .map(|p| quartier_client::NodeClient::new(&format!("http://127.0.0.1:{p}")).unwrap())
        .collect()
}

/// The node's `/api/v1/status`, if it answers.
pub fn status(port: u16) -> Option<serde_json::Value> {
    http(port, "GET", "/api/v1/status", "").map(|(_, v)| v)
}

/// The node's finalized height (0 if it does not answer).
pub fn height(port: u16) -> u64 {
    status(port).and_then(|s| s["height"].as_u64()).unwrap_or(0)
}

/// Waits (bounded) until `condition` holds, polling the nodes.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    super::wait_for(what, limit, || condition().then_some(()));
}

/// The validator processes of a laid-out devnet, killed on drop.
pub struct Devnet {
    pub dir: PathBuf,
    pub nodes: Vec<Option<Child>>,
    /// The validators' API ports.
    pub api_ports: Vec<u16>,
    /// The spare seat's (validator 4) API port.
    pub spare_api_port: u16,
}

impl Devnet {
    /// Lays out four validators with `quartier genesis --out dir` (p2p on
    /// `base + 2i`, API on `base + 2i + 1`, 5-second slots) and one spare
    /// seat (validator 4, API on `base + 25`), plus `options`; starts none
    /// of them.
    pub fn lay_out(dir: PathBuf, base: u16, options: &[&str]) -> Devnet {
        let out = Command::new(EXE)
            .args(["genesis", "--validators", "4", "--slot-seconds", "5"])
            .args(options)
            .arg("--base-port")
            .arg(base.to_string())
            .arg("--out")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Devnet {
            dir,
            nodes: (0..5).map(|_| None).collect(),
            api_ports: (0..4).map(|i| base + 2 * i + 1).collect(),
            spare_api_port: base + 25,
        }
    }

    /// Starts validator `i` from its own data folder.
    pub fn start_node(&mut self, i: usize) {
        self.spawn_node(i, &[]);
    }

    /// Starts validator `i` joining by state sync from the node on `peer_port`.
    pub fn start_node_synced(&mut self, i: usize, peer_port: u16) {
        self.spawn_node(
            i,
            &[
                "--sync-from".into(),
                format!("http://127.0.0.1:{peer_port}"),
            ],
        );
    }

    /// `quartier node --config validator-i/node.toml` plus `options`, its
    /// output in `validator-i.log`.
    fn spawn_node(&mut self, i: usize, options: &[String]) {
        let log = std::fs::File::create(self.dir.join(format!("validator-{i}.log"))).unwrap();
        let config = self.dir.join(format!("validator-{i}/node.toml"));
        let child = Command::new(EXE)
            .args(["node", "--config"])
            .arg(config)
            .args(options)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.nodes[i] = Some(child);
    }

    /// Kills validator `i` with SIGKILL, if it runs.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
