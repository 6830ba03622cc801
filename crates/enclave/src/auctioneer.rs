//! The auctioneer core (DESIGN §7): what runs inside an enclave for one
//! region. It opens sealed orders with the current epoch key, checks them
//! against a private prepaid ledger, clears each slot with the same
//! [`quartier_auction::clear`] as the transparent market, and produces one
//! receipt per sealed order plus public aggregates.
//!
//! Money: a buy locks `energy × grid tariff` of the wallet's prepaid balance
//! when accepted (so a household can never spend more than it prepaid); at
//! settlement the buyer is refunded what it did not pay and sellers are
//! credited. The custody therefore changes by `sellers_receive −
//! buyers_pay` per slot, which equals what the utility and the DSO net with
//! the market (`utility_buys − utility_sells − dso_fees`) and is published in
//! the aggregates, so the chain can reconcile deposits with the report.

use crate::sealed::{DropReason, Epoch, EpochKeyPair, SealedOrder, SignedOrder, hpke_seal};
use borsh::{BorshDeserialize, BorshSerialize};
use quartier_auction::AuctionError;
use quartier_types::hash::{self, Digest};
use quartier_types::{AccountId, Energy, Money, Order, RegionId, RegionParams, Side, Slot};
use std::collections::{BTreeMap, BTreeSet};

pub use quartier_enclave_proto::report::*;

/// The receipt seed of a slot whose orders none opened: public, no secret
/// needed.
fn public_seed(region: RegionId, slot: Slot) -> [u8; 32] {
    hash::tagged(
        "QUARTIER_ENCLAVE_ERASED_EPOCH_RECEIPT_SEED",
        &[&region.0.to_le_bytes(), &slot.0.to_le_bytes()],
    )
    .0
}

/// An accepted order waiting for its slot to clear.
#[derive(Clone, Copy, Debug)]
struct Accepted {
    order: SignedOrder,
    escrow: Money,
}

/// Who an opened order is from: its wallet and the key its receipt is
/// sealed to.
type Opened = (AccountId, [u8; 32]);

/// A sealed order as taken: accepted, or refused (with its wallet and
/// receipt key if it opened, so that its receipt is sealed too).
type Intake = Result<Accepted, (Option<Opened>, Refusal)>;

/// The most withdrawals one report approves; later requests wait for a later
/// slot's report (bounds the report transaction's size).
pub const MAX_PAYOUTS: usize = 8;

/// One closed slot as the chain froze it: deposits made before the gate,
/// the sealed orders in arrival order, and withdrawal requests.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// The slot.
    pub slot: Slot,
    /// The region's market parameters, frozen when the gate closed.
    pub params: RegionParams,
    /// The epoch whose key seals this slot's orders.
    pub epoch: Epoch,
    /// Deposits into custody, credited before any order is opened.
    pub deposits: &'a [(AccountId, Money)],
    /// The sealed orders.
    pub orders: &'a [SealedOrder],
    /// Withdrawal requests, decided after the slot clears.
    pub withdrawals: &'a [(AccountId, Money)],
    /// The meters that submitted the slot's orders, each with the most it
    /// may sell in the slot (zero without PV), as the chain froze them: an
    /// order of any other wallet, or a sell above its figure, is refused.
    pub traders: &'a [(AccountId, Energy)],
    /// The chain marked the batch past the erasure schedule (a key
    /// [`crate::service::KEPT_EPOCHS_BEHIND`] epochs later was published
    /// while it waited): every order is refused unopened. The chain decides,
    /// so members that erased at different moments clear it alike.
    pub expired: bool,
}

/// Why a batch can not be cleared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The enclave does not hold the slot's epoch key.
    #[error("no key for epoch {0}")]
    MissingKey(u64),
    /// A deposit overflows 64 bits (beyond any supply).
    #[error(transparent)]
    Overflow(#[from] Overflow),
    /// The clearing failed.
    #[error(transparent)]
    Auction(#[from] AuctionError),
    /// The slot is already cleared (clearing it again would credit its
    /// deposits and pay its withdrawals twice).
    #[error("slot {0} is already settled")]
    AlreadySettled(u64),
}

/// One region's auctioneer.
pub struct Auctioneer {
    /// The chain it clears for: orders must name it.
    chain: [u8; 32],
    region: RegionId,
    params: RegionParams,
    /// The key orders are opened with now (none once erased on schedule
    /// with no later key held yet).
    key: Option<EpochKeyPair>,
    /// Every key of an epoch before this one was erased: a batch of such an
    /// epoch clears with each order refused unopened.
    erased_below: Epoch,
    /// Keys of later epochs, received ahead of their slots.
    upcoming: BTreeMap<Epoch, EpochKeyPair>,
    prepaid: BTreeMap<AccountId, Money>,
    /// Per slot: every sealed order's hash with its acceptance or refusal.
    books: BTreeMap<Slot, Vec<(Digest, Intake)>>,
    settled: BTreeSet<Slot>,
    deposited: Money,
    /// The current batch's traders and their sell bounds.
    traders: BTreeMap<AccountId, Energy>,
    /// Secret salt of [`Auctioneer::ledger_digest`], chained through every
    /// batch's receipt seed (derived from its epoch secret).
    ledger_salt: [u8; 32],
}

/// Domain tag of the chained salt of a region's ledger digest.
pub const TAG_LEDGER_SALT: &str = "QUARTIER_ENCLAVE_LEDGER_SALT";
/// Domain tag of a region's ledger digest.
pub const TAG_LEDGER: &str = "QUARTIER_ENCLAVE_LEDGER";

/// What an auctioneer keeps across a restart (inside the sealed state).
#[derive(BorshSerialize, BorshDeserialize)]
pub(crate) struct AuctioneerState {
    chain: [u8; 32],
    region: RegionId,
    params: RegionParams,
    keys: Vec<(Epoch, Vec<u8>)>,
    erased_below: Epoch,
    prepaid: BTreeMap<AccountId, Money>,
    settled: BTreeSet<Slot>,
    deposited: Money,
    ledger_salt: [u8; 32],
}

impl AuctioneerState {
    /// The region it clears.
    #[cfg(test)]
    pub(crate) fn region(&self) -> RegionId {
        self.region
    }

    /// Test only: credits `wallet` with `amount` in this state's ledger, as a
    /// compromised member forging a state would.
    #[cfg(test)]
    pub(crate) fn forge_credit(&mut self, wallet: AccountId, amount: Money) {
        let balance = self.prepaid.entry(wallet).or_insert(Money::ZERO);
        *balance = balance.checked_add(amount).unwrap_or(*balance);
    }

    /// The auctioneer again, or `None` if a key does not decode.
    pub(crate) fn restore(self) -> Option<Auctioneer> {
        let mut keys = self
            .keys
            .into_iter()
            .map(|(epoch, secret)| EpochKeyPair::from_secret(epoch, &secret));
        let key = match keys.next() {
            Some(k) => Some(k?),
            None => None,
        };
        let mut upcoming = BTreeMap::new();
        for k in keys {
            let k = k?;
            upcoming.insert(k.epoch(), k);
        }
        Some(Auctioneer {
            chain: self.chain,
            region: self.region,
            params: self.params,
            key,
            erased_below: self.erased_below,
            upcoming,
            prepaid: self.prepaid,
            books: BTreeMap::new(),
            settled: self.settled,
            deposited: self.deposited,
            traders: BTreeMap::new(),
            ledger_salt: self.ledger_salt,
        })
    }
}

/// Money does not fit in 64 bits (a deposit beyond the supply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("amount overflow")]
pub struct Overflow;

impl Auctioneer {
    /// An auctioneer of chain `chain` (its genesis hash) for `region` with
    /// `params`, holding the epoch key `key`.
    pub fn new(
        chain: [u8; 32],
        region: RegionId,
        params: RegionParams,
        key: EpochKeyPair,
    ) -> Auctioneer {
        Auctioneer {
            key: Some(key),
            ..Auctioneer::after_erasure(chain, region, params, Epoch(0))
        }
    }

    /// The meters allowed to trade in the slot being taken, each with the
    /// most it may sell (see [`Batch::traders`]); replaces the previous set.
    pub fn set_traders(&mut self, traders: &[(AccountId, Energy)]) {
        self.traders = traders.iter().copied().collect();
    }

    /// An auctioneer for a region that starts on a slot whose epoch key
    /// was already erased (see [`Auctioneer::erase_before`]).
    pub fn after_erasure(
        chain: [u8; 32],
        region: RegionId,
        params: RegionParams,
        erased_below: Epoch,
    ) -> Auctioneer {
        Auctioneer {
            chain,
            region,
            params,
            key: None,
            erased_below,
            upcoming: BTreeMap::new(),
            prepaid: BTreeMap::new(),
            books: BTreeMap::new(),
            settled: BTreeSet::new(),
            deposited: Money::ZERO,
            traders: BTreeMap::new(),
            ledger_salt: [0; 32],
        }
    }

    /// Replaces the epoch key (the old one is dropped, hence erased).
    pub fn rotate(&mut self, key: EpochKeyPair) {
        self.key = Some(key);
    }

    /// Erases every key of an epoch before `epoch` (dropped, hence zeroed),
    /// whether or not their slots were cleared: a batch of such an epoch
    /// then clears with its orders refused unopened.
    pub fn erase_before(&mut self, epoch: Epoch) {
        if self.key.as_ref().is_some_and(|k| k.epoch() < epoch) {
            self.key = None;
        }
        self.upcoming.retain(|e, _| *e >= epoch);
        if self.key.is_none() {
            self.key = self.upcoming.pop_first().map(|(_, k)| k);
        }
        self.erased_below = self.erased_below.max(epoch);
    }

    /// Every key of an epoch before this one is erased.
    pub fn erased_below(&self) -> Epoch {
        self.erased_below
    }

    /// The state to seal between batches (open books are not kept: batches
    /// are cleared whole).
    pub(crate) fn export(&self) -> AuctioneerState {
        AuctioneerState {
            chain: self.chain,
            region: self.region,
            params: self.params,
            keys: self
                .key
                .iter()
                .chain(self.upcoming.values())
                .map(|k| (k.epoch(), k.secret_bytes()))
                .collect(),
            erased_below: self.erased_below,
            prepaid: self.prepaid.clone(),
            settled: self.settled.clone(),
            deposited: self.deposited,
            ledger_salt: self.ledger_salt,
        }
    }

    /// What a report of the next slot clears from: this ledger's digest,
    /// or [`FIRST_LEDGER`] before the region's first slot.
    fn previous_ledger(&self) -> Digest {
        if self.last_settled().is_some() {
            self.ledger_digest()
        } else {
            FIRST_LEDGER
        }
    }

    /// Forgets every epoch key (a state taken from a peer keeps none of
    /// its keys: the member's own are added again before it clears) and
    /// takes `erased_below` as its erasure mark.
    pub(crate) fn forget_keys(&mut self, erased_below: Epoch) {
        self.key = None;
        self.upcoming.clear();
        self.erased_below = erased_below;
    }

    /// A digest of the prepaid ledger and what clearing goes on from (chain,
    /// region, parameters, last settled slot, deposits less payouts), salted
    /// with a secret every member that cleared the same batches holds: the
    /// salt chains each batch's receipt seed, derived from its epoch secret
    /// (the public seed for a batch without orders),
    /// so nobody without those secrets can test guesses of the balances
    /// against it. Members that cleared alike compute the same digest; it
    /// goes into the slot's signed summary.
    pub fn ledger_digest(&self) -> Digest {
        let ledger = borsh::to_vec(&(
            self.chain,
            self.region,
            self.params,
            &self.prepaid,
            self.last_settled(),
            self.deposited,
        ))
        .unwrap_or_default();
        hash::tagged(TAG_LEDGER, &[&self.ledger_salt, &ledger])
    }

    /// Keeps the key of a later epoch until its slots come.
    pub fn add_key(&mut self, key: EpochKeyPair) {
        if key.epoch() < self.erased_below {
            return;
        }
        match &self.key {
            None => self.key = Some(key),
            Some(current) if key.epoch() > current.epoch() => {
                self.upcoming.insert(key.epoch(), key);
            }
            // An earlier epoch's key that came after a later one's (a member
            // that caught up gets the published keys again one by one): it
            // is current until its epoch is entered. Keys of epochs already
            // entered are below `erased_below` and never come back.
            Some(current) if key.epoch() < current.epoch() => {
                if let Some(later) = self.key.replace(key) {
                    self.upcoming.insert(later.epoch(), later);
                }
            }
            Some(_) => {}
        }
    }

    /// The epochs whose keys this auctioneer holds: the current one first.
    pub fn epochs(&self) -> Vec<Epoch> {
        self.key
            .iter()
            .map(EpochKeyPair::epoch)
            .chain(self.upcoming.keys().copied())
            .collect()
    }

    /// Makes `epoch` current, erasing every older key.
    fn enter(&mut self, epoch: Epoch) -> Result<(), BatchError> {
        if self.key.as_ref().is_some_and(|k| k.epoch() == epoch) {
            return Ok(());
        }
        let later = self.upcoming.split_off(&epoch);
        self.upcoming = later;
        let key = self
            .upcoming
            .remove(&epoch)
            .ok_or(BatchError::MissingKey(epoch.0))?;
        self.rotate(key);
        Ok(())
    }

    /// Clears one closed slot the way every enclave of the committee does:
    /// credit the deposits, enter the slot's epoch (erasing older keys), take
    /// the sealed orders in order, settle, then pay out withdrawal requests
    /// the prepaid balance covers (at most [`MAX_PAYOUTS`], in order). The
    /// receipts are sealed with randomness derived from the epoch secret, so
    /// the report is a function of the batch and the prior state: honest
    /// enclaves sign the same bytes.
    ///
    /// # Errors
    /// [`BatchError`] (a missing key, an overflowing deposit, a clearing
    /// that fails); then nothing changes, so the batch can be tried again.
    pub fn clear_batch(&mut self, batch: &Batch<'_>) -> Result<SlotReport, BatchError> {
        let before = self.export();
        let result = self.try_clear_batch(batch);
        if result.is_err()
            && let Some(restored) = before.restore()
        {
            *self = restored;
        }
        result
    }

    fn try_clear_batch(&mut self, batch: &Batch<'_>) -> Result<SlotReport, BatchError> {
        if self.last_settled().is_some_and(|last| batch.slot <= last) {
            return Err(BatchError::AlreadySettled(batch.slot.0));
        }
        let ledger_before = self.previous_ledger();
        // A batch the chain marked past the erasure schedule: no key opens
        // its orders, each one is refused (as sealed to an erased epoch's
        // key); the rest clears. One not marked whose key is erased here
        // can not be cleared here (`MissingKey`).
        let erased = batch.expired;
        if !erased {
            self.enter(batch.epoch)?;
            // Every key before the entered epoch is gone: none is taken
            // again (see `add_key`).
            self.erased_below = self.erased_below.max(batch.epoch);
        }
        for (wallet, amount) in batch.deposits {
            self.deposit(*wallet, *amount)?;
        }
        self.params = batch.params;
        self.set_traders(batch.traders);
        for sealed in batch.orders {
            if erased {
                // Refused unopened, whatever key it was sealed to (one of a
                // later epoch too): every member answers it alike.
                self.refuse_unopened(sealed, Refusal::Dropped(DropReason::WrongEpoch));
                continue;
            }
            // A refusal is recorded for the receipt; nothing else to do here.
            let _ = self.submit(sealed);
        }
        let seed = match &self.key {
            Some(key) if !erased => key.receipt_seed(self.region, batch.slot),
            // Nothing opened: every receipt is in the clear, no secret needed.
            _ => public_seed(self.region, batch.slot),
        };
        // A batch with orders salts the ledger with its secret seed; one
        // without, with the public seed only: whether the chain marked it
        // expired before or after a member cleared it, its report is the
        // same (nothing opened), and so must the ledger's digest be.
        let salt = if batch.orders.is_empty() {
            public_seed(self.region, batch.slot)
        } else {
            seed
        };
        self.ledger_salt = hash::tagged(TAG_LEDGER_SALT, &[&self.ledger_salt, &salt]).0;
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed);
        let mut report = self.settle(batch.slot, &mut rng)?;
        for (wallet, amount) in batch.withdrawals {
            if report.summary.payouts.len() >= MAX_PAYOUTS {
                break;
            }
            if let Some(rest) = self.prepaid(wallet).checked_sub(*amount) {
                self.prepaid.insert(*wallet, rest);
                self.deposited = self.deposited.checked_sub(*amount).unwrap_or(Money::ZERO);
                report.summary.payouts.push((*wallet, *amount));
            }
        }
        report.summary.ledger = self.ledger_digest();
        report.summary.ledger_before = ledger_before;
        Ok(report)
    }

    /// The region it clears.
    pub fn region(&self) -> RegionId {
        self.region
    }

    /// The latest slot it settled.
    pub fn last_settled(&self) -> Option<Slot> {
        self.settled.last().copied()
    }

    /// A wallet's prepaid balance.
    pub fn prepaid(&self, wallet: &AccountId) -> Money {
        self.prepaid.get(wallet).copied().unwrap_or(Money::ZERO)
    }

    /// The sum of all prepaid balances and locked escrow (what custody holds).
    pub fn custody(&self) -> Money {
        let balances = self
            .prepaid
            .values()
            .map(|m| u128::from(m.get()))
            .sum::<u128>();
        let escrow = self
            .books
            .values()
            .flatten()
            .filter_map(|(_, r)| r.as_ref().ok())
            .map(|a| u128::from(a.escrow.get()))
            .sum::<u128>();
        Money::new(u64::try_from(balances + escrow).unwrap_or(u64::MAX))
    }

    /// Deposits through the chain less the payouts approved.
    pub fn deposited(&self) -> Money {
        self.deposited
    }

    /// Credits a deposit the chain moved into custody.
    ///
    /// # Errors
    /// [`Overflow`] if a balance would not fit.
    pub fn deposit(&mut self, wallet: AccountId, amount: Money) -> Result<(), Overflow> {
        let balance = self.prepaid(&wallet).checked_add(amount).ok_or(Overflow)?;
        let total = self.deposited.checked_add(amount).ok_or(Overflow)?;
        self.prepaid.insert(wallet, balance);
        self.deposited = total;
        Ok(())
    }

    /// Takes a sealed order from the chain. Every one gets a receipt at
    /// settlement; a refused one says why.
    pub fn submit(&mut self, sealed: &SealedOrder) -> Result<(), Refusal> {
        let digest = sealed_hash(sealed);
        let result = self.check(sealed);
        let slot = sealed.slot;
        let recorded = match result {
            Ok(accepted) => {
                let wallet = accepted.order.payload.wallet;
                let balance = self.prepaid(&wallet);
                // check() made sure the escrow fits the balance.
                self.prepaid.insert(
                    wallet,
                    balance.checked_sub(accepted.escrow).unwrap_or(Money::ZERO),
                );
                Ok(accepted)
            }
            Err(e) => Err(e),
        };
        let answer = recorded.as_ref().map(|_| ()).map_err(|(_, r)| *r);
        if !self.settled.contains(&slot) {
            self.books.entry(slot).or_default().push((digest, recorded));
        }
        answer
    }

    /// Records `sealed` as refused for `why` without opening it.
    fn refuse_unopened(&mut self, sealed: &SealedOrder, why: Refusal) {
        if !self.settled.contains(&sealed.slot) {
            self.books
                .entry(sealed.slot)
                .or_default()
                .push((sealed_hash(sealed), Err((None, why))));
        }
    }

    fn check(&self, sealed: &SealedOrder) -> Intake {
        if sealed.region != self.region {
            return Err((None, Refusal::WrongRegion));
        }
        if self.settled.contains(&sealed.slot) {
            return Err((None, Refusal::SlotSettled));
        }
        let order = self
            .key
            .as_ref()
            .ok_or(DropReason::WrongEpoch)
            .and_then(|k| k.open(sealed))
            .map_err(|e| (None, Refusal::from(e)))?;
        let p = order.payload;
        let wallet = Some((p.wallet, p.receipt_key));
        if p.chain != self.chain {
            return Err((wallet, Refusal::WrongChain));
        }
        let Some(cap) = self.traders.get(&p.wallet) else {
            return Err((wallet, Refusal::NotATrader));
        };
        // Also bounds what the clearing sums: sells by the traders' PV,
        // buys by the prepaid balances below.
        if p.side == Side::Sell && p.energy > *cap {
            return Err((wallet, Refusal::ExceedsCapacity));
        }
        if !self.params.admits(p.limit) {
            return Err((wallet, Refusal::LimitOutOfRange));
        }
        let duplicate = self.books.get(&sealed.slot).is_some_and(|book| {
            book.iter().any(|(_, r)| {
                r.as_ref().is_ok_and(|a| {
                    a.order.payload.wallet == p.wallet && a.order.payload.side == p.side
                })
            })
        });
        if duplicate {
            return Err((wallet, Refusal::Duplicate));
        }
        let escrow = match p.side {
            Side::Buy => p
                .energy
                .value_at(self.params.grid_tariff())
                .ok_or((wallet, Refusal::InsufficientPrepaid))?,
            Side::Sell => Money::ZERO,
        };
        if escrow > self.prepaid(&p.wallet) {
            return Err((wallet, Refusal::InsufficientPrepaid));
        }
        Ok(Accepted { order, escrow })
    }

    /// Clears `slot`: pays out, refunds unused escrow, and returns the report.
    ///
    /// # Errors
    /// [`BatchError`] if the clearing fails or a balance would overflow;
    /// then nothing changes (the book stays open, the slot unsettled).
    pub fn settle(
        &mut self,
        slot: Slot,
        rng: &mut impl rand_core::CryptoRng,
    ) -> Result<SlotReport, BatchError> {
        let ledger_before = self.previous_ledger();
        let book = self.books.get(&slot).cloned().unwrap_or_default();
        let accepted: Vec<&Accepted> = book.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
        let orders: Vec<Order> = accepted
            .iter()
            .map(|a| Order {
                side: a.order.payload.side,
                limit: a.order.payload.limit,
                energy: a.order.payload.energy,
            })
            .collect();
        let clearing = quartier_auction::clear(&self.params, &orders)?;
        // Every new balance is computed, and checked, before any is written.
        let mut balances: BTreeMap<AccountId, Money> = BTreeMap::new();
        for (a, result) in accepted.iter().zip(&clearing.orders) {
            let wallet = a.order.payload.wallet;
            // pays ≤ energy × grid tariff = escrow: the refund is never negative.
            let refund = a.escrow.checked_sub(result.pays).ok_or(Overflow)?;
            let credit = refund.checked_add(result.receives).ok_or(Overflow)?;
            let balance = balances
                .get(&wallet)
                .copied()
                .unwrap_or_else(|| self.prepaid(&wallet));
            balances.insert(wallet, balance.checked_add(credit).ok_or(Overflow)?);
        }
        let mut results = clearing.orders.iter();
        let mut receipts = Vec::with_capacity(book.len());
        for (digest, r) in &book {
            let (opened, outcome) = match r {
                Ok(a) => {
                    // One clearing result per accepted order, in order.
                    let res = results
                        .next()
                        .copied()
                        .unwrap_or(quartier_auction::OrderResult {
                            matched: quartier_types::Energy::ZERO,
                            to_grid: a.order.payload.energy,
                            pays: Money::ZERO,
                            receives: Money::ZERO,
                        });
                    let order = Order {
                        side: a.order.payload.side,
                        limit: a.order.payload.limit,
                        energy: a.order.payload.energy,
                    };
                    (
                        Some((a.order.payload.wallet, a.order.payload.receipt_key)),
                        Outcome::Cleared {
                            order,
                            matched: res.matched,
                            pays: res.pays,
                            receives: res.receives,
                        },
                    )
                }
                Err((opened, refusal)) => (*opened, Outcome::Refused(*refusal)),
            };
            let receipt = Receipt {
                sealed: *digest,
                wallet: opened.map(|(w, _)| w),
                outcome,
            };
            receipts.push(publish(receipt, opened.map(|(_, k)| k), rng));
        }
        // Checked; now write.
        self.books.remove(&slot);
        self.settled.insert(slot);
        self.prepaid.extend(balances);
        let prices = price_range(&clearing);
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(SlotReport {
            summary: SlotSummary {
                region: self.region,
                slot,
                receipts_root: receipts_root(&receipts),
                aggregates: Aggregates {
                    sealed: count(book.len()),
                    cleared: count(accepted.len()),
                    totals: clearing.totals,
                    prices,
                },
                payouts: Vec::new(),
                ledger: self.ledger_digest(),
                ledger_before,
            },
            receipts,
        })
    }
}

/// Seals `receipt` to `receipt_key` when the order opened (accepted or
/// refused: a refusal says something about its wallet too); a receipt of an
/// order that never opened, or whose receipt key HPKE refuses, is published
/// in clear without its wallet (in the second case its outcome is then
/// public: only a household that chose an invalid key can cause that).
fn publish(
    receipt: Receipt,
    receipt_key: Option<[u8; 32]>,
    rng: &mut impl rand_core::CryptoRng,
) -> PublishedReceipt {
    let sealed = receipt.sealed;
    let body = receipt_key
        .and_then(|to| {
            let plain = borsh::to_vec(&receipt).ok()?;
            let padded = crate::sealed::pad_to(&plain, RECEIPT_PADDED_LEN)?;
            hpke_seal(&to, HPKE_INFO_RECEIPT, &padded, &sealed.0, rng)
        })
        .map_or(
            ReceiptBody::Clear(Receipt {
                wallet: None,
                ..receipt
            }),
            |(encapped_key, ciphertext)| ReceiptBody::Sealed {
                encapped_key,
                ciphertext,
            },
        );
    PublishedReceipt { sealed, body }
}

fn price_range(clearing: &quartier_auction::Clearing) -> Option<PriceRange> {
    Some(PriceRange {
        min: clearing.trades.iter().map(|t| t.price).min()?,
        max: clearing.trades.iter().map(|t| t.price).max()?,
        mean: clearing.mean_price()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealed::{Epoch, HpkeKeyPair, OrderPayload, seal};
    use ed25519_dalek::SigningKey;
    use proptest::prelude::*;
    use quartier_types::{Energy, Price};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const CHF: u64 = 100_000_000;

    fn params() -> RegionParams {
        RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500)).unwrap()
    }

    fn wallet(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i + 1; 32])
    }

    fn id(k: &SigningKey) -> AccountId {
        AccountId(k.verifying_key().to_bytes())
    }

    struct Market {
        auctioneer: Auctioneer,
        public: [u8; 32],
        rng: ChaCha20Rng,
        /// Each wallet's receipt key (by wallet index).
        receipt_keys: Vec<HpkeKeyPair>,
    }

    fn market(seed: u8) -> Market {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let key = EpochKeyPair::generate(Epoch(1), &mut rng);
        let public = key.public_key();
        let receipt_keys = (0..6).map(|_| HpkeKeyPair::generate(&mut rng)).collect();
        let mut auctioneer = Auctioneer::new([0xc4; 32], RegionId(1), params(), key);
        // Every test wallet a meter of the region with 10 kWh of PV a slot.
        let traders: Vec<_> = (0..6)
            .map(|i| (id(&wallet(i)), Energy::new(10_000)))
            .collect();
        auctioneer.set_traders(&traders);
        Market {
            auctioneer,
            public,
            rng,
            receipt_keys,
        }
    }

    impl Market {
        fn sealed(
            &mut self,
            who: u8,
            slot: u64,
            side: Side,
            limit: u64,
            energy: u64,
        ) -> SealedOrder {
            let key = wallet(who);
            let payload = OrderPayload {
                chain: [0xc4; 32],
                wallet: id(&key),
                region: RegionId(1),
                slot: Slot(slot),
                epoch: Epoch(1),
                side,
                limit: Price::new(limit),
                energy: Energy::new(energy),
                receipt_key: self.receipt_keys[usize::from(who)].public_key(),
            };
            seal(
                &self.public,
                &SignedOrder::sign(payload, &key),
                &mut self.rng,
            )
            .unwrap()
        }

        fn settle(&mut self, slot: u64) -> SlotReport {
            self.auctioneer.settle(Slot(slot), &mut self.rng).unwrap()
        }

        /// What wallet `who` reads in receipt `i` of `report`.
        fn read(&self, report: &SlotReport, i: usize, who: u8) -> Option<Receipt> {
            report.receipts[i].open(&self.receipt_keys[usize::from(who)])
        }
    }

    #[test]
    fn keys_that_come_out_of_order_still_clear_their_epochs_and_entered_ones_never_return() {
        // A member that took a peer's state holds none of its keys; the
        // published ones come again one by one, the next epoch's first.
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let (two, three) = (
            EpochKeyPair::generate(Epoch(2), &mut rng),
            EpochKeyPair::generate(Epoch(3), &mut rng),
        );
        let mut a = Auctioneer::after_erasure([0xc4; 32], RegionId(1), params(), Epoch(1));
        a.add_key(three.duplicate());
        a.add_key(two.duplicate());
        let batch = |slot: u64, epoch: u64| Batch {
            slot: Slot(slot),
            params: params(),
            epoch: Epoch(epoch),
            deposits: &[],
            orders: &[],
            withdrawals: &[],
            traders: &[],
            expired: false,
        };
        a.clear_batch(&batch(8, 2)).unwrap();
        a.clear_batch(&batch(12, 3)).unwrap();
        // Epoch 2's key again (a slower region keeps it): not taken back.
        a.add_key(two.duplicate());
        assert_eq!(a.epochs(), vec![Epoch(3)]);
    }

    #[test]
    fn an_order_placed_on_another_chain_is_refused_here() {
        // A committee serving a test net and this chain: a household's order
        // on the test net (same epoch key, same wallet) is replayed here to
        // spend its prepaid balance on this chain.
        let mut m = market(4);
        let buyer = wallet(0);
        m.auctioneer.deposit(id(&buyer), Money::new(CHF)).unwrap();
        let payload = OrderPayload {
            chain: [0xee; 32],
            wallet: id(&buyer),
            region: RegionId(1),
            slot: Slot(7),
            epoch: Epoch(1),
            side: Side::Buy,
            limit: Price::new(20_000),
            energy: Energy::new(1_000),
            receipt_key: m.receipt_keys[0].public_key(),
        };
        let replayed = seal(&m.public, &SignedOrder::sign(payload, &buyer), &mut m.rng).unwrap();
        assert_eq!(m.auctioneer.submit(&replayed), Err(Refusal::WrongChain));
        assert_eq!(m.auctioneer.prepaid(&id(&buyer)), Money::new(CHF));
        let report = m.settle(7);
        assert_eq!(
            m.read(&report, 0, 0).unwrap().outcome,
            Outcome::Refused(Refusal::WrongChain)
        );
    }

    #[test]
    fn a_household_can_not_spend_more_than_it_prepaid() {
        let mut m = market(1);
        let buyer = wallet(0);
        m.auctioneer.deposit(id(&buyer), Money::new(CHF)).unwrap();
        // 5 kWh at up to 20.75 Rp locks 1.0375 CHF: more than the 1 CHF prepaid.
        let too_big = m.sealed(0, 7, Side::Buy, 20_000, 5_000);
        assert_eq!(
            m.auctioneer.submit(&too_big),
            Err(Refusal::InsufficientPrepaid)
        );
        let fits = m.sealed(0, 7, Side::Buy, 20_000, 4_000);
        assert_eq!(m.auctioneer.submit(&fits), Ok(()));
        // The second buy of the same wallet and slot is a duplicate.
        let again = m.sealed(0, 7, Side::Buy, 20_000, 10);
        assert_eq!(m.auctioneer.submit(&again), Err(Refusal::Duplicate));
        let report = m.settle(7);
        let outcomes: Vec<Outcome> = (0..3)
            .map(|i| m.read(&report, i, 0).unwrap().outcome)
            .collect();
        assert_eq!(outcomes[0], Outcome::Refused(Refusal::InsufficientPrepaid));
        assert!(matches!(outcomes[1], Outcome::Cleared { .. }));
        assert_eq!(outcomes[2], Outcome::Refused(Refusal::Duplicate));
        // The public (anyone may fetch the receipts) can not tell the
        // refused buys from the cleared one by their receipts' sizes.
        let sizes: Vec<usize> = report
            .receipts
            .iter()
            .map(|r| borsh::to_vec(r).unwrap().len())
            .collect();
        assert!(sizes.iter().all(|s| *s == sizes[0]), "{sizes:?}");
        // Unmatched, it bought 4 kWh from the grid at 20.75 Rp: 0.83 CHF.
        assert_eq!(
            m.auctioneer.prepaid(&id(&buyer)),
            Money::new(CHF - 4_000 * 20_750)
        );
        // A late order for a settled slot is refused.
        let late = m.sealed(0, 7, Side::Buy, 20_000, 10);
        assert_eq!(m.auctioneer.submit(&late), Err(Refusal::SlotSettled));
    }

    #[test]
    fn every_sealed_order_gets_a_receipt_that_verifies_against_the_root() {
        let mut m = market(2);
        m.auctioneer
            .deposit(id(&wallet(0)), Money::new(10 * CHF))
            .unwrap();
        let buy = m.sealed(0, 3, Side::Buy, 18_000, 900);
        let sell = m.sealed(1, 3, Side::Sell, 8_000, 600);
        let mut moved = m.sealed(1, 4, Side::Sell, 8_000, 600);
        moved.slot = Slot(3);
        for s in [&buy, &sell, &moved] {
            let _ = m.auctioneer.submit(s);
        }
        let report = m.settle(3);
        assert_eq!(report.receipts.len(), 3);
        assert_eq!(
            report.summary.receipts_root,
            receipts_root(&report.receipts)
        );
        // The buyer opens its own receipt, and only its own.
        let mine = m.read(&report, 0, 0).unwrap();
        assert_eq!(mine.sealed, sealed_hash(&buy));
        assert!(
            matches!(mine.outcome, Outcome::Cleared { matched, .. } if matched == Energy::new(600))
        );
        assert_eq!(
            m.read(&report, 1, 0),
            None,
            "the seller's receipt is not the buyer's"
        );
        assert!(m.read(&report, 1, 1).is_some());
        // The order that did not open gets a clear receipt naming no wallet.
        let clear = m.read(&report, 2, 5).unwrap();
        assert_eq!(clear.wallet, None);
        assert_eq!(
            clear.outcome,
            Outcome::Refused(Refusal::Dropped(DropReason::Undecryptable))
        );
        // The clearing is the transparent market's on the accepted orders.
        let rerun = quartier_auction::clear(
            &params(),
            &[
                Order {
                    side: Side::Buy,
                    limit: Price::new(18_000),
                    energy: Energy::new(900),
                },
                Order {
                    side: Side::Sell,
                    limit: Price::new(8_000),
                    energy: Energy::new(600),
                },
            ],
        )
        .unwrap();
        assert_eq!(report.summary.aggregates.totals, rerun.totals);
        // A receipt altered by anyone no longer matches the published root.
        let mut forged = report.receipts.clone();
        if let ReceiptBody::Sealed { ciphertext, .. } = &mut forged[0].body {
            ciphertext[0] ^= 1;
        }
        assert_ne!(receipts_root(&forged), report.summary.receipts_root);
        assert_eq!(forged[0].open(&m.receipt_keys[0]), None);
    }

    #[test]
    fn a_batch_that_fails_changes_nothing_and_clears_once_corrected() {
        let mut m = market(4);
        let (w0, w1) = (id(&wallet(0)), id(&wallet(1)));
        m.auctioneer.deposit(w0, Money::new(CHF)).unwrap();
        let orders = [m.sealed(0, 5, Side::Buy, 20_000, 1_000)];
        let traders = [(w0, Energy::ZERO), (w1, Energy::ZERO)];
        // A good deposit, then one that overflows: the batch fails whole (a
        // retry used to credit the good one twice).
        let deposits = [(w1, Money::new(CHF)), (w0, Money::MAX)];
        let batch = Batch {
            slot: Slot(5),
            params: params(),
            epoch: Epoch(1),
            deposits: &deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        };
        for _ in 0..2 {
            assert!(matches!(
                m.auctioneer.clear_batch(&batch),
                Err(BatchError::Overflow(_))
            ));
            assert_eq!(m.auctioneer.prepaid(&w1), Money::ZERO);
            assert_eq!(m.auctioneer.prepaid(&w0), Money::new(CHF));
            assert_eq!(m.auctioneer.last_settled(), None);
        }
        let corrected = Batch {
            deposits: &deposits[..1],
            ..batch
        };
        let report = m.auctioneer.clear_batch(&corrected).unwrap();
        assert_eq!(report.summary.aggregates.cleared, 1);
        assert_eq!(m.auctioneer.prepaid(&w1), Money::new(CHF));
        assert_eq!(m.auctioneer.last_settled(), Some(Slot(5)));
        // The same batch again (or an earlier one) is refused: its deposits
        // would be credited twice.
        assert_eq!(
            m.auctioneer.clear_batch(&corrected),
            Err(BatchError::AlreadySettled(5))
        );
        assert_eq!(m.auctioneer.prepaid(&w1), Money::new(CHF));
    }

    proptest! {
        /// After every slot, custody = deposits + Σ (sellers receive − buyers pay),
        /// and that net is what the utility and the DSO settle with the market.
        #[test]
        fn the_private_ledger_reconciles_with_deposits_after_every_slot(
            deposits in proptest::collection::vec(0u64..3 * CHF, 6),
            slots in proptest::collection::vec(
                proptest::collection::vec((0u8..6, any::<bool>(), 4_000u64..=20_750, 1u64..5_000), 0..10),
                1..5,
            ),
        ) {
            let mut m = market(3);
            for (w, d) in (0u8..).zip(&deposits) {
                m.auctioneer.deposit(id(&wallet(w)), Money::new(*d)).unwrap();
            }
            let mut net: i128 = 0;
            for (k, orders) in slots.iter().enumerate() {
                for (w, buy, limit, energy) in orders {
                    let side = if *buy { Side::Buy } else { Side::Sell };
                    let s = m.sealed(*w, k as u64, side, *limit, *energy);
                    let _ = m.auctioneer.submit(&s);
                }
                let report = m.settle(k as u64);
                let t = report.summary.aggregates.totals;
                prop_assert!(t.is_balanced());
                let slot_net = i128::from(t.sellers_receive.get()) - i128::from(t.buyers_pay.get());
                prop_assert_eq!(
                    slot_net,
                    i128::from(t.utility_buys.get()) - i128::from(t.utility_sells.get()) - i128::from(t.dso_fees.get())
                );
                net += slot_net;
                let custody = i128::from(m.auctioneer.custody().get());
                prop_assert_eq!(custody, i128::from(m.auctioneer.deposited().get()) + net);
            }
        }
    }

    #[test]
    fn a_signed_report_verifies_and_an_altered_one_does_not() {
        use crate::committee::{CommitteeError, generate, report_message, sign};
        use crate::sealed::{Epoch, EpochKeyPair};
        use quartier_types::{Energy, Price, RegionId, RegionParams, Slot};
        use rand_chacha::ChaCha20Rng;
        use rand_core::SeedableRng;
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let (members, group) = generate(3, 2, &mut rng).unwrap();
        let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap();
        let key = EpochKeyPair::generate(Epoch(1), &mut rng);
        let report = Auctioneer::new([0xc4; 32], RegionId(1), params, key)
            .settle(Slot(5), &mut rng)
            .unwrap();
        let sig = sign(
            &[&members[2], &members[0]],
            &group,
            &report_message(&[0xc4; 32], &report.summary),
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            group.verify(&report_message(&[0xc4; 32], &report.summary), &sig),
            Ok(())
        );
        let mut altered = report.clone();
        altered.summary.aggregates.totals.local_energy = Energy::new(1);
        assert_eq!(
            group.verify(&report_message(&[0xc4; 32], &altered.summary), &sig),
            Err(CommitteeError::InvalidSignature)
        );
        let mut other_slot = report;
        other_slot.summary.slot = Slot(6);
        assert_eq!(
            group.verify(&report_message(&[0xc4; 32], &other_slot.summary), &sig),
            Err(CommitteeError::InvalidSignature)
        );
    }
}
