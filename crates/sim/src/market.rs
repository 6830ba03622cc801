//! The offline market run: a neighbourhood trading slot after slot with the
//! real clearing rule, no chain involved.
//!
//! Each quarter hour every household's meter is read; a household with a
//! non-zero net places one order (buy what it draws, sell what it feeds in)
//! at the limit its strategy chooses; the book is cleared by
//! [`quartier_auction::clear`] exactly as the ledger clears it; each
//! strategy then learns how its order fared.

use crate::household::{Household, Reading};
pub use crate::plan::{SLOTS_PER_DAY, SimError, SimPlan, default_params};
use crate::profiles::Profiles;
use crate::report::{HouseholdReport, PriceHistogram, SimReport, SlotSeries};
use quartier_meter::lots::LotCarry;
use quartier_meter::metering::Metering;
use quartier_meter::strategy::limit_for;
use quartier_meter::{BidContext, BidOutcome, BiddingStrategy};
use quartier_types::{Energy, Order, RegionParams, Side, Slot};

/// A neighbourhood: its households' meters, in index order.
pub struct Neighbourhood {
    profiles: Profiles,
    households: Vec<Household>,
}

impl Neighbourhood {
    /// Draws the households of `plan`.
    ///
    /// # Errors
    /// [`SimError::Plan`] for no households or more prosumers than households.
    pub fn new(plan: &SimPlan, profiles: Profiles) -> Result<Neighbourhood, SimError> {
        if plan.households == 0 {
            return Err(SimError::Plan("no households"));
        }
        if plan.prosumers > plan.households {
            return Err(SimError::Plan("more prosumers than households"));
        }
        let households = (0..plan.households)
            .map(|i| Household::draw(plan.seed, i, i < plan.prosumers, &plan.params))
            .collect();
        Ok(Neighbourhood {
            profiles,
            households,
        })
    }

    /// The households.
    pub fn households(&self) -> &[Household] {
        &self.households
    }

    /// Every meter's reading for quarter hour `interval`, in household order.
    /// Intervals must be read in increasing order.
    pub fn read(&mut self, interval: u64) -> Vec<Reading> {
        let profiles = &self.profiles;
        self.households
            .iter_mut()
            .map(|h| h.read(profiles, interval))
            .collect()
    }
}

/// The order a household places for a reading, if its net is not zero.
pub fn bid_for(reading: &Reading, slot: Slot, params: RegionParams) -> Option<BidContext> {
    bid_for_net(reading.net_wh(), slot, params)
}

/// The order for a net of `net` Wh (positive bought), if not zero.
pub fn bid_for_net(net: i64, slot: Slot, params: RegionParams) -> Option<BidContext> {
    (net != 0).then(|| BidContext {
        side: if net > 0 { Side::Buy } else { Side::Sell },
        energy: Energy::new(net.unsigned_abs()),
        slot,
        slot_of_day: (slot.0 % SLOTS_PER_DAY) as u32,
        params,
    })
}

/// Watches an offline run: its households, every slot's book, its progress.
pub trait RunObserver {
    /// The households, before the first slot.
    fn households(&mut self, _households: &[Household]) {}

    /// One slot: every meter's reading (in household order) and the book as
    /// cleared, each order with the household that placed it.
    fn slot(&mut self, _slot: u64, _readings: &[Reading], _book: &[(u32, Order)]) {}

    /// `done` of `total` slots are finished (called once a day).
    fn progress(&mut self, _done: u64, _total: u64) {}
}

/// A [`RunObserver`] that only reports progress.
struct Progress<'a>(&'a mut dyn FnMut(u64, u64));

impl RunObserver for Progress<'_> {
    fn progress(&mut self, done: u64, total: u64) {
        (self.0)(done, total);
    }
}

/// Runs the market offline for `plan`, calling `progress(done, total)` after
/// each day.
///
/// # Errors
/// [`SimError`] for an invalid plan (or a clearing failure, a bug).
pub fn run(
    plan: &SimPlan,
    profiles: Profiles,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(SimReport, Vec<SlotSeries>), SimError> {
    run_observed(plan, profiles, &mut Progress(progress))
}

/// [`run`], reporting to `observer`.
///
/// # Errors
/// [`SimError`] for an invalid plan (or a clearing failure, a bug).
pub fn run_observed(
    plan: &SimPlan,
    profiles: Profiles,
    observer: &mut dyn RunObserver,
) -> Result<(SimReport, Vec<SlotSeries>), SimError> {
    if plan.days == 0 {
        return Err(SimError::Plan("no days"));
    }
    if !(1..=365).contains(&plan.start_day) {
        return Err(SimError::Plan("start day outside 1..=365"));
    }
    if plan.metering == Metering::Gross && plan.lot_wh > 1 {
        return Err(SimError::Plan("orders in lots are for net metering"));
    }
    let mut hood = Neighbourhood::new(plan, profiles)?;
    observer.households(hood.households());
    let mut strategies: Vec<Box<dyn BiddingStrategy>> = hood
        .households()
        .iter()
        .map(|h| h.strategy(plan.strategy, plan.seed))
        .collect();
    let mut households: Vec<HouseholdReport> = hood
        .households()
        .iter()
        .map(|h| HouseholdReport::new(h.spec(), plan.strategy))
        .collect();
    let mut lots: Vec<(LotCarry, u64)> = hood
        .households()
        .iter()
        .map(|h| {
            (
                LotCarry::new(plan.lot_wh),
                u64::from(h.spec().pv_watts()) / 4,
            )
        })
        .collect();
    let mut prices = PriceHistogram::new(&plan.params);
    let mut series = Vec::new();
    let total = u64::from(plan.days) * SLOTS_PER_DAY;
    let mut orders: Vec<Order> = Vec::new();
    let mut bids: Vec<(usize, BidContext)> = Vec::new();
    let mut book: Vec<(u32, Order)> = Vec::new();
    let start = plan.start_interval();
    for k in 0..total {
        // Bids carry the quarter hour of the year (their time of day).
        let interval = start + k;
        let slot = Slot(interval);
        let readings = hood.read(interval);
        orders.clear();
        bids.clear();
        for (i, reading) in readings.iter().enumerate() {
            households[i].record_reading(reading, &plan.params);
            let (carry, cap) = &mut lots[i];
            // Signed flows, positive bought: one net (in lots, if set) or,
            // gross, the consumption and the production apart.
            let flows: Vec<i64> = match plan.metering {
                Metering::Net => vec![carry.order(reading.net_wh(), *cap)],
                Metering::Gross => plan
                    .metering
                    .orders(reading.consumed.get(), reading.produced.get())
                    .into_iter()
                    .map(|(side, wh)| {
                        let wh = i64::try_from(wh).unwrap_or(i64::MAX);
                        if side == Side::Buy { wh } else { -wh }
                    })
                    .collect(),
            };
            for signed in flows {
                if let Some(bid) = bid_for_net(signed, slot, plan.params) {
                    let limit = limit_for(strategies[i].as_mut(), &bid);
                    orders.push(Order {
                        side: bid.side,
                        limit,
                        energy: bid.energy,
                    });
                    bids.push((i, bid));
                }
            }
        }
        let clearing = quartier_auction::clear(&plan.params, &orders)
            .map_err(|source| SimError::Clearing { slot: k, source })?;
        book.clear();
        book.extend(bids.iter().zip(&orders).map(|((i, _), o)| (*i as u32, *o)));
        observer.slot(k, &readings, &book);
        let price = clearing.mean_price();
        for ((i, bid), (order, result)) in bids.iter().zip(orders.iter().zip(&clearing.orders)) {
            households[*i].record_result(order, result);
            strategies[*i].observe(&BidOutcome {
                bid: *bid,
                limit: order.limit,
                matched: result.matched,
                market_price: price,
            });
        }
        for t in &clearing.trades {
            prices.add(t.price, t.energy);
        }
        series.push(SlotSeries::new(k, &readings, &clearing, price));
        if (k + 1) % SLOTS_PER_DAY == 0 {
            observer.progress(k + 1, total);
        }
    }
    let report = SimReport::new(plan, households, &prices, &series);
    Ok((report, series))
}
