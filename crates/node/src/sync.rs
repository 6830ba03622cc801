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
    let blocks = bundle
        .blocks
        .iter()
        .map(|b| {
            let bytes = hex::decode(b).map_err(|_| SyncError::Malformed("block"))?;
            Block::decode(bytes::Bytes::from(bytes)).map_err(|_| SyncError::Malformed("block"))
        })
        .collect::<Result<Vec<Block>, SyncError>>()?;
    let (Some(first), Some(last)) = (blocks.first(), blocks.last()) else {
        return Err(SyncError::Malformed("blocks"));
    };
    if last.digest() != finalization.proposal.payload {
        return Err(SyncError::WrongBlock);
    }
    if first.height.get() != bundle.snapshot_height {
        return Err(SyncError::Broken(first.height.get()));
    }
    for pair in blocks.windows(2) {
        if pair[1].parent != pair[0].digest() || pair[1].height != pair[0].height.next() {
            return Err(SyncError::Broken(pair[1].height.get()));
        }
    }
    let raw = zstd::stream::decode_all(bundle.snapshot.as_slice())
        .map_err(|_| SyncError::Malformed("snapshot"))?;
    let state = State::from_snapshot(&raw).map_err(|_| SyncError::Malformed("snapshot"))?;
    if state.root() != first.state_root || state.chain_id() != genesis.chain_id() {
        return Err(SyncError::BadSnapshot(first.height.get()));
    }
    log.install(&blocks, &raw)?;
    Ok(finalization)
}
