//! Households: individual load and PV series made from the shared profiles.
//!
//! H0 is the average of many homes; one home is spikier. Each household
//! (seeded from the run's seed and its index, so adding households changes no
//! other household) gets:
//! - an annual consumption drawn from 2 500–5 500 kWh and, for prosumers, a
//!   PV system of 3–15 kWp with an orientation factor of 0.85–1.0;
//! - its load profile shifted by up to ±1 h;
//! - a day-to-day factor (log-normal, σ = 0.2, mean 1);
//! - per-interval multiplicative noise (log-normal, σ = 0.4, mean 1);
//! - appliance spikes (kettle, oven, washing: 1–3 kW for a quarter hour)
//!   carrying 20 % of its energy, more likely when H0 is high.
//!
//! Every factor has mean 1 and the spikes' expected energy is their share, so
//! a year's consumption equals the drawn annual figure in expectation (a
//! year's realisation lies within a few percent; tested). PV shares the
//! street's weather: the same profile for all, scaled by kWp and orientation,
//! with 5 % noise, and never above the system's peak power.

use crate::profiles::{INTERVALS_PER_YEAR, Profiles};
use quartier_meter::{BiddingStrategy, Preferences, StrategyKind};
use quartier_types::{Energy, RegionParams, hash};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use serde::Serialize;

/// Share of a household's energy drawn in appliance spikes.
const SPIKE_SHARE: f64 = 0.2;
/// Energy of one spike, uniform in this range (kWh per quarter hour).
const SPIKE_KWH: (f64, f64) = (0.25, 0.75);
/// Noise per interval (σ of the log-normal).
const NOISE_SIGMA: f64 = 0.4;
/// Day-to-day variation (σ of the log-normal).
const DAY_SIGMA: f64 = 0.2;
/// PV noise per household and interval (σ of the log-normal).
const PV_SIGMA: f64 = 0.05;

/// A household's drawn characteristics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HouseholdSpec {
    /// Position in the neighbourhood.
    pub index: u32,
    /// Expected annual consumption, kWh.
    pub annual_kwh: f64,
    /// PV peak power, kWp (0 for a consumer).
    pub pv_kwp: f64,
    /// PV orientation and shading factor.
    pub orientation: f64,
    /// Shift of the load profile, in quarter hours.
    pub shift: i32,
    /// The household's preferred price ranges.
    pub preferences: Preferences,
}

impl HouseholdSpec {
    /// Whether the household has PV.
    pub fn is_prosumer(&self) -> bool {
        self.pv_kwp > 0.0
    }

    /// The PV peak power the DSO registers, in watts.
    pub fn pv_watts(&self) -> u32 {
        (self.pv_kwp * 1_000.0).round() as u32
    }
}

/// What one meter measured in one quarter hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Energy the household used.
    pub consumed: Energy,
    /// Energy its PV produced.
    pub produced: Energy,
}

impl Reading {
    /// Net energy at the meter: consumption − PV, in Wh (positive is bought).
    pub fn net_wh(&self) -> i64 {
        let c = i64::try_from(self.consumed.get()).unwrap_or(i64::MAX);
        let p = i64::try_from(self.produced.get()).unwrap_or(i64::MAX);
        c - p
    }

    /// Consumption covered by the household's own PV behind the meter.
    pub fn self_consumed(&self) -> Energy {
        self.consumed.min(self.produced)
    }
}

/// One household's meter: its spec and the random state of its series.
#[derive(Clone, Debug)]
pub struct Household {
    spec: HouseholdSpec,
    rng: ChaCha8Rng,
    day: Option<u64>,
    day_factor: f64,
}

/// The log-normal with mean 1 and shape `sigma`.
///
/// # Panics
/// Never for the positive constants above (`LogNormal::new` fails only for a
/// negative or non-finite σ).
fn unit_mean_lognormal(sigma: f64) -> LogNormal<f64> {
    // mean = exp(mu + sigma²/2) = 1.
    #[allow(clippy::expect_used)]
    LogNormal::new(-sigma * sigma / 2.0, sigma).expect("sigma is a positive constant")
}

/// Uniform in `[low, high)` from 53 random bits.
fn uniform(rng: &mut impl Rng, low: f64, high: f64) -> f64 {
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    low + (high - low) * unit
}

fn wh(kwh: f64) -> Energy {
    Energy::new((kwh.max(0.0) * 1_000.0).round() as u64)
}

impl Household {
    /// Draws household `index` of a run seeded with `seed`.
    pub fn draw(seed: u64, index: u32, prosumer: bool, params: &RegionParams) -> Household {
        let mut rng = ChaCha8Rng::from_seed(
            hash::tagged(
                "QUARTIER_SIM_HOUSEHOLD",
                &[&seed.to_le_bytes(), &index.to_le_bytes()],
            )
            .0,
        );
        let annual_kwh = uniform(&mut rng, 2_500.0, 5_500.0);
        let (pv_kwp, orientation) = if prosumer {
            (uniform(&mut rng, 3.0, 15.0), uniform(&mut rng, 0.85, 1.0))
        } else {
            (0.0, 0.0)
        };
        let shift = (rng.next_u64() % 9) as i32 - 4;
        let preferences = Preferences::draw(&mut rng, params);
        Household {
            spec: HouseholdSpec {
                index,
                annual_kwh,
                pv_kwp,
                orientation,
                shift,
                preferences,
            },
            rng,
            day: None,
            day_factor: 1.0,
        }
    }

    /// The household's characteristics.
    pub fn spec(&self) -> &HouseholdSpec {
        &self.spec
    }

    /// The household's bidding strategy of kind `kind`, seeded from `seed`.
    pub fn strategy(&self, kind: StrategyKind, seed: u64) -> Box<dyn BiddingStrategy> {
        let strategy_seed = hash::tagged(
            "QUARTIER_SIM_STRATEGY",
            &[&seed.to_le_bytes(), &self.spec.index.to_le_bytes()],
        );
        kind.build(self.spec.index, self.spec.preferences, strategy_seed.0)
    }

    /// The meter's reading for quarter hour `interval` of the run (interval 0
    /// is 1 January 00:00; the profile year repeats). Readings must be taken
    /// in increasing `interval` order: each advances the household's random
    /// state.
    pub fn read(&mut self, profiles: &Profiles, interval: u64) -> Reading {
        let n = INTERVALS_PER_YEAR as i64;
        let t = (interval % INTERVALS_PER_YEAR as u64) as i64;
        let shifted = (t + i64::from(self.spec.shift)).rem_euclid(n) as usize;
        let day = interval / 96;
        if self.day != Some(day) {
            self.day = Some(day);
            self.day_factor = unit_mean_lognormal(DAY_SIGMA).sample(&mut self.rng);
        }
        let shape = profiles.load[shifted] / 1_000.0;
        let noise = unit_mean_lognormal(NOISE_SIGMA).sample(&mut self.rng);
        let mut kwh = shape * self.spec.annual_kwh * (1.0 - SPIKE_SHARE) * self.day_factor * noise;
        let mean_spike = (SPIKE_KWH.0 + SPIKE_KWH.1) / 2.0;
        let spike_probability = shape * self.spec.annual_kwh * SPIKE_SHARE / mean_spike;
        if uniform(&mut self.rng, 0.0, 1.0) < spike_probability {
            kwh += uniform(&mut self.rng, SPIKE_KWH.0, SPIKE_KWH.1);
        }
        let produced = if self.spec.is_prosumer() {
            let pv_noise = unit_mean_lognormal(PV_SIGMA).sample(&mut self.rng);
            let peak = self.spec.pv_kwp / 4.0;
            (profiles.pv[t as usize] * self.spec.pv_kwp * self.spec.orientation * pv_noise)
                .min(peak)
        } else {
            0.0
        };
        Reading {
            consumed: wh(kwh),
            produced: wh(produced),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quartier_types::Price;

    fn params() -> RegionParams {
        RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap()
    }

    #[test]
    fn a_year_consumes_what_was_drawn_and_pv_stays_under_peak() {
        let profiles = Profiles::embedded().unwrap();
        for index in 0..6 {
            let mut h = Household::draw(7, index, index % 2 == 0, &params());
            let spec = h.spec().clone();
            assert!((2_500.0..5_500.0).contains(&spec.annual_kwh));
            let (mut consumed, mut produced, mut peak) = (0u64, 0u64, 0u64);
            for t in 0..INTERVALS_PER_YEAR as u64 {
                let r = h.read(&profiles, t);
                consumed += r.consumed.get();
                produced += r.produced.get();
                peak = peak.max(r.consumed.get());
            }
            let kwh = consumed as f64 / 1_000.0;
            assert!(
                (kwh / spec.annual_kwh - 1.0).abs() < 0.03,
                "household {index}: {kwh} kWh vs {} drawn",
                spec.annual_kwh
            );
            // Individual homes are spiky: a quarter hour far above H0's peak
            // of 0.067 kWh per 1 000 kWh/a.
            assert!(peak as f64 > 4.0 * 67.0 * spec.annual_kwh / 1_000.0);
            if spec.is_prosumer() {
                let per_kwp = produced as f64 / 1_000.0 / spec.pv_kwp;
                assert!((800.0..1_010.0).contains(&per_kwp), "{per_kwp} kWh/kWp");
            } else {
                assert_eq!(produced, 0);
            }
        }
    }

    #[test]
    fn households_do_not_depend_on_their_neighbours() {
        let a = Household::draw(1, 5, true, &params());
        let b = Household::draw(1, 5, true, &params());
        let c = Household::draw(2, 5, true, &params());
        assert_eq!(a.spec(), b.spec());
        assert_ne!(a.spec(), c.spec());
    }
}
