//! A household's shielded wallet (privacy mode A), as a light client: it
//! scans pool outputs with its view keys locally (the node serves outputs
//! and never learns which are whose), keeps the outputs it found, and builds
//! shielded orders — funds from its outputs with decoys drawn over the whole
//! pool by one age distribution ([`crate::decoys`]), none of which an
//! observer of public amounts can rule out, change back to itself, and a fresh
//! payee address per slot and side, derived from its seed, so it finds the
//! settlement's payment while no one can link two of its orders.
//!
//! A wallet restored from its seed finds the same outputs: those to its main
//! address by the view key, and settlement payments by the payee keys of the
//! slot the pool names for them ([`PoolOutput::settles`]); which of them are
//! spent it learns from the chain's key images.

use crate::decoys::{AgeDistribution, PoolIndex};
use quartier_ledger::{
    Allowance, ChainId, MAX_SHIELDED_INPUTS, PoolOutput, ShieldedInput, ShieldedOrder,
    ShieldedTransfer, scope, side_byte,
};
use quartier_shielded::authorise::{self, Authorisation, PURPOSE_TRANSFER, Scope};
use quartier_shielded::keys::{Address, ViewKey, WalletKeys};
use quartier_shielded::output::{Output, Received, create};
use quartier_shielded::range;
use quartier_shielded::spend::{self, Input, RingMember, key_image};
use quartier_types::hash;
use quartier_types::{AccountId, Energy, Money, Price, RegionId, RegionParams, Side, Slot};
use rand_core::CryptoRng;
use std::collections::{BTreeMap, BTreeSet};

/// Domain tag of a per-order payee seed.
pub const TAG_PAYEE: &str = "QUARTIER_METER_SHIELDED_PAYEE";

/// Why the wallet can not build an order or a transfer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// Its unspent outputs (at most [`MAX_SHIELDED_INPUTS`] of them) do not
    /// cover the amount.
    #[error("no {MAX_SHIELDED_INPUTS} unspent outputs cover {needed:?}")]
    InsufficientFunds {
        /// The amount needed.
        needed: Money,
    },
    /// The pool has too few outputs a ring could take as decoys.
    #[error("the pool has too few outputs for a ring of {0}")]
    PoolTooSmall(usize),
    /// The meter is not in the ring, or a proof could not be made.
    #[error("can not sign: {0}")]
    Signing(&'static str),
}

/// The keys of `payee` of the wallet with secret `seed`: its own, or those
/// of the payee address its order of a slot and side names.
fn payee_keys(seed: &[u8; 32], payee: Payee) -> WalletKeys {
    match payee {
        Payee::Main => WalletKeys::from_seed(seed),
        Payee::Order { slot, side } => {
            let seed = hash::tagged(
                TAG_PAYEE,
                &[seed, &slot.0.to_le_bytes(), &[side_byte(side)]],
            );
            WalletKeys::from_seed(&seed.0)
        }
    }
}

/// The payee address the order of `slot` and `side` of the wallet with
/// secret `seed` names (who knows the seed knows whose order it is).
pub fn payee_address(seed: &[u8; 32], slot: Slot, side: Side) -> Address {
    payee_keys(seed, Payee::Order { slot, side }).address()
}

/// Who an output was paid to: the main address, or the payee an order of
/// `slot` and side named.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Payee {
    /// The wallet's main address (shielded top-ups, change).
    Main,
    /// The proceeds or refund of the wallet's order in a slot.
    Order {
        /// The slot settled.
        slot: Slot,
        /// The order's side.
        side: Side,
    },
}

/// Where an output of the wallet stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spending {
    /// Spendable.
    Unspent,
    /// Spent by a transaction not yet final (see [`ShieldedWallet::confirm`]).
    Pending(Slot, Side),
    /// Its key image is on chain.
    Spent,
}

/// An output the wallet found.
struct Owned {
    output: Output,
    received: Received,
    payee: Payee,
    key_image: [u8; 32],
    state: Spending,
    /// The ring it was first offered in: a re-spend (after a given-up
    /// transaction that others may have seen) offers the same ring, so no
    /// one can intersect two rings with one key image to find it.
    ring: Option<Vec<u64>>,
}

/// One line of a wallet's history: an output it found and its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its pool index.
    pub index: u64,
    /// Its amount.
    pub amount: Money,
    /// Who it was paid to.
    pub payee: Payee,
    /// Its key image (what a spend of it publishes).
    pub key_image: [u8; 32],
    /// Whether it is spent.
    pub state: Spending,
}

/// How an order is placed: the market side of it.
#[derive(Clone, Copy, Debug)]
pub struct OrderRequest {
    /// The region.
    pub region: RegionId,
    /// Its parameters (the book's, if open).
    pub params: RegionParams,
    /// The slot.
    pub slot: Slot,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub limit: Price,
    /// Energy (zero for a cover order).
    pub energy: Energy,
}

/// Who authorises an order or a transfer: the meter's Ed25519 scalar and
/// the ring (`quartier_ledger::meter_ring` of the order's side and energy,
/// in that order) it is in.
pub struct MeterRing<'a> {
    /// The meter's `SigningKey::to_scalar()` bytes.
    pub scalar: [u8; 32],
    /// Its own registered key.
    pub key: [u8; 32],
    /// The ring's keys.
    pub ring: &'a [[u8; 32]],
}

impl MeterRing<'_> {
    /// Signs `message` as this meter over its ring for `scope`.
    fn authorise(
        &self,
        scope: &Scope,
        message: [u8; 32],
        rng: &mut impl CryptoRng,
    ) -> Result<Authorisation, WalletError> {
        let real = self
            .ring
            .iter()
            .position(|k| *k == self.key)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(WalletError::Signing("meter not in its ring"))?;
        authorise::sign(&self.scalar, self.ring, real, scope, message, rng)
            .map_err(|_| WalletError::Signing("authorisation"))
    }

    /// The meter's allowance of `slot` in `region` for the transfer whose
    /// prefix (signed by the one-time key) is `message`: one per slot.
    ///
    /// # Errors
    /// [`WalletError::Signing`] if the meter is not in its ring.
    pub fn allowance(
        &self,
        chain_id: ChainId,
        (region, slot): (RegionId, Slot),
        message: [u8; 32],
        rng: &mut impl CryptoRng,
    ) -> Result<Allowance, WalletError> {
        let authorisation = self.authorise(
            &scope(chain_id, region, slot, PURPOSE_TRANSFER),
            message,
            rng,
        )?;
        Ok(Allowance {
            region,
            slot,
            authorisation,
        })
    }
}

/// How the wallet draws its rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingPolicy {
    /// Members of a funds ring (the chain's `ShieldedPolicy::ring_size`).
    pub ring_size: usize,
}

/// The funds part of a transaction, unsigned, with its secrets.
struct Funding {
    transfer: ShieldedTransfer,
    inputs: Vec<Input>,
    masks: curve25519_dalek::Scalar,
    change: Received,
    /// The inputs' pool indices with their rings.
    spent: Vec<(u64, Vec<u64>)>,
}

/// A household's shielded wallet.
pub struct ShieldedWallet {
    seed: [u8; 32],
    keys: WalletKeys,
    view: ViewKey,
    policy: RingPolicy,
    /// Outputs found, by pool index.
    owned: BTreeMap<u64, Owned>,
    /// Every pool output scanned, to draw decoys from.
    pool: PoolIndex,
    /// The age distribution of ring members.
    ages: AgeDistribution,
    /// The next pool index to scan.
    scanned: u64,
    /// The payee view keys of the last slot whose payments were scanned.
    payees: Option<(Slot, [ViewKey; 2])>,
}

impl ShieldedWallet {
    /// The wallet of a secret seed; restoring from it finds its outputs.
    pub fn from_seed(seed: [u8; 32], policy: RingPolicy) -> ShieldedWallet {
        let keys = WalletKeys::from_seed(&seed);
        ShieldedWallet {
            view: keys.view_key(),
            keys,
            seed,
            policy,
            owned: BTreeMap::new(),
            pool: PoolIndex::new(),
            ages: AgeDistribution::new(),
            scanned: 0,
            payees: None,
        }
    }

    /// Its main address (for shielding and change).
    pub fn address(&self) -> Address {
        self.keys.address()
    }

    /// The next pool index it has not scanned.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// The sum of its unspent outputs.
    pub fn balance(&self) -> Money {
        Money::new(
            self.owned
                .values()
                .filter(|o| o.state == Spending::Unspent)
                .map(|o| o.received.amount)
                .sum(),
        )
    }

    /// Every output it found, by pool index.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.owned
            .iter()
            .map(|(index, o)| HistoryEntry {
                index: *index,
                amount: Money::new(o.received.amount),
                payee: o.payee,
                key_image: o.key_image,
                state: o.state,
            })
            .collect()
    }

    /// The payee an order of `slot` and `side` names.
    pub fn payee_address(&self, slot: Slot, side: Side) -> Address {
        payee_address(&self.seed, slot, side)
    }

    fn keys_of(&self, payee: Payee) -> WalletKeys {
        payee_keys(&self.seed, payee)
    }

    /// Scans the pool outputs at `from, from + 1, …` (a page of
    /// `GET /api/v1/pool/outputs`) for its own: to the main address, or a
    /// settlement's payment to the payee of its order in the settled slot.
    /// Pages must come in order; a page already scanned is skipped.
    pub fn scan(&mut self, from: u64, outputs: &[PoolOutput]) {
        let skip = self.scanned.saturating_sub(from);
        if from > self.scanned {
            return;
        }
        for (index, pool) in (from..)
            .zip(outputs)
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        {
            let found = match (self.view.scan(&pool.output), pool.settles) {
                (Some(received), _) => Some((Payee::Main, received)),
                (None, Some(slot)) => self.scan_payment(slot, &pool.output),
                (None, None) => None,
            };
            if let Some((payee, received)) = found
                && let Some(x) = self.keys_of(payee).one_time_secret(&pool.output)
            {
                self.owned.insert(
                    index,
                    Owned {
                        output: pool.output,
                        received,
                        payee,
                        key_image: key_image(&x),
                        state: Spending::Unspent,
                        ring: None,
                    },
                );
            }
            self.pool.push(pool);
            self.scanned = index + 1;
        }
    }

    fn scan_payment(&mut self, slot: Slot, output: &Output) -> Option<(Payee, Received)> {
        if self.payees.as_ref().is_none_or(|(s, _)| *s != slot) {
            let view = |side| self.keys_of(Payee::Order { slot, side }).view_key();
            self.payees = Some((slot, [view(Side::Buy), view(Side::Sell)]));
        }
        let (_, views) = self.payees.as_ref()?;
        [Side::Buy, Side::Sell]
            .into_iter()
            .zip(views)
            .find_map(|(side, v)| v.scan(output).map(|r| (Payee::Order { slot, side }, r)))
    }

    /// Marks outputs whose key image is in `images` (key images on chain,
    /// as `GET /api/v1/pool/key_images` serves them) as spent.
    pub fn mark_spent(&mut self, images: &BTreeSet<[u8; 32]>) {
        for o in self.owned.values_mut() {
            if images.contains(&o.key_image) {
                o.state = Spending::Spent;
            }
        }
    }

    /// The transaction of `slot` and `side` is final: its inputs are spent.
    pub fn confirm(&mut self, slot: Slot, side: Side) {
        self.settle_pending(slot, side, Spending::Spent);
    }

    /// The transaction of `slot` and `side` will never be final: its inputs
    /// are spendable again.
    pub fn release(&mut self, slot: Slot, side: Side) {
        self.settle_pending(slot, side, Spending::Unspent);
    }

    /// Settles the inputs of given-up transactions by the chain's key images
    /// (`images`, read after the chain's time passed the close of every slot
    /// `closed` accepts): spent if their image is there, spendable again if
    /// not. A node's refusal is not final — another leader's block may hold
    /// the transaction — so a given-up transaction's inputs stay pending
    /// until the chain can no longer take it.
    pub fn settle_given_up(&mut self, images: &BTreeSet<[u8; 32]>, closed: impl Fn(Slot) -> bool) {
        for o in self.owned.values_mut() {
            match o.state {
                Spending::Pending(..) if images.contains(&o.key_image) => {
                    o.state = Spending::Spent;
                }
                Spending::Pending(slot, _) if closed(slot) => o.state = Spending::Unspent,
                _ => {}
            }
        }
    }

    /// Whether inputs of a transaction of a slot `closed` accepts still wait
    /// for [`settle_given_up`](Self::settle_given_up).
    pub fn awaits_key_images(&self, closed: impl Fn(Slot) -> bool) -> bool {
        self.owned
            .values()
            .any(|o| matches!(o.state, Spending::Pending(slot, _) if closed(slot)))
    }

    fn settle_pending(&mut self, slot: Slot, side: Side, to: Spending) {
        for o in self.owned.values_mut() {
            if o.state == Spending::Pending(slot, side) {
                o.state = to;
            }
        }
    }

    /// Builds a shielded order for the one-time key `signer` to sign. Its
    /// inputs wait as pending until [`confirm`](Self::confirm) or
    /// [`release`](Self::release); its change arrives when scanned.
    ///
    /// # Errors
    /// [`WalletError`] if its outputs do not cover the escrow, the window is
    /// too small for a ring, or the meter is not in its ring.
    pub fn order(
        &mut self,
        (chain_id, signer): (ChainId, AccountId),
        request: &OrderRequest,
        meter: &MeterRing<'_>,
        rng: &mut impl CryptoRng,
    ) -> Result<ShieldedOrder, WalletError> {
        let r = request;
        let escrow = match r.side {
            Side::Buy => r
                .energy
                .value_at(r.params.grid_tariff())
                .ok_or(WalletError::InsufficientFunds { needed: Money::MAX })?,
            Side::Sell => Money::ZERO,
        };
        let funding = if escrow.is_zero() {
            None
        } else {
            Some(self.funding((escrow, escrow), r.slot, rng)?)
        };
        let mut order = ShieldedOrder {
            region: r.region,
            slot: r.slot,
            side: r.side,
            limit: r.limit,
            energy: r.energy,
            funds: None,
            payee: self.payee_address(r.slot, r.side),
            authorisation: Authorisation {
                key_image: [0; 32],
                pseudo_out: [0; 32],
                signature: Vec::new(),
            },
        };
        let mut spent = Vec::new();
        if let Some(f) = funding {
            order.funds = Some(f.transfer);
            let message = order.prefix_hash((chain_id, signer), escrow);
            if let Some(funds) = order.funds.as_mut() {
                sign_inputs(funds, f.inputs, &f.masks, message, rng)?;
            }
            spent = f.spent;
        }
        let message = order.prefix_hash((chain_id, signer), escrow);
        let scope = scope(chain_id, r.region, r.slot, side_byte(r.side));
        order.authorisation = meter.authorise(&scope, message, rng)?;
        self.mark_pending(&spent, r.slot, r.side);
        Ok(order)
    }

    /// Builds a transfer of `amount` out of the pool (an unshield to a
    /// transparent account, `public` = `amount`) or, with `public` zero, to
    /// `to`, in `slot` (its ring members' ages count from it; its inputs
    /// wait as pending under `(slot, side)`). `message` hashes the
    /// transfer's content, as the ledger does.
    ///
    /// # Errors
    /// [`WalletError`] as for [`order`](Self::order).
    pub fn transfer(
        &mut self,
        amount: Money,
        to: Option<&Address>,
        message: impl Fn(&ShieldedTransfer) -> [u8; 32],
        (slot, side): (Slot, Side),
        rng: &mut impl CryptoRng,
    ) -> Result<ShieldedTransfer, WalletError> {
        // A shielded payment's amount is hidden; an unshield's is public.
        let public = if to.is_some() { Money::ZERO } else { amount };
        let mut f = self.funding((amount, public), slot, rng)?;
        if let Some(to) = to {
            let (output, received) =
                create(to, amount.get(), rng).map_err(|_| WalletError::Signing("payment"))?;
            let openings = vec![f.change.opening(), received.opening()];
            f.masks += curve25519_dalek::Scalar::from_bytes_mod_order(*received.mask);
            f.transfer.outputs.push(output);
            f.transfer.range_proof =
                range::prove(openings, rng).map_err(|_| WalletError::Signing("range proof"))?;
        }
        let m = message(&f.transfer);
        sign_inputs(&mut f.transfer, f.inputs, &f.masks, m, rng)?;
        self.mark_pending(&f.spent, slot, side);
        Ok(f.transfer)
    }

    fn mark_pending(&mut self, spent: &[(u64, Vec<u64>)], slot: Slot, side: Side) {
        for (index, ring) in spent {
            if let Some(o) = self.owned.get_mut(index) {
                o.state = Spending::Pending(slot, side);
                o.ring.get_or_insert_with(|| ring.clone());
            }
        }
    }

    /// Picks inputs covering `amount`: the smallest single output that does,
    /// else the largest ones (at most [`MAX_SHIELDED_INPUTS`]).
    fn select(&self, amount: Money) -> Result<Vec<u64>, WalletError> {
        let unspent: Vec<(u64, u64)> = self
            .owned
            .iter()
            .filter(|(_, o)| o.state == Spending::Unspent)
            .map(|(i, o)| (*i, o.received.amount))
            .collect();
        if let Some((i, _)) = unspent
            .iter()
            .filter(|(_, a)| *a >= amount.get())
            .min_by_key(|(_, a)| *a)
        {
            return Ok(vec![*i]);
        }
        let mut by_size = unspent;
        by_size.sort_unstable_by_key(|(_, a)| std::cmp::Reverse(*a));
        let mut total = 0u64;
        let mut picked = Vec::new();
        for (i, a) in by_size.into_iter().take(MAX_SHIELDED_INPUTS) {
            total = total.saturating_add(a);
            picked.push(i);
            if total >= amount.get() {
                return Ok(picked);
            }
        }
        Err(WalletError::InsufficientFunds { needed: amount })
    }

    /// The funds of a transaction of slot `now` paying `amount` out, of which
    /// `public` shows on chain: inputs with rings, change back to the main
    /// address, unsigned.
    fn funding(
        &self,
        (amount, public): (Money, Money),
        now: Slot,
        rng: &mut impl CryptoRng,
    ) -> Result<Funding, WalletError> {
        let spent = self.select(amount)?;
        let held: Vec<u64> = spent
            .iter()
            .map(|i| self.owned.get(i).map(|o| o.received.amount))
            .collect::<Option<_>>()
            .ok_or(WalletError::Signing("not our output"))?;
        let total: u64 = held.iter().sum();
        let mut inputs = Vec::new();
        let mut shielded_inputs = Vec::new();
        let mut rings = Vec::new();
        for (j, index) in spent.iter().enumerate() {
            let owned = self
                .owned
                .get(index)
                .ok_or(WalletError::Signing("not our output"))?;
            // What this input must show it could hold, given the others'
            // real amounts: a decoy with less in public would be ruled out
            // by an observer of public amounts (`linking::amount_consistent`).
            let others = total - held.get(j).copied().unwrap_or(0);
            let need = public.get().saturating_sub(others);
            let (ring, members, real) = self.ring_for(*index, owned, need, now, rng)?;
            rings.push(ring.clone());
            let x = self
                .keys_of(owned.payee)
                .one_time_secret(&owned.output)
                .ok_or(WalletError::Signing("not our output"))?;
            shielded_inputs.push(ShieldedInput {
                ring,
                key_image: owned.key_image,
                pseudo_out: [0; 32],
                signature: Vec::new(),
            });
            inputs.push(Input {
                secret: x,
                opening: owned.received.opening(),
                ring: members,
                real,
            });
        }
        let change = total - amount.get();
        let (change_output, change_secret) =
            create(&self.address(), change, rng).map_err(|_| WalletError::Signing("change"))?;
        let range_proof = range::prove(vec![change_secret.opening()], rng)
            .map_err(|_| WalletError::Signing("range proof"))?;
        Ok(Funding {
            transfer: ShieldedTransfer {
                inputs: shielded_inputs,
                outputs: vec![change_output],
                range_proof,
            },
            inputs,
            masks: curve25519_dalek::Scalar::from_bytes_mod_order(*change_secret.mask),
            change: change_secret,
            spent: spent.into_iter().zip(rings).collect(),
        })
    }

    /// A ring for the output at `index` spent in slot `now`: it and
    /// `ring_size − 1` decoys drawn over the whole pool by the shared age
    /// distribution, none with a public amount below `need`, ascending.
    fn ring_for(
        &self,
        index: u64,
        owned: &Owned,
        need: u64,
        now: Slot,
        rng: &mut impl CryptoRng,
    ) -> Result<(Vec<u64>, Vec<RingMember>, u8), WalletError> {
        let size = self.policy.ring_size;
        let admissible = |i: u64| self.pool.public_amount(i).is_none_or(|a| a >= need);
        let ring = match &owned.ring {
            Some(r) if r.len() == size && r.contains(&index) => r.clone(),
            _ => self
                .ages
                .ring(&self.pool, now, index, size, admissible, rng)
                .map_err(|_| WalletError::PoolTooSmall(size))?,
        };
        let real = ring
            .iter()
            .position(|i| *i == index)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(WalletError::Signing("ring"))?;
        let members = ring
            .iter()
            .map(|i| {
                if *i == index {
                    Some(RingMember {
                        key: owned.output.key,
                        commitment: owned.output.commitment,
                    })
                } else {
                    self.pool.member(*i)
                }
            })
            .collect::<Option<_>>()
            .ok_or(WalletError::PoolTooSmall(size))?;
        Ok((ring, members, real))
    }
}

/// Signs a transfer's inputs over `message` and writes the signatures in.
fn sign_inputs(
    transfer: &mut ShieldedTransfer,
    inputs: Vec<Input>,
    masks: &curve25519_dalek::Scalar,
    message: [u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<(), WalletError> {
    let signed =
        spend::sign(inputs, masks, message, rng).map_err(|_| WalletError::Signing("funds"))?;
    if signed.len() != transfer.inputs.len() {
        return Err(WalletError::Signing("funds"));
    }
    for (input, s) in transfer.inputs.iter_mut().zip(signed) {
        input.pseudo_out = s.pseudo_out;
        input.signature = s.signature;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use quartier_ledger::{
        BlockContext, Genesis, MeterRole, ShieldedPolicy, State, Tx, TxBody, execute_block,
        meter_ring,
    };
    use quartier_types::{AccountId, Height, Timestamp};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;
    use std::collections::BTreeSet;

    const CHF: u64 = 100_000_000;
    const R1: RegionId = RegionId(1);
    const POLICY: RingPolicy = RingPolicy { ring_size: 4 };

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    fn id(k: &SigningKey) -> AccountId {
        AccountId(k.verifying_key().to_bytes())
    }

    struct Chain {
        state: State,
        height: u64,
        time: u64,
    }

    impl Chain {
        fn block(&mut self, time: u64, txs: Vec<quartier_ledger::SignedTx>) {
            self.height += 1;
            self.time = time;
            let ctx = BlockContext {
                height: Height(self.height),
                time: Timestamp(time),
            };
            let out = execute_block(&mut self.state, &ctx, txs).unwrap();
            for r in out.results {
                r.unwrap();
            }
        }

        fn tx(&self, k: &SigningKey, body: TxBody) -> quartier_ledger::SignedTx {
            Tx {
                chain_id: self.state.chain_id(),
                signer: id(k),
                nonce: self.state.account(&id(k)).nonce,
                body,
            }
            .sign(k)
        }

        fn pool(&self) -> Vec<PoolOutput> {
            self.state.pool().to_vec()
        }
    }

    fn params() -> RegionParams {
        RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap()
    }

    #[test]
    fn a_wallet_pays_an_order_and_finds_its_change_refund_and_proceeds() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let (dso, utility) = (key(1), key(2));
        let genesis = Genesis {
            regions: vec![(R1, params())],
            allocations: vec![(id(&utility), Money::new(1_000 * CHF))],
            shielded: Some(ShieldedPolicy { ring_size: 4 }),
            ..Genesis::new("wallet-test", id(&dso), id(&utility), vec![id(&key(3))])
        };
        let mut c = Chain {
            state: State::from_genesis(genesis).unwrap(),
            height: 0,
            time: 0,
        };
        let (buyer_meter, seller_meter) = (key(10), key(11));
        let regs = vec![c.tx(
            &dso,
            TxBody::RegisterMeter {
                meter: id(&buyer_meter),
                region: R1,
                role: MeterRole::Consumer,
                pv_watts: 0,
            },
        )];
        c.block(1, regs);
        let regs = vec![c.tx(
            &dso,
            TxBody::RegisterMeter {
                meter: id(&seller_meter),
                region: R1,
                role: MeterRole::Prosumer,
                pv_watts: 4_000,
            },
        )];
        c.block(2, regs);
        let mut buyer = ShieldedWallet::from_seed([20; 32], POLICY);
        let mut seller = ShieldedWallet::from_seed([21; 32], POLICY);
        let decoy = WalletKeys::from_seed(&[22; 32]);
        for (to, amount) in [
            (decoy.address(), CHF),
            (decoy.address(), CHF),
            (decoy.address(), CHF),
            (buyer.address(), 10 * CHF),
        ] {
            let (output, received) = create(&to, amount, &mut rng).unwrap();
            let tx = c.tx(
                &utility,
                TxBody::Shield {
                    amount: Money::new(amount),
                    output,
                    mask: *received.mask,
                },
            );
            let t = c.time + 1;
            c.block(t, vec![tx]);
        }
        buyer.scan(0, &c.pool());
        assert_eq!(buyer.balance(), Money::new(10 * CHF));
        assert_eq!(buyer.scanned(), 4);

        let slot = Slot(1);
        let request = |side, energy| OrderRequest {
            region: R1,
            params: params(),
            slot,
            side,
            limit: Price::new(if side == Side::Buy { 15_000 } else { 10_000 }),
            energy: Energy::new(energy),
        };
        let ring_of = |side, energy| -> Vec<[u8; 32]> {
            meter_ring(&c.state, R1, side, Energy::new(energy))
                .iter()
                .map(|(a, _)| a.0)
                .collect()
        };
        let (buy_ring, sell_ring) = (ring_of(Side::Buy, 0), ring_of(Side::Sell, 600));
        let signer = |seed: u8| Tx::one_time_signer(&[seed; 32]);
        let buy = buyer
            .order(
                (c.state.chain_id(), signer(40)),
                &request(Side::Buy, 1_000),
                &MeterRing {
                    scalar: buyer_meter.to_scalar().to_bytes(),
                    key: id(&buyer_meter).0,
                    ring: &buy_ring,
                },
                &mut rng,
            )
            .unwrap();
        assert_eq!(
            buyer.balance(),
            Money::ZERO,
            "the spent output left the wallet"
        );
        let sell = seller
            .order(
                (c.state.chain_id(), signer(41)),
                &request(Side::Sell, 600),
                &MeterRing {
                    scalar: seller_meter.to_scalar().to_bytes(),
                    key: id(&seller_meter).0,
                    ring: &sell_ring,
                },
                &mut rng,
            )
            .unwrap();
        // Too little money, or a meter outside its ring: refused by the wallet.
        let mut poor = ShieldedWallet::from_seed([23; 32], POLICY);
        assert_eq!(
            poor.order(
                (c.state.chain_id(), signer(42)),
                &request(Side::Buy, 1_000),
                &MeterRing {
                    scalar: buyer_meter.to_scalar().to_bytes(),
                    key: id(&buyer_meter).0,
                    ring: &buy_ring
                },
                &mut rng,
            )
            .err(),
            Some(WalletError::InsufficientFunds {
                needed: Money::new(20_750_000)
            })
        );
        let txs = vec![
            Tx::one_time(
                c.state.chain_id(),
                TxBody::PlaceShieldedOrder { order: buy },
                &[40; 32],
            ),
            Tx::one_time(
                c.state.chain_id(),
                TxBody::PlaceShieldedOrder { order: sell },
                &[41; 32],
            ),
        ];
        c.block(900_000 + 1, txs);
        // After the gate the settlement pays into the pool.
        c.block(2 * 900_000 + 60_000, vec![]);
        let from = buyer.scanned();
        let new: Vec<PoolOutput> = c.pool()[from as usize..].to_vec();
        buyer.scan(from, &new);
        buyer.confirm(slot, Side::Buy);
        seller.scan(0, &c.pool());
        let s = c.state.settlement(R1, slot).unwrap();
        let (b, se) = (s.clearing.orders[0], s.clearing.orders[1]);
        let escrow = 20_750_000;
        assert_eq!(
            buyer.balance().get(),
            (10 * CHF - escrow) + (escrow - b.pays.get()),
            "change plus refund"
        );
        assert_eq!(seller.balance(), se.receives);
        assert!(se.receives.get() > 0);
        let payees: Vec<Payee> = buyer.history().iter().map(|h| h.payee).collect();
        assert_eq!(
            payees,
            vec![
                Payee::Main,
                Payee::Main,
                Payee::Order {
                    slot,
                    side: Side::Buy
                }
            ],
            "top-up, change, refund"
        );
        assert_eq!(buyer.history()[0].state, Spending::Spent);

        // Restored from their seeds, the wallets find exactly the same
        // outputs, and the chain's key images tell which are spent.
        let images: BTreeSet<[u8; 32]> = c.state.key_images_after(None).copied().collect();
        for (seed, wallet) in [([20; 32], &buyer), ([21; 32], &seller)] {
            let mut restored = ShieldedWallet::from_seed(seed, POLICY);
            for page in c.pool().chunks(2).enumerate() {
                restored.scan(2 * page.0 as u64, page.1);
            }
            restored.mark_spent(&images);
            assert_eq!(restored.history(), wallet.history());
            assert_eq!(restored.balance(), wallet.balance());
        }

        // The buyer pays a friend 1 CHF inside the pool: the friend finds
        // exactly that, the buyer its change.
        let friend_seed = [24; 32];
        let friend_address = ShieldedWallet::from_seed(friend_seed, POLICY).address();
        let before = buyer.balance();
        let chain_id = c.state.chain_id();
        let tag = (Slot(0), Side::Buy);
        let message = |t: &ShieldedTransfer| {
            let kind = quartier_ledger::KIND_TRANSFER;
            t.prefix_hash((chain_id, signer(43)), kind, Money::ZERO, None)
        };
        let transfer = buyer
            .transfer(
                Money::new(CHF),
                Some(&friend_address),
                message,
                tag,
                &mut rng,
            )
            .unwrap();
        // The buyer's meter allows it, once in this slot.
        let now = c.state.genesis().slot_at(Timestamp(c.time));
        let allowance = MeterRing {
            scalar: buyer_meter.to_scalar().to_bytes(),
            key: id(&buyer_meter).0,
            ring: &buy_ring,
        }
        .allowance(chain_id, (R1, now), message(&transfer), &mut rng)
        .unwrap();
        let body = TxBody::ShieldedTransfer {
            transfer,
            allowance,
        };
        let tx = Tx::one_time(chain_id, body, &[43; 32]);
        let t = c.time + 1;
        c.block(t, vec![tx]);
        buyer.confirm(tag.0, tag.1);
        let from = buyer.scanned();
        buyer.scan(from, &c.pool()[from as usize..]);
        let mut friend = ShieldedWallet::from_seed(friend_seed, POLICY);
        friend.scan(0, &c.pool());
        assert_eq!(friend.balance(), Money::new(CHF));
        assert_eq!(buyer.balance().get(), before.get() - CHF);
    }

    #[test]
    fn a_released_order_gives_its_inputs_back_and_several_outputs_pay_one_escrow() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let mut wallet = ShieldedWallet::from_seed([30; 32], POLICY);
        let decoy = WalletKeys::from_seed(&[31; 32]);
        let mut pool = Vec::new();
        for (to, amount) in [
            (decoy.address(), CHF),
            (wallet.address(), 12_000_000),
            (decoy.address(), CHF),
            (wallet.address(), 9_000_000),
            (decoy.address(), CHF),
        ] {
            let (output, _) = create(&to, amount, &mut rng).unwrap();
            pool.push(PoolOutput {
                output,
                height: Height(1),
                slot: Slot(0),
                public_amount: None,
                settles: None,
            });
        }
        wallet.scan(0, &pool);
        // A page seen twice is not counted twice.
        wallet.scan(0, &pool);
        assert_eq!(wallet.balance(), Money::new(21_000_000));
        let meter = key(12);
        let ring = [id(&key(11)).0, id(&meter).0];
        let request = OrderRequest {
            region: R1,
            params: params(),
            slot: Slot(3),
            side: Side::Buy,
            limit: Price::new(15_000),
            energy: Energy::new(1_000),
        };
        let order = wallet
            .order(
                (
                    ChainId(quartier_types::hash::Digest([0; 32])),
                    AccountId([0; 32]),
                ),
                &request,
                &MeterRing {
                    scalar: meter.to_scalar().to_bytes(),
                    key: id(&meter).0,
                    ring: &ring,
                },
                &mut rng,
            )
            .unwrap();
        let funds = order.funds.unwrap();
        assert_eq!(
            funds.inputs.len(),
            2,
            "neither output alone covers 20 750 000"
        );
        assert!(funds.inputs.iter().all(|i| i.ring.len() == 4));
        assert_eq!(wallet.balance(), Money::ZERO);
        wallet.release(Slot(3), Side::Buy);
        assert_eq!(wallet.balance(), Money::new(21_000_000));
    }
}
