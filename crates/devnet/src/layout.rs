//! Lays out a local devnet: keys, the network genesis and one `node.toml` per
//! validator, on loopback ports.

use quartier_enclave::attestation::{Measurement, SimulatedAttestationService};
use quartier_ledger::{Genesis, SealedMarketPolicy, ShieldedPolicy};
use quartier_node::config::{
    ConfigError, NetworkGenesis, NodeConfig, Peer, invalid, io_error, write_key,
};
use quartier_types::{AccountId, Money, Price, RegionId, RegionParams};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// What to lay out.
#[derive(Clone, Debug)]
pub struct DevnetPlan {
    /// Number of validators.
    pub validators: usize,
    /// Slot length in milliseconds (the devnet accelerates time).
    pub slot_ms: u64,
    /// Gate after each slot in milliseconds.
    pub gate_ms: u64,
    /// First port: validator i listens on p2p `base + 2i` and API `base + 2i + 1`.
    pub base_port: u16,
    /// Heartbeat of an idle chain, in milliseconds.
    pub idle_block_ms: u64,
    /// Each validator's block retention in milliseconds (0: archive).
    pub block_retention_ms: u64,
    /// Each validator's snapshot interval in blocks.
    pub snapshot_every_blocks: u64,
    /// Slots a settlement stays in the state (`genesis.history_slots`).
    pub history_slots: u64,
    /// Privacy mode B: the enclave committee, or `None` for the open market.
    pub sealed: Option<SealedPlan>,
    /// Privacy mode A: the shielded pool's policy, or `None`.
    pub shielded: Option<ShieldedPolicy>,
    /// The validators' hosts: validator i listens on `hosts[i]` (loopback
    /// when the list is shorter), e.g. one network namespace or machine each.
    pub hosts: Vec<Ipv4Addr>,
    /// Validator seats laid out but not started, listed as candidates in
    /// the network genesis: governance can vote one in (its ports follow
    /// the enclaves', `base + 2·validators + 16 + 2j`).
    pub spare_validators: usize,
    /// Blocks per consensus epoch (`genesis.epoch_blocks`): a validator
    /// voted in or out signs, or stops, from the next boundary on.
    pub epoch_blocks: u64,
}

/// A mode B devnet's enclave committee.
#[derive(Clone, Copy, Debug)]
pub struct SealedPlan {
    /// Enclaves in the committee (each its own process).
    pub enclaves: usize,
    /// Signatures a report needs.
    pub threshold: u16,
    /// Slots per epoch key.
    pub epoch_slots: u64,
    /// The measurement governance allows at genesis (the enclave binary's).
    pub measurement: Measurement,
}

/// The devnet's audit report, in its folder: its host's auditor writes it,
/// every validator's API serves it at `/api/v1/audit`.
pub const AUDIT_REPORT: &str = "audit.json";

/// Where the files went.
#[derive(Clone, Debug)]
pub struct DevnetLayout {
    /// The network genesis file.
    pub genesis_file: PathBuf,
    /// One `node.toml` per validator.
    pub node_configs: Vec<PathBuf>,
    /// One `node.toml` per spare validator seat (not started).
    pub spare_configs: Vec<PathBuf>,
    /// The validators' API base URLs.
    pub api_urls: Vec<String>,
    /// The DSO's key file.
    pub dso_key: PathBuf,
    /// The utility's key file.
    pub utility_key: PathBuf,
    /// Mode B: one `enclave.toml` per enclave.
    pub enclave_configs: Vec<PathBuf>,
    /// Mode B: the enclaves' API base URLs.
    pub enclave_urls: Vec<String>,
    /// Where the host's auditor writes its report ([`AUDIT_REPORT`]).
    pub audit_report: PathBuf,
}

/// A fresh secret seed from the operating system's CSPRNG.
///
/// # Errors
/// [`ConfigError::Io`] if the operating system has no randomness to give.
pub fn random_seed() -> Result<[u8; 32], ConfigError> {
    quartier_client::random_seed().map_err(io_error(Path::new("the system's random generator")))
}

/// The account (public key) of a secret seed.
pub fn account_of(seed: &[u8; 32]) -> AccountId {
    AccountId(
        ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes(),
    )
}

fn new_key(dir: &Path, name: &str) -> Result<(PathBuf, AccountId), ConfigError> {
    let seed = random_seed()?;
    let path = dir.join(format!("{name}.key"));
    write_key(&path, &seed)?;
    Ok((path, account_of(&seed)))
}

fn write(path: &Path, text: &str) -> Result<(), ConfigError> {
    std::fs::write(path, text).map_err(io_error(path))
}

fn mkdir(path: &Path) -> Result<(), ConfigError> {
    std::fs::create_dir_all(path).map_err(io_error(path))
}

/// Writes keys, the network genesis and node configs under `dir`.
///
/// # Errors
/// [`ConfigError`] if a file can not be written (existing keys are never overwritten).
pub fn lay_out(dir: &Path, plan: &DevnetPlan) -> Result<DevnetLayout, ConfigError> {
    let keys = dir.join("keys");
    mkdir(&keys)?;
    let (dso_key, dso) = new_key(&keys, "dso")?;
    let (utility_key, utility) = new_key(&keys, "utility")?;
    let mut peers = Vec::new();
    let mut validators = Vec::new();
    let mut node_configs = Vec::new();
    let mut candidates = Vec::new();
    let mut spare_configs = Vec::new();
    for i in 0..plan.validators + plan.spare_validators {
        let spare = i >= plan.validators;
        let (key_file, account) = new_key(&keys, &format!("validator-{i}"))?;
        let host = plan.hosts.get(i).copied().unwrap_or(Ipv4Addr::LOCALHOST);
        let port = |offset: usize| {
            let slot = if spare { 2 * i + 16 } else { 2 * i };
            let p = usize::from(plan.base_port) + slot + offset;
            SocketAddr::from((host, u16::try_from(p).unwrap_or(u16::MAX)))
        };
        let (p2p, api) = (port(0), port(1));
        let peer = Peer {
            public_key: account.to_string(),
            p2p,
            api,
        };
        if spare {
            candidates.push(peer);
        } else {
            peers.push(peer);
            validators.push(account);
        }
        let node_dir = dir.join(format!("validator-{i}"));
        mkdir(&node_dir)?;
        let config = NodeConfig {
            key_file,
            genesis_file: dir.join("genesis.json"),
            data_dir: node_dir.join("data"),
            p2p_listen: p2p,
            api_listen: api,
            idle_block_ms: plan.idle_block_ms,
            block_retention_ms: plan.block_retention_ms,
            snapshot_every_blocks: plan.snapshot_every_blocks,
            audit_report: Some(dir.join(AUDIT_REPORT)),
        };
        let path = node_dir.join("node.toml");
        let text = toml::to_string(&config).map_err(|e| invalid(&path, e))?;
        write(&path, &text)?;
        if spare {
            spare_configs.push(path);
        } else {
            node_configs.push(path);
        }
    }
    let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)
        .map_err(|e| invalid(dir, e))?;
    let api_urls: Vec<String> = peers.iter().map(|p| format!("http://{}", p.api)).collect();
    let (sealed_market, enclave_configs, enclave_urls) = match plan.sealed {
        Some(sealed) => lay_out_enclaves(dir, plan, &sealed, &api_urls)?,
        None => (None, Vec::new(), Vec::new()),
    };
    let genesis = NetworkGenesis {
        ledger: Genesis {
            regions: vec![(RegionId(1), params)],
            slot_ms: plan.slot_ms,
            gate_ms: plan.gate_ms,
            // The utility's float for paying feed-in: 10 000 CHF.
            allocations: vec![(utility, Money::new(10_000 * 100_000_000))],
            sealed_market,
            shielded: plan.shielded,
            history_slots: plan.history_slots,
            // What a leaked role key can do before a vote: the utility
            // mints at most 100 000 CHF per 96 slots (a day of quarter
            // hours; the households' top-ups are 200 CHF each) and sets
            // a grid tariff of at most 5× the genesis one (cover for
            // feed-in follows the tariff); the DSO registers at most
            // 30 kWp per meter (the simulated households have 3 to 15)
            // and 50 MWp a day in all (`quartier bench chain` registers
            // 10 kWp for every other one of up to 10 000 meters).
            limits: quartier_ledger::Limits {
                mint_per_period: Some(Money::new(100_000 * 100_000_000)),
                period_slots: 96,
                max_pv_watts: Some(30_000),
                new_pv_watts_per_period: Some(50_000_000),
                max_grid_tariff: Some(Price::new(5 * 20_750)),
            },
            epoch_blocks: plan.epoch_blocks,
            ..Genesis::new("quartier-devnet", dso, utility, validators)
        },
        peers: peers.clone(),
        candidates,
    };
    let genesis_file = dir.join("genesis.json");
    let text = serde_json::to_string_pretty(&genesis).map_err(|e| invalid(&genesis_file, e))?;
    write(&genesis_file, &text)?;
    Ok(DevnetLayout {
        genesis_file,
        node_configs,
        spare_configs,
        api_urls,
        dso_key,
        utility_key,
        enclave_configs,
        enclave_urls,
        audit_report: dir.join(AUDIT_REPORT),
    })
}

type EnclaveLayout = (Option<SealedMarketPolicy>, Vec<PathBuf>, Vec<String>);

/// Mode B: the simulated attestation seed, one folder and `enclave.toml` per
/// enclave (API ports after the validators'), and the genesis policy.
fn lay_out_enclaves(
    dir: &Path,
    plan: &DevnetPlan,
    sealed: &SealedPlan,
    api_urls: &[String],
) -> Result<EnclaveLayout, ConfigError> {
    // One simulated TEE vendor per enclave up to three (standing in for,
    // say, Intel TDX, AMD SEV-SNP and Intel SGX), enclave i on vendor
    // i mod vendors; the committee must span two of them, and none may hold
    // t members where the numbers allow it.
    let vendor_count = sealed.enclaves.clamp(1, 3);
    let mut vendor_seeds = Vec::new();
    for v in 0..vendor_count {
        let file = dir
            .join("keys")
            .join(format!("simulated-attestation-{v}.seed"));
        let seed = random_seed()?;
        write_key(&file, &seed)?;
        vendor_seeds.push((file, seed));
    }
    let roots: Vec<_> = vendor_seeds
        .iter()
        .map(|(_, seed)| SimulatedAttestationService::new(*seed).root())
        .collect();
    let mut per_vendor = vec![0usize; vendor_count];
    for i in 0..sealed.enclaves {
        per_vendor[i % vendor_count] += 1;
    }
    let vendors = quartier_enclave::attestation::VendorPolicy {
        min_vendors: u16::try_from(vendor_count.min(2)).unwrap_or(2),
        no_vendor_holds_threshold: per_vendor
            .iter()
            .all(|c| *c < usize::from(sealed.threshold)),
    };
    let listen: Vec<SocketAddr> = (0..sealed.enclaves)
        .map(|i| {
            let p = usize::from(plan.base_port) + 2 * plan.validators + i;
            SocketAddr::from((Ipv4Addr::LOCALHOST, u16::try_from(p).unwrap_or(u16::MAX)))
        })
        .collect();
    let urls: Vec<String> = listen.iter().map(|a| format!("http://{a}")).collect();
    let mut configs = Vec::new();
    for (i, addr) in listen.iter().enumerate() {
        let enclave_dir = dir.join(format!("enclave-{i}"));
        mkdir(&enclave_dir)?;
        let secret_file = enclave_dir.join("simulated-platform.secret");
        write_key(&secret_file, &random_seed()?)?;
        let config = quartier_enclave_host::EnclaveConfigFile {
            nodes: api_urls.to_vec(),
            listen: *addr,
            peers: urls.clone(),
            state_file: enclave_dir.join("state.sealed"),
            simulated_platform_secret_file: secret_file,
            simulated_attestation_seed_file: vendor_seeds[i % vendor_count].0.clone(),
            simulated_vendor_roots: roots.clone(),
            vendor_policy: vendors,
            committee_size: sealed.enclaves,
        };
        let path = enclave_dir.join("enclave.toml");
        let text = toml::to_string(&config).map_err(|e| invalid(&path, e))?;
        write(&path, &text)?;
        configs.push(path);
    }
    let policy = SealedMarketPolicy {
        attestation: roots,
        vendors,
        measurements: vec![sealed.measurement],
        threshold: sealed.threshold,
        epoch_slots: sealed.epoch_slots,
        // The devnet's genesis seats its first committee once its enclaves
        // all voted (the prosumers' vote in advance); a later one needs
        // `quartier gov propose '{"seat_committee":"<group key>"}'`.
        first_committee: quartier_ledger::FirstCommittee::ByItsMembers,
    };
    Ok((Some(policy), configs, urls))
}

/// Starts one `quartier enclave run` process per enclave of `layout`,
/// logging to `dir/enclave-N.log`.
///
/// # Errors
/// [`ConfigError::Io`] if a log can not be created or a process not started.
pub fn spawn_enclaves(
    exe: &Path,
    dir: &Path,
    layout: &DevnetLayout,
) -> Result<Vec<std::process::Child>, ConfigError> {
    let mut children = Vec::new();
    for (i, config) in layout.enclave_configs.iter().enumerate() {
        children.push(spawn_enclave(exe, dir, i, config)?);
    }
    Ok(children)
}

/// Starts enclave `i` with `config`, appending to `dir/enclave-i.log`.
///
/// # Errors
/// [`ConfigError::Io`] if the log can not be opened or the process not started.
pub fn spawn_enclave(
    exe: &Path,
    dir: &Path,
    i: usize,
    config: &Path,
) -> Result<std::process::Child, ConfigError> {
    spawn_supervised(
        exe,
        &["enclave", "run"],
        config,
        &dir.join(format!("enclave-{i}.log")),
    )
}

/// Starts `exe args… --exit-on-stdin-close --config config`, appending its
/// output to `log_path`. Its standard input is a pipe from this process: it
/// stops when this process ends, however it ends.
fn spawn_supervised(
    exe: &Path,
    args: &[&str],
    config: &Path,
    log_path: &Path,
) -> Result<std::process::Child, ConfigError> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(io_error(log_path))?;
    std::process::Command::new(exe)
        .args(args)
        .args(["--exit-on-stdin-close", "--config"])
        .arg(config)
        .stdin(std::process::Stdio::piped())
        .stdout(log.try_clone().map_err(io_error(log_path))?)
        .stderr(log)
        .spawn()
        .map_err(io_error(log_path))
}

/// Starts one `quartier node` process per validator of `layout`, logging to
/// `dir/validator-N.log`; `exe` is the `quartier` binary.
///
/// # Errors
/// [`ConfigError::Io`] if a log can not be created or a process not started.
pub fn spawn_nodes(
    exe: &Path,
    dir: &Path,
    layout: &DevnetLayout,
) -> Result<Vec<std::process::Child>, ConfigError> {
    layout
        .node_configs
        .iter()
        .enumerate()
        .map(|(i, config)| spawn_node(exe, dir, i, config))
        .collect()
}

/// Starts validator `i` with `config`, appending to `dir/validator-i.log`.
/// Its standard input is a pipe from this process: it stops when this
/// process ends, however it ends.
///
/// # Errors
/// [`ConfigError::Io`] if the log can not be opened or the process not started.
pub fn spawn_node(
    exe: &Path,
    dir: &Path,
    i: usize,
    config: &Path,
) -> Result<std::process::Child, ConfigError> {
    spawn_supervised(
        exe,
        &["node"],
        config,
        &dir.join(format!("validator-{i}.log")),
    )
}
