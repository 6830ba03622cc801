//! `quartier bench footprint`: what a validator process holds and spends
//! while its devnet's households trade, read from `/proc` and the node's
//! `/metrics` (Linux).
#![allow(clippy::disallowed_methods)] // a benchmark reads the wall clock

use super::plan::{HouseholdArgs, PlanArgs};
use quartier_client::NodeClient;
use std::path::Path;
use std::time::Instant;

/// Linux's clock ticks per second in `/proc/PID/stat` (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// One process's counters at one moment.
struct Sample {
    cpu_ticks: u64,
    bytes_sent: u64,
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .trim_end_matches(" kB")
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// User and system time in clock ticks (fields 14 and 15 of `stat`, counted
/// after the command name, which may hold spaces).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The p2p bytes the node sent (commonware's `outbound_bandwidth` counters).
fn bytes_sent(api: &NodeClient) -> u64 {
    api.get_text("/metrics")
        .map(|(_, text)| {
            text.lines()
                .filter(|l| !l.starts_with('#') && l.contains("outbound_bandwidth"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        })
        .unwrap_or(0)
}

fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

fn sample(pid: u32, api: &NodeClient) -> Sample {
    Sample {
        cpu_ticks: cpu_ticks(pid),
        bytes_sent: bytes_sent(api),
    }
}

/// Runs the devnet of `plan` with `households`, trades `slots` slots and
/// prints one table row per validator.
///
/// # Errors
/// If the devnet does not start or its households can not trade.
pub(crate) fn run(slots: u64, plan: &PlanArgs, households: &HouseholdArgs) -> anyhow::Result<()> {
    let super::ScratchNet {
        dir,
        layout,
        nodes,
        enclaves: _enclaves,
        apis,
    } = super::ScratchNet::start("footprint", plan)?;
    let first_block = super::first_blocks(&apis)?.as_secs_f64();
    let genesis = quartier_node::config::NetworkGenesis::load(&layout.genesis_file)?.ledger;
    let key = super::signing_key;
    let fleet_plan = households.plan();
    eprintln!(
        "bench footprint: enrolling {} households in {}",
        fleet_plan.households,
        dir.display()
    );
    let mut fleet = quartier_devnet::fleet::Fleet::enrol(
        apis.clone(),
        genesis,
        &key(&layout.dso_key)?,
        &key(&layout.utility_key)?,
        &fleet_plan,
        std::time::Duration::from_secs(600),
    )?
    .with_enclaves(&layout.enclave_urls)?;
    let pids: Vec<u32> = nodes.0.iter().map(std::process::Child::id).collect();
    let before: Vec<Sample> = pids.iter().zip(&apis).map(|(p, a)| sample(*p, a)).collect();
    let start = Instant::now();
    let mut settled = 0u64;
    fleet.run(Some(slots), |event| {
        if let quartier_devnet::fleet::FleetEvent::Settled { .. } = event {
            settled += 1;
        }
    })?;
    let seconds = start.elapsed().as_secs_f64();
    let after: Vec<Sample> = pids.iter().zip(&apis).map(|(p, a)| sample(*p, a)).collect();
    println!(
        "| quartier bench footprint | {} validators, {} households ({} with PV), {slots} slots of {} s ({settled} settled), first block {first_block:.1} s after start |",
        pids.len(),
        fleet_plan.households,
        fleet_plan.prosumers,
        plan.slot_seconds,
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| validator | resident memory | peak resident | CPU (% of a core) | disk | p2p bytes sent per slot |"
    );
    for (i, pid) in pids.iter().enumerate() {
        let cpu = (after[i].cpu_ticks.saturating_sub(before[i].cpu_ticks)) as f64
            / TICKS_PER_SECOND
            / seconds
            * 100.0;
        let sent = after[i].bytes_sent.saturating_sub(before[i].bytes_sent) / slots.max(1);
        println!(
            "| {i} | {:.1} MB | {:.1} MB | {cpu:.1} % | {:.1} MB | {:.0} KB |",
            status_kb(*pid, "VmRSS:") as f64 / 1024.0,
            status_kb(*pid, "VmHWM:") as f64 / 1024.0,
            disk_bytes(&dir.join(format!("validator-{i}/data"))) as f64 / 1e6,
            sent as f64 / 1e3,
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
