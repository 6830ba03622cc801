//! A local quartier network on one machine, and the simulated households
//! that trade on it: what `quartier devnet` and `quartier bench chain` run.
//!
//! - [`layout`]: keys, the network genesis and one config per validator and
//!   enclave on loopback ports, and the supervised processes;
//! - [`fleet`]: the meter agents of a simulated neighbourhood, driven by real
//!   load and PV profiles, against a running chain's API;
//! - [`loadgen`]: a bounded load generator that measures what the chain did.
//!
//! All of it is I/O against running processes, paced by the wall clock (a
//! tool, not consensus code).
#![allow(clippy::disallowed_methods)]

pub mod fleet;
pub mod layout;
pub mod loadgen;
