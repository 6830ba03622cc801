//! Integration tests of the clients against peers that misbehave.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod peers;
