//! What to simulate: a run's plan, its region's default tariffs, and why a
//! run can fail.

use quartier_auction::AuctionError;
use quartier_meter::StrategyKind;
use quartier_meter::metering::Metering;
use quartier_types::{Money, Price, RegionParams};
use serde::Serialize;

/// Quarter hours in a day.
pub const SLOTS_PER_DAY: u64 = 96;

/// What to simulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SimPlan {
    /// Households in the neighbourhood.
    pub households: u32,
    /// How many of them have PV (the first ones).
    pub prosumers: u32,
    /// Days to run.
    pub days: u32,
    /// Day of the profile year the run starts on (1 is 1 January).
    pub start_day: u32,
    /// Seed of every random draw.
    pub seed: u64,
    /// How households bid.
    pub strategy: StrategyKind,
    /// The region's tariffs and fee.
    pub params: RegionParams,
    /// Orders in whole lots of this many Wh, the rounding carried to later
    /// slots (`quartier_meter::lots`); 0: every reading exactly.
    pub lot_wh: u64,
    /// Which flows a household orders: its net (one order) or, gross, its
    /// consumption and its production (mode A's rule).
    pub metering: Metering,
}

impl SimPlan {
    /// The quarter hour of the profile year the run starts at.
    pub fn start_interval(&self) -> u64 {
        u64::from(self.start_day.saturating_sub(1)) * SLOTS_PER_DAY
    }
}

/// Why a run could not be done.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The plan is not runnable.
    #[error("invalid plan: {0}")]
    Plan(&'static str),
    /// A book could not be cleared (an order out of the admissible band or an
    /// overflow: a simulator bug, since strategies clamp their limits).
    #[error("slot {slot}: {source}")]
    Clearing {
        /// The slot of the book.
        slot: u64,
        /// The auction's error.
        source: AuctionError,
    },
}

/// The region parameters of the devnet and the simulator: grid tariff
/// 20.75 Rp/kWh, feed-in 4 Rp/kWh, no local fee.
pub fn default_params() -> RegionParams {
    RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)
        .unwrap_or_else(|_| unreachable!("feed-in below grid"))
}

/// Money as a signed amount, for bills that may be credits.
pub(crate) fn signed(m: Money) -> i128 {
    i128::from(m.get())
}
