//! The Jellyfish Merkle Tree over the state, kept in memory.
//!
//! Only the latest version is kept: stale nodes are pruned on every commit, so
//! proofs are served for the current root. The tree's version is a dense
//! counter of non-empty commits (jmt builds version `v` on version `v − 1`),
//! independent of block height.

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
use jmt::{KeyHash, OwnedValue, RootHash, Sha256Jmt, Version};
use std::collections::BTreeMap;

/// The tree's nodes and the latest value of every key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MerkleStore {
    nodes: BTreeMap<NodeKey, Node>,
    values: BTreeMap<KeyHash, OwnedValue>,
    version: Option<Version>,
    root: Option<RootHash>,
}

/// The tree could not be updated or read: its nodes are inconsistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("merkle store is corrupt")]
pub struct MerkleStoreCorrupt;

impl TreeReader for MerkleStore {
    fn get_node_option(&self, node_key: &NodeKey) -> anyhow::Result<Option<Node>> {
        Ok(self.nodes.get(node_key).cloned())
    }

    fn get_value_option(
        &self,
        _max_version: Version,
        key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        // Only the latest version is kept and only it is ever read.
        Ok(self.values.get(&key_hash).cloned())
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        // Used only to restore a tree from chunks, which we never do.
        Ok(None)
    }
}

impl MerkleStore {
    /// The current root; the empty tree's placeholder before the first write.
    pub(crate) fn root(&self) -> RootHash {
        self.root
            .unwrap_or(RootHash(*b"SPARSE_MERKLE_PLACEHOLDER_HASH__"))
    }

    /// Applies a set of writes (`None` deletes) as the next version.
    pub(crate) fn update(
        &mut self,
        writes: Vec<(KeyHash, Option<OwnedValue>)>,
    ) -> Result<RootHash, MerkleStoreCorrupt> {
        if writes.is_empty() {
            return Ok(self.root());
        }
        let version = self.version.map_or(0, |v| v + 1);
        let (root, batch) = Sha256Jmt::new(&*self)
            .put_value_set(writes, version)
            .map_err(|_| MerkleStoreCorrupt)?;
        for (key, node) in batch.node_batch.nodes() {
            self.nodes.insert(key.clone(), node.clone());
        }
        for ((_, key_hash), value) in batch.node_batch.values() {
            match value {
                Some(v) => self.values.insert(*key_hash, v.clone()),
                None => self.values.remove(key_hash),
            };
        }
        for stale in &batch.stale_node_index_batch {
            self.nodes.remove(&stale.node_key);
        }
        self.version = Some(version);
        self.root = Some(root);
        Ok(root)
    }

    /// The value under `key_hash` with a proof against [`MerkleStore::root`].
    pub(crate) fn prove(
        &self,
        key_hash: KeyHash,
    ) -> Result<
        (
            Option<OwnedValue>,
            jmt::proof::SparseMerkleProof<sha2::Sha256>,
        ),
        MerkleStoreCorrupt,
    > {
        let version = self.version.ok_or(MerkleStoreCorrupt)?;
        Sha256Jmt::new(self)
            .get_with_proof(key_hash, version)
            .map_err(|_| MerkleStoreCorrupt)
    }
}
