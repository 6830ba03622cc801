//! The block: what consensus orders.

use bytes::BufMut;
use commonware_codec::{Buf, EncodeSize, Error as CodecError, Read, ReadExt, Write};
use commonware_consensus::types::Height;
use commonware_cryptography::Digestible;
use quartier_ledger::{MAX_TX_BYTES, SignedTx, canonical};
use quartier_types::hash::Digest;

/// A block's digest (SHA-256 of its encoding).
pub type BlockDigest = commonware_cryptography::sha256::Digest;

/// The signing scheme of the validators: Ed25519, the same key as their p2p identity.
pub type Scheme = commonware_consensus::simplex::scheme::ed25519::Scheme;

/// A finalized certificate over a block, as consensus stores it.
pub type BlockFinalization =
    commonware_consensus::simplex::types::Finalization<Scheme, BlockDigest>;

/// The most transactions a block carries.
pub const MAX_BLOCK_TXS: usize = 4_096;
/// The largest encoded transaction list accepted in a block.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;

/// An ordered batch of transactions on top of a parent, with the state root
/// that executing them yields. Validators re-execute and compare the root.
///
/// Its fields are private and its digest is computed once, when it is made
/// ([`Block::new`] or decoding): a block can not be changed after its digest
/// was taken, and consensus asks for the digest often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    parent: BlockDigest,
    height: Height,
    time_ms: u64,
    state_root: Digest,
    txs: Vec<SignedTx>,
    /// The length of the transactions' canonical encoding.
    txs_len: usize,
    /// SHA-256 of the encoding, as the light client computes it.
    digest: BlockDigest,
}

impl Block {
    /// The block on `parent` at `height` and `time_ms` carrying `txs`, whose
    /// execution yields `state_root`.
    pub fn new(
        parent: BlockDigest,
        height: Height,
        time_ms: u64,
        state_root: Digest,
        txs: Vec<SignedTx>,
    ) -> Block {
        let txs_bytes = canonical(&txs);
        let mut encoded = Vec::with_capacity(HEADER_BYTES + txs_bytes.len());
        write_header(&mut encoded, (&parent, height, time_ms, &state_root));
        // MAX_BLOCK_BYTES < u32::MAX, and proposers never exceed it.
        (txs_bytes.len() as u32).write(&mut encoded);
        encoded.put_slice(&txs_bytes);
        // The light client's digest, so that what it checks is what
        // consensus finalized.
        let digest = BlockDigest::from(quartier_light::block_digest(&encoded));
        Block {
            parent,
            height,
            time_ms,
            state_root,
            txs,
            txs_len: txs_bytes.len(),
            digest,
        }
    }

    /// The genesis block for a ledger whose genesis state has `state_root`.
    pub fn genesis(state_root: Digest) -> Block {
        Block::new(
            BlockDigest::from([0u8; 32]),
            Height::zero(),
            0,
            state_root,
            Vec::new(),
        )
    }

    /// The parent block's digest.
    pub fn parent(&self) -> BlockDigest {
        self.parent
    }

    /// Height: parent's height + 1; genesis is 0.
    pub fn height(&self) -> Height {
        self.height
    }

    /// Block time in milliseconds since the Unix epoch; never below the parent's.
    pub fn time_ms(&self) -> u64 {
        self.time_ms
    }

    /// The ledger's state root after this block.
    pub fn state_root(&self) -> Digest {
        self.state_root
    }

    /// Transactions, all accepted by the ledger, in execution order.
    pub fn txs(&self) -> &[SignedTx] {
        &self.txs
    }

    /// The transactions, taking the block apart.
    pub fn into_txs(self) -> Vec<SignedTx> {
        self.txs
    }
}

/// Parent digest, height, time and state root.
const HEADER_BYTES: usize = 32 + 8 + 8 + 32 + 4;

fn write_header(
    buf: &mut impl BufMut,
    (parent, height, time_ms, state_root): (&BlockDigest, Height, u64, &Digest),
) {
    parent.write(buf);
    height.write(buf);
    time_ms.write(buf);
    state_root.0.write(buf);
}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        write_header(
            buf,
            (&self.parent, self.height, self.time_ms, &self.state_root),
        );
        let txs = canonical(&self.txs);
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
            + self.txs_len
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
        Ok(Block::new(parent, height, time_ms, state_root, txs))
    }
}

impl Digestible for Block {
    type Digest = BlockDigest;

    fn digest(&self) -> BlockDigest {
        self.digest
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
        let block = Block::new(
            BlockDigest::from([7u8; 32]),
            Height::new(3),
            1_700_000_000_000,
            Digest([9u8; 32]),
            Vec::new(),
        );
        let bytes = block.encode();
        assert_eq!(bytes.len(), block.encode_size());
        // The digest taken once at construction is the light client's
        // digest of the encoding, and decoding takes the same.
        assert_eq!(
            block.digest(),
            BlockDigest::from(quartier_light::block_digest(&bytes))
        );
        assert_eq!(
            Block::decode(bytes.clone()).unwrap().digest(),
            block.digest()
        );
        assert_eq!(Block::decode(bytes.clone()).unwrap(), block);
        let mut truncated = bytes.to_vec();
        truncated.pop();
        assert!(Block::decode(bytes::Bytes::from(truncated)).is_err());
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(Block::decode(bytes::Bytes::from(extra)).is_err());
    }

    /// Wire-format conformance: the encoding and digest of a fixed block
    /// with two transactions. It fails when the block format changes: a
    /// changed format forks the chain from nodes that did not change, so it
    /// must be a decision (update the fixture from the `computed` value and
    /// say why), never an accident.
    #[test]
    fn the_block_encoding_is_fixed() {
        use quartier_ledger::{ChainId, Tx, TxBody};
        use quartier_types::{AccountId, Money};
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let txs = (0..2)
            .map(|nonce| {
                Tx {
                    chain_id: ChainId(Digest([1; 32])),
                    signer: AccountId(key.verifying_key().to_bytes()),
                    nonce,
                    body: TxBody::Transfer {
                        to: AccountId([2; 32]),
                        amount: Money::new(1_000 + nonce),
                    },
                }
                .sign(&key)
            })
            .collect();
        let block = Block::new(
            BlockDigest::from([7u8; 32]),
            Height::new(3),
            1_700_000_000_000,
            Digest([9u8; 32]),
            txs,
        );
        let encoded = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(block.encode()));
        assert_eq!(
            encoded, "5ee32c92aaa518e38d612b5a7b00206883cdf45327a86ecea46bb1db512dbbb7",
            "the block's encoding changed (computed {encoded})"
        );
        let digest = hex::encode(block.digest());
        assert_eq!(
            digest, "ef9d386a8d4ec13ff8eef200c1eb9f5b54c4f8532d496943d01afbf17b206fe6",
            "the block's digest changed (computed {digest})"
        );
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
                    group_key: quartier_enclave_proto::committee::GroupPublicKey([0; 32]),
                    signature: [0; 64],
                },
            }
            .sign(&key)
        };
        let block = |tx: SignedTx| {
            Block::new(
                BlockDigest::from([7u8; 32]),
                Height::new(3),
                1_700_000_000_000,
                Digest([9u8; 32]),
                vec![tx],
            )
        };
        let oversized = vote(300);
        assert!(oversized.encode().len() > MAX_TX_BYTES);
        assert!(Block::decode(block(oversized).encode()).is_err());
        let fits = (0..300)
            .map(vote)
            .rfind(|t| t.encode().len() <= MAX_TX_BYTES)
            .unwrap();
        assert_eq!(
            Block::decode(block(fits.clone()).encode()).unwrap().txs(),
            &[fits]
        );
    }
}
