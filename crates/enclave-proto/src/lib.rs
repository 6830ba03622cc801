//! Privacy mode B's protocol (DESIGN §7), as everyone outside an enclave
//! sees it: what a verifier (the ledger, a meter, an auditor) needs, and
//! nothing of the in-enclave core ([`quartier-enclave`]'s service, DKG
//! and auctioneer).
//!
//! - [`attestation`]: quotes, the [`attestation::AttestationVerifier`] trait
//!   and its **simulated** backend (there is no TEE hardware here);
//! - [`sealed`]: wallet-signed orders padded to one size and sealed with
//!   HPKE to an epoch key, and the reasons an enclave drops one;
//! - [`report`]: receipts, aggregates and the slot summary a committee signs;
//! - [`committee`]: the FROST group key, group signatures and the messages
//!   a report and a committee are signed over;
//! - [`epoch`]: identity keys and epoch keys sealed member to member.

pub mod attestation;
pub mod committee;
pub mod epoch;
pub mod report;
pub mod sealed;
