//! Integration tests of the ledger.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod conformance;
mod errors;
mod fuzz_corpus;
mod governance;
mod kit;
mod proofs;
mod properties;
mod scenario;
mod sealed_market;
mod shielded_pool;
mod signatures;
mod snapshots;
