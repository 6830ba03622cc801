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
//!   published root, and public aggregates; [`auctioneer::Auctioneer::clear_batch`]
//!   clears a slot as the chain froze it, identically in every enclave;
//! - [`committee`]: the FROST Pedersen DKG, group signatures and the message
//!   a report is signed over;
//! - [`epoch`]: identity keys and epoch keys sealed member to member;
//! - [`service`]: one enclave as a byte-level state machine (DKG rounds, epoch
//!   keys, clearing, signing sessions, state sealed to a **simulated** platform);
//! - [`dkg`] and [`coordinator`]: a committee's DKG and threshold signing,
//!   coordinated sans-IO;
//! - [`host`]: what a member's host does (registration, committee, epoch
//!   keys, catch-up, clearing and reports, failover), as a sans-IO state
//!   machine the `quartier enclave run` process only executes.

pub mod auctioneer;
pub mod coordinator;
pub mod dkg;
pub mod host;
pub mod rpc;
pub mod service;

pub use quartier_enclave_proto::{attestation, committee, epoch, sealed};
