//! Privacy mode B (DESIGN §7): orders sealed to a key only attested
//! auctioneer enclaves hold.
//!
//! This crate is the enclave side's pure core, built up in steps:
//! - [`attestation`]: quotes, the [`attestation::AttestationVerifier`] trait
//!   and its **simulated** backend (there is no TEE hardware here);
//! - [`sealed`]: wallet-signed orders padded to one size and sealed with
//!   HPKE to an epoch key, and the reasons an enclave drops one.
//!
//! Still to come (issue #7): the auctioneer core with its prepaid ledger and
//! receipts, the FROST committee key and epoch-key sharing, the ledger
//! transactions and the `quartier enclave` process.

pub mod attestation;
pub mod sealed;
