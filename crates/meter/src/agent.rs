//! The meter agent: turns a meter's readings into signed orders and sees each
//! one through to finality, as a state machine without I/O.
//!
//! The host feeds it [`AgentInput`]s (a reading, a node's answer about a
//! transaction, the account's nonce, a settled slot) together with the chain's
//! current time, and carries out the [`AgentEffect`]s it returns. The host
//! decides which node to talk to; the agent only decides what to say.
//!
//! Safety of retries: an order is signed once, with one nonce, and that exact
//! transaction is resubmitted until the chain finalizes or refuses it. A node
//! that already has it answers "duplicate"; the ledger applies a nonce at most
//! once. So a retry can never place an order twice. At most one transaction is
//! in flight; readings that arrive meanwhile wait in a queue, and an order
//! whose slot has closed on chain is abandoned (the ledger would refuse it).

use crate::metering::Metering;
use crate::strategy::{BidContext, BidOutcome, BiddingStrategy, limit_for};
use crate::wallet::{MeterRing, OrderRequest, ShieldedWallet, WalletError};
use ed25519_dalek::SigningKey;
use quartier_enclave_proto::report::{PublishedReceipt, Receipt, sealed_hash};
use quartier_enclave_proto::sealed::{Epoch, HpkeKeyPair, OrderPayload, SignedOrder, seal};
use quartier_ledger::{Genesis, PoolOutput, SignedTx, Tx, TxBody};
use quartier_types::hash::Digest;
use quartier_types::{AccountId, Energy, Price, RegionId, RegionParams, Side, Slot, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use std::collections::{BTreeMap, VecDeque};

/// What the host tells the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentInput {
    /// The meter's reading for `slot`. Net metering orders `net_wh`
    /// (positive bought, negative sold, zero no order); gross metering a buy
    /// of the consumption (`net_wh + produced_wh`) and a sell of the
    /// production ([`Metering`]).
    Measured {
        /// The slot measured.
        slot: Slot,
        /// The quarter hour of the day of the metered interval, `0..96`.
        slot_of_day: u32,
        /// Net energy in Wh: consumption minus own PV.
        net_wh: i64,
        /// What the household's PV produced, Wh (its production register;
        /// 0 without PV).
        produced_wh: u64,
    },
    /// A node's answer about the transaction `hash`.
    Status {
        /// The transaction asked about.
        hash: Digest,
        /// What the node said.
        status: TxProgress,
    },
    /// The account's next nonce, as a node reports it.
    Nonce(u64),
    /// Nothing new: time passed (orders whose slot closed are given up).
    Tick,
    /// Mode B: the epoch keys households may seal to now (they replace the
    /// ones given before: a committee that evicts members, or one that
    /// took over, leaves its predecessor's keys unusable).
    EpochKeys(Vec<(Epoch, [u8; 32])>),
    /// Mode A: pool outputs from index `from` on, to scan.
    PoolOutputs {
        /// Pool index of the first.
        from: u64,
        /// The outputs.
        outputs: Vec<PoolOutput>,
    },
    /// Mode A: the key images spent on chain (after an order was refused:
    /// its wallet's outputs may have been spent elsewhere).
    KeyImages(std::collections::BTreeSet<[u8; 32]>),
    /// Mode A: the region's meter rings (keys in `meter_ring` order): every
    /// meter for a buy, the prosumers with their energy per slot for a sell
    /// (a sell of `E` is signed over those that can produce `E`).
    MeterRings {
        /// The buy ring.
        buy: Vec<[u8; 32]>,
        /// The prosumers and what each can produce in a slot.
        sell: Vec<([u8; 32], Energy)>,
    },
    /// A slot in which this meter had an order was settled.
    Settled {
        /// The slot.
        slot: Slot,
        /// The side of the order (a gross-metered prosumer has two a slot);
        /// `None` where the host can not tell (mode B's receipts, net
        /// metering: one order a slot).
        side: Option<Side>,
        /// Energy of this meter's order matched locally.
        matched: Energy,
        /// Energy-weighted mean price of the slot's local trades.
        market_price: Option<Price>,
    },
}

/// Where a submitted transaction stands, as far as one node knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxProgress {
    /// In a finalized block.
    Finalized,
    /// Waiting in the node's mempool.
    Pending,
    /// The node will not take it, or the ledger refused it.
    Rejected(String),
    /// The node has never seen it.
    Unknown,
    /// The node did not answer.
    Unreachable,
}

/// What the agent asks the host to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentEffect {
    /// Submit this transaction to a node (again, if already sent: the same
    /// bytes, so it is idempotent). After an `Unreachable`, use another node.
    Submit(Box<SignedTx>),
    /// Ask a node for the account's next nonce and report it as [`AgentInput::Nonce`].
    FetchNonce,
    /// The order for `slot` was given up: the chain will never include it.
    Abandoned {
        /// The slot of the order.
        slot: Slot,
        /// Why.
        reason: String,
    },
}

/// An order waiting for its turn or for finality.
#[derive(Clone, Debug)]
struct PendingOrder {
    bid: BidContext,
    limit: Price,
    /// Signed once it is in flight.
    tx: Option<SignedTx>,
}

/// Privacy mode B: how the agent seals its orders.
struct Sealing {
    /// Slots per epoch key.
    epoch_slots: u64,
    /// Published epoch keys.
    keys: BTreeMap<Epoch, [u8; 32]>,
    /// Randomness for HPKE.
    rng: ChaCha20Rng,
    /// Per slot: the hash of the sealed order sent and its receipt key.
    receipts: BTreeMap<Slot, (Digest, HpkeKeyPair)>,
}

/// Privacy mode A: the wallet that funds the agent's orders and the rings
/// that authorise them.
struct Shielding {
    wallet: ShieldedWallet,
    /// Randomness for one-time signers, decoys and proofs.
    rng: ChaCha20Rng,
    /// The buy ring.
    buy_ring: Vec<[u8; 32]>,
    /// The prosumers and their energy per slot.
    sellers: Vec<([u8; 32], Energy)>,
}

impl Shielding {
    /// The ring an order of `side` and `energy` is signed over.
    fn ring(&self, side: Side, energy: Energy) -> Vec<[u8; 32]> {
        match side {
            Side::Buy => self.buy_ring.clone(),
            Side::Sell => self
                .sellers
                .iter()
                .filter(|(_, capacity)| *capacity >= energy)
                .map(|(key, _)| *key)
                .collect(),
        }
    }
}

/// One meter's agent: its key, its nonce and its strategy.
pub struct MeterAgent {
    key: SigningKey,
    account: AccountId,
    genesis: Genesis,
    region: RegionId,
    params: RegionParams,
    strategy: Box<dyn BiddingStrategy>,
    next_nonce: u64,
    /// The order in flight first, then the queue.
    orders: VecDeque<PendingOrder>,
    /// Orders finalized and not yet settled: what the strategy learns from.
    placed: Vec<PendingOrder>,
    /// Mode B, if the chain runs it.
    sealing: Option<Sealing>,
    /// Mode A, if the chain runs it.
    shielding: Option<Shielding>,
    /// Which flows it orders.
    metering: Metering,
}

impl MeterAgent {
    /// An agent for the meter with secret `key`, trading in `region` (whose
    /// parameters are `params`) on the chain of `genesis`, starting at `nonce`.
    pub fn new(
        key: SigningKey,
        genesis: Genesis,
        region: RegionId,
        params: RegionParams,
        strategy: Box<dyn BiddingStrategy>,
        nonce: u64,
    ) -> MeterAgent {
        let account = AccountId(key.verifying_key().to_bytes());
        MeterAgent {
            key,
            account,
            genesis,
            region,
            params,
            strategy,
            next_nonce: nonce,
            orders: VecDeque::new(),
            placed: Vec::new(),
            sealing: None,
            shielding: None,
            metering: Metering::Net,
        }
    }

    /// Orders by `metering`: gross (mode A's rule) orders a buy of the
    /// consumption and a sell of the production every slot, so a buy does
    /// not say whether the meter has PV.
    #[must_use]
    pub fn metering(mut self, metering: Metering) -> MeterAgent {
        self.metering = metering;
        self
    }

    /// Privacy mode B: seal every order to the epoch key of its slot (epochs
    /// of `epoch_slots` slots), and send a zero-energy cover order for a slot
    /// with nothing to trade, so every meter submits every slot. `seed`
    /// drives the HPKE encapsulations: give each agent secret, fresh
    /// randomness. Receipt keys are derived from the wallet key per slot
    /// ([`HpkeKeyPair::receipt_key`]), so `quartier wallet receipts` can
    /// open them later.
    #[must_use]
    pub fn sealed(mut self, epoch_slots: u64, seed: [u8; 32]) -> MeterAgent {
        self.sealing = Some(Sealing {
            epoch_slots: epoch_slots.max(1),
            keys: BTreeMap::new(),
            rng: ChaCha20Rng::from_seed(seed),
            receipts: BTreeMap::new(),
        });
        self
    }

    /// Privacy mode A: fund every order from the shielded `wallet`,
    /// authorise it by a ring signature over the region's meters and send it
    /// from a one-time signer; send a zero-energy cover order for a slot with
    /// nothing to trade, so every meter submits every slot. `seed` drives the
    /// one-time keys, decoys and proofs: give each agent secret, fresh
    /// randomness. Orders wait until the host has fed pool outputs and the
    /// meter rings.
    #[must_use]
    pub fn shielded(mut self, wallet: ShieldedWallet, seed: [u8; 32]) -> MeterAgent {
        self.shielding = Some(Shielding {
            wallet,
            rng: ChaCha20Rng::from_seed(seed),
            buy_ring: Vec::new(),
            sellers: Vec::new(),
        });
        self
    }

    /// Mode A: the agent's wallet.
    pub fn wallet(&self) -> Option<&ShieldedWallet> {
        self.shielding.as_ref().map(|s| &s.wallet)
    }

    /// Mode B: opens this meter's receipt for `slot` among a report's
    /// receipts (whose root the caller checked against the chain), once.
    pub fn open_receipt(&mut self, slot: Slot, receipts: &[PublishedReceipt]) -> Option<Receipt> {
        let sealing = self.sealing.as_mut()?;
        let (sealed, key) = sealing.receipts.get(&slot)?;
        let receipt = receipts
            .iter()
            .filter(|r| r.sealed == *sealed)
            .find_map(|r| r.open(key))?;
        sealing.receipts.remove(&slot);
        Some(receipt)
    }

    /// Mode B: slots whose receipt this meter still waits for.
    pub fn awaited_receipts(&self) -> Vec<Slot> {
        self.sealing
            .as_ref()
            .map(|s| s.receipts.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The meter's account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The transactions in flight (to poll their status): at most one
    /// with a nonce; in mode A, where a one-time signer has none, a funded
    /// order and any number of unfunded ones (sells, cover orders) at once,
    /// so a gross-metered prosumer's sell does not wait for its buy.
    pub fn in_flight(&self) -> impl Iterator<Item = &SignedTx> {
        self.orders.iter().filter_map(|o| o.tx.as_ref())
    }

    /// Whether nothing waits to be submitted or finalized.
    pub fn is_idle(&self) -> bool {
        self.orders.is_empty()
    }

    /// Handles one input at chain time `now` and returns what to do.
    pub fn handle(&mut self, now: Timestamp, input: AgentInput) -> Vec<AgentEffect> {
        let mut effects = Vec::new();
        match input {
            AgentInput::Measured {
                slot,
                slot_of_day,
                net_wh,
                produced_wh,
            } => {
                // What its PV can sell in a slot, as the chain registered it.
                let me = self.account.0;
                let sell_cap = self.shielding.as_ref().map_or(u64::MAX, |s| {
                    s.sellers
                        .iter()
                        .find(|(key, _)| *key == me)
                        .map_or(0, |(_, e)| e.get())
                });
                let flows: Vec<(Side, u64)> = match self.metering {
                    Metering::Net => {
                        let side = if net_wh > 0 { Side::Buy } else { Side::Sell };
                        vec![(side, net_wh.unsigned_abs())]
                    }
                    Metering::Gross => {
                        let consumed = net_wh
                            .checked_add_unsigned(produced_wh)
                            .and_then(|c| u64::try_from(c).ok())
                            .unwrap_or(0);
                        // A sell above the registered capability would be
                        // refused: the excess is left to the grid.
                        Metering::Gross
                            .orders(consumed, produced_wh)
                            .into_iter()
                            .map(|(side, wh)| match side {
                                Side::Buy => (side, wh),
                                Side::Sell => (side, wh.min(sell_cap)),
                            })
                            .collect()
                    }
                };
                let flows: Vec<(Side, u64)> = flows.into_iter().filter(|f| f.1 > 0).collect();
                if flows.is_empty() && (self.sealing.is_some() || self.shielding.is_some()) {
                    // Cover traffic: an empty buy, indistinguishable on chain.
                    let bid = BidContext {
                        side: Side::Buy,
                        energy: Energy::ZERO,
                        slot,
                        slot_of_day,
                        params: self.params,
                    };
                    self.orders.push_back(PendingOrder {
                        bid,
                        limit: self.params.feed_in_tariff(),
                        tx: None,
                    });
                }
                for (side, wh) in flows {
                    let bid = BidContext {
                        side,
                        energy: Energy::new(wh),
                        slot,
                        slot_of_day,
                        params: self.params,
                    };
                    let limit = limit_for(self.strategy.as_mut(), &bid);
                    self.orders.push_back(PendingOrder {
                        bid,
                        limit,
                        tx: None,
                    });
                }
            }
            AgentInput::Status { hash, status } => {
                let sent = |o: &PendingOrder| o.tx.as_ref().map(SignedTx::hash) == Some(hash);
                if let Some(i) = self.orders.iter().position(sent) {
                    self.progress(i, status, &mut effects);
                }
            }
            AgentInput::Nonce(nonce) => {
                // Only while nothing is in flight: an in-flight tx's fate is
                // learned from its status, never guessed from the nonce.
                if self.in_flight().next().is_none() {
                    self.next_nonce = nonce;
                }
            }
            AgentInput::Tick => {}
            AgentInput::EpochKeys(keys) => {
                if let Some(s) = self.sealing.as_mut() {
                    s.keys = keys.into_iter().collect();
                }
            }
            AgentInput::PoolOutputs { from, outputs } => {
                if let Some(s) = self.shielding.as_mut() {
                    s.wallet.scan(from, &outputs);
                }
            }
            AgentInput::KeyImages(images) => {
                let genesis = &self.genesis;
                if let Some(s) = self.shielding.as_mut() {
                    s.wallet.mark_spent(&images);
                    s.wallet
                        .settle_given_up(&images, |slot| genesis.close_of(slot) <= now);
                }
            }
            AgentInput::MeterRings { buy, sell } => {
                if let Some(s) = self.shielding.as_mut() {
                    s.buy_ring = buy;
                    s.sellers = sell;
                }
            }
            AgentInput::Settled {
                slot,
                side,
                matched,
                market_price,
            } => {
                if let Some(i) = self
                    .placed
                    .iter()
                    .position(|o| o.bid.slot == slot && side.is_none_or(|s| s == o.bid.side))
                {
                    let order = self.placed.swap_remove(i);
                    self.strategy.observe(&BidOutcome {
                        bid: order.bid,
                        limit: order.limit,
                        matched,
                        market_price,
                    });
                }
            }
        }
        self.abandon_closed(now, &mut effects);
        self.start_next(&mut effects);
        effects
    }

    /// The order `i` of the queue, in flight, reached `status`.
    fn progress(&mut self, i: usize, status: TxProgress, effects: &mut Vec<AgentEffect>) {
        match status {
            TxProgress::Finalized => {
                if let Some(order) = self.orders.remove(i) {
                    match self.shielding.as_mut() {
                        Some(s) => s.wallet.confirm(order.bid.slot, order.bid.side),
                        None => self.next_nonce = self.next_nonce.saturating_add(1),
                    }
                    self.placed.push(order);
                }
            }
            TxProgress::Pending => {}
            TxProgress::Unknown | TxProgress::Unreachable => {
                if let Some(tx) = self.orders.get(i).and_then(|o| o.tx.as_ref()) {
                    effects.push(AgentEffect::Submit(Box::new(tx.clone())));
                }
            }
            TxProgress::Rejected(reason) => {
                if let Some(order) = self.orders.remove(i) {
                    self.forget(&order);
                    effects.push(AgentEffect::Abandoned {
                        slot: order.bid.slot,
                        reason,
                    });
                    // The nonce may not be what we think (e.g. a key used
                    // elsewhere); the next order waits for the chain's.
                    // A one-time signer (mode A) has no nonce to learn.
                    if self.shielding.is_none() {
                        effects.push(AgentEffect::FetchNonce);
                    }
                }
            }
        }
    }

    /// Drops what a given-up order left behind: its receipt key (mode B).
    /// Mode A: the inputs it would have spent stay pending until the chain's
    /// key images tell, after its slot closed, whether another leader's
    /// block took it after all ([`awaits_key_images`](Self::awaits_key_images)).
    fn forget(&mut self, order: &PendingOrder) {
        if let Some(s) = self.sealing.as_mut() {
            s.receipts.remove(&order.bid.slot);
        }
    }

    /// Mode A: whether inputs of a given-up order wait for the chain's key
    /// images (the host then feeds [`AgentInput::KeyImages`], read after
    /// chain time `now`).
    pub fn awaits_key_images(&self, now: Timestamp) -> bool {
        let in_flight = |slot| {
            self.orders
                .iter()
                .any(|o| o.tx.is_some() && o.bid.slot == slot)
        };
        self.shielding.as_ref().is_some_and(|s| {
            s.wallet
                .awaits_key_images(|slot| self.genesis.close_of(slot) <= now && !in_flight(slot))
        })
    }

    /// Gives up orders whose slot the chain has closed.
    fn abandon_closed(&mut self, now: Timestamp, effects: &mut Vec<AgentEffect>) {
        let close = |o: &PendingOrder| self.genesis.close_of(o.bid.slot);
        let (open, closed): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.orders)
            .into_iter()
            .partition(|o| now < close(o));
        self.orders = open;
        for o in closed {
            self.forget(&o);
            effects.push(AgentEffect::Abandoned {
                slot: o.bid.slot,
                reason: "the slot closed before the order was final".into(),
            });
        }
    }

    /// Signs and submits the head of the queue if nothing is in flight and the
    /// nonce is known (no `FetchNonce` outstanding); in mode A every order
    /// that can go ([`start_shielded`](Self::start_shielded)).
    fn start_next(&mut self, effects: &mut Vec<AgentEffect>) {
        if effects.contains(&AgentEffect::FetchNonce) {
            return;
        }
        if self.shielding.is_some() {
            self.start_shielded(effects);
            return;
        }
        let Some(head) = self.orders.front_mut() else {
            return;
        };
        if head.tx.is_some() {
            return;
        }
        let body = match self.sealing.as_mut() {
            None => TxBody::PlaceOrder {
                region: self.region,
                slot: head.bid.slot,
                side: head.bid.side,
                limit: head.limit,
                energy: head.bid.energy,
            },
            Some(sealing) => {
                let epoch = Epoch(head.bid.slot.0 / sealing.epoch_slots);
                // Without the epoch's key yet, the order waits for it.
                let Some(epoch_key) = sealing.keys.get(&epoch).copied() else {
                    return;
                };
                let receipt_key = HpkeKeyPair::receipt_key(&self.key, self.region, head.bid.slot);
                let payload = OrderPayload {
                    chain: self.genesis.chain_id().0.0,
                    wallet: self.account,
                    region: self.region,
                    slot: head.bid.slot,
                    epoch,
                    side: head.bid.side,
                    limit: head.limit,
                    energy: head.bid.energy,
                    receipt_key: receipt_key.public_key(),
                };
                let order = SignedOrder::sign(payload, &self.key);
                let Ok(sealed) = seal(&epoch_key, &order, &mut sealing.rng) else {
                    return;
                };
                sealing
                    .receipts
                    .insert(head.bid.slot, (sealed_hash(&sealed), receipt_key));
                TxBody::SubmitSealedOrder { sealed }
            }
        };
        let tx = Tx {
            chain_id: self.genesis.chain_id(),
            signer: self.account,
            nonce: self.next_nonce,
            body,
        }
        .sign(&self.key);
        head.tx = Some(tx.clone());
        effects.push(AgentEffect::Submit(Box::new(tx)));
    }

    /// Mode A: signs and submits, in queue order, every order not yet sent
    /// that can go now. A one-time signer has no nonce, so orders need not
    /// wait for each other, except that a funded order (a buy with energy)
    /// waits while another is in flight (its inputs and its change are the
    /// wallet's, learned once the first is final); the orders behind a
    /// waiting buy still go.
    fn start_shielded(&mut self, effects: &mut Vec<AgentEffect>) {
        let mut i = 0;
        while i < self.orders.len() {
            let Some(shielding) = self.shielding.as_mut() else {
                return;
            };
            let order = &self.orders[i];
            let funded = |o: &PendingOrder| o.bid.side == Side::Buy && o.bid.energy > Energy::ZERO;
            if order.tx.is_some() {
                i += 1;
                continue;
            }
            if funded(order) && self.orders.iter().any(|o| o.tx.is_some() && funded(o)) {
                // This buy waits; unfunded orders behind it need not.
                i += 1;
                continue;
            }
            if shielding.buy_ring.is_empty() {
                // The host has not fed the meter rings yet.
                return;
            }
            let request = OrderRequest {
                region: self.region,
                params: self.params,
                slot: order.bid.slot,
                side: order.bid.side,
                limit: order.limit,
                energy: order.bid.energy,
            };
            let ring = shielding.ring(order.bid.side, order.bid.energy);
            let meter = MeterRing {
                scalar: self.key.to_scalar().to_bytes(),
                key: self.account.0,
                ring: &ring,
            };
            let chain_id = self.genesis.chain_id();
            let mut secret = [0u8; 32];
            rand_core::Rng::fill_bytes(&mut shielding.rng, &mut secret);
            let signer = Tx::one_time_signer(&secret);
            match shielding
                .wallet
                .order((chain_id, signer), &request, &meter, &mut shielding.rng)
            {
                Ok(placed) => {
                    let body = TxBody::PlaceShieldedOrder { order: placed };
                    let tx = Tx::one_time(chain_id, body, &secret);
                    self.orders[i].tx = Some(tx.clone());
                    effects.push(AgentEffect::Submit(Box::new(tx)));
                    i += 1;
                }
                // Too little of the pool scanned for a ring yet: wait.
                Err(WalletError::PoolTooSmall(_)) => return,
                // No money for the escrow, or no ring with this meter yet:
                // this order can not be made; the next may.
                Err(e) => {
                    if let Some(order) = self.orders.remove(i) {
                        effects.push(AgentEffect::Abandoned {
                            slot: order.bid.slot,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Preferences, StrategyKind};
    use rand_core::SeedableRng;

    fn genesis() -> Genesis {
        Genesis {
            slot_ms: 10_000,
            gate_ms: 2_000,
            ..Genesis::new(
                "agent-test",
                AccountId([1; 32]),
                AccountId([2; 32]),
                vec![AccountId([3; 32])],
            )
        }
    }

    fn agent() -> MeterAgent {
        let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap();
        let prefs = Preferences::draw(&mut rand_chacha::ChaCha8Rng::from_seed([4; 32]), &params);
        MeterAgent::new(
            SigningKey::from_bytes(&[9; 32]),
            genesis(),
            RegionId(1),
            params,
            StrategyKind::Fixed.build(0, prefs, [0; 32]),
            5,
        )
    }

    fn measured(slot: u64, net_wh: i64) -> AgentInput {
        AgentInput::Measured {
            slot: Slot(slot),
            slot_of_day: 40,
            net_wh,
            produced_wh: 0,
        }
    }

    fn submitted(effects: &[AgentEffect]) -> Vec<SignedTx> {
        effects
            .iter()
            .filter_map(|e| match e {
                AgentEffect::Submit(tx) => Some((**tx).clone()),
                _ => None,
            })
            .collect()
    }

    const EARLY: Timestamp = Timestamp(10_000);

    #[test]
    fn in_mode_b_every_slot_sends_one_sealed_order_of_one_size_once_the_key_is_known() {
        use quartier_enclave_proto::report::{Outcome, PublishedReceipt, ReceiptBody};
        use quartier_enclave_proto::sealed::{CIPHERTEXT_LEN, EpochKeyPair};
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let epoch_key = EpochKeyPair::generate(Epoch(0), &mut rng);
        let mut a = agent().sealed(4, [8; 32]);
        // No key yet: the reading waits.
        assert!(submitted(&a.handle(EARLY, measured(1, 0))).is_empty());
        let keys = vec![(Epoch(0), epoch_key.public_key())];
        let txs = submitted(&a.handle(EARLY, AgentInput::EpochKeys(keys)));
        assert_eq!(txs.len(), 1, "a zero reading sends a cover order");
        let TxBody::SubmitSealedOrder { sealed } = &txs[0].tx.body else {
            panic!("{:?}", txs[0].tx.body);
        };
        assert_eq!(sealed.ciphertext.len(), CIPHERTEXT_LEN);
        let order = epoch_key.open(sealed).unwrap();
        assert_eq!(order.payload.energy, Energy::ZERO);
        assert_eq!(order.payload.wallet, a.account());
        // Its receipt key opens the receipt published for it, once.
        let sealed_tx = txs[0].clone();
        let _ = a.handle(
            EARLY,
            AgentInput::Status {
                hash: sealed_tx.hash(),
                status: TxProgress::Finalized,
            },
        );
        let receipt = quartier_enclave_proto::report::Receipt {
            sealed: sealed_hash(sealed),
            wallet: None,
            outcome: Outcome::Refused(quartier_enclave_proto::report::Refusal::SlotSettled),
        };
        let published = vec![PublishedReceipt {
            sealed: receipt.sealed,
            body: ReceiptBody::Clear(receipt),
        }];
        assert_eq!(a.awaited_receipts(), vec![Slot(1)]);
        assert_eq!(a.open_receipt(Slot(1), &published), Some(receipt));
        assert_eq!(a.open_receipt(Slot(1), &published), None);
        // A sell is sealed the same way and has the same size.
        let txs = submitted(&a.handle(EARLY, measured(2, -750)));
        let TxBody::SubmitSealedOrder { sealed } = &txs[0].tx.body else {
            panic!();
        };
        assert_eq!(sealed.ciphertext.len(), CIPHERTEXT_LEN);
        assert_eq!(epoch_key.open(sealed).unwrap().payload.side, Side::Sell);
    }

    #[test]
    fn in_mode_a_every_slot_sends_one_order_from_a_one_time_signer() {
        use crate::wallet::{RingPolicy, ShieldedWallet};
        use quartier_shielded::output::create;
        let policy = RingPolicy { ring_size: 2 };
        let wallet = ShieldedWallet::from_seed([40; 32], policy);
        let mut rng = ChaCha20Rng::from_seed([41; 32]);
        // Its two outputs among six of a stranger's, to draw decoys from.
        let stranger = ShieldedWallet::from_seed([39; 32], policy).address();
        let mut owners = vec![stranger; 6];
        owners.splice(2..2, [wallet.address(), wallet.address()]);
        let outputs: Vec<PoolOutput> = owners
            .iter()
            .map(|to| PoolOutput {
                output: create(to, 100_000_000, &mut rng).unwrap().0,
                height: quartier_types::Height(1),
                slot: quartier_types::Slot(0),
                public_amount: None,
                settles: None,
            })
            .collect();
        let mut a = agent().shielded(wallet, [42; 32]);
        // Without rings the reading waits.
        assert!(submitted(&a.handle(EARLY, measured(1, 0))).is_empty());
        let me = a.account().0;
        let rings = AgentInput::MeterRings {
            buy: vec![
                SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes(),
                me,
            ],
            sell: vec![(me, Energy::new(1_000))],
        };
        let txs = submitted(&a.handle(EARLY, rings));
        assert_eq!(txs.len(), 1, "a zero reading sends a cover order");
        let TxBody::PlaceShieldedOrder { order } = &txs[0].tx.body else {
            panic!("{:?}", txs[0].tx.body);
        };
        assert_eq!((order.energy, order.side), (Energy::ZERO, Side::Buy));
        assert!(order.funds.is_none(), "nothing to escrow");
        assert_ne!(txs[0].tx.signer, a.account(), "never the meter's key");
        assert_eq!(txs[0].tx.nonce, 0);
        let cover = txs[0].hash();
        let status = |hash, status| AgentInput::Status { hash, status };
        // Finality does not move a nonce; the next buy spends an output.
        let _ = a.handle(EARLY, status(cover, TxProgress::Finalized));
        let _ = a.handle(EARLY, AgentInput::PoolOutputs { from: 0, outputs });
        let txs = submitted(&a.handle(EARLY, measured(2, 400)));
        let TxBody::PlaceShieldedOrder { order } = &txs[0].tx.body else {
            panic!();
        };
        assert_eq!(order.funds.as_ref().map(|f| f.inputs.len()), Some(1));
        let first = order.funds.as_ref().unwrap().inputs[0].clone();
        assert_ne!(txs[0].tx.signer, a.account());
        let wallet = a.wallet().unwrap();
        assert_eq!(wallet.balance().get(), 100_000_000, "one output pending");
        // A rejection is one node's word (another leader's block may hold
        // the order): the input stays pending, no nonce is fetched, and once
        // the slot closed the agent asks for the chain's key images.
        let effects = a.handle(
            EARLY,
            status(txs[0].hash(), TxProgress::Rejected("no".into())),
        );
        assert!(!effects.contains(&AgentEffect::FetchNonce));
        assert_eq!(a.wallet().unwrap().balance().get(), 100_000_000);
        let closed = genesis().close_of(Slot(2));
        assert!(!a.awaits_key_images(EARLY));
        assert!(a.awaits_key_images(closed));
        // Its key image is not on chain: the input is spendable again.
        let _ = a.handle(closed, AgentInput::KeyImages(Default::default()));
        assert_eq!(a.wallet().unwrap().balance().get(), 200_000_000);
        assert!(!a.awaits_key_images(closed));
        // Had another block taken it after all, the chain's key images say
        // so and the wallet stops offering the output.
        let txs = submitted(&a.handle(closed, measured(3, 400)));
        let TxBody::PlaceShieldedOrder { order } = &txs[0].tx.body else {
            panic!();
        };
        let _ = a.handle(
            closed,
            status(txs[0].hash(), TxProgress::Rejected("no".into())),
        );
        let image = order.funds.as_ref().unwrap().inputs[0].key_image;
        // The output offered again is offered in the ring it was first
        // offered in: two rings under one key image would intersect in it.
        assert_eq!(image, first.key_image, "the same output, spent again");
        assert_eq!(order.funds.as_ref().unwrap().inputs[0].ring, first.ring);
        let images = AgentInput::KeyImages([image].into_iter().collect());
        let _ = a.handle(genesis().close_of(Slot(3)), images);
        assert_eq!(a.wallet().unwrap().balance().get(), 100_000_000);
    }

    #[test]
    fn in_mode_a_a_prosumers_sell_goes_beside_its_buy() {
        use crate::wallet::{RingPolicy, ShieldedWallet};
        use quartier_shielded::output::create;
        let policy = RingPolicy { ring_size: 2 };
        let wallet = ShieldedWallet::from_seed([50; 32], policy);
        let mut rng = ChaCha20Rng::from_seed([51; 32]);
        let stranger = ShieldedWallet::from_seed([49; 32], policy).address();
        let mut owners = vec![stranger; 6];
        owners.splice(2..2, [wallet.address(), wallet.address()]);
        let outputs: Vec<PoolOutput> = owners
            .iter()
            .map(|to| PoolOutput {
                output: create(to, 100_000_000, &mut rng).unwrap().0,
                height: quartier_types::Height(1),
                slot: quartier_types::Slot(0),
                public_amount: None,
                settles: None,
            })
            .collect();
        let mut a = agent().shielded(wallet, [52; 32]).metering(Metering::Gross);
        let me = a.account().0;
        let other = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
        let rings = AgentInput::MeterRings {
            buy: vec![other, me],
            sell: vec![(me, Energy::new(700)), (other, Energy::new(5_000))],
        };
        let _ = a.handle(EARLY, rings);
        let _ = a.handle(EARLY, AgentInput::PoolOutputs { from: 0, outputs });
        let placed = |txs: &[SignedTx]| -> Vec<(Side, u64, bool)> {
            txs.iter()
                .map(|t| match &t.tx.body {
                    TxBody::PlaceShieldedOrder { order } => {
                        (order.side, order.energy.get(), order.funds.is_some())
                    }
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let reading = |slot, net_wh, produced_wh| AgentInput::Measured {
            slot: Slot(slot),
            slot_of_day: 48,
            net_wh,
            produced_wh,
        };
        // Used 300 Wh, made 900: a funded buy of 300 and, at once, a sell
        // of what its registered PV can sell (700; the rest is the grid's).
        let txs = submitted(&a.handle(EARLY, reading(2, -600, 900)));
        assert_eq!(
            placed(&txs),
            [(Side::Buy, 300, true), (Side::Sell, 700, false)]
        );
        assert_eq!(a.in_flight().count(), 2);
        // The next slot's sell goes too; its buy waits for the first buy's
        // inputs and change to be settled in the wallet.
        let txs2 = submitted(&a.handle(EARLY, reading(3, -100, 400)));
        assert_eq!(placed(&txs2), [(Side::Sell, 400, false)]);
        let finalized = |tx: &SignedTx| AgentInput::Status {
            hash: tx.hash(),
            status: TxProgress::Finalized,
        };
        let next = submitted(&a.handle(EARLY, finalized(&txs[0])));
        assert_eq!(placed(&next), [(Side::Buy, 300, true)]);
        for tx in [&txs[1], &txs2[0], &next[0]] {
            let _ = a.handle(EARLY, finalized(tx));
        }
        assert!(a.is_idle());
    }

    #[test]
    fn a_reading_becomes_one_signed_order() {
        let mut a = agent();
        let txs = submitted(&a.handle(EARLY, measured(1, -750)));
        assert_eq!(txs.len(), 1);
        let tx = txs[0].clone().verify().unwrap();
        assert_eq!(tx.tx().nonce, 5);
        match &tx.tx().body {
            TxBody::PlaceOrder {
                side, energy, slot, ..
            } => {
                assert_eq!(
                    (*side, *energy, *slot),
                    (Side::Sell, Energy::new(750), Slot(1))
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            a.handle(EARLY, measured(2, 0)).is_empty(),
            "zero places nothing"
        );
    }

    #[test]
    fn gross_metering_orders_a_buy_of_the_load_and_a_sell_of_the_pv() {
        let mut a = agent().metering(Metering::Gross);
        let order = |tx: &SignedTx| match &tx.tx.body {
            TxBody::PlaceOrder { side, energy, .. } => (*side, energy.get()),
            other => panic!("{other:?}"),
        };
        // A prosumer whose PV made 900 Wh while it used 300: a buy of the
        // 300 first, then (once the buy is final) a sell of the 900.
        let reading = AgentInput::Measured {
            slot: Slot(1),
            slot_of_day: 48,
            net_wh: -600,
            produced_wh: 900,
        };
        let txs = submitted(&a.handle(EARLY, reading));
        assert_eq!(
            txs.iter().map(order).collect::<Vec<_>>(),
            [(Side::Buy, 300)]
        );
        let finalized = AgentInput::Status {
            hash: txs[0].hash(),
            status: TxProgress::Finalized,
        };
        let txs = submitted(&a.handle(EARLY, finalized));
        assert_eq!(
            txs.iter().map(order).collect::<Vec<_>>(),
            [(Side::Sell, 900)]
        );
        assert_eq!(txs[0].tx.nonce, 6);
        // Its settlements are told apart by side.
        let finalized = AgentInput::Status {
            hash: txs[0].hash(),
            status: TxProgress::Finalized,
        };
        let _ = a.handle(EARLY, finalized);
        for side in [Side::Sell, Side::Buy] {
            let settled = AgentInput::Settled {
                slot: Slot(1),
                side: Some(side),
                matched: Energy::ZERO,
                market_price: None,
            };
            let _ = a.handle(EARLY, settled);
        }
        assert!(a.placed.is_empty(), "both orders settled");
        // A household without PV buys its load, as under net metering.
        let txs = submitted(&a.handle(EARLY, measured(2, 250)));
        assert_eq!(
            txs.iter().map(order).collect::<Vec<_>>(),
            [(Side::Buy, 250)]
        );
    }

    #[test]
    fn retries_resend_the_same_bytes_and_finality_advances_the_nonce() {
        let mut a = agent();
        let first = submitted(&a.handle(EARLY, measured(1, 300)))[0].clone();
        // A second reading waits while the first is in flight.
        assert!(submitted(&a.handle(EARLY, measured(2, 400))).is_empty());
        for status in [TxProgress::Unreachable, TxProgress::Unknown] {
            let again = submitted(&a.handle(
                EARLY,
                AgentInput::Status {
                    hash: first.hash(),
                    status,
                },
            ));
            assert_eq!(again, vec![first.clone()]);
        }
        let status = |status| AgentInput::Status {
            hash: first.hash(),
            status,
        };
        assert!(a.handle(EARLY, status(TxProgress::Pending)).is_empty());
        let next = submitted(&a.handle(EARLY, status(TxProgress::Finalized)));
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].tx.nonce, first.tx.nonce + 1);
        // A late answer about the old tx changes nothing.
        assert!(a.handle(EARLY, status(TxProgress::Unknown)).is_empty());
    }

    #[test]
    fn a_rejection_abandons_and_waits_for_the_chains_nonce() {
        let mut a = agent();
        let first = submitted(&a.handle(EARLY, measured(1, 300)))[0].clone();
        a.handle(EARLY, measured(2, 400));
        let effects = a.handle(
            EARLY,
            AgentInput::Status {
                hash: first.hash(),
                status: TxProgress::Rejected("bad nonce".into()),
            },
        );
        assert!(effects.contains(&AgentEffect::FetchNonce));
        assert!(submitted(&effects).is_empty());
        let next = submitted(&a.handle(EARLY, AgentInput::Nonce(11)));
        assert_eq!(next[0].tx.nonce, 11);
    }

    #[test]
    fn an_order_is_abandoned_once_its_slot_closed() {
        let mut a = agent();
        a.handle(EARLY, measured(1, 300));
        let close = genesis().close_of(Slot(1));
        let effects = a.handle(close, AgentInput::Tick);
        assert!(matches!(
            effects[0],
            AgentEffect::Abandoned { slot: Slot(1), .. }
        ));
        assert!(a.is_idle());
    }
}
