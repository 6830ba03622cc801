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

use crate::lots::LotCarry;
use crate::strategy::{BidContext, BidOutcome, BiddingStrategy, limit_for};
use crate::wallet::{MeterRing, OrderRequest, ShieldedWallet, WalletError};
use ed25519_dalek::SigningKey;
use quartier_enclave::auctioneer::{PublishedReceipt, Receipt, sealed_hash};
use quartier_enclave::sealed::{Epoch, HpkeKeyPair, OrderPayload, SignedOrder, seal};
use quartier_ledger::{Genesis, PoolOutput, SignedTx, Tx, TxBody};
use quartier_types::hash::Digest;
use quartier_types::{AccountId, Energy, Price, RegionId, RegionParams, Side, Slot, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use std::collections::{BTreeMap, VecDeque};

/// What the host tells the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentInput {
    /// The meter's net energy for `slot`: consumption minus own PV, in Wh.
    /// Positive is bought, negative sold, zero places no order.
    Measured {
        /// The slot measured.
        slot: Slot,
        /// The quarter hour of the day of the metered interval, `0..96`.
        slot_of_day: u32,
        /// Net energy in Wh.
        net_wh: i64,
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
    /// Mode B: the epoch keys the chain has published.
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
    /// How readings become order amounts (exact unless set in lots).
    lots: LotCarry,
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
            lots: LotCarry::new(0),
        }
    }

    /// Orders in whole lots of `lot_wh`, the rounding carried to later slots
    /// ([`LotCarry`]): the book shows fewer distinct amounts (mode A).
    #[must_use]
    pub fn in_lots(mut self, lot_wh: u64) -> MeterAgent {
        self.lots = LotCarry::new(lot_wh);
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

    /// The transaction in flight, if any (to poll its status).
    pub fn in_flight(&self) -> Option<&SignedTx> {
        self.orders.front().and_then(|o| o.tx.as_ref())
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
            } => {
                // What its PV can sell in a slot, as the chain registered it.
                let me = self.account.0;
                let sell_cap = self.shielding.as_ref().map_or(u64::MAX, |s| {
                    s.sellers
                        .iter()
                        .find(|(key, _)| *key == me)
                        .map_or(0, |(_, e)| e.get())
                });
                let net_wh = self.lots.order(net_wh, sell_cap);
                if net_wh == 0 && (self.sealing.is_some() || self.shielding.is_some()) {
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
                } else if net_wh != 0 {
                    let bid = BidContext {
                        side: if net_wh > 0 { Side::Buy } else { Side::Sell },
                        energy: Energy::new(net_wh.unsigned_abs()),
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
                if self.in_flight().map(SignedTx::hash) == Some(hash) {
                    self.progress(status, &mut effects);
                }
            }
            AgentInput::Nonce(nonce) => {
                // Only while nothing is in flight: an in-flight tx's fate is
                // learned from its status, never guessed from the nonce.
                if self.in_flight().is_none() {
                    self.next_nonce = nonce;
                }
            }
            AgentInput::Tick => {}
            AgentInput::EpochKeys(keys) => {
                if let Some(s) = self.sealing.as_mut() {
                    s.keys.extend(keys);
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
                matched,
                market_price,
            } => {
                if let Some(i) = self.placed.iter().position(|o| o.bid.slot == slot) {
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

    fn progress(&mut self, status: TxProgress, effects: &mut Vec<AgentEffect>) {
        match status {
            TxProgress::Finalized => {
                if let Some(order) = self.orders.pop_front() {
                    match self.shielding.as_mut() {
                        Some(s) => s.wallet.confirm(order.bid.slot, order.bid.side),
                        None => self.next_nonce = self.next_nonce.saturating_add(1),
                    }
                    self.placed.push(order);
                }
            }
            TxProgress::Pending => {}
            TxProgress::Unknown | TxProgress::Unreachable => {
                if let Some(tx) = self.in_flight() {
                    effects.push(AgentEffect::Submit(Box::new(tx.clone())));
                }
            }
            TxProgress::Rejected(reason) => {
                if let Some(order) = self.orders.pop_front() {
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
        let in_flight = self.in_flight().is_some();
        self.shielding.as_ref().is_some_and(|s| {
            s.wallet.awaits_key_images(|slot| {
                self.genesis.close_of(slot) <= now
                    && !(in_flight && self.orders.front().is_some_and(|o| o.bid.slot == slot))
            })
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
    /// nonce is known (no `FetchNonce` outstanding).
    fn start_next(&mut self, effects: &mut Vec<AgentEffect>) {
        if effects.contains(&AgentEffect::FetchNonce) {
            return;
        }
        let Some(head) = self.orders.front_mut() else {
            return;
        };
        if head.tx.is_some() {
            return;
        }
        if let Some(shielding) = self.shielding.as_mut() {
            let request = OrderRequest {
                region: self.region,
                params: self.params,
                slot: head.bid.slot,
                side: head.bid.side,
                limit: head.limit,
                energy: head.bid.energy,
            };
            if shielding.buy_ring.is_empty() {
                // The host has not fed the meter rings yet.
                return;
            }
            let ring = shielding.ring(head.bid.side, head.bid.energy);
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
                Ok(order) => {
                    let tx = Tx::one_time(chain_id, TxBody::PlaceShieldedOrder { order }, &secret);
                    head.tx = Some(tx.clone());
                    effects.push(AgentEffect::Submit(Box::new(tx)));
                }
                // Too little of the pool scanned for a ring yet: wait.
                Err(WalletError::PoolTooSmall(_)) => {}
                // No money for the escrow, or no ring with this meter yet:
                // this order can not be made; the next may.
                Err(e) => {
                    if let Some(order) = self.orders.pop_front() {
                        effects.push(AgentEffect::Abandoned {
                            slot: order.bid.slot,
                            reason: e.to_string(),
                        });
                    }
                    self.start_next(effects);
                }
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::{Preferences, StrategyKind};
    use rand_core::SeedableRng;

    fn genesis() -> Genesis {
        Genesis {
            chain_name: "agent-test".into(),
            dso: AccountId([1; 32]),
            utility: AccountId([2; 32]),
            validators: vec![AccountId([3; 32])],
            regions: vec![],
            slot_ms: 10_000,
            gate_ms: 2_000,
            lead_slots: 1,
            metered_ms: 900_000,
            allocations: vec![],
            sealed_market: None,
            shielded: None,
            history_slots: 0,
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
        use quartier_enclave::auctioneer::{Outcome, PublishedReceipt, ReceiptBody};
        use quartier_enclave::sealed::{CIPHERTEXT_LEN, EpochKeyPair};
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
        let receipt = quartier_enclave::auctioneer::Receipt {
            sealed: sealed_hash(sealed),
            wallet: None,
            outcome: Outcome::Refused(quartier_enclave::auctioneer::Refusal::SlotSettled),
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
