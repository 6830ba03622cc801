//! `quartier`: the command line of the quartier market.
//!
//! Argument parsing and exit codes only; the work is done by library crates.

mod footprint;
mod gov;

use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// A privacy-preserving peer-to-peer market for neighbourhood solar power.
#[derive(Parser)]
#[command(name = "quartier", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Sim {
        /// Households in the neighbourhood.
        #[arg(long, default_value_t = 37)]
        households: u32,
        /// How many of them have PV.
        #[arg(long, default_value_t = 27)]
        prosumers: u32,
        /// Days to simulate.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Day of the year the run starts on (1 is 1 January).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=365))]
        start_day: u32,
        /// Seed of every random draw: the same seed gives the same report.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Bidding strategy: fixed, random, time-of-day, adaptive or mixed.
        #[arg(long, default_value = "mixed")]
        strategy: quartier_meter::StrategyKind,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write `slots.csv` and `households.csv` into this folder.
        #[arg(long)]
        csv_out: Option<PathBuf>,
        /// How orders reach the chain in the written run (`--write-run`).
        #[arg(long, default_value = "transparent")]
        privacy: quartier_sim::PrivacyMode,
        /// Write the run for `quartier audit`: `public.json` (what the chain
        /// shows) and `truth.json` (which household placed which order).
        #[arg(long)]
        write_run: Option<PathBuf>,
        /// Order in whole lots of this many Wh, carrying the rounding to
        /// later slots (0: every reading exactly).
        #[arg(long, default_value_t = 0)]
        lot_wh: u64,
        /// Which flows a household orders: `net` (one order of what it draws
        /// or feeds in) or `gross` (a buy of its consumption and a sell of
        /// its production: mode A's rule).
        #[arg(long, default_value = "net")]
        metering: MeteringArg,
    },
    /// Attack a run's public data and score the attacks against its truth.
    ///
    /// Prints, per view, how often an order is linked to its household and
    /// to the same household's previous order, the anonymity sets and the
    /// error of reconstructed load profiles; on a mode A devnet also what
    /// each cryptographic attack found on the published bytes (`--json`:
    /// `{"reports": […], "cryptographic": {…} or null}`).
    Audit {
        /// A folder written by `quartier sim --write-run`.
        #[arg(long, required_unless_present = "node", conflicts_with = "node")]
        run: Option<PathBuf>,
        /// Or a devnet node's API, e.g. http://127.0.0.1:7401 (with `--truth`
        /// naming the devnet's `meters.json`).
        #[arg(long, requires = "truth")]
        node: Option<String>,
        /// The ground truth: RUN/truth.json by default; with `--node`, the
        /// devnet's `meters.json`.
        #[arg(long)]
        truth: Option<PathBuf>,
        /// With `--node`: at most this many slots from the manifest's first.
        #[arg(long, default_value_t = 96)]
        slots: u64,
        /// With `--node` on a mode B chain: enclave APIs (comma-separated)
        /// whose published receipts the insider also reads.
        #[arg(long, value_delimiter = ',', requires = "node")]
        enclave: Vec<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also write the results as an SVG chart.
        #[arg(long)]
        svg: Option<PathBuf>,
    },
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

#[derive(Subcommand)]
enum WalletCommand {
    /// Mode A: scan the whole shielded pool locally for this wallet's
    /// outputs (the node never sees the wallet's keys) and print its balance.
    Balance {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
    },
    /// Mode A: every output this wallet received (top-ups, change, an
    /// order's proceeds or refund) and whether it is spent.
    History {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
    },
    /// Mode A: move transparent IOUs of an account into a new output of
    /// this wallet (the account and the amount are public).
    Shield {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
        /// The paying account's key file.
        #[arg(long)]
        from: PathBuf,
        /// The amount in Rappen (1 CHF = 100).
        #[arg(long)]
        rappen: u64,
    },
    /// Mode A: pay out of this wallet to a transparent account, from a
    /// one-time signer (change returns to the wallet). The household's meter
    /// authorises it anonymously among its region's meters, once a slot.
    Unshield {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
        /// The household's meter key file (a devnet writes
        /// `meters/household-N.key`).
        #[arg(long)]
        meter: PathBuf,
        /// The meter's region.
        #[arg(long, default_value_t = 1)]
        region: u32,
        /// The receiving account (hex public key).
        #[arg(long)]
        to: quartier_types::AccountId,
        /// The amount in Rappen (1 CHF = 100).
        #[arg(long)]
        rappen: u64,
    },
    /// Mode B: fetch the receipts of the last reported slots from an
    /// enclave, check each slot's receipts against the root the committee
    /// signed on chain, and open this wallet's own (its receipt keys are
    /// derived from the wallet key). Exit code 1 if a root does not match.
    Receipts {
        /// The wallet's (meter's) key file.
        #[arg(long)]
        key: PathBuf,
        /// A node's API, e.g. http://127.0.0.1:7401.
        #[arg(long)]
        node: String,
        /// Enclave APIs to ask (the first that has the slot answers).
        #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
        enclave: Vec<String>,
        /// The region.
        #[arg(long, default_value_t = 1)]
        region: u32,
        /// How many of the latest reported slots to check.
        #[arg(long, default_value_t = 96)]
        last: usize,
    },
}

/// A mode A wallet and the node it reads.
#[derive(clap::Args)]
struct ShieldedWalletArgs {
    /// The wallet's seed file (32 secret bytes, hex: `quartier keygen`
    /// writes one; a devnet writes `wallets/household-N.key`).
    #[arg(long)]
    seed: PathBuf,
    /// A node's API, e.g. http://127.0.0.1:7401.
    #[arg(long)]
    node: String,
}

#[derive(Subcommand)]
enum GovCommand {
    /// The validator set, the role keys, the limits and every open
    /// proposal with its tally and the votes it still needs.
    Status {
        /// A node's API, e.g. http://127.0.0.1:7401.
        #[arg(long)]
        node: String,
    },
    /// Propose a change as a validator; prints the proposal's id.
    Propose {
        /// A node's API.
        #[arg(long)]
        node: String,
        /// The validator's key file.
        #[arg(long)]
        key: PathBuf,
        /// The change as JSON, e.g. '{"add":"<hex key>"}',
        /// '{"rotate_key":{"authority":"utility","from":"<hex>","key":"<hex>"}}',
        /// '{"freeze":{"authority":"utility","key":"<hex>"}}',
        /// '{"approve_mint":100000000}'.
        #[arg(long)]
        change: String,
    },
    /// Vote on a proposal as a validator (yes unless `--no`).
    Vote {
        /// A node's API.
        #[arg(long)]
        node: String,
        /// The validator's key file.
        #[arg(long)]
        key: PathBuf,
        /// The proposal's id.
        #[arg(long)]
        proposal: u64,
        /// Vote no.
        #[arg(long)]
        no: bool,
    },
}

#[derive(Subcommand)]
enum EnclaveCommand {
    /// Run one auctioneer enclave (simulated TEE) and its host.
    Run {
        /// The enclave's config file (`enclave.toml`, written by `quartier devnet`).
        #[arg(long)]
        config: PathBuf,
        /// Stop when standard input closes (see `quartier node`).
        #[arg(long)]
        exit_on_stdin_close: bool,
    },
    /// Print the measurement (SHA-256, hex) of the enclave binary: this
    /// executable, or the file given. Build reproducibly first (README,
    /// "Reproducing the enclave measurement").
    Measure {
        /// The binary to measure (default: this executable).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Start a private devnet, load it with meters and orders, print what it did.
    Chain {
        /// Meters to register; each places one order per slot.
        #[arg(long, default_value_t = 1_000)]
        meters: usize,
        /// Slots of orders.
        #[arg(long, default_value_t = 3)]
        slots: u64,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Run a devnet with its households and print what each validator
    /// process holds and spends: resident memory, CPU, disk and bytes sent.
    Footprint {
        /// Slots of trading to measure over (after enrolment).
        #[arg(long, default_value_t = 10)]
        slots: u64,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        households: HouseholdArgs,
    },
}

/// The shape of a local network.
#[derive(clap::Args)]
struct PlanArgs {
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Slot length in seconds (the devnet accelerates 15-minute slots).
    #[arg(long, default_value_t = 10)]
    slot_seconds: u64,
    /// First port; validator i uses base + 2i (p2p) and base + 2i + 1 (API).
    #[arg(long, default_value_t = 7400)]
    base_port: u16,
    /// An idle chain still makes a block this often (milliseconds).
    #[arg(long, default_value_t = 2_000)]
    idle_block_ms: u64,
    /// How long each validator keeps finalized blocks (milliseconds of block
    /// time behind the tip; 0: every block, an archive node).
    #[arg(long, default_value_t = 86_400_000)]
    block_retention_ms: u64,
    /// How many slots a settlement (every order and trade) stays in the
    /// chain's state (0: forever). 2 880 is 30 days of 15-minute slots.
    #[arg(long, default_value_t = 2_880)]
    history_slots: u64,
    /// A validator snapshots its state every this many blocks (and prunes
    /// blocks in steps of it).
    #[arg(long, default_value_t = 1_024, value_parser = clap::value_parser!(u64).range(1..))]
    snapshot_every_blocks: u64,
    /// How orders are placed: `transparent` (open orders), `shielded`
    /// (privacy mode A: ring-signed orders funded from a shielded pool) or
    /// `enclave` (privacy mode B: sealed orders cleared by an enclave
    /// committee).
    #[arg(long, value_enum, default_value_t = Privacy::Transparent)]
    privacy: Privacy,
    /// Mode A: members of every funds ring (the spent output and its decoys).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(2..=255))]
    ring_size: u16,
    /// Mode B: enclaves in the committee, each its own process (t = n/2 + 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=16))]
    enclaves: u16,
    /// The validators' IPv4 addresses, comma-separated (validator i listens
    /// on the i-th; loopback for the rest): one host or namespace each.
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<std::net::Ipv4Addr>,
    /// Validator seats laid out but not started (`validator-N…`, after the
    /// validators): the network knows their addresses, and `quartier gov`
    /// can vote one in; start it with `quartier node --sync-from`.
    #[arg(long, default_value_t = 1)]
    spare_validators: usize,
    /// Blocks per consensus epoch: a validator voted in or out signs, or
    /// stops, from the next epoch boundary on (0: one epoch, the genesis
    /// validators sign for good; a vote moves only the governance votes).
    #[arg(long, default_value_t = 64)]
    epoch_blocks: u64,
}

/// Which flows a simulated household orders (`quartier_meter::metering`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MeteringArg {
    /// One order of the net flow.
    Net,
    /// A buy of the consumption and a sell of the production.
    Gross,
}

impl From<MeteringArg> for quartier_meter::metering::Metering {
    fn from(m: MeteringArg) -> Self {
        match m {
            MeteringArg::Net => quartier_meter::metering::Metering::Net,
            MeteringArg::Gross => quartier_meter::metering::Metering::Gross,
        }
    }
}

/// The devnet's privacy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Privacy {
    /// Open orders: price and amount public.
    Transparent,
    /// Privacy mode A: shielded originators (stealth addresses, ring signatures).
    Shielded,
    /// Privacy mode B: sealed orders, simulated-TEE enclave committee.
    Enclave,
}

impl PlanArgs {
    fn plan(&self) -> anyhow::Result<quartier_node::devnet::DevnetPlan> {
        use anyhow::Context as _;
        let sealed = match self.privacy {
            Privacy::Transparent | Privacy::Shielded => None,
            Privacy::Enclave => {
                // The enclaves run this binary: allow its measurement at genesis.
                let exe = std::env::current_exe().context("locating the quartier binary")?;
                let bytes =
                    std::fs::read(&exe).with_context(|| format!("measuring {}", exe.display()))?;
                Some(quartier_node::devnet::SealedPlan {
                    enclaves: usize::from(self.enclaves),
                    threshold: self.enclaves / 2 + 1,
                    epoch_slots: 4,
                    measurement: quartier_enclave::attestation::Measurement::of_binary(&bytes),
                })
            }
        };
        Ok(quartier_node::devnet::DevnetPlan {
            validators: self.validators,
            slot_ms: self.slot_seconds * 1000,
            gate_ms: self.slot_seconds * 200,
            base_port: self.base_port,
            idle_block_ms: self.idle_block_ms,
            block_retention_ms: self.block_retention_ms,
            history_slots: self.history_slots,
            snapshot_every_blocks: self.snapshot_every_blocks,
            sealed,
            hosts: self.hosts.clone(),
            spare_validators: self.spare_validators,
            epoch_blocks: self.epoch_blocks,
            shielded: (self.privacy == Privacy::Shielded).then_some(
                quartier_ledger::ShieldedPolicy {
                    ring_size: self.ring_size,
                },
            ),
        })
    }
}

/// The simulated households of a devnet.
#[derive(clap::Args)]
struct HouseholdArgs {
    /// Households with a meter agent (0: none).
    #[arg(long, default_value_t = 37)]
    households: u32,
    /// How many of them have PV.
    #[arg(long, default_value_t = 27)]
    prosumers: u32,
    /// Seed of the households, their keys and their bids.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bidding strategy: fixed, random, time-of-day, adaptive or mixed.
    #[arg(long, default_value = "mixed")]
    strategy: quartier_meter::StrategyKind,
    /// Simulated day of the year (1-366) of the first slot, which starts at 06:00.
    #[arg(long, default_value_t = 172, value_parser = clap::value_parser!(u64).range(1..=366))]
    start_day: u64,
}

impl HouseholdArgs {
    fn plan(&self) -> quartier_node::meters::FleetPlan {
        quartier_node::meters::FleetPlan {
            households: self.households,
            prosumers: self.prosumers,
            seed: self.seed,
            strategy: self.strategy,
            start_interval: (self.start_day - 1) * 96 + 6 * 4,
            // 200 CHF each.
            top_up: quartier_types::Money::new(200 * 100_000_000),
        }
    }
}

/// A failure with the exit code it maps to.
enum Failure {
    /// The input was bad: exit code 2.
    BadInput(anyhow::Error),
    /// Something else failed (e.g. writing the output): exit code 1.
    Internal(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
        Command::Sim {
            households,
            prosumers,
            days,
            start_day,
            seed,
            strategy,
            json,
            csv_out,
            privacy,
            write_run,
            lot_wh,
            metering,
        } => {
            let plan = quartier_sim::SimPlan {
                households,
                prosumers,
                days,
                start_day,
                seed,
                strategy,
                params: quartier_sim::default_params(),
                lot_wh,
                metering: metering.into(),
            };
            let write_run = write_run.map(|dir| (dir, privacy));
            sim(&plan, json, csv_out, write_run)
        }
        Command::Audit {
            run,
            node,
            truth,
            slots,
            enclave,
            json,
            svg,
        } => {
            let source = match (run, node, truth) {
                (Some(run), _, truth) => AuditSource::Run { run, truth },
                (None, Some(node), Some(manifest)) => AuditSource::Node {
                    node,
                    enclaves: enclave,
                    manifest,
                    slots,
                },
                _ => unreachable!("clap requires --run or --node with --truth"),
            };
            audit(source, json, svg)
        }
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn clear(file: Option<PathBuf>, pretty: bool) -> Result<(), Failure> {
    let input = read_input(file).map_err(Failure::BadInput)?;
    let response = quartier_auction::json::clear_json(&input)
        .map_err(|e| Failure::BadInput(anyhow::Error::new(e)))?;
    let mut out = if pretty {
        serde_json::to_vec_pretty(&response)
    } else {
        serde_json::to_vec(&response)
    }
    .map_err(|e| Failure::Internal(e.into()))?;
    out.push(b'\n');
    std::io::stdout()
        .lock()
        .write_all(&out)
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing stdout")))
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let seed = quartier_node::devnet::random_seed()?;
    quartier_node::config::write_key(out, &seed)?;
    println!("{}", quartier_node::devnet::account_of(&seed));
    Ok(())
}

fn genesis(out: &std::path::Path, plan: &PlanArgs) -> anyhow::Result<()> {
    let layout = quartier_node::devnet::lay_out(out, &plan.plan()?)?;
    println!("genesis: {}", layout.genesis_file.display());
    for config in &layout.node_configs {
        println!("node:    {}", config.display());
    }
    Ok(())
}

fn verify_slot(node: &str, region: u32, slot: u64) -> Result<(), Failure> {
    let client =
        quartier_node::client::NodeClient::new(node).map_err(|e| Failure::BadInput(e.into()))?;
    let (code, body) = client
        .get(&format!("/api/v1/regions/{region}/slots/{slot}"))
        .map_err(|e| Failure::Internal(e.into()))?;
    if code != 200 {
        return Err(Failure::BadInput(anyhow::anyhow!(
            "node answered {code}: {body}"
        )));
    }
    if body["settlement"].is_null() {
        return Err(Failure::BadInput(anyhow::anyhow!(
            "region {region} slot {slot} is not settled on this node"
        )));
    }
    let settlement: quartier_ledger::Settlement =
        serde_json::from_value(body["settlement"].clone())
            .map_err(|e| Failure::Internal(anyhow::anyhow!("settlement from the node: {e}")))?;
    let orders: Vec<_> = settlement.orders.iter().map(|o| o.order).collect();
    let recomputed = quartier_auction::clear(&settlement.params, &orders)
        .map_err(|e| Failure::Internal(anyhow::anyhow!("re-running the clearing: {e}")))?;
    match first_difference(&settlement.clearing, &recomputed) {
        None => {
            println!(
                "MATCH region {region} slot {slot}: {} orders, {} trades, {} locally",
                orders.len(),
                recomputed.trades.len(),
                recomputed.totals.local_energy
            );
            Ok(())
        }
        Some(diff) => {
            println!("MISMATCH region {region} slot {slot}: {diff}");
            Err(Failure::Internal(anyhow::anyhow!(
                "settlement differs from the re-run clearing"
            )))
        }
    }
}

/// The first place where the stored clearing and the re-run differ.
fn first_difference(
    stored: &quartier_auction::Clearing,
    rerun: &quartier_auction::Clearing,
) -> Option<String> {
    if stored.trades.len() != rerun.trades.len() {
        return Some(format!(
            "{} trades stored, {} re-run",
            stored.trades.len(),
            rerun.trades.len()
        ));
    }
    for (i, (a, b)) in stored.trades.iter().zip(&rerun.trades).enumerate() {
        if a != b {
            return Some(format!("trade {i}: stored {a:?}, re-run {b:?}"));
        }
    }
    for (i, (a, b)) in stored.orders.iter().zip(&rerun.orders).enumerate() {
        if a != b {
            return Some(format!("order {i}: stored {a:?}, re-run {b:?}"));
        }
    }
    if stored.grid != rerun.grid {
        return Some("grid flows differ".to_string());
    }
    if stored.totals != rerun.totals {
        return Some(format!(
            "totals: stored {:?}, re-run {:?}",
            stored.totals, rerun.totals
        ));
    }
    None
}

/// Stops the benchmark's validators however the benchmark ends.
struct Nodes(Vec<std::process::Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs one enclave host until stopped.
fn enclave_run(config: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let exe = std::env::current_exe().context("locating this executable")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("measuring {}", exe.display()))?;
    let measurement = quartier_enclave::attestation::Measurement::of_binary(&bytes);
    let config = quartier_node::enclave_host::EnclaveConfigFile::load(config, measurement)?;
    quartier_node::enclave_host::run(&config)?;
    Ok(())
}

/// What to do with a mode A wallet.
enum WalletAction {
    Balance,
    History,
    Shield {
        from: PathBuf,
        rappen: u64,
    },
    Unshield {
        meter: PathBuf,
        region: u32,
        to: quartier_types::AccountId,
        rappen: u64,
    },
}

/// Money (µRp) from whole Rappen (1 Rp = 10^6 µRp).
fn from_rappen(rappen: u64) -> Result<quartier_types::Money, Failure> {
    rappen
        .checked_mul(1_000_000)
        .map(quartier_types::Money::new)
        .ok_or_else(|| Failure::BadInput(anyhow::anyhow!("amount too large")))
}

/// Runs a mode A wallet command against a node.
fn shielded_wallet(args: &ShieldedWalletArgs, action: WalletAction) -> Result<(), Failure> {
    use quartier_meter::wallet::{Payee, Spending};
    use quartier_node::shielded_client::{self as sc, ShieldedClientError};
    let bad = |e: anyhow::Error| Failure::BadInput(e);
    let api = quartier_node::client::NodeClient::new(&args.node).map_err(|e| bad(e.into()))?;
    let seed = quartier_node::config::read_key(&args.seed).map_err(|e| bad(e.into()))?;
    let failed = |e: ShieldedClientError| match e {
        ShieldedClientError::NoPool | ShieldedClientError::Wallet(_) => Failure::BadInput(e.into()),
        other => Failure::Internal(other.into()),
    };
    let timeout = std::time::Duration::from_secs(60);
    let chf = |m: quartier_types::Money| format!("{:.2} CHF", m.get() as f64 / 1e8);
    match action {
        WalletAction::Balance => {
            let w = sc::restore(&api, seed).map_err(failed)?;
            let unspent = w
                .history()
                .iter()
                .filter(|h| h.state == Spending::Unspent)
                .count();
            println!(
                "{} in {unspent} unspent outputs (pool scanned to index {})",
                chf(w.balance()),
                w.scanned()
            );
        }
        WalletAction::History => {
            let w = sc::restore(&api, seed).map_err(failed)?;
            for h in w.history() {
                let payee = match h.payee {
                    Payee::Main => "to the wallet's address".to_string(),
                    Payee::Order { slot, side } => {
                        format!("{side:?} order of slot {}", slot.0).to_lowercase()
                    }
                };
                let state = match h.state {
                    Spending::Unspent => "unspent",
                    Spending::Pending(..) => "pending",
                    Spending::Spent => "spent",
                };
                println!(
                    "output {:>7}  {:>14}  {state:<8} {payee}",
                    h.index,
                    chf(h.amount)
                );
            }
            println!("balance {}", chf(w.balance()));
        }
        WalletAction::Shield { from, rappen } => {
            let key = ed25519_dalek::SigningKey::from_bytes(
                &quartier_node::config::read_key(&from).map_err(|e| bad(e.into()))?,
            );
            let amount = from_rappen(rappen)?;
            sc::shield(&api, &key, seed, amount, timeout).map_err(failed)?;
            println!("shielded {} into the wallet", chf(amount));
        }
        WalletAction::Unshield {
            meter,
            region,
            to,
            rappen,
        } => {
            let amount = from_rappen(rappen)?;
            let meter = ed25519_dalek::SigningKey::from_bytes(
                &quartier_node::config::read_key(&meter).map_err(|e| bad(e.into()))?,
            );
            let region = quartier_types::RegionId(region);
            sc::unshield(&api, (&seed, &meter), (region, to, amount), timeout).map_err(failed)?;
            println!("paid {} out of the wallet to {to}", chf(amount));
        }
    }
    Ok(())
}

/// Checks and opens a wallet's mode B receipts.
fn wallet_receipts(
    key: &std::path::Path,
    node: &str,
    enclaves: &[String],
    region: u32,
    last: usize,
) -> Result<(), Failure> {
    use quartier_enclave::auctioneer::{Outcome, receipts_root};
    use quartier_enclave::rpc::{Request, Response};
    use quartier_enclave::sealed::HpkeKeyPair;
    use quartier_node::client::NodeClient;
    let bad = |e: &dyn std::fmt::Display| Failure::BadInput(anyhow::anyhow!("{e}"));
    let wallet = ed25519_dalek::SigningKey::from_bytes(
        &quartier_node::config::read_key(key).map_err(|e| bad(&e))?,
    );
    let account = quartier_types::AccountId(wallet.verifying_key().to_bytes());
    let node = NodeClient::new(node).map_err(|e| bad(&e))?;
    let enclaves: Vec<NodeClient> = enclaves
        .iter()
        .map(|u| NodeClient::new(u))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    let region = quartier_types::RegionId(region);
    let path = format!(
        "/api/v1/regions/{}/reports?last={}",
        region.0,
        last.clamp(1, 2976)
    );
    let (_, v) = node
        .get(&path)
        .map_err(|e| Failure::Internal(anyhow::anyhow!("{e}")))?;
    let reports: Vec<quartier_ledger::PostedReport> =
        serde_json::from_value(v["reports"].clone()).map_err(|e| bad(&e))?;
    println!("receipts of {account} in region {}", region.0);
    let (mut mine, mut mismatched) = (0, 0);
    for posted in &reports {
        let slot = posted.summary.slot;
        let request = Request::Report { region, slot };
        let report =
            enclaves
                .iter()
                .find_map(|e| match quartier_node::enclave_host::call(e, &request) {
                    Some(Response::Report(Some(r))) => Some(r),
                    _ => None,
                });
        let Some(report) = report else {
            println!("slot {}: no enclave has its receipts any more", slot.0);
            continue;
        };
        if report.summary != posted.summary
            || receipts_root(&report.receipts) != posted.summary.receipts_root
        {
            mismatched += 1;
            println!(
                "slot {}: MISMATCH: the enclave's receipts are not what the committee signed",
                slot.0
            );
            continue;
        }
        let key = HpkeKeyPair::receipt_key(&wallet, region, slot);
        let own = report
            .receipts
            .iter()
            .filter_map(|r| r.open(&key))
            .find(|r| r.wallet == Some(account));
        let kwh = |e: quartier_types::Energy| e.get() as f64 / 1_000.0;
        let rp = |m: quartier_types::Money| m.get() as f64 / 1_000_000.0;
        match own.map(|r| r.outcome) {
            Some(Outcome::Cleared {
                order,
                matched,
                pays,
                receives,
            }) => {
                mine += 1;
                println!(
                    "slot {}: verified; {:?} {:.3} kWh at limit {:.2} Rp/kWh, {:.3} kWh matched locally, paid {:.2} Rp, received {:.2} Rp",
                    slot.0,
                    order.side,
                    kwh(order.energy),
                    order.limit.get() as f64 / 1_000.0,
                    kwh(matched),
                    rp(pays),
                    rp(receives)
                );
            }
            Some(Outcome::Refused(reason)) => {
                mine += 1;
                println!("slot {}: verified; refused: {reason}", slot.0);
            }
            None => println!("slot {}: verified; no order of this wallet", slot.0),
        }
    }
    println!(
        "{mine} receipts of this wallet opened in {} reported slots",
        reports.len()
    );
    if mismatched > 0 {
        return Err(Failure::Internal(anyhow::anyhow!(
            "{mismatched} slots' receipts do not match the signed root"
        )));
    }
    Ok(())
}

/// Prints the SHA-256 of the enclave binary.
fn measure(binary: Option<PathBuf>) -> Result<(), Failure> {
    use anyhow::Context as _;
    let path = match binary {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this executable")
            .map_err(Failure::Internal)?,
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::BadInput)?;
    println!(
        "{}",
        quartier_enclave::attestation::Measurement::of_binary(&bytes)
    );
    Ok(())
}

// A benchmark measures wall-clock time.
#[allow(clippy::disallowed_methods)]
fn bench_chain(meters: usize, slots: u64, timeout: u64, plan: &PlanArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use quartier_node::client::NodeClient;
    anyhow::ensure!(
        plan.privacy != Privacy::Shielded,
        "bench chain loads open or sealed orders; mode A's per-order costs are measured by \
         `cargo bench -p quartier-meter --bench shielded_order`, and a mode A devnet runs with \
         `quartier devnet --privacy shielded`"
    );
    let dir = std::env::temp_dir().join(format!("quartier-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let layout = quartier_node::devnet::lay_out(&dir, &plan.plan()?)?;
    let exe = std::env::current_exe().context("locating the quartier binary")?;
    let nodes = Nodes(quartier_node::devnet::spawn_nodes(&exe, &dir, &layout)?);
    let enclaves = Nodes(quartier_node::devnet::spawn_enclaves(&exe, &dir, &layout)?);
    let apis = layout
        .api_urls
        .iter()
        .map(|u| NodeClient::new(u))
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "bench chain: {} validators, {} enclaves in {}",
        nodes.0.len(),
        enclaves.0.len(),
        dir.display()
    );
    let first_block = first_blocks(&apis)?;
    let genesis = quartier_node::config::NetworkGenesis::load(&layout.genesis_file)?;
    let key = signing_key;
    let data_dirs: Vec<PathBuf> = (0..plan.validators)
        .map(|i| dir.join(format!("validator-{i}/data")))
        .collect();
    let report = quartier_node::loadgen::run(
        &apis,
        &genesis.ledger,
        &key(&layout.dso_key)?,
        &key(&layout.utility_key)?,
        &data_dirs,
        &quartier_node::loadgen::ChainBenchPlan {
            meters,
            slots,
            deadline: std::time::Duration::from_secs(timeout),
        },
        |step| eprintln!("  {step}"),
    )?;
    let validator_memory: Vec<String> = nodes.0.iter().map(|c| peak_memory_of(c.id())).collect();
    let enclave_memory: Vec<String> = enclaves.0.iter().map(|c| peak_memory_of(c.id())).collect();
    drop(enclaves);
    drop(nodes);
    let r = &report;
    let latency: Vec<String> = r
        .settlement_latency_ms
        .iter()
        .map(|l| format!("{l} ms"))
        .collect();
    let per_order = r.disk_bytes / (r.orders_settled.max(1) as u64);
    let mode = match plan.privacy {
        Privacy::Transparent => "open orders".to_string(),
        Privacy::Shielded => format!("mode A: shielded orders, rings of {}", plan.ring_size),
        Privacy::Enclave => format!("mode B: sealed orders, {} enclaves", plan.enclaves),
    };
    println!(
        "| quartier bench chain | {} validators, {meters} meters, {slots} slots of {} s, {mode} |",
        plan.validators, plan.slot_seconds
    );
    println!("|---|---|");
    println!(
        "| setup txs (register + mint) | {} in {:.1} s ({:.0} tx/s finalized) |",
        r.setup_txs,
        r.setup_seconds,
        r.setup_txs as f64 / r.setup_seconds
    );
    println!(
        "| start → first finalized block on every validator | {:.1} s |",
        first_block.as_secs_f64()
    );
    println!(
        "| peak resident memory per validator process | {} |",
        validator_memory.join(", ")
    );
    if !enclave_memory.is_empty() {
        println!(
            "| peak resident memory per enclave host process | {} |",
            enclave_memory.join(", ")
        );
    }
    println!(
        "| order txs submitted / settled | {} / {} |",
        r.order_txs, r.orders_settled
    );
    println!(
        "| order burst, submitted over HTTP (8 client threads) | {:.0} tx/s |",
        r.submitted_per_second
    );
    println!(
        "| order burst, finalized (until every mempool is empty) | {:.0} tx/s |",
        r.finalized_per_second
    );
    println!(
        "| block interval p50 / p99 | {} / {} ms ({} blocks) |",
        r.block_interval_ms.0, r.block_interval_ms.1, r.blocks
    );
    println!(
        "| gate close → settlement block (mode B: report block) | {} |",
        latency.join(", ")
    );
    println!(
        "| sent per validator to its peers | {:.0} KB/s |",
        r.p2p_bytes_per_validator_second / 1e3
    );
    println!(
        "| data on disk (all validators) | {:.1} MB, {} bytes per settled order |",
        r.disk_bytes as f64 / 1e6,
        per_order
    );
    let samples = &r.disk_per_validator;
    if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
        let middle = samples[samples.len() / 2];
        println!(
            "| data per validator after slot 1 / {} / {} | {:.2} / {:.2} / {:.2} MB (history {} slots, blocks kept {} s) |",
            samples.len() / 2 + 1,
            samples.len(),
            *first as f64 / 1e6,
            middle as f64 / 1e6,
            *last as f64 / 1e6,
            plan.history_slots,
            plan.block_retention_ms / 1000,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Runs the offline simulator and prints its report; the run's time and peak
/// memory go to stderr so stdout stays byte-identical for a seed.
#[allow(clippy::disallowed_methods)]
fn sim(
    plan: &quartier_sim::SimPlan,
    json: bool,
    csv_out: Option<PathBuf>,
    write_run: Option<(PathBuf, quartier_sim::PrivacyMode)>,
) -> Result<(), Failure> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    let profiles = quartier_sim::Profiles::embedded().map_err(|e| Failure::Internal(e.into()))?;
    let bar = indicatif::ProgressBar::new(u64::from(plan.days) * 96).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} slots {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut observer = SimObserver {
        bar: &bar,
        recorder: write_run
            .as_ref()
            .map(|(_, mode)| quartier_sim::RunRecorder::new(plan, *mode)),
    };
    let (report, series) =
        quartier_sim::run_observed(plan, profiles, &mut observer).map_err(|e| match e {
            quartier_sim::SimError::Plan(_) => Failure::BadInput(e.into()),
            other => Failure::Internal(other.into()),
        })?;
    bar.finish_and_clear();
    if let (Some((dir, _)), Some(recorder)) = (&write_run, observer.recorder) {
        let (view, truth) = recorder.finish();
        write_json(&dir.join("public.json"), &view)
            .and_then(|()| write_json(&dir.join("truth.json"), &truth))
            .map_err(Failure::Internal)?;
    }
    let out = if json {
        let mut text =
            serde_json::to_string_pretty(&report).map_err(|e| Failure::Internal(e.into()))?;
        text.push('\n');
        text
    } else {
        report.table()
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing stdout")))?;
    if let Some(dir) = csv_out {
        let write = |name: &str, text: String| -> anyhow::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| write("slots.csv", quartier_sim::report::slots_csv(&series)))
            .and_then(|()| write("households.csv", report.households_csv()))
            .map_err(Failure::Internal)?;
    }
    eprintln!(
        "sim: {} households x {} slots in {:.2} s, peak memory {}",
        plan.households,
        series.len(),
        started.elapsed().as_secs_f64(),
        peak_memory()
    );
    Ok(())
}

/// Shows the run's progress and records it when asked to.
struct SimObserver<'a> {
    bar: &'a indicatif::ProgressBar,
    recorder: Option<quartier_sim::RunRecorder>,
}

impl quartier_sim::RunObserver for SimObserver<'_> {
    fn households(&mut self, households: &[quartier_sim::Household]) {
        if let Some(r) = &mut self.recorder {
            r.households(households);
        }
    }

    fn slot(
        &mut self,
        slot: u64,
        readings: &[quartier_sim::Reading],
        book: &[(u32, quartier_types::Order)],
    ) {
        if let Some(r) = &mut self.recorder {
            r.slot(slot, readings, book);
        }
    }

    fn progress(&mut self, done: u64, _total: u64) {
        self.bar.set_position(done);
    }
}

/// Writes `value` as JSON to `path`, creating the folder.
fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_vec(value)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads JSON of type `T` from `path`.
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context as _;
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Where `quartier audit` finds a run.
enum AuditSource {
    /// Files written by `quartier sim --write-run`.
    Run {
        run: PathBuf,
        truth: Option<PathBuf>,
    },
    /// A devnet's chain and its `meters.json`.
    Node {
        node: String,
        enclaves: Vec<String>,
        manifest: PathBuf,
        slots: u64,
    },
}

/// Attacks the public view of a run, as published and with its originators
/// removed, and prints the scores.
fn audit(source: AuditSource, json: bool, svg: Option<PathBuf>) -> Result<(), Failure> {
    let ChainAudit {
        reports,
        crypto,
        foreign,
        sealed,
    } = match source {
        AuditSource::Run { run, truth } => {
            let view = read_json(&run.join("public.json")).map_err(Failure::BadInput)?;
            let truth_path = truth.unwrap_or_else(|| run.join("truth.json"));
            let truth = read_json(&truth_path).map_err(Failure::BadInput)?;
            // A simulator run publishes no signatures: no cryptographic audit.
            ChainAudit {
                reports: audit_views(&view, &truth)?,
                crypto: None,
                foreign: 0,
                sealed: None,
            }
        }
        AuditSource::Node {
            node,
            enclaves,
            manifest,
            slots,
        } => {
            let manifest: quartier_node::meters::FleetManifest =
                read_json(&manifest).map_err(Failure::BadInput)?;
            let api = quartier_node::client::NodeClient::new(&node)
                .map_err(|e| Failure::BadInput(e.into()))?;
            let enclaves = enclaves
                .iter()
                .map(|u| quartier_node::client::NodeClient::new(u))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::BadInput(e.into()))?;
            audit_chain(&api, &enclaves, &manifest, 0, slots)?
        }
    };
    let out = if json {
        let both = serde_json::json!({
            "reports": reports,
            "cryptographic": crypto,
            "foreign_orders": foreign,
            "sealed": sealed,
        });
        let mut text =
            serde_json::to_string_pretty(&both).map_err(|e| Failure::Internal(e.into()))?;
        text.push('\n');
        text
    } else {
        let mut text = if reports.is_empty() {
            String::new()
        } else {
            quartier_sim::audit::table(&reports)
        };
        if let Some(r) = &sealed {
            text.push_str(&quartier_sim::sealed_audit::table(r));
        }
        if let Some(c) = &crypto {
            text.push('\n');
            text.push_str(&quartier_sim::crypto_audit::table(c));
        }
        if foreign > 0 {
            text.push_str(&format!(
                "\n{foreign} orders of other participants (no household of the run) left out\n"
            ));
        }
        text
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing stdout")))?;
    if let Some(path) = svg {
        if reports.is_empty() {
            return Err(Failure::BadInput(anyhow::anyhow!(
                "--svg draws the statistical reports, and a mode B chain has none (its table is above)"
            )));
        }
        std::fs::write(&path, quartier_sim::audit::svg(&reports))
            .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing the SVG")))?;
    }
    Ok(())
}

/// The statistical adversary's reports on `view`: as published, and with
/// its originators removed (amounts and prices only).
fn audit_views(
    view: &quartier_sim::PublicView,
    truth: &quartier_sim::GroundTruth,
) -> Result<Vec<quartier_sim::AuditReport>, Failure> {
    let profiles = quartier_sim::Profiles::embedded().map_err(|e| Failure::Internal(e.into()))?;
    let hidden = view.without_originators();
    [
        (view, format!("{} (as published)", view.mode.name())),
        (&hidden, "amounts and prices only".to_string()),
    ]
    .into_iter()
    .map(|(v, label)| quartier_sim::audit(v, truth, &profiles, &label))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| Failure::BadInput(e.into()))
}

/// What the attacks on a run found.
struct ChainAudit {
    /// The statistical adversary's reports on the open or mode A book.
    reports: Vec<quartier_sim::AuditReport>,
    /// Mode A: the cryptographic adversary's findings.
    crypto: Option<quartier_sim::crypto_audit::CryptoReport>,
    /// Non-cover orders of no household of the run (left out).
    foreign: usize,
    /// Mode B: the insider's findings on the sealed orders.
    sealed: Option<quartier_sim::sealed_audit::SealedAuditReport>,
}

/// Every attack on a devnet fleet's run slots `from..from + slots`: on a
/// mode B chain the insider's attack on the sealed orders; otherwise the
/// statistical reports, on a mode A chain the cryptographic adversary's
/// findings on the published bytes, and how many non-cover orders were no
/// household's (left out of both).
fn audit_chain(
    api: &quartier_node::client::NodeClient,
    enclaves: &[quartier_node::client::NodeClient],
    manifest: &quartier_node::meters::FleetManifest,
    from: u64,
    slots: u64,
) -> Result<ChainAudit, Failure> {
    if let Some((view, truth)) =
        quartier_node::meters::chain_sealed_run(api, enclaves, manifest, from, slots)
            .map_err(|e| Failure::Internal(e.into()))?
    {
        let profiles =
            quartier_sim::Profiles::embedded().map_err(|e| Failure::Internal(e.into()))?;
        let insiders = quartier_node::meters::sealed_insiders(manifest);
        let label = "enclave (as published)";
        let report =
            quartier_sim::sealed_audit::sealed_audit(&view, &truth, &profiles, &insiders, label)
                .map_err(|e| Failure::BadInput(e.into()))?;
        return Ok(ChainAudit {
            reports: Vec::new(),
            crypto: None,
            foreign: 0,
            sealed: Some(report),
        });
    }
    let crypto = quartier_node::meters::chain_crypto(api, manifest, from, slots)
        .map_err(|e| Failure::Internal(e.into()))?
        .map(|r| quartier_sim::crypto_audit::crypto_audit(&r.orders, &r.pool, &r.truth));
    let (view, truth, foreign) = quartier_node::meters::chain_run(api, manifest, from, slots)
        .map_err(|e| Failure::Internal(e.into()))?;
    Ok(ChainAudit {
        reports: audit_views(&view, &truth)?,
        crypto,
        foreign,
        sealed: None,
    })
}

/// How many of the latest settled slots the devnet's live auditor reads.
const LIVE_AUDIT_SLOTS: u64 = 96;

/// The live auditor rests this many times as long as its last audit took
/// before the next: it uses at most a fifth of one core beside the devnet.
const LIVE_AUDIT_REST: u32 = 4;

/// Gives the calling thread the lowest CPU priority (nice 19): it runs on
/// what the validators and the meters leave. The devnet's live auditor
/// audits in bursts of a core for seconds; at normal priority, on two
/// cores, such a burst delayed the meters' orders past their gate.
fn lowest_cpu_priority() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19) {
        eprintln!("live auditor: could not lower its priority: {e}");
    }
}

/// The devnet's live auditor: after a settled run slot (the latest one it
/// is told of when it is free and rested, see [`LIVE_AUDIT_REST`]), every
/// attack on the last [`LIVE_AUDIT_SLOTS`] settled slots, written to `path`
/// (replaced atomically) for the validators' `/api/v1/audit`. It stops when
/// `settled` closes; a failed audit is reported once and the next one tried.
#[allow(clippy::disallowed_methods)] // the binary's clock: the auditor's rest
fn live_auditor(
    api: &quartier_node::client::NodeClient,
    enclaves: &[quartier_node::client::NodeClient],
    manifest: &quartier_node::meters::FleetManifest,
    path: &std::path::Path,
    settled: &std::sync::mpsc::Receiver<u64>,
) {
    let mut failed = false;
    while let Ok(mut done) = settled.recv() {
        // Only the newest count matters.
        while let Ok(later) = settled.try_recv() {
            done = later;
        }
        let started = std::time::Instant::now();
        let from = done.saturating_sub(LIVE_AUDIT_SLOTS);
        let result = audit_chain(api, enclaves, manifest, from, done - from).and_then(|a| {
            let report = serde_json::json!({
                "slot": manifest.first_slot + done - 1,
                "slots": done - from,
                "reports": a.reports,
                "cryptographic": a.crypto,
                "foreign_orders": a.foreign,
                "sealed": a.sealed,
            });
            write_atomically(path, &report).map_err(Failure::Internal)
        });
        // Resting is not synchronisation: it bounds the auditor's share of
        // the CPU the validators and meters share.
        std::thread::sleep(started.elapsed() * LIVE_AUDIT_REST);
        match result {
            Ok(()) => failed = false,
            Err(Failure::BadInput(e) | Failure::Internal(e)) if !failed => {
                failed = true;
                println!("live audit failed (retried after the next slot): {e:#}");
            }
            Err(_) => {}
        }
    }
}

/// Writes `value` as JSON to a temporary file beside `path`, then renames it
/// over `path`: a reader sees the old report or the new, never a part.
fn write_atomically(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    write_json(&tmp, value)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// The process's peak resident memory, from `/proc/self/status` (Linux).
fn peak_memory() -> String {
    peak_memory_at("/proc/self/status")
}

/// A running child's peak resident memory, from `/proc/PID/status` (Linux).
fn peak_memory_of(pid: u32) -> String {
    peak_memory_at(&format!("/proc/{pid}/status"))
}

fn peak_memory_at(status: &str) -> String {
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
fn first_blocks(apis: &[quartier_node::client::NodeClient]) -> anyhow::Result<std::time::Duration> {
    let up = std::time::Instant::now();
    let finalized = |a: &quartier_node::client::NodeClient| {
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
fn signing_key(path: &std::path::Path) -> anyhow::Result<ed25519_dalek::SigningKey> {
    Ok(ed25519_dalek::SigningKey::from_bytes(
        &quartier_node::config::read_key(path)?,
    ))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// Ends this process when its standard input reaches its end: the
/// supervisor that holds the pipe's other end stopped (or was killed). What
/// a node committed is on disk already; it stops as it would on a crash.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        use std::io::Read as _;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        eprintln!("standard input closed: the supervisor is gone, stopping");
        std::process::exit(0);
    });
}

fn node(config: &std::path::Path, sync_from: Option<&str>) -> anyhow::Result<()> {
    init_logging();
    let config = quartier_node::config::NodeConfig::load(config)?;
    quartier_node::run::run(config, sync_from)
}

/// Lays out a devnet, runs one `quartier node` process per validator and the
/// households' meter agents, until the agents stop or the devnet is stopped.
/// A validator that exits is reported (and restarted with `restart`); the
/// others go on. Every validator and enclave holds a pipe from the devnet on
/// its standard input and stops when it closes, so none outlives the devnet
/// however it ends (Ctrl-C, SIGTERM, `kill -9`).
#[allow(clippy::disallowed_methods)] // a supervisor reads the wall clock
fn devnet(
    dir: Option<PathBuf>,
    plan: &PlanArgs,
    households: &HouseholdArgs,
    restart: bool,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("quartier-devnet-{}", std::process::id())),
    };
    anyhow::ensure!(
        households.prosumers <= households.households,
        "--prosumers {} exceeds --households {}",
        households.prosumers,
        households.households
    );
    let layout = quartier_node::devnet::lay_out(&dir, &plan.plan()?)?;
    let exe = std::env::current_exe().context("locating the quartier binary")?;
    let mut children = Nodes(quartier_node::devnet::spawn_nodes(&exe, &dir, &layout)?);
    let mut enclaves = Nodes(quartier_node::devnet::spawn_enclaves(&exe, &dir, &layout)?);
    let mut enclave_down = vec![false; enclaves.0.len()];
    println!(
        "quartier devnet: {} validators, data in {}",
        children.0.len(),
        dir.display()
    );
    for url in &layout.enclave_urls {
        println!("  enclave (simulated TEE) {url}/enclave/v1/status");
    }
    for url in &layout.api_urls {
        println!("  API {url}/api/v1/status");
    }
    if let Some(url) = layout.api_urls.first() {
        println!("  dashboard {url}/");
    }
    println!("Ctrl-C stops all validators.");
    let mut fleet = (households.households > 0).then(|| {
        let layout = layout.clone();
        let dir = dir.clone();
        let plan = households.plan();
        std::thread::spawn(move || run_households(&layout, &dir, &plan))
    });
    // Wait for the first validator to stop, or for the agents to fail. An
    // enclave may stop: the committee settles while t members remain.
    let n = children.0.len();
    let tolerated = n.saturating_sub(1) / 3;
    let mut validator_down = vec![false; n];
    // When each validator was last restarted: one that exits again within
    // a minute is not restarted again (a crash at start would loop).
    let mut restarted: Vec<Option<std::time::Instant>> = vec![None; n];
    loop {
        for (i, child) in children.0.iter_mut().enumerate() {
            if validator_down[i] {
                continue;
            }
            let Some(status) = child.try_wait().context("watching validators")? else {
                continue;
            };
            let log = dir.join(format!("validator-{i}.log"));
            let crashed_again =
                restarted[i].is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(60));
            if crashed_again {
                println!(
                    "validator {i} exited again within a minute of its restart: not restarting it"
                );
            }
            if restart && !crashed_again {
                restarted[i] = Some(std::time::Instant::now());
                *child = quartier_node::devnet::spawn_node(&exe, &dir, i, &layout.node_configs[i])?;
                println!(
                    "validator {i} exited ({status}) and was restarted; see {}",
                    log.display()
                );
                continue;
            }
            validator_down[i] = true;
            let down = validator_down.iter().filter(|d| **d).count();
            println!(
                "validator {i} exited ({status}); see {}. `quartier node --config {}` restarts it",
                log.display(),
                layout.node_configs[i].display()
            );
            if down <= tolerated {
                println!(
                    "the other validators go on: the chain finalizes with up to {tolerated} of {n} down ({down} now)"
                );
            } else {
                println!(
                    "{down} of {n} validators are down: the chain can not finalize until {} is back",
                    if down - tolerated == 1 {
                        "one"
                    } else {
                        "enough of them"
                    }
                );
            }
        }
        for (i, child) in enclaves.0.iter_mut().enumerate() {
            if !enclave_down[i] && child.try_wait().context("watching enclaves")?.is_some() {
                enclave_down[i] = true;
                println!(
                    "enclave {i} stopped; `quartier enclave run --config {}` restarts it",
                    dir.join(format!("enclave-{i}/enclave.toml")).display()
                );
            }
        }
        if let Some(handle) = fleet.take_if(|h| h.is_finished()) {
            return match handle.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context("meter agents")),
                Err(_) => Err(anyhow::anyhow!("the meter agents' thread panicked")),
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Enrols the simulated households on the devnet, writes `meters.json` (which
/// account is which household) and trades until stopped.
#[allow(clippy::disallowed_methods)]
fn run_households(
    layout: &quartier_node::devnet::DevnetLayout,
    dir: &std::path::Path,
    plan: &quartier_node::meters::FleetPlan,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use quartier_node::client::NodeClient;
    use quartier_node::meters::{Fleet, FleetEvent};
    let apis = layout
        .api_urls
        .iter()
        .map(|u| NodeClient::new(u))
        .collect::<Result<Vec<_>, _>>()?;
    println!(
        "chain up: every validator finalized a block {:.1} s after its API was asked",
        first_blocks(&apis)?.as_secs_f64()
    );
    let genesis = quartier_node::config::NetworkGenesis::load(&layout.genesis_file)?.ledger;
    let key = signing_key;
    let (dso, utility) = (key(&layout.dso_key)?, key(&layout.utility_key)?);
    println!(
        "enrolling {} households ({} prosumers), strategy {}",
        plan.households,
        plan.prosumers,
        plan.strategy.name()
    );
    let timeout = std::time::Duration::from_secs(120);
    let shielded = genesis.shielded.is_some();
    let wallet_seeds: Vec<[u8; 32]> = (0..plan.households)
        .map(|i| quartier_node::meters::wallet_seed(genesis.chain_id(), plan.seed, i))
        .collect();
    let meter_keys: Vec<[u8; 32]> = (0..plan.households)
        .map(|i| quartier_node::meters::meter_key(&genesis, plan.seed, i).to_bytes())
        .collect();
    let mut fleet = Fleet::enrol(apis, genesis, &dso, &utility, plan, timeout)?
        .with_enclaves(&layout.enclave_urls)?;
    if shielded {
        // Mode A: each household's wallet seed, for `quartier wallet`.
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets)
            .with_context(|| format!("creating {}", wallets.display()))?;
        // And each household's meter key, which authorises its unshields.
        let meters = dir.join("meters");
        std::fs::create_dir_all(&meters)
            .with_context(|| format!("creating {}", meters.display()))?;
        for (i, (seed, key)) in wallet_seeds.iter().zip(&meter_keys).enumerate() {
            for (path, bytes) in [
                (wallets.join(format!("household-{i}.key")), seed),
                (meters.join(format!("household-{i}.key")), key),
            ] {
                if !path.exists() {
                    quartier_node::config::write_key(&path, bytes)?;
                }
            }
        }
        println!(
            "household wallets in {} (`quartier wallet balance --seed …`), meter keys in {}",
            wallets.display(),
            meters.display()
        );
    }
    let manifest_path = dir.join("meters.json");
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(fleet.manifest())?,
    )
    .with_context(|| format!("writing {}", manifest_path.display()))?;
    println!(
        "meters enrolled (see {}); trading from slot {}",
        manifest_path.display(),
        fleet.manifest().first_slot
    );
    // The live auditor plays the adversary on the chain beside the fleet.
    let first_slot = fleet.manifest().first_slot;
    let (settled, audit_queue) = std::sync::mpsc::channel();
    {
        let manifest = fleet.manifest().clone();
        let api = NodeClient::new(layout.api_urls.first().context("no validator")?)?;
        let path = layout.audit_report.clone();
        let enclaves = layout
            .enclave_urls
            .iter()
            .map(|u| NodeClient::new(u))
            .collect::<Result<Vec<_>, _>>()?;
        std::thread::spawn(move || {
            lowest_cpu_priority();
            live_auditor(&api, &enclaves, &manifest, &path, &audit_queue);
        });
    }
    fleet.run(None, |event| match event {
        FleetEvent::Placed {
            slot,
            orders,
            abandoned,
            pending,
        } => println!(
            "slot {}: {orders} orders final, {abandoned} abandoned, {pending} pending",
            slot.0
        ),
        FleetEvent::Settled {
            slot,
            orders,
            buys,
            local,
            price,
        } => {
            let _ = settled.send(slot.0.saturating_sub(first_slot) + 1);
            println!(
            "slot {} settled: {orders} orders{}, {:.3} kWh traded locally{}",
            slot.0,
            buys.map(|b| format!(" ({b} buys)")).unwrap_or_default(),
            local.get() as f64 / 1_000.0,
            price
                .map(|p| format!(" at {:.2} Rp/kWh", p.get() as f64 / 1_000.0))
                .unwrap_or_default()
        )
        }
        FleetEvent::Abandoned {
            slot,
            household,
            reason,
        } => println!(
            "slot {}: household {household} gave up its order: {reason}",
            slot.0
        ),
        FleetEvent::Receipts {
            slot,
            verified,
            expected,
        } => println!(
            "slot {}: {verified} of {expected} households opened their receipt (checked against the root on chain)",
            slot.0
        ),
    })?;
    Ok(())
}

fn read_input(file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    let mut input = Vec::new();
    match file {
        Some(path) if path.as_os_str() != "-" => {
            input = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        }
        _ => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut input)
                .context("reading standard input")?;
        }
    }
    Ok(input)
}
