//! A host can not make its enclave clear a batch the chain never closed.
//!
//! The attack: a member's host (root on the machine next to the enclave)
//! takes one household's sealed order from the chain and hands its enclave a
//! batch holding that order alone. The report's public aggregates are then
//! that one order (its energy, and its price when it trades): the host reads
//! a household's order, slot after slot, and catches its enclave up from a
//! peer afterwards. The enclave now clears only a batch shown to be the
//! chain's: the `SealedBatch` record under the state root of a block a
//! quorum of the chain's validators finalized, for the chain its committee
//! serves. Each forgery below is refused and leaves the enclave unchanged.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use commonware_codec::Write as _;
use commonware_codec::varint::UInt;
use commonware_cryptography::ed25519;
use ed25519_dalek::SigningKey;
use quartier_enclave::attestation::{Measurement, Quote, SimulatedAttestationService};
use quartier_enclave::auctioneer::{Batch, SlotSummary};
use quartier_enclave::rpc::{Request, Response};
use quartier_enclave::sealed::{OrderPayload, SignedOrder, seal};
use quartier_enclave::service::{
    ChainError, EnclaveService, FinalizedBatch, FinalizedRecords, ServiceError, SimulatedPlatform,
};
use quartier_ledger::{
    CustodyFlows, Genesis, SealedBatch, SealedEntry, SealedMarketPolicy, State, StateKey,
};
use quartier_light::LightError;
use quartier_testkit::validator_keys_of;
use quartier_types::{AccountId, Energy, Height, Price, RegionId, RegionParams, Side, Slot};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng as _;

const MEASUREMENT: Measurement = Measurement([6; 32]);
const REGION: RegionId = RegionId(1);
const SLOT: Slot = Slot(9);

fn params() -> RegionParams {
    RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500)).unwrap()
}

fn genesis(keys: &[ed25519::PrivateKey], vendor: &SimulatedAttestationService) -> Genesis {
    Genesis {
        regions: vec![(REGION, params())],
        lead_slots: 2,
        sealed_market: Some(SealedMarketPolicy {
            attestation: vec![vendor.root()],
            vendors: Default::default(),
            measurements: vec![MEASUREMENT],
            threshold: 2,
            epoch_slots: 4,
            first_committee: Default::default(),
        }),
        ..Genesis::new(
            "enclave-chain-test",
            AccountId([1; 32]),
            AccountId([2; 32]),
            keys.iter()
                .map(quartier_testkit::validator_account)
                .collect(),
        )
    }
}

/// `n` fresh enclaves on the test platform, ascending by account, and
/// their quotes.
fn fresh_enclaves(
    n: usize,
    vendor: &SimulatedAttestationService,
) -> (Vec<EnclaveService>, Vec<Quote>) {
    let platform = SimulatedPlatform::new([5; 32], MEASUREMENT, vendor.root());
    let mut enclaves: Vec<EnclaveService> = (0..n)
        .map(|_| EnclaveService::new(&platform).unwrap())
        .collect();
    enclaves.sort_by_key(EnclaveService::account);
    let quotes = enclaves
        .iter()
        .map(|e| vendor.quote(MEASUREMENT, e.report_data()))
        .collect();
    (enclaves, quotes)
}

/// Three enclaves (t = 2) serving `genesis`'s chain, all holding the key
/// of `SLOT`'s epoch; that key.
fn committee(
    genesis: &Genesis,
    vendor: &SimulatedAttestationService,
) -> (Vec<EnclaveService>, [u8; 32]) {
    let (mut enclaves, quotes) = fresh_enclaves(3, vendor);
    let chain = genesis.chain_id().0.0;
    for e in enclaves.iter_mut() {
        e.trust_registry_unverified(chain, &quotes);
    }
    let outcome = quartier_enclave::dkg::run_in_process(&mut enclaves, chain, 2, 1, quotes);
    assert!(
        matches!(outcome, quartier_enclave::dkg::DkgOutcome::Formed(_)),
        "{outcome:?}"
    );
    let epoch = genesis.sealed_market.as_ref().unwrap().epoch_of(SLOT);
    let (public, shares) = enclaves[0].create_epoch_key(epoch).unwrap();
    for share in shares {
        for e in &mut enclaves {
            let _ = e.handle(quartier_enclave::rpc::Request::ReceiveEpochKey {
                share: share.clone(),
                public_key: public,
            });
        }
    }
    for e in &mut enclaves {
        assert!(e.settle_epoch_key(epoch, &public));
    }
    (enclaves, public)
}

/// A household's sell of `wh` watt-hours, sealed to `key`.
fn sell(
    genesis: &Genesis,
    key: &[u8; 32],
    wallet: &SigningKey,
    wh: u64,
    rng: &mut ChaCha20Rng,
) -> SealedEntry {
    let meter = AccountId(wallet.verifying_key().to_bytes());
    let payload = OrderPayload {
        chain: genesis.chain_id().0.0,
        wallet: meter,
        region: REGION,
        slot: SLOT,
        epoch: genesis.sealed_market.as_ref().unwrap().epoch_of(SLOT),
        side: Side::Sell,
        limit: Price::new(9_000),
        energy: Energy::new(wh),
        receipt_key: [7; 32],
    };
    let sealed = seal(key, &SignedOrder::sign(payload, wallet), rng).unwrap();
    SealedEntry { meter, sealed }
}

fn batch(orders: Vec<SealedEntry>) -> SealedBatch {
    let traders = {
        let mut t: Vec<(AccountId, Energy)> = orders
            .iter()
            .map(|o| (o.meter, Energy::new(5_000)))
            .collect();
        t.sort();
        t
    };
    SealedBatch {
        params: params(),
        orders,
        flows: CustodyFlows::default(),
        closed: Height(12),
        traders,
        expired: false,
        previous: None,
    }
}

/// A block at `height` committing to `state`'s root, encoded as the node
/// encodes blocks (parent, height, time, state root, no transactions).
fn block(height: u64, state: &State) -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    UInt(height).write(&mut bytes);
    (1_000u64 * height).write(&mut bytes);
    bytes.extend_from_slice(&state.root().0);
    0u32.write(&mut bytes);
    bytes
}

/// The state `genesis` starts, with `batches` closed, committed.
fn state_with(genesis: &Genesis, batches: Vec<(Slot, SealedBatch)>) -> State {
    let mut state = State::from_genesis(genesis.clone()).unwrap();
    for (slot, b) in batches {
        state.insert_sealed_batch_for_testing(REGION, slot, b);
    }
    state.commit().unwrap();
    state
}

/// `state`'s block finalized by `signers` of `keys` for `genesis`'s chain,
/// with the proof of `(REGION, slot)`'s batch under it.
fn proven(
    genesis: &Genesis,
    keys: &[ed25519::PrivateKey],
    signers: &[usize],
    state: &State,
    slot: Slot,
) -> FinalizedBatch {
    proven_at(12, genesis, keys, signers, state, slot)
}

/// [`proven`] with the block at `height`.
fn proven_at(
    height: u64,
    genesis: &Genesis,
    keys: &[ed25519::PrivateKey],
    signers: &[usize],
    state: &State,
    slot: Slot,
) -> FinalizedBatch {
    let (block, finalization) = certified(genesis, keys, signers, state, height);
    FinalizedBatch {
        block,
        finalization,
        proof: state.prove(StateKey::SealedBatch(REGION, slot)).unwrap(),
        genesis: state.prove(StateKey::Genesis).unwrap(),
    }
}

fn unchanged(e: &EnclaveService) -> bool {
    e.last_cleared(REGION).is_none() && e.report(REGION, SLOT).is_none()
}

#[test]
fn a_host_can_not_isolate_an_order_in_a_batch_the_chain_never_closed() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let vendor = SimulatedAttestationService::new([42; 32]);
    let keys = validator_keys_of(0, 4);
    let genesis = genesis(&keys, &vendor);
    let (mut members, epoch_key) = committee(&genesis, &vendor);
    let wallets: Vec<SigningKey> = (0..3u8)
        .map(|i| SigningKey::from_bytes(&[i + 60; 32]))
        .collect();
    let orders: Vec<SealedEntry> = [1_200, 800, 2_500]
        .iter()
        .zip(&wallets)
        .map(|(wh, w)| sell(&genesis, &epoch_key, w, *wh, &mut rng))
        .collect();
    let victim = orders[0].clone();
    let honest = batch(orders);
    let forged = batch(vec![victim]);
    let chain = state_with(&genesis, vec![(SLOT, honest.clone())]);
    let host_made = state_with(&genesis, vec![(SLOT, forged.clone())]);

    // What the host could do before (the third member's, here): hand over
    // the victim's order alone, and read its energy off the public
    // aggregates.
    let before = &mut members[2];
    let orders: Vec<_> = forged.orders.iter().map(|o| o.sealed.clone()).collect();
    let leaked: SlotSummary = before
        .clear_unverified(
            REGION,
            &Batch {
                slot: SLOT,
                params: params(),
                epoch: genesis.sealed_market.as_ref().unwrap().epoch_of(SLOT),
                deposits: &[],
                orders: &orders,
                withdrawals: &[],
                traders: &forged.traders,
                expired: false,
            },
        )
        .unwrap()
        .summary
        .clone();
    assert_eq!(
        leaked.aggregates.totals.grid_export,
        Energy::new(1_200),
        "{leaked:?}"
    );

    let refused = |m: &mut EnclaveService, g: &Genesis, proof: &FinalizedBatch, slot: Slot| {
        let answer = m
            .clear_finalized(g, REGION, slot, proof)
            .map(|r| r.summary.clone());
        let unchanged = unchanged(m);
        (answer.err(), unchanged)
    };
    let m = &mut members[0];
    // 1. The host's own chain: a genesis whose validators it holds. It
    //    finalizes its forged state itself; the genesis is not the
    //    committee's chain.
    let host_keys = validator_keys_of(1, 4);
    let host_genesis = genesis_of_host(&genesis, &host_keys);
    let host_chain = state_with(&host_genesis, vec![(SLOT, forged.clone())]);
    let proof = proven(&host_genesis, &host_keys, &[0, 1, 2, 3], &host_chain, SLOT);
    assert_eq!(
        refused(m, &host_genesis, &proof, SLOT),
        (Some(ServiceError::Chain(ChainError::OtherChain)), true)
    );
    // 2. The real chain's genesis, the forged state signed by keys that are
    //    not its validators (here: two of four validators and two strangers).
    let mut mixed = keys.clone();
    mixed[2] = host_keys[2].clone();
    mixed[3] = host_keys[3].clone();
    let proof = proven(&genesis, &mixed, &[0, 1, 2, 3], &host_made, SLOT);
    let answer = refused(m, &genesis, &proof, SLOT);
    assert!(answer.1);
    assert!(
        matches!(answer.0, Some(ServiceError::Chain(ChainError::Light(_)))),
        "{answer:?}"
    );
    // 3. Fewer than a quorum of the real validators (2 of 4; 3 are needed).
    let proof = proven(&genesis, &keys, &[0, 1], &host_made, SLOT);
    assert_eq!(
        refused(m, &genesis, &proof, SLOT),
        (
            Some(ServiceError::Chain(ChainError::Light(
                LightError::BadCertificate
            ))),
            true
        )
    );
    // 4. A block the chain really finalized, with the forged batch's proof
    //    (under another root).
    let mut proof = proven(&genesis, &keys, &[0, 1, 2], &chain, SLOT);
    proof.proof = host_made
        .prove(StateKey::SealedBatch(REGION, SLOT))
        .unwrap();
    assert_eq!(
        refused(m, &genesis, &proof, SLOT),
        (
            Some(ServiceError::Chain(ChainError::Light(LightError::BadProof))),
            true
        )
    );
    // 5. The chain's batch of another slot, offered for this one.
    let mut proof = proven(&genesis, &keys, &[0, 1, 2], &chain, SLOT);
    proof.proof = chain.prove(StateKey::SealedBatch(REGION, Slot(8))).unwrap();
    assert_eq!(
        refused(m, &genesis, &proof, SLOT),
        (
            Some(ServiceError::Chain(ChainError::Light(LightError::WrongKey))),
            true
        )
    );
    // 6. A slot the chain closed no batch for (a proof of absence).
    let proof = proven(&genesis, &keys, &[0, 1, 2], &chain, Slot(10));
    let answer = m.clear_finalized(&genesis, REGION, Slot(10), &proof).err();
    assert_eq!(answer, Some(ServiceError::Chain(ChainError::NoBatch)));
    assert!(unchanged(m));

    // 7. A chain relaunched with the same name and validators (another
    //    genesis: here other allocations): its block verifies under the
    //    same keys, its genesis record is not the committee's.
    let relaunched = Genesis {
        allocations: vec![(AccountId([9; 32]), quartier_types::Money::new(1))],
        ..genesis.clone()
    };
    let other_chain = state_with(&relaunched, vec![(SLOT, forged.clone())]);
    let proof = proven(&genesis, &keys, &[0, 1, 2], &other_chain, SLOT);
    assert_eq!(
        refused(m, &genesis, &proof, SLOT),
        (Some(ServiceError::Chain(ChainError::OtherChain)), true)
    );
    // 8. A later batch before the one the chain closed first: skipping a
    //    batch would clear from another prepaid ledger than the others'.
    let mut next = batch(vec![]);
    next.previous = Some(SLOT);
    let chain = state_with(&genesis, vec![(SLOT, honest.clone()), (Slot(11), next)]);
    let skip = proven_at(14, &genesis, &keys, &[0, 1, 2], &chain, Slot(11));
    let answer = m.clear_finalized(&genesis, REGION, Slot(11), &skip).err();
    assert_eq!(answer, Some(ServiceError::Chain(ChainError::OutOfTurn)));
    assert!(unchanged(m) && m.report(REGION, Slot(11)).is_none());

    // The chain's batch, finalized by a quorum: the other members clear it
    // alike, all three orders in it.
    let proof = proven(&genesis, &keys, &[1, 2, 3], &chain, SLOT);
    let summaries: Vec<SlotSummary> = members[..2]
        .iter_mut()
        .map(|m| {
            m.clear_finalized(&genesis, REGION, SLOT, &proof)
                .unwrap()
                .summary
                .clone()
        })
        .collect();
    assert!(summaries.iter().all(|s| *s == summaries[0]));
    assert_eq!(summaries[0].aggregates.sealed, 3);
    assert_eq!(
        summaries[0].aggregates.totals.grid_export,
        Energy::new(4_500)
    );
    // Then the next one, in turn; an older block than one taken is not.
    let m = &mut members[0];
    assert!(m.clear_finalized(&genesis, REGION, Slot(11), &skip).is_ok());
    let older = proven_at(11, &genesis, &keys, &[0, 1, 2], &chain, Slot(11));
    assert_eq!(
        m.clear_finalized(&genesis, REGION, Slot(11), &older).err(),
        Some(ServiceError::Chain(ChainError::Stale))
    );
}

/// `genesis` with the host's keys as validators: another chain.
fn genesis_of_host(genesis: &Genesis, host_keys: &[ed25519::PrivateKey]) -> Genesis {
    Genesis {
        validators: host_keys
            .iter()
            .map(quartier_testkit::validator_account)
            .collect(),
        ..genesis.clone()
    }
}

/// The chain's registration of `e` as its quote says.
fn registration(quote: &Quote) -> (AccountId, quartier_ledger::Enclave) {
    let (identity, account) = quote.report_data.split_at(32);
    (
        AccountId(account.try_into().unwrap()),
        quartier_ledger::Enclave {
            identity_key: identity.try_into().unwrap(),
            measurement: quote.measurement,
            vendor: 0,
            registered: Height(3),
        },
    )
}

/// The registry proofs a host shows: measurements, committee and `enclaves`.
fn registry(
    genesis: &Genesis,
    keys: &[ed25519::PrivateKey],
    state: &State,
    height: u64,
    enclaves: &[AccountId],
) -> FinalizedRecords {
    let proven: Vec<StateKey> = [
        StateKey::Genesis,
        StateKey::Measurements,
        StateKey::Committee,
    ]
    .into_iter()
    .chain(enclaves.iter().map(|a| StateKey::Enclave(*a)))
    .collect();
    records(genesis, (keys, &[0, 1, 2]), state, height, &proven)
}

/// The DKG round 1 a host's enclave (the first member) invites, as every
/// member's RPC receives it.
fn invitations(
    enclaves: &[EnclaveService],
    chain: [u8; 32],
    t: u16,
    quotes: &[Quote],
) -> Vec<Request> {
    let invitation = enclaves[0].invite(chain, t, 1, quotes).unwrap();
    (0..quotes.len() as u16)
        .map(|index| Request::DkgRound1 {
            index,
            t,
            attempt: 1,
            chain,
            members: quotes.to_vec(),
            invitation,
        })
        .collect()
}

fn refused(answer: Response) -> String {
    match answer {
        Response::Refused(why) => why,
        other => panic!("answered {other:?}"),
    }
}

/// Before, the inviting member's host chose `t` and the members among any
/// genuine enclaves, registered on the chain or not; the others' enclaves
/// took its word. Now each enclave runs a DKG only among enclaves its own
/// verified view of the chain's registry seats, for the policy's `t`, while
/// no committee is in office.
#[test]
fn a_dkg_runs_only_among_the_enclaves_the_chain_registered() {
    let vendor = SimulatedAttestationService::new([42; 32]);
    let keys = validator_keys_of(0, 4);
    let genesis = genesis(&keys, &vendor);
    let chain = genesis.chain_id().0.0;
    let (mut enclaves, quotes) = fresh_enclaves(4, &vendor);
    // The chain registered the first three; the fourth is genuine but its
    // host never registered it (the inviting host's own).
    let mut state = State::from_genesis(genesis.clone()).unwrap();
    for q in &quotes[..3] {
        let (account, enclave) = registration(q);
        state.insert_enclave_for_testing(account, enclave);
    }
    state.commit().unwrap();
    let registered: Vec<AccountId> = quotes[..3].iter().map(|q| registration(q).0).collect();
    let three = quotes[..3].to_vec();

    // No registry shown yet: no DKG.
    let request = &invitations(&enclaves, chain, 2, &three)[1];
    assert!(refused(enclaves[1].handle(request.clone())).contains("registry"));

    let shown = registry(&genesis, &keys, &state, 20, &registered);
    for e in &mut enclaves {
        assert_eq!(e.observe_registry(&genesis, &shown), Ok(20));
    }
    // Another chain's registry in between (the host's own, at a greater
    // height) does not reset what the enclave took of this one.
    let host_keys = validator_keys_of(1, 4);
    let host_genesis = genesis_of_host(&genesis, &host_keys);
    let host_state = State::from_genesis(host_genesis.clone()).unwrap();
    let theirs = registry(&host_genesis, &host_keys, &host_state, 1_000, &[]);
    assert_eq!(
        enclaves[1].observe_registry(&host_genesis, &theirs),
        Ok(1_000)
    );
    // An older registry after it is refused (a host can not roll back to
    // before a revocation).
    let older = registry(&genesis, &keys, &state, 19, &registered);
    assert!(enclaves[1].observe_registry(&genesis, &older).is_err());
    // A registry the validators did not finalize, or with a record that is
    // not the registry's.
    let mut forged = registry(&genesis, &keys, &state, 21, &registered);
    forged.finalization = quartier_light::testing::finalization(
        &genesis,
        &keys,
        &[0, 1],
        51,
        quartier_light::block_digest(&forged.block),
    );
    assert!(enclaves[1].observe_registry(&genesis, &forged).is_err());
    let mut other = registry(&genesis, &keys, &state, 21, &registered);
    other.proofs.push(state.prove(StateKey::Meta).unwrap());
    assert_eq!(
        enclaves[1].observe_registry(&genesis, &other),
        Err(ServiceError::Chain(ChainError::NotRegistry))
    );
    // The chain's own registry again (as high as the one taken): taken.
    assert_eq!(enclaves[1].observe_registry(&genesis, &shown), Ok(20));

    // The inviting host seats its unregistered enclave in place of one
    // registered member, or asks for all three of three (the policy says
    // two): every member refuses, the invited one included.
    let with_own = vec![quotes[0].clone(), quotes[1].clone(), quotes[3].clone()];
    for (i, request) in invitations(&enclaves, chain, 2, &with_own)
        .into_iter()
        .enumerate()
    {
        let member = if i == 2 { 3 } else { i };
        let why = refused(enclaves[member].handle(request));
        assert!(why.contains("does not seat"), "{why}");
    }
    // A DKG for another chain than the one whose registry the enclave took.
    for (i, request) in invitations(&enclaves, [0xc4; 32], 2, &three)
        .into_iter()
        .enumerate()
    {
        let why = refused(enclaves[i].handle(request));
        assert!(why.contains("does not seat"), "{why}");
    }
    for (i, request) in invitations(&enclaves, chain, 3, &three)
        .into_iter()
        .enumerate()
    {
        let why = refused(enclaves[i].handle(request));
        assert!(why.contains("does not seat"), "{why}");
    }
    // The chain's three for the policy's t: the committee forms.
    let mut members: Vec<EnclaveService> = enclaves.drain(..3).collect();
    let outcome = quartier_enclave::dkg::run_in_process(&mut members, chain, 2, 2, three.clone());
    assert!(
        matches!(outcome, quartier_enclave::dkg::DkgOutcome::Formed(_)),
        "{outcome:?}"
    );

    // With a committee in office, a fresh enclave takes part in no DKG.
    let (mut fresh, fresh_quotes) = fresh_enclaves(3, &vendor);
    for q in &fresh_quotes {
        let (account, enclave) = registration(q);
        state.insert_enclave_for_testing(account, enclave);
    }
    state.insert_committee_for_testing(quartier_ledger::Committee {
        members: registered.clone(),
        group_key: members[0].group_key().unwrap(),
        threshold: 2,
        since: Height(30),
        ledgers: Default::default(),
        closed: Default::default(),
        evicted: Vec::new(),
        first_epoch: Default::default(),
        identities: Vec::new(),
        predecessor: None,
        last_reported: Default::default(),
        reported: false,
    });
    state.commit().unwrap();
    let accounts: Vec<AccountId> = fresh_quotes.iter().map(|q| registration(q).0).collect();
    let shown = registry(&genesis, &keys, &state, 40, &accounts);
    for e in &mut fresh {
        assert_eq!(e.observe_registry(&genesis, &shown), Ok(40));
    }
    for (i, request) in invitations(&fresh, chain, 2, &fresh_quotes)
        .into_iter()
        .enumerate()
    {
        let why = refused(fresh[i].handle(request));
        assert!(why.contains("does not seat"), "{why}");
    }
}

/// The epochs record a host shows: genesis and epochs proofs under a block
/// at `height` signed by `signers`.
fn epochs(
    genesis: &Genesis,
    keys: &[ed25519::PrivateKey],
    signers: &[usize],
    state: &State,
    height: u64,
) -> FinalizedRecords {
    records(
        genesis,
        (keys, signers),
        state,
        height,
        &[StateKey::Genesis, StateKey::Epochs],
    )
}

/// `state`'s block at `height` certified by `signers` of `keys`, with the
/// proofs of `proven` under its root.
fn records(
    genesis: &Genesis,
    (keys, signers): (&[ed25519::PrivateKey], &[usize]),
    state: &State,
    height: u64,
    proven: &[StateKey],
) -> FinalizedRecords {
    let (block, finalization) = certified(genesis, keys, signers, state, height);
    FinalizedRecords {
        block,
        finalization,
        proofs: proven.iter().map(|k| state.prove(*k).unwrap()).collect(),
    }
}

/// `state`'s block at `height` and its finalization by `signers` of `keys`.
fn certified(
    genesis: &Genesis,
    keys: &[ed25519::PrivateKey],
    signers: &[usize],
    state: &State,
    height: u64,
) -> (Vec<u8>, Vec<u8>) {
    let block = block(height, state);
    let finalization = quartier_light::testing::finalization(
        genesis,
        keys,
        signers,
        height + 30,
        quartier_light::block_digest(&block),
    );
    (block, finalization)
}

/// Before, the host named the published epoch keys: naming a far epoch made
/// its enclave erase every key it held (its orders then refused unopened),
/// and naming a candidate the chain never published made it clear with
/// that one. Now only the chain's `Epochs` record, finalized, moves the
/// enclave's keys and its erasure schedule.
#[test]
fn a_host_can_not_move_its_enclaves_erasure_schedule() {
    use quartier_enclave::sealed::Epoch;
    use quartier_enclave::service::KEPT_EPOCHS_BEHIND;
    let vendor = SimulatedAttestationService::new([42; 32]);
    let keys = validator_keys_of(0, 4);
    let genesis = genesis(&keys, &vendor);
    let (mut members, public) = committee(&genesis, &vendor);
    let epoch = genesis.sealed_market.as_ref().unwrap().epoch_of(SLOT);
    let far = Epoch(epoch.0 + 10);
    let m = &mut members[0];
    // The host's own chain naming a far epoch.
    let host_keys = validator_keys_of(1, 4);
    let host_genesis = genesis_of_host(&genesis, &host_keys);
    let mut host_state = State::from_genesis(host_genesis.clone()).unwrap();
    host_state.insert_epoch_key_for_testing(far, [9; 32]);
    host_state.commit().unwrap();
    let shown = epochs(&host_genesis, &host_keys, &[0, 1, 2], &host_state, 20);
    assert_eq!(
        m.observe_epochs(&host_genesis, &shown),
        Err(ServiceError::Chain(ChainError::OtherChain))
    );
    // The chain's genesis, a state the validators did not finalize (two of
    // four signatures).
    let mut made_up = State::from_genesis(genesis.clone()).unwrap();
    made_up.insert_epoch_key_for_testing(far, [9; 32]);
    made_up.commit().unwrap();
    let shown = epochs(&genesis, &keys, &[0, 1], &made_up, 20);
    assert_eq!(
        m.observe_epochs(&genesis, &shown),
        Err(ServiceError::Chain(ChainError::Light(
            LightError::BadCertificate
        )))
    );
    assert_eq!(m.epoch_key(epoch), Some(public));
    // The chain's record with the published key: kept. A candidate for the
    // next epoch the chain never published is not settled.
    let (candidate, _) = m.create_epoch_key(Epoch(epoch.0 + 1)).unwrap();
    let mut chain = State::from_genesis(genesis.clone()).unwrap();
    chain.insert_epoch_key_for_testing(epoch, public);
    chain.commit().unwrap();
    assert!(
        m.observe_epochs(&genesis, &epochs(&genesis, &keys, &[0, 1, 2], &chain, 21))
            .is_ok()
    );
    assert_eq!(m.settled_epoch_key(epoch), Some(public));
    assert_eq!(m.settled_epoch_key(Epoch(epoch.0 + 1)), None);
    // Once the chain publishes it, it is.
    chain.insert_epoch_key_for_testing(Epoch(epoch.0 + 1), candidate);
    chain.commit().unwrap();
    let newer = epochs(&genesis, &keys, &[0, 1, 2], &chain, 23);
    assert_eq!(m.observe_epochs(&genesis, &newer), Ok(true));
    assert_eq!(m.settled_epoch_key(Epoch(epoch.0 + 1)), Some(candidate));
    // An older record (a node behind) is taken too: it changes nothing.
    let older = epochs(&genesis, &keys, &[0, 1, 2], &chain, 21);
    assert_eq!(m.observe_epochs(&genesis, &older), Ok(false));
    // The chain publishes a key far enough ahead: the old key is erased on
    // the chain's schedule.
    chain.insert_epoch_key_for_testing(Epoch(epoch.0 + KEPT_EPOCHS_BEHIND + 1), [9; 32]);
    chain.commit().unwrap();
    let shown = epochs(&genesis, &keys, &[0, 1, 2], &chain, 24);
    assert_eq!(m.observe_epochs(&genesis, &shown), Ok(true));
    assert_eq!(m.epoch_key(epoch), None);
}

/// Validator `k`'s ledger signing key (the same Ed25519 key).
fn ledger_key(k: &ed25519::PrivateKey) -> SigningKey {
    let bytes = commonware_codec::Encode::encode(k);
    SigningKey::from_bytes(&bytes.as_ref()[..32].try_into().unwrap())
}

/// The registry proofs of `state` under its block at `height`, finalized
/// in consensus `epoch` by `signers` of the set `keys`.
fn registry_in(
    genesis: &Genesis,
    (keys, signers): (&[ed25519::PrivateKey], &[usize]),
    epoch: u64,
    state: &State,
    height: u64,
) -> FinalizedRecords {
    let block = block(height, state);
    let finalization = quartier_light::testing::finalization_in(
        genesis,
        keys,
        signers,
        epoch,
        height + 30,
        quartier_light::block_digest(&block),
    );
    FinalizedRecords {
        block,
        finalization,
        proofs: [
            StateKey::Genesis,
            StateKey::Measurements,
            StateKey::Committee,
        ]
        .iter()
        .map(|k| state.prove(*k).unwrap())
        .collect(),
    }
}

/// Before, an enclave checked every certificate against the genesis
/// validators: once governance had replaced one, the chain's certificates
/// were refused (mode B stopped clearing) while the old set's still
/// counted. Now its host teaches it each change, which it takes only
/// certified by the set before, and it checks a certificate against the
/// set of its epoch.
#[test]
fn an_enclave_learns_validator_changes_only_from_the_set_before() {
    use quartier_ledger::{BlockContext, GovernanceChange, Tx, TxBody, execute_block};
    let vendor = SimulatedAttestationService::new([42; 32]);
    let keys = validator_keys_of(7, 4);
    let genesis = Genesis {
        epoch_blocks: 8,
        ..genesis(&keys, &vendor)
    };
    // Block 1: validators 1-3 vote out validator 0; block 7 ends epoch 0.
    let mut state = State::from_genesis(genesis.clone()).unwrap();
    let tx = |state: &State, k: &ed25519::PrivateKey, body: TxBody| {
        let key = ledger_key(k);
        Tx {
            chain_id: state.chain_id(),
            signer: AccountId(key.verifying_key().to_bytes()),
            nonce: 0,
            body,
        }
        .sign(&key)
    };
    let removed = genesis.validators[0];
    let txs = vec![
        tx(
            &state,
            &keys[1],
            TxBody::Propose {
                change: GovernanceChange::Remove(removed),
            },
        ),
        tx(
            &state,
            &keys[2],
            TxBody::Vote {
                proposal: 0,
                approve: true,
            },
        ),
        tx(
            &state,
            &keys[3],
            TxBody::Vote {
                proposal: 0,
                approve: true,
            },
        ),
    ];
    for height in 1..=7u64 {
        let ctx = BlockContext {
            height: Height(height),
            time: quartier_types::Timestamp(1_000 * height),
        };
        let txs = if height == 1 { txs.clone() } else { Vec::new() };
        let outcome = execute_block(&mut state, &ctx, txs).unwrap();
        assert!(outcome.results.iter().all(Result::is_ok));
    }
    assert_eq!(state.validator_sets().len(), 2);
    let boundary = block(7, &state);
    let change = |signers: &[ed25519::PrivateKey]| quartier_light::EpochChange {
        block: boundary.clone(),
        finalization: quartier_light::testing::finalization(
            &genesis_of_host(&genesis, signers),
            signers,
            &[0, 1, 2],
            40,
            quartier_light::block_digest(&boundary),
        ),
        proof: state.prove(StateKey::ValidatorSets).unwrap(),
    };
    let (mut enclaves, _) = fresh_enclaves(1, &vendor);
    let e = &mut enclaves[0];
    // Epoch 1's registry, certified by its set (validators 1-3).
    let three = &keys[1..];
    let shown = registry_in(&genesis, (three, &[0, 1, 2]), 1, &state, 9);
    assert_eq!(
        e.observe_registry(&genesis, &shown),
        Err(ServiceError::Chain(ChainError::Light(
            LightError::BadCertificate
        ))),
        "not yet learnt"
    );
    // A change certified by strangers is not learnt.
    assert!(
        e.learn_validator_sets(&genesis, &[change(&validator_keys_of(8, 4))])
            .is_err()
    );
    assert_eq!(e.validator_sets_known(&genesis), 1);
    assert_eq!(e.learn_validator_sets(&genesis, &[change(&keys)]), Ok(2));
    assert_eq!(e.observe_registry(&genesis, &shown), Ok(9));
    // Shown again: nothing more to learn.
    assert_eq!(e.learn_validator_sets(&genesis, &[change(&keys)]), Ok(2));
    // The old four's certificate of an epoch-1 block counts for nothing,
    // nor does the new set's signing in epoch 0's round.
    let old = registry_in(&genesis, (&keys, &[0, 1, 2]), 1, &state, 10);
    assert!(matches!(
        e.observe_registry(&genesis, &old),
        Err(ServiceError::Chain(ChainError::Light(_)))
    ));
    let wrong_epoch = registry_in(&genesis, (three, &[0, 1, 2]), 0, &state, 11);
    assert!(matches!(
        e.observe_registry(&genesis, &wrong_epoch),
        Err(ServiceError::Chain(ChainError::Light(_)))
    ));
}
