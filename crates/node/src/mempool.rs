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
    /// A pending mode A transaction already uses one of its key images (a
    /// second spend of an output, a second order of a meter in a slot and
    /// side, a second transfer on one allowance): at most one can apply.
    #[error("a pending transaction already uses one of its key images")]
    KeyImagePending,
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
    /// The key images pending mode A transactions use, and which uses each.
    images: BTreeMap<[u8; 32], Digest>,
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
        let images = tx.tx.body.key_images();
        if images.iter().any(|k| state.key_image_spent(k)) {
            return Err(MempoolError::Invalid(TxError::KeyImageSpent));
        }
        if images.iter().any(|k| self.images.contains_key(k)) {
            return Err(MempoolError::KeyImagePending);
        }
        let verified = tx.verify().map_err(MempoolError::Invalid)?;
        self.images.extend(images.into_iter().map(|k| (k, hash)));
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
            for k in tx.tx.body.key_images() {
                if self.images.get(&k) == Some(hash) {
                    self.images.remove(&k);
                }
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
    /// mode A transactions one of whose key images it has spent.
    pub fn prune(&mut self, state: &State) {
        let stale: Vec<Digest> = self
            .txs
            .iter()
            .filter(|(_, (_, tx))| {
                tx.tx.nonce < state.account(&tx.tx.signer).nonce
                    || tx
                        .tx
                        .body
                        .key_images()
                        .iter()
                        .any(|k| state.key_image_spent(k))
            })
            .map(|(h, _)| *h)
            .collect();
        for h in stale {
            self.remove(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quartier_ledger::{
        Allowance, Genesis, ShieldedInput, ShieldedPolicy, ShieldedTransfer, Tx, TxBody,
    };
    use quartier_shielded::authorise::Authorisation;
    use quartier_types::{Money, Price, RegionId, RegionParams, Slot};

    fn state() -> State {
        let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO);
        State::from_genesis(Genesis {
            chain_name: "mempool-test".into(),
            dso: AccountId([1; 32]),
            utility: AccountId([2; 32]),
            validators: vec![AccountId([3; 32])],
            regions: vec![(RegionId(1), params.expect("valid tariffs"))],
            slot_ms: 900_000,
            gate_ms: 60_000,
            lead_slots: 1,
            metered_ms: 900_000,
            allocations: vec![(AccountId([2; 32]), Money::new(1))],
            sealed_market: None,
            shielded: Some(ShieldedPolicy { ring_size: 4 }),
            history_slots: 0,
        })
        .expect("valid genesis")
    }

    /// A one-time transfer spending `input` on the allowance `allowance`
    /// (key images only: the mempool does not verify ring signatures).
    fn transfer(state: &State, input: u8, allowance: u8, signer: u8) -> SignedTx {
        let image = |b| Authorisation {
            key_image: [b; 32],
            pseudo_out: [0; 32],
            signature: Vec::new(),
        };
        let body = TxBody::ShieldedTransfer {
            transfer: ShieldedTransfer {
                inputs: vec![ShieldedInput {
                    ring: vec![0],
                    key_image: [input; 32],
                    pseudo_out: [0; 32],
                    signature: Vec::new(),
                }],
                outputs: Vec::new(),
                range_proof: Vec::new(),
            },
            allowance: Allowance {
                region: RegionId(1),
                slot: Slot(0),
                authorisation: image(allowance),
            },
        };
        Tx::one_time(state.chain_id(), body, &[signer; 32])
    }

    /// Nonce-free transactions from fresh one-time keys pass no per-account
    /// limit: a second one on the same allowance (or spending the same
    /// output) while the first is pending is refused, and admitted again
    /// once the first has left.
    #[test]
    fn a_second_use_of_a_pending_key_image_is_refused() {
        let state = state();
        let mut pool = Mempool::new(MempoolConfig::default());
        let first = pool
            .insert(transfer(&state, 10, 20, 1), &state)
            .expect("admitted");
        for (input, allowance) in [(11, 20), (10, 21)] {
            assert_eq!(
                pool.insert(transfer(&state, input, allowance, 2), &state),
                Err(MempoolError::KeyImagePending),
                "input {input}, allowance {allowance}"
            );
        }
        assert!(pool.insert(transfer(&state, 12, 22, 3), &state).is_ok());
        pool.remove(&first);
        assert!(pool.insert(transfer(&state, 11, 20, 2), &state).is_ok());
        assert_eq!(pool.len(), 2);
    }
}
