//! A household's shielded wallet (privacy mode A), as a light client: it
//! scans pool outputs with its view keys locally (the node serves outputs
//! and never learns which are whose), keeps its unspent outputs, and builds
//! shielded orders — funds from one of its outputs with decoys drawn
//! uniformly from a recent window of the pool, change back to itself, and a
//! fresh payee address per order, derived from its seed, so it finds the
//! settlement's payment while no one can link two of its orders.

use quartier_ledger::{ChainId, ShieldedInput, ShieldedOrder, ShieldedTransfer, side_byte};
use quartier_shielded::authorise::{self, Authorisation};
use quartier_shielded::keys::{Address, WalletKeys};
use quartier_shielded::output::{Output, Received, create};
use quartier_shielded::range;
use quartier_shielded::spend::{self, Input, RingMember, key_image};
use quartier_types::hash;
use quartier_types::{Energy, Money, Price, RegionId, RegionParams, Side, Slot};
use rand_core::CryptoRng;
use std::collections::BTreeMap;

/// Domain tag of a per-order payee seed.
pub const TAG_PAYEE: &str = "QUARTIER_METER_SHIELDED_PAYEE";

/// Why the wallet can not build an order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WalletError {
    /// No single unspent output covers the escrow.
    #[error("no unspent output covers {needed:?}")]
    InsufficientFunds {
        /// The escrow needed.
        needed: Money,
    },
    /// The pool has fewer outputs than a ring needs.
    #[error("the pool has too few outputs for a ring of {0}")]
    PoolTooSmall(usize),
    /// The meter is not in the ring, or a proof could not be made.
    #[error("can not sign: {0}")]
    Signing(&'static str),
}

/// Which keys own an output: the main address, or an order's payee.
type Owner = Option<(Slot, u8)>;

/// An output of this wallet.
struct Owned {
    output: Output,
    received: Received,
    owner: Owner,
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

/// Who authorises an order: the meter's Ed25519 scalar and the region's
/// meter ring (`quartier_ledger::meter_ring` order) it is in.
pub struct MeterRing<'a> {
    /// The meter's `SigningKey::to_scalar()` bytes.
    pub scalar: [u8; 32],
    /// Its own registered key.
    pub key: [u8; 32],
    /// The ring's keys.
    pub ring: &'a [[u8; 32]],
}

/// A household's shielded wallet.
pub struct ShieldedWallet {
    seed: [u8; 32],
    keys: WalletKeys,
    /// Unspent outputs by pool index.
    owned: BTreeMap<u64, Owned>,
    /// Payees of placed orders not yet paid.
    payees: BTreeMap<(Slot, u8), WalletKeys>,
    /// The next pool index to scan.
    scanned: u64,
}

impl ShieldedWallet {
    /// The wallet of a secret seed; restoring from it finds its outputs
    /// (payee addresses are re-derived from the seed per slot and side).
    pub fn from_seed(seed: [u8; 32]) -> ShieldedWallet {
        ShieldedWallet {
            keys: WalletKeys::from_seed(&seed),
            seed,
            owned: BTreeMap::new(),
            payees: BTreeMap::new(),
            scanned: 0,
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
        Money::new(self.owned.values().map(|o| o.received.amount).sum())
    }

    fn keys_of(&self, owner: Owner) -> WalletKeys {
        match owner {
            None => WalletKeys::from_seed(&self.seed),
            Some((slot, side)) => {
                let seed = hash::tagged(TAG_PAYEE, &[&self.seed, &slot.0.to_le_bytes(), &[side]]);
                WalletKeys::from_seed(&seed.0)
            }
        }
    }

    /// Scans outputs `from, from + 1, …` (a page of `GET /api/v1/pool/outputs`)
    /// for its own: to the main address or to the payee of a placed order.
    pub fn scan(&mut self, from: u64, outputs: &[Output]) {
        for (index, output) in (from..).zip(outputs) {
            if let Some(received) = self.keys.view_key().scan(output) {
                self.owned.insert(
                    index,
                    Owned {
                        output: *output,
                        received,
                        owner: None,
                    },
                );
                continue;
            }
            let paid = self
                .payees
                .iter()
                .find_map(|(k, p)| p.view_key().scan(output).map(|r| (*k, r)));
            if let Some((owner, received)) = paid {
                self.payees.remove(&owner);
                self.owned.insert(
                    index,
                    Owned {
                        output: *output,
                        received,
                        owner: Some(owner),
                    },
                );
            }
        }
        self.scanned = self.scanned.max(from + outputs.len() as u64);
    }

    /// Forgets payees of orders before `slot` (their settlement paid nothing,
    /// e.g. a buy that used its whole escrow), so scanning stays cheap.
    pub fn forget_payees_before(&mut self, slot: Slot) {
        self.payees.retain(|(s, _), _| *s >= slot);
    }

    /// Builds a shielded order. `pool` is the whole pool as scanned (index =
    /// position); decoys are drawn uniformly from its last `window` outputs.
    /// The spent output leaves the wallet; its change arrives when scanned.
    ///
    /// # Errors
    /// [`WalletError`] if no output covers the escrow, the pool is too small
    /// for a ring, or the meter is not in its ring.
    pub fn order(
        &mut self,
        chain_id: ChainId,
        request: &OrderRequest,
        meter: &MeterRing<'_>,
        (pool, ring_size, window): (&[Output], usize, usize),
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
        let side = side_byte(r.side);
        let payee = self.keys_of(Some((r.slot, side)));
        let mut funds = None;
        let mut secret = None;
        if !escrow.is_zero() {
            let (index, owned) = self
                .owned
                .iter()
                .filter(|(_, o)| o.received.amount >= escrow.get())
                .min_by_key(|(_, o)| o.received.amount)
                .ok_or(WalletError::InsufficientFunds { needed: escrow })?;
            let (transfer, input, masks) =
                self.funds(*index, owned, escrow, (pool, ring_size, window), rng)?;
            funds = Some(transfer);
            secret = Some((input, masks, *index));
        }
        let mut order = ShieldedOrder {
            region: r.region,
            slot: r.slot,
            side: r.side,
            limit: r.limit,
            energy: r.energy,
            funds,
            payee: payee.address(),
            authorisation: Authorisation {
                key_image: [0; 32],
                signature: Vec::new(),
            },
        };
        let message = order.prefix_hash(chain_id, escrow);
        let spent = match (secret, order.funds.as_mut()) {
            (Some((input, masks, index)), Some(f)) => {
                let signed = spend::sign(vec![input], &masks, message, rng)
                    .map_err(|_| WalletError::Signing("funds"))?;
                let s = signed.first().ok_or(WalletError::Signing("funds"))?;
                f.inputs[0].pseudo_out = s.pseudo_out;
                f.inputs[0].signature = s.signature.clone();
                Some(index)
            }
            _ => None,
        };
        let real = meter
            .ring
            .iter()
            .position(|k| *k == meter.key)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(WalletError::Signing("meter not in its ring"))?;
        order.authorisation = authorise::sign(
            &meter.scalar,
            meter.ring,
            real,
            (r.region.0, r.slot.0, side),
            message,
            rng,
        )
        .map_err(|_| WalletError::Signing("authorisation"))?;
        if let Some(index) = spent {
            self.owned.remove(&index);
        }
        self.payees.insert((r.slot, side), payee);
        Ok(order)
    }

    /// The funds of an order: `owned` (at pool `index`) into `escrow` and
    /// change, unsigned, with the secret input and the output masks' sum.
    fn funds(
        &self,
        index: u64,
        owned: &Owned,
        escrow: Money,
        (pool, ring_size, window): (&[Output], usize, usize),
        rng: &mut impl CryptoRng,
    ) -> Result<(ShieldedTransfer, Input, curve25519_dalek::Scalar), WalletError> {
        let len = pool.len() as u64;
        let start = len.saturating_sub(window.max(ring_size) as u64);
        if len - start < ring_size as u64 {
            return Err(WalletError::PoolTooSmall(ring_size));
        }
        let mut ring = vec![index];
        while ring.len() < ring_size {
            let pick = start + rng.next_u64() % (len - start);
            if !ring.contains(&pick) {
                ring.push(pick);
            }
        }
        ring.sort_unstable();
        let real = ring
            .iter()
            .position(|i| *i == index)
            .and_then(|p| u8::try_from(p).ok())
            .ok_or(WalletError::Signing("ring"))?;
        let members: Vec<RingMember> = ring
            .iter()
            .map(|i| {
                let o = usize::try_from(*i).ok().and_then(|i| pool.get(i))?;
                Some(RingMember {
                    key: o.key,
                    commitment: o.commitment,
                })
            })
            .collect::<Option<_>>()
            .ok_or(WalletError::PoolTooSmall(ring_size))?;
        let keys = self.keys_of(owned.owner);
        let x = keys
            .one_time_secret(&owned.output)
            .ok_or(WalletError::Signing("not our output"))?;
        let image = key_image(&x);
        let change = owned.received.amount - escrow.get();
        let (change_output, change_secret) =
            create(&self.address(), change, rng).map_err(|_| WalletError::Signing("change"))?;
        let range_proof = range::prove(vec![change_secret.opening()], rng)
            .map_err(|_| WalletError::Signing("range proof"))?;
        let masks = curve25519_dalek::Scalar::from_bytes_mod_order(*change_secret.mask);
        let transfer = ShieldedTransfer {
            inputs: vec![ShieldedInput {
                ring,
                key_image: image,
                pseudo_out: [0; 32],
                signature: Vec::new(),
            }],
            outputs: vec![change_output],
            range_proof,
        };
        let input = Input {
            secret: x,
            opening: owned.received.opening(),
            ring: members,
            real,
        };
        Ok((transfer, input, masks))
    }
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

    const CHF: u64 = 100_000_000;
    const R1: RegionId = RegionId(1);

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

        fn one_time(&self, body: TxBody, rng: &mut ChaCha20Rng) -> quartier_ledger::SignedTx {
            let mut seed = [0u8; 32];
            rand_core::Rng::fill_bytes(rng, &mut seed);
            let k = SigningKey::from_bytes(&seed);
            Tx {
                chain_id: self.state.chain_id(),
                signer: id(&k),
                nonce: 0,
                body,
            }
            .sign(&k)
        }

        fn pool(&self) -> Vec<Output> {
            self.state.pool().iter().map(|o| o.output).collect()
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
            chain_name: "wallet-test".into(),
            dso: id(&dso),
            utility: id(&utility),
            validators: vec![id(&key(3))],
            regions: vec![(R1, params())],
            slot_ms: 900_000,
            gate_ms: 60_000,
            lead_slots: 1,
            metered_ms: 900_000,
            allocations: vec![(id(&utility), Money::new(1_000 * CHF))],
            sealed_market: None,
            shielded: Some(ShieldedPolicy { ring_size: 4 }),
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
        let mut buyer = ShieldedWallet::from_seed([20; 32]);
        let mut seller = ShieldedWallet::from_seed([21; 32]);
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
        let ring_of = |side| -> Vec<[u8; 32]> {
            meter_ring(&c.state, R1, side)
                .iter()
                .map(|(a, _)| a.0)
                .collect()
        };
        let (buy_ring, sell_ring) = (ring_of(Side::Buy), ring_of(Side::Sell));
        let pool = c.pool();
        let buy = buyer
            .order(
                c.state.chain_id(),
                &request(Side::Buy, 1_000),
                &MeterRing {
                    scalar: buyer_meter.to_scalar().to_bytes(),
                    key: id(&buyer_meter).0,
                    ring: &buy_ring,
                },
                (&pool, 4, 100),
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
                c.state.chain_id(),
                &request(Side::Sell, 600),
                &MeterRing {
                    scalar: seller_meter.to_scalar().to_bytes(),
                    key: id(&seller_meter).0,
                    ring: &sell_ring,
                },
                (&pool, 4, 100),
                &mut rng,
            )
            .unwrap();
        // Too little money, or a meter outside its ring: refused by the wallet.
        let mut poor = ShieldedWallet::from_seed([23; 32]);
        assert_eq!(
            poor.order(
                c.state.chain_id(),
                &request(Side::Buy, 1_000),
                &MeterRing {
                    scalar: buyer_meter.to_scalar().to_bytes(),
                    key: id(&buyer_meter).0,
                    ring: &buy_ring
                },
                (&pool, 4, 100),
                &mut rng,
            )
            .err(),
            Some(WalletError::InsufficientFunds {
                needed: Money::new(20_750_000)
            })
        );
        let txs = vec![
            c.one_time(TxBody::PlaceShieldedOrder { order: buy }, &mut rng),
            c.one_time(TxBody::PlaceShieldedOrder { order: sell }, &mut rng),
        ];
        c.block(900_000 + 1, txs);
        // After the gate the settlement pays into the pool.
        c.block(2 * 900_000 + 60_000, vec![]);
        let from = buyer.scanned();
        let new: Vec<Output> = c.pool()[from as usize..].to_vec();
        buyer.scan(from, &new);
        seller.scan(from, &new);
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
    }
}
