//! Node configuration: the node's own file and the network's genesis.

use quartier_ledger::Genesis;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A validator in the network genesis: its key and where to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Ed25519 public key, 64 hex digits (consensus, p2p and ledger identity).
    pub public_key: String,
    /// p2p address.
    pub p2p: SocketAddr,
    /// HTTP API address.
    pub api: SocketAddr,
}

/// Everything every node of one chain must agree on: the ledger genesis and
/// the permissioned validator set with addresses (no discovery).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkGenesis {
    /// The ledger's genesis document.
    pub ledger: Genesis,
    /// The validators, in the order of `ledger.validators`.
    pub peers: Vec<Peer>,
    /// Validator seats governance may vote in later, with their addresses
    /// (the validators connect to one once it is voted in; a validator not
    /// listed here needs its address added to this file on every node).
    #[serde(default)]
    pub candidates: Vec<Peer>,
}

impl NetworkGenesis {
    /// Every validator's and candidate's key and p2p address.
    pub fn address_book(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter().chain(&self.candidates)
    }
}

/// One node's local settings (`node.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The validator's key file (written by `quartier keygen`).
    pub key_file: PathBuf,
    /// The network genesis (JSON).
    pub genesis_file: PathBuf,
    /// Where the node keeps its block log and consensus archives.
    pub data_dir: PathBuf,
    /// p2p listen address.
    pub p2p_listen: SocketAddr,
    /// HTTP API listen address.
    pub api_listen: SocketAddr,
    /// Milliseconds after which an idle leader proposes an empty block anyway
    /// (a heartbeat); with transactions or a settlement due it proposes at once.
    #[serde(default = "default_idle_block_ms")]
    pub idle_block_ms: u64,
    /// Milliseconds of finalized blocks kept behind the tip (by block time);
    /// older ones are deleted once a state snapshot follows them. 0 keeps
    /// every block (an archive node). A validator down for longer than this
    /// can not catch up from a pruning peer.
    #[serde(default = "default_block_retention_ms")]
    pub block_retention_ms: u64,
    /// A state snapshot goes with every this-many-th finalized block: a
    /// restart re-executes fewer, and blocks are pruned in steps of it.
    #[serde(default = "default_snapshot_every_blocks")]
    pub snapshot_every_blocks: u64,
    /// An auditor's report to serve at `/api/v1/audit` for the dashboard (a
    /// devnet's host writes one from its simulated households' truth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_report: Option<PathBuf>,
}

fn default_snapshot_every_blocks() -> u64 {
    crate::application::DEFAULT_SNAPSHOT_EVERY
}

fn default_idle_block_ms() -> u64 {
    10_000
}

/// One day.
fn default_block_retention_ms() -> u64 {
    86_400_000
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's contents are invalid.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(io_error(path))
}

/// Maps an I/O error on `path` to [`ConfigError::Io`].
pub fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ConfigError + '_ {
    move |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// [`ConfigError::Invalid`] for `path`.
pub fn invalid(path: &Path, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl NodeConfig {
    /// Loads and validates a `node.toml`; relative paths are taken from its folder.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let mut config: NodeConfig = toml::from_str(&read(path)?).map_err(|e| invalid(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.key_file,
            &mut config.genesis_file,
            &mut config.data_dir,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }
}

impl NetworkGenesis {
    /// Loads and validates a network genesis.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<NetworkGenesis, ConfigError> {
        let genesis: NetworkGenesis =
            serde_json::from_str(&read(path)?).map_err(|e| invalid(path, e))?;
        genesis.ledger.validate().map_err(|e| invalid(path, e))?;
        let keys: Vec<String> = genesis
            .ledger
            .validators
            .iter()
            .map(|v| v.to_string())
            .collect();
        let peers: Vec<String> = genesis.peers.iter().map(|p| p.public_key.clone()).collect();
        if keys != peers {
            return Err(invalid(path, "peers must list ledger.validators in order"));
        }
        let book: std::collections::BTreeSet<&String> =
            genesis.address_book().map(|p| &p.public_key).collect();
        if book.len() != genesis.peers.len() + genesis.candidates.len() {
            return Err(invalid(
                path,
                "a candidate is listed twice or is a validator",
            ));
        }
        Ok(genesis)
    }
}

/// Reads a key file: 64 hex digits of an Ed25519 secret seed.
///
/// # Errors
/// [`ConfigError`] if the file is unreadable or not a key.
pub fn read_key(path: &Path) -> Result<[u8; 32], ConfigError> {
    let text = read(path)?;
    let bytes = hex::decode(text.trim()).map_err(|e| invalid(path, e))?;
    bytes
        .try_into()
        .map_err(|_| invalid(path, "a key is 32 bytes (64 hex digits)"))
}

/// Writes a key file readable by its owner only (0600).
///
/// # Errors
/// [`ConfigError::Io`] if it can not be written.
pub fn write_key(path: &Path, seed: &[u8; 32]) -> Result<(), ConfigError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(hex::encode(seed).as_bytes())
        .map_err(io_error(path))?;
    file.write_all(b"\n").map_err(io_error(path))
}
