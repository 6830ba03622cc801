//! `quartier devnet` with its households, as a user starts it: 4 validator
//! processes and 37 meter agents trading for more than 20 slots. Every slot
//! settles on chain with every household's order, and each settlement equals
//! the offline market run on the same orders, recomputed here from the
//! simulator and the devnet's `meters.json` alone.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use quartier_client::NodeClient;
use quartier_devnet::fleet::FleetManifest;
use quartier_ledger::Settlement;
use quartier_meter::strategy::limit_for;
use quartier_sim::Neighbourhood;
use quartier_sim::market::bid_for;
use quartier_types::{Order, RegionParams, Slot};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{ProcessGroup, scratch, wait_for};

mod support;

const SLOTS: u64 = 21;
const BASE_PORT: u16 = 7_700;

/// The orders the simulator makes for the manifest's households in each of
/// the first `slots` slots, by household, recomputed offline.
fn offline_orders(
    manifest: &FleetManifest,
    params: RegionParams,
    slots: u64,
) -> Vec<Vec<(u32, Order)>> {
    let plan = manifest.sim_plan(params, 1);
    let mut hood = Neighbourhood::new(&plan, quartier_sim::Profiles::embedded().unwrap()).unwrap();
    let mut strategies: Vec<_> = hood
        .households()
        .iter()
        .map(|h| h.strategy(plan.strategy, plan.seed))
        .collect();
    for interval in 0..manifest.start_interval {
        hood.read(interval);
    }
    (0..slots)
        .map(|k| {
            let slot = Slot(manifest.first_slot + k);
            let interval = manifest.start_interval + k;
            let mut orders = Vec::new();
            for (i, reading) in (0u32..).zip(hood.read(interval)) {
                if let Some(mut bid) = bid_for(&reading, slot, params) {
                    bid.slot_of_day = (interval % 96) as u32;
                    let limit = limit_for(strategies[i as usize].as_mut(), &bid);
                    orders.push((
                        i,
                        Order {
                            side: bid.side,
                            limit,
                            energy: bid.energy,
                        },
                    ));
                }
            }
            orders
        })
        .collect()
}

#[test]
fn households_trade_on_a_devnet_exactly_as_offline() {
    let dir = scratch("meters");
    let log =
        std::fs::File::create(std::env::temp_dir().join("quartier-meters-devnet.log")).unwrap();
    let _devnet = ProcessGroup::spawn(
        Command::new(env!("CARGO_BIN_EXE_quartier"))
            .args([
                "devnet",
                "--slot-seconds",
                "4",
                "--strategy",
                "random",
                "--seed",
                "5",
            ])
            .args(["--households", "37", "--prosumers", "27"])
            .args(["--base-port", &BASE_PORT.to_string(), "--dir"])
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    );

    let manifest: FleetManifest = wait_for("meters.json", Duration::from_secs(240), || {
        let text = std::fs::read_to_string(dir.join("meters.json")).ok()?;
        serde_json::from_str(&text).ok()
    });
    assert_eq!(manifest.meters.len(), 37);
    let genesis: quartier_node::config::NetworkGenesis =
        serde_json::from_str(&std::fs::read_to_string(dir.join("genesis.json")).unwrap()).unwrap();
    let params = genesis.ledger.regions[0].1;
    let expected = offline_orders(&manifest, params, SLOTS);

    let api = NodeClient::new(&format!("http://127.0.0.1:{}", BASE_PORT + 1)).unwrap();
    let mut traded = 0;
    for (k, offline) in expected.iter().enumerate() {
        let slot = manifest.first_slot + k as u64;
        let settlement: Settlement = wait_for(
            &format!("slot {slot} to settle"),
            Duration::from_secs(60),
            || {
                let (_, v) = api.get(&format!("/api/v1/regions/1/slots/{slot}")).ok()?;
                serde_json::from_value(v["settlement"].clone()).ok()
            },
        );
        // Every household's order is in the book, exactly as the simulator made it.
        let mut on_chain: Vec<(u32, Order)> = settlement
            .orders
            .iter()
            .map(|o| (manifest.household_of(&o.meter).unwrap(), o.order))
            .collect();
        on_chain.sort_by_key(|(h, _)| *h);
        assert_eq!(&on_chain, offline, "slot {slot}: the orders differ");
        // The chain's clearing is the offline clearing of the book.
        let book: Vec<Order> = settlement.orders.iter().map(|o| o.order).collect();
        let rerun = quartier_auction::clear(&settlement.params, &book).unwrap();
        assert_eq!(settlement.clearing, rerun, "slot {slot}: clearing differs");
        // The offline run clears the orders in household order: the same
        // volumes (ties between equal limits may pair orders differently).
        let by_household: Vec<Order> = offline.iter().map(|(_, o)| *o).collect();
        let offline_clearing = quartier_auction::clear(&params, &by_household).unwrap();
        let (a, b) = (&settlement.clearing.totals, &offline_clearing.totals);
        assert_eq!(
            (a.local_energy, a.grid_import, a.grid_export),
            (b.local_energy, b.grid_import, b.grid_export),
            "slot {slot}: volumes differ"
        );
        traded += a.local_energy.get();
    }
    assert!(traded > 0, "no energy was traded locally in {SLOTS} slots");
    let books: usize = expected.iter().map(Vec::len).sum();

    // The auditor on the chain's public data: transparent orders name their
    // household, every one of them.
    let out = Command::new(env!("CARGO_BIN_EXE_quartier"))
        .args(["audit", "--json", "--slots", &SLOTS.to_string(), "--node"])
        .arg(format!("http://127.0.0.1:{}", BASE_PORT + 1))
        .arg("--truth")
        .arg(dir.join("meters.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        audit["cryptographic"].is_null(),
        "no mode A bytes to attack"
    );
    let reports = &audit["reports"];
    assert_eq!(reports[0]["orders"], books);
    assert_eq!(reports[0]["households"], 37);
    assert!(reports[0]["top1"].as_f64().unwrap() >= 0.99, "{reports}");
    assert!(
        reports[0]["profile_error"].as_f64().unwrap() < 1e-9,
        "{reports}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
