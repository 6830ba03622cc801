//! The finalized block log in `redb`: crash-safe, one write transaction per block.
//!
//! Each finalized block is written with its height and post-state root in one
//! ACID transaction before the node acknowledges it to marshal, so a crash
//! loses nothing that was acknowledged. On start the node replays the log from
//! genesis, checking every root, to rebuild the ledger state.

use crate::block::Block;
use commonware_codec::{DecodeExt as _, Encode as _};
use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use std::path::Path;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");

/// Why the block log failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened, read or written.
    #[error("block log: {0}")]
    Database(String),
    /// A stored block does not decode (local corruption).
    #[error("block log: corrupt block at height {0}")]
    Corrupt(u64),
    /// The log has a gap or does not start at height 1 (local corruption).
    #[error("block log: expected height {expected}, found {found}")]
    Gap {
        /// The next height expected.
        expected: u64,
        /// The height found.
        found: u64,
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
        txn.commit().map_err(db_error)?;
        Ok(BlockLog { db })
    }

    /// Appends a finalized block durably.
    ///
    /// # Errors
    /// [`StorageError::Database`] if the write does not commit.
    pub fn append(&self, block: &Block) -> Result<(), StorageError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = txn.open_table(BLOCKS).map_err(db_error)?;
            let bytes = block.encode();
            table
                .insert(block.height.get(), bytes.as_ref())
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
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

    /// All blocks from height 1, in order.
    ///
    /// # Errors
    /// [`StorageError`] if the log can not be read, a block is corrupt, or
    /// heights are not contiguous from 1.
    pub fn load(&self) -> Result<Vec<Block>, StorageError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(BLOCKS).map_err(db_error)?;
        let mut blocks = Vec::new();
        for (expected, entry) in (1u64..).zip(table.iter().map_err(db_error)?) {
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
