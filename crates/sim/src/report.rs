//! What a run measured: community figures, prices and every household's bill
//! against its utility-only bill.
//!
//! Energies are whole Wh and money whole µRp, as on chain; only the ratios and
//! the display columns are floating point.

use crate::household::{HouseholdSpec, Reading};
use crate::plan::{SimPlan, signed};
use quartier_auction::{Clearing, OrderResult};
use quartier_meter::StrategyKind;
use quartier_types::{Energy, Order, Price, RegionParams, Side};
use serde::Serialize;
use std::fmt::Write as _;

/// One household over the run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HouseholdReport {
    /// Position in the neighbourhood.
    pub index: u32,
    /// Whether it has PV.
    pub prosumer: bool,
    /// Drawn annual consumption, kWh.
    pub annual_kwh: f64,
    /// PV peak power, kWp.
    pub pv_kwp: f64,
    /// The strategy it bid with.
    pub strategy: &'static str,
    /// Energy used, Wh.
    pub consumed_wh: u64,
    /// Energy produced, Wh.
    pub produced_wh: u64,
    /// Own PV used behind the meter, Wh.
    pub self_consumed_wh: u64,
    /// Bought from neighbours, Wh.
    pub bought_local_wh: u64,
    /// Bought from the utility, Wh.
    pub imported_wh: u64,
    /// Sold to neighbours, Wh.
    pub sold_local_wh: u64,
    /// Sold to the utility, Wh.
    pub exported_wh: u64,
    /// What it paid minus what it received in the market, µRp.
    pub market_bill_urp: i128,
    /// The same with the utility alone: every net import at the grid tariff,
    /// every net export at the feed-in tariff, µRp.
    pub utility_only_bill_urp: i128,
}

impl HouseholdReport {
    /// An empty report for the household `spec`.
    pub fn new(spec: &HouseholdSpec, strategy: StrategyKind) -> HouseholdReport {
        let strategy = strategy.for_household(spec.index).name();
        HouseholdReport {
            index: spec.index,
            prosumer: spec.is_prosumer(),
            annual_kwh: spec.annual_kwh,
            pv_kwp: spec.pv_kwp,
            strategy,
            consumed_wh: 0,
            produced_wh: 0,
            self_consumed_wh: 0,
            bought_local_wh: 0,
            imported_wh: 0,
            sold_local_wh: 0,
            exported_wh: 0,
            market_bill_urp: 0,
            utility_only_bill_urp: 0,
        }
    }

    /// Adds a meter reading, and what the utility alone would bill for it
    /// (its net import at the grid tariff or its net export at the feed-in
    /// tariff, whichever flows the household ordered).
    pub fn record_reading(&mut self, r: &Reading, params: &RegionParams) {
        self.consumed_wh += r.consumed.get();
        self.produced_wh += r.produced.get();
        self.self_consumed_wh += r.self_consumed().get();
        let net = r.net_wh();
        let at = |price: Price| {
            Energy::new(net.unsigned_abs())
                .value_at(price)
                .map_or(i128::MAX, signed)
        };
        if net > 0 {
            self.utility_only_bill_urp += at(params.grid_tariff());
        } else {
            self.utility_only_bill_urp -= at(params.feed_in_tariff());
        }
    }

    /// Adds the result of one of the household's orders.
    pub fn record_result(&mut self, order: &Order, result: &OrderResult) {
        match order.side {
            Side::Buy => {
                self.bought_local_wh += result.matched.get();
                self.imported_wh += result.to_grid.get();
                self.market_bill_urp += signed(result.pays);
            }
            Side::Sell => {
                self.sold_local_wh += result.matched.get();
                self.exported_wh += result.to_grid.get();
                self.market_bill_urp -= signed(result.receives);
            }
        }
    }

    /// What the market saved the household against the utility alone, µRp.
    pub fn saving_urp(&self) -> i128 {
        self.utility_only_bill_urp - self.market_bill_urp
    }
}

/// Energy traded at each price, for exact weighted percentiles.
#[derive(Clone, Debug)]
pub struct PriceHistogram {
    floor: u64,
    energy: Vec<u64>,
}

impl PriceHistogram {
    /// An empty histogram over the admissible band of `params`.
    pub fn new(params: &RegionParams) -> PriceHistogram {
        let floor = params.feed_in_tariff().get();
        let width = params.grid_tariff().get() - floor + 1;
        PriceHistogram {
            floor,
            energy: vec![0; usize::try_from(width).unwrap_or(0)],
        }
    }

    /// Adds `energy` traded at `price` (which lies in the band).
    pub fn add(&mut self, price: Price, energy: Energy) {
        let i = price.get().saturating_sub(self.floor) as usize;
        if let Some(slot) = self.energy.get_mut(i) {
            *slot += energy.get();
        }
    }

    /// Energy-weighted mean, 5th and 95th percentile, or `None` without trades.
    pub fn stats(&self) -> Option<PriceStats> {
        let total: u128 = self.energy.iter().map(|&e| u128::from(e)).sum();
        if total == 0 {
            return None;
        }
        let value: u128 = (0u64..)
            .zip(&self.energy)
            .map(|(i, &e)| u128::from(e) * u128::from(self.floor + i))
            .sum();
        let percentile = |p: u128| {
            let target = (total * p).div_ceil(100);
            let mut seen = 0u128;
            for (i, &e) in (0u64..).zip(&self.energy) {
                seen += u128::from(e);
                if seen >= target && e > 0 {
                    return self.floor + i;
                }
            }
            self.floor + self.energy.len() as u64 - 1
        };
        Some(PriceStats {
            mean: u64::try_from(value / total).unwrap_or(u64::MAX),
            p5: percentile(5),
            p95: percentile(95),
        })
    }
}

/// Trade price statistics, mRp/kWh, weighted by energy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PriceStats {
    /// Mean (floored).
    pub mean: u64,
    /// 5th percentile.
    pub p5: u64,
    /// 95th percentile.
    pub p95: u64,
}

/// The community in one slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SlotSeries {
    /// Quarter hour since the start of the run.
    pub slot: u64,
    /// The slot's energy.
    #[serde(flatten)]
    pub energy: EnergyTotals,
    /// Energy-weighted mean trade price, mRp/kWh.
    pub price: Option<u64>,
    /// Orders in the book.
    pub orders: usize,
}

impl SlotSeries {
    /// The figures of one cleared slot.
    pub fn new(
        slot: u64,
        readings: &[Reading],
        clearing: &Clearing,
        price: Option<Price>,
    ) -> SlotSeries {
        SlotSeries {
            slot,
            energy: EnergyTotals {
                consumed_wh: readings.iter().map(|r| r.consumed.get()).sum(),
                produced_wh: readings.iter().map(|r| r.produced.get()).sum(),
                self_consumed_wh: readings.iter().map(|r| r.self_consumed().get()).sum(),
                local_wh: clearing.totals.local_energy.get(),
                imported_wh: clearing.totals.grid_import.get(),
                exported_wh: clearing.totals.grid_export.get(),
            },
            price: price.map(Price::get),
            orders: clearing.orders.len(),
        }
    }
}

/// Community energy (of a slot or of the run), Wh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EnergyTotals {
    /// Used.
    pub consumed_wh: u64,
    /// Produced by PV.
    pub produced_wh: u64,
    /// PV used behind the meter.
    pub self_consumed_wh: u64,
    /// Traded between neighbours.
    pub local_wh: u64,
    /// From the utility.
    pub imported_wh: u64,
    /// To the utility.
    pub exported_wh: u64,
}

impl std::ops::AddAssign for EnergyTotals {
    fn add_assign(&mut self, o: EnergyTotals) {
        self.consumed_wh += o.consumed_wh;
        self.produced_wh += o.produced_wh;
        self.self_consumed_wh += o.self_consumed_wh;
        self.local_wh += o.local_wh;
        self.imported_wh += o.imported_wh;
        self.exported_wh += o.exported_wh;
    }
}

/// The result of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SimReport {
    /// What was run.
    pub plan: SimPlan,
    /// The community's energy.
    pub energy: EnergyTotals,
    /// Share of consumption met by the community's PV (behind the meter or
    /// bought from a neighbour).
    pub self_sufficiency: f64,
    /// Share of PV production used in the community (behind the meter or sold
    /// to a neighbour).
    pub community_self_consumption: f64,
    /// Local trade prices, if there were trades.
    pub price: Option<PriceStats>,
    /// Sum of all market bills, µRp.
    pub market_bills_urp: i128,
    /// Sum of all utility-only bills, µRp.
    pub utility_only_bills_urp: i128,
    /// What the community saved with the market, µRp.
    pub community_saving_urp: i128,
    /// Every household.
    pub households: Vec<HouseholdReport>,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl SimReport {
    /// Sums the households and slots of a finished run.
    pub fn new(
        plan: &SimPlan,
        households: Vec<HouseholdReport>,
        prices: &PriceHistogram,
        series: &[SlotSeries],
    ) -> SimReport {
        let mut e = EnergyTotals::default();
        for s in series {
            e += s.energy;
        }
        let local_use = e.self_consumed_wh + e.local_wh;
        let market: i128 = households.iter().map(|h| h.market_bill_urp).sum();
        let utility: i128 = households.iter().map(|h| h.utility_only_bill_urp).sum();
        SimReport {
            plan: *plan,
            energy: e,
            self_sufficiency: ratio(local_use, e.consumed_wh),
            community_self_consumption: ratio(local_use, e.produced_wh),
            price: prices.stats(),
            market_bills_urp: market,
            utility_only_bills_urp: utility,
            community_saving_urp: utility - market,
            households,
        }
    }

    /// The report as a Markdown table, then one row per household.
    pub fn table(&self) -> String {
        let kwh = |wh: u64| format!("{:.0} kWh", wh as f64 / 1_000.0);
        let chf = |urp: i128| format!("{:.2} CHF", urp as f64 / 1e8);
        let rp = |mrp: u64| format!("{:.2} Rp/kWh", mrp as f64 / 1_000.0);
        let p = &self.plan;
        let e = &self.energy;
        let mut out = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "| {k} | {v} |");
        };
        row(
            "quartier sim",
            format!(
                "{} households ({} prosumers), {} days, seed {}, strategy {}",
                p.households,
                p.prosumers,
                p.days,
                p.seed,
                p.strategy.name()
            ),
        );
        row("---", "---".into());
        row("energy consumed", kwh(e.consumed_wh));
        row("PV produced", kwh(e.produced_wh));
        row("self-consumed behind the meter", kwh(e.self_consumed_wh));
        row("traded locally", kwh(e.local_wh));
        row("imported from the utility", kwh(e.imported_wh));
        row("exported to the utility", kwh(e.exported_wh));
        row(
            "self-sufficiency",
            format!("{:.1} %", 100.0 * self.self_sufficiency),
        );
        row(
            "community self-consumption",
            format!("{:.1} %", 100.0 * self.community_self_consumption),
        );
        match self.price {
            Some(s) => row(
                "trade price mean / p5 / p95",
                format!("{} / {} / {}", rp(s.mean), rp(s.p5), rp(s.p95)),
            ),
            None => row("trade price", "no local trades".into()),
        }
        row("market bills (all)", chf(self.market_bills_urp));
        row("utility-only bills (all)", chf(self.utility_only_bills_urp));
        row("community saving", chf(self.community_saving_urp));
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| household | PV | strategy | consumed | produced | local buy | local sell | bill | utility-only | saving |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for h in &self.households {
            let _ = writeln!(
                out,
                "| {} | {:.1} kWp | {} | {} | {} | {} | {} | {} | {} | {} |",
                h.index,
                h.pv_kwp,
                h.strategy,
                kwh(h.consumed_wh),
                kwh(h.produced_wh),
                kwh(h.bought_local_wh),
                kwh(h.sold_local_wh),
                chf(h.market_bill_urp),
                chf(h.utility_only_bill_urp),
                chf(h.saving_urp()),
            );
        }
        out
    }

    /// The households as CSV (one row each).
    pub fn households_csv(&self) -> String {
        let mut out = String::from(
            "index,prosumer,pv_kwp,strategy,consumed_wh,produced_wh,self_consumed_wh,bought_local_wh,imported_wh,sold_local_wh,exported_wh,market_bill_urp,utility_only_bill_urp\n",
        );
        for h in &self.households {
            let _ = writeln!(
                out,
                "{},{},{:.3},{},{},{},{},{},{},{},{},{},{}",
                h.index,
                h.prosumer,
                h.pv_kwp,
                h.strategy,
                h.consumed_wh,
                h.produced_wh,
                h.self_consumed_wh,
                h.bought_local_wh,
                h.imported_wh,
                h.sold_local_wh,
                h.exported_wh,
                h.market_bill_urp,
                h.utility_only_bill_urp
            );
        }
        out
    }
}

/// The per-slot series as CSV (one row per quarter hour).
pub fn slots_csv(series: &[SlotSeries]) -> String {
    let mut out = String::from(
        "slot,consumed_wh,produced_wh,self_consumed_wh,local_wh,imported_wh,exported_wh,price_mrp_per_kwh,orders\n",
    );
    for s in series {
        let price = s.price.map(|p| p.to_string()).unwrap_or_default();
        let e = &s.energy;
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            s.slot,
            e.consumed_wh,
            e.produced_wh,
            e.self_consumed_wh,
            e.local_wh,
            e.imported_wh,
            e.exported_wh,
            price,
            s.orders
        );
    }
    out
}
