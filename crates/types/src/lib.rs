//! Units, ids, orders and canonical encoding shared by every quartier crate.
//!
//! Every quantity that crosses a crate boundary has its own newtype, so that
//! watt-hours can not be added to money by accident (DESIGN §2):
//!
//! | type | unit | example |
//! |---|---|---|
//! | [`Energy`] | whole Wh | 1.2 kWh = `Energy::new(1_200)` |
//! | [`Price`] | milli-Rappen per kWh | 20.75 Rp/kWh = `Price::new(20_750)` |
//! | [`Money`] | micro-Rappen | 1 CHF = `Money::new(100_000_000)` |
//!
//! The units are chosen so that `Wh × mRp/kWh = µRp` exactly: the value of a
//! trade never needs rounding. All arithmetic is checked.
//!
//! Canonical bytes are `borsh`; JSON (serde) is only for the API edge, with
//! every amount an integer. This crate does no I/O.
#![forbid(unsafe_code)]

pub mod api;
pub mod hash;
pub mod hex;
mod ids;
mod market;
#[cfg(feature = "rng06")]
pub mod rng;
mod units;

pub use ids::{AccountId, AccountIdError, Height, RegionId, Slot, SlotDelta, Timestamp};
pub use market::{Order, ParamsError, RegionParams, Side};
pub use units::{Energy, Money, Price};
