//! Privacy mode A end to end, as a user starts it: `quartier devnet --privacy
//! shielded` with 37 households and 4 validator processes. Every slot every
//! household's meter sends a shielded buy of its consumption (a zero-energy
//! cover order when it has nothing to trade) and, with PV, a sell of its
//! production (gross metering), funded from its shielded wallet and
//! authorised by a ring signature over the region's meters. The test then reads the
//! chain as an adversary would: every settlement re-runs to the same result,
//! no order names a meter, no transaction is signed by or even contains a
//! meter's registered key, and no payee address or one-time signer is used
//! twice; the auditor attributes far fewer orders than in the transparent
//! mode. `quartier wallet` shields into, reads and unshields out of a
//! wallet against the running chain.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

mod support;

use quartier_client::NodeClient;
use quartier_ledger::{SignedTx, TxBody};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{ProcessGroup, scratch, wait_for};

const BASE_PORT: u16 = 8_000;
const HOUSEHOLDS: usize = 37;
const PROSUMERS: usize = 27;
const SLOTS: usize = 20;
const EXE: &str = env!("CARGO_BIN_EXE_quartier");

/// Slots settled with a buy of every household (prosumers also sell), from
/// the devnet's output.
fn full_slots(log: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("slot ")?;
            let (slot, rest) = rest.split_once(" settled: ")?;
            let (_, rest) = rest.split_once(" orders (")?;
            let (buys, _) = rest.split_once(" buys)")?;
            (buys.parse::<usize>().ok()? == HOUSEHOLDS).then(|| slot.parse().ok())?
        })
        .collect()
}

fn quartier(args: &[&str]) -> (bool, String) {
    let out = Command::new(EXE).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn households_trade_through_shielded_orders_no_one_can_attribute() {
    let dir = scratch("mode-a");
    let log_path = std::env::temp_dir().join("quartier-mode-a-devnet.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _devnet = ProcessGroup::spawn(
        Command::new(EXE)
            .args(["devnet", "--privacy", "shielded", "--ring-size", "16"])
            .args(["--slot-seconds", "10", "--households", "37"])
            .args(["--prosumers", "27"])
            .args(["--base-port", &BASE_PORT.to_string(), "--dir"])
            .arg(&dir)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log)),
    );
    let url = format!("http://127.0.0.1:{}", BASE_PORT + 1);
    let api = NodeClient::new(&url).unwrap();
    let slots = wait_for(
        "20 slots settled with a buy of every household",
        Duration::from_secs(600),
        || {
            let s = full_slots(&log_path);
            (s.len() >= SLOTS).then_some(s)
        },
    );

    // A validator is meant to run on a meter: after 20 slots of 37
    // households each holds less than 150 MB (issue 19; it was 5.3 GB when
    // the p2p mailboxes were sized from a 100 000-a-second quota).
    for i in 0..4u16 {
        let node = NodeClient::new(&format!("http://127.0.0.1:{}", BASE_PORT + 2 * i + 1)).unwrap();
        let (_, metrics) = node.get_text("/metrics").unwrap();
        let rss: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("runtime_process_rss "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("validator {i} reports no RSS"));
        println!("validator {i}: {} MB resident", rss / 1_000_000);
        assert!(rss < 150_000_000, "validator {i} holds {rss} bytes");
    }

    // Everyone can re-run every settlement from public data.
    let mut payees = BTreeSet::new();
    let mut traded = 0u64;
    for slot in &slots[..SLOTS] {
        let (ok, out) = quartier(&[
            "verify-slot",
            "--node",
            &url,
            "--region",
            "1",
            "--slot",
            &slot.to_string(),
        ]);
        assert!(ok && out.starts_with("MATCH"), "slot {slot}: {out}");
        let (_, v) = api.get(&format!("/api/v1/regions/1/slots/{slot}")).unwrap();
        let settlement = &v["settlement"];
        traded += settlement["clearing"]["totals"]["local_energy"]
            .as_u64()
            .unwrap();
        let orders = settlement["orders"].as_array().unwrap();
        let buys = orders
            .iter()
            .filter(|o| o["order"]["side"] == "buy")
            .count();
        assert_eq!(buys, HOUSEHOLDS, "every meter buys, every slot");
        let sells = orders.len() - buys;
        assert!((1..=PROSUMERS).contains(&sells), "one sell per PV at most");
        for o in orders {
            // No order names its meter; each names a payee never seen before.
            assert_eq!(o["meter"], "0".repeat(64), "{o}");
            let payee = o["shielded"]["payee"].to_string();
            assert!(payees.insert(payee), "a payee address used twice: {o}");
        }
    }
    assert!(traded > 0, "households traded energy locally");

    // No transaction is signed by a meter or carries a meter's key anywhere
    // in its bytes; one-time signers are never reused.
    let (_, registry) = api.get("/api/v1/regions/1/meters").unwrap();
    let meters: Vec<String> = registry["meters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["meter"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(meters.len(), HOUSEHOLDS);
    let (_, status) = api.get("/api/v1/status").unwrap();
    let height = status["height"].as_u64().unwrap();
    let mut one_time = BTreeSet::new();
    let mut shielded_orders = 0;
    for h in 1..=height {
        let (_, block) = api.get(&format!("/api/v1/blocks/{h}?full=true")).unwrap();
        for tx in block["txs"].as_array().unwrap() {
            let hex_bytes = tx["tx"].as_str().unwrap();
            let signed = SignedTx::decode(&hex::decode(hex_bytes).unwrap()).unwrap();
            let signer = signed.tx.signer.to_string();
            assert!(!meters.contains(&signer), "a meter signed a transaction");
            // Only the DSO's registration names a meter.
            if !matches!(signed.tx.body, TxBody::RegisterMeter { .. }) {
                assert!(
                    !meters.iter().any(|m| hex_bytes.contains(m.as_str())),
                    "a meter's key in {:?}",
                    signed.tx.body
                );
            }
            if let TxBody::PlaceShieldedOrder { .. } = signed.tx.body {
                assert!(one_time.insert(signer), "a one-time signer reused");
                shielded_orders += 1;
            }
        }
    }
    assert!(shielded_orders >= SLOTS * HOUSEHOLDS, "{shielded_orders}");

    // The auditor on the chain's public data (its answer key derived from
    // the devnet households' wallet seeds): no originator to read, so it
    // attributes orders only by amount, price and side — far from the 100 %
    // of the transparent mode. Cover orders carry nothing and are skipped.
    let (ok, out) = quartier(&[
        "audit",
        "--json",
        "--slots",
        &SLOTS.to_string(),
        "--node",
        &url,
        "--truth",
        dir.join("meters.json").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let audit: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Every order is a household's: none pays an address no household's
    // wallet derives (such an order would be left out and counted).
    assert_eq!(audit["foreign_orders"], 0, "{}", audit["foreign_orders"]);
    let reports = &audit["reports"];
    assert_eq!(reports[0]["view"], "shielded (as published)", "{reports}");
    let orders = reports[0]["orders"].as_u64().unwrap();
    assert!(
        orders > 0 && orders <= (SLOTS * (HOUSEHOLDS + PROSUMERS)) as u64,
        "{reports}"
    );
    println!("{}", serde_json::to_string_pretty(&audit).unwrap());
    // Orders of households without PV are linked to their household at
    // most 3 × chance (issue 17). Under net metering, on this June morning,
    // only they buy while the sun shines and the side of an order is public:
    // a buy hid among them alone (9.8 %, 3.6 × chance). Gross metering makes
    // every household buy its load. Prosumers' figure is reported.
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap();
    let chance = f(&reports[0], "chance");
    assert!(
        f(&reports[0], "top1_consumers") <= 3.0 * chance,
        "{reports}"
    );
    // Under gross metering a buy's amount says nothing this adversary can
    // tie to a registry entry, so the bound above guards against the side
    // leak (net metering: 9.8 %) and nothing more; all orders together
    // (sells are PV-shaped) scored 11.3 % in the last run, 19.7–20.4 %
    // under net metering.
    assert!(f(&reports[0], "top1") <= 6.0 * chance, "{reports}");
    // The cryptographic adversary on the published bytes: no signer named,
    // nothing reused, no ring shrunk by public amounts, decoy age and
    // arrival order no better than 3 × chance.
    let c = &audit["cryptographic"];
    for attack in [
        "authorisations_named",
        "inputs_named",
        "key_image_repeats",
        "signer_repeats",
        "payee_repeats",
        "real_ruled_out",
        "rings_collapsed",
    ] {
        assert_eq!(c[attack], 0, "{attack}: {c}");
    }
    assert!(
        c["orders"].as_u64().unwrap() >= (SLOTS * HOUSEHOLDS / 2) as u64,
        "{c}"
    );
    assert!(c["inputs"].as_u64().unwrap() > 0, "{c}");
    // An output offered again keeps its first ring (else two rings under
    // one key image intersect), which a larger escrow may no longer fit:
    // a member of such a ring can fall to public amounts (1 of 3 600 in a
    // run, 17 of 3 184 in another: more orders given up, more rings
    // offered again); no ring collapses (asserted above).
    assert!(f(c, "effective_ring_after_amounts") >= 15.5, "{c}");
    assert!(f(c, "effective_ring") >= 15.5, "{c}");
    for attack in [
        "newest_member_top1",
        "oldest_member_top1",
        "recent_hidden_top1",
        "recent_settlement_top1",
    ] {
        assert!(f(c, attack) <= 3.0 * f(c, "ring_chance"), "{attack}: {c}");
    }
    assert!(
        f(c, "position_linking_top1") <= 3.0 * f(c, "position_linking_chance"),
        "{c}"
    );

    // A household's wallet, restored from its seed alone, finds its outputs.
    // (The last household has no PV: it buys, so it spends.)
    let household = dir.join("wallets/household-36.key");
    let seed = |p: &Path| p.to_str().unwrap().to_string();
    let (ok, history) = quartier(&[
        "wallet",
        "history",
        "--seed",
        &seed(&household),
        "--node",
        &url,
    ]);
    assert!(ok, "{history}");
    assert!(history.contains("to the wallet's address"), "{history}");
    assert!(
        history.contains(" spent "),
        "the top-up or change was spent: {history}"
    );

    // A new wallet: shield 5 CHF from the utility, unshield 2 CHF to an account.
    let fresh = dir.join("fresh-wallet.key");
    let (ok, out) = quartier(&["keygen", "--out", &seed(&fresh)]);
    assert!(ok, "{out}");
    let utility = dir.join("keys/utility.key");
    let fresh_seed = seed(&fresh);
    let wallet = |args: &[&str]| {
        let mut all = vec!["wallet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--seed", &fresh_seed, "--node", &url]);
        quartier(&all)
    };
    let (ok, out) = wallet(&["shield", "--from", &seed(&utility), "--rappen", "500"]);
    assert!(ok, "{out}");
    let (ok, out) = wallet(&["balance"]);
    assert!(ok && out.starts_with("5.00 CHF in 1 unspent"), "{out}");
    let payee = dir.join("payee.key");
    let (ok, out) = quartier(&["keygen", "--out", &seed(&payee)]);
    assert!(ok, "{out}");
    let to = out.split_whitespace().last().unwrap().to_string();
    // The unshield is authorised by a household's meter, anonymously among
    // the region's meters (one a slot).
    let meter = seed(&dir.join("meters/household-36.key"));
    let (ok, out) = wallet(&[
        "unshield", "--meter", &meter, "--to", &to, "--rappen", "200",
    ]);
    assert!(ok, "{out}");
    let (ok, out) = wallet(&["balance"]);
    assert!(ok && out.starts_with("3.00 CHF in 1 unspent"), "{out}");
    let (_, account) = api.get(&format!("/api/v1/accounts/{to}")).unwrap();
    assert_eq!(account["balance"], 200_000_000u64, "{account}");
    // Spending more than it has is refused by the wallet, with exit code 2.
    let out = Command::new(EXE)
        .args(["wallet", "unshield", "--meter", &meter, "--to", &to])
        .args(["--rappen", "1000"])
        .args(["--seed", &seed(&fresh), "--node", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
