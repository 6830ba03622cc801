//! `quartier devnet`: a local network of validator processes with simulated households.

use super::audit::audit_chain;
use super::plan::{HouseholdArgs, PlanArgs};
use super::{Failure, Nodes, first_blocks, signing_key, write_json};
use std::path::PathBuf;

/// How many of the latest settled slots the devnet's live auditor reads.
pub(crate) const LIVE_AUDIT_SLOTS: u64 = 96;

/// The live auditor rests this many times as long as its last audit took
/// before the next: it uses at most a fifth of one core beside the devnet.
pub(crate) const LIVE_AUDIT_REST: u32 = 4;

/// Gives the calling thread the lowest CPU priority (nice 19): it runs on
/// what the validators and the meters leave. The devnet's live auditor
/// audits in bursts of a core for seconds; at normal priority, on two
/// cores, such a burst delayed the meters' orders past their gate.
pub(crate) fn lowest_cpu_priority() {
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
pub(crate) fn live_auditor(
    api: &quartier_client::NodeClient,
    enclaves: &[quartier_client::NodeClient],
    manifest: &quartier_devnet::fleet::FleetManifest,
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
pub(crate) fn write_atomically(
    path: &std::path::Path,
    value: &impl serde::Serialize,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let tmp = path.with_extension(format!("json.{}.tmp", std::process::id()));
    write_json(&tmp, value)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// Lays out a devnet, runs one `quartier node` process per validator and the
/// households' meter agents, until the agents stop or the devnet is stopped.
/// A validator that exits is reported (and restarted with `restart`); the
/// others go on. Every validator and enclave holds a pipe from the devnet on
/// its standard input and stops when it closes, so none outlives the devnet
/// however it ends (Ctrl-C, SIGTERM, `kill -9`).
#[allow(clippy::disallowed_methods)] // a supervisor reads the wall clock
pub(crate) fn devnet(
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
    let layout = quartier_devnet::layout::lay_out(&dir, &plan.plan()?)?;
    let exe = std::env::current_exe().context("locating the quartier binary")?;
    let mut children = Nodes(quartier_devnet::layout::spawn_nodes(&exe, &dir, &layout)?);
    let mut enclaves = Nodes(quartier_devnet::layout::spawn_enclaves(
        &exe, &dir, &layout,
    )?);
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
                *child =
                    quartier_devnet::layout::spawn_node(&exe, &dir, i, &layout.node_configs[i])?;
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
pub(crate) fn run_households(
    layout: &quartier_devnet::layout::DevnetLayout,
    dir: &std::path::Path,
    plan: &quartier_devnet::fleet::FleetPlan,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use quartier_client::NodeClient;
    use quartier_devnet::fleet::{Fleet, FleetEvent};
    let apis = super::api_clients(layout)?;
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
        .map(|i| quartier_devnet::fleet::wallet_seed(genesis.chain_id(), plan.seed, i))
        .collect();
    let meter_keys: Vec<[u8; 32]> = (0..plan.households)
        .map(|i| quartier_devnet::fleet::meter_key(&genesis, plan.seed, i).to_bytes())
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
