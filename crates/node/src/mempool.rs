//! Pending transactions, checked on arrival and bounded.

use quartier_ledger::{BlockContext, SignedTx, State, TxError, VerifiedTx};
use quartier_types::hash::Digest;
use quartier_types::{AccountId, Height};
use std::collections::{BTreeMap, VecDeque};

/// Limits of the mempool: its admission policy.
///
/// An account's transactions are admitted only with nonces from its next one
/// up to `max_per_account` ahead, each nonce once, and only those that can go
/// in the next block (every nonce before them pending or final) are ever
/// proposed, accounts taking turns. What could not go in (a gap never
/// filled) is bounded apart and evicted after `max_gapped_age_blocks`.
/// Accounts the finalized state knows nothing of (no nonce used, no balance,
/// no role or meter) share `max_newcomer_txs` and must send their nonces in
/// order (each one they send can go in the next block, and leaves the pool
/// with it or with its refusal), so fresh keys, which cost nothing, can not
/// fill the pool for everyone else, nor hold the newcomers' places.
#[derive(Clone, Copy, Debug)]
pub struct MempoolConfig {
    /// Most pending transactions in all.
    pub max_txs: usize,
    /// Most pending transactions of one account, and how far ahead of its
    /// next nonce a transaction may be.
    pub max_per_account: usize,
    /// Most pending transactions admitted with a nonce gap before them.
    pub max_gapped: usize,
    /// Most pending transactions of accounts the state does not know.
    pub max_newcomer_txs: usize,
    /// Finalized blocks a transaction may wait before it is evicted.
    pub max_age_blocks: u64,
    /// Finalized blocks a transaction admitted with a gap may wait.
    pub max_gapped_age_blocks: u64,
    /// How many rejection reasons are remembered for lookup.
    pub max_rejections: usize,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: 50_000,
            max_per_account: 64,
            max_gapped: 4_096,
            max_newcomer_txs: 1_024,
            max_age_blocks: 1_200,
            max_gapped_age_blocks: 60,
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
    /// The nonce is further ahead of the account's next nonce than the
    /// mempool holds transactions of one account.
    #[error("nonce too far ahead: account is at {expected}, got {got} (at most {max_ahead} ahead)")]
    TooFarAhead {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
        /// How far ahead a nonce may be.
        max_ahead: u64,
    },
    /// An account the chain does not know sent a nonce before the ones it
    /// has pending.
    #[error("nonce gap: a new account sends its nonces in order (next is {next}, got {got})")]
    Gap {
        /// The nonce the account may send now.
        next: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Another transaction of the account with this nonce is pending.
    #[error("another transaction with nonce {0} is pending")]
    NonceTaken(u64),
    /// The account has too many pending transactions.
    #[error("too many pending transactions for this account")]
    AccountFull,
    /// Too many pending transactions wait for a nonce before them.
    #[error("too many pending transactions with a nonce gap")]
    GapsFull,
    /// Too many pending transactions of accounts the chain does not know.
    #[error("too many pending transactions of new accounts")]
    NewcomersFull,
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

/// One pending transaction.
#[derive(Debug)]
struct Entry {
    /// Arrival order.
    seq: u64,
    /// The finalized height when it was admitted.
    admitted_at: u64,
    /// Admitted with a nonce gap before it (counted in `gapped`).
    gapped: bool,
    /// Of an account the state did not know (counted in `newcomers`).
    newcomer: bool,
    tx: SignedTx,
}

/// Signature-checked pending transactions.
///
/// A one-time (mode A) transaction has no nonce and no account to bound
/// it: it is admitted only if it passes the ledger's checks against the
/// finalized state in full (rings, range proofs, allowance), and only while
/// no pending transaction carries one of its key images. Its allowance or
/// order authorisation is one key image per meter, slot and use, so the
/// one-time transactions pending at once are bounded by the registry, not
/// by what a stranger sends. An account's transactions are bounded by
/// [`MempoolConfig`].
#[derive(Debug, Default)]
pub struct Mempool {
    config: MempoolConfig,
    txs: BTreeMap<Digest, Entry>,
    /// The key images of pending one-time transactions.
    images: BTreeMap<[u8; 32], Digest>,
    arrival: BTreeMap<u64, Digest>,
    /// Each account's pending transactions by nonce (one-time ones are not here).
    accounts: BTreeMap<AccountId, BTreeMap<u64, Digest>>,
    gapped: usize,
    newcomers: usize,
    next_seq: u64,
    rejected: BTreeMap<Digest, String>,
    rejected_order: VecDeque<Digest>,
}

/// Whether the finalized state knows `who`: it used a nonce, holds IOUs, or
/// has a role, a meter or an enclave on the chain.
fn known(state: &State, who: &AccountId) -> bool {
    let account = state.account(who);
    account.nonce > 0
        || account.balance.get() > 0
        || state.meter(who).is_some()
        || state.validators().contains(who)
        || state.enclaves().contains_key(who)
        || state.authority(quartier_ledger::Authority::Dso) == *who
        || state.authority(quartier_ledger::Authority::Utility) == *who
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

    /// Why `hash` was rejected or evicted, if it was recently.
    pub fn rejection(&self, hash: &Digest) -> Option<&str> {
        self.rejected.get(hash).map(String::as_str)
    }

    /// The cheap checks of admission, without the signature or proofs:
    /// whether `tx` would be refused for its hash, chain, nonce, the
    /// quotas or a pending key image. [`Mempool::insert`] runs them again.
    ///
    /// # Errors
    /// The [`MempoolError`] `insert` would return before verifying.
    pub fn precheck(&self, tx: &SignedTx, state: &State) -> Result<(), MempoolError> {
        self.admission(&tx.hash(), tx, state).map(|_| ())
    }

    /// The cheap checks; `(gapped, newcomer)` if they pass.
    fn admission(
        &self,
        hash: &Digest,
        tx: &SignedTx,
        state: &State,
    ) -> Result<(bool, bool), MempoolError> {
        if self.txs.contains_key(hash) {
            return Err(MempoolError::Duplicate);
        }
        if tx.tx.chain_id != state.chain_id() {
            return Err(MempoolError::Invalid(TxError::WrongChain));
        }
        let signer = tx.tx.signer;
        let (mut gapped, mut newcomer) = (false, false);
        if !tx.tx.body.is_one_time() {
            let expected = state.account(&signer).nonce;
            let got = tx.tx.nonce;
            if got < expected {
                return Err(MempoolError::Stale { expected, got });
            }
            let max_ahead = self.config.max_per_account as u64;
            if got - expected >= max_ahead {
                return Err(MempoolError::TooFarAhead {
                    expected,
                    got,
                    max_ahead,
                });
            }
            let queue = self.accounts.get(&signer);
            if queue.is_some_and(|q| q.contains_key(&got)) {
                return Err(MempoolError::NonceTaken(got));
            }
            if queue.map_or(0, BTreeMap::len) >= self.config.max_per_account {
                return Err(MempoolError::AccountFull);
            }
            let before = queue.map_or(0, |q| q.range(expected..got).count()) as u64;
            gapped = before != got - expected;
            newcomer = !known(state, &signer);
            if newcomer && gapped {
                return Err(MempoolError::Gap {
                    next: expected + before,
                    got,
                });
            }
            if gapped && self.gapped >= self.config.max_gapped {
                return Err(MempoolError::GapsFull);
            }
            if newcomer && self.newcomers >= self.config.max_newcomer_txs {
                return Err(MempoolError::NewcomersFull);
            }
        }
        if self.txs.len() >= self.config.max_txs {
            return Err(MempoolError::Full);
        }
        // Cheap before dear: a key image already pending costs a lookup.
        if quartier_ledger::key_images_of(&tx.tx.body)
            .iter()
            .any(|i| self.images.contains_key(i))
        {
            return Err(MempoolError::KeyImagePending);
        }
        Ok((gapped, newcomer))
    }

    /// Admits a transaction: the cheap checks first (duplicate, chain,
    /// nonce window, quotas, key images pending; [`Mempool::precheck`]),
    /// then its signature, and a one-time transaction in full against
    /// `state` (the finalized state).
    ///
    /// # Errors
    /// [`MempoolError`] saying why it was not admitted; nothing changes then.
    pub fn insert(&mut self, tx: SignedTx, state: &State) -> Result<Digest, MempoolError> {
        self.admission(&tx.hash(), &tx, state)?;
        let verified = state
            .verify_tx_unremembered(tx)
            .map_err(MempoolError::Invalid)?;
        self.insert_verified(verified, state)
    }

    /// As [`Mempool::insert`] for a transaction whose signature was
    /// verified already (outside the chain's lock: it is not verified
    /// again under it). Its signature is remembered only where it costs an
    /// attacker something: not a fresh key's (free to make, and its
    /// transaction may fail in the ledger), nor a one-time one's whose
    /// proofs fail.
    ///
    /// # Errors
    /// [`MempoolError`] saying why it was not admitted; nothing changes then.
    pub fn insert_verified(
        &mut self,
        verified: VerifiedTx,
        state: &State,
    ) -> Result<Digest, MempoolError> {
        let tx = verified.signed();
        let hash = tx.hash();
        let (gapped, newcomer) = self.admission(&hash, tx, state)?;
        let one_time = tx.tx.body.is_one_time();
        let signer = tx.tx.signer;
        let images = quartier_ledger::key_images_of(&tx.tx.body);
        if one_time {
            quartier_ledger::check_one_time(state, &verified, &admission_context(state))
                .map_err(MempoolError::Invalid)?;
        }
        if !newcomer {
            state.remember_signature(&verified);
        }
        if !one_time {
            self.accounts
                .entry(signer)
                .or_default()
                .insert(verified.tx().nonce, hash);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.arrival.insert(seq, hash);
        for image in images {
            self.images.insert(image, hash);
        }
        self.gapped += usize::from(gapped);
        self.newcomers += usize::from(newcomer);
        self.txs.insert(
            hash,
            Entry {
                seq,
                admitted_at: state.meta().height.0,
                gapped,
                newcomer,
                tx: verified.signed().clone(),
            },
        );
        if !one_time {
            self.close_gaps(&signer, state.account(&signer).nonce);
        }
        Ok(hash)
    }

    /// Counts no longer as gapped the transactions of `who` that follow its
    /// next nonce `next` without a gap (the gap before them was filled, or
    /// the chain moved past it).
    fn close_gaps(&mut self, who: &AccountId, next: u64) {
        let Some(queue) = self.accounts.get(who) else {
            return;
        };
        let mut nonce = next;
        for (n, hash) in queue.range(next..) {
            if *n != nonce {
                break;
            }
            if let Some(entry) = self.txs.get_mut(hash)
                && entry.gapped
            {
                entry.gapped = false;
                self.gapped -= 1;
            }
            let Some(following) = nonce.checked_add(1) else {
                break;
            };
            nonce = following;
        }
    }

    /// Up to `max` pending transactions that can go in the next block: the
    /// one-time (mode A) ones first, in the order of their hashes, then the
    /// accounts', each account's from `next_nonce(account)` (its nonce after
    /// the block built on) without a gap, the accounts taking turns one
    /// transaction each, in an order drawn from `seed` (the proposer's
    /// height: not the order of arrival, so accounts that filled the pool
    /// first do not come first in every block).
    ///
    /// A block thus does not say which shielded order arrived first: a meter
    /// that is always quick (or a host that sends its meters' orders in one
    /// order every slot) would otherwise hold the same place in every slot's
    /// block. A registration or tariff change in the same block comes after
    /// them, so it does not void the rings and escrows they were signed
    /// against. And one account's many transactions, or many accounts'
    /// transactions that wait for a nonce that never comes, do not keep
    /// another account's out.
    pub fn pending(
        &self,
        max: usize,
        next_nonce: impl Fn(&AccountId) -> u64,
        seed: u64,
    ) -> Vec<SignedTx> {
        let mut one_time: Vec<(Digest, &SignedTx)> = self
            .arrival
            .values()
            .filter_map(|h| self.txs.get(h).map(|e| (*h, &e.tx)))
            .filter(|(_, tx)| tx.tx.body.is_one_time())
            .take(max)
            .collect();
        one_time.sort_unstable_by_key(|(hash, _)| *hash);
        let mut out: Vec<SignedTx> = one_time.into_iter().map(|(_, tx)| tx.clone()).collect();
        // Each account's run of transactions that can apply in order.
        let mut runs: Vec<(Digest, Vec<&SignedTx>)> = self
            .accounts
            .iter()
            .filter_map(|(who, queue)| {
                let mut nonce = next_nonce(who);
                let mut run = Vec::new();
                for (n, hash) in queue.range(nonce..) {
                    if *n != nonce {
                        break;
                    }
                    let entry = self.txs.get(hash)?;
                    run.push(&entry.tx);
                    nonce = nonce.checked_add(1)?;
                }
                run.first()?;
                let turn = quartier_types::hash::tagged(
                    "QUARTIER_MEMPOOL_TURN",
                    &[&seed.to_le_bytes(), &who.0],
                );
                Some((turn, run))
            })
            .collect();
        runs.sort_unstable_by_key(|(turn, _)| *turn);
        let mut turn = 0;
        while out.len() < max {
            let before = out.len();
            for (_, run) in &runs {
                if out.len() >= max {
                    break;
                }
                if let Some(tx) = run.get(turn) {
                    out.push((*tx).clone());
                }
            }
            if out.len() == before {
                break;
            }
            turn += 1;
        }
        out
    }

    /// Removes a transaction (it was included in a finalized block).
    pub fn remove(&mut self, hash: &Digest) {
        let Some(entry) = self.txs.remove(hash) else {
            return;
        };
        self.arrival.remove(&entry.seq);
        for image in quartier_ledger::key_images_of(&entry.tx.tx.body) {
            self.images.remove(&image);
        }
        self.gapped -= usize::from(entry.gapped);
        self.newcomers -= usize::from(entry.newcomer);
        let signer = entry.tx.tx.signer;
        if let Some(queue) = self.accounts.get_mut(&signer) {
            queue.remove(&entry.tx.tx.nonce);
            if queue.is_empty() {
                self.accounts.remove(&signer);
            }
        }
    }

    /// Removes a transaction the ledger rejected and remembers why, and the
    /// account's transactions after it (none of them can apply until another
    /// transaction takes its nonce).
    pub fn reject(&mut self, hash: Digest, reason: TxError) {
        let after: Vec<Digest> = self
            .txs
            .get(&hash)
            .filter(|e| !e.tx.tx.body.is_one_time())
            .and_then(|e| {
                let (signer, nonce) = (e.tx.tx.signer, e.tx.tx.nonce);
                let queue = self.accounts.get(&signer)?;
                Some(
                    queue
                        .range(nonce.checked_add(1)?..)
                        .map(|(_, h)| *h)
                        .collect(),
                )
            })
            .unwrap_or_default();
        self.drop_with_reason(hash, reason.to_string());
        for later in after {
            self.drop_with_reason(later, format!("follows the rejected transaction {hash}"));
        }
    }

    fn drop_with_reason(&mut self, hash: Digest, reason: String) {
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

    /// Drops transactions whose nonce the finalized state has passed,
    /// one-time transactions whose key image it holds, and transactions
    /// that waited more than `max_age_blocks` (remembered as evicted).
    pub fn prune(&mut self, state: &State) {
        let height = state.meta().height.0;
        let mut stale = Vec::new();
        let mut old = Vec::new();
        for (h, entry) in &self.txs {
            let tx = &entry.tx;
            if tx.tx.nonce < state.account(&tx.tx.signer).nonce
                || quartier_ledger::key_image_used(state, &tx.tx.body)
            {
                stale.push(*h);
            } else {
                let age = height.saturating_sub(entry.admitted_at);
                let limit = if entry.gapped {
                    self.config.max_gapped_age_blocks
                } else {
                    self.config.max_age_blocks
                };
                if age > limit {
                    old.push((*h, limit));
                }
            }
        }
        for h in stale {
            self.remove(&h);
        }
        let accounts: Vec<AccountId> = self.accounts.keys().copied().collect();
        for who in accounts {
            self.close_gaps(&who, state.account(&who).nonce);
        }
        for (h, limit) in old {
            self.drop_with_reason(h, format!("evicted: pending for more than {limit} blocks"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quartier_ledger::{Genesis, Tx, TxBody};
    use quartier_types::{Money, Price, RegionId, RegionParams};

    fn key(i: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[i; 32])
    }

    /// A state in which `key(1)` is the DSO (an account the chain knows).
    fn state() -> State {
        let dso = AccountId(key(1).verifying_key().to_bytes());
        State::from_genesis(Genesis {
            regions: vec![(
                RegionId(1),
                RegionParams::new(Price::new(20_000), Price::new(4_000), Price::ZERO).unwrap(),
            )],
            ..Genesis::new(
                "mempool",
                dso,
                AccountId(key(2).verifying_key().to_bytes()),
                vec![AccountId(key(3).verifying_key().to_bytes())],
            )
        })
        .unwrap()
    }

    fn transfer(state: &State, nonce: u64) -> SignedTx {
        Tx {
            chain_id: state.chain_id(),
            signer: AccountId(key(1).verifying_key().to_bytes()),
            nonce,
            body: TxBody::Transfer {
                to: AccountId([9; 32]),
                amount: Money::new(1),
            },
        }
        .sign(&key(1))
    }

    /// Transactions admitted with a gap stop counting against the gapped
    /// quota once the gap is filled: the quota bounds what can not go in a
    /// block, not what arrived out of order.
    #[test]
    fn a_filled_gap_no_longer_counts_against_the_gapped_quota() {
        let state = state();
        let mut pool = Mempool::new(MempoolConfig {
            max_gapped: 2,
            ..MempoolConfig::default()
        });
        pool.insert(transfer(&state, 1), &state).unwrap();
        pool.insert(transfer(&state, 2), &state).unwrap();
        assert_eq!(pool.gapped, 2);
        assert_eq!(
            pool.insert(transfer(&state, 4), &state),
            Err(MempoolError::GapsFull)
        );
        pool.insert(transfer(&state, 0), &state).unwrap();
        assert_eq!(pool.gapped, 0, "the gap before 1 and 2 is filled");
        pool.insert(transfer(&state, 4), &state).unwrap();
        assert_eq!(pool.gapped, 1);
        assert_eq!(
            pool.pending(10, |_| 0, 0).len(),
            3,
            "0, 1, 2 can go in a block"
        );
    }
}
