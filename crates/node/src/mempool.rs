//! Pending transactions, checked on arrival and bounded.

use quartier_ledger::{BlockContext, SignedTx, State, TxError};
use quartier_types::hash::Digest;
use quartier_types::{AccountId, Height};
use std::collections::{BTreeMap, VecDeque};

/// Limits of the mempool.
#[derive(Clone, Copy, Debug)]
pub struct MempoolConfig {
    /// Most pending transactions in all.
    pub max_txs: usize,
    /// Most pending transactions of one account.
    pub max_per_account: usize,
    /// How many rejection reasons are remembered for lookup.
    pub max_rejections: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 50_000,
            max_per_account: 64,
            max_rejections: 10_000,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// The signature (or the encoding) is invalid.
    #[error("rejected: {0}")]
    Invalid(TxError),
    /// The same transaction is already pending.
    #[error("already pending")]
    Duplicate,
    /// The nonce is below the account's next nonce: it can never apply.
    #[error("stale nonce: account is at {expected}, got {got}")]
    Stale {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// The account has too many pending transactions.
    #[error("too many pending transactions for this account")]
    AccountFull,
    /// The mempool is full.
    #[error("mempool full")]
    Full,
    /// Mode A: a pending transaction already carries one of this one-time
    /// transaction's key images (at most one of them can ever apply).
    #[error("a pending transaction already carries one of its key images")]
    KeyImagePending,
}

/// What a mempool judges a transaction against: the block after the
/// finalized one, at the finalized block's time (the next block's own time
/// is not known yet).
pub fn admission_context(state: &State) -> BlockContext {
    let meta = state.meta();
    BlockContext {
        height: Height(meta.height.0.saturating_add(1)),
        time: meta.time,
    }
}

/// Signature-checked pending transactions in arrival order.
///
/// A one-time (mode A) transaction has no nonce and no account to bound
/// it: it is admitted only if it passes the ledger's checks against the
/// finalized state in full (rings, range proofs, allowance), and only while
/// no pending transaction carries one of its key images. Its allowance or
/// order authorisation is one key image per meter, slot and use, so the
/// one-time transactions pending at once are bounded by the registry, not
/// by what a stranger sends.
#[derive(Debug, Default)]
pub struct Mempool {
    config: MempoolConfig,
    txs: BTreeMap<Digest, (u64, SignedTx)>,
    /// The key images of pending one-time transactions.
    images: BTreeMap<[u8; 32], Digest>,
    arrival: BTreeMap<u64, Digest>,
    per_account: BTreeMap<AccountId, usize>,
    next_seq: u64,
    rejected: BTreeMap<Digest, TxError>,
    rejected_order: VecDeque<Digest>,
}

impl Mempool {
    /// An empty mempool with these limits.
    pub fn new(config: MempoolConfig) -> Mempool {
        Mempool {
            config,
            ..Mempool::default()
        }
    }

    /// Number of pending transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Whether `hash` is pending.
    pub fn contains(&self, hash: &Digest) -> bool {
        self.txs.contains_key(hash)
    }

    /// Why the ledger rejected `hash`, if it did recently.
    pub fn rejection(&self, hash: &Digest) -> Option<&TxError> {
        self.rejected.get(hash)
    }

    /// Admits a transaction after checking its signature against `state`'s
    /// nonces; a one-time transaction after checking it in full against
    /// `state` (the finalized state) and the key images pending.
    ///
    /// # Errors
    /// [`MempoolError`] saying why it was not admitted; nothing changes then.
    pub fn insert(&mut self, tx: SignedTx, state: &State) -> Result<Digest, MempoolError> {
        let hash = tx.hash();
        if self.txs.contains_key(&hash) {
            return Err(MempoolError::Duplicate);
        }
        let expected = state.account(&tx.tx.signer).nonce;
        if tx.tx.nonce < expected {
            return Err(MempoolError::Stale {
                expected,
                got: tx.tx.nonce,
            });
        }
        if tx.tx.chain_id != state.chain_id() {
            return Err(MempoolError::Invalid(TxError::WrongChain));
        }
        let signer = tx.tx.signer;
        if self.per_account.get(&signer).copied().unwrap_or(0) >= self.config.max_per_account {
            return Err(MempoolError::AccountFull);
        }
        if self.txs.len() >= self.config.max_txs {
            return Err(MempoolError::Full);
        }
        let images = quartier_ledger::key_images_of(&tx.tx.body);
        // Cheap before dear: a key image already pending costs a lookup.
        if images.iter().any(|i| self.images.contains_key(i)) {
            return Err(MempoolError::KeyImagePending);
        }
        let one_time = tx.tx.body.is_one_time();
        let verified = tx.verify().map_err(MempoolError::Invalid)?;
        if one_time {
            quartier_ledger::check_one_time(state, &verified, &admission_context(state))
                .map_err(MempoolError::Invalid)?;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.arrival.insert(seq, hash);
        self.txs.insert(hash, (seq, verified.signed().clone()));
        for image in images {
            self.images.insert(image, hash);
        }
        *self.per_account.entry(signer).or_default() += 1;
        Ok(hash)
    }

    /// Up to `max` pending transactions, the earliest: the one-time (mode A)
    /// ones first, in the order of their hashes, then the accounts' in
    /// arrival order (a nonce follows its predecessor). A block thus does
    /// not say which shielded order arrived first: a meter that is always
    /// quick (or a host that sends its meters' orders in one order every
    /// slot) would otherwise hold the same place in every slot's block. And
    /// a registration or tariff change in the same block comes after them,
    /// so it does not void the rings and escrows they were signed against.
    pub fn pending(&self, max: usize) -> Vec<SignedTx> {
        let (mut one_time, mut txs): (Vec<_>, Vec<_>) = self
            .arrival
            .values()
            .filter_map(|h| self.txs.get(h).map(|(_, tx)| (*h, tx)))
            .take(max)
            .partition(|(_, tx)| tx.tx.body.is_one_time());
        one_time.sort_unstable_by_key(|(hash, _)| *hash);
        one_time.append(&mut txs);
        one_time.into_iter().map(|(_, tx)| tx.clone()).collect()
    }

    /// Removes a transaction (it was included in a finalized block).
    pub fn remove(&mut self, hash: &Digest) {
        if let Some((seq, tx)) = self.txs.remove(hash) {
            self.arrival.remove(&seq);
            for image in quartier_ledger::key_images_of(&tx.tx.body) {
                self.images.remove(&image);
            }
            if let Some(n) = self.per_account.get_mut(&tx.tx.signer) {
                *n -= 1;
                if *n == 0 {
                    self.per_account.remove(&tx.tx.signer);
                }
            }
        }
    }

    /// Removes a transaction the ledger rejected and remembers why.
    pub fn reject(&mut self, hash: Digest, reason: TxError) {
        self.remove(&hash);
        if self.rejected.insert(hash, reason).is_none() {
            self.rejected_order.push_back(hash);
        }
        while self.rejected_order.len() > self.config.max_rejections {
            if let Some(old) = self.rejected_order.pop_front() {
                self.rejected.remove(&old);
            }
        }
    }

    /// Drops transactions whose nonce the finalized state has passed, and
    /// one-time transactions whose key image it holds.
    pub fn prune(&mut self, state: &State) {
        let stale: Vec<Digest> = self
            .txs
            .iter()
            .filter(|(_, (_, tx))| {
                tx.tx.nonce < state.account(&tx.tx.signer).nonce
                    || quartier_ledger::key_image_used(state, &tx.tx.body)
            })
            .map(|(h, _)| *h)
            .collect();
        for h in stale {
            self.remove(&h);
        }
    }
}
