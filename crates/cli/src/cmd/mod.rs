//! One module per command; this one holds the command list, its dispatch and
//! what several commands share.

mod audit;
mod bench;
mod clear;
mod devnet;
mod enclave;
mod footprint;
mod genesis;
mod gov;
mod keygen;
mod node;
mod plan;
mod sim;
mod verify_slot;
mod wallet;

use bench::{BenchCommand, bench_chain};
use clap::Subcommand;
use clear::clear;
use devnet::devnet;
use enclave::{EnclaveCommand, enclave_run, measure};
use genesis::genesis;
use gov::GovCommand;
use keygen::keygen;
use node::node;
use plan::{HouseholdArgs, PlanArgs};
use std::path::PathBuf;
use verify_slot::verify_slot;
use wallet::{WalletAction, WalletCommand, shielded_wallet, wallet_receipts};

/// A command of the `quartier` binary.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Clear one slot's book: JSON request in, JSON clearing out.
    ///
    /// Exit code 2 on bad input, with one line on stderr naming the field or
    /// order at fault and nothing on stdout.
    Clear {
        /// The request file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Pretty-print the JSON output.
        #[arg(long)]
        pretty: bool,
    },
    /// Write a new Ed25519 key file (0600) and print its public key.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Lay out keys, a network genesis and node configs for a local network.
    Genesis {
        /// Folder to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Run one validator.
    Node {
        /// The node's config file (`node.toml`).
        #[arg(long)]
        config: PathBuf,
        /// Join from this peer's state (its API URL) instead of replaying
        /// from genesis: for a new node, or one down longer than its peers
        /// keep blocks. Needs an empty data folder; the peer's bundle is
        /// checked against the genesis validators' signatures.
        #[arg(long)]
        sync_from: Option<String>,
        /// Stop when standard input closes: a supervisor (`quartier devnet`)
        /// holds the other end, so its validators stop when it does, even
        /// when it is killed.
        #[arg(long)]
        exit_on_stdin_close: bool,
    },
    /// Re-run a settled slot's clearing from a node's public data and compare.
    ///
    /// Prints MATCH, or the first difference and exits with code 1.
    VerifySlot {
        /// The node's API, e.g. http://127.0.0.1:7401.
        #[arg(long)]
        node: String,
        /// The region.
        #[arg(long)]
        region: u32,
        /// The slot.
        #[arg(long)]
        slot: u64,
    },
    /// Simulate a neighbourhood trading in the market offline (no chain).
    ///
    /// Prints a table (or JSON) of energy, self-sufficiency, prices and every
    /// household's bill against its utility-only bill.
    Sim(sim::SimArgs),
    /// Attack a run's public data and score the attacks against its truth.
    ///
    /// Prints, per view, how often an order is linked to its household and
    /// to the same household's previous order, the anonymity sets and the
    /// error of reconstructed load profiles; on a mode A devnet also what
    /// each cryptographic attack found on the published bytes (`--json`:
    /// `{"reports": […], "cryptographic": {…} or null}`).
    Audit(audit::AuditArgs),
    /// Measure things and print a table.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Privacy mode B's auctioneer enclave (simulated TEE).
    #[command(subcommand)]
    Enclave(EnclaveCommand),
    /// A household's view of its own account.
    #[command(subcommand)]
    Wallet(WalletCommand),
    /// The validators' governance: open proposals, proposing, voting.
    #[command(subcommand)]
    Gov(GovCommand),
    /// Start a local devnet: N validators as separate processes on loopback,
    /// and one meter agent per simulated household trading on it.
    Devnet {
        /// Folder for keys, genesis and data (default: a fresh temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        households: HouseholdArgs,
        /// Restart a validator that exits (by default the devnet reports it
        /// and goes on with the others).
        #[arg(long)]
        restart: bool,
    },
}

/// Runs `command`.
pub(crate) fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Clear { file, pretty } => clear(file, pretty),
        Command::Keygen { out } => keygen(&out).map_err(Failure::BadInput),
        Command::Genesis { out, plan } => genesis(&out, &plan).map_err(Failure::BadInput),
        Command::Node {
            config,
            sync_from,
            exit_on_stdin_close,
        } => {
            if exit_on_stdin_close {
                exit_when_stdin_closes();
            }
            node(&config, sync_from.as_deref()).map_err(Failure::Internal)
        }
        Command::Devnet {
            dir,
            plan,
            households,
            restart,
        } => devnet(dir, &plan, &households, restart).map_err(Failure::Internal),
        Command::VerifySlot { node, region, slot } => verify_slot(&node, region, slot),
        Command::Sim(args) => args.run(),
        Command::Audit(args) => args.run(),
        Command::Bench(BenchCommand::Chain {
            meters,
            slots,
            timeout,
            plan,
        }) => bench_chain(meters, slots, timeout, &plan).map_err(Failure::Internal),
        Command::Bench(BenchCommand::Footprint {
            slots,
            plan,
            households,
        }) => footprint::run(slots, &plan, &households).map_err(Failure::Internal),
        Command::Enclave(EnclaveCommand::Measure { binary }) => measure(binary),
        Command::Gov(GovCommand::Status { node }) => gov::status(&node).map_err(Failure::Internal),
        Command::Gov(GovCommand::Propose { node, key, change }) => {
            gov::propose(&node, &key, &change)
                .map(|_| ())
                .map_err(Failure::BadInput)
        }
        Command::Gov(GovCommand::Vote {
            node,
            key,
            proposal,
            no,
        }) => gov::vote(&node, &key, proposal, !no).map_err(Failure::BadInput),
        Command::Wallet(WalletCommand::Balance { wallet }) => {
            shielded_wallet(&wallet, WalletAction::Balance)
        }
        Command::Wallet(WalletCommand::History { wallet }) => {
            shielded_wallet(&wallet, WalletAction::History)
        }
        Command::Wallet(WalletCommand::Shield {
            wallet,
            from,
            rappen,
        }) => shielded_wallet(&wallet, WalletAction::Shield { from, rappen }),
        Command::Wallet(WalletCommand::Unshield {
            wallet,
            meter,
            region,
            to,
            rappen,
        }) => shielded_wallet(
            &wallet,
            WalletAction::Unshield {
                meter,
                region,
                to,
                rappen,
            },
        ),
        Command::Wallet(WalletCommand::Receipts {
            key,
            node,
            enclave,
            region,
            last,
        }) => wallet_receipts(&key, &node, &enclave, region, last),
        Command::Enclave(EnclaveCommand::Run {
            config,
            exit_on_stdin_close,
        }) => {
            if exit_on_stdin_close {
                exit_when_stdin_closes();
            }
            enclave_run(&config).map_err(Failure::Internal)
        }
    }
}

/// A failure with the exit code it maps to.
pub(crate) enum Failure {
    /// The input was bad: exit code 2.
    BadInput(anyhow::Error),
    /// Something else failed (e.g. writing the output): exit code 1.
    Internal(anyhow::Error),
}

/// Stops the benchmark's validators however the benchmark ends.
pub(crate) struct Nodes(Vec<std::process::Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A devnet of a plan started for one measurement, in a fresh temporary
/// folder: its validators and enclaves run until it is dropped.
pub(crate) struct ScratchNet {
    /// The folder (removed and made anew at the start).
    pub(crate) dir: std::path::PathBuf,
    /// What was laid out there.
    pub(crate) layout: quartier_devnet::layout::DevnetLayout,
    /// The validators' processes.
    pub(crate) nodes: Nodes,
    /// The enclaves' processes (none without mode B).
    pub(crate) enclaves: Nodes,
    /// A client of each validator's API.
    pub(crate) apis: Vec<quartier_client::NodeClient>,
}

impl ScratchNet {
    /// Lays out `plan` in `quartier-{name}-{pid}` under the temporary folder
    /// and starts its validators and enclaves from this binary.
    ///
    /// # Errors
    /// If the plan is invalid or a process does not start.
    pub(crate) fn start(name: &str, plan: &plan::PlanArgs) -> anyhow::Result<ScratchNet> {
        use anyhow::Context as _;
        let dir = std::env::temp_dir().join(format!("quartier-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = quartier_devnet::layout::lay_out(&dir, &plan.plan()?)?;
        let exe = std::env::current_exe().context("locating the quartier binary")?;
        let nodes = Nodes(quartier_devnet::layout::spawn_nodes(&exe, &dir, &layout)?);
        let enclaves = Nodes(quartier_devnet::layout::spawn_enclaves(
            &exe, &dir, &layout,
        )?);
        let apis = api_clients(&layout)?;
        Ok(ScratchNet {
            dir,
            layout,
            nodes,
            enclaves,
            apis,
        })
    }
}

/// A client of each validator's API in `layout`.
///
/// # Errors
/// If an API address is not a valid URL.
pub(crate) fn api_clients(
    layout: &quartier_devnet::layout::DevnetLayout,
) -> anyhow::Result<Vec<quartier_client::NodeClient>> {
    Ok(layout
        .api_urls
        .iter()
        .map(|u| quartier_client::NodeClient::new(u))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Writes `value` as JSON to `path`, creating the folder.
pub(crate) fn write_json(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_vec(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads JSON of type `T` from `path`.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The process's peak resident memory, from `/proc/self/status` (Linux).
pub(crate) fn peak_memory() -> String {
    peak_memory_at("/proc/self/status")
}

/// A running child's peak resident memory, from `/proc/PID/status` (Linux).
pub(crate) fn peak_memory_of(pid: u32) -> String {
    peak_memory_at(&format!("/proc/{pid}/status"))
}

pub(crate) fn peak_memory_at(status: &str) -> String {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Waits until every validator of `apis` has finalized a block (at most two
/// minutes); how long that took.
#[allow(clippy::disallowed_methods)] // a supervisor reads the wall clock
pub(crate) fn first_blocks(
    apis: &[quartier_client::NodeClient],
) -> anyhow::Result<std::time::Duration> {
    let up = std::time::Instant::now();
    let finalized = |a: &quartier_client::NodeClient| {
        a.get("/api/v1/status")
            .is_ok_and(|(_, s)| s["height"].as_u64().unwrap_or(0) >= 1)
    };
    while !apis.iter().all(finalized) {
        anyhow::ensure!(up.elapsed().as_secs() < 120, "validators did not start");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(up.elapsed())
}

/// The Ed25519 key in the key file at `path`.
pub(crate) fn signing_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    Ok(ed25519_dalek::SigningKey::from_bytes(
        &quartier_node::config::read_key(path)?,
    ))
}

pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Ends this process when its standard input reaches its end: the
/// supervisor that holds the pipe's other end stopped (or was killed). What
/// a node committed is on disk already; it stops as it would on a crash.
pub(crate) fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        use std::io::Read as _;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        eprintln!("standard input closed: the supervisor is gone, stopping");
        std::process::exit(0);
    });
}
