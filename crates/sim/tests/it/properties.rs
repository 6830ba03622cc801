//! Properties of offline runs: no household loses against the utility, energy
//! balances per household, and a seed fixes the report byte for byte.

use proptest::prelude::*;
use quartier_meter::StrategyKind;
use quartier_sim::{Profiles, SimPlan, SimReport, default_params, run};
use quartier_types::{Price, RegionParams};

pub(crate) fn plan(
    households: u32,
    prosumers: u32,
    days: u32,
    seed: u64,
    strategy: StrategyKind,
) -> SimPlan {
    SimPlan {
        households,
        prosumers,
        days,
        start_day: 1,
        seed,
        strategy,
        params: default_params(),
        lot_wh: 0,
        metering: quartier_meter::metering::Metering::Net,
    }
}

fn report(plan: &SimPlan) -> SimReport {
    run(plan, Profiles::embedded().unwrap(), &mut |_, _| {})
        .unwrap()
        .0
}

/// Every household's energy is accounted for and its bill is at most the
/// utility-only bill; the community's saving is the sum of the households'.
fn check(report: &SimReport) -> Result<(), TestCaseError> {
    let mut saving = 0i128;
    for h in &report.households {
        prop_assert_eq!(
            h.consumed_wh - h.self_consumed_wh,
            h.bought_local_wh + h.imported_wh,
            "household {} buys exactly what it lacks",
            h.index
        );
        prop_assert_eq!(
            h.produced_wh - h.self_consumed_wh,
            h.sold_local_wh + h.exported_wh,
            "household {} sells exactly its surplus",
            h.index
        );
        prop_assert!(
            h.market_bill_urp <= h.utility_only_bill_urp,
            "household {} ({}) pays {} µRp in the market but {} with the utility alone",
            h.index,
            h.strategy,
            h.market_bill_urp,
            h.utility_only_bill_urp
        );
        saving += h.saving_urp();
    }
    prop_assert_eq!(saving, report.community_saving_urp);
    let e = &report.energy;
    let bought: u64 = report.households.iter().map(|h| h.bought_local_wh).sum();
    let sold: u64 = report.households.iter().map(|h| h.sold_local_wh).sum();
    prop_assert_eq!(bought, e.local_wh);
    prop_assert_eq!(sold, e.local_wh);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Limits always lie in [feed-in, grid], so whatever a strategy does, a
    /// household's market bill never exceeds its utility-only bill.
    #[test]
    fn no_household_pays_more_than_with_the_utility_alone(
        kind in 0usize..5,
        households in 1u32..14,
        prosumer_share in 0u32..=100,
        days in 1u32..3,
        start_day in 1u32..=365,
        start_seed in any::<u64>(),
    ) {
        let prosumers = households * prosumer_share / 100;
        let mut p = plan(households, prosumers, days, start_seed, StrategyKind::ALL[kind]);
        p.start_day = start_day;
        let r = report(&p);
        check(&r)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Gross metering (mode A's rule: a buy of the consumption, a sell of
    /// the production) moves money only among the households, except where
    /// a slot leaves energy unmatched on both sides (the utility bills
    /// orders, not meters): the community's bill differs from net
    /// metering's by exactly the change in energy that went to and from the
    /// grid at once × (grid − feed-in), plus the local fee on the change in
    /// local trade, to the µRp; and a household without PV
    /// still never pays more than with the utility alone. A prosumer may:
    /// its own PV passes through the book at the book's prices (docs/src/mode-a.md,
    /// "Amounts leak").
    #[test]
    fn gross_metering_redistributes_within_the_community(
        kind in 0usize..5,
        households in 1u32..14,
        prosumer_share in 0u32..=100,
        days in 1u32..3,
        start_day in 1u32..=365,
        start_seed in any::<u64>(),
    ) {
        let prosumers = households * prosumer_share / 100;
        let mut p = plan(households, prosumers, days, start_seed, StrategyKind::ALL[kind]);
        p.start_day = start_day;
        let net = report(&p);
        p.metering = quartier_meter::metering::Metering::Gross;
        let gross = report(&p);
        let total = |r: &SimReport| r.households.iter().map(|h| h.market_bill_urp).sum::<i128>();
        let (n, g) = (&net.energy, &gross.energy);
        let wh = |x: u64| i128::from(x);
        // The grid's net flow is physics, the same under both rules; what
        // changes is how much goes both ways at once (more or less: more
        // orders unmatched on both sides, or more crossing locally).
        let both_ways = wh(g.imported_wh) - wh(n.imported_wh);
        prop_assert_eq!(both_ways, wh(g.exported_wh) - wh(n.exported_wh));
        let tariff = |price: quartier_types::Price| i128::from(price.get());
        let spread = tariff(p.params.grid_tariff()) - tariff(p.params.feed_in_tariff());
        let fees = (wh(g.local_wh) - wh(n.local_wh)) * tariff(p.params.local_fee());
        let extra = both_ways * spread + fees;
        prop_assert_eq!(total(&gross) - total(&net), extra);
        prop_assert_eq!(net.community_saving_urp - gross.community_saving_urp, extra);
        for h in gross.households.iter().filter(|h| !h.prosumer) {
            prop_assert!(
                h.market_bill_urp <= h.utility_only_bill_urp,
                "household {} pays {} µRp, {} with the utility alone",
                h.index,
                h.market_bill_urp,
                h.utility_only_bill_urp
            );
        }
    }
}

#[test]
fn every_strategy_trades_and_saves_in_the_first_week() {
    for kind in StrategyKind::ALL {
        let r = report(&plan(20, 12, 7, 3, kind));
        check(&r).unwrap();
        assert!(r.energy.local_wh > 0, "{kind:?} traded nothing");
        assert!(r.community_saving_urp > 0, "{kind:?} saved nothing");
        // The local market saves exactly (grid − feed-in) per local kWh.
        let p = default_params();
        let spread = i128::from(p.grid_tariff().get() - p.feed_in_tariff().get());
        assert_eq!(
            r.community_saving_urp,
            i128::from(r.energy.local_wh) * spread,
            "{kind:?}"
        );
    }
}

#[test]
fn a_local_fee_goes_to_the_dso_not_to_the_households() {
    let mut p = plan(20, 12, 3, 5, StrategyKind::Random);
    p.params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(2_000)).unwrap();
    let r = report(&p);
    check(&r).unwrap();
    let spread = i128::from(20_750u64 - 4_000 - 2_000);
    assert_eq!(
        r.community_saving_urp,
        i128::from(r.energy.local_wh) * spread
    );
}

#[test]
fn the_same_seed_gives_the_same_json_byte_for_byte() {
    let a = serde_json::to_vec(&report(&plan(12, 8, 2, 42, StrategyKind::Mixed))).unwrap();
    let b = serde_json::to_vec(&report(&plan(12, 8, 2, 42, StrategyKind::Mixed))).unwrap();
    let c = serde_json::to_vec(&report(&plan(12, 8, 2, 43, StrategyKind::Mixed))).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn invalid_plans_are_refused() {
    let profiles = Profiles::embedded().unwrap();
    for bad in [
        plan(0, 0, 1, 1, StrategyKind::Fixed),
        plan(3, 4, 1, 1, StrategyKind::Fixed),
        plan(3, 1, 0, 1, StrategyKind::Fixed),
    ] {
        assert!(matches!(
            run(&bad, profiles.clone(), &mut |_, _| {}),
            Err(quartier_sim::SimError::Plan(_))
        ));
    }
}
