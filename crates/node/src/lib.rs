//! A quartier validator: the ledger as the application of commonware's simplex
//! consensus (DESIGN §5, §11a).
//!
//! No consensus logic lives here. commonware `simplex` agrees on block digests;
//! `marshal` (inline verification) disseminates blocks, backfills missing ones
//! and delivers finalized blocks in height order, at least once. This crate
//! supplies what a chain needs around them:
//!
//! - [`Block`]: parent, height, time, transactions and the post-execution
//!   state root, with its canonical encoding and digest;
//! - [`Mempool`]: signature-checked, deduplicated, bounded pending transactions;
//! - [`LedgerApp`]: builds blocks from the mempool on the parent's state,
//!   verifies a proposal by re-executing it and comparing the root, and applies
//!   finalized blocks exactly once (a redelivered height is skipped).
#![forbid(unsafe_code)]

pub mod api;
pub mod api_guard;
mod application;
mod block;
pub mod config;
pub mod epochs;
pub mod evidence;
mod mempool;
pub mod run;
pub mod storage;
pub mod sync;
pub mod validator;

pub use application::{
    ChainView, DEFAULT_SNAPSHOT_EVERY, LedgerApp, MAX_BLOCK_LAG, MAX_BLOCK_LEAD, NodeMetrics,
    OpenError, Scheme, StreamEvent, TxStatus,
};
pub use block::{Block, BlockDigest, MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
pub use mempool::{Mempool, MempoolConfig, MempoolError};
