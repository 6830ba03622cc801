//! Pending transactions, checked on arrival and bounded.

use quartier_ledger::{BlockContext, SignedTx, State, TxError};
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
        // A one-time transaction is checked in full (ring signatures, range
        // proofs, its allowance): nothing else bounds what a stranger sends,
        // and a junk copy of an honest key image must not hold its place.
        let next = BlockContext {
            height: state.meta().height,
            time: state.meta().time,
        };
        quartier_ledger::check_one_time(state, &verified, &next).map_err(MempoolError::Invalid)?;
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
    use ed25519_dalek::SigningKey;
    use quartier_ledger::{
        Genesis, KIND_TRANSFER, MeterRole, PoolOutput, ShieldedPolicy, ShieldedTransfer, Tx,
        TxBody, execute_block,
    };
    use quartier_meter::wallet::{MeterRing, RingPolicy, ShieldedWallet};
    use quartier_types::{Height, Money, Price, RegionId, RegionParams, Side, Slot, Timestamp};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const R1: RegionId = RegionId(1);

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn id(k: &SigningKey) -> AccountId {
        AccountId(k.verifying_key().to_bytes())
    }

    /// A shielded chain with one meter and a wallet holding 4 of 8 outputs.
    fn chain(rng: &mut ChaCha20Rng) -> (State, ShieldedWallet) {
        let (dso, utility, meter) = (key(1), key(2), key(10));
        let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO);
        let mut state = State::from_genesis(Genesis {
            chain_name: "mempool-test".into(),
            dso: id(&dso),
            utility: id(&utility),
            validators: vec![id(&key(3))],
            regions: vec![(R1, params.expect("valid tariffs"))],
            slot_ms: 900_000,
            gate_ms: 60_000,
            lead_slots: 1,
            metered_ms: 900_000,
            allocations: vec![(id(&utility), Money::new(1_000_000_000))],
            sealed_market: None,
            shielded: Some(ShieldedPolicy { ring_size: 4 }),
            history_slots: 0,
        })
        .expect("valid genesis");
        let policy = RingPolicy {
            ring_size: 4,
            window: 100,
        };
        let mut wallet = ShieldedWallet::from_seed([20; 32], policy);
        let other = ShieldedWallet::from_seed([21; 32], policy).address();
        let mut txs = vec![
            Tx {
                chain_id: state.chain_id(),
                signer: id(&dso),
                nonce: 0,
                body: TxBody::RegisterMeter {
                    meter: id(&meter),
                    region: R1,
                    role: MeterRole::Consumer,
                    pv_watts: 0,
                },
            }
            .sign(&dso),
        ];
        for i in 0..8u64 {
            let to = if i % 2 == 0 { other } else { wallet.address() };
            let (output, received) =
                quartier_shielded::output::create(&to, 1_000_000, rng).expect("valid address");
            let body = TxBody::Shield {
                amount: Money::new(1_000_000),
                output,
                mask: *received.mask,
            };
            let tx = Tx {
                chain_id: state.chain_id(),
                signer: id(&utility),
                nonce: i,
                body,
            };
            txs.push(tx.sign(&utility));
        }
        let ctx = BlockContext {
            height: Height(1),
            time: Timestamp(1),
        };
        let out = execute_block(&mut state, &ctx, txs).expect("executes");
        assert!(out.results.iter().all(Result::is_ok), "{:?}", out.results);
        let pool: Vec<PoolOutput> = state.pool().to_vec();
        wallet.scan(0, &pool);
        (state, wallet)
    }

    /// A transfer of 0.5 CHF·10⁻² to the wallet itself on the meter's
    /// allowance of slot 0, signed by the one-time key of `secret`.
    fn transfer(
        state: &State,
        wallet: &mut ShieldedWallet,
        secret: u8,
        rng: &mut ChaCha20Rng,
    ) -> SignedTx {
        let chain_id = state.chain_id();
        let signer = Tx::one_time_signer(&[secret; 32]);
        let message = |t: &ShieldedTransfer| {
            t.prefix_hash((chain_id, signer), KIND_TRANSFER, Money::ZERO, None)
        };
        let to = wallet.address();
        let transfer = wallet
            .transfer(
                Money::new(500_000),
                Some(&to),
                message,
                (Slot(0), Side::Buy),
                rng,
            )
            .expect("funded");
        let meter = key(10);
        let ring = [id(&meter).0];
        let allowance = MeterRing {
            scalar: meter.to_scalar().to_bytes(),
            key: id(&meter).0,
            ring: &ring,
        }
        .allowance(chain_id, (R1, Slot(0)), message(&transfer), rng)
        .expect("in its ring");
        let body = TxBody::ShieldedTransfer {
            transfer,
            allowance,
        };
        Tx::one_time(chain_id, body, &[secret; 32])
    }

    /// Nonce-free transactions from fresh one-time keys pass no per-account
    /// limit. A second transfer on the meter's allowance of the slot while
    /// the first is pending is refused; so is a copy whose ring signature
    /// is junk (it could otherwise hold an honest key image's place); once
    /// the first has left, the second is admitted.
    #[test]
    fn a_second_use_of_an_allowance_and_a_junk_copy_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let (state, mut wallet) = chain(&mut rng);
        let mut pool = Mempool::new(MempoolConfig::default());
        let first = transfer(&state, &mut wallet, 40, &mut rng);
        let second = transfer(&state, &mut wallet, 41, &mut rng);
        let mut junk = second.tx.clone();
        if let TxBody::ShieldedTransfer { transfer, .. } = &mut junk.body {
            transfer.inputs[0].signature[0] ^= 1;
        }
        let junk = junk.sign(&SigningKey::from_bytes(&[41; 32]));
        assert_eq!(
            pool.insert(junk, &state),
            Err(MempoolError::Invalid(TxError::InvalidRingSignature))
        );
        let first = pool.insert(first, &state).expect("admitted");
        assert_eq!(
            pool.insert(second.clone(), &state),
            Err(MempoolError::KeyImagePending)
        );
        pool.remove(&first);
        assert!(pool.insert(second, &state).is_ok());
        assert_eq!(pool.len(), 1);
    }
}
