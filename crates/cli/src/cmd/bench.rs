//! `quartier bench`: measure the chain under load and a validator's footprint.

use super::plan::{HouseholdArgs, PlanArgs, Privacy};
use super::{first_blocks, peak_memory_of, signing_key};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
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

// A benchmark measures wall-clock time.
#[allow(clippy::disallowed_methods)]
pub(crate) fn bench_chain(
    meters: usize,
    slots: u64,
    timeout: u64,
    plan: &PlanArgs,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        plan.privacy != Privacy::Shielded,
        "bench chain loads open or sealed orders; mode A's per-order costs are measured by \
         `cargo bench -p quartier-meter --bench shielded_order`, and a mode A devnet runs with \
         `quartier devnet --privacy shielded`"
    );
    let super::ScratchNet {
        dir,
        layout,
        nodes,
        enclaves,
        apis,
    } = super::ScratchNet::start("bench", plan)?;
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
    let report = quartier_devnet::loadgen::run(
        &apis,
        &genesis.ledger,
        &key(&layout.dso_key)?,
        &key(&layout.utility_key)?,
        &data_dirs,
        &quartier_devnet::loadgen::ChainBenchPlan {
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
