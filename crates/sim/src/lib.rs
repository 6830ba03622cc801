//! The neighbourhood simulator: households made from real load and PV
//! profiles, and the market run offline over them.
//!
//! Pure: the profiles are embedded at compile time and randomness comes from
//! the run's seed, so the same plan gives the same report, byte for byte.

pub mod household;
pub mod market;
pub mod profiles;
pub mod report;

pub use household::{Household, HouseholdSpec, Reading};
pub use market::{Neighbourhood, SimError, SimPlan, default_params, run};
pub use profiles::{ProfileError, Profiles};
pub use report::{HouseholdReport, SimReport, SlotSeries};
