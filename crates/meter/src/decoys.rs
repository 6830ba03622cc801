//! Decoy selection for funds rings (DESIGN §6).
//!
//! Every ring member is drawn from one distribution of age over the whole
//! pool: an age in slots `a` with `ln(1 + a) ~ Gamma(AGE_SHAPE, AGE_SCALE)`
//! (the form of Monero's gamma-over-log-age selection, on the market's clock
//! of slots instead of seconds), then a uniform output among those created
//! in the slot that age names. No member is limited to a recent window, so
//! a real output of any age has decoys of its age around it; when the real
//! output's own age follows the same distribution, its position in the ring
//! is uniform (tested below with a χ² test).
//!
//! Decoys also survive an observer who knows every public amount (shieldings
//! and settlement payments): a decoy whose public amount could not have
//! paid what the transaction needs is never drawn (see
//! [`quartier_shielded::linking::amount_consistent`] for the observer's rule).

use quartier_ledger::PoolOutput;
use quartier_shielded::spend::RingMember;
use quartier_types::Slot;
use rand_core::CryptoRng;
use rand_distr::{Distribution, Gamma};

/// Shape of the gamma distribution of `ln(1 + age in slots)`.
///
/// With [`AGE_SCALE`] (shape 1: `1 + age` is Pareto with index 1/3) it puts
/// a fifth of the mass in the current slot and 31 % within the last one
/// (households spend last slot's change and refunds), the median at 6
/// slots, and 17 % beyond 204 slots (two days of 15-minute slots), so an
/// output kept for long still gets decoys of its age (a narrower fit,
/// shape 1.5 and scale 1, left 81 % of those alone in their rings). Young
/// spends pay for it: an observer who assumes every spend is at most a slot
/// old keeps about a third of a ring; `quartier audit` measures this
/// decoy-age attack on a run.
pub const AGE_SHAPE: f64 = 1.0;
/// Scale of the gamma distribution of `ln(1 + age in slots)`.
pub const AGE_SCALE: f64 = 3.0;
/// Draws tried per decoy before a ring is given up (the pool has too few
/// admissible outputs).
const TRIES_PER_MEMBER: usize = 256;
/// Uniform picks tried within a slot before its admissible outputs are
/// listed.
const TRIES_IN_SLOT: usize = 32;

/// Why no ring could be drawn.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecoyError {
    /// Too few admissible outputs in the pool for a ring of this size.
    #[error("the pool has too few admissible outputs for a ring of {0}")]
    PoolTooSmall(usize),
}

/// What a wallet keeps of every pool output to draw rings from: its key and
/// commitment, its public amount if any, and the slot that created it
/// (about 80 bytes an output).
#[derive(Clone, Debug, Default)]
pub struct PoolIndex {
    members: Vec<RingMember>,
    public: Vec<Option<u64>>,
    /// `(slot, first index)` of every slot that created outputs, ascending.
    slots: Vec<(Slot, u64)>,
}

impl PoolIndex {
    /// An empty index.
    pub fn new() -> PoolIndex {
        PoolIndex::default()
    }

    /// Appends the next pool output (outputs come in pool order).
    pub fn push(&mut self, output: &PoolOutput) {
        let index = self.len();
        let slot = match self.slots.last() {
            // A slot never goes back; an output stamped earlier than the last
            // one (impossible on chain) counts as of the last slot.
            Some((last, _)) if output.slot <= *last => None,
            _ => Some(output.slot),
        };
        if let Some(slot) = slot {
            self.slots.push((slot, index));
        }
        self.members.push(RingMember {
            key: output.output.key,
            commitment: output.output.commitment,
        });
        self.public.push(output.public_amount.map(|m| m.get()));
    }

    /// Outputs indexed.
    pub fn len(&self) -> u64 {
        self.members.len() as u64
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The ring member of the output at `index`.
    pub fn member(&self, index: u64) -> Option<RingMember> {
        self.members.get(usize::try_from(index).ok()?).copied()
    }

    /// The public amount of the output at `index`, if the chain shows one.
    pub fn public_amount(&self, index: u64) -> Option<u64> {
        self.public
            .get(usize::try_from(index).ok()?)
            .copied()
            .flatten()
    }

    /// The slot that created the output at `index`.
    pub fn slot_of(&self, index: u64) -> Option<Slot> {
        if index >= self.len() {
            return None;
        }
        let at = self.slots.partition_point(|(_, first)| *first <= index);
        self.slots.get(at.checked_sub(1)?).map(|(s, _)| *s)
    }

    /// The indices of the outputs created in the latest slot at or before
    /// `slot` that created any.
    fn outputs_at(&self, slot: Slot) -> Option<std::ops::Range<u64>> {
        let at = self.slots.partition_point(|(s, _)| *s <= slot);
        let (_, first) = self.slots.get(at.checked_sub(1)?)?;
        let end = self.slots.get(at).map_or(self.len(), |(_, next)| *next);
        Some(*first..end)
    }
}

/// The distribution of ages every ring member is drawn from.
#[derive(Clone, Copy, Debug)]
pub struct AgeDistribution {
    log_age: Gamma<f64>,
}

impl Default for AgeDistribution {
    fn default() -> Self {
        AgeDistribution::new()
    }
}

impl AgeDistribution {
    /// `ln(1 + age) ~ Gamma(AGE_SHAPE, AGE_SCALE)`.
    pub fn new() -> AgeDistribution {
        AgeDistribution {
            // Both parameters are positive and finite constants.
            #[allow(clippy::expect_used)]
            log_age: Gamma::new(AGE_SHAPE, AGE_SCALE).expect("positive constants"),
        }
    }

    /// An age in slots.
    pub fn age(&self, rng: &mut impl CryptoRng) -> u64 {
        let x = self.log_age.sample(rng);
        // exp of a gamma sample: finite and ≥ 1; `as` saturates huge ones,
        // which the caller then rejects as older than the pool.
        (x.exp() - 1.0).floor().max(0.0) as u64
    }

    /// One pool index drawn as every ring member is, for a transaction of
    /// slot `now`: an age, then a uniform output among those of the slot it
    /// names that `admissible` accepts. `None` if the age falls before the
    /// pool's first output or the slot has no admissible output (the caller
    /// draws again). A slot's weight is its age's, however many outputs it
    /// holds that are not admissible: public dust can not crowd a slot out.
    pub fn index(
        &self,
        pool: &PoolIndex,
        now: Slot,
        admissible: &impl Fn(u64) -> bool,
        rng: &mut impl CryptoRng,
    ) -> Option<u64> {
        let age = self.age(rng);
        let first = pool.slots.first()?.0;
        let slot = now.0.checked_sub(age).filter(|s| *s >= first.0)?;
        let range = pool.outputs_at(Slot(slot))?;
        let width = range.end.checked_sub(range.start).filter(|w| *w > 0)?;
        // Rejection within the slot is uniform over its admissible outputs;
        // a slot mostly of inadmissible ones is searched in full.
        for _ in 0..TRIES_IN_SLOT {
            let pick = range.start + uniform_below(width, rng);
            if admissible(pick) {
                return Some(pick);
            }
        }
        let kept: Vec<u64> = range.filter(|i| admissible(*i)).collect();
        let n = u64::try_from(kept.len()).ok().filter(|n| *n > 0)?;
        kept.get(usize::try_from(uniform_below(n, rng)).ok()?)
            .copied()
    }

    /// A ring of `size` strictly increasing pool indices holding `real`, its
    /// other members drawn by [`index`](Self::index) among the outputs
    /// `admissible` accepts (the real output must be one).
    ///
    /// # Errors
    /// [`DecoyError::PoolTooSmall`] if the pool does not yield enough
    /// admissible outputs.
    pub fn ring(
        &self,
        pool: &PoolIndex,
        now: Slot,
        real: u64,
        size: usize,
        admissible: impl Fn(u64) -> bool,
        rng: &mut impl CryptoRng,
    ) -> Result<Vec<u64>, DecoyError> {
        if real >= pool.len() || pool.len() < size as u64 {
            return Err(DecoyError::PoolTooSmall(size));
        }
        let mut ring = vec![real];
        let mut tries = 0usize;
        while ring.len() < size {
            tries += 1;
            if tries > TRIES_PER_MEMBER.saturating_mul(size) {
                return Err(DecoyError::PoolTooSmall(size));
            }
            if let Some(pick) = self.index(pool, now, &admissible, rng)
                && !ring.contains(&pick)
            {
                ring.push(pick);
            }
        }
        ring.sort_unstable();
        Ok(ring)
    }
}

/// A uniform integer in `0..n` (`n > 0`), without modulo bias.
fn uniform_below(n: u64, rng: &mut impl CryptoRng) -> u64 {
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return x % n;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::cast_precision_loss)]
mod tests {
    use super::*;
    use quartier_shielded::output::Output;
    use quartier_types::{Height, Money};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const RING: usize = 16;
    /// The old wallet's window of recent outputs.
    const OLD_WINDOW: u64 = 4_096;
    /// χ² with 15 degrees of freedom at p = 0.001.
    const CHI2_15_P001: f64 = 37.70;

    /// A pool of `slots` slots of `per_slot` outputs each, every third one
    /// with a public amount of `public` (the rest hidden).
    fn pool(slots: u64, per_slot: u64, public: u64) -> PoolIndex {
        let mut p = PoolIndex::new();
        for i in 0..slots * per_slot {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&i.to_le_bytes());
            p.push(&PoolOutput {
                output: Output {
                    key,
                    tx_key: [0; 32],
                    view_tag: 0,
                    commitment: [0; 32],
                    encrypted_amount: [0; 8],
                },
                height: Height(i),
                slot: Slot(i / per_slot),
                public_amount: (i % 3 == 0).then(|| Money::new(public)),
                settles: None,
            });
        }
        p
    }

    /// The χ² statistic of `counts` against a uniform distribution.
    fn chi2(counts: &[u64]) -> f64 {
        let n: u64 = counts.iter().sum();
        let e = n as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum()
    }

    /// The old selection: decoys uniform from the last `OLD_WINDOW` outputs.
    fn window_ring(pool: &PoolIndex, real: u64, rng: &mut ChaCha20Rng) -> Vec<u64> {
        let start = pool.len() - OLD_WINDOW;
        let mut ring = vec![real];
        while ring.len() < RING {
            let pick = start + uniform_below(OLD_WINDOW, rng);
            if !ring.contains(&pick) {
                ring.push(pick);
            }
        }
        ring.sort_unstable();
        ring
    }

    /// Real outputs spent at ages of the shared distribution, many older than
    /// any window: a χ² test of the real output's position in its ring
    /// against uniform (15 degrees of freedom, rejected above 37.70, p =
    /// 0.001). Pool indices grow with age, so the position is also the rank
    /// of its age among the members'. The old window selection fails the
    /// same test.
    #[test]
    fn the_real_outputs_position_and_age_are_uniform_in_its_ring() {
        // 3 000 slots of 20 outputs: 60 000 outputs, 15 old windows deep.
        let p = pool(3_000, 20, 1);
        let now = Slot(3_000);
        let d = AgeDistribution::new();
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let (mut position, mut old_position) = (vec![0u64; RING], vec![0u64; RING]);
        let (mut older_than_window, mut trials) = (0, 0);
        while trials < 4_000 {
            let Some(real) = d.index(&p, now, &|_| true, &mut rng) else {
                continue;
            };
            trials += 1;
            let ring = d.ring(&p, now, real, RING, |_| true, &mut rng).unwrap();
            position[ring.iter().position(|&i| i == real).unwrap()] += 1;
            if real < p.len() - OLD_WINDOW {
                older_than_window += 1;
            }
            let old = window_ring(&p, real, &mut rng);
            old_position[old.iter().position(|&i| i == real).unwrap()] += 1;
        }
        assert!(
            older_than_window > 100,
            "the test spends outputs older than the old window ({older_than_window})"
        );
        let (new, old) = (chi2(&position), chi2(&old_position));
        assert!(new < CHI2_15_P001, "position not uniform: χ² = {new:.1}");
        assert!(
            old > CHI2_15_P001,
            "the test does not see the window selection's leak: χ² = {old:.1}"
        );
    }

    /// The old selection named every real output older than its window: the
    /// only member below it. Whole-pool selection gives such an output
    /// decoys of its age.
    #[test]
    fn an_output_older_than_any_window_has_decoys_of_its_age() {
        let p = pool(3_000, 20, 1);
        let now = Slot(3_000);
        let d = AgeDistribution::new();
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        let boundary = p.len() - OLD_WINDOW;
        let (mut alone, mut old_alone, mut trials) = (0, 0, 0);
        while trials < 500 {
            let Some(real) = d
                .index(&p, now, &|_| true, &mut rng)
                .filter(|i| *i < boundary)
            else {
                continue;
            };
            trials += 1;
            let ring = d.ring(&p, now, real, RING, |_| true, &mut rng).unwrap();
            if ring.iter().filter(|&&i| i < boundary).count() == 1 {
                alone += 1;
            }
            let old = window_ring(&p, real, &mut rng);
            if old.iter().filter(|&&i| i < boundary).count() == 1 {
                old_alone += 1;
            }
        }
        assert_eq!(old_alone, trials, "the old selection isolates every one");
        assert!(
            alone * 4 < trials,
            "{alone} of {trials} old outputs alone below the window"
        );
    }

    /// With every public amount known, no decoy is below what the input must
    /// have held; hidden-amount outputs stay eligible.
    #[test]
    fn decoys_survive_an_observer_of_public_amounts() {
        let p = pool(200, 20, 5);
        let now = Slot(200);
        let d = AgeDistribution::new();
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let need = 10;
        for _ in 0..200 {
            let real = 1; // hidden amount (1 % 3 != 0)
            let ring = d
                .ring(
                    &p,
                    now,
                    real,
                    RING,
                    |i| p.public_amount(i).is_none_or(|a| a >= need),
                    &mut rng,
                )
                .unwrap();
            let amounts: Vec<Option<u64>> = ring.iter().map(|&i| p.public_amount(i)).collect();
            let kept = quartier_shielded::linking::amount_consistent(&[amounts], need);
            assert!(kept[0].iter().all(|k| *k), "{ring:?}");
        }
    }

    /// Issue 17 review: shielding public dust into a slot must not crowd
    /// its real outputs out of rings (else the real input, a slot old, is
    /// left alone among old decoys).
    #[test]
    fn public_dust_does_not_dilute_a_slot() {
        let build = |dust: u64| {
            let mut p = PoolIndex::new();
            let mut i = 0u64;
            for slot in 0..100u64 {
                let extra = if slot == 99 { dust } else { 0 };
                for k in 0..10 + extra {
                    let mut key = [0u8; 32];
                    key[..8].copy_from_slice(&i.to_le_bytes());
                    i += 1;
                    p.push(&PoolOutput {
                        output: Output {
                            key,
                            tx_key: [0; 32],
                            view_tag: 0,
                            commitment: [0; 32],
                            encrypted_amount: [0; 8],
                        },
                        height: Height(i),
                        slot: Slot(slot),
                        public_amount: (k >= 10).then(|| Money::new(1)),
                        settles: None,
                    });
                }
            }
            p
        };
        let share = |p: &PoolIndex| {
            let d = AgeDistribution::new();
            let mut rng = ChaCha20Rng::from_seed([4; 32]);
            let hidden = |i: u64| p.public_amount(i).is_none();
            let (mut last, mut n) = (0u32, 0u32);
            while n < 20_000 {
                if let Some(i) = d.index(p, Slot(100), &hidden, &mut rng) {
                    n += 1;
                    last += u32::from(p.slot_of(i) == Some(Slot(99)));
                }
            }
            f64::from(last) / f64::from(n)
        };
        let (clean, dusted) = (share(&build(0)), share(&build(1_000)));
        assert!(
            (clean - dusted).abs() < 0.02,
            "the last slot's share fell from {clean:.3} to {dusted:.3}"
        );
    }

    #[test]
    fn slots_are_found_by_index() {
        let p = pool(10, 3, 1);
        assert_eq!(p.slot_of(0), Some(Slot(0)));
        assert_eq!(p.slot_of(5), Some(Slot(1)));
        assert_eq!(p.slot_of(29), Some(Slot(9)));
        assert_eq!(p.slot_of(30), None);
        assert_eq!(p.outputs_at(Slot(4)), Some(12..15));
        assert_eq!(p.outputs_at(Slot(40)), Some(27..30));
    }

    #[test]
    fn a_pool_too_small_for_a_ring_is_refused() {
        let p = pool(1, 4, 1);
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let d = AgeDistribution::new();
        assert_eq!(
            d.ring(&p, Slot(1), 0, RING, |_| true, &mut rng),
            Err(DecoyError::PoolTooSmall(RING))
        );
        // Enough outputs, none admissible.
        let p = pool(20, 4, 1);
        assert_eq!(
            d.ring(&p, Slot(20), 0, 4, |i| i == 0, &mut rng),
            Err(DecoyError::PoolTooSmall(4))
        );
    }
}
