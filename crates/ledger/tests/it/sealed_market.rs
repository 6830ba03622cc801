//! Privacy mode B on chain: registration, committee, epoch keys, sealed
//! orders, custody and reports, with the enclave side played by the real
//! `quartier-enclave` core.

use crate::kit::{Chain, GATE_MS, R1, R2, SLOT_MS, chf, genesis, id, key, r1_params};
use ed25519_dalek::SigningKey;
use quartier_enclave::attestation::{AttestationError, Measurement, SimulatedAttestationService};
use quartier_enclave::auctioneer::{
    Auctioneer, Batch, FIRST_LEDGER, Outcome, ReceiptBody, Refusal, SlotReport, receipts_root,
};
use quartier_enclave::committee::{self, GroupKey, Member, committee_message, report_message};
use quartier_enclave::epoch::{IdentityKey, epoch_key_message};
use quartier_enclave::sealed::{
    DropReason, Epoch, EpochKeyPair, HpkeKeyPair, OrderPayload, SealedOrder, SignedOrder, seal,
};
use quartier_ledger::{
    GovernanceChange, MeterRole, SealedMarketPolicy, SignedTx, State, TxBody, TxError,
};
use quartier_types::{AccountId, Energy, Money, Price, Side, Slot};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const MEASUREMENT: Measurement = Measurement([7; 32]);
const EPOCH_SLOTS: u64 = 4;
/// Slot 10 is in epoch 2.
const SLOT: u64 = 10;

fn service() -> SimulatedAttestationService {
    SimulatedAttestationService::new([42; 32])
}

/// The policy of a chain with one simulated vendor, t = 2.
fn policy() -> SealedMarketPolicy {
    SealedMarketPolicy {
        attestation: vec![service().root()],
        vendors: Default::default(),
        measurements: vec![MEASUREMENT],
        threshold: 2,
        epoch_slots: EPOCH_SLOTS,
        first_committee: Default::default(),
    }
}

fn sealed_chain() -> Chain {
    let mut g = genesis();
    g.sealed_market = Some(policy());
    Chain::from_genesis(g)
}

/// A genesis whose order lead reaches an epoch the chain would not yet
/// publish a key for is refused (an epoch of 4 slots, lead of 1: fine).
#[test]
fn a_lead_as_long_as_an_epoch_is_refused_at_genesis() {
    let mut g = genesis();
    g.sealed_market = Some(policy());
    assert_eq!(EPOCH_SLOTS, 4);
    g.lead_slots = 1;
    assert_eq!(g.validate(), Ok(()));
    g.lead_slots = 4;
    assert_eq!(
        g.validate(),
        Err(quartier_ledger::GenesisError::SealedMarket)
    );
}

/// The id of every chain `sealed_chain` makes (one genesis).
fn chain_id() -> [u8; 32] {
    static ID: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    *ID.get_or_init(|| sealed_chain().state.chain_id().0.0)
}

fn in_slot(slot: u64) -> u64 {
    slot * SLOT_MS + 1
}

fn after_gate(slot: u64) -> u64 {
    (slot + 1) * SLOT_MS + GATE_MS
}

struct Enclaves {
    accounts: Vec<SigningKey>,
    identities: Vec<IdentityKey>,
    members: Vec<Member>,
    group: GroupKey,
    rng: ChaCha20Rng,
}

impl Enclaves {
    fn new(n: u16) -> Enclaves {
        Enclaves::with_seed(n, 3)
    }

    /// Another seed gives another committee (another group key).
    fn with_seed(n: u16, seed: u8) -> Enclaves {
        Enclaves::with_threshold(n, 2, seed)
    }

    /// A committee whose key needs `t` signers.
    fn with_threshold(n: u16, t: u16, seed: u8) -> Enclaves {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let (members, group) = committee::generate(n.max(2), t, &mut rng).unwrap();
        Enclaves {
            accounts: (0..n).map(|i| key(&format!("enclave-{i}"))).collect(),
            identities: (0..n).map(|_| IdentityKey::generate(&mut rng)).collect(),
            members,
            group,
            rng,
        }
    }

    /// The committee's report of `summary`, signed by `signers`.
    fn report(
        &mut self,
        signers: &[usize],
        summary: &quartier_enclave::auctioneer::SlotSummary,
    ) -> TxBody {
        let signature = self.sign(signers, &report_message(&chain_id(), summary));
        TxBody::PostSettlementReport {
            summary: summary.clone(),
            signature,
        }
    }

    fn register(&self, i: usize, measurement: Measurement) -> TxBody {
        let identity = &self.identities[i];
        let quote = service().quote(measurement, identity.report_data(id(&self.accounts[i]).0));
        TxBody::RegisterEnclave {
            quote,
            identity_key: identity.public_key(),
        }
    }

    fn sign(&mut self, signers: &[usize], message: &[u8]) -> [u8; 64] {
        let signers: Vec<&Member> = signers.iter().map(|&i| &self.members[i]).collect();
        let sig = committee::sign(&signers, &self.group, message, &mut self.rng).unwrap();
        sig.try_into().unwrap()
    }

    /// A vote for the committee of enclaves `of`, with the group's signature
    /// (every member signs) over chain `chain`, threshold `t` and `of`'s
    /// accounts: what the members of a DKG with that `t` sign.
    fn vote(&mut self, chain: &[u8; 32], t: u16, of: &[usize]) -> TxBody {
        let mut members: Vec<AccountId> = of.iter().map(|&i| id(&self.accounts[i])).collect();
        members.sort();
        let accounts: Vec<[u8; 32]> = members.iter().map(|m| m.0).collect();
        let everyone: Vec<usize> = (0..self.members.len()).collect();
        let signature = self.sign(&everyone, &committee_message(chain, t, &accounts));
        TxBody::ActivateCommittee {
            members,
            group_key: self.group.public_key(),
            signature,
        }
    }
}

#[test]
fn a_committee_must_span_tee_vendors_so_that_no_vendor_alone_signs() {
    // Three (simulated) vendors; the policy: at least two of them, none
    // holding t = 2 members. A host group whose enclaves all run on one
    // vendor's hardware (whose quoting key leaked, say) proposes itself.
    let vendors: Vec<SimulatedAttestationService> = (0..3u8)
        .map(|v| SimulatedAttestationService::new([50 + v; 32]))
        .collect();
    let mut g = genesis();
    g.sealed_market = Some(SealedMarketPolicy {
        attestation: vendors
            .iter()
            .map(SimulatedAttestationService::root)
            .collect(),
        vendors: quartier_enclave::attestation::VendorPolicy {
            min_vendors: 2,
            no_vendor_holds_threshold: true,
        },
        measurements: vec![MEASUREMENT],
        threshold: 2,
        epoch_slots: EPOCH_SLOTS,
        first_committee: Default::default(),
    });
    let mut c = Chain::from_genesis(g);
    let mut e = Enclaves::new(5);
    // Enclaves 0, 1 and 2 on vendor 0; 3 on vendor 1; 4 on vendor 2.
    let on = [0, 0, 0, 1, 2];
    for (i, v) in on.iter().enumerate() {
        let identity = &e.identities[i];
        let quote = vendors[*v].quote(MEASUREMENT, identity.report_data(id(&e.accounts[i]).0));
        let body = TxBody::RegisterEnclave {
            quote,
            identity_key: identity.public_key(),
        };
        c.queue(&e.accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    for (i, v) in on.iter().enumerate() {
        let enclave = &c.state.enclaves()[&id(&e.accounts[i])];
        assert_eq!(enclave.vendor, u16::try_from(*v).unwrap());
    }
    let chain = c.state.chain_id().0.0;
    for one_vendor_signs in [&[0, 1, 2][..], &[0, 1, 3], &[0, 1]] {
        let vote = e.vote(&chain, 2, one_vendor_signs);
        let tx = c.tx(&e.accounts[0], vote);
        let mut state = c.state.clone();
        assert_eq!(
            quartier_ledger::apply(&mut state, &tx, &c.ctx()),
            Err(TxError::VendorPolicy)
        );
        assert_eq!(state, c.state, "a refused vote changes nothing");
    }
    // Three vendors, none with two members: accepted (a vote is recorded).
    let vote = e.vote(&chain, 2, &[0, 3, 4]);
    let tx = c.tx(&e.accounts[0], vote);
    assert!(quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()).is_ok());
    // A quote of no root of the chain does not register.
    let stranger = SimulatedAttestationService::new([9; 32]);
    let outsider = key("outsider");
    let identity = IdentityKey::generate(&mut ChaCha20Rng::from_seed([4; 32]));
    let body = TxBody::RegisterEnclave {
        quote: stranger.quote(MEASUREMENT, identity.report_data(id(&outsider).0)),
        identity_key: identity.public_key(),
    };
    let tx = c.tx(&outsider, body);
    assert!(matches!(
        quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()),
        Err(TxError::Attestation(_))
    ));
}

#[test]
fn a_committee_whose_key_needs_another_threshold_does_not_take_office() {
    // The first member's host invites its DKG with t = 3 of 3 where the
    // chain's policy says 2 (each enclave accepts any majority). Every
    // member's host then votes, as it should, for the members and the key
    // its DKG made. Before, the chain put that committee in office with
    // threshold 2 although its key needs all three: one host withholding
    // its enclave's share stopped every report and epoch key of mode B.
    let mut c = sealed_chain();
    let mut e = Enclaves::with_threshold(3, 3, 7);
    for i in 0..3 {
        let body = e.register(i, MEASUREMENT);
        c.queue(&e.accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    // What the members sign is the committee their DKG formed: 3 of 3.
    let vote = e.vote(&chain_id(), 3, &[0, 1, 2]);
    for i in 0..3 {
        c.queue(&e.accounts[i].clone(), vote.clone());
    }
    let outcome = c.block_at(in_slot(SLOT));
    assert_eq!(
        c.state.committee(),
        None,
        "a committee whose key needs 3 signers took office as 2 of 3"
    );
    for r in &outcome.results {
        assert_eq!(r.as_ref().err(), Some(&TxError::InvalidGroupSignature));
    }
    // A 2-of-3 committee of the same enclaves: its signature counts only
    // over this chain, these members and its own key.
    let mut two = Enclaves::with_threshold(3, 2, 8);
    let signed_for = |vote: TxBody, other: TxBody| match (vote, other) {
        (
            TxBody::ActivateCommittee {
                members, group_key, ..
            },
            TxBody::ActivateCommittee { signature, .. },
        ) => TxBody::ActivateCommittee {
            members,
            group_key,
            signature,
        },
        _ => unreachable!(),
    };
    let right = two.vote(&chain_id(), 2, &[0, 1, 2]);
    let other_chain = two.vote(&[0xee; 32], 2, &[0, 1, 2]);
    let other_members = two.vote(&chain_id(), 2, &[0, 1]);
    let mut another_key = right.clone();
    if let TxBody::ActivateCommittee { group_key, .. } = &mut another_key {
        *group_key = e.group.public_key();
    }
    for vote in [
        signed_for(right.clone(), other_chain),
        signed_for(right.clone(), other_members),
        another_key,
    ] {
        let tx = c.tx(&e.accounts[0], vote);
        let mut state = c.state.clone();
        assert_eq!(
            quartier_ledger::apply(&mut state, &tx, &c.ctx()),
            Err(TxError::InvalidGroupSignature)
        );
        assert_eq!(state, c.state, "a refused vote changes nothing");
    }
    // A vote naming an enclave that is not registered.
    let mut with_outsider = right.clone();
    if let TxBody::ActivateCommittee { members, .. } = &mut with_outsider {
        members.push(id(&key("outsider")));
        members.sort();
    }
    let tx = c.tx(&e.accounts[0], with_outsider);
    assert_eq!(
        quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()),
        Err(TxError::InvalidCommittee)
    );
    let tx = c.tx(&e.accounts[0], right);
    assert!(quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()).is_ok());
}

/// Proposes `change` as validator 0 and votes for it as validators 1 and 2
/// (3 of the 4: it passes), in one block at `time`.
fn pass(c: &mut Chain, change: GovernanceChange, time: u64) {
    let proposal = c.state.meta().next_proposal;
    c.queue(&key("validator-0"), TxBody::Propose { change });
    for v in 1..3 {
        c.queue(
            &key(&format!("validator-{v}")),
            TxBody::Vote {
                proposal,
                approve: true,
            },
        );
    }
    c.block_ok(time);
}

#[test]
fn enclaves_outside_the_committee_in_office_can_not_vote_themselves_in() {
    // Someone registers three genuine enclaves (a quote is all
    // registration needs), runs a 2-of-3 DKG among them and has all three
    // vote. Before governance, their key took office: the committee's
    // reports were refused from then on and the newcomers' empty ledgers
    // froze custody. Now their committee is a candidate, and only the
    // validators' vote seats it.
    let (mut c, mut e, epoch_key) = market();
    let in_office = c.state.committee().cloned().unwrap();
    let mut newcomers = Enclaves::with_threshold(6, 2, 9);
    for i in 3..6 {
        let body = newcomers.register(i, MEASUREMENT);
        c.queue(&newcomers.accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    let vote = newcomers.vote(&chain_id(), 2, &[3, 4, 5]);
    for i in 3..6 {
        c.queue(&newcomers.accounts[i].clone(), vote.clone());
    }
    c.block_ok(in_slot(SLOT));
    assert_eq!(
        c.state.committee(),
        Some(&in_office),
        "the committee was replaced by its successor's votes"
    );
    let candidate = c
        .state
        .committee_candidates()
        .get(&newcomers.group.public_key())
        .cloned()
        .unwrap();
    assert_eq!(candidate.group_key, newcomers.group.public_key());
    // The committee in office goes on: it keys the next epoch.
    let next = EpochKeyPair::generate(Epoch(epoch_key.epoch().0 + 1), &mut e.rng);
    let signature = e.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), next.epoch(), &next.public_key()),
    );
    c.queue(
        &e.accounts[0].clone(),
        TxBody::PublishEpochKey {
            epoch: next.epoch(),
            public_key: next.public_key(),
            signature,
        },
    );
    c.block_ok(in_slot(SLOT) + 1);

    // A proposal to seat a key that is no candidate, or the committee in
    // office, is refused.
    for group_key in [
        e.group.public_key(),
        Enclaves::with_seed(3, 77).group.public_key(),
    ] {
        let tx = c.tx(
            &key("validator-0"),
            TxBody::Propose {
                change: GovernanceChange::SeatCommittee(group_key),
            },
        );
        assert_eq!(
            quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()),
            Err(TxError::InvalidProposal)
        );
    }
    // Two of four validators do not seat it; three do.
    c.queue(
        &key("validator-0"),
        TxBody::Propose {
            change: GovernanceChange::SeatCommittee(candidate.group_key),
        },
    );
    c.queue(
        &key("validator-1"),
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    c.block_ok(in_slot(SLOT) + 2);
    assert_eq!(c.state.committee(), Some(&in_office));
    c.queue(
        &key("validator-2"),
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    c.block_ok(in_slot(SLOT) + 3);
    let seated = c.state.committee().cloned().unwrap();
    assert_eq!(seated.group_key, candidate.group_key);
    assert_eq!(seated.members, candidate.members);
    assert!(c.state.committee_candidates().is_empty());
    // It keys only epochs after the last one published (that it clears
    // from its predecessor's ledgers: `a_committee_is_seated_only_when_no_batch_waits`).
    assert_eq!(seated.first_epoch, Epoch(next.epoch().0 + 1));
    // No order is sealed to a key it made (its members could open it).
    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    let (sealed, _) = order(
        &key("c1"),
        SLOT,
        Side::Buy,
        15_000,
        1_000,
        (&epoch_key.public_key(), epoch_key.epoch()),
        &mut rng,
    );
    let tx = c.tx(&key("c1"), TxBody::SubmitSealedOrder { sealed });
    assert_eq!(
        quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()),
        Err(TxError::FormerCommitteeEpoch(epoch_key.epoch().0))
    );
    // Nor may the new one re-key an epoch its predecessor keyed.
    let again = EpochKeyPair::generate(next.epoch(), &mut newcomers.rng);
    let signature = newcomers.sign(
        &[3, 4],
        &epoch_key_message(&chain_id(), again.epoch(), &again.public_key()),
    );
    let tx = c.tx(
        &newcomers.accounts[3],
        TxBody::PublishEpochKey {
            epoch: again.epoch(),
            public_key: again.public_key(),
            signature,
        },
    );
    assert_eq!(
        quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()),
        Err(TxError::FormerCommitteeEpoch(next.epoch().0))
    );
    // In epoch 3, the former committee's key signs nothing any more.
    c.block_ok(in_slot(12));
    let later = EpochKeyPair::generate(seated.first_epoch, &mut e.rng);
    let signature = e.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), later.epoch(), &later.public_key()),
    );
    let tx = c.tx(
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch: later.epoch(),
            public_key: later.public_key(),
            signature,
        },
    );
    assert_eq!(
        quartier_ledger::apply(&mut c.state.clone(), &tx, &c.ctx()),
        Err(TxError::InvalidGroupSignature)
    );
}

#[test]
fn a_genesis_may_leave_even_the_first_committee_to_the_validators() {
    let mut g = genesis();
    g.sealed_market = Some(SealedMarketPolicy {
        first_committee: quartier_ledger::FirstCommittee::ByVote,
        ..policy()
    });
    let mut c = Chain::from_genesis(g);
    let id_of_chain = c.state.chain_id().0.0;
    let mut e = Enclaves::new(3);
    for i in 0..3 {
        let body = e.register(i, MEASUREMENT);
        c.queue(&e.accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    let vote = e.vote(&id_of_chain, 2, &[0, 1, 2]);
    for i in 0..3 {
        c.queue(&e.accounts[i].clone(), vote.clone());
    }
    c.block_ok(in_slot(SLOT));
    assert_eq!(c.state.committee(), None);
    assert_eq!(c.state.committee_candidates().len(), 1);
    pass(
        &mut c,
        GovernanceChange::SeatCommittee(e.group.public_key()),
        in_slot(SLOT) + 1,
    );
    let seated = c.state.committee().unwrap();
    assert_eq!(seated.group_key, e.group.public_key());
    assert_eq!(seated.first_epoch, Epoch(0));
}

/// A chain at slot 10 with meters p1 (prosumer) and c1 (consumer) in R1,
/// three registered enclaves in office, and epoch 2's key published.
fn market() -> (Chain, Enclaves, EpochKeyPair) {
    let mut c = sealed_chain();
    let mut e = Enclaves::new(3);
    c.enrol(&key("p1"), R1, MeterRole::Prosumer, 5_000, chf(100));
    c.enrol(&key("c1"), R1, MeterRole::Consumer, 0, chf(100));
    for i in 0..3 {
        let body = e.register(i, MEASUREMENT);
        c.queue(&e.accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    let vote = e.vote(&chain_id(), 2, &[0, 1, 2]);
    for i in 0..3 {
        c.queue(&e.accounts[i].clone(), vote.clone());
    }
    let epoch_key = EpochKeyPair::generate(Epoch(SLOT / EPOCH_SLOTS), &mut e.rng);
    let public_key = epoch_key.public_key();
    let signature = e.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), epoch_key.epoch(), &public_key),
    );
    c.queue(
        &e.accounts[2].clone(),
        TxBody::PublishEpochKey {
            epoch: epoch_key.epoch(),
            public_key,
            signature,
        },
    );
    c.block_ok(in_slot(SLOT));
    assert!(c.state.committee().is_some());
    (c, e, epoch_key)
}

/// A household's sealed order and the key to open its receipt.
fn order(
    who: &SigningKey,
    slot: u64,
    side: Side,
    limit: u64,
    energy: u64,
    (epoch_key, epoch): (&[u8; 32], Epoch),
    rng: &mut ChaCha20Rng,
) -> (SealedOrder, HpkeKeyPair) {
    let receipt = HpkeKeyPair::generate(rng);
    let payload = OrderPayload {
        chain: chain_id(),
        wallet: id(who),
        region: R1,
        slot: Slot(slot),
        epoch,
        side,
        limit: Price::new(limit),
        energy: Energy::new(energy),
        receipt_key: receipt.public_key(),
    };
    let sealed = seal(epoch_key, &SignedOrder::sign(payload, who), rng).unwrap();
    (sealed, receipt)
}

fn supply_holds(s: &State) {
    let balances: u64 = s.accounts().map(|(_, a)| a.balance.get()).sum();
    let m = s.meta();
    assert_eq!(
        m.supply.get(),
        balances + m.escrow.get() + m.custody.get(),
        "supply = balances + escrow + custody"
    );
}

#[test]
fn a_sealed_slot_settles_through_a_threshold_signed_report_and_reconciles() {
    let (mut c, mut e, epoch_key) = market();
    let (c1, p1) = (key("c1"), key("p1"));
    let epoch = epoch_key.epoch();
    let public = epoch_key.public_key();
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    c.queue(&c1, TxBody::DepositToAuctioneer { amount: chf(50) });
    let (buy, buy_receipt) = order(
        &c1,
        SLOT,
        Side::Buy,
        15_000,
        1_000,
        (&public, epoch),
        &mut rng,
    );
    let (sell, sell_receipt) = order(
        &p1,
        SLOT,
        Side::Sell,
        10_000,
        600,
        (&public, epoch),
        &mut rng,
    );
    c.queue(
        &c1,
        TxBody::SubmitSealedOrder {
            sealed: buy.clone(),
        },
    );
    c.queue(
        &p1,
        TxBody::SubmitSealedOrder {
            sealed: sell.clone(),
        },
    );
    c.block_ok(in_slot(SLOT));
    assert_eq!(c.state.meta().custody, chf(50));
    supply_holds(&c.state);
    // The chain holds ciphertexts only, and no batch before the gate.
    assert_eq!(c.state.sealed_book(R1, Slot(SLOT)).unwrap().len(), 2);
    assert_eq!(c.state.sealed_batches().count(), 0);

    c.block_ok(after_gate(SLOT));
    let batches: Vec<_> = c.state.sealed_batches().collect();
    assert_eq!(batches.len(), 1);
    let ((region, slot), batch) = batches[0];
    assert_eq!((region, slot), (R1, Slot(SLOT)));
    assert_eq!(batch.flows.deposits, vec![(id(&c1), chf(50))]);

    // Two enclaves clear the batch independently and agree byte for byte.
    let sealed: Vec<SealedOrder> = batch.orders.iter().map(|o| o.sealed.clone()).collect();
    let input = Batch {
        slot: Slot(SLOT),
        params: r1_params(),
        epoch,
        deposits: &batch.flows.deposits,
        orders: &sealed,
        withdrawals: &batch.flows.withdrawals,
        traders: &batch.traders,
        expired: false,
    };
    let mut key_copy = |k: &EpochKeyPair| {
        let to = [e.identities[1].public_key()];
        let share = quartier_enclave::epoch::share(k, &e.identities[0], &to, b"", &mut rng);
        let from = [e.identities[0].public_key()];
        e.identities[1]
            .receive(&share[0], &k.public_key(), &from, b"")
            .unwrap()
    };
    let mut other = Auctioneer::new(chain_id(), R1, r1_params(), key_copy(&epoch_key));
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let report = auctioneer.clear_batch(&input).unwrap();
    assert_eq!(other.clear_batch(&input).unwrap(), report);
    assert_eq!(
        report.summary.receipts_root,
        receipts_root(&report.receipts)
    );

    let signature = e.sign(&[0, 2], &report_message(&chain_id(), &report.summary));
    let before = c.state.account(&id(&key("utility"))).balance;
    c.queue(
        &e.accounts[1].clone(),
        TxBody::PostSettlementReport {
            summary: report.summary.clone(),
            signature,
        },
    );
    c.block_ok(after_gate(SLOT) + 1);
    supply_holds(&c.state);
    // The enclave's private ledger and the chain's custody reconcile.
    assert_eq!(c.state.meta().custody, auctioneer.custody());
    let posted = c.state.sealed_report(R1, Slot(SLOT)).unwrap();
    assert_eq!(posted.summary, report.summary);
    assert_eq!(c.state.sealed_batches().count(), 0);
    // 400 Wh came from the grid at 20.75 Rp/kWh; the utility got paid.
    let t = report.summary.aggregates.totals;
    assert_eq!(t.local_energy, Energy::new(600));
    assert_eq!(
        c.state.account(&id(&key("utility"))).balance,
        before.checked_add(t.utility_sells).unwrap()
    );

    // Each household opens its own receipt, and only its own.
    let receipt_of = |k: &HpkeKeyPair| report.receipts.iter().find_map(|r| r.open(k));
    match receipt_of(&buy_receipt).unwrap().outcome {
        Outcome::Cleared { matched, pays, .. } => {
            assert_eq!(matched, Energy::new(600));
            assert_eq!(pays, t.buyers_pay);
        }
        other => panic!("buy not cleared: {other:?}"),
    }
    assert!(matches!(
        receipt_of(&sell_receipt).unwrap().outcome,
        Outcome::Cleared { .. }
    ));
    assert_eq!(receipt_of(&HpkeKeyPair::generate(&mut rng)), None);

    // The seller withdraws its proceeds: requested on chain, approved in the
    // next report, paid out of custody.
    let proceeds = auctioneer.prepaid(&id(&p1));
    assert!(!proceeds.is_zero());
    let balance = c.state.account(&id(&p1)).balance;
    c.queue(&p1, TxBody::RequestWithdrawal { amount: proceeds });
    c.queue(&c1, TxBody::RequestWithdrawal { amount: chf(1_000) });
    let (cover, _) = order(
        &c1,
        SLOT + 1,
        Side::Buy,
        15_000,
        0,
        (&public, epoch),
        &mut rng,
    );
    c.queue(&c1, TxBody::SubmitSealedOrder { sealed: cover });
    c.block_ok(after_gate(SLOT) + 2);
    c.block_ok(after_gate(SLOT + 1));
    let (_, batch) = c.state.sealed_batches().next().unwrap();
    let sealed: Vec<SealedOrder> = batch.orders.iter().map(|o| o.sealed.clone()).collect();
    let report = auctioneer
        .clear_batch(&Batch {
            slot: Slot(SLOT + 1),
            params: r1_params(),
            epoch,
            deposits: &batch.flows.deposits,
            orders: &sealed,
            withdrawals: &batch.flows.withdrawals,
            traders: &batch.traders,
            expired: false,
        })
        .unwrap();
    // c1 asked for more than it prepaid: not approved.
    assert_eq!(report.summary.payouts, vec![(id(&p1), proceeds)]);
    // The same slot cleared from a ledger the committee never signed (a
    // member that lost its ledger starts from nothing; one fed a forged
    // ledger from another): signed by t members, still refused, as it
    // does not continue the region's last report.
    for ledger_before in [FIRST_LEDGER, report.summary.ledger] {
        let mut wiped = report.summary.clone();
        wiped.ledger_before = ledger_before;
        let signature = e.sign(&[1, 2], &report_message(&chain_id(), &wiped));
        let tx = c.tx(
            &e.accounts[0],
            TxBody::PostSettlementReport {
                summary: wiped,
                signature,
            },
        );
        let mut state = c.state.clone();
        assert_eq!(
            quartier_ledger::apply(&mut state, &tx, &c.ctx()),
            Err(TxError::ReportMismatch)
        );
        assert_eq!(state, c.state, "a refused report changes nothing");
    }
    let body = e.report(&[1, 2], &report.summary);
    c.queue(&e.accounts[0].clone(), body);
    c.block_ok(after_gate(SLOT + 1) + 1);
    assert_eq!(
        c.state.account(&id(&p1)).balance,
        balance.checked_add(proceeds).unwrap()
    );
    assert_eq!(c.state.meta().custody, auctioneer.custody());
    supply_holds(&c.state);
}

#[test]
fn bad_quotes_reports_and_sealed_orders_are_rejected_and_change_nothing() {
    let (mut c, mut e, epoch_key) = market();
    let (c1, p1, outsider) = (key("c1"), key("p1"), key("outsider"));
    let epoch = epoch_key.epoch();
    let public = epoch_key.public_key();
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let mut seen = std::collections::BTreeSet::new();
    let mut rejects = |c: &Chain, tx: &SignedTx, expected: TxError| {
        let mut state = c.state.clone();
        let before = state.clone();
        let got = quartier_ledger::apply(&mut state, tx, &c.ctx())
            .expect_err(&format!("accepted, expected {expected:?}"));
        assert_eq!(got, expected);
        assert!(state == before, "a rejected transaction changed the state");
        seen.insert(
            format!("{expected:?}")
                .split(['(', ' '])
                .next()
                .unwrap()
                .to_owned(),
        );
    };

    // Registration: an unknown measurement, a forged quote, a quote binding
    // another identity, a second registration.
    let newcomer = Enclaves::new(4);
    let body = newcomer.register(3, Measurement([8; 32]));
    let tx = c.tx(&newcomer.accounts[3], body);
    rejects(
        &c,
        &tx,
        TxError::Attestation(AttestationError::UnknownMeasurement),
    );
    let mut body = newcomer.register(3, MEASUREMENT);
    if let TxBody::RegisterEnclave { quote, .. } = &mut body {
        quote.signature[0] ^= 1;
    }
    let tx = c.tx(&newcomer.accounts[3], body);
    rejects(
        &c,
        &tx,
        TxError::Attestation(AttestationError::InvalidQuote),
    );
    let body = newcomer.register(3, MEASUREMENT);
    let tx = c.tx(&outsider, body);
    rejects(&c, &tx, TxError::QuoteBinding);
    let body = e.register(0, MEASUREMENT);
    let tx = c.tx(&e.accounts[0], body);
    rejects(&c, &tx, TxError::EnclaveRegistered);

    // A committee vote from a non-enclave, or naming an unregistered member.
    let mut members: Vec<_> = e.accounts.iter().map(id).collect();
    members.sort();
    let vote = TxBody::ActivateCommittee {
        members: members.clone(),
        group_key: e.group.public_key(),
        signature: [0; 64],
    };
    let tx = c.tx(&outsider, vote);
    rejects(
        &c,
        &tx,
        TxError::NotAuthorised {
            role: quartier_ledger::Role::Enclave,
        },
    );
    let mut with_outsider = members.clone();
    with_outsider.push(id(&outsider));
    with_outsider.sort();
    let tx = c.tx(
        &e.accounts[0],
        TxBody::ActivateCommittee {
            members: with_outsider,
            group_key: e.group.public_key(),
            signature: [0; 64],
        },
    );
    rejects(&c, &tx, TxError::InvalidCommittee);

    // Epoch keys: stale, two epochs past the block's (signed by the
    // committee: a compromised member's, co-signed by an honest one before
    // the honest one knew no better; published, it would make the chain
    // refuse every earlier epoch's key), or signed by another group.
    let far = EpochKeyPair::generate(Epoch(epoch.0 + 2), &mut rng);
    let signature = e.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), far.epoch(), &far.public_key()),
    );
    let tx = c.tx(
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch: far.epoch(),
            public_key: far.public_key(),
            signature,
        },
    );
    rejects(&c, &tx, TxError::EpochTooFar(epoch.0 + 2));
    // In epoch 3 with epoch 2's key the last published, epoch 4's would
    // skip epoch 3 (whose slots could then take no sealed order).
    let mut in_epoch_3 = c.ctx();
    in_epoch_3.time = quartier_types::Timestamp(in_slot((epoch.0 + 1) * EPOCH_SLOTS));
    let skip = EpochKeyPair::generate(Epoch(epoch.0 + 2), &mut rng);
    let signature = e.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), skip.epoch(), &skip.public_key()),
    );
    let tx = c.tx(
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch: skip.epoch(),
            public_key: skip.public_key(),
            signature,
        },
    );
    let mut state = c.state.clone();
    assert_eq!(
        quartier_ledger::apply(&mut state, &tx, &in_epoch_3),
        Err(TxError::EpochTooFar(epoch.0 + 2))
    );
    assert_eq!(state, c.state);
    let next = EpochKeyPair::generate(Epoch(epoch.0 + 1), &mut rng);
    let stale = e.sign(&[0, 1], &epoch_key_message(&chain_id(), epoch, &public));
    let tx = c.tx(
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch,
            public_key: public,
            signature: stale,
        },
    );
    rejects(&c, &tx, TxError::StaleEpoch(epoch.0));
    let mut rogue = Enclaves::with_seed(3, 99);
    let forged = rogue.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), next.epoch(), &next.public_key()),
    );
    let tx = c.tx(
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch: next.epoch(),
            public_key: next.public_key(),
            signature: forged,
        },
    );
    rejects(&c, &tx, TxError::InvalidGroupSignature);
    // The same committee's signature on the key for another chain it serves
    // (a test net, say) is no signature here.
    let elsewhere = e.sign(
        &[0, 1],
        &epoch_key_message(&[0xee; 32], next.epoch(), &next.public_key()),
    );
    let tx = c.tx(
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch: next.epoch(),
            public_key: next.public_key(),
            signature: elsewhere,
        },
    );
    rejects(&c, &tx, TxError::InvalidGroupSignature);

    // Sealed orders: wrong size, unknown epoch, another region, twice.
    let (good, _) = order(
        &c1,
        SLOT,
        Side::Buy,
        15_000,
        500,
        (&public, epoch),
        &mut rng,
    );
    let mut short = good.clone();
    short.ciphertext.pop();
    let tx = c.tx(&c1, TxBody::SubmitSealedOrder { sealed: short });
    rejects(&c, &tx, TxError::SealedOrderSize);
    let mut future = good.clone();
    future.epoch = Epoch(epoch.0 + 5);
    let tx = c.tx(&c1, TxBody::SubmitSealedOrder { sealed: future });
    rejects(&c, &tx, TxError::UnknownEpoch(epoch.0 + 5));
    let mut elsewhere = good.clone();
    elsewhere.region = R2;
    let tx = c.tx(&c1, TxBody::SubmitSealedOrder { sealed: elsewhere });
    rejects(&c, &tx, TxError::WrongRegion);
    let tx = c.tx(
        &outsider,
        TxBody::SubmitSealedOrder {
            sealed: good.clone(),
        },
    );
    rejects(
        &c,
        &tx,
        TxError::NotAuthorised {
            role: quartier_ledger::Role::Meter,
        },
    );
    c.queue(
        &c1,
        TxBody::SubmitSealedOrder {
            sealed: good.clone(),
        },
    );
    c.queue(&c1, TxBody::DepositToAuctioneer { amount: chf(10) });
    c.block_ok(in_slot(SLOT));
    let tx = c.tx(&c1, TxBody::SubmitSealedOrder { sealed: good });
    rejects(&c, &tx, TxError::DuplicateOrder);

    // Reports: before the gate there is no batch; after it, a report signed by
    // another group, tampered after signing, or claiming a payout nobody
    // requested is refused; a single member can not sign at all.
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let sealed_orders = |c: &Chain| -> Vec<SealedOrder> {
        let (_, b) = c.state.sealed_batches().next().unwrap();
        b.orders.iter().map(|o| o.sealed.clone()).collect()
    };
    c.block_ok(after_gate(SLOT));
    let (_, batch) = c.state.sealed_batches().next().unwrap();
    let deposits = batch.flows.deposits.clone();
    let traders = batch.traders.clone();
    let orders = sealed_orders(&c);
    let report = auctioneer
        .clear_batch(&Batch {
            slot: Slot(SLOT),
            params: r1_params(),
            epoch,
            deposits: &deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        })
        .unwrap();
    let good_sig = e.sign(&[0, 1], &report_message(&chain_id(), &report.summary));
    let post = |summary, signature| TxBody::PostSettlementReport { summary, signature };
    let mut early = report.summary.clone();
    early.slot = Slot(SLOT + 1);
    let tx = c.tx(&e.accounts[0], post(early, good_sig));
    rejects(&c, &tx, TxError::NoSuchBatch);
    let rogue_sig = rogue.sign(&[0, 1], &report_message(&chain_id(), &report.summary));
    let tx = c.tx(&e.accounts[0], post(report.summary.clone(), rogue_sig));
    rejects(&c, &tx, TxError::InvalidGroupSignature);
    let mut tampered = report.summary.clone();
    tampered.receipts_root.0[0] ^= 1;
    let tx = c.tx(&e.accounts[0], post(tampered, good_sig));
    rejects(&c, &tx, TxError::InvalidGroupSignature);
    // The committee's report of the same slot on another chain it serves.
    let elsewhere = e.sign(&[0, 1], &report_message(&[0xee; 32], &report.summary));
    let tx = c.tx(&e.accounts[0], post(report.summary.clone(), elsewhere));
    rejects(&c, &tx, TxError::InvalidGroupSignature);
    // A region's first report clears from the first ledger only.
    let mut not_first = report.summary.clone();
    not_first.ledger_before = report.summary.ledger;
    let sig = e.sign(&[0, 1], &report_message(&chain_id(), &not_first));
    let tx = c.tx(&e.accounts[0], post(not_first, sig));
    rejects(&c, &tx, TxError::ReportMismatch);
    let mut payout = report.summary.clone();
    payout.payouts.push((id(&p1), Money::new(1)));
    let sig = e.sign(&[0, 1], &report_message(&chain_id(), &payout));
    let tx = c.tx(&e.accounts[0], post(payout, sig));
    rejects(&c, &tx, TxError::ReportMismatch);
    let alone = committee::sign(&[&e.members[0]], &e.group, b"x", &mut rng);
    assert_eq!(alone, Err(committee::CommitteeError::TooFewSigners));
    let tx = c.tx(&outsider, post(report.summary.clone(), good_sig));
    rejects(
        &c,
        &tx,
        TxError::NotAuthorised {
            role: quartier_ledger::Role::Enclave,
        },
    );

    // A chain without a sealed market refuses every mode B transaction.
    let plain = Chain::new();
    let tx = plain.tx(&c1, TxBody::DepositToAuctioneer { amount: chf(1) });
    rejects(&plain, &tx, TxError::NoSealedMarket);
    assert!(seen.len() >= 14, "{seen:?}");
}

#[test]
fn an_order_sealed_to_an_old_epoch_or_a_forged_wallet_gets_a_receipt_saying_why() {
    let (mut c, mut e, epoch_key) = market();
    let (c1, p1) = (key("c1"), key("p1"));
    let epoch = epoch_key.epoch();
    let public = epoch_key.public_key();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    // Epoch 3 is published; slot 12 belongs to it. c1 seals to epoch 2 (old).
    let next = EpochKeyPair::generate(Epoch(epoch.0 + 1), &mut rng);
    let signature = e.sign(
        &[1, 2],
        &epoch_key_message(&chain_id(), next.epoch(), &next.public_key()),
    );
    c.queue(
        &e.accounts[0].clone(),
        TxBody::PublishEpochKey {
            epoch: next.epoch(),
            public_key: next.public_key(),
            signature,
        },
    );
    c.block_ok(in_slot(SLOT + 1));
    let slot = 12;
    let (old, old_receipt) = order(
        &c1,
        slot,
        Side::Buy,
        15_000,
        100,
        (&public, epoch),
        &mut rng,
    );
    // p1's order names c1's wallet but is signed by p1: a forged signature.
    let receipt = HpkeKeyPair::generate(&mut rng);
    let payload = OrderPayload {
        chain: chain_id(),
        wallet: id(&c1),
        region: R1,
        slot: Slot(slot),
        epoch: next.epoch(),
        side: Side::Buy,
        limit: Price::new(15_000),
        energy: Energy::new(100),
        receipt_key: receipt.public_key(),
    };
    let mut forged = SignedOrder::sign(payload, &p1);
    forged.payload.wallet = id(&c1);
    let forged = seal(&next.public_key(), &forged, &mut rng).unwrap();
    c.queue(
        &c1,
        TxBody::SubmitSealedOrder {
            sealed: old.clone(),
        },
    );
    c.queue(
        &p1,
        TxBody::SubmitSealedOrder {
            sealed: forged.clone(),
        },
    );
    c.block_ok(in_slot(slot));
    c.block_ok(after_gate(slot));
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    auctioneer.add_key(next);
    let (_, batch) = c.state.sealed_batches().next().unwrap();
    let orders: Vec<SealedOrder> = batch.orders.iter().map(|o| o.sealed.clone()).collect();
    let report = auctioneer
        .clear_batch(&Batch {
            slot: Slot(slot),
            params: r1_params(),
            epoch: Epoch(slot / EPOCH_SLOTS),
            deposits: &batch.flows.deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &batch.traders,
            expired: false,
        })
        .unwrap();
    // The old epoch's key is erased now.
    assert_eq!(auctioneer.epochs(), vec![Epoch(3)]);
    let reasons: Vec<Outcome> = report
        .receipts
        .iter()
        .map(|r| r.open(&old_receipt).unwrap().outcome)
        .collect();
    assert_eq!(
        reasons,
        vec![
            Outcome::Refused(Refusal::Dropped(DropReason::WrongEpoch)),
            Outcome::Refused(Refusal::Dropped(DropReason::BadSignature)),
        ]
    );
    let body = e.report(&[0, 1], &report.summary);
    c.queue(&e.accounts[2].clone(), body);
    c.block_ok(after_gate(slot) + 1);
    assert_eq!(c.state.meta().custody, auctioneer.custody());
}

#[test]
fn governance_allows_and_revokes_measurements() {
    let mut c = sealed_chain();
    let newer = Measurement([9; 32]);
    let validators: Vec<SigningKey> = (0..4).map(|i| key(&format!("validator-{i}"))).collect();
    c.queue(
        &validators[0],
        TxBody::Propose {
            change: GovernanceChange::AllowMeasurement(newer),
        },
    );
    c.queue(
        &validators[1],
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    c.block_ok(1);
    assert!(
        !c.state.measurements().contains(&newer),
        "2 of 4 is not 2/3"
    );
    c.queue(
        &validators[2],
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    c.block_ok(2);
    assert!(c.state.measurements().contains(&newer));
    // An enclave built from it registers now.
    let e = Enclaves::new(1);
    let body = e.register(0, newer);
    c.queue(&e.accounts[0].clone(), body);
    c.block_ok(3);
    assert_eq!(c.state.enclaves().len(), 1);
    // Allowing it again is not a change.
    let tx = c.tx(
        &validators[0],
        TxBody::Propose {
            change: GovernanceChange::AllowMeasurement(newer),
        },
    );
    let mut s = c.state.clone();
    assert_eq!(
        quartier_ledger::apply(&mut s, &tx, &c.ctx()),
        Err(TxError::InvalidProposal)
    );
}

/// Queues `sealed` from `who`.
fn submit(c: &mut Chain, who: &SigningKey, sealed: &SealedOrder) {
    c.queue(
        who,
        TxBody::SubmitSealedOrder {
            sealed: sealed.clone(),
        },
    );
}

/// Clears the chain's only closed batch with `auctioneer`.
fn clear_closed(c: &Chain, auctioneer: &mut Auctioneer, epoch: Epoch) -> SlotReport {
    let ((_, slot), batch) = c.state.sealed_batches().next().unwrap();
    let orders: Vec<SealedOrder> = batch.orders.iter().map(|o| o.sealed.clone()).collect();
    auctioneer
        .clear_batch(&Batch {
            slot,
            params: r1_params(),
            epoch,
            deposits: &batch.flows.deposits,
            orders: &orders,
            withdrawals: &batch.flows.withdrawals,
            traders: &batch.traders,
            expired: false,
        })
        .unwrap()
}

#[test]
fn a_consumers_sell_a_sell_over_its_pv_and_an_overflowing_sell_are_refused_and_the_slot_settles() {
    let (mut c, mut e, epoch_key) = market();
    let (c1, p1, p2, c2) = (key("c1"), key("p1"), key("p2"), key("c2"));
    c.enrol(&p2, R1, MeterRole::Prosumer, 2_000, chf(10));
    c.enrol(&c2, R1, MeterRole::Consumer, 0, chf(100));
    c.block_ok(in_slot(SLOT));
    let epoch = epoch_key.epoch();
    let public = epoch_key.public_key();
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    c.queue(&c2, TxBody::DepositToAuctioneer { amount: chf(50) });
    // The attacks, each from a registered meter through the chain: a
    // consumer sells energy it never produced, a 5 kWp prosumer sells more
    // than its PV makes in 15 minutes (1 250 Wh), a 2 kWp one sells u64::MAX
    // Wh. A buyer would pay the first two; the third used to halt mode B.
    let attacks = [
        order(
            &c1,
            SLOT,
            Side::Sell,
            4_000,
            1_000,
            (&public, epoch),
            &mut rng,
        ),
        order(
            &p1,
            SLOT,
            Side::Sell,
            4_000,
            1_251,
            (&public, epoch),
            &mut rng,
        ),
        order(
            &p2,
            SLOT,
            Side::Sell,
            4_000,
            u64::MAX,
            (&public, epoch),
            &mut rng,
        ),
    ];
    let (buy, _) = order(
        &c2,
        SLOT,
        Side::Buy,
        20_000,
        2_000,
        (&public, epoch),
        &mut rng,
    );
    for ((sealed, _), who) in attacks.iter().zip([&c1, &p1, &p2]) {
        submit(&mut c, who, sealed);
    }
    submit(&mut c, &c2, &buy);
    c.block_ok(in_slot(SLOT));
    c.block_ok(after_gate(SLOT));
    let (_, batch) = c.state.sealed_batches().next().unwrap();
    let mut expected = vec![
        (id(&c1), Energy::ZERO),
        (id(&c2), Energy::ZERO),
        (id(&p1), Energy::new(1_250)),
        (id(&p2), Energy::new(500)),
    ];
    expected.sort();
    assert_eq!(batch.traders, expected);

    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let report = clear_closed(&c, &mut auctioneer, epoch);
    for ((_, receipt), who) in attacks.iter().zip([&c1, &p1, &p2]) {
        let r = report
            .receipts
            .iter()
            .find_map(|p| p.open(receipt))
            .unwrap();
        assert_eq!(r.outcome, Outcome::Refused(Refusal::ExceedsCapacity));
        assert_eq!(r.wallet, Some(id(who)));
    }
    assert!(
        report
            .receipts
            .iter()
            .all(|r| matches!(r.body, ReceiptBody::Sealed { .. })),
        "a refusal is its household's business: no receipt in clear"
    );
    let t = report.summary.aggregates.totals;
    assert_eq!(
        (t.local_energy, t.grid_export),
        (Energy::ZERO, Energy::ZERO)
    );
    assert_eq!(t.sellers_receive, Money::ZERO);
    assert_eq!(t.grid_import, Energy::new(2_000));

    // The slot settles on chain, and money is conserved: custody = deposits
    // − withdrawals + what sellers receive − what buyers pay.
    let body = e.report(&[0, 1], &report.summary);
    c.queue(&e.accounts[0].clone(), body);
    c.block_ok(after_gate(SLOT) + 1);
    assert!(c.state.sealed_report(R1, Slot(SLOT)).is_some());
    supply_holds(&c.state);
    let custody = i128::from(chf(50).get()) + i128::from(t.sellers_receive.get())
        - i128::from(t.buyers_pay.get());
    assert_eq!(i128::from(c.state.meta().custody.get()), custody);
    assert_eq!(c.state.meta().custody, auctioneer.custody());

    // And the next slot settles too.
    let (cover, _) = order(
        &c2,
        SLOT + 1,
        Side::Buy,
        20_000,
        0,
        (&public, epoch),
        &mut rng,
    );
    submit(&mut c, &c2, &cover);
    c.block_ok(after_gate(SLOT) + 2);
    c.block_ok(after_gate(SLOT + 1));
    let report = clear_closed(&c, &mut auctioneer, epoch);
    let body = e.report(&[1, 2], &report.summary);
    c.queue(&e.accounts[1].clone(), body);
    c.block_ok(after_gate(SLOT + 1) + 1);
    assert!(c.state.sealed_report(R1, Slot(SLOT + 1)).is_some());
    assert_eq!(c.state.meta().custody, auctioneer.custody());
}

#[test]
fn a_report_selling_more_than_the_traders_pv_is_refused_even_with_the_committees_signature() {
    let (mut c, mut e, epoch_key) = market();
    let p1 = key("p1");
    let epoch = epoch_key.epoch();
    let public = epoch_key.public_key();
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let (sell, _) = order(
        &p1,
        SLOT,
        Side::Sell,
        4_000,
        1_000,
        (&public, epoch),
        &mut rng,
    );
    submit(&mut c, &p1, &sell);
    c.block_ok(in_slot(SLOT));
    c.block_ok(after_gate(SLOT));
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let report = clear_closed(&c, &mut auctioneer, epoch);
    assert_eq!(
        report.summary.aggregates.totals.grid_export,
        Energy::new(1_000)
    );
    // A committee (or t of its members) that mints: 251 Wh more fed in
    // than p1's 1 250 Wh of PV can make, balanced by feed-in paid to it.
    let mut forged = report.summary.clone();
    let t = &mut forged.aggregates.totals;
    let extra = Energy::new(251);
    let value = extra.value_at(r1_params().feed_in_tariff()).unwrap();
    t.grid_export = t.grid_export.checked_add(extra).unwrap();
    t.utility_buys = t.utility_buys.checked_add(value).unwrap();
    t.sellers_receive = t.sellers_receive.checked_add(value).unwrap();
    assert!(t.is_balanced());
    // Signed by the committee, refused by the chain, nothing changed.
    let mut refused = |forged: &quartier_enclave::auctioneer::SlotSummary| {
        let signature = e.sign(&[0, 1], &report_message(&chain_id(), forged));
        let tx = c.tx(
            &e.accounts[0],
            TxBody::PostSettlementReport {
                summary: forged.clone(),
                signature,
            },
        );
        let mut state = c.state.clone();
        let got = quartier_ledger::apply(&mut state, &tx, &c.ctx());
        assert_eq!(got.err(), Some(TxError::ReportMismatch));
        assert!(state == c.state, "a refused report changed the state");
    };
    refused(&forged);
    // The same money without the energy: feed-in paid for nothing fed in.
    let mut forged = report.summary.clone();
    let t = &mut forged.aggregates.totals;
    t.utility_buys = t.utility_buys.checked_add(value).unwrap();
    t.sellers_receive = t.sellers_receive.checked_add(value).unwrap();
    assert!(t.is_balanced());
    refused(&forged);
    // The honest report goes through.
    let body = e.report(&[0, 1], &report.summary);
    c.queue(&e.accounts[0].clone(), body);
    c.block_ok(after_gate(SLOT) + 1);
    assert!(c.state.sealed_report(R1, Slot(SLOT)).is_some());
}

#[test]
fn a_retired_meter_gets_its_custody_back_and_nothing_is_deposited_before_a_committee() {
    // No committee yet: a deposit is refused and changes nothing.
    let mut c = sealed_chain();
    let c1 = key("c1");
    c.enrol(&c1, R1, MeterRole::Consumer, 0, chf(100));
    c.block_ok(in_slot(SLOT));
    let tx = c.tx(&c1, TxBody::DepositToAuctioneer { amount: chf(5) });
    let mut state = c.state.clone();
    let got = quartier_ledger::apply(&mut state, &tx, &c.ctx());
    assert_eq!(got.err(), Some(TxError::NoCommittee));
    assert!(state == c.state);

    let (mut c, mut e, epoch_key) = market();
    let (c1, p1) = (key("c1"), key("p1"));
    let epoch = epoch_key.epoch();
    let public = epoch_key.public_key();
    let mut rng = ChaCha20Rng::from_seed([10; 32]);
    c.queue(&c1, TxBody::DepositToAuctioneer { amount: chf(50) });
    c.block_ok(in_slot(SLOT));
    c.queue(&key("dso"), TxBody::RetireMeter { meter: id(&c1) });
    c.block_ok(in_slot(SLOT));
    let balance = c.state.account(&id(&c1)).balance;
    // Retired, it places no order, but asks for its custody back.
    c.queue(&c1, TxBody::RequestWithdrawal { amount: chf(50) });
    let (cover, _) = order(&p1, SLOT, Side::Sell, 4_000, 0, (&public, epoch), &mut rng);
    submit(&mut c, &p1, &cover);
    c.block_ok(in_slot(SLOT));
    c.block_ok(after_gate(SLOT));
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let report = clear_closed(&c, &mut auctioneer, epoch);
    assert_eq!(report.summary.payouts, vec![(id(&c1), chf(50))]);
    let body = e.report(&[0, 2], &report.summary);
    c.queue(&e.accounts[2].clone(), body);
    c.block_ok(after_gate(SLOT) + 1);
    assert_eq!(
        c.state.account(&id(&c1)).balance,
        balance.checked_add(chf(50)).unwrap()
    );
    assert_eq!(c.state.meta().custody, Money::ZERO);
    supply_holds(&c.state);
}

#[test]
fn a_sealed_order_for_a_slot_whose_epoch_key_is_unpublished_is_refused() {
    // Epoch 2 (slots 8–11) is published, epoch 3 is not. An order for slot
    // 12 sealed to epoch 2's key would make a batch no enclave can open
    // with slot 12's key, and the region's reports would stop for good.
    let (mut c, _, epoch_key) = market();
    c.block_ok(in_slot(SLOT + 1));
    let c1 = key("c1");
    let mut rng = ChaCha20Rng::from_seed([11; 32]);
    let public = epoch_key.public_key();
    let (sealed, _) = order(
        &c1,
        SLOT + 2,
        Side::Buy,
        15_000,
        100,
        (&public, epoch_key.epoch()),
        &mut rng,
    );
    let tx = c.tx(&c1, TxBody::SubmitSealedOrder { sealed });
    let mut state = c.state.clone();
    let got = quartier_ledger::apply(&mut state, &tx, &c.ctx());
    assert_eq!(got.err(), Some(TxError::UnknownEpoch(3)));
    assert!(state == c.state);
}

#[test]
fn a_batch_left_waiting_past_the_erasure_schedule_is_marked_for_every_enclave() {
    let (mut c, mut e, epoch_key) = market();
    let mut rng = ChaCha20Rng::from_seed([31; 32]);
    let (buy, _) = order(
        &key("c1"),
        SLOT,
        Side::Buy,
        15_000,
        500,
        (&epoch_key.public_key(), epoch_key.epoch()),
        &mut rng,
    );
    submit(&mut c, &key("c1"), &buy);
    c.block_ok(in_slot(SLOT));
    c.block_ok(after_gate(SLOT));
    let expired = |c: &Chain| {
        let (_, batch) = c.state.sealed_batches().next().unwrap();
        batch.expired
    };
    assert!(!expired(&c), "a fresh batch opens normally");
    // Nobody reports the slot; the committee goes on publishing keys, each
    // in the last slot of the epoch before its own. Epoch 2's batch is
    // marked when epoch 5's key is published (the enclaves then keep
    // epochs 3 to 5), not before.
    for next in [3, 4, 5] {
        let key = EpochKeyPair::generate(Epoch(next), &mut rng);
        let signature = e.sign(
            &[0, 1],
            &epoch_key_message(&chain_id(), key.epoch(), &key.public_key()),
        );
        c.queue(
            &e.accounts[0].clone(),
            TxBody::PublishEpochKey {
                epoch: key.epoch(),
                public_key: key.public_key(),
                signature,
            },
        );
        c.block_ok(in_slot(next * EPOCH_SLOTS - 1) + GATE_MS);
        assert_eq!(expired(&c), next == 5, "after epoch {next}");
    }
}

#[test]
fn revoking_a_measurement_evicts_its_enclaves_and_a_committee_without_them_is_voted_in() {
    // Enclaves 0 and 1 run MEASUREMENT, enclave 2 another build the
    // validators allowed. That build turns out broken: its enclaves may
    // leak what they hold, so the validators revoke it.
    let other = Measurement([6; 32]);
    let mut c = sealed_chain();
    let (c1, p1) = (key("c1"), key("p1"));
    c.enrol(&p1, R1, MeterRole::Prosumer, 5_000, chf(100));
    c.enrol(&c1, R1, MeterRole::Consumer, 0, chf(100));
    c.block_ok(in_slot(SLOT));
    pass(
        &mut c,
        GovernanceChange::AllowMeasurement(other),
        in_slot(SLOT),
    );
    let mut e = Enclaves::new(3);
    for (i, m) in [MEASUREMENT, MEASUREMENT, other].into_iter().enumerate() {
        let body = e.register(i, m);
        c.queue(&e.accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    let vote = e.vote(&chain_id(), 2, &[0, 1, 2]);
    for i in 0..3 {
        c.queue(&e.accounts[i].clone(), vote.clone());
    }
    let epoch_key = EpochKeyPair::generate(Epoch(SLOT / EPOCH_SLOTS), &mut e.rng);
    let (epoch, public) = (epoch_key.epoch(), epoch_key.public_key());
    let signature = e.sign(&[0, 1], &epoch_key_message(&chain_id(), epoch, &public));
    c.queue(
        &e.accounts[0].clone(),
        TxBody::PublishEpochKey {
            epoch,
            public_key: public,
            signature,
        },
    );
    c.block_ok(in_slot(SLOT));
    let in_office = c.state.committee().cloned().unwrap();
    // A slot trades and closes.
    let mut rng = ChaCha20Rng::from_seed([13; 32]);
    c.queue(&c1, TxBody::DepositToAuctioneer { amount: chf(50) });
    let (buy, _) = order(
        &c1,
        SLOT,
        Side::Buy,
        15_000,
        1_000,
        (&public, epoch),
        &mut rng,
    );
    let (sell, _) = order(
        &p1,
        SLOT,
        Side::Sell,
        10_000,
        600,
        (&public, epoch),
        &mut rng,
    );
    submit(&mut c, &c1, &buy);
    submit(&mut c, &p1, &sell);
    c.block_ok(in_slot(SLOT));
    c.block_ok(after_gate(SLOT));
    assert_eq!(c.state.sealed_batches().count(), 1);

    pass(
        &mut c,
        GovernanceChange::RevokeMeasurement(other),
        after_gate(SLOT) + 1,
    );
    let revoked = id(&e.accounts[2]);
    assert!(
        !c.state.enclaves().contains_key(&revoked),
        "still registered"
    );
    let evicting = c.state.committee().cloned().unwrap();
    assert_eq!(evicting.group_key, in_office.group_key);
    assert_eq!(evicting.evicted, vec![revoked]);

    // While it is evicting, the committee takes nothing its evicted member
    // could read or hold: no sealed order, deposit or epoch key.
    let (late, _) = order(
        &c1,
        SLOT + 1,
        Side::Buy,
        15_000,
        500,
        (&public, epoch),
        &mut rng,
    );
    let refused = |c: &Chain, who: &SigningKey, body: TxBody, expected: TxError| {
        let tx = c.tx(who, body);
        let mut state = c.state.clone();
        assert_eq!(
            quartier_ledger::apply(&mut state, &tx, &c.ctx()),
            Err(expected)
        );
        assert!(state == c.state, "a refused transaction changed the state");
    };
    refused(
        &c,
        &c1,
        TxBody::SubmitSealedOrder { sealed: late },
        TxError::CommitteeEvicting,
    );
    refused(
        &c,
        &c1,
        TxBody::DepositToAuctioneer { amount: chf(1) },
        TxError::CommitteeEvicting,
    );
    let next = EpochKeyPair::generate(Epoch(epoch.0 + 1), &mut e.rng);
    let signature = e.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), next.epoch(), &next.public_key()),
    );
    refused(
        &c,
        &e.accounts[0],
        TxBody::PublishEpochKey {
            epoch: next.epoch(),
            public_key: next.public_key(),
            signature,
        },
        TxError::CommitteeEvicting,
    );
    // The evicted enclave signs no transaction any more.
    let enclave = quartier_ledger::Role::Enclave;
    let vote = e.vote(&chain_id(), 2, &[0, 1, 2]);
    refused(
        &c,
        &e.accounts[2],
        vote,
        TxError::NotAuthorised { role: enclave },
    );
    // A withdrawal is still taken, and the closed slot still settles.
    c.queue(&c1, TxBody::RequestWithdrawal { amount: chf(5) });
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let report = clear_closed(&c, &mut auctioneer, epoch);
    let body = e.report(&[0, 1], &report.summary);
    c.queue(&e.accounts[1].clone(), body);
    c.block_ok(after_gate(SLOT) + 2);
    assert!(c.state.sealed_report(R1, Slot(SLOT)).is_some());
    supply_holds(&c.state);
    // The withdrawal is paid out by the evicting committee: the slot open
    // when it was asked closes a batch of it alone (before, a withdrawal
    // waited for somebody's order, which an evicting committee takes none
    // of: custody was locked).
    c.block_ok(after_gate(SLOT + 1));
    let ((_, slot), batch) = c.state.sealed_batches().next().unwrap();
    assert_eq!((slot, batch.orders.len()), (Slot(SLOT + 1), 0));
    let report = clear_closed(&c, &mut auctioneer, epoch);
    assert_eq!(report.summary.payouts, vec![(id(&c1), chf(5))]);
    let (balance, custody) = (c.state.account(&id(&c1)).balance, c.state.meta().custody);
    let body = e.report(&[0, 1], &report.summary);
    c.queue(&e.accounts[0].clone(), body);
    c.block_ok(after_gate(SLOT + 1) + 1);
    assert_eq!(
        c.state.account(&id(&c1)).balance,
        balance.checked_add(chf(5)).unwrap()
    );
    assert_eq!(c.state.meta().custody, custody.checked_sub(chf(5)).unwrap());
    supply_holds(&c.state);

    // A committee of the survivors and a newcomer is a candidate.
    let mut grown = Enclaves::with_threshold(4, 2, 21);
    let body = grown.register(3, MEASUREMENT);
    c.queue(&grown.accounts[3].clone(), body);
    c.block_ok(after_gate(SLOT + 1) + 2);
    let vote = grown.vote(&chain_id(), 2, &[0, 1, 3]);
    for i in [0, 1, 3] {
        c.queue(&grown.accounts[i].clone(), vote.clone());
    }
    c.block_ok(after_gate(SLOT + 1) + 3);
    assert_eq!(c.state.committee().unwrap().group_key, in_office.group_key);
    assert!(
        c.state
            .committee_candidates()
            .contains_key(&grown.group.public_key())
    );

    // So is the survivors' own committee: the validators choose, and seat
    // it. It clears from the ledger the last report left, and keys epochs
    // after the last published.
    let mut survivors = Enclaves::with_threshold(2, 2, 22);
    let vote = survivors.vote(&chain_id(), 2, &[0, 1]);
    for i in 0..2 {
        c.queue(&survivors.accounts[i].clone(), vote.clone());
    }
    c.block_ok(after_gate(SLOT + 1) + 4);
    assert_eq!(c.state.committee().unwrap().group_key, in_office.group_key);
    // (Enclaves 0 and 1 stand in one candidate at a time: it replaced the
    // one with the newcomer.)
    let candidates = c.state.committee_candidates();
    assert_eq!(candidates.len(), 1);
    assert!(candidates.contains_key(&survivors.group.public_key()));
    pass(
        &mut c,
        GovernanceChange::SeatCommittee(survivors.group.public_key()),
        after_gate(SLOT + 1) + 4,
    );
    let seated = c.state.committee().cloned().unwrap();
    assert_eq!(seated.group_key, survivors.group.public_key());
    assert_eq!(seated.members, {
        let mut m = vec![id(&e.accounts[0]), id(&e.accounts[1])];
        m.sort();
        m
    });
    assert!(seated.evicted.is_empty());
    assert_eq!(seated.ledgers.get(&R1), Some(&report.summary.ledger));
    assert_eq!(seated.first_epoch, Epoch(epoch.0 + 1));
    // It keys the next epoch, and orders flow again from there.
    let next = EpochKeyPair::generate(Epoch(epoch.0 + 1), &mut survivors.rng);
    let signature = survivors.sign(
        &[0, 1],
        &epoch_key_message(&chain_id(), next.epoch(), &next.public_key()),
    );
    c.queue(
        &survivors.accounts[0].clone(),
        TxBody::PublishEpochKey {
            epoch: next.epoch(),
            public_key: next.public_key(),
            signature,
        },
    );
    c.block_ok(after_gate(SLOT + 1) + 5);
    let first = next.epoch().0 * EPOCH_SLOTS;
    let (buy, _) = order(
        &c1,
        first,
        Side::Buy,
        15_000,
        500,
        (&next.public_key(), next.epoch()),
        &mut rng,
    );
    c.queue(&c1, TxBody::DepositToAuctioneer { amount: chf(1) });
    submit(&mut c, &c1, &buy);
    c.block_ok(after_gate(SLOT + 1) + 6);
    assert_eq!(c.state.sealed_book(R1, Slot(first)).unwrap().len(), 1);
}

/// A committee voted in while a batch waits for its report takes office
/// only once none waits (at the end of the first block without one): the
/// predecessor's members hand over a state at exactly the chain's reports,
/// and one that had cleared the waiting batch ahead would hold a ledger
/// nobody signed.
#[test]
fn a_committee_is_seated_only_when_no_batch_waits() {
    let (mut c, mut e, epoch_key) = market();
    let (epoch, public) = (epoch_key.epoch(), epoch_key.public_key());
    let mut rng = ChaCha20Rng::from_seed([14; 32]);
    let c1 = key("c1");
    c.queue(&c1, TxBody::DepositToAuctioneer { amount: chf(10) });
    let (buy, _) = order(
        &c1,
        SLOT,
        Side::Buy,
        15_000,
        100,
        (&public, epoch),
        &mut rng,
    );
    submit(&mut c, &c1, &buy);
    c.block_ok(in_slot(SLOT));
    c.block_ok(after_gate(SLOT));
    assert_eq!(c.state.sealed_batches().count(), 1);
    let mut newcomers = Enclaves::with_threshold(9, 2, 15);
    let mut others = Enclaves::with_threshold(9, 2, 16);
    for i in 3..9 {
        let body = newcomers.register(i, MEASUREMENT);
        c.queue(&newcomers.accounts[i].clone(), body);
    }
    c.block_ok(after_gate(SLOT) + 1);
    let vote = newcomers.vote(&chain_id(), 2, &[3, 4, 5]);
    for i in 3..6 {
        c.queue(&newcomers.accounts[i].clone(), vote.clone());
    }
    let vote = others.vote(&chain_id(), 2, &[6, 7, 8]);
    for i in 6..9 {
        c.queue(&others.accounts[i].clone(), vote.clone());
    }
    c.block_ok(after_gate(SLOT) + 2);
    let in_office = c.state.committee().unwrap().group_key;
    // Two seats pass while the batch waits: the newcomers', then the
    // others'.
    pass(
        &mut c,
        GovernanceChange::SeatCommittee(newcomers.group.public_key()),
        after_gate(SLOT) + 3,
    );
    pass(
        &mut c,
        GovernanceChange::SeatCommittee(others.group.public_key()),
        after_gate(SLOT) + 3,
    );
    assert_eq!(c.state.committee().unwrap().group_key, in_office);
    assert_eq!(c.state.proposals().count(), 2, "a passed seat was dropped");
    // The batch is reported: the seat takes effect at the block's end.
    let mut auctioneer = Auctioneer::new(chain_id(), R1, r1_params(), epoch_key);
    let report = clear_closed(&c, &mut auctioneer, epoch);
    let body = e.report(&[0, 1], &report.summary);
    c.queue(&e.accounts[0].clone(), body);
    c.block_ok(after_gate(SLOT) + 4);
    // Both took effect at the block's end, the later last; the newcomers
    // never reported, so never showed they took the state over: it is
    // still the first committee's, which the others take it from.
    let seated = c.state.committee().unwrap();
    assert_eq!(seated.group_key, others.group.public_key());
    assert_eq!(seated.ledgers.get(&R1), Some(&report.summary.ledger));
    assert_eq!(seated.last_reported.get(&R1), Some(&Slot(SLOT)));
    assert_eq!(
        seated.predecessor.as_ref().map(|p| p.group_key),
        Some(in_office)
    );
    assert_eq!(c.state.proposals().count(), 0);
}

/// Enclaves that vote for committee after committee (a replayed vote costs
/// nothing) do not push out the candidate the validators are voting on:
/// the oldest candidate nobody proposed goes, and once every one waits on a
/// proposal, another is refused. Before (one candidate at a time), each
/// such vote replaced the candidate and dropped the validators' proposal.
#[test]
fn committees_voted_for_again_and_again_do_not_push_out_the_one_being_seated() {
    // Group k is enclaves 3 + 2k and 4 + 2k (an enclave stands in one
    // candidate at a time: the attack takes many enclaves).
    let (mut c, _, _) = market();
    let n = 3 + 2 * 10;
    let mut groups: Vec<Enclaves> = (0..10)
        .map(|k| Enclaves::with_threshold(n, 2, 40 + k))
        .collect();
    for i in 3..usize::from(n) {
        let body = groups[0].register(i, MEASUREMENT);
        c.queue(&groups[0].accounts[i].clone(), body);
    }
    c.block_ok(in_slot(SLOT));
    let key_of = |g: &Enclaves| g.group.public_key();
    let mut next = 0;
    let mut vote_for = |c: &mut Chain, g: &mut Enclaves| {
        let pair = [3 + 2 * next, 4 + 2 * next];
        next += 1;
        let vote = g.vote(&chain_id(), 2, &pair);
        for i in pair {
            c.queue(&g.accounts[i].clone(), vote.clone());
        }
        c.block_ok(in_slot(SLOT));
    };
    vote_for(&mut c, &mut groups[0]);
    let propose = |c: &mut Chain, group_key| {
        c.queue(
            &key("validator-0"),
            TxBody::Propose {
                change: GovernanceChange::SeatCommittee(group_key),
            },
        );
        c.block_ok(in_slot(SLOT));
    };
    propose(&mut c, key_of(&groups[0]));
    for g in &mut groups[1..=quartier_ledger::MAX_CANDIDATES] {
        vote_for(&mut c, g);
    }
    let candidates = c.state.committee_candidates();
    assert_eq!(candidates.len(), quartier_ledger::MAX_CANDIDATES);
    assert!(candidates.contains_key(&key_of(&groups[0])), "pushed out");
    assert!(!candidates.contains_key(&key_of(&groups[1])));
    // Every candidate named by an open proposal: another is refused, and
    // the refused vote changes nothing.
    let keys: Vec<_> = candidates.keys().copied().collect();
    for k in keys.into_iter().filter(|k| *k != key_of(&groups[0])) {
        propose(&mut c, k);
    }
    let last = &mut groups[9];
    let vote = last.vote(&chain_id(), 2, &[21, 22]);
    c.queue(&last.accounts[21].clone(), vote.clone());
    c.block_ok(in_slot(SLOT));
    let tx = c.tx(&last.accounts[22], vote);
    let mut state = c.state.clone();
    assert_eq!(
        quartier_ledger::apply(&mut state, &tx, &c.ctx()),
        Err(TxError::CandidatesFull)
    );
    assert!(state == c.state, "a refused vote changed the state");
    // An enclave stands in one candidate: its members' next committee
    // replaces the one they voted for before (proposed or not).
    let mut again = Enclaves::with_threshold(n, 2, 77);
    let vote = again.vote(&chain_id(), 2, &[7, 8]);
    for i in [7, 8] {
        c.queue(&again.accounts[i].clone(), vote.clone());
    }
    c.block_ok(in_slot(SLOT));
    let candidates = c.state.committee_candidates();
    assert!(candidates.contains_key(&key_of(&again)));
    assert!(
        !candidates.contains_key(&key_of(&groups[2])),
        "not replaced"
    );
    // The validators seat the one they first proposed.
    for v in 1..3 {
        c.queue(
            &key(&format!("validator-{v}")),
            TxBody::Vote {
                proposal: 0,
                approve: true,
            },
        );
    }
    c.block_ok(in_slot(SLOT));
    assert_eq!(c.state.committee().unwrap().group_key, key_of(&groups[0]));
}
