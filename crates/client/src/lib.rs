//! Clients of a quartier node's and an enclave's HTTP/JSON API: what meter
//! agents, the CLI, the devnet supervisor and the enclave host use to read
//! the chain and submit to it. Every call blocks its caller until the
//! answer or a timeout (ureq resolves a name on a helper thread so that the
//! timeout holds); nothing here decides market or ledger rules.
//!
//! - [`NodeClient`]: one node's API (`GET`/`POST` JSON, bounded replies);
//! - [`chain`]: decoders of the answers the modes need (epoch keys, pool
//!   outputs, key images, meter rings, the chain id);
//! - [`tx`]: signing a transaction and submitting it;
//! - `enclave` (feature `enclave-rpc`): an enclave host's RPC;
//! - [`wallet`]: mode A from a household's side (restore, shield, unshield).
// A client's deadlines are the wall clock's: this crate is I/O, not pure code.
#![allow(clippy::disallowed_methods)]

pub mod chain;
#[cfg(feature = "enclave-rpc")]
pub mod enclave;
mod node;
pub mod tx;
pub mod wallet;

pub use chain::{
    MeterRing, MeterRings, Sellers, chain_id, epoch_keys, key_images, meter_rings, pool_outputs,
    sealable_epoch_keys,
};
pub use node::{ClientError, MAX_REPLY_BYTES, NodeClient};

/// The `error` of a node's refusal (`{"error": "…"}`), or the whole answer
/// if it has none.
pub fn error_of(reply: &serde_json::Value) -> String {
    reply["error"]
        .as_str()
        .map_or_else(|| reply.to_string(), str::to_owned)
}

/// 32 bytes from the operating system's generator: key and wallet seeds,
/// nonces.
///
/// # Errors
/// [`std::io::Error`] if the system has no randomness to give.
pub fn random_seed() -> Result<[u8; 32], std::io::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
    Ok(seed)
}
