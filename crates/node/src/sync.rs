//! State sync: a node joins (or rejoins after longer than its peers keep
//! blocks) from a peer's latest snapshot instead of replaying from genesis.
//!
//! The peer serves a [`SyncBundle`]: its latest state snapshot, the blocks from
//! the snapshot's height up to a block it holds a finalization certificate
//! for, and that certificate. Nothing in it is trusted: the certificate must
//! carry a quorum of the genesis validators' signatures over the last block's
//! digest, every block must be the parent of the next, and the snapshot's
//! Merkle root must equal the first block's state root (the later blocks are
//! re-executed, root by root, when the node opens its log). The node then
//! starts consensus from that certificate.

use crate::application::Scheme;
use crate::block::{Block, BlockDigest};
use crate::storage::{BlockLog, StorageError};
use commonware_codec::{Decode as _, DecodeExt as _};
use commonware_consensus::simplex::types::Finalization;
use commonware_cryptography::Digestible as _;
use commonware_cryptography::certificate::Verifier as _;
use commonware_parallel::Sequential;
use quartier_ledger::{Genesis, State};
use serde::{Deserialize, Serialize};

/// The largest sync bundle a node takes from a peer (its JSON bytes): the
/// client reads no more than this.
pub const MAX_SYNC_RESPONSE_BYTES: usize = 128 * 1024 * 1024;

/// The largest state snapshot a bundle may decompress to: a snapshot that
/// would inflate further (a zstd bomb) is refused when it reaches this size.
pub const MAX_SNAPSHOT_BYTES: usize = 256 * 1024 * 1024;

/// The most blocks a bundle may carry (a peer snapshots every
/// [`crate::DEFAULT_SNAPSHOT_EVERY`] blocks by default).
pub const MAX_SYNC_BLOCKS: usize = 16 * 1024;

/// A finalized certificate over a block, as consensus stores it.
pub type BlockFinalization = Finalization<Scheme, BlockDigest>;

/// What a node serves so that another can join from its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncBundle {
    /// The height the snapshot follows.
    pub snapshot_height: u64,
    /// The state after `snapshot_height`, zstd-compressed, hex.
    #[serde(with = "quartier_types::hex")]
    pub snapshot: Vec<u8>,
    /// The blocks from `snapshot_height` to the finalized one, each hex of
    /// its canonical encoding.
    pub blocks: Vec<String>,
    /// The finalization certificate of the last block, hex.
    #[serde(with = "quartier_types::hex")]
    pub finalization: Vec<u8>,
}

/// Why a bundle was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The node already has blocks: state sync is for an empty log.
    #[error("state sync needs an empty block log; this one holds blocks")]
    NotEmpty,
    /// A field does not decode.
    #[error("sync bundle: {0} does not decode")]
    Malformed(&'static str),
    /// The certificate is not a quorum of this chain's validators.
    #[error("sync bundle: the finalization is not signed by a quorum of the validators")]
    BadCertificate,
    /// The certificate is for another block.
    #[error("sync bundle: the finalization certifies another block")]
    WrongBlock,
    /// The blocks are not one chain from the snapshot's height.
    #[error("sync bundle: block at height {0} does not follow its predecessor")]
    Broken(u64),
    /// The snapshot is not the state the first block commits to, or of another chain.
    #[error("sync bundle: the snapshot does not match block {0}'s state root")]
    BadSnapshot(u64),
    /// A part of the bundle is larger than a node takes.
    #[error("sync bundle: {0} larger than a node takes")]
    TooLarge(&'static str),
    /// The log could not be written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The peer could not serve a bundle.
    #[error("no sync bundle: {0}")]
    Unavailable(String),
}

/// Checks `bundle` against the chain's `genesis` and validators and, if it
/// holds, writes its blocks and snapshot to the empty `log`. Returns the
/// certificate consensus starts from.
///
/// # Errors
/// [`SyncError`] naming the first check that failed; the log is then unchanged.
pub fn install(
    log: &BlockLog,
    genesis: &Genesis,
    namespace: &[u8],
    validators: Vec<commonware_cryptography::ed25519::PublicKey>,
    bundle: &SyncBundle,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<BlockFinalization, SyncError> {
    if log.first_height()?.is_some() {
        return Err(SyncError::NotEmpty);
    }
    let participants = commonware_utils::ordered::Set::try_from(validators)
        .map_err(|_| SyncError::Malformed("validator set"))?;
    let verifier = Scheme::verifier(namespace, participants);
    let finalization = BlockFinalization::decode_cfg(
        bytes::Bytes::copy_from_slice(&bundle.finalization),
        &verifier.certificate_codec_config(),
    )
    .map_err(|_| SyncError::Malformed("finalization"))?;
    if !finalization.verify(rng, &verifier, &Sequential) {
        return Err(SyncError::BadCertificate);
    }
    // Checks before work: the certified block first, then each block back
    // from it must be its successor's parent, so nothing uncertified is
    // decoded past the first block that breaks the chain.
    if bundle.blocks.len() > MAX_SYNC_BLOCKS {
        return Err(SyncError::TooLarge("blocks"));
    }
    let decode = |b: &String| {
        let bytes = hex::decode(b).map_err(|_| SyncError::Malformed("block"))?;
        Block::decode(bytes::Bytes::from(bytes)).map_err(|_| SyncError::Malformed("block"))
    };
    let last = decode(bundle.blocks.last().ok_or(SyncError::Malformed("blocks"))?)?;
    if last.digest() != finalization.proposal.payload {
        return Err(SyncError::WrongBlock);
    }
    let mut blocks = vec![last];
    for b in bundle.blocks.iter().rev().skip(1) {
        let block = decode(b)?;
        let child = blocks.last().ok_or(SyncError::Malformed("blocks"))?;
        if child.parent != block.digest() || child.height != block.height.next() {
            return Err(SyncError::Broken(child.height.get()));
        }
        blocks.push(block);
    }
    blocks.reverse();
    let first = blocks.first().ok_or(SyncError::Malformed("blocks"))?;
    if first.height.get() != bundle.snapshot_height {
        return Err(SyncError::Broken(first.height.get()));
    }
    let raw = decompress_snapshot(&bundle.snapshot)?;
    let state = State::from_snapshot(&raw).map_err(|_| SyncError::Malformed("snapshot"))?;
    if state.root() != first.state_root || state.chain_id() != genesis.chain_id() {
        return Err(SyncError::BadSnapshot(first.height.get()));
    }
    log.install(&blocks, &raw)?;
    Ok(finalization)
}

/// Decompresses a snapshot, refusing one that inflates past
/// [`MAX_SNAPSHOT_BYTES`] as soon as it does.
///
/// # Errors
/// [`SyncError::TooLarge`] for a snapshot (or a zstd bomb) past the bound,
/// [`SyncError::Malformed`] for bytes that are not zstd.
pub fn decompress_snapshot(compressed: &[u8]) -> Result<Vec<u8>, SyncError> {
    use std::io::Read as _;
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|_| SyncError::Malformed("snapshot"))?;
    let mut raw = Vec::new();
    decoder
        .take(MAX_SNAPSHOT_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|_| SyncError::Malformed("snapshot"))?;
    if raw.len() > MAX_SNAPSHOT_BYTES {
        return Err(SyncError::TooLarge("snapshot"));
    }
    Ok(raw)
}
