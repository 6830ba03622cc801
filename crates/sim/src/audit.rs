//! The privacy auditor: an adversary that sees only a run's [`PublicView`]
//! (and the public load and PV profiles) tries to link orders to households
//! and to each other, and is scored against the [`GroundTruth`].
//!
//! Attacks:
//! 1. **order → household.** An order whose originator is a registered meter
//!    names its household outright. Otherwise every registered meter is a
//!    candidate that could have placed it (a sell needs PV and at most the
//!    registered peak power for a quarter hour), weighted by how well the
//!    order's signed energy fits that meter's expected net at that time of
//!    year: mean H0 load of a 4 000 kWh home minus the public PV profile
//!    scaled by the registered kWp, with a spread that grows with both.
//! 2. **order → order.** For an order of slot `s`, which order of slot
//!    `s − 1` came from the same household: the one with the same originator
//!    if there is one, else the nearest in side, energy and limit (price
//!    habits and amount continuity).
//! 3. **profile reconstruction.** Each household's net series estimated as the
//!    orders attributed to it by attack 1 (top-1), compared with the truth.
//!
//! Metrics: top-1 and top-5 accuracy of attack 1 and top-1 of attack 2 (with
//! their chance levels), the anonymity set (candidates left by the hard
//! constraints), the effective anonymity set 2^H and the degree of anonymity
//! H / log2 N of attack 1's distribution, and the relative error of the
//! reconstructed profiles.

use crate::profiles::{INTERVALS_PER_YEAR, Profiles};
use crate::view::{GroundTruth, PublicOrder, PublicView, RegistryEntry};
use quartier_meter::metering::Metering;
use quartier_types::{AccountId, Side};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why a view and a truth can not be audited together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The truth names a different number of orders than the view shows.
    #[error("the truth covers {truth} orders, the view shows {view}")]
    OrderCount {
        /// Orders in the truth.
        truth: usize,
        /// Orders in the view.
        view: usize,
    },
    /// An order's household, or a household's meter, is not in the registry.
    #[error("household {0} of the truth has no registered meter")]
    UnknownHousehold(u32),
    /// The registry is empty.
    #[error("the registry is empty")]
    NoMeters,
    /// The truth has no reading for a slot of the view.
    #[error("the truth has no reading of slot {slot} for every household")]
    NoReading {
        /// The run slot.
        slot: u64,
    },
}

/// How well the adversary did on one view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditReport {
    /// What was attacked.
    pub view: String,
    /// Households (registered meters).
    pub households: usize,
    /// Orders attacked.
    pub orders: usize,
    /// Chance level of attack 1: 1 / households.
    pub chance: f64,
    /// Attack 1: the right household ranked first (ties among equally
    /// likely candidates broken at random, counted as the expected hit).
    pub top1: f64,
    /// Attack 1: the right household among the first five.
    pub top5: f64,
    /// Attack 1's top-1 over the orders of households without PV.
    pub top1_consumers: f64,
    /// Attack 1's top-1 over the orders of prosumers.
    pub top1_prosumers: f64,
    /// Attack 2: the same household's previous order found.
    pub linking_top1: f64,
    /// Attack 2's chance level: mean of 1 / (orders in the previous slot).
    pub linking_chance: f64,
    /// Mean number of households that could have placed an order.
    pub anonymity_set: f64,
    /// Mean effective anonymity set 2^H.
    pub effective_anonymity_set: f64,
    /// Mean degree of anonymity H / log2 N (0: identified, 1: no information).
    pub degree_of_anonymity: f64,
    /// Attack 3: mean over households of Σ|estimate − truth| / Σ|truth|.
    pub profile_error: f64,
}

/// Attack 1's belief about one order: candidates in rank order with their
/// probabilities.
pub(crate) struct Attribution {
    /// Candidates, likeliest first, with their probabilities.
    pub(crate) ranked: Vec<(usize, f64)>,
    /// How many there are.
    pub(crate) candidates: usize,
}

/// The adversary's expectation of a meter with `pv_watts` of PV in quarter
/// hour `t` of the year, Wh: its load (the H0 profile of a 4 000 kWh home)
/// and its PV output (the public PV profile at the registered size).
pub(crate) fn expected_load_and_pv(profiles: &Profiles, t: usize, pv_watts: u32) -> (f64, f64) {
    let load = profiles.load[t] * 4_000.0;
    let pv = profiles.pv[t] * f64::from(pv_watts) * 0.925;
    (load, pv)
}

/// The adversary's expectation of a meter's order in a quarter hour.
struct NetModel<'a> {
    profiles: &'a Profiles,
    /// The protocol's rule: net orders, or gross (a buy of the load, a sell
    /// of the PV output).
    metering: Metering,
}

impl NetModel<'_> {
    /// Log-likelihood of `order` having come from `meter`, or `None` if it
    /// could not have (a sell without PV or above the registered peak).
    fn score(&self, order: &PublicOrder, start: u64, meter: &RegistryEntry) -> Option<f64> {
        if order.side == Side::Sell
            && (!meter.prosumer || order.energy.get() > u64::from(meter.pv_watts) / 4)
        {
            return None;
        }
        let t = ((start + order.slot) % INTERVALS_PER_YEAR as u64) as usize;
        let (load, pv) = expected_load_and_pv(self.profiles, t, meter.pv_watts);
        let (expected, spread) = match (self.metering, order.side) {
            (Metering::Net, _) => (load - pv, 0.6 * load + 0.15 * pv + 50.0),
            // Gross: every meter buys its load, a prosumer sells its output.
            (Metering::Gross, Side::Buy) => (load, 0.6 * load + 50.0),
            (Metering::Gross, Side::Sell) => (-pv, 0.15 * pv + 50.0),
        };
        let z = (order.signed_wh() as f64 - expected) / spread;
        Some(-0.5 * z * z - spread.ln())
    }
}

fn attribute(
    view: &PublicView,
    model: &NetModel<'_>,
    index: &BTreeMap<AccountId, usize>,
    order: &PublicOrder,
) -> Attribution {
    if let Some(&i) = order.originator.as_ref().and_then(|o| index.get(o)) {
        return Attribution {
            ranked: vec![(i, 1.0)],
            candidates: 1,
        };
    }
    let scores: Vec<(usize, f64)> = view
        .registry
        .iter()
        .enumerate()
        .filter_map(|(i, m)| model.score(order, view.start_interval, m).map(|s| (i, s)))
        .collect();
    let best = scores.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = scores.iter().map(|s| (s.1 - best).exp()).sum();
    let mut ranked: Vec<(usize, f64)> = scores
        .iter()
        .map(|&(i, s)| (i, (s - best).exp() / total))
        .collect();
    // Highest probability first; equal ones in registry order (scored as
    // a random choice among them, [`Attribution::hit`]).
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Attribution {
        candidates: ranked.len(),
        ranked,
    }
}

impl Attribution {
    /// How likely `right` is among the first `k` of an adversary that breaks
    /// ties between equally likely candidates at random: 1 if fewer than `k`
    /// are likelier and all its equals fit, else the share of its equals
    /// that fit (0 if `k` or more are likelier or it is no candidate).
    pub(crate) fn hit(&self, right: usize, k: usize) -> f64 {
        let Some(&(_, p)) = self.ranked.iter().find(|r| r.0 == right) else {
            return 0.0;
        };
        let likelier = self.ranked.iter().filter(|r| r.1 > p).count();
        let equal = self.ranked.iter().filter(|r| r.1 == p).count();
        if likelier >= k {
            0.0
        } else {
            ((k - likelier) as f64 / equal as f64).min(1.0)
        }
    }
}

pub(crate) fn entropy_bits(ranked: &[(usize, f64)]) -> f64 {
    ranked
        .iter()
        .filter(|(_, p)| *p > 0.0)
        .map(|(_, p)| -p * p.log2())
        .sum()
}

/// How unlike two orders are in side, amount and price habit.
fn distance(a: &PublicOrder, b: &PublicOrder, band: f64) -> f64 {
    let side = if a.side == b.side { 0.0 } else { 1.0 };
    let ea = (a.energy.get() as f64 + 1.0).ln();
    let eb = (b.energy.get() as f64 + 1.0).ln();
    let price = (a.limit.get() as f64 - b.limit.get() as f64).abs() / band;
    side + (ea - eb).abs() + 2.0 * price
}

/// Runs the three attacks on `view`, scoring them against `truth`.
///
/// # Errors
/// [`AuditError`] if `truth` does not belong to `view`.
pub fn audit(
    view: &PublicView,
    truth: &GroundTruth,
    profiles: &Profiles,
    label: &str,
) -> Result<AuditReport, AuditError> {
    if truth.order_households.len() != view.orders.len() {
        return Err(AuditError::OrderCount {
            truth: truth.order_households.len(),
            view: view.orders.len(),
        });
    }
    let n = view.registry.len();
    if n == 0 {
        return Err(AuditError::NoMeters);
    }
    let index: BTreeMap<AccountId, usize> = view
        .registry
        .iter()
        .enumerate()
        .map(|(i, m)| (m.meter, i))
        .collect();
    // The registry entry of each household.
    let entry_of = |h: u32| -> Result<usize, AuditError> {
        truth
            .meters
            .get(h as usize)
            .and_then(|m| index.get(m))
            .copied()
            .ok_or(AuditError::UnknownHousehold(h))
    };
    let model = NetModel {
        profiles,
        metering: view.metering,
    };
    let log_n = (n as f64).log2();

    // Attack 1 and the inputs of attack 3.
    let (mut top1, mut top5, mut set, mut effective, mut degree) = (0.0, 0.0, 0.0, 0.0, 0.0);
    // (orders, right top-1) of households without PV and of prosumers.
    let mut groups = [(0usize, 0.0); 2];
    let slots = usize::try_from(view.slots).unwrap_or(0);
    let mut estimate = vec![vec![0i64; slots]; n];
    for (order, &h) in view.orders.iter().zip(&truth.order_households) {
        let right = entry_of(h)?;
        let a = attribute(view, &model, &index, order);
        let group = &mut groups[usize::from(view.registry[right].prosumer)];
        group.0 += 1;
        let hit1 = a.hit(right, 1);
        top1 += hit1;
        group.1 += hit1;
        top5 += a.hit(right, 5);
        let bits = entropy_bits(&a.ranked);
        set += a.candidates as f64;
        effective += bits.exp2();
        degree += if log_n > 0.0 { bits / log_n } else { 0.0 };
        if let Some(&(guess, _)) = a.ranked.first()
            && let Some(cell) = estimate[guess].get_mut(order.slot as usize)
        {
            *cell += order.signed_wh();
        }
    }

    // Attack 2: link each order to the previous slot's order of its household.
    let mut by_slot: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, o) in view.orders.iter().enumerate() {
        by_slot.entry(o.slot).or_default().push(i);
    }
    let band = (view.params.grid_tariff().get() - view.params.feed_in_tariff().get()).max(1) as f64;
    let (mut linked, mut links, mut link_chance) = (0usize, 0usize, 0.0);
    for (slot, current) in &by_slot {
        let Some(previous) = slot.checked_sub(1).and_then(|p| by_slot.get(&p)) else {
            continue;
        };
        for &i in current {
            // Any of the household's orders there is a right link (under
            // gross metering a prosumer has a buy and a sell a slot).
            let h = truth.order_households[i];
            let mine = previous
                .iter()
                .filter(|&&j| truth.order_households[j] == h)
                .count();
            if mine == 0 {
                continue;
            }
            let o = &view.orders[i];
            let same_originator = o.originator.and_then(|a| {
                previous
                    .iter()
                    .copied()
                    .find(|&j| view.orders[j].originator == Some(a))
            });
            let guess = same_originator.or_else(|| {
                previous.iter().copied().min_by(|&x, &y| {
                    distance(o, &view.orders[x], band)
                        .total_cmp(&distance(o, &view.orders[y], band))
                        .then(x.cmp(&y))
                })
            });
            links += 1;
            link_chance += mine as f64 / previous.len() as f64;
            if guess.is_some_and(|g| truth.order_households[g] == h) {
                linked += 1;
            }
        }
    }

    // Attack 3: each household's estimated net series against its truth.
    let mut errors = Vec::new();
    for (h, truth_series) in (0u32..).zip(&truth.net_wh) {
        let guess = &estimate[entry_of(h)?];
        let actual: f64 = truth_series.iter().map(|v| v.unsigned_abs() as f64).sum();
        if actual > 0.0 {
            let diff: f64 = truth_series
                .iter()
                .zip(guess.iter().chain(std::iter::repeat(&0)))
                .map(|(t, g)| (t - g).unsigned_abs() as f64)
                .sum();
            errors.push(diff / actual);
        }
    }

    let orders = view.orders.len();
    let per_order = |x: f64| if orders == 0 { 0.0 } else { x / orders as f64 };
    let share = |(n, right): (usize, f64)| if n == 0 { 0.0 } else { right / n as f64 };
    Ok(AuditReport {
        view: label.to_string(),
        households: n,
        orders,
        chance: 1.0 / n as f64,
        top1: per_order(top1),
        top5: per_order(top5),
        top1_consumers: share(groups[0]),
        top1_prosumers: share(groups[1]),
        linking_top1: if links == 0 {
            0.0
        } else {
            linked as f64 / links as f64
        },
        linking_chance: if links == 0 {
            0.0
        } else {
            link_chance / links as f64
        },
        anonymity_set: per_order(set),
        effective_anonymity_set: per_order(effective),
        degree_of_anonymity: per_order(degree),
        profile_error: if errors.is_empty() {
            0.0
        } else {
            errors.iter().sum::<f64>() / errors.len() as f64
        },
    })
}

/// The reports as a Markdown table.
pub fn table(reports: &[AuditReport]) -> String {
    let mut out = String::from(
        "| view | households | orders | top-1 (chance) | top-1 no PV / PV | top-5 | order→order top-1 (chance) | anonymity set | 2^H | H/log2 N | profile error |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let pct = |x: f64| format!("{:.1} %", 100.0 * x);
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ({}) | {} / {} | {} | {} ({}) | {:.1} | {:.2} | {:.3} | {} |",
            r.view,
            r.households,
            r.orders,
            pct(r.top1),
            pct(r.chance),
            pct(r.top1_consumers),
            pct(r.top1_prosumers),
            pct(r.top5),
            pct(r.linking_top1),
            pct(r.linking_chance),
            r.anonymity_set,
            r.effective_anonymity_set,
            r.degree_of_anonymity,
            pct(r.profile_error),
        );
    }
    out
}

/// One bar of the chart: its name, colour and value.
type Bar = (&'static str, &'static str, fn(&AuditReport) -> f64);

/// The reports as an SVG bar chart: top-1, top-5, order→order top-1 and the
/// degree of anonymity per view, with each view's chance level dashed.
pub fn svg(reports: &[AuditReport]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 300.0;
    const TOP: f64 = 30.0;
    const BOTTOM: f64 = 60.0;
    let metrics: [Bar; 4] = [
        ("top-1", "#1f77b4", |r| r.top1),
        ("top-5", "#6baed6", |r| r.top5),
        ("order→order", "#ff7f0e", |r| r.linking_top1),
        ("H/log2 N", "#2ca02c", |r| r.degree_of_anonymity),
    ];
    let plot_h = H - TOP - BOTTOM;
    let group_w = (W - 60.0) / reports.len().max(1) as f64;
    let bar_w = (group_w - 20.0) / metrics.len() as f64;
    let y = |v: f64| TOP + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\">Linking an order to its household (quartier audit)</text>\n",
        W / 2.0
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = writeln!(
            out,
            "<line x1=\"45\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/><text x=\"40\" y=\"{:.1}\" text-anchor=\"end\">{:.0} %</text>",
            W - 10.0,
            y(tick) + 4.0,
            tick * 100.0,
            y = y(tick)
        );
    }
    for (g, r) in reports.iter().enumerate() {
        let x0 = 55.0 + g as f64 * group_w;
        for (k, (_, colour, value)) in metrics.iter().enumerate() {
            let v = value(r);
            let x = x0 + k as f64 * bar_w;
            let _ = writeln!(
                out,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"/>",
                y(v),
                bar_w - 2.0,
                TOP + plot_h - y(v)
            );
        }
        let _ = writeln!(
            out,
            "<line x1=\"{x0:.1}\" x2=\"{:.1}\" y1=\"{c:.1}\" y2=\"{c:.1}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>",
            x0 + metrics.len() as f64 * bar_w,
            c = y(r.chance)
        );
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x0 + metrics.len() as f64 * bar_w / 2.0,
            H - BOTTOM + 16.0,
            escape(&r.view)
        );
    }
    for (k, (name, colour, _)) in metrics.iter().enumerate() {
        let x = 55.0 + k as f64 * 130.0;
        let _ = writeln!(
            out,
            "<rect x=\"{x}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"{:.1}\">{name}</text>",
            H - 22.0,
            x + 14.0,
            H - 13.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{:.1}\">- - chance 1/N</text>\n</svg>",
        55.0 + 4.0 * 130.0,
        H - 13.0
    );
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
