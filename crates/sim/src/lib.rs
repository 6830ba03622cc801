//! The neighbourhood simulator: households made from real load and PV
//! profiles, the market run offline over them, and the privacy auditor that
//! attacks what such a run publishes.
//!
//! Pure: the profiles are embedded at compile time and randomness comes from
//! the run's seed, so the same plan gives the same report, byte for byte.

pub mod audit;
pub mod crypto_audit;
pub mod household;
pub mod market;
pub mod plan;
pub mod profiles;
pub mod report;
pub mod sealed_audit;
pub mod view;

pub use audit::{AuditError, AuditReport, audit};
pub use household::{Household, HouseholdSpec, Reading};
pub use market::{
    Neighbourhood, RunObserver, SimError, SimPlan, default_params, run, run_observed,
};
pub use profiles::{ProfileError, Profiles};
pub use report::{HouseholdReport, SimReport, SlotSeries};
pub use view::{GroundTruth, PrivacyMode, PublicView, RunRecorder};
