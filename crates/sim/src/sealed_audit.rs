//! The privacy auditor of mode B: what the chain shows of sealed orders, and
//! what an insider — a neighbour who runs some households of the region
//! itself — learns from it of everyone else's orders.
//!
//! Mode B publishes, per settled slot ([`SealedSlot`]): each sealed order's
//! submitting meter and size, the batch's deposits and withdrawal requests,
//! the payouts the committee approved and the slot's aggregates (energy the
//! region bought and sold). Never an order's side, amount or price. Every
//! meter submits one order of one size every slot (a zero-energy cover
//! order when it has nothing to trade), so who submitted says nothing by
//! design; the secret is what each order says.
//!
//! Attacks:
//! 1. **order → household.** The adversary is handed each true order's
//!    class (side and amount band, as a counterparty or a leak might learn
//!    it) and names the household whose sealed order it is, from what the
//!    chain shows of each sealed order of the slot: its *features* — its
//!    size, its published receipt's size, the order of magnitude of its
//!    meter's deposits in that batch, whether the meter deposited in the
//!    [`LAG`] batches before, and whether it asked for a withdrawal or was
//!    paid out. It runs some households itself, so it
//!    knows their orders and learns from them which features come with which
//!    class (counts with add-one smoothing); it scores every other sealed
//!    order of the slot by how often its features came with the challenge's
//!    class. Features that carry nothing score every candidate alike:
//!    chance exactly. Not counted here: the class joined with the public PV
//!    registry and load profile (a large sell at noon points to a large PV
//!    array whatever the chain shows) — that is what an order's contents
//!    leak alone, mode B never publishes them, and the open market's
//!    "amounts and prices only" row ([`crate::audit`]) measures it.
//! 2. **profile reconstruction.** Each household's net series estimated
//!    from the public load and PV profiles at its registered size, rescaled
//!    each slot so the estimated buys and sells add up to what the
//!    aggregates say the region bought and sold (less the insiders' own),
//!    compared with the truth; beside it the error of the profiles alone,
//!    so the table shows what the aggregates add.
//!
//! Not attacked: order → order linking, which the submitting meter answers
//! outright (by design; what is linked carries nothing readable).

use crate::audit::{Attribution, AuditError, entropy_bits, expected_load_and_pv};
use crate::profiles::{INTERVALS_PER_YEAR, Profiles};
use crate::view::{GroundTruth, RegistryEntry};
use quartier_types::{AccountId, Energy, Money};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A sealed order as the chain shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSubmission {
    /// The meter that submitted it.
    pub meter: AccountId,
    /// Its ciphertext's size in bytes.
    pub bytes: u32,
    /// Its published receipt's size in bytes, if an enclave served the
    /// slot's receipts (anyone may fetch them).
    pub receipt: Option<u32>,
}

/// One settled slot of a mode B region, as anyone reads it from the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedSlot {
    /// Slot of the run (0 is the first).
    pub slot: u64,
    /// The sealed orders, in arrival order.
    pub submissions: Vec<SealedSubmission>,
    /// Deposits into custody credited with the batch.
    pub deposits: Vec<(AccountId, Money)>,
    /// Withdrawal requests of the batch.
    pub withdrawals: Vec<(AccountId, Money)>,
    /// Withdrawals the committee approved in the slot's report.
    pub payouts: Vec<(AccountId, Money)>,
    /// Energy the region's buys got: locally and from the grid.
    pub bought: Energy,
    /// Energy the region's sells delivered: locally and to the grid.
    pub sold: Energy,
}

/// Everything a mode B chain shows of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SealedView {
    /// The quarter hour of the year of slot 0.
    pub start_interval: u64,
    /// The meter registry.
    pub registry: Vec<RegistryEntry>,
    /// The settled slots, in order.
    pub slots: Vec<SealedSlot>,
}

/// How well the insider did on a mode B view.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SealedAuditReport {
    /// What was attacked.
    pub view: String,
    /// Households (registered meters).
    pub households: usize,
    /// Households the adversary runs itself (neither challenged nor
    /// candidates).
    pub insiders: usize,
    /// True orders (not cover) attacked.
    pub orders: usize,
    /// Chance level of attack 1: mean of 1 / candidates.
    pub chance: f64,
    /// Attack 1: the right household ranked first (ties broken at random,
    /// counted as the expected hit).
    pub top1: f64,
    /// Attack 1: the right household among the first five.
    pub top5: f64,
    /// Mean effective anonymity set 2^H of attack 1.
    pub effective_anonymity_set: f64,
    /// Mean degree of anonymity H / log2 N (1: no information).
    pub degree_of_anonymity: f64,
    /// Distinct feature combinations among the sealed orders attacked (1:
    /// all alike).
    pub features: usize,
    /// Attack 2: mean over households of Σ|estimate − truth| / Σ|truth|.
    pub profile_error: f64,
    /// The same from the public profiles alone, without the chain.
    pub profile_error_prior: f64,
}

/// Order classes: four amount bands per side, and cover.
const CLASSES: usize = 9;

/// The class of a net-metered order of `net_wh` (positive bought): a side
/// and an amount band, or cover (nothing to trade).
fn class(net_wh: i64) -> usize {
    let band = match net_wh.unsigned_abs() {
        0 => return CLASSES - 1,
        1..100 => 0,
        100..300 => 1,
        300..1_000 => 2,
        _ => 3,
    };
    if net_wh > 0 { band } else { 4 + band }
}

/// How many batches back a deposit still counts as a feature.
pub const LAG: usize = 4;

/// What the chain shows of one sealed order beyond its meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Feature {
    bytes: u32,
    receipt: Option<u32>,
    /// Decimal digits of the meter's deposits in the batch (0: none).
    deposit: u32,
    deposited_before: bool,
    withdrew: bool,
    paid: bool,
}

/// Every sealed order of `view.slots[k]` with its meter and features.
fn features(view: &SealedView, k: usize) -> Vec<(AccountId, Feature)> {
    let of = |list: &[(AccountId, Money)]| -> BTreeSet<AccountId> {
        list.iter().map(|(a, _)| *a).collect()
    };
    let slot = &view.slots[k];
    // Decimal digits of each meter's deposits (of the largest, if a meter
    // made several): a feature's band, not an amount.
    let mut deposited: BTreeMap<AccountId, u32> = BTreeMap::new();
    for (a, m) in &slot.deposits {
        let digits = m.get().checked_ilog10().map_or(0, |d| d + 1);
        let band = deposited.entry(*a).or_default();
        *band = (*band).max(digits);
    }
    let before: BTreeSet<AccountId> = view.slots[k.saturating_sub(LAG)..k]
        .iter()
        .flat_map(|s| s.deposits.iter().map(|(a, _)| *a))
        .collect();
    let (withdrew, paid) = (of(&slot.withdrawals), of(&slot.payouts));
    slot.submissions
        .iter()
        .map(|s| {
            let f = Feature {
                bytes: s.bytes,
                receipt: s.receipt,
                deposit: deposited.get(&s.meter).copied().unwrap_or(0),
                deposited_before: before.contains(&s.meter),
                withdrew: withdrew.contains(&s.meter),
                paid: paid.contains(&s.meter),
            };
            (s.meter, f)
        })
        .collect()
}

/// How many of `insiders` are households of the truth (each once).
fn insiders_of(truth: &GroundTruth, insiders: &[usize]) -> usize {
    insiders
        .iter()
        .filter(|h| **h < truth.meters.len())
        .collect::<BTreeSet<_>>()
        .len()
}

/// Runs both attacks on `view` as an adversary that runs the truth's
/// households `insiders` (by index), scoring them against `truth` (whose
/// `order_households` is not used: the chain names each sealed order's
/// meter).
///
/// # Errors
/// [`AuditError`] if `truth` does not belong to `view`.
pub fn sealed_audit(
    view: &SealedView,
    truth: &GroundTruth,
    profiles: &Profiles,
    insiders: &[usize],
    label: &str,
) -> Result<SealedAuditReport, AuditError> {
    let n = view.registry.len();
    if n == 0 {
        return Err(AuditError::NoMeters);
    }
    let registry: BTreeMap<AccountId, &RegistryEntry> =
        view.registry.iter().map(|m| (m.meter, m)).collect();
    let household_of: BTreeMap<AccountId, usize> = truth
        .meters
        .iter()
        .enumerate()
        .map(|(h, m)| (*m, h))
        .collect();
    let pv_of = |h: usize| -> Result<u32, AuditError> {
        truth
            .meters
            .get(h)
            .and_then(|m| registry.get(m))
            .map(|m| m.pv_watts)
            .ok_or(AuditError::UnknownHousehold(
                u32::try_from(h).unwrap_or(u32::MAX),
            ))
    };
    let net = |h: usize, slot: u64| -> Result<i64, AuditError> {
        truth
            .net_wh
            .get(h)
            .and_then(|s| s.get(usize::try_from(slot).ok()?))
            .copied()
            .ok_or(AuditError::NoReading { slot })
    };
    let insider = |meter: &AccountId| {
        household_of
            .get(meter)
            .is_some_and(|h| insiders.contains(h))
    };

    // The insider learns from its own sealed orders which features come
    // with which class.
    let mut counts: BTreeMap<Feature, [u32; CLASSES]> = BTreeMap::new();
    for (k, slot) in view.slots.iter().enumerate() {
        for (meter, f) in features(view, k) {
            if let Some(&h) = household_of.get(&meter)
                && insiders.contains(&h)
            {
                counts.entry(f).or_insert([0; CLASSES])[class(net(h, slot.slot)?)] += 1;
            }
        }
    }
    let likelihood = |f: &Feature, c: usize| -> f64 {
        let row = counts.get(f).copied().unwrap_or([0; CLASSES]);
        let total: u32 = row.iter().sum();
        (f64::from(row[c]) + 1.0) / (f64::from(total) + CLASSES as f64)
    };

    // Attack 1.
    let (mut orders, mut chance, mut top1, mut top5, mut effective, mut degree) =
        (0usize, 0.0, 0.0, 0.0, 0.0, 0.0);
    let mut seen = BTreeSet::new();
    for (k, slot) in view.slots.iter().enumerate() {
        let candidates: Vec<(AccountId, Feature)> = features(view, k)
            .into_iter()
            .filter(|(m, _)| !insider(m))
            .collect();
        seen.extend(candidates.iter().map(|c| c.1));
        for (right, (meter, _)) in candidates.iter().enumerate() {
            let Some(&h) = household_of.get(meter) else {
                continue;
            };
            let c = class(net(h, slot.slot)?);
            if c == CLASSES - 1 {
                continue;
            }
            let scores: Vec<f64> = candidates.iter().map(|(_, f)| likelihood(f, c)).collect();
            let total: f64 = scores.iter().sum();
            let mut ranked: Vec<(usize, f64)> =
                scores.iter().map(|s| s / total).enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let a = Attribution {
                candidates: ranked.len(),
                ranked,
            };
            orders += 1;
            chance += 1.0 / a.candidates as f64;
            top1 += a.hit(right, 1);
            top5 += a.hit(right, 5);
            let bits = entropy_bits(&a.ranked);
            effective += bits.exp2();
            let log_n = (a.candidates as f64).log2();
            degree += if log_n > 0.0 { bits / log_n } else { 1.0 };
        }
    }

    // Attack 2: the profiles at each household's PV size, rescaled to the
    // aggregates.
    let others: Vec<usize> = (0..truth.meters.len())
        .filter(|h| !insiders.contains(h))
        .collect();
    let mut error = vec![(0.0f64, 0.0f64, 0.0f64); truth.meters.len()];
    for slot in &view.slots {
        let t = ((view.start_interval + slot.slot) % INTERVALS_PER_YEAR as u64) as usize;
        let (mut own_bought, mut own_sold) = (0i64, 0i64);
        for &h in insiders.iter().filter(|h| **h < truth.meters.len()) {
            let v = net(h, slot.slot)?;
            own_bought += v.max(0);
            own_sold += (-v).max(0);
        }
        let mut prior = Vec::with_capacity(others.len());
        for &h in &others {
            let (load, pv) = expected_load_and_pv(profiles, t, pv_of(h)?);
            prior.push(load - pv);
        }
        let bought = (slot.bought.get() as f64 - own_bought as f64).max(0.0);
        let sold = (slot.sold.get() as f64 - own_sold as f64).max(0.0);
        let drawn: f64 = prior.iter().filter(|p| **p > 0.0).sum();
        let fed: f64 = -prior.iter().filter(|p| **p < 0.0).sum::<f64>();
        for (&h, p) in others.iter().zip(&prior) {
            let scaled = match *p {
                p if p > 0.0 && drawn > 0.0 => p * bought / drawn,
                p if p < 0.0 && fed > 0.0 => p * sold / fed,
                p => p,
            };
            let actual = net(h, slot.slot)? as f64;
            let e = &mut error[h];
            e.0 += (scaled - actual).abs();
            e.1 += (p - actual).abs();
            e.2 += actual.abs();
        }
    }
    let relative: Vec<(f64, f64)> = others
        .iter()
        .map(|&h| error[h])
        .filter(|e| e.2 > 0.0)
        .map(|e| (e.0 / e.2, e.1 / e.2))
        .collect();
    let mean = |f: fn(&(f64, f64)) -> f64| {
        if relative.is_empty() {
            0.0
        } else {
            relative.iter().map(f).sum::<f64>() / relative.len() as f64
        }
    };
    let per_order = |x: f64| if orders == 0 { 0.0 } else { x / orders as f64 };
    Ok(SealedAuditReport {
        view: label.to_string(),
        households: n,
        insiders: insiders_of(truth, insiders),
        orders,
        chance: per_order(chance),
        top1: per_order(top1),
        top5: per_order(top5),
        effective_anonymity_set: per_order(effective),
        degree_of_anonymity: per_order(degree),
        features: seen.len(),
        profile_error: mean(|e| e.0),
        profile_error_prior: mean(|e| e.1),
    })
}

/// The report as a Markdown table.
pub fn table(r: &SealedAuditReport) -> String {
    let mut out = String::from(
        "| view | orders | top-1 | chance | top-5 | 2^H | H / log2 N | features | profile error (profiles alone) |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let _ = writeln!(
        out,
        "| {} (insider runs {} of {}) | {} | {:.1} % | {:.1} % | {:.1} % | {:.1} | {:.2} | {} | {:.2} ({:.2}) |",
        r.view,
        r.insiders,
        r.households,
        r.orders,
        100.0 * r.top1,
        100.0 * r.chance,
        100.0 * r.top5,
        r.effective_anonymity_set,
        r.degree_of_anonymity,
        r.features,
        r.profile_error,
        r.profile_error_prior,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUSEHOLDS: u32 = 12;
    const SLOTS: u64 = 96;

    fn meter(h: u32) -> AccountId {
        crate::view::sim_meter(7, h)
    }

    /// A run at midsummer noon onwards: odd households have PV and sell,
    /// even ones buy, amounts spread over every band; `bytes` sizes
    /// each sealed order from its household's net, `deposit` says whether
    /// its meter deposits with it.
    fn run(bytes: impl Fn(i64) -> u32, deposit: impl Fn(i64) -> bool) -> (SealedView, GroundTruth) {
        let registry: Vec<RegistryEntry> = (0..HOUSEHOLDS)
            .map(|h| RegistryEntry {
                meter: meter(h),
                prosumer: h % 2 == 1,
                pv_watts: if h % 2 == 1 { 5_000 } else { 0 },
            })
            .collect();
        let net_wh: Vec<Vec<i64>> = (0..HOUSEHOLDS)
            .map(|h| {
                (0..SLOTS)
                    .map(|s| {
                        let amount = 50 + (97 * i64::from(h) + 131 * s as i64) % 1_200;
                        if h % 2 == 1 { -amount } else { amount }
                    })
                    .collect()
            })
            .collect();
        let slots = (0..SLOTS)
            .map(|s| {
                let nets: Vec<i64> = net_wh.iter().map(|n| n[s as usize]).collect();
                SealedSlot {
                    slot: s,
                    submissions: (0..HOUSEHOLDS)
                        .map(|h| SealedSubmission {
                            meter: meter(h),
                            bytes: bytes(nets[h as usize]),
                            receipt: Some(123),
                        })
                        .collect(),
                    deposits: (0..HOUSEHOLDS)
                        .filter(|&h| deposit(nets[h as usize]))
                        .map(|h| (meter(h), Money::new(1_000)))
                        .collect(),
                    withdrawals: Vec::new(),
                    payouts: Vec::new(),
                    bought: Energy::new(nets.iter().filter(|v| **v > 0).sum::<i64>() as u64),
                    sold: Energy::new(-nets.iter().filter(|v| **v < 0).sum::<i64>() as u64),
                }
            })
            .collect();
        let view = SealedView {
            start_interval: 172 * 96 + 48,
            registry,
            slots,
        };
        let truth = GroundTruth {
            meters: (0..HOUSEHOLDS).map(meter).collect(),
            order_households: Vec::new(),
            net_wh,
        };
        (view, truth)
    }

    fn audit(view: &SealedView, truth: &GroundTruth) -> SealedAuditReport {
        let profiles = Profiles::embedded().unwrap();
        sealed_audit(view, truth, &profiles, &[0, 1, 2], "test").unwrap()
    }

    #[test]
    fn sealed_orders_alike_leave_the_insider_at_chance() {
        let (view, truth) = run(|_| 272, |_| false);
        let r = audit(&view, &truth);
        assert_eq!(r.orders, 9 * SLOTS as usize);
        assert_eq!(r.features, 1);
        assert!((r.chance - 1.0 / 9.0).abs() < 1e-12);
        assert!((r.top1 - r.chance).abs() < 1e-12, "{r:?}");
        assert!((r.top5 - 5.0 / 9.0).abs() < 1e-12, "{r:?}");
        assert!((r.degree_of_anonymity - 1.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn a_size_that_depends_on_the_side_gives_the_sells_away() {
        let (view, truth) = run(|net| if net < 0 { 288 } else { 272 }, |_| false);
        let r = audit(&view, &truth);
        assert_eq!(r.features, 2);
        assert!(r.top1 > 1.5 * r.chance, "{r:?}");
    }

    #[test]
    fn receipts_whose_size_tells_refused_orders_give_them_away() {
        // Large buys refused (over the prepaid balance) with a shorter
        // receipt than the rest.
        let (mut view, truth) = run(|_| 272, |_| false);
        for (s, slot) in view.slots.iter_mut().enumerate() {
            for (h, sub) in slot.submissions.iter_mut().enumerate() {
                sub.receipt = Some(if truth.net_wh[h][s] > 1_000 { 84 } else { 123 });
            }
        }
        let r = audit(&view, &truth);
        assert!(r.top1 > 1.5 * r.chance, "{r:?}");
    }

    #[test]
    fn deposits_that_follow_large_buys_point_to_their_buyers() {
        let (view, truth) = run(|_| 272, |net| net > 1_000);
        let r = audit(&view, &truth);
        assert!(r.top1 > 1.5 * r.chance, "{r:?}");
    }

    #[test]
    fn aggregates_rescale_the_profiles_towards_the_truth() {
        // Households without PV whose net is twice the adversary's mean
        // home: the profiles alone are half off, the aggregates fix it.
        let (mut view, mut truth) = run(|_| 272, |_| false);
        let profiles = Profiles::embedded().unwrap();
        for e in &mut view.registry {
            e.prosumer = false;
            e.pv_watts = 0;
        }
        for (s, slot) in view.slots.iter_mut().enumerate() {
            let t = (view.start_interval as usize + s) % INTERVALS_PER_YEAR;
            let wh = (2.0 * expected_load_and_pv(&profiles, t, 0).0).round() as i64;
            for series in &mut truth.net_wh {
                series[s] = wh;
            }
            slot.bought = Energy::new(wh as u64 * u64::from(HOUSEHOLDS));
            slot.sold = Energy::ZERO;
        }
        let r = sealed_audit(&view, &truth, &profiles, &[0, 1, 2], "test").unwrap();
        assert!(r.profile_error < 0.01, "{r:?}");
        assert!((r.profile_error_prior - 0.5).abs() < 0.01, "{r:?}");
    }

    #[test]
    fn a_truth_without_the_views_slots_is_refused() {
        let (view, mut truth) = run(|_| 272, |_| false);
        truth.net_wh[4].truncate(10);
        let profiles = Profiles::embedded().unwrap();
        assert_eq!(
            sealed_audit(&view, &truth, &profiles, &[0, 1, 2], "test"),
            Err(AuditError::NoReading { slot: 10 })
        );
    }
}
