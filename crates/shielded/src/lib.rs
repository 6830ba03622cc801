//! Privacy mode A (DESIGN §6): the shielded pool's cryptography, pure and
//! deterministic given its randomness, built on monero-oxide's maintained
//! primitives — CLSAG ring signatures (`monero-clsag`), Bulletproofs+
//! (`monero-bulletproofs`), Pedersen commitments and Keccak hashing
//! (`monero-ed25519`, `monero-primitives`) over `curve25519-dalek` 4.x.
//! Nothing here is a hand-written primitive: this crate composes them into
//! CryptoNote's constructions and names every hash input with a
//! `QUARTIER_SHIELDED_*` tag.
//!
//! - [`keys`]: wallet keys (view, spend) and public addresses;
//! - [`output`]: one-time stealth outputs with view tags, committed and
//!   encrypted amounts, and scanning with the view key alone;
//! - [`spend`]: spending outputs with CLSAG over a ring of pool outputs, key
//!   images against double spends, and the balance of commitments;
//! - [`range`]: Bulletproofs+ that committed amounts lie in `[0, 2^64)`;
//! - [`authorise`]: a meter's ring signature over its region's registered
//!   keys, tweaked per (region, slot, side), so it places one order per slot
//!   and side and its orders do not link.
//!
//! Points and scalars cross this crate's boundary only as 32-byte encodings,
//! so the two `curve25519-dalek` lines in the tree never meet.
#![forbid(unsafe_code)]

pub mod authorise;
pub mod keys;
pub mod linking;
pub mod output;
pub mod range;
pub mod spend;
