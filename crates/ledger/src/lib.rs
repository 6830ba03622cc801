//! The market contract as a deterministic state machine (DESIGN §4).
//!
//! [`apply`] takes a signed transaction and the block's context and either
//! changes the [`State`] or rejects the transaction with a [`TxError`] and
//! changes nothing. [`end_block`] settles every book whose gate the block's time
//! has passed. [`execute_block`] does both for a whole block and commits the
//! Merkle root. No I/O, no clock, no randomness: the block context carries
//! height and time, so every validator computes the same state.
//!
//! # Invariants
//! - IOU supply = Σ balances + escrow + custody (mode B); it changes only by `Mint`, `Redeem` and
//!   the utility's feed-in cover (an issuance, counted in `Meta::issued`).
//! - A buy escrows `energy × grid_tariff`, the most it can owe; the book's
//!   parameters are frozen when it opens, so the escrow always covers the bill.
//! - Every settlement equals `quartier_auction::clear` re-run on its orders.
//! - At most one order per meter, slot and side; a meter's sells never exceed
//!   what its registered PV can produce in one slot.
#![forbid(unsafe_code)]

mod apply;
mod error;
mod genesis;
mod merkle;
mod sealed_market;
mod shielded_pool;
mod state;
mod tx;
mod verified;

pub use apply::{
    BlockContext, BlockError, BlockOutcome, Event, Receipt, apply, apply_verified, end_block,
    execute_block,
};
pub use error::{GenesisError, Role, SnapshotError, TxError};
pub use genesis::{
    ChainId, FirstCommittee, Genesis, Limits, MIN_EPOCH_BLOCKS, SealedMarketPolicy, TAG_CHAIN_ID,
};
pub use merkle::MerkleStoreCorrupt;
pub use sealed_market::{
    Committee, CommitteeCandidate, CommitteeVote, CustodyFlows, Enclave, KEPT_EPOCHS,
    MAX_CANDIDATES, MAX_COMMITTEE, MAX_PAYOUTS, MAX_SEALED_REGIONS, MAX_WAITING_BATCHES,
    PostedReport, Predecessor, SealedBatch, SealedEntry,
};
pub use shielded_pool::{
    Allowance, KIND_ORDER, KIND_TRANSFER, KIND_UNSHIELD, MAX_SHIELDED_INPUTS, PoolOutput,
    ShieldedInput, ShieldedOrder, ShieldedPolicy, ShieldedTransfer, allowance_ring, check_one_time,
    key_image_used, key_images_of, meter_ring, scope, side_byte,
};
pub use state::{
    Account, AuthorityKey, Book, BookOrder, InvalidProof, Issuance, Meta, Meter, Proposal,
    Settlement, ShieldedPayee, State, StateKey, StateProof, ValidatorSet,
};
pub use tx::{
    Authority, GovernanceChange, MAX_TX_BYTES, MeterRole, SignedTx, TAG_TX, TAG_TX_HASH, Tx,
    TxBody, VerifiedTx, verify_batch,
};

/// The canonical (borsh) bytes of a value.
///
/// # Panics
/// Never: borsh writes into a `Vec`, which can not fail, and no quartier type
/// has a serialiser that errors.
pub fn canonical<T: borsh::BorshSerialize + ?Sized>(value: &T) -> Vec<u8> {
    borsh::to_vec(value).expect("borsh serialisation into a Vec is infallible")
}
