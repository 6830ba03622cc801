//! Pending transactions, checked on arrival and bounded.

use quartier_ledger::{SignedTx, State, TxError};
use quartier_types::AccountId;
use quartier_types::hash::Digest;
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
}

/// Signature-checked pending transactions in arrival order.
#[derive(Debug, Default)]
pub struct Mempool {
    config: MempoolConfig,
    txs: BTreeMap<Digest, (u64, SignedTx)>,
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

    /// Admits a transaction after checking its signature against `state`'s nonces.
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
        let verified = tx.verify().map_err(MempoolError::Invalid)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.arrival.insert(seq, hash);
        self.txs.insert(hash, (seq, verified.signed().clone()));
        *self.per_account.entry(signer).or_default() += 1;
        Ok(hash)
    }

    /// Up to `max` pending transactions, earliest first.
    pub fn pending(&self, max: usize) -> Vec<SignedTx> {
        self.arrival
            .values()
            .filter_map(|h| self.txs.get(h).map(|(_, tx)| tx.clone()))
            .take(max)
            .collect()
    }

    /// Removes a transaction (it was included in a finalized block).
    pub fn remove(&mut self, hash: &Digest) {
        if let Some((seq, tx)) = self.txs.remove(hash) {
            self.arrival.remove(&seq);
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

    /// Drops transactions whose nonce the finalized state has passed.
    pub fn prune(&mut self, state: &State) {
        let stale: Vec<Digest> = self
            .txs
            .iter()
            .filter(|(_, (_, tx))| tx.tx.nonce < state.account(&tx.tx.signer).nonce)
            .map(|(h, _)| *h)
            .collect();
        for h in stale {
            self.remove(&h);
        }
    }
}
