//! Deterministic tests of a mode B committee run by its hosts: three
//! [`HostMachine`]s, each with a real enclave (the simulated platform),
//! reaching each other only through the enclaves' RPC dispatch, on a real
//! ledger whose blocks a quorum of four validators certifies (the enclaves
//! check every block, proof and quote themselves). Households seal orders
//! to the published epoch keys every slot. The clock is simulated and
//! everything runs in one thread: a run is the same every time.
//!
//! With `t = 2` of 3: one member silent, down and restarted, or answering
//! forged shares does not stop the market (every closed batch is reported,
//! every epoch key published, whoever's turn it was); an outsider calling
//! every enclave's RPC throughout plants no key, takes no state and stops
//! nothing; with two members silent, nothing more is signed.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use commonware_codec::Write as _;
use commonware_codec::varint::UInt;
use commonware_cryptography::ed25519;
use ed25519_dalek::SigningKey;
use quartier_enclave::attestation::{Measurement, SimulatedAttestationService};
use quartier_enclave::epoch::{IdentityKey, share};
use quartier_enclave::host::{ChainView, Effect, HostMachine, HostSettings, Input};
use quartier_enclave::rpc::{Request, Response};
use quartier_enclave::sealed::{Epoch, EpochKeyPair, HpkeKeyPair, OrderPayload, SignedOrder, seal};
use quartier_enclave::service::{
    EnclaveService, FinalizedBatch, FinalizedRecords, SimulatedPlatform,
};
use quartier_ledger::{
    BlockContext, Genesis, MeterRole, SealedMarketPolicy, SignedTx, State, StateKey, Tx, TxBody,
    execute_block,
};
use quartier_testkit::{id, key};
use quartier_types::{
    AccountId, Energy, Height, Money, Price, RegionId, RegionParams, Side, Slot, Timestamp,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;
use std::collections::BTreeMap;

const MEASUREMENT: Measurement = Measurement([6; 32]);
const REGION: RegionId = RegionId(1);
/// A region nobody trades in but where a test says so.
const IDLE: RegionId = RegionId(2);
const SLOT_MS: u64 = 60_000;
/// The simulated clock's step: hosts tick, households act, and a block is
/// made every step.
const STEP_MS: u64 = 500;

/// What a member's host and enclave do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Honest,
    /// Down: its host does nothing and its enclave answers nothing.
    Silent,
    /// Runs its host, but its enclave's signature shares reach other
    /// members' hosts altered (after the enclave signed them).
    SharesAltered,
    /// Its host does nothing; its enclave answers nothing either, but the
    /// host planted epoch keys before (see the test).
    Equivocated,
}

fn params() -> RegionParams {
    RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500)).unwrap()
}

fn genesis(keys: &[ed25519::PrivateKey], vendor: &SimulatedAttestationService) -> Genesis {
    Genesis {
        regions: vec![(REGION, params()), (IDLE, params())],
        slot_ms: SLOT_MS,
        gate_ms: 5_000,
        metered_ms: SLOT_MS,
        allocations: vec![(id(&key("utility")), Money::new(1_000_000_000_000))],
        sealed_market: Some(SealedMarketPolicy {
            attestation: vec![vendor.root()],
            vendors: Default::default(),
            measurements: vec![MEASUREMENT],
            threshold: 2,
            epoch_slots: 4,
            first_committee: Default::default(),
        }),
        epoch_blocks: EPOCH_BLOCKS,
        ..Genesis::new(
            "hosts-test",
            id(&key("dso")),
            id(&key("utility")),
            keys.iter()
                .map(quartier_testkit::validator_account)
                .collect(),
        )
    }
}

/// Blocks per consensus epoch: about two a slot (a block every step).
const EPOCH_BLOCKS: u64 = 64;

/// Validator `k`'s ledger signing key (the same Ed25519 key).
fn ledger_key(k: &ed25519::PrivateKey) -> SigningKey {
    let bytes = commonware_codec::Encode::encode(k);
    SigningKey::from_bytes(&bytes.as_ref()[..32].try_into().unwrap())
}

/// The chain: a real ledger state, a block per step, each certified by
/// three of the four validators.
struct Chain {
    genesis: Genesis,
    keys: Vec<ed25519::PrivateKey>,
    state: State,
    queued: Vec<SignedTx>,
    pending: BTreeMap<AccountId, u64>,
    /// The tip's block bytes and certificate.
    tip: (Vec<u8>, Vec<u8>),
    /// The evidence of each validator-set change, as a node serves it.
    changes: Vec<quartier_light::EpochChange>,
    /// Every block's results that were refused (by transaction kind).
    refused: Vec<String>,
}

impl Chain {
    fn new(genesis: Genesis, keys: Vec<ed25519::PrivateKey>) -> Chain {
        let mut state = State::from_genesis(genesis.clone()).unwrap();
        state.commit().unwrap();
        let mut chain = Chain {
            genesis,
            keys,
            state,
            queued: Vec::new(),
            pending: BTreeMap::new(),
            tip: (Vec::new(), Vec::new()),
            changes: Vec::new(),
            refused: Vec::new(),
        };
        chain.certify();
        chain
    }

    fn certify(&mut self) {
        let height = self.state.meta().height.0;
        let mut block = vec![0u8; 32];
        UInt(height).write(&mut block);
        self.state.meta().time.0.write(&mut block);
        block.extend_from_slice(&self.state.root().0);
        0u32.write(&mut block);
        // Signed by a quorum of the set of the block's epoch, in its round.
        let epoch = self.state.consensus_epoch_of(Height(height));
        let set = self.state.validator_set(epoch).unwrap().clone();
        let signers: Vec<ed25519::PrivateKey> = self
            .keys
            .iter()
            .filter(|k| set.contains(&quartier_testkit::validator_account(k)))
            .cloned()
            .collect();
        let n = signers.len();
        let quorum: Vec<usize> = (0..n - (n - 1) / 3).collect();
        let finalization = quartier_light::testing::finalization_in(
            &self.genesis,
            &signers,
            &quorum,
            epoch,
            height + 7,
            quartier_light::block_digest(&block),
        );
        // The last block of an epoch whose successor has another set.
        let next = height + 1;
        if next.is_multiple_of(EPOCH_BLOCKS)
            && self.state.validator_sets().last().unwrap().from_epoch == next / EPOCH_BLOCKS
        {
            self.changes.push(quartier_light::EpochChange {
                block: block.clone(),
                finalization: finalization.clone(),
                proof: self.state.prove(StateKey::ValidatorSets).unwrap(),
            });
        }
        self.tip = (block, finalization);
    }

    fn queue(&mut self, signer: &SigningKey, body: TxBody) {
        let who = id(signer);
        let pending = self.pending.entry(who).or_default();
        let tx = Tx {
            chain_id: self.state.chain_id(),
            signer: who,
            nonce: self.state.account(&who).nonce + *pending,
            body,
        }
        .sign(signer);
        *pending += 1;
        self.queued.push(tx);
    }

    fn block(&mut self, time: u64) {
        let ctx = BlockContext {
            height: Height(self.state.meta().height.0 + 1),
            time: Timestamp(time),
        };
        let txs = std::mem::take(&mut self.queued);
        let kinds: Vec<String> = txs
            .iter()
            .map(|t| format!("{:?}", t.tx.body).chars().take(24).collect())
            .collect();
        self.pending.clear();
        let outcome = execute_block(&mut self.state, &ctx, txs).unwrap();
        for (kind, result) in kinds.iter().zip(&outcome.results) {
            if let Err(e) = result {
                self.refused.push(format!("{kind}: {e}"));
            }
        }
        self.certify();
        supply_holds(&self.state);
    }

    fn records(&self, keys: Vec<StateKey>) -> FinalizedRecords {
        FinalizedRecords {
            block: self.tip.0.clone(),
            finalization: self.tip.1.clone(),
            proofs: keys
                .into_iter()
                .map(|k| self.state.prove(k).unwrap())
                .collect(),
        }
    }

    fn view(&self) -> ChainView {
        let s = &self.state;
        ChainView {
            chain_id: s.chain_id(),
            time_ms: s.meta().time.0,
            slot_ms: SLOT_MS,
            lead_slots: self.genesis.lead_slots,
            regions: vec![REGION, IDLE],
            policy: self.genesis.sealed_market.clone().unwrap(),
            enclaves: s.enclaves().clone(),
            measurements: s.measurements().clone(),
            committee: s.committee().cloned(),
            candidates: s.committee_candidates().keys().copied().collect(),
            epochs: s.epoch_keys().clone(),
            batches: s.sealed_batches().map(|(k, _)| k).collect(),
            reports: [REGION, IDLE]
                .into_iter()
                .filter_map(|region| {
                    s.region_reports(region)
                        .next_back()
                        .map(|r| (region, r.clone()))
                })
                .collect(),
            validator_sets: s.validator_sets().len(),
        }
    }
}

/// Money is conserved: every unit minted is in a balance, in escrow or in
/// the enclaves' custody.
fn supply_holds(s: &State) {
    let balances: u64 = s.accounts().map(|(_, a)| a.balance.get()).sum();
    let m = s.meta();
    assert_eq!(
        m.supply.get(),
        balances + m.escrow.get() + m.custody.get(),
        "supply = balances + escrow + custody"
    );
}

/// One member: its host, its enclave (on its own machine: its own
/// monotonic counter) and what it does.
struct Member {
    machine: HostMachine,
    platform: SimulatedPlatform,
    enclave: EnclaveService,
    behaviour: Behaviour,
    /// Its state as last sealed (what a restart resumes from).
    sealed: Vec<u8>,
}

/// The whole committee, its chain and its households.
struct Market {
    chain: Chain,
    /// Another machine of the members' kind (the outsider runs its enclave on it).
    platform: SimulatedPlatform,
    settings: Vec<HostSettings>,
    members: Vec<Member>,
    households: Vec<(SigningKey, Side)>,
    rng: ChaCha20Rng,
    now_ms: u64,
    /// Slots whose orders the households sent.
    traded: Vec<Slot>,
    /// Requests an outsider sends to every enclave each step.
    outsider: Vec<Request>,
    /// Answers the outsider got that were not refusals.
    outsider_gains: Vec<String>,
    /// When each epoch's key was published (chain time, ms).
    published_at: BTreeMap<Epoch, u64>,
}

impl Market {
    fn new() -> Market {
        let vendor = SimulatedAttestationService::new([42; 32]);
        let keys = quartier_testkit::validator_keys_of(9, 5);
        let genesis = genesis(&keys[..4], &vendor);
        let mut chain = Chain::new(genesis, keys);
        let platform = || SimulatedPlatform::new([5; 32], MEASUREMENT, vendor.root());
        let mut members: Vec<Member> = (0..3)
            .map(|_| {
                let platform = platform();
                Member {
                    machine: HostMachine::new(HostSettings::new(
                        3,
                        vendor.quote(MEASUREMENT, [0; 64]),
                    )),
                    enclave: EnclaveService::new(&platform).unwrap(),
                    platform,
                    behaviour: Behaviour::Honest,
                    sealed: Vec::new(),
                }
            })
            .collect();
        members.sort_by_key(|m| m.enclave.account());
        let settings: Vec<HostSettings> = members
            .iter()
            .map(|m| HostSettings::new(3, vendor.quote(MEASUREMENT, m.enclave.report_data())))
            .collect();
        for (m, s) in members.iter_mut().zip(&settings) {
            m.machine = HostMachine::new(s.clone());
        }
        let households = vec![
            (key("p1"), Side::Sell),
            (key("p2"), Side::Sell),
            (key("c1"), Side::Buy),
            (key("c2"), Side::Buy),
        ];
        for (k, side) in &households {
            let (role, pv_watts) = match side {
                Side::Sell => (MeterRole::Prosumer, 5_000),
                Side::Buy => (MeterRole::Consumer, 0),
            };
            chain.queue(
                &key("dso"),
                TxBody::RegisterMeter {
                    meter: id(k),
                    region: REGION,
                    role,
                    pv_watts,
                },
            );
            chain.queue(
                &key("utility"),
                TxBody::Mint {
                    to: id(k),
                    amount: Money::new(10_000_000_000),
                },
            );
        }
        chain.block(STEP_MS);
        Market {
            chain,
            platform: platform(),
            settings,
            members,
            households,
            rng: ChaCha20Rng::from_seed([8; 32]),
            now_ms: STEP_MS,
            traded: Vec::new(),
            outsider: Vec::new(),
            outsider_gains: Vec::new(),
            published_at: BTreeMap::new(),
        }
    }

    fn slot(&self) -> Slot {
        Slot(self.now_ms / SLOT_MS)
    }

    fn index_of(&self, account: AccountId) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.enclave.account() == account)
    }

    /// Member `to`'s answer to `request` from member `from`'s host.
    fn deliver(&mut self, from: usize, to: usize, request: Request) -> Option<Response> {
        let member = &mut self.members[to];
        match member.behaviour {
            Behaviour::Silent | Behaviour::Equivocated => None,
            Behaviour::Honest => Some(member.enclave.handle(request)),
            Behaviour::SharesAltered => match member.enclave.handle(request) {
                Response::Share(mut s, signature) if from != to => {
                    if let Some(b) = s.first_mut() {
                        *b ^= 1;
                    }
                    Some(Response::Share(s, signature))
                }
                other => Some(other),
            },
        }
    }

    fn execute(&mut self, i: usize, effect: Effect) -> Input {
        match effect {
            Effect::FetchGenesis => Input::Genesis(Some(self.chain.genesis.clone())),
            Effect::FetchValidatorSets => Input::ValidatorSets(Some(self.chain.changes.clone())),
            Effect::FetchRegistry { accounts } => {
                let keys = [
                    StateKey::Genesis,
                    StateKey::Measurements,
                    StateKey::Committee,
                ]
                .into_iter()
                .chain(accounts.into_iter().map(StateKey::Enclave))
                .collect();
                Input::Records(Some(self.chain.records(keys)))
            }
            Effect::FetchEpochs => Input::Records(Some(
                self.chain
                    .records(vec![StateKey::Genesis, StateKey::Epochs]),
            )),
            Effect::FetchBatch { region, slot } => {
                let s = &self.chain.state;
                Input::Batch(Some(Box::new(FinalizedBatch {
                    block: self.chain.tip.0.clone(),
                    finalization: self.chain.tip.1.clone(),
                    proof: s.prove(StateKey::SealedBatch(region, slot)).unwrap(),
                    genesis: s.prove(StateKey::Genesis).unwrap(),
                })))
            }
            Effect::FetchQuote { member } => Input::Quote(
                self.index_of(member)
                    .filter(|j| self.members[*j].behaviour != Behaviour::Silent)
                    .map(|j| Box::new(self.settings[j].quote.clone())),
            ),
            Effect::Call { member, request } => {
                let answer = self
                    .index_of(member)
                    .and_then(|j| self.deliver(i, j, request));
                Input::Answer(answer)
            }
            Effect::Submit(body) => {
                let signer = self.members[i].enclave.account_key().clone();
                self.chain.queue(&signer, body);
                Input::Submitted(true)
            }
            Effect::Seal => {
                let m = &mut self.members[i];
                m.sealed = m.enclave.seal(&m.platform).unwrap();
                Input::Sealed(true)
            }
        }
    }

    /// Member `i`'s host runs one tick to its end.
    fn tick(&mut self, i: usize) {
        if matches!(
            self.members[i].behaviour,
            Behaviour::Silent | Behaviour::Equivocated
        ) {
            return;
        }
        let now = self.now_ms * 1_000;
        let mut input = Input::Tick(Box::new(self.chain.view()));
        for _ in 0..10_000 {
            let m = &mut self.members[i];
            let Some(effect) = m.machine.handle(now, input, &mut m.enclave) else {
                return;
            };
            input = self.execute(i, effect);
        }
        panic!("a tick that does not end");
    }

    /// The households' orders for the current slot, once its epoch key is
    /// published (the first slot with a committee, a deposit from each
    /// buyer).
    fn trade(&mut self) {
        let slot = self.slot();
        let policy = self.chain.genesis.sealed_market.clone().unwrap();
        let epoch = policy.epoch_of(slot);
        let Some(public) = self.chain.state.epoch_keys().get(&epoch).copied() else {
            return;
        };
        if self.traded.contains(&slot) {
            return;
        }
        if self.traded.is_empty() {
            for (k, side) in self.households.clone() {
                if side == Side::Buy {
                    self.chain.queue(
                        &k,
                        TxBody::DepositToAuctioneer {
                            amount: Money::new(5_000_000_000),
                        },
                    );
                }
            }
        }
        self.traded.push(slot);
        let chain = self.chain.state.chain_id().0.0;
        for (n, (k, side)) in self.households.clone().into_iter().enumerate() {
            let (limit, energy) = match side {
                Side::Sell => (9_000 + 500 * n as u64, 40 + slot.0 % 7),
                Side::Buy => (15_000 - 300 * n as u64, 30 + slot.0 % 11),
            };
            let payload = OrderPayload {
                chain,
                wallet: id(&k),
                region: REGION,
                slot,
                epoch,
                side,
                limit: Price::new(limit),
                energy: Energy::new(energy),
                receipt_key: HpkeKeyPair::generate(&mut self.rng).public_key(),
            };
            let sealed = seal(&public, &SignedOrder::sign(payload, &k), &mut self.rng).unwrap();
            self.chain.queue(&k, TxBody::SubmitSealedOrder { sealed });
        }
    }

    /// The outsider's requests, each to every enclave.
    fn intrude(&mut self) {
        for request in self.outsider.clone() {
            for m in &mut self.members {
                if m.behaviour == Behaviour::Silent {
                    continue;
                }
                match m.enclave.handle(request.clone()) {
                    Response::Refused(_) => {}
                    // The first few suffice to say what went wrong.
                    other if self.outsider_gains.len() < 4 => self
                        .outsider_gains
                        .push(format!("{:.60}", format!("{other:?}"))),
                    _ => {}
                }
            }
        }
    }

    /// Runs until the chain's time reaches `until_ms`.
    fn run_until(&mut self, until_ms: u64) {
        while self.now_ms < until_ms {
            self.now_ms += STEP_MS;
            self.step();
        }
    }

    /// One step: every host ticks, the households and the outsider act,
    /// and a block is made.
    fn step(&mut self) {
        for i in 0..self.members.len() {
            self.tick(i);
        }
        self.trade();
        self.intrude();
        self.chain.block(self.now_ms);
        for epoch in self.chain.state.epoch_keys().keys() {
            self.published_at.entry(*epoch).or_insert(self.now_ms);
        }
    }

    /// The chain refused only what a committee's race explains: a second
    /// member's epoch key or report for one already taken.
    fn refusals_are_races(&self) {
        for r in &self.chain.refused {
            assert!(
                r.contains("not later than the last published") || r.contains("already"),
                "{r}"
            );
        }
    }

    /// Member `i` goes down (`true`) or comes back (`false`): restarted, its
    /// host from nothing, its enclave from the state it last sealed.
    fn down(&mut self, i: usize, down: bool) {
        let m = &mut self.members[i];
        if down {
            m.behaviour = Behaviour::Silent;
            return;
        }
        m.enclave = EnclaveService::unseal(&m.sealed, &m.platform).unwrap();
        m.machine = HostMachine::new(self.settings[i].clone());
        m.behaviour = Behaviour::Honest;
    }

    /// Slots traded whose batches closed and were not reported.
    fn unreported(&self) -> Vec<Slot> {
        let close_before = self.now_ms.saturating_sub(10_000);
        self.traded
            .iter()
            .copied()
            .filter(|s| self.chain.genesis.close_of(*s).0 < close_before)
            .filter(|s| self.chain.state.sealed_report(REGION, *s).is_none())
            .collect()
    }

    fn reports(&self) -> usize {
        self.chain.state.region_reports(REGION).count()
    }
}

#[test]
fn three_honest_hosts_form_a_committee_publish_keys_and_report_every_slot() {
    let mut market = Market::new();
    market.run_until(8 * SLOT_MS);
    assert!(market.chain.state.committee().is_some());
    assert!(market.traded.len() >= 6, "{:?}", market.traded);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
    assert!(market.reports() >= 5);
    market.refusals_are_races();
    // Every epoch up to the next one's has a key, whoever's turn it was.
    let epochs = market.chain.state.epoch_keys();
    assert!(epochs.len() >= 3, "{epochs:?}");
    // Trades happened: custody moved between households.
    let last = market
        .chain
        .state
        .region_reports(REGION)
        .next_back()
        .unwrap();
    assert!(
        last.summary.aggregates.totals.local_energy > Energy::ZERO,
        "{last:?}"
    );
}

/// A member down for three slots (the turn member of an epoch whose key is
/// due meanwhile): the others publish that key ahead of its slots after a
/// second per member (before, only the turn member created it ahead, the
/// others once its epoch had begun, so orders could not be placed ahead);
/// they report every slot, the member's turns included; restarted from its
/// sealed state, it catches up from a peer and clears with the others again.
#[test]
fn a_member_down_for_slots_neither_stops_keys_nor_reports_and_catches_up() {
    let mut market = Market::new();
    market.run_until(2 * SLOT_MS + 30_000);
    let policy = market.chain.genesis.sealed_market.clone().unwrap();
    // Epoch 2 (slots 8 to 11) is member 2's turn (2 mod 3).
    assert_eq!(policy.epoch_of(Slot(8)), Epoch(2));
    let committee = market.chain.state.committee().cloned().unwrap();
    assert_eq!(committee.members[2], market.members[2].enclave.account());
    market.down(2, true);
    market.run_until(9 * SLOT_MS);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
    let published = market.published_at.get(&Epoch(2)).copied().unwrap();
    // Published before its first slot began: orders for slot 8 were
    // accepted during slot 7.
    assert!(published < 8 * SLOT_MS, "{published}");
    let down = market.members[2].enclave.last_cleared(REGION);
    market.down(2, false);
    market.run_until(11 * SLOT_MS);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
    let latest = market
        .chain
        .state
        .region_reports(REGION)
        .next_back()
        .unwrap()
        .summary
        .slot;
    let back = market.members[2].enclave.last_cleared(REGION);
    assert!(back > down, "{back:?} {down:?}");
    assert!(back >= Some(latest), "{back:?} {latest:?}");
}

/// A member whose signature shares reach the others' hosts altered is left
/// out of every session: the other two sign every report and key.
#[test]
fn a_member_forging_its_shares_is_left_out_and_every_slot_is_reported() {
    let mut market = Market::new();
    market.run_until(SLOT_MS);
    market.members[1].behaviour = Behaviour::SharesAltered;
    market.run_until(8 * SLOT_MS);
    assert!(market.traded.len() >= 6, "{:?}", market.traded);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
    assert!(market.chain.state.epoch_keys().len() >= 3);
}

/// With two of three members down, the last one gets nothing signed: no
/// report and no epoch key after they went down.
#[test]
fn with_two_members_down_nothing_more_is_signed() {
    let mut market = Market::new();
    market.run_until(3 * SLOT_MS);
    assert!(market.reports() >= 1);
    market.down(1, true);
    market.down(2, true);
    // Whatever was queued before goes into a block first.
    market.chain.block(market.now_ms);
    let (reports, epochs) = (market.reports(), market.chain.state.epoch_keys().len());
    market.run_until(10 * SLOT_MS);
    assert_eq!(market.reports(), reports);
    assert_eq!(market.chain.state.epoch_keys().len(), epochs);
    // The lone member is not stuck: back with the others, every slot is
    // reported again.
    market.down(1, false);
    market.down(2, false);
    let traded_before = market.traded.len();
    market.run_until(13 * SLOT_MS);
    assert!(market.traded.len() > traded_before);
    assert!(market.reports() > reports);
}

/// An outsider that runs a genuine enclave of its own, outside the
/// committee, calls every member's RPC every step: epoch-key shares it
/// sealed for the committee's context (the group key is public), a catch-up
/// sealed to itself, a DKG invitation naming a member and itself, and a
/// signing request for a key of its own. Everything is refused, no key of
/// its own is ever published, and every slot is still reported.
#[test]
fn an_outsider_calling_every_rpc_throughout_plants_no_key_and_stops_nothing() {
    let mut market = Market::new();
    market.run_until(SLOT_MS / 2);
    let committee = market.chain.state.committee().cloned().unwrap();
    let chain = market.chain.state.chain_id().0.0;
    let mut rng = ChaCha20Rng::from_seed([66; 32]);
    let outsider = IdentityKey::generate(&mut rng);
    let vendor = SimulatedAttestationService::new([42; 32]);
    let own = EnclaveService::new(&market.platform).unwrap();
    let own_quote = vendor.quote(MEASUREMENT, own.report_data());
    let identities: Vec<[u8; 32]> = market
        .members
        .iter()
        .map(|m| m.enclave.identity_key())
        .collect();
    let mut planted = Vec::new();
    let mut requests = Vec::new();
    for epoch in 0..6 {
        let key = EpochKeyPair::generate(Epoch(epoch), &mut rng);
        planted.push(key.public_key());
        for share in share(
            &key,
            &outsider,
            &identities,
            &committee.group_key.0,
            &mut rng,
        ) {
            requests.push(Request::ReceiveEpochKey {
                share,
                public_key: key.public_key(),
            });
        }
        requests.push(Request::SignCommit {
            session: u64::MAX - epoch,
            purpose: quartier_enclave::service::Purpose::EpochKey {
                epoch: Epoch(epoch),
                public_key: key.public_key(),
            },
            by: 0,
            signature: [0; 64],
        });
    }
    requests.push(Request::CatchUp {
        to: outsider.public_key(),
    });
    requests.push(Request::DkgRound1 {
        index: 0,
        t: 2,
        attempt: u64::MAX,
        chain,
        members: vec![market.settings[0].quote.clone(), own_quote],
        invitation: [0; 64],
    });
    market.outsider = requests;
    market.run_until(8 * SLOT_MS);
    assert_eq!(market.outsider_gains, Vec::<String>::new());
    assert_eq!(market.unreported(), Vec::<Slot>::new());
    assert!(market.traded.len() >= 6, "{:?}", market.traded);
    for key in market.chain.state.epoch_keys().values() {
        assert!(!planted.contains(key));
    }
    // The committee is the one the hosts formed, still.
    let now = market.chain.state.committee().unwrap();
    assert_eq!(
        (&now.members, now.group_key),
        (&committee.members, committee.group_key)
    );
}

/// The turn member of epoch 1 (member 1) plants two different keys for it,
/// one at each other member, and goes silent: no two members hold the same
/// one, so neither gets signed. Before, a member signed whatever candidate
/// it held and never created its own, so epoch 1 never got a key; now a
/// member publishes only its own, created on failover, ahead of the epoch.
#[test]
fn an_equivocating_turn_member_does_not_hold_an_epoch_up() {
    let mut market = Market::new();
    market.run_until(20_000);
    let committee = market.chain.state.committee().cloned().unwrap();
    assert_eq!(committee.members[1], market.members[1].enclave.account());
    let policy = market.chain.genesis.sealed_market.clone().unwrap();
    assert_eq!(policy.epoch_of(Slot(4)), Epoch(1));
    assert!(!market.chain.state.epoch_keys().contains_key(&Epoch(1)));
    let (k1, to_0) = market.members[1]
        .enclave
        .create_epoch_key(Epoch(1))
        .unwrap();
    let (k2, to_2) = market.members[1]
        .enclave
        .create_epoch_key(Epoch(1))
        .unwrap();
    assert_ne!(k1, k2);
    let identity = |m: &Market, i: usize| m.members[i].enclave.identity_key();
    for (shares, public_key, to) in [(to_0, k1, 0), (to_2, k2, 2)] {
        let share = shares
            .into_iter()
            .find(|s| s.to == identity(&market, to))
            .unwrap();
        let answer = market.members[to]
            .enclave
            .handle(Request::ReceiveEpochKey { share, public_key });
        assert_eq!(answer, Response::EpochKeyReceived);
    }
    market.members[1].behaviour = Behaviour::Equivocated;
    market.run_until(4 * SLOT_MS);
    let published = market.published_at.get(&Epoch(1)).copied();
    assert!(published.is_some_and(|t| t < 4 * SLOT_MS), "{published:?}");
    let key = market.chain.state.epoch_keys()[&Epoch(1)];
    assert!(key != k1 && key != k2);
    market.run_until(7 * SLOT_MS);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
}

/// Two members down while their keys were out: the third clears the
/// backlog up to its cap ahead of the chain's reports (3 here) and waits.
/// When the others return, the backlog is reported and every member clears
/// on. Before, the reported batches still counted against the cap (they
/// were pruned after the cap's check), so every member stayed at the cap
/// for good and the market stopped.
#[test]
fn a_backlog_at_the_cap_is_cleared_once_reported() {
    let mut market = Market::new();
    for (m, settings) in market.members.iter_mut().zip(&mut market.settings) {
        settings.cleared_ahead = 3;
        m.machine = HostMachine::new(settings.clone());
    }
    market.run_until(8 * SLOT_MS);
    market.down(1, true);
    market.down(2, true);
    market.run_until(12 * SLOT_MS + 30_000);
    market.down(1, false);
    market.down(2, false);
    market.run_until(16 * SLOT_MS);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
}

/// Governance votes a fifth validator in and one of the first four out
/// while the committee clears: from each boundary on the chain's blocks
/// are certified by the new set, in the new epoch's rounds. Before, an
/// enclave checked certificates against the genesis set only and refused
/// them: nothing was cleared or reported after the first change. Now each
/// host teaches its enclave the changes, and every slot is reported.
#[test]
fn mode_b_reports_every_slot_across_validator_changes() {
    let mut market = Market::new();
    market.run_until(3 * SLOT_MS);
    let keys = quartier_testkit::validator_keys_of(9, 5);
    let account = |k: &ed25519::PrivateKey| AccountId(ledger_key(k).verifying_key().to_bytes());
    let vote = |market: &mut Market, change, proposer: usize, voters: &[usize]| {
        let proposal = market.chain.state.meta().next_proposal;
        market
            .chain
            .queue(&ledger_key(&keys[proposer]), TxBody::Propose { change });
        for &v in voters {
            market.chain.queue(
                &ledger_key(&keys[v]),
                TxBody::Vote {
                    proposal,
                    approve: true,
                },
            );
        }
    };
    vote(
        &mut market,
        quartier_ledger::GovernanceChange::Add(account(&keys[4])),
        0,
        &[1, 2],
    );
    // Voted in, the fifth joins with its own key.
    market.run_until(3 * SLOT_MS + 2 * STEP_MS);
    market
        .chain
        .queue(&ledger_key(&keys[4]), TxBody::JoinValidators);
    market.run_until(5 * SLOT_MS);
    vote(
        &mut market,
        quartier_ledger::GovernanceChange::Remove(account(&keys[0])),
        1,
        &[2, 3, 4],
    );
    market.run_until(10 * SLOT_MS);
    let sets = market.chain.state.validator_sets();
    assert_eq!(sets.len(), 3, "{sets:?}");
    assert_eq!(market.chain.changes.len(), 2);
    assert_eq!(market.unreported(), Vec::<Slot>::new());
    // Reports after the second change's boundary.
    let changed_at = sets[2].from_epoch * EPOCH_BLOCKS;
    let late = market
        .chain
        .state
        .region_reports(REGION)
        .filter(|r| r.height.0 > changed_at)
        .count();
    assert!(late >= 3, "{late} reports after height {changed_at}");
    market.refusals_are_races();
}

/// The validators revoke the committee's measurement (its build turned out
/// to leak, say): every member is evicted. From then on no epoch key is
/// published and no order or deposit is taken (the evicted enclaves could
/// read them); the evicted members still clear and report every batch the
/// chain closed, and a withdrawal asked after the revocation is paid out.
/// Before, a revoked measurement left its enclaves in office, keying
/// epochs and opening orders as if nothing had happened.
#[test]
fn revoking_the_committees_measurement_stops_its_intake_and_it_still_pays_out() {
    let mut market = Market::new();
    market.run_until(3 * SLOT_MS);
    assert!(market.reports() >= 1);
    market.pass(&[quartier_ledger::GovernanceChange::RevokeMeasurement(
        MEASUREMENT,
    )]);
    market.run_until(3 * SLOT_MS + STEP_MS);
    let committee = market.chain.state.committee().cloned().unwrap();
    assert_eq!(committee.evicted, committee.members);
    assert!(market.chain.state.enclaves().is_empty());
    let published = market.chain.state.epoch_keys().clone();
    let refused_before = market.chain.refused.len();
    let c1 = key("c1");
    let balance = market.chain.state.account(&id(&c1)).balance;
    let amount = Money::new(1_000_000_000);
    market
        .chain
        .queue(&c1, TxBody::RequestWithdrawal { amount });
    market.run_until(9 * SLOT_MS);
    assert_eq!(
        market.chain.state.epoch_keys(),
        &published,
        "an evicting committee keyed an epoch"
    );
    assert!(
        market
            .chain
            .refused
            .iter()
            .any(|r| r.starts_with("SubmitSealedOrder") && r.contains("evicted members")),
        "{:?}",
        market.chain.refused
    );
    // Nor did its hosts try to: they make no key its members could read.
    let later = &market.chain.refused[refused_before..];
    let tried = later.iter().find(|r| r.starts_with("PublishEpochKey"));
    assert_eq!(tried, None);
    // Every batch the chain closed was reported, the withdrawal's too.
    assert_eq!(market.chain.state.sealed_batches().count(), 0);
    assert_eq!(
        market.chain.state.account(&id(&c1)).balance,
        balance.checked_add(amount).unwrap()
    );
}

impl Market {
    /// Three more members' hosts, of enclaves built from `measurement`
    /// (they register once the chain allows it).
    fn add_members(&mut self, measurement: Measurement) {
        let vendor = SimulatedAttestationService::new([42; 32]);
        for _ in 0..3 {
            let platform = SimulatedPlatform::new([5; 32], measurement, vendor.root());
            let enclave = EnclaveService::new(&platform).unwrap();
            let settings = HostSettings::new(3, vendor.quote(measurement, enclave.report_data()));
            self.members.push(Member {
                machine: HostMachine::new(settings.clone()),
                enclave,
                platform,
                behaviour: Behaviour::Honest,
                sealed: Vec::new(),
            });
            self.settings.push(settings);
        }
    }

    /// Validator 0 proposes each of `changes`, validators 1 and 2 vote for
    /// them (3 of the 4: they pass).
    fn pass(&mut self, changes: &[quartier_ledger::GovernanceChange]) {
        let keys = quartier_testkit::validator_keys_of(9, 5);
        for change in changes {
            let proposal = self.chain.state.meta().next_proposal
                + self
                    .chain
                    .queued
                    .iter()
                    .filter(|t| matches!(t.tx.body, TxBody::Propose { .. }))
                    .count() as u64;
            self.chain
                .queue(&ledger_key(&keys[0]), TxBody::Propose { change: *change });
            for v in [1, 2] {
                self.chain.queue(
                    &ledger_key(&keys[v]),
                    TxBody::Vote {
                        proposal,
                        approve: true,
                    },
                );
            }
        }
    }
}

/// The whole way out of a broken build: the validators revoke the
/// committee's measurement and allow a fixed one; enclaves of the fixed one
/// register, form a committee outside the evicted one and vote for it; the
/// validators seat it; the evicted members hand it their state (the
/// prepaid ledger and the keys of the batches still waiting); it reports
/// from their ledger, keys the next epochs itself and the market trades
/// again, with custody conserved. Before, nothing of this existed: a
/// revoked committee stayed in office, and no other could take its
/// ledger over.
#[test]
fn a_committee_seated_in_place_of_an_evicted_one_takes_its_state_over_and_trades() {
    let mut market = Market::new();
    market.run_until(2 * SLOT_MS);
    // One sale in the other region, reported by the first committee; the
    // region stays idle from then on, so its latest report is that
    // committee's after the hand-over.
    let p3 = key("p3");
    market.chain.queue(
        &key("dso"),
        TxBody::RegisterMeter {
            meter: id(&p3),
            region: IDLE,
            role: MeterRole::Prosumer,
            pv_watts: 5_000,
        },
    );
    market.run_until(2 * SLOT_MS + STEP_MS);
    let slot = market.slot();
    let epoch = market
        .chain
        .genesis
        .sealed_market
        .as_ref()
        .unwrap()
        .epoch_of(slot);
    let public = *market.chain.state.epoch_keys().get(&epoch).unwrap();
    let payload = OrderPayload {
        chain: market.chain.state.chain_id().0.0,
        wallet: id(&p3),
        region: IDLE,
        slot,
        epoch,
        side: Side::Sell,
        limit: Price::new(9_000),
        energy: Energy::new(50),
        receipt_key: HpkeKeyPair::generate(&mut market.rng).public_key(),
    };
    let sealed = seal(&public, &SignedOrder::sign(payload, &p3), &mut market.rng).unwrap();
    market
        .chain
        .queue(&p3, TxBody::SubmitSealedOrder { sealed });
    market.run_until(3 * SLOT_MS + 20_000);
    let idle_report = market.chain.state.region_reports(IDLE).next_back().cloned();
    assert!(
        idle_report.is_some(),
        "the other region's slot was not reported"
    );
    let fixed = Measurement([16; 32]);
    market.add_members(fixed);
    // Throughout, an outsider asks every enclave, old and new, for its
    // state: the handover is to the seated committee's members only.
    let outsider = IdentityKey::generate(&mut ChaCha20Rng::from_seed([67; 32]));
    market.outsider = vec![Request::CatchUp {
        to: outsider.public_key(),
    }];
    // Their hosts start before the chain allows their build.
    market.run_until(market.now_ms + 2 * STEP_MS);
    let evicted = market.chain.state.committee().cloned().unwrap();
    market.pass(&[
        quartier_ledger::GovernanceChange::AllowMeasurement(fixed),
        quartier_ledger::GovernanceChange::RevokeMeasurement(MEASUREMENT),
    ]);
    let c1 = key("c1");
    let amount = Money::new(1_000_000_000);
    market
        .chain
        .queue(&c1, TxBody::RequestWithdrawal { amount });
    let balance = market.chain.state.account(&id(&c1)).balance;
    // The new enclaves register and vote for their committee.
    let mut candidate = None;
    while candidate.is_none() && market.now_ms < 6 * SLOT_MS {
        market.run_until(market.now_ms + STEP_MS);
        candidate = market
            .chain
            .state
            .committee_candidates()
            .values()
            .next()
            .cloned();
    }
    let candidate = candidate.expect("no committee candidate formed");
    assert_eq!(
        market.chain.state.committee().unwrap().group_key,
        evicted.group_key,
        "the candidate took office without a vote"
    );
    market.pass(&[quartier_ledger::GovernanceChange::SeatCommittee(
        candidate.group_key,
    )]);
    market.run_until(market.now_ms + STEP_MS);
    let seated_at = market.chain.state.meta().height;
    // One new member is down while the others take over and report: back,
    // it catches up from them, though the chain's latest reports are now
    // signed by two committees (the other region's by the old one). Before,
    // each was checked under one key, and it never caught up.
    let late = market.members.len() - 1;
    // (Once it took the state over and its host sealed since: an enclave
    // restarted without its key share is no member any more.)
    while market.members[late].enclave.last_cleared(IDLE).is_none() && market.now_ms < 8 * SLOT_MS {
        market.run_until(market.now_ms + STEP_MS);
    }
    market.run_until(market.now_ms + 4 * STEP_MS);
    market.down(late, true);
    market.run_until(10 * SLOT_MS);
    assert!(
        market
            .chain
            .state
            .region_reports(REGION)
            .any(|r| r.height > seated_at),
        "no report after the seat"
    );
    market.down(late, false);
    market.run_until(14 * SLOT_MS);
    assert_eq!(
        market.chain.state.region_reports(IDLE).next_back().cloned(),
        idle_report
    );
    let latest = market
        .chain
        .state
        .region_reports(REGION)
        .next_back()
        .unwrap();
    assert!(
        market.members[late].enclave.last_cleared(REGION) >= Some(latest.summary.slot),
        "the member back never caught up"
    );
    // The old members erased the region the new committee reported since;
    // the idle one they still hold, for a new member that may still need it.
    for old in &market.members[..3] {
        assert_eq!(old.enclave.last_cleared(REGION), None, "not erased");
        assert!(old.enclave.last_cleared(IDLE).is_some());
    }
    let committee = market.chain.state.committee().cloned().unwrap();
    assert_eq!(committee.group_key, candidate.group_key);
    assert_eq!(
        committee.predecessor.as_ref().map(|p| p.group_key),
        Some(evicted.group_key)
    );
    // Everything closed was reported, the withdrawal paid.
    assert_eq!(market.chain.state.sealed_batches().count(), 0);
    assert_eq!(
        market.chain.state.account(&id(&c1)).balance,
        balance.checked_add(amount).unwrap()
    );
    // The new committee keyed epochs of its own, and orders cleared under
    // them: reports after the seat with sealed orders in them.
    assert!(
        market
            .chain
            .state
            .epoch_keys()
            .keys()
            .any(|e| *e >= committee.first_epoch)
    );
    let traded = market
        .chain
        .state
        .region_reports(REGION)
        .filter(|r| r.height > seated_at && r.summary.aggregates.sealed > 0)
        .count();
    assert!(traded >= 2, "{traded} reports with orders after the seat");
    assert_eq!(market.outsider_gains, Vec::<String>::new());
    // No host asked to register an enclave of a build the chain did not
    // allow (the new ones waited for the vote; the old ones do not try
    // again), nor did any one of them try to key an epoch for the evicted
    // committee.
    let tried: Vec<&String> = market
        .chain
        .refused
        .iter()
        .filter(|r| r.starts_with("RegisterEnclave") || r.contains("evicted members"))
        .filter(|r| !r.starts_with("SubmitSealedOrder"))
        .collect();
    assert_eq!(tried, Vec::<&String>::new());
}
