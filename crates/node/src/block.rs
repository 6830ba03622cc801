//! The block: what consensus orders.

use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, Read, ReadExt, Write};
use commonware_consensus::types::Height;
use commonware_cryptography::Digestible;
use quartier_ledger::{MAX_TX_BYTES, SignedTx, canonical};
use quartier_types::hash::Digest;

/// A block's digest (SHA-256 of its encoding).
pub type BlockDigest = commonware_cryptography::sha256::Digest;

/// The most transactions a block carries.
pub const MAX_BLOCK_TXS: usize = 4_096;
/// The largest encoded transaction list accepted in a block.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// An ordered batch of transactions on top of a parent, with the state root
/// that executing them yields. Validators re-execute and compare the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The parent block's digest.
    pub parent: BlockDigest,
    /// Height: parent's height + 1; genesis is 0.
    pub height: Height,
    /// Block time in milliseconds since the Unix epoch; never below the parent's.
    pub time_ms: u64,
    /// The ledger's state root after this block.
    pub state_root: Digest,
    /// Transactions, all accepted by the ledger, in execution order.
    pub txs: Vec<SignedTx>,
}

impl Block {
    /// The genesis block for a ledger whose genesis state has `state_root`.
    pub fn genesis(state_root: Digest) -> Block {
        Block {
            parent: BlockDigest::from([0u8; 32]),
            height: Height::zero(),
            time_ms: 0,
            state_root,
            txs: Vec::new(),
        }
    }

    fn txs_bytes(&self) -> Vec<u8> {
        canonical(&self.txs)
    }
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        self.parent.write(buf);
        self.height.write(buf);
        self.time_ms.write(buf);
        self.state_root.0.write(buf);
        let txs = self.txs_bytes();
        // MAX_BLOCK_BYTES < u32::MAX, and proposers never exceed it.
        (txs.len() as u32).write(buf);
        buf.put_slice(&txs);
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        self.parent.encode_size()
            + self.height.encode_size()
            + self.time_ms.encode_size()
            + 32
            + 4
            + self.txs_bytes().len()
    }
}

impl Read for Block {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let parent = BlockDigest::read(buf)?;
        let height = Height::read(buf)?;
        let time_ms = u64::read(buf)?;
        let state_root = Digest(<[u8; 32]>::read(buf)?);
        let len = u32::read(buf)? as usize;
        if len > MAX_BLOCK_BYTES || buf.remaining() < len {
            return Err(CodecError::Invalid("Block", "transaction bytes"));
        }
        let bytes = buf.copy_to_bytes(len);
        let txs: Vec<SignedTx> =
            borsh::from_slice(&bytes).map_err(|_| CodecError::Invalid("Block", "transactions"))?;
        if txs.len() > MAX_BLOCK_TXS {
            return Err(CodecError::Invalid("Block", "too many transactions"));
        }
        // Each transaction within the size every mempool admits: a leader
        // can not put in a block what no API or gossip would take.
        if txs.iter().any(|tx| canonical(tx).len() > MAX_TX_BYTES) {
            return Err(CodecError::Invalid("Block", "oversized transaction"));
        }
        Ok(Block {
            parent,
            height,
            time_ms,
            state_root,
            txs,
        })
    }
}

impl Digestible for Block {
    type Digest = BlockDigest;

    fn digest(&self) -> BlockDigest {
        // The light client's digest, so that what it checks is what
        // consensus finalized.
        BlockDigest::from(quartier_light::block_digest(
            &commonware_codec::Encode::encode(self),
        ))
    }
}

impl commonware_consensus::Heightable for Block {
    fn height(&self) -> Height {
        self.height
    }
}

impl commonware_consensus::Block for Block {
    fn parent(&self) -> BlockDigest {
        self.parent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use commonware_codec::{DecodeExt, Encode};

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let block = Block {
            parent: BlockDigest::from([7u8; 32]),
            height: Height::new(3),
            time_ms: 1_700_000_000_000,
            state_root: Digest([9u8; 32]),
            txs: Vec::new(),
        };
        let bytes = block.encode();
        assert_eq!(bytes.len(), block.encode_size());
        assert_eq!(Block::decode(bytes.clone()).unwrap(), block);
        let mut truncated = bytes.to_vec();
        truncated.pop();
        assert!(Block::decode(bytes::Bytes::from(truncated)).is_err());
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(Block::decode(bytes::Bytes::from(extra)).is_err());
    }

    /// A leader's block holding a transaction larger than any mempool admits
    /// (a committee vote naming 300 members, 9.7 KB) does not decode, and
    /// one at the limit does.
    #[test]
    fn a_block_with_an_oversized_transaction_does_not_decode() {
        use quartier_ledger::{ChainId, Tx, TxBody};
        use quartier_types::AccountId;
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let vote = |members: usize| {
            Tx {
                chain_id: ChainId(Digest([1; 32])),
                signer: AccountId(key.verifying_key().to_bytes()),
                nonce: 0,
                body: TxBody::ActivateCommittee {
                    members: (0..members).map(|i| AccountId([i as u8; 32])).collect(),
                    group_key: quartier_enclave::committee::GroupPublicKey([0; 32]),
                    signature: [0; 64],
                },
            }
            .sign(&key)
        };
        let block = |tx: SignedTx| Block {
            parent: BlockDigest::from([7u8; 32]),
            height: Height::new(3),
            time_ms: 1_700_000_000_000,
            state_root: Digest([9u8; 32]),
            txs: vec![tx],
        };
        let oversized = vote(300);
        assert!(oversized.encode().len() > MAX_TX_BYTES);
        assert!(Block::decode(block(oversized).encode()).is_err());
        let fits = (0..300)
            .map(vote)
            .rfind(|t| t.encode().len() <= MAX_TX_BYTES)
            .unwrap();
        assert_eq!(
            Block::decode(block(fits.clone()).encode()).unwrap().txs,
            vec![fits]
        );
    }
}
