//! The auditor on runs whose right answers are known.

use quartier_meter::StrategyKind;
use quartier_meter::metering::Metering;
use quartier_sim::view::{PublicOrder, RegistryEntry, sim_meter};
use quartier_sim::{
    AuditReport, GroundTruth, PrivacyMode, Profiles, PublicView, RunRecorder, SimPlan, audit,
    default_params, run_observed,
};
use quartier_types::{Energy, Price, Side};

fn recorded(plan: &SimPlan) -> (PublicView, GroundTruth) {
    let mut recorder = RunRecorder::new(plan, PrivacyMode::Transparent);
    run_observed(plan, Profiles::embedded().unwrap(), &mut recorder).unwrap();
    recorder.finish()
}

fn plan(households: u32, prosumers: u32, days: u32, seed: u64) -> SimPlan {
    crate::properties::plan(households, prosumers, days, seed, StrategyKind::Mixed)
}

fn attack(view: &PublicView, truth: &GroundTruth) -> AuditReport {
    audit(view, truth, &Profiles::embedded().unwrap(), "test").unwrap()
}

#[test]
fn transparent_orders_name_their_household() {
    let (view, truth) = recorded(&plan(12, 8, 3, 1));
    assert!(view.orders.len() > 1_000);
    let r = attack(&view, &truth);
    assert!(r.top1 >= 0.99, "top-1 {}", r.top1);
    assert_eq!(r.degree_of_anonymity, 0.0);
    assert_eq!(r.anonymity_set, 1.0);
    assert!(r.linking_top1 >= 0.99, "linking {}", r.linking_top1);
    assert!(r.profile_error < 1e-9, "profile error {}", r.profile_error);
}

#[test]
fn without_originators_amounts_still_leak_but_less() {
    let (view, truth) = recorded(&plan(12, 8, 7, 2));
    let r = attack(&view.without_originators(), &truth);
    assert!(r.top1 < 0.99, "top-1 {}", r.top1);
    assert!(
        r.top1 > r.chance,
        "top-1 {} not above chance {}",
        r.top1,
        r.chance
    );
    assert!(r.degree_of_anonymity > 0.0 && r.degree_of_anonymity < 1.0);
    assert!(r.profile_error > 0.0);
}

/// A synthetic sunny week: `kwp[i]` for each prosumer, each selling what
/// its PV makes beyond a mean home's load at noon, no originators shown.
fn sunny_sells(kwp: &[u32]) -> (PublicView, GroundTruth) {
    let profiles = Profiles::embedded().unwrap();
    let registry: Vec<RegistryEntry> = (0u32..)
        .zip(kwp)
        .map(|(i, &k)| RegistryEntry {
            meter: sim_meter(11, i),
            prosumer: true,
            pv_watts: k * 1_000,
        })
        .collect();
    let start = 171 * 96;
    let (mut orders, mut order_households) = (Vec::new(), Vec::new());
    let mut net_wh = vec![Vec::new(); kwp.len()];
    let slots = 7 * 96u64;
    for slot in 0..slots {
        let t = (start + slot) as usize;
        for (h, &k) in (0u32..).zip(kwp) {
            let net =
                (profiles.load[t] * 4_000.0 - profiles.pv[t] * f64::from(k) * 925.0).round() as i64;
            net_wh[h as usize].push(net);
            if net < 0 {
                orders.push(PublicOrder {
                    slot,
                    position: h,
                    originator: None,
                    side: Side::Sell,
                    limit: Price::new(9_000),
                    energy: Energy::new(net.unsigned_abs()),
                });
                order_households.push(h);
            }
        }
    }
    let truth = GroundTruth {
        meters: registry.iter().map(|r| r.meter).collect(),
        order_households,
        net_wh,
    };
    let view = PublicView {
        mode: PrivacyMode::Transparent,
        params: default_params(),
        start_interval: start,
        slots,
        metering: Metering::Net,
        registry,
        orders,
    };
    (view, truth)
}

#[test]
fn a_household_with_a_unique_pv_size_is_found() {
    let (view, truth) = sunny_sells(&[5, 5, 5, 12, 5, 5, 5, 5]);
    let r = attack(&view, &truth);
    // Household 3's sells are found every time; the seven alike are not
    // told apart: top-1 = (its share) + (the rest's share) / 7.
    let total = view.orders.len() as f64;
    let unique = truth.order_households.iter().filter(|&&h| h == 3).count() as f64;
    let expected = unique / total + (total - unique) / total / 7.0;
    assert!(unique > 0.0);
    assert!(
        (r.top1 - expected).abs() < 0.02,
        "top-1 {} vs {expected}",
        r.top1
    );
    let only_it = PublicView {
        orders: view
            .orders
            .iter()
            .zip(&truth.order_households)
            .filter(|(_, h)| **h == 3)
            .map(|(o, _)| *o)
            .collect(),
        ..view.clone()
    };
    let its_truth = GroundTruth {
        order_households: vec![3; only_it.orders.len()],
        ..truth.clone()
    };
    let mine = attack(&only_it, &its_truth);
    assert_eq!(mine.top1, 1.0, "the unique PV size must give it away");
    // And it is less anonymous than the others: their best guesses are
    // spread over seven alike systems.
    assert!(
        mine.degree_of_anonymity < 0.5 && mine.degree_of_anonymity < r.degree_of_anonymity,
        "{} vs {}",
        mine.degree_of_anonymity,
        r.degree_of_anonymity
    );
}

#[test]
fn identical_households_are_not_told_apart_better_than_chance() {
    // Eight identical prosumers, each selling the same 500 Wh at the same
    // limit every slot, in an order that rotates with the slot.
    let n = 8u32;
    let registry: Vec<RegistryEntry> = (0..n)
        .map(|i| RegistryEntry {
            meter: sim_meter(9, i),
            prosumer: true,
            pv_watts: 6_000,
        })
        .collect();
    let mut orders = Vec::new();
    let mut order_households = Vec::new();
    let slots = 200u64;
    for slot in 0..slots {
        for position in 0..n {
            orders.push(PublicOrder {
                slot,
                position,
                originator: None,
                side: Side::Sell,
                limit: Price::new(9_000),
                energy: Energy::new(500),
            });
            order_households.push((position + slot as u32) % n);
        }
    }
    let view = PublicView {
        mode: PrivacyMode::Transparent,
        params: default_params(),
        start_interval: 172 * 96 + 48,
        slots,
        metering: Metering::Net,
        registry: registry.clone(),
        orders,
    };
    let truth = GroundTruth {
        meters: registry.iter().map(|r| r.meter).collect(),
        order_households,
        net_wh: vec![vec![-500; slots as usize]; n as usize],
    };
    let r = attack(&view, &truth);
    assert!((r.top1 - 1.0 / 8.0).abs() < 1e-9, "top-1 {}", r.top1);
    assert!((r.top5 - 5.0 / 8.0).abs() < 1e-9, "top-5 {}", r.top5);
    assert!((r.degree_of_anonymity - 1.0).abs() < 1e-9);
    assert!((r.effective_anonymity_set - 8.0).abs() < 1e-6);
    assert!(r.linking_top1 <= r.linking_chance + 1e-9);
}

#[test]
fn a_truth_for_another_run_is_refused() {
    let (view, mut truth) = recorded(&plan(4, 2, 1, 4));
    truth.order_households.pop();
    assert!(audit(&view, &truth, &Profiles::embedded().unwrap(), "x").is_err());
}

/// Issue 17: in a sunny week under net metering only the households without
/// PV buy at noon, so a buy's side alone narrows it to them and the auditor
/// finds consumers well above chance. Gross metering (every household buys
/// its whole load) takes that away: consumers' buys are found no better
/// than any household's.
#[test]
fn gross_metering_hides_which_buyers_have_no_pv() {
    let consumers_found = |metering| {
        let plan = SimPlan {
            start_day: 160,
            metering,
            ..plan(16, 12, 5, 3)
        };
        let (view, truth) = recorded(&plan);
        let r = attack(&view.without_originators(), &truth);
        (r.top1_consumers, r.chance)
    };
    let (net, chance) = consumers_found(Metering::Net);
    let (gross, _) = consumers_found(Metering::Gross);
    assert!(net > 2.0 * chance, "net: consumers {net}, chance {chance}");
    assert!(
        gross < 1.5 * chance,
        "gross: consumers {gross}, chance {chance}"
    );
}
