//! Integration tests of the auction: properties, golden vectors, fuzz regressions.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod fuzz_corpus;
mod properties;
mod vectors;
