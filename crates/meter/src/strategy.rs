//! Bidding strategies: how a household chooses the limit of its order.
//!
//! A strategy only chooses the limit; the side and energy are what the meter
//! measured. Every limit a strategy returns lies in `[feed_in, grid]` of the
//! region (it is clamped there), so the ledger admits it and the household can
//! never do worse than the utility-only bill on any kWh: a buy pays at most
//! its limit ≤ grid tariff, a sell receives at least its limit ≥ feed-in.
//!
//! Strategies are deterministic: randomness comes from a seed given at
//! construction, and learning only from the outcomes passed to
//! [`BiddingStrategy::observe`].

use quartier_types::{Energy, Price, RegionParams, Side, Slot};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Quarter hours in a day.
pub const SLOTS_PER_DAY: u32 = 96;

/// What a strategy knows when it sets a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BidContext {
    /// Buy or sell.
    pub side: Side,
    /// The energy the meter measured.
    pub energy: Energy,
    /// The slot the order is for.
    pub slot: Slot,
    /// The quarter hour of the day, `0..96` (local standard time).
    pub slot_of_day: u32,
    /// The region's tariffs and fee.
    pub params: RegionParams,
}

/// How an order fared, fed back to the strategy after the slot cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BidOutcome {
    /// The context the limit was set in.
    pub bid: BidContext,
    /// The limit the order had.
    pub limit: Price,
    /// Energy matched locally.
    pub matched: Energy,
    /// Energy-weighted mean price of all the slot's local trades (what buyers
    /// paid), if there were any.
    pub market_price: Option<Price>,
}

/// A household's preferred price ranges, one per side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Limits the household is comfortable buying at.
    pub buy: PriceRange,
    /// Limits the household is comfortable selling at.
    pub sell: PriceRange,
}

/// An inclusive range of prices, `low ≤ high`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRange {
    /// The lowest price.
    pub low: Price,
    /// The highest price.
    pub high: Price,
}

impl PriceRange {
    /// The price at fraction `num/den` of the way from `low` to `high`.
    fn at(self, num: u64, den: u64) -> Price {
        let span = self.high.get().saturating_sub(self.low.get());
        let offset = u128::from(span) * u128::from(num.min(den)) / u128::from(den.max(1));
        // offset ≤ span, so it fits in u64 and low + offset ≤ high.
        Price::new(self.low.get() + u64::try_from(offset).unwrap_or(span))
    }

    fn midpoint(self) -> Price {
        self.at(1, 2)
    }
}

impl Preferences {
    /// Draws a household's ranges from `rng`, in the region's tariff band
    /// `[F, G]`: buys somewhere in the upper half, sells in the lower third,
    /// each range a fifth of the band wide.
    pub fn draw(rng: &mut impl Rng, params: &RegionParams) -> Preferences {
        let band = PriceRange {
            low: params.feed_in_tariff(),
            high: params.grid_tariff(),
        };
        let fifth = |start: u64| PriceRange {
            low: band.at(start, 1_000),
            high: band.at(start + 200, 1_000),
        };
        let buy_start = 500 + rng.next_u64() % 301;
        let sell_start = rng.next_u64() % 301;
        Preferences {
            buy: fifth(buy_start),
            sell: fifth(sell_start),
        }
    }

    fn range(&self, side: Side) -> PriceRange {
        match side {
            Side::Buy => self.buy,
            Side::Sell => self.sell,
        }
    }
}

/// Chooses the limit of a household's orders.
pub trait BiddingStrategy: Send {
    /// The limit for an order; callers clamp it into `[feed_in, grid]`.
    fn limit(&mut self, bid: &BidContext) -> Price;

    /// Learns from how the order fared (the default ignores it).
    fn observe(&mut self, _outcome: &BidOutcome) {}
}

/// `price` clamped into the region's admissible band `[feed_in, grid]`.
pub fn admissible(price: Price, params: &RegionParams) -> Price {
    price.clamp(params.feed_in_tariff(), params.grid_tariff())
}

/// Asks `strategy` for a limit and clamps it into the admissible band.
pub fn limit_for(strategy: &mut dyn BiddingStrategy, bid: &BidContext) -> Price {
    admissible(strategy.limit(bid), &bid.params)
}

/// The same limit every time: the midpoint of the household's range.
#[derive(Clone, Debug)]
pub struct FixedLimits {
    prefs: Preferences,
}

impl BiddingStrategy for FixedLimits {
    fn limit(&mut self, bid: &BidContext) -> Price {
        self.prefs.range(bid.side).midpoint()
    }
}

/// A fresh uniform draw within the household's range for every order.
#[derive(Clone, Debug)]
pub struct RandomInRange {
    prefs: Preferences,
    rng: ChaCha8Rng,
}

impl BiddingStrategy for RandomInRange {
    fn limit(&mut self, bid: &BidContext) -> Price {
        self.prefs
            .range(bid.side)
            .at(self.rng.next_u64() % 1_001, 1_000)
    }
}

/// Prices follow the sun: around midday, when neighbours' PV is plentiful,
/// buys bid the bottom of their range and sells ask the bottom of theirs;
/// at night both sit at the top (a scarce kWh is worth more).
#[derive(Clone, Debug)]
pub struct TimeOfDay {
    prefs: Preferences,
}

/// How scarce local energy is at a quarter hour, in thousandths: 0 at 13:00,
/// 1 000 from 19:00 to 07:00, linear in between.
fn scarcity(slot_of_day: u32) -> u64 {
    let noon = 13 * 4;
    let distance = u64::from(slot_of_day.abs_diff(noon));
    (distance * 1_000 / 24).min(1_000)
}

impl BiddingStrategy for TimeOfDay {
    fn limit(&mut self, bid: &BidContext) -> Price {
        self.prefs
            .range(bid.side)
            .at(scarcity(bid.slot_of_day), 1_000)
    }
}

/// Learns the market price per hour of day and bids around it.
///
/// It keeps, for each hour, an exponential average (weight 1/4) of the slot's
/// energy-weighted trade price. A buy bids that average plus a margin, a sell
/// asks it minus a margin. A side whose last order was not fully matched
/// widens its margin by one step (bids more eagerly); one fully matched
/// narrows it by half a step. Before it has seen a price for the hour it uses
/// the midpoint of the household's range.
#[derive(Clone, Debug)]
pub struct Adaptive {
    prefs: Preferences,
    /// Learned price per hour, in mRp/kWh.
    hourly: [Option<u64>; 24],
    /// Current margin per side, in mRp/kWh: `[buy, sell]`.
    margin: [u64; 2],
    step: u64,
}

impl Adaptive {
    fn side_index(side: Side) -> usize {
        match side {
            Side::Buy => 0,
            Side::Sell => 1,
        }
    }
}

impl BiddingStrategy for Adaptive {
    fn limit(&mut self, bid: &BidContext) -> Price {
        let hour = (bid.slot_of_day / 4) as usize % 24;
        let Some(learned) = self.hourly[hour] else {
            return self.prefs.range(bid.side).midpoint();
        };
        let margin = self.margin[Self::side_index(bid.side)];
        match bid.side {
            Side::Buy => Price::new(learned.saturating_add(margin)),
            Side::Sell => Price::new(learned.saturating_sub(margin)),
        }
    }

    fn observe(&mut self, outcome: &BidOutcome) {
        let hour = (outcome.bid.slot_of_day / 4) as usize % 24;
        if let Some(price) = outcome.market_price {
            let p = price.get();
            self.hourly[hour] = Some(match self.hourly[hour] {
                Some(old) => (old * 3 + p) / 4,
                None => p,
            });
        }
        let band = outcome
            .bid
            .params
            .grid_tariff()
            .get()
            .saturating_sub(outcome.bid.params.feed_in_tariff().get());
        let m = &mut self.margin[Self::side_index(outcome.bid.side)];
        *m = if outcome.matched < outcome.bid.energy {
            m.saturating_add(self.step).min(band)
        } else {
            m.saturating_sub(self.step / 2)
        };
    }
}

/// The strategies a neighbourhood can be run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// [`FixedLimits`] for every household.
    Fixed,
    /// [`RandomInRange`] for every household.
    Random,
    /// [`TimeOfDay`] for every household.
    TimeOfDay,
    /// [`Adaptive`] for every household.
    Adaptive,
    /// The four in turn: household `i` uses strategy `i mod 4`.
    Mixed,
}

impl StrategyKind {
    /// Every kind, in the order of the command line.
    pub const ALL: [StrategyKind; 5] = [
        StrategyKind::Fixed,
        StrategyKind::Random,
        StrategyKind::TimeOfDay,
        StrategyKind::Adaptive,
        StrategyKind::Mixed,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Fixed => "fixed",
            StrategyKind::Random => "random",
            StrategyKind::TimeOfDay => "time-of-day",
            StrategyKind::Adaptive => "adaptive",
            StrategyKind::Mixed => "mixed",
        }
    }

    /// The kind household `index` bids with: `self`, or for [`StrategyKind::Mixed`]
    /// the `index mod 4`-th of fixed, random, time-of-day, adaptive.
    pub fn for_household(self, index: u32) -> StrategyKind {
        match self {
            StrategyKind::Mixed => [
                StrategyKind::Fixed,
                StrategyKind::Random,
                StrategyKind::TimeOfDay,
                StrategyKind::Adaptive,
            ][index as usize % 4],
            other => other,
        }
    }

    /// The strategy household `index` uses, with its preferences and a
    /// 32-byte seed of its own.
    pub fn build(self, index: u32, prefs: Preferences, seed: [u8; 32]) -> Box<dyn BiddingStrategy> {
        match self.for_household(index) {
            StrategyKind::Fixed | StrategyKind::Mixed => Box::new(FixedLimits { prefs }),
            StrategyKind::Random => Box::new(RandomInRange {
                prefs,
                rng: ChaCha8Rng::from_seed(seed),
            }),
            StrategyKind::TimeOfDay => Box::new(TimeOfDay { prefs }),
            StrategyKind::Adaptive => {
                let width = prefs.buy.high.get().saturating_sub(prefs.buy.low.get());
                Box::new(Adaptive {
                    prefs,
                    hourly: [None; 24],
                    margin: [width / 2, width / 2],
                    step: (width / 10).max(1),
                })
            }
        }
    }
}

/// An unknown strategy name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}` (expected fixed, random, time-of-day, adaptive or mixed)")]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for StrategyKind {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownStrategy(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params() -> RegionParams {
        RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500)).unwrap()
    }

    fn bid(side: Side, slot_of_day: u32) -> BidContext {
        BidContext {
            side,
            energy: Energy::new(300),
            slot: Slot(7),
            slot_of_day,
            params: params(),
        }
    }

    #[test]
    fn preferences_lie_in_the_band() {
        let p = params();
        let mut rng = ChaCha8Rng::from_seed([3; 32]);
        for _ in 0..1_000 {
            let prefs = Preferences::draw(&mut rng, &p);
            for r in [prefs.buy, prefs.sell] {
                assert!(r.low <= r.high);
                assert!(p.admits(r.low) && p.admits(r.high));
            }
            assert!(prefs.sell.low < prefs.buy.high);
        }
    }

    #[test]
    fn time_of_day_is_cheapest_at_one_pm() {
        let prefs = Preferences::draw(&mut ChaCha8Rng::from_seed([1; 32]), &params());
        let mut s = StrategyKind::TimeOfDay.build(0, prefs, [0; 32]);
        let noon = s.limit(&bid(Side::Buy, 52));
        let night = s.limit(&bid(Side::Buy, 8));
        assert_eq!(noon, prefs.buy.low);
        assert_eq!(night, prefs.buy.high);
    }

    #[test]
    fn adaptive_bids_more_after_missing_and_less_after_filling() {
        let prefs = Preferences::draw(&mut ChaCha8Rng::from_seed([2; 32]), &params());
        let mut s = StrategyKind::Adaptive.build(3, prefs, [0; 32]);
        let b = bid(Side::Buy, 40);
        let first = s.limit(&b);
        let missed = BidOutcome {
            bid: b,
            limit: first,
            matched: Energy::ZERO,
            market_price: Some(Price::new(12_000)),
        };
        s.observe(&missed);
        let after_miss = s.limit(&b);
        s.observe(&missed);
        assert!(s.limit(&b) > after_miss, "a miss raises the bid");
        let filled = BidOutcome {
            matched: b.energy,
            ..missed
        };
        let before = s.limit(&b);
        s.observe(&filled);
        assert!(s.limit(&b) < before, "a fill lowers the bid");
    }

    #[test]
    fn names_round_trip() {
        for k in StrategyKind::ALL {
            assert_eq!(k.name().parse::<StrategyKind>(), Ok(k));
        }
        assert!("greedy".parse::<StrategyKind>().is_err());
    }

    proptest! {
        /// Whatever a strategy has learned, the limit callers use is admissible.
        #[test]
        fn limits_are_always_admissible(
            kind in 0usize..5,
            seed in any::<[u8; 32]>(),
            rounds in proptest::collection::vec((any::<bool>(), 0u32..96, 0u64..2_000, 0u64..30_000), 1..60),
        ) {
            let p = params();
            let prefs = Preferences::draw(&mut ChaCha8Rng::from_seed(seed), &p);
            let mut s = StrategyKind::ALL[kind].build(kind as u32, prefs, seed);
            for (buy, sod, matched, market) in rounds {
                let side = if buy { Side::Buy } else { Side::Sell };
                let b = bid(side, sod);
                let limit = limit_for(s.as_mut(), &b);
                prop_assert!(p.admits(limit));
                s.observe(&BidOutcome {
                    bid: b,
                    limit,
                    matched: Energy::new(matched.min(b.energy.get())),
                    market_price: Some(Price::new(market)),
                });
            }
        }
    }
}
