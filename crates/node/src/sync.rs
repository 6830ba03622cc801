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

pub use crate::block::BlockFinalization;
use crate::block::{Block, Scheme};
pub use crate::evidence::EpochEvidence;
use crate::storage::{BlockLog, StorageError};
use commonware_codec::{Decode as _, DecodeExt as _};
use commonware_cryptography::Digestible as _;
use commonware_cryptography::certificate::Verifier as _;
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

/// The most validator-set changes a bundle may carry (each is a vote of
/// the validators; a chain sees few).
pub const MAX_EPOCH_CHANGES: usize = 4_096;

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
    /// The chain's validator-set changes, oldest first: each proves the
    /// next epoch's set under a certificate of the set before, so the last
    /// block's certificate is checked against the set of its epoch.
    #[serde(default)]
    pub epochs: Vec<EpochEvidence>,
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
    /// The snapshot records validator-set changes the bundle has no
    /// evidence of.
    #[error("sync bundle: the state records validator-set changes the bundle does not prove")]
    MissingEpochChanges,
    /// A validator-set change does not follow from the sets before it.
    #[error("sync bundle: epoch change {0} is not certified by the set before it")]
    BadEpochChange(usize),
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

/// Checks `bundle` against the chain's `genesis` (`anchor`: its
/// validators, learning the bundle's validator-set changes) and, if it
/// holds, writes its blocks, snapshot and epoch changes to the empty `log`.
/// Returns the certificate consensus starts from.
///
/// # Errors
/// [`SyncError`] naming the first check that failed; the log is then unchanged.
pub fn install(
    log: &BlockLog,
    genesis: &Genesis,
    anchor: &quartier_light::ChainAnchor,
    bundle: &SyncBundle,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<BlockFinalization, SyncError> {
    if log.first_height()?.is_some() {
        return Err(SyncError::NotEmpty);
    }
    let verified = verify(genesis, anchor, bundle, rng)?;
    log.install(
        &verified.blocks,
        &verified.snapshot,
        &verified.epoch_changes,
    )?;
    Ok(verified.finalization)
}

/// A sync bundle that passed every check of [`verify`], decoded; its fields
/// are private, so one is made by [`verify`] only. (It gates nothing by
/// itself: [`install`] writes it through `BlockLog::install`, a lower-level
/// writer that trusts its caller.)
#[derive(Debug)]
pub struct VerifiedBundle {
    /// The blocks from the snapshot's height to the certified one.
    blocks: Vec<Block>,
    /// The snapshot, decompressed.
    snapshot: Vec<u8>,
    /// The validator-set changes, each with the epoch it starts.
    epoch_changes: Vec<(u64, EpochEvidence)>,
    /// The last block's finalization.
    finalization: BlockFinalization,
}

/// Every check [`install`] makes of a peer's `bundle`, without a log: the
/// decoding of each part, the certificate against the chain's `genesis`
/// (`anchor`, advanced by the bundle's validator-set changes), the chain of
/// blocks and the snapshot against the first block's state root. Pure: the
/// `sync_bundle` fuzz target runs it on arbitrary bytes.
///
/// # Errors
/// [`SyncError`] naming the first check that failed.
pub fn verify(
    genesis: &Genesis,
    anchor: &quartier_light::ChainAnchor,
    bundle: &SyncBundle,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<VerifiedBundle, SyncError> {
    if bundle.blocks.len() > MAX_SYNC_BLOCKS {
        return Err(SyncError::TooLarge("blocks"));
    }
    if bundle.epochs.len() > MAX_EPOCH_CHANGES {
        return Err(SyncError::TooLarge("epoch changes"));
    }
    let mut anchor = anchor.clone();
    let mut changes = Vec::with_capacity(bundle.epochs.len());
    for (i, evidence) in bundle.epochs.iter().enumerate() {
        anchor
            .advance(
                &evidence
                    .decode()
                    .map_err(|_| SyncError::Malformed("epoch change"))?,
                rng,
            )
            .map_err(|_| SyncError::BadEpochChange(i))?;
        let epoch = anchor
            .validator_sets()
            .last()
            .map(|s| s.from_epoch)
            .ok_or(SyncError::BadEpochChange(i))?;
        changes.push((epoch, evidence.clone()));
    }
    let last_block = hex::decode(bundle.blocks.last().ok_or(SyncError::Malformed("blocks"))?)
        .map_err(|_| SyncError::Malformed("block"))?;
    anchor
        .verify_finalized(&last_block, &bundle.finalization, rng)
        .map_err(|e| match e {
            quartier_light::LightError::WrongBlock => SyncError::WrongBlock,
            quartier_light::LightError::MalformedFinalization => {
                SyncError::Malformed("finalization")
            }
            quartier_light::LightError::MalformedBlock => SyncError::Malformed("block"),
            _ => SyncError::BadCertificate,
        })?;
    let finalization = BlockFinalization::decode_cfg(
        bytes::Bytes::copy_from_slice(&bundle.finalization),
        &Scheme::certificate_codec_config_unbounded(),
    )
    .map_err(|_| SyncError::Malformed("finalization"))?;
    // Checks before work: the certified block first, then each block back
    // from it must be its successor's parent, so nothing uncertified is
    // decoded past the first block that breaks the chain.
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
        if child.parent() != block.digest() || child.height() != block.height().next() {
            return Err(SyncError::Broken(child.height().get()));
        }
        blocks.push(block);
    }
    blocks.reverse();
    let first = blocks.first().ok_or(SyncError::Malformed("blocks"))?;
    if first.height().get() != bundle.snapshot_height {
        return Err(SyncError::Broken(first.height().get()));
    }
    let raw = decompress_snapshot(&bundle.snapshot)?;
    let state = State::from_snapshot(&raw).map_err(|_| SyncError::Malformed("snapshot"))?;
    if state.root() != first.state_root() || state.chain_id() != genesis.chain_id() {
        return Err(SyncError::BadSnapshot(first.height().get()));
    }
    // Every change the certified state records came with its evidence (a
    // peer leaving some out, where an older set still certifies the tip,
    // would have this node serve bundles and enclaves nobody can follow).
    let recorded = state.validator_sets();
    let learnt = anchor.validator_sets();
    if learnt.len() < recorded.len() || learnt[..recorded.len()] != recorded[..] {
        return Err(SyncError::MissingEpochChanges);
    }
    Ok(VerifiedBundle {
        blocks,
        snapshot: raw,
        epoch_changes: changes,
        finalization,
    })
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
