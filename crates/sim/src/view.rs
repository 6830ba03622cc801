//! What an observer of the chain sees of a run ([`PublicView`]) and what only
//! the simulator knows ([`GroundTruth`]), kept apart so the auditor is scored
//! against an answer key it never reads while attacking.

use crate::household::{Household, Reading};
use crate::market::{RunObserver, SimPlan};
use quartier_meter::metering::Metering;
use quartier_types::{AccountId, Energy, Order, Price, RegionParams, Side, hash};
use serde::{Deserialize, Serialize};

/// How orders reach the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PrivacyMode {
    /// Each order is signed by the meter's registered account.
    Transparent,
    /// Mode A: each order is signed by a one-time key and a ring over the
    /// region's meters; no originator is shown. Zero-energy cover orders
    /// carry nothing and are left out of the view.
    Shielded,
}

impl PrivacyMode {
    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            PrivacyMode::Transparent => "transparent",
            PrivacyMode::Shielded => "shielded",
        }
    }
}

/// A privacy mode name that does not exist (yet).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown privacy mode `{0}` (this build has: transparent, shielded)")]
pub struct UnknownMode(pub String);

impl std::str::FromStr for PrivacyMode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transparent" => Ok(PrivacyMode::Transparent),
            "shielded" => Ok(PrivacyMode::Shielded),
            other => Err(UnknownMode(other.to_string())),
        }
    }
}

/// A registered meter, as the DSO's public registry shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// The meter's account.
    pub meter: AccountId,
    /// Whether it may sell (has PV).
    pub prosumer: bool,
    /// Registered PV peak power, W.
    pub pv_watts: u32,
}

/// One order as the chain publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicOrder {
    /// Slot of the run (0 is the first).
    pub slot: u64,
    /// Position in the slot's book.
    pub position: u32,
    /// The account that placed it, if the mode shows one.
    pub originator: Option<AccountId>,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub limit: Price,
    /// Energy.
    pub energy: Energy,
}

impl PublicOrder {
    /// Energy with its sign: positive bought, negative sold, Wh.
    pub fn signed_wh(&self) -> i64 {
        let e = i64::try_from(self.energy.get()).unwrap_or(i64::MAX);
        match self.side {
            Side::Buy => e,
            Side::Sell => -e,
        }
    }
}

/// Everything public about a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublicView {
    /// How orders reached the chain.
    pub mode: PrivacyMode,
    /// The region's tariffs and fee.
    pub params: RegionParams,
    /// The quarter hour of the year of slot 0 (public: the chain's clock).
    pub start_interval: u64,
    /// Slots in the run.
    pub slots: u64,
    /// Which flows meters order (a protocol rule, public): the adversary
    /// models the amounts accordingly. Absent in older runs: net.
    #[serde(default)]
    pub metering: Metering,
    /// The meter registry.
    pub registry: Vec<RegistryEntry>,
    /// Every order, by slot and position.
    pub orders: Vec<PublicOrder>,
}

impl PublicView {
    /// The same view with every originator removed: what a mode that hides
    /// who placed an order, but publishes amounts and prices, would show.
    pub fn without_originators(&self) -> PublicView {
        let mut view = self.clone();
        for o in &mut view.orders {
            o.originator = None;
        }
        view
    }
}

/// The simulator's answer key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Each household's meter account, by household index.
    pub meters: Vec<AccountId>,
    /// The household of each public order, in the order of `PublicView::orders`.
    pub order_households: Vec<u32>,
    /// Each household's net metered energy per slot (consumption − own PV), Wh.
    pub net_wh: Vec<Vec<i64>>,
}

/// The account a simulated meter trades with in an offline run.
pub fn sim_meter(seed: u64, index: u32) -> AccountId {
    AccountId(
        hash::tagged(
            "QUARTIER_SIM_METER",
            &[&seed.to_le_bytes(), &index.to_le_bytes()],
        )
        .0,
    )
}

/// Records a run's public view and its ground truth as the run goes.
#[derive(Clone, Debug)]
pub struct RunRecorder {
    view: PublicView,
    truth: GroundTruth,
    seed: u64,
}

impl RunRecorder {
    /// A recorder for `plan` in `mode`.
    pub fn new(plan: &SimPlan, mode: PrivacyMode) -> RunRecorder {
        RunRecorder {
            view: PublicView {
                mode,
                params: plan.params,
                start_interval: plan.start_interval(),
                slots: 0,
                metering: plan.metering,
                registry: Vec::new(),
                orders: Vec::new(),
            },
            truth: GroundTruth {
                meters: Vec::new(),
                order_households: Vec::new(),
                net_wh: Vec::new(),
            },
            seed: plan.seed,
        }
    }

    /// The public view and the ground truth of the run so far.
    pub fn finish(self) -> (PublicView, GroundTruth) {
        (self.view, self.truth)
    }
}

impl RunObserver for RunRecorder {
    fn households(&mut self, households: &[Household]) {
        for h in households {
            let spec = h.spec();
            let meter = sim_meter(self.seed, spec.index);
            self.view.registry.push(RegistryEntry {
                meter,
                prosumer: spec.is_prosumer(),
                pv_watts: spec.pv_watts(),
            });
            self.truth.meters.push(meter);
            self.truth.net_wh.push(Vec::new());
        }
    }

    fn slot(&mut self, slot: u64, readings: &[Reading], book: &[(u32, Order)]) {
        self.view.slots = slot + 1;
        for (net, r) in self.truth.net_wh.iter_mut().zip(readings) {
            net.push(r.net_wh());
        }
        for (position, (household, order)) in (0u32..).zip(book) {
            let originator = match self.view.mode {
                PrivacyMode::Transparent => self.truth.meters.get(*household as usize).copied(),
                PrivacyMode::Shielded => None,
            };
            self.view.orders.push(PublicOrder {
                slot,
                position,
                originator,
                side: order.side,
                limit: order.limit,
                energy: order.energy,
            });
            self.truth.order_households.push(*household);
        }
    }
}
