//! Multi-validator tests on commonware's deterministic runtime and simulated network.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod api;
mod api_flood;
mod attacks;
mod consensus;
mod epochs;
mod faults;
mod fuzz_corpus;
mod harness;
mod restart;
mod sync;
