//! Privacy mode B (DESIGN §7): orders sealed to a key only attested
//! auctioneer enclaves hold.
//!
//! This crate is the enclave side's pure core, built up in steps:
//! - [`attestation`]: quotes, the [`attestation::AttestationVerifier`] trait
//!   and its **simulated** backend (there is no TEE hardware here);
//! - [`sealed`]: wallet-signed orders padded to one size and sealed with
//!   HPKE to an epoch key, and the reasons an enclave drops one;
//! - [`auctioneer`]: the private order book and prepaid ledger, clearing with
//!   the transparent market's rule, one receipt per sealed order under a
//!   published root, and public aggregates.
//!
//! Still to come (issue #7): encrypted receipts, the FROST committee key and
//! epoch-key sharing, the ledger transactions, sealed state across restarts
//! and the `quartier enclave` process.

pub mod attestation;
pub mod auctioneer;
pub mod committee;
pub mod epoch;
pub mod sealed;
