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

mod accounts;
mod apply;
mod books;
mod context;
mod error;
mod genesis;
mod governance;
mod merkle;
mod registry;
mod sealed_market;
mod settlement;
mod shielded_pool;
mod shielded_tx;
mod state;
mod tx;
mod verified;

pub use apply::{
    BlockError, BlockOutcome, Receipt, apply, apply_verified, end_block, execute_block,
};
pub use context::{BlockContext, Event};
pub use error::{GenesisError, Role, SnapshotError, TxError};
pub use genesis::{
    ChainId, FirstCommittee, Genesis, Limits, MAX_SEALED_REGIONS, MIN_EPOCH_BLOCKS,
    SealedMarketPolicy, ShieldedPolicy, TAG_CHAIN_ID,
};
pub use merkle::MerkleStoreCorrupt;
pub use sealed_market::{
    KEPT_EPOCHS, MAX_CANDIDATES, MAX_COMMITTEE, MAX_PAYOUTS, MAX_WAITING_BATCHES,
};
pub use shielded_pool::{
    allowance_ring, check_one_time, key_image_used, key_images_of, meter_ring,
};
pub use shielded_tx::{
    Allowance, KIND_ORDER, KIND_TRANSFER, KIND_UNSHIELD, MAX_SHIELDED_INPUTS, ShieldedInput,
    ShieldedOrder, ShieldedTransfer, scope, side_byte,
};
pub use state::{
    Account, AuthorityKey, Book, BookOrder, Committee, CommitteeCandidate, CommitteeVote,
    CustodyFlows, Enclave, InvalidProof, Issuance, Meta, Meter, PoolOutput, PostedReport,
    Predecessor, Proposal, SealedBatch, SealedEntry, Settlement, ShieldedPayee, State, StateKey,
    StateProof, ValidatorSet,
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
