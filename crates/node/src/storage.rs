//! The finalized block log in `redb`: crash-safe, one write transaction per block.
//!
//! Each finalized block is written with its height and post-state root in one
//! ACID transaction before the node acknowledges it to marshal, so a crash
//! loses nothing that was acknowledged. Every so often the same transaction
//! also stores a snapshot of the state after that block (only the latest is
//! kept), so on start the node loads the snapshot and re-executes only the
//! blocks after it, checking every root. Blocks below the snapshot may be
//! pruned: the log then starts at the prune height.

use crate::block::Block;
use commonware_codec::{DecodeExt as _, Encode as _};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use std::path::Path;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// zstd level of stored snapshots (fast; higher levels gain little here).
const SNAPSHOT_ZSTD_LEVEL: i32 = 3;
/// State snapshots (zstd) by the height they follow; at most one is kept.
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// The evidence of each validator-set change, by the epoch it starts
/// (JSON of [`crate::evidence::EpochEvidence`]): never pruned, one per vote.
const EPOCH_CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("epoch_changes");

/// Why the block log failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened, read or written.
    #[error("block log: {0}")]
    Database(String),
    /// A stored snapshot does not decompress (local corruption).
    #[error("block log: corrupt snapshot at height {0}")]
    CorruptSnapshot(u64),
    /// A stored block does not decode (local corruption).
    #[error("block log: corrupt block at height {0}")]
    Corrupt(u64),
    /// The log has a gap (local corruption).
    #[error("block log: expected height {expected}, found {found}")]
    Gap {
        /// The next height expected.
        expected: u64,
        /// The height found.
        found: u64,
    },
    /// A stored validator-set change does not decode (local corruption).
    #[error("block log: corrupt epoch change at epoch {0}")]
    CorruptEpochChange(u64),
    /// Pruning would delete blocks a restart needs (those after the snapshot).
    #[error("block log: can not prune below {height}, above the snapshot at {snapshot}")]
    PruneAboveSnapshot {
        /// The height asked for.
        height: u64,
        /// The latest snapshot's height (0: none).
        snapshot: u64,
    },
}

fn db_error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Database(e.to_string())
}

/// Finalized blocks by height.
pub struct BlockLog {
    db: Database,
}

impl BlockLog {
    /// Opens (or creates) the log at `path`.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the file can not be opened.
    pub fn open(path: &Path) -> Result<BlockLog, StorageError> {
        let db = Database::create(path).map_err(db_error)?;
        let txn = db.begin_write().map_err(db_error)?;
        txn.open_table(BLOCKS).map_err(db_error)?;
        txn.open_table(SNAPSHOTS).map_err(db_error)?;
        txn.open_table(EPOCH_CHANGES).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(BlockLog { db })
    }

    /// Stores (or completes) the evidence of the validator-set change that
    /// starts `epoch`.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the write does not commit.
    pub fn put_epoch_change(
        &self,
        epoch: u64,
        evidence: &crate::evidence::EpochEvidence,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        put_epoch_change(&txn, epoch, evidence)?;
        txn.commit().map_err(db_error)
    }

    /// The first epoch whose validator-set change is stored without its
    /// block's certificate, if any.
    ///
    /// # Errors
    /// As [`BlockLog::epoch_changes`].
    pub fn first_incomplete_epoch_change(&self) -> Result<Option<u64>, StorageError> {
        Ok(self
            .epoch_changes()?
            .into_iter()
            .find(|(_, e)| e.finalization.is_empty())
            .map(|(epoch, _)| epoch))
    }

    /// The evidence of every validator-set change stored, by epoch.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the log can not be read,
    /// [`StorageError::CorruptEpochChange`] if an entry does not decode.
    pub fn epoch_changes(
        &self,
    ) -> Result<Vec<(u64, crate::evidence::EpochEvidence)>, StorageError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(EPOCH_CHANGES).map_err(db_error)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_error)? {
            let (epoch, bytes) = entry.map_err(db_error)?;
            let evidence = serde_json::from_slice(bytes.value())
                .map_err(|_| StorageError::CorruptEpochChange(epoch.value()))?;
            out.push((epoch.value(), evidence));
        }
        Ok(out)
    }

    /// Appends a finalized block durably, with the state `snapshot` after it
    /// if given (replacing the previous snapshot) and the evidence of the
    /// validator-set change it ends an epoch with, in one transaction.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the write does not commit.
    pub fn append(
        &self,
        block: &Block,
        snapshot: Option<&[u8]>,
        epoch_change: Option<(u64, &crate::evidence::EpochEvidence)>,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        if let Some((epoch, evidence)) = epoch_change {
            put_epoch_change(&txn, epoch, evidence)?;
        }
        {
            let mut table = txn.open_table(BLOCKS).map_err(db_error)?;
            let bytes = block.encode();
            table
                .insert(block.height().get(), bytes.as_ref())
                .map_err(db_error)?;
            if let Some(snapshot) = snapshot {
                replace_snapshot(&txn, block.height().get(), snapshot)?;
            }
        }
        txn.commit().map_err(db_error)
    }

    /// Writes `blocks` (consecutive, the first at a snapshot's height), the
    /// raw state `snapshot` after the first and the chain's validator-set
    /// changes, in one transaction, into an empty log: a node joining by
    /// state sync.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the write does not commit.
    pub fn install(
        &self,
        blocks: &[Block],
        snapshot: &[u8],
        epoch_changes: &[(u64, crate::evidence::EpochEvidence)],
    ) -> Result<(), StorageError> {
        let Some(first) = blocks.first() else {
            return Ok(());
        };
        let txn = self.db.begin_write().map_err(db_error)?;
        for (epoch, evidence) in epoch_changes {
            put_epoch_change(&txn, *epoch, evidence)?;
        }
        {
            let mut table = txn.open_table(BLOCKS).map_err(db_error)?;
            for block in blocks {
                let bytes = block.encode();
                table
                    .insert(block.height().get(), bytes.as_ref())
                    .map_err(db_error)?;
            }
        }
        replace_snapshot(&txn, first.height().get(), snapshot)?;
        txn.commit().map_err(db_error)
    }

    /// The latest snapshot as stored (zstd) and the height it follows, if any.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the log can not be read.
    pub fn latest_snapshot_packed(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
        let last = table.last().map_err(db_error)?;
        Ok(last.map(|(h, bytes)| (h.value(), bytes.value().to_vec())))
    }

    /// The height the latest snapshot follows, if any.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the log can not be read.
    pub fn latest_snapshot_height(&self) -> Result<Option<u64>, StorageError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SNAPSHOTS).map_err(db_error)?;
        let last = table.last().map_err(db_error)?;
        Ok(last.map(|(h, _)| h.value()))
    }

    /// The latest state snapshot and the height it follows, if any.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the log can not be read;
    /// [`StorageError::CorruptSnapshot`] if it does not decompress.
    pub fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
        let Some((height, packed)) = self.latest_snapshot_packed()? else {
            return Ok(None);
        };
        let bytes = zstd::stream::decode_all(packed.as_slice())
            .map_err(|_| StorageError::CorruptSnapshot(height))?;
        Ok(Some((height, bytes)))
    }

    /// The block at `height`, if stored.
    ///
    /// # Errors
    /// [`StorageError`] if the log can not be read or the block is corrupt.
    pub fn get(&self, height: u64) -> Result<Option<Block>, StorageError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(BLOCKS).map_err(db_error)?;
        let Some(bytes) = table.get(height).map_err(db_error)? else {
            return Ok(None);
        };
        Block::decode(bytes::Bytes::copy_from_slice(bytes.value()))
            .map(Some)
            .map_err(|_| StorageError::Corrupt(height))
    }

    /// The lowest height stored (1 until the log is pruned), or `None` if empty.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the log can not be read.
    pub fn first_height(&self) -> Result<Option<u64>, StorageError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(BLOCKS).map_err(db_error)?;
        let first = table.first().map_err(db_error)?;
        Ok(first.map(|(h, _)| h.value()))
    }

    /// Deletes the blocks below `height`, which must not exceed the latest
    /// snapshot's height (a restart starts from that snapshot). Returns how
    /// many were deleted.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the deletion does not commit;
    /// [`StorageError::PruneAboveSnapshot`] if `height` is above the snapshot.
    pub fn prune_below(&self, height: u64) -> Result<u64, StorageError> {
        let snapshot = self.latest_snapshot_packed()?.map_or(0, |(h, _)| h);
        if height > snapshot {
            return Err(StorageError::PruneAboveSnapshot { height, snapshot });
        }
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut deleted = 0;
        {
            let mut table = txn.open_table(BLOCKS).map_err(db_error)?;
            table
                .retain_in(..height, |_, _| {
                    deleted += 1;
                    false
                })
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(deleted)
    }

    /// All stored blocks, in order: from height 1, or from where the log was
    /// pruned.
    ///
    /// # Errors
    /// [`StorageError`] if the log can not be read, a block is corrupt, or
    /// heights are not contiguous.
    pub fn load(&self) -> Result<Vec<Block>, StorageError> {
        let first = self.first_height()?.unwrap_or(1);
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(BLOCKS).map_err(db_error)?;
        let mut blocks = Vec::new();
        for (expected, entry) in (first..).zip(table.iter().map_err(db_error)?) {
            let (height, bytes) = entry.map_err(db_error)?;
            let height = height.value();
            if height != expected {
                return Err(StorageError::Gap {
                    expected,
                    found: height,
                });
            }
            let block = Block::decode(bytes::Bytes::copy_from_slice(bytes.value()))
                .map_err(|_| StorageError::Corrupt(height))?;
            blocks.push(block);
        }
        Ok(blocks)
    }
}

/// Writes the evidence of the validator-set change that starts `epoch` in
/// `txn` (JSON).
fn put_epoch_change(
    txn: &redb::WriteTransaction,
    epoch: u64,
    evidence: &crate::evidence::EpochEvidence,
) -> Result<(), StorageError> {
    let bytes = serde_json::to_vec(evidence).map_err(db_error)?;
    let mut table = txn.open_table(EPOCH_CHANGES).map_err(db_error)?;
    table.insert(epoch, bytes.as_slice()).map_err(db_error)?;
    Ok(())
}

/// Replaces the stored snapshot by `raw` (the state after `height`), zstd-
/// compressed: a settlement names each household's meter again and again, so
/// a settled order costs ~15 bytes packed, not ~130.
fn replace_snapshot(
    txn: &redb::WriteTransaction,
    height: u64,
    raw: &[u8],
) -> Result<(), StorageError> {
    let packed = zstd::bulk::compress(raw, SNAPSHOT_ZSTD_LEVEL).map_err(db_error)?;
    let mut snapshots = txn.open_table(SNAPSHOTS).map_err(db_error)?;
    snapshots.retain(|_, _| false).map_err(db_error)?;
    snapshots
        .insert(height, packed.as_slice())
        .map_err(db_error)?;
    Ok(())
}
