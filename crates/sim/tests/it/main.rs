//! Integration tests of the simulator.
#![allow(clippy::unwrap_used)]

mod audit;
mod properties;
