//! Privacy mode A's shielded pool on chain: shielding, transfers by ring
//! signature, unshielding, and every way to cheat refused without a change.

use crate::kit::{Chain, GATE_MS, R1, R2, SLOT_MS, chf, genesis, id, key};
use curve25519_dalek::Scalar;
use ed25519_dalek::SigningKey;
use quartier_ledger::{
    Allowance, KIND_TRANSFER, KIND_UNSHIELD, MeterRole, ShieldedInput, ShieldedOrder,
    ShieldedPolicy, ShieldedTransfer, SignedTx, State, Tx, TxBody, TxError, meter_ring, scope,
    side_byte,
};
use quartier_shielded::authorise::{self, PURPOSE_TRANSFER};
use quartier_shielded::keys::WalletKeys;
use quartier_shielded::output::{Output, Received, create};
use quartier_shielded::range;
use quartier_shielded::spend::{self, Input, RingMember, key_image};
use quartier_types::{AccountId, Energy, Money, Price, Side, Slot, Timestamp};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const RING: u16 = 4;

/// The meter whose allowance the transfers of these tests spend.
const ALLOWED: &str = "m1";

/// A shielded chain with the meter [`ALLOWED`] registered in region 1.
fn chain() -> Chain {
    let mut g = genesis();
    g.shielded = Some(ShieldedPolicy { ring_size: RING });
    let mut c = Chain::from_genesis(g);
    c.queue(
        &key("dso"),
        TxBody::RegisterMeter {
            meter: id(&key(ALLOWED)),
            region: R1,
            role: MeterRole::Consumer,
            pv_watts: 0,
        },
    );
    c.block_ok(1);
    c
}

/// The one-time key of these tests' one-time transactions: every ring
/// signature binds its public key, so a tampered copy signed by it fails
/// only for what was tampered.
const ONE_TIME: [u8; 32] = [0x5a; 32];

fn one_time_signer() -> AccountId {
    Tx::one_time_signer(&ONE_TIME)
}

/// `meter`'s allowance for the transfer with prefix `message`, in the slot
/// of the chain's time.
fn allowance(c: &Chain, meter: &SigningKey, message: [u8; 32], rng: &mut ChaCha20Rng) -> Allowance {
    let slot = c.state.genesis().slot_at(Timestamp(c.time));
    let keys = quartier_ledger::allowance_ring(&c.state, R1).unwrap();
    let real = keys.iter().position(|k| *k == id(meter).0).unwrap() as u8;
    let scope = scope(c.state.chain_id(), R1, slot, PURPOSE_TRANSFER);
    let authorisation = authorise::sign(
        &meter.to_scalar().to_bytes(),
        &keys,
        real,
        &scope,
        message,
        rng,
    )
    .unwrap();
    Allowance {
        region: R1,
        slot,
        authorisation,
    }
}

fn supply_holds(s: &State) {
    let balances: u64 = s.accounts().map(|(_, a)| a.balance.get()).sum();
    let m = s.meta();
    assert_eq!(
        m.supply.get(),
        balances + m.escrow.get() + m.custody.get() + m.shielded.get()
    );
}

/// Shields `amount` from `from` to `to`; returns the output's pool index.
fn shield(
    c: &mut Chain,
    from: &SigningKey,
    to: &WalletKeys,
    amount: Money,
    rng: &mut ChaCha20Rng,
) -> u64 {
    let (output, received) = create(&to.address(), amount.get(), rng).unwrap();
    c.queue(
        from,
        TxBody::Shield {
            amount,
            output,
            mask: *received.mask,
        },
    );
    let time = c.time + 1;
    c.block_ok(time);
    c.state.pool().len() as u64 - 1
}

/// A one-time-key transaction (nonce 0) signed by [`ONE_TIME`].
fn one_time(c: &Chain, body: TxBody, _rng: &mut ChaCha20Rng) -> SignedTx {
    Tx::one_time(c.state.chain_id(), body, &ONE_TIME)
}

/// `owner` spends pool output `index` into `outputs` (amounts to
/// addresses) and `public` to `to`, with decoys from the pool's start.
fn spend_tx(
    c: &Chain,
    owner: &WalletKeys,
    index: u64,
    outputs: &[(&WalletKeys, u64)],
    public: Option<(AccountId, Money)>,
    rng: &mut ChaCha20Rng,
) -> (TxBody, [u8; 32]) {
    spend_tx_with(c, owner, index, outputs, public, |_| {}, rng)
}

/// As [`spend_tx`], with `tamper` applied before signing (so the
/// signatures are valid and only the tampered part is wrong).
fn spend_tx_with(
    c: &Chain,
    owner: &WalletKeys,
    index: u64,
    outputs: &[(&WalletKeys, u64)],
    public: Option<(AccountId, Money)>,
    tamper: impl FnOnce(&mut ShieldedTransfer),
    rng: &mut ChaCha20Rng,
) -> (TxBody, [u8; 32]) {
    let pool = c.state.pool();
    let mine: Output = pool[index as usize].output;
    let received: Received = owner.view_key().scan(&mine).unwrap();
    let mut ring: Vec<u64> = (0..pool.len() as u64)
        .filter(|i| *i != index)
        .take(RING as usize - 1)
        .collect();
    ring.push(index);
    ring.sort_unstable();
    let real = ring.iter().position(|i| *i == index).unwrap() as u8;
    let members: Vec<RingMember> = ring
        .iter()
        .map(|i| {
            let o = pool[*i as usize].output;
            RingMember {
                key: o.key,
                commitment: o.commitment,
            }
        })
        .collect();
    let secret = owner.one_time_secret(&mine).unwrap();
    let image = key_image(&secret);
    let mut outs = Vec::new();
    let mut openings = Vec::new();
    let mut masks = Scalar::ZERO;
    for (to, amount) in outputs {
        let (o, r) = create(&to.address(), *amount, rng).unwrap();
        masks += Scalar::from_bytes_mod_order(*r.mask);
        openings.push(r.opening());
        outs.push(o);
    }
    let range_proof = range::prove(openings, rng).unwrap();
    let mut transfer = ShieldedTransfer {
        inputs: vec![ShieldedInput {
            ring,
            key_image: image,
            pseudo_out: [0; 32],
            signature: Vec::new(),
        }],
        outputs: outs,
        range_proof,
    };
    tamper(&mut transfer);
    let (kind, amount, to) = match public {
        Some((to, amount)) => (KIND_UNSHIELD, amount, Some(to)),
        None => (KIND_TRANSFER, Money::ZERO, None),
    };
    let message = transfer.prefix_hash((c.state.chain_id(), one_time_signer()), kind, amount, to);
    let input = Input {
        secret,
        opening: received.opening(),
        ring: members,
        real,
    };
    let signed = spend::sign(vec![input], &masks, message, rng).unwrap();
    transfer.inputs[0].pseudo_out = signed[0].pseudo_out;
    transfer.inputs[0].signature = signed[0].signature.clone();
    let allowance = allowance(c, &key(ALLOWED), message, rng);
    let body = match public {
        Some((to, amount)) => TxBody::Unshield {
            transfer,
            to,
            amount,
            allowance,
        },
        None => TxBody::ShieldedTransfer {
            transfer,
            allowance,
        },
    };
    (body, image)
}

fn rejects(c: &Chain, tx: &SignedTx, expected: TxError) {
    let mut state = c.state.clone();
    let before = state.clone();
    let got = quartier_ledger::apply(&mut state, tx, &c.ctx());
    assert_eq!(got.err(), Some(expected));
    assert!(state == before, "a rejected transaction changed the state");
    assert_eq!(state.root(), before.root());
}

#[test]
fn shield_transfer_and_unshield_and_every_cheat_is_refused() {
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    let mut c = chain();
    let utility = key("utility");
    let (alice, bob, decoy) = (
        WalletKeys::from_seed(&[1; 32]),
        WalletKeys::from_seed(&[2; 32]),
        WalletKeys::from_seed(&[3; 32]),
    );
    for _ in 0..5 {
        shield(&mut c, &utility, &decoy, chf(1), &mut rng);
    }
    let mine = shield(&mut c, &utility, &alice, chf(100), &mut rng);
    assert_eq!(c.state.meta().shielded, chf(105));
    supply_holds(&c.state);

    // Alice pays Bob 60 and keeps 40 as change.
    let (body, image) = spend_tx(
        &c,
        &alice,
        mine,
        &[(&bob, chf(60).get()), (&alice, chf(40).get())],
        None,
        &mut rng,
    );
    let tx = one_time(&c, body.clone(), &mut rng);
    // The intact transaction verifies first (on a copy), so its ring
    // signature and range proof are in the validator's memo of verified
    // proofs, which every copy of the state shares: each tampered copy
    // below must still be refused.
    let mut warm = c.state.clone();
    quartier_ledger::apply(&mut warm, &tx, &c.ctx()).unwrap();
    // A tampered copy of each part is refused, changing nothing.
    let TxBody::ShieldedTransfer {
        transfer,
        allowance,
    } = &body
    else {
        unreachable!()
    };
    let transfer_body = |transfer: ShieldedTransfer| TxBody::ShieldedTransfer {
        transfer,
        allowance: allowance.clone(),
    };
    let mut t = transfer.clone();
    t.inputs[0].signature[4] ^= 1;
    rejects(
        &c,
        &one_time(&c, transfer_body(t), &mut rng),
        TxError::InvalidRingSignature,
    );
    let mut t = transfer.clone();
    t.range_proof[50] ^= 1;
    rejects(
        &c,
        &one_time(&c, transfer_body(t), &mut rng),
        TxError::InvalidRingSignature,
    );
    let mut t = transfer.clone();
    t.outputs[0].commitment = t.outputs[1].commitment;
    rejects(
        &c,
        &one_time(&c, transfer_body(t), &mut rng),
        TxError::InvalidRingSignature,
    );
    let mut t = transfer.clone();
    t.inputs[0].ring.pop();
    rejects(
        &c,
        &one_time(&c, transfer_body(t), &mut rng),
        TxError::InvalidShieldedTransfer,
    );
    let mut t = transfer.clone();
    t.inputs[0].ring[3] = 99;
    rejects(
        &c,
        &one_time(&c, transfer_body(t), &mut rng),
        TxError::InvalidShieldedTransfer,
    );
    let mut nonce = tx.tx.clone();
    nonce.nonce = 1;
    // (re-signing with the same one-time key is what a replayer can not do; a
    // nonce other than 0 is refused outright)
    let k = SigningKey::from_bytes(&[77; 32]);
    nonce.signer = AccountId(k.verifying_key().to_bytes());
    rejects(&c, &nonce.sign(&k), TxError::InvalidShieldedTransfer);
    // Signed over a range proof of other outputs, or an output swapped
    // for one the proof does not cover: the range proof fails.
    let (other, _) = create(&bob.address(), 1, &mut rng).unwrap();
    let (bad, _) = spend_tx_with(
        &c,
        &alice,
        mine,
        &[(&bob, chf(60).get()), (&alice, chf(40).get())],
        None,
        |t| t.outputs[0] = other,
        &mut rng,
    );
    rejects(&c, &one_time(&c, bad, &mut rng), TxError::InvalidRangeProof);
    let (bad, _) = spend_tx_with(
        &c,
        &alice,
        mine,
        &[(&bob, chf(60).get()), (&alice, chf(40).get())],
        None,
        |t| t.range_proof[60] ^= 1,
        &mut rng,
    );
    rejects(&c, &one_time(&c, bad, &mut rng), TxError::InvalidRangeProof);
    // Spending more than the input (61 + 40) does not balance.
    let (greedy, _) = spend_tx(
        &c,
        &alice,
        mine,
        &[(&bob, chf(61).get()), (&alice, chf(40).get())],
        None,
        &mut rng,
    );
    rejects(&c, &one_time(&c, greedy, &mut rng), TxError::Unbalanced);

    c.queue_signed(tx.clone());
    let time = c.time + 1;
    c.block_ok(time);
    assert!(c.state.key_image_spent(&image));
    // Bob and Alice find their outputs, nobody else's.
    let found = |w: &WalletKeys| -> Vec<u64> {
        c.state
            .pool()
            .iter()
            .filter_map(|o| w.view_key().scan(&o.output))
            .map(|r| r.amount)
            .collect()
    };
    assert_eq!(found(&bob), vec![chf(60).get()]);
    assert_eq!(found(&alice), vec![chf(100).get(), chf(40).get()]);
    supply_holds(&c.state);

    // A replay dies on its used allowance; in the next slot, with a fresh
    // allowance, a new spend of the same output is a double spend.
    rejects(&c, &tx, TxError::AllowanceUsed);
    c.block_ok(SLOT_MS + 1);
    let (again, _) = spend_tx(
        &c,
        &alice,
        mine,
        &[(&alice, chf(100).get())],
        None,
        &mut rng,
    );
    assert!(quartier_ledger::key_image_used(&c.state, &again));
    assert!(quartier_ledger::key_image_used(&c.state, &tx.tx.body));
    rejects(&c, &one_time(&c, again, &mut rng), TxError::KeyImageSpent);

    // Bob unshields 50 to his account and keeps 10 shielded.
    let bob_account = id(&key("bob"));
    let bobs = (c.state.pool().len() - 2) as u64;
    let (body, _) = spend_tx(
        &c,
        &bob,
        bobs,
        &[(&bob, chf(10).get())],
        Some((bob_account, chf(50))),
        &mut rng,
    );
    // The amount and recipient are bound by the signatures.
    if let TxBody::Unshield {
        transfer,
        allowance,
        ..
    } = &body
    {
        let moved = TxBody::Unshield {
            transfer: transfer.clone(),
            to: id(&key("mallory")),
            amount: chf(50),
            allowance: allowance.clone(),
        };
        rejects(
            &c,
            &one_time(&c, moved, &mut rng),
            TxError::InvalidRingSignature,
        );
    }
    c.queue_signed(one_time(&c, body, &mut rng));
    let time = c.time + 1;
    c.block_ok(time);
    assert_eq!(c.state.account(&bob_account).balance, chf(50));
    assert_eq!(c.state.meta().shielded, chf(55));
    supply_holds(&c.state);

    // Shielding with a commitment that does not open to the amount, and on a
    // chain without a pool.
    let (output, received) = create(&alice.address(), chf(5).get(), &mut rng).unwrap();
    let tx = c.tx(
        &utility,
        TxBody::Shield {
            amount: chf(6),
            output,
            mask: *received.mask,
        },
    );
    rejects(&c, &tx, TxError::InvalidShieldedOutput);
    let plain = Chain::new();
    let tx = plain.tx(
        &utility,
        TxBody::Shield {
            amount: chf(5),
            output,
            mask: *received.mask,
        },
    );
    rejects(&plain, &tx, TxError::NoShieldedPool);
}

/// A shielded order by `meter`, funded (for a buy) from pool output `index`
/// of `wallet` (its funds short of the escrow by `short`: 0 for an honest
/// order), paying `payee`.
#[allow(clippy::too_many_arguments)]
fn order_tx(
    c: &Chain,
    meter: &SigningKey,
    slot: u64,
    side: Side,
    limit: u64,
    energy: u64,
    funds: Option<(&WalletKeys, u64, u64)>,
    payee: &WalletKeys,
    rng: &mut ChaCha20Rng,
) -> TxBody {
    let region = R1;
    let params = c.state.region(region).copied().unwrap();
    let escrow = match side {
        Side::Buy => Energy::new(energy).value_at(params.grid_tariff()).unwrap(),
        Side::Sell => Money::ZERO,
    };
    // The funds: the wallet's output into escrow + change back to it.
    let mut secret_input = None;
    let transfer = funds.map(|(wallet, index, short)| {
        let pool = c.state.pool();
        let mine = pool[index as usize].output;
        let received = wallet.view_key().scan(&mine).unwrap();
        let mut ring: Vec<u64> = (0..pool.len() as u64)
            .filter(|i| *i != index)
            .take(RING as usize - 1)
            .collect();
        ring.push(index);
        ring.sort_unstable();
        let real = ring.iter().position(|i| *i == index).unwrap() as u8;
        let members = ring
            .iter()
            .map(|i| RingMember {
                key: pool[*i as usize].output.key,
                commitment: pool[*i as usize].output.commitment,
            })
            .collect();
        let secret = wallet.one_time_secret(&mine).unwrap();
        let image = key_image(&secret);
        let (change, change_secret) = create(
            &wallet.address(),
            received.amount - escrow.get() + short,
            rng,
        )
        .unwrap();
        let range_proof = range::prove(vec![change_secret.opening()], rng).unwrap();
        secret_input = Some((
            Input {
                secret,
                opening: received.opening(),
                ring: members,
                real,
            },
            Scalar::from_bytes_mod_order(*change_secret.mask),
        ));
        ShieldedTransfer {
            inputs: vec![ShieldedInput {
                ring,
                key_image: image,
                pseudo_out: [0; 32],
                signature: Vec::new(),
            }],
            outputs: vec![change],
            range_proof,
        }
    });
    let mut order = ShieldedOrder {
        region,
        slot: Slot(slot),
        side,
        limit: Price::new(limit),
        energy: Energy::new(energy),
        funds: transfer,
        payee: payee.address(),
        authorisation: authorise::Authorisation {
            key_image: [0; 32],
            pseudo_out: [0; 32],
            signature: Vec::new(),
        },
    };
    let message = order.prefix_hash((c.state.chain_id(), one_time_signer()), escrow);
    if let (Some((input, masks)), Some(f)) = (secret_input, order.funds.as_mut()) {
        let signed = spend::sign(vec![input], &masks, message, rng).unwrap();
        f.inputs[0].pseudo_out = signed[0].pseudo_out;
        f.inputs[0].signature = signed[0].signature.clone();
    }
    let ring: Vec<(AccountId, _)> = meter_ring(&c.state, region, side, Energy::new(energy));
    let keys: Vec<[u8; 32]> = ring.iter().map(|(a, _)| a.0).collect();
    let me = AccountId(meter.verifying_key().to_bytes());
    let real = ring.iter().position(|(a, _)| *a == me).unwrap_or(0) as u8;
    // A meter outside the ring can not sign at all; sign as the ring's
    // first member's position then, so verification is what refuses it.
    order.authorisation = authorise::sign(
        &meter.to_scalar().to_bytes(),
        &keys,
        real,
        &scope(c.state.chain_id(), region, Slot(slot), side_byte(side)),
        message,
        rng,
    )
    .unwrap_or(authorise::Authorisation {
        key_image: [1; 32],
        pseudo_out: [1; 32],
        signature: vec![0; 32 * (keys.len().max(1) + 2)],
    });
    TxBody::PlaceShieldedOrder { order }
}

#[test]
fn shielded_orders_trade_without_naming_their_meters_and_settle_into_the_pool() {
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let mut c = chain();
    let (dso, utility) = (key("dso"), key("utility"));
    for (name, role, pv) in [
        ("p1", MeterRole::Prosumer, 5_000),
        ("p2", MeterRole::Prosumer, 3_000),
        ("c1", MeterRole::Consumer, 0),
        ("c2", MeterRole::Consumer, 0),
    ] {
        c.queue(
            &dso,
            TxBody::RegisterMeter {
                meter: id(&key(name)),
                region: R1,
                role,
                pv_watts: pv,
            },
        );
    }
    c.queue(
        &dso,
        TxBody::RegisterMeter {
            meter: id(&key("q1")),
            region: R2,
            role: MeterRole::Consumer,
            pv_watts: 0,
        },
    );
    c.block_ok(SLOT_MS * 10 + 1);
    let (buyer, decoy) = (
        WalletKeys::from_seed(&[11; 32]),
        WalletKeys::from_seed(&[13; 32]),
    );
    for _ in 0..4 {
        shield(&mut c, &utility, &decoy, chf(1), &mut rng);
    }
    let funds = shield(&mut c, &utility, &buyer, chf(10), &mut rng);
    let slot = 10;
    let (refund_to, proceeds_to) = (
        WalletKeys::from_seed(&[21; 32]),
        WalletKeys::from_seed(&[22; 32]),
    );

    let buy = order_tx(
        &c,
        &key("c1"),
        slot,
        Side::Buy,
        15_000,
        1_000,
        Some((&buyer, funds, 0)),
        &refund_to,
        &mut rng,
    );
    let sell = order_tx(
        &c,
        &key("p1"),
        slot,
        Side::Sell,
        10_000,
        600,
        None,
        &proceeds_to,
        &mut rng,
    );
    // Both verify first (on a copy), so their authorisations are in the
    // memo of verified proofs every copy of the state shares; the altered
    // copies below must still be refused.
    let mut warm = c.state.clone();
    for body in [&buy, &sell] {
        quartier_ledger::apply(&mut warm, &one_time(&c, body.clone(), &mut rng), &c.ctx()).unwrap();
    }
    // Refused, changing nothing: a consumer selling (not in the prosumers'
    // ring), a sell beyond the largest PV, an order altered after signing,
    // a buy without funds, and an authorisation for another slot.
    let t = order_tx(
        &c,
        &key("c2"),
        slot,
        Side::Sell,
        10_000,
        100,
        None,
        &proceeds_to,
        &mut rng,
    );
    rejects(
        &c,
        &one_time(&c, t, &mut rng),
        TxError::InvalidRingSignature,
    );
    let t = order_tx(
        &c,
        &key("p2"),
        slot,
        Side::Sell,
        10_000,
        1_300,
        None,
        &proceeds_to,
        &mut rng,
    );
    rejects(
        &c,
        &one_time(&c, t, &mut rng),
        TxError::ExceedsCapacity {
            energy: Energy::new(1_300),
            max: Energy::new(1_250),
        },
    );
    let TxBody::PlaceShieldedOrder { order } = &sell else {
        unreachable!()
    };
    let mut altered = order.clone();
    altered.limit = Price::new(9_000);
    rejects(
        &c,
        &one_time(&c, TxBody::PlaceShieldedOrder { order: altered }, &mut rng),
        TxError::InvalidRingSignature,
    );
    for byte in [0, 40, 70] {
        let mut forged = order.clone();
        forged.authorisation.signature[byte] ^= 1;
        rejects(
            &c,
            &one_time(&c, TxBody::PlaceShieldedOrder { order: forged }, &mut rng),
            TxError::InvalidRingSignature,
        );
    }
    let t = order_tx(
        &c,
        &key("c2"),
        slot,
        Side::Buy,
        15_000,
        500,
        None,
        &proceeds_to,
        &mut rng,
    );
    rejects(
        &c,
        &one_time(&c, t, &mut rng),
        TxError::InvalidShieldedTransfer,
    );
    let t = order_tx(
        &c,
        &key("p2"),
        slot + 1,
        Side::Sell,
        10_000,
        100,
        None,
        &proceeds_to,
        &mut rng,
    );
    let TxBody::PlaceShieldedOrder { order } = t else {
        unreachable!()
    };
    let moved = ShieldedOrder {
        slot: Slot(slot),
        ..order
    };
    rejects(
        &c,
        &one_time(&c, TxBody::PlaceShieldedOrder { order: moved }, &mut rng),
        TxError::InvalidRingSignature,
    );

    // A stranger's key and another region's meter are in no ring of this
    // region: their (zero-energy, unfunded) buys do not verify.
    for stranger in ["stranger", "q1"] {
        let t = order_tx(
            &c,
            &key(stranger),
            slot,
            Side::Buy,
            15_000,
            0,
            None,
            &refund_to,
            &mut rng,
        );
        rejects(
            &c,
            &one_time(&c, t, &mut rng),
            TxError::InvalidRingSignature,
        );
    }
    // Funds that escrow 1 µRp less than the order's energy needs do not
    // balance, though every signature is valid.
    let short = order_tx(
        &c,
        &key("c1"),
        slot,
        Side::Buy,
        15_000,
        1_000,
        Some((&buyer, funds, 1)),
        &refund_to,
        &mut rng,
    );
    rejects(&c, &one_time(&c, short, &mut rng), TxError::Unbalanced);
    // A buy whose change commitment, or energy (so its escrow), is changed
    // after signing.
    let TxBody::PlaceShieldedOrder { order } = &buy else {
        unreachable!()
    };
    let mut recommitted = order.clone();
    if let Some(f) = recommitted.funds.as_mut() {
        f.outputs[0].commitment = c.state.pool()[0].output.commitment;
    }
    let mut more = order.clone();
    more.energy = Energy::new(1_001);
    for altered in [recommitted, more] {
        rejects(
            &c,
            &one_time(&c, TxBody::PlaceShieldedOrder { order: altered }, &mut rng),
            TxError::InvalidRingSignature,
        );
    }

    assert!(!quartier_ledger::key_image_used(&c.state, &buy));
    assert!(!quartier_ledger::key_image_used(&c.state, &sell));
    c.queue_signed(one_time(&c, buy, &mut rng));
    c.queue_signed(one_time(&c, sell, &mut rng));
    let time = c.time + 1;
    c.block_ok(time);
    supply_holds(&c.state);
    // A second sell by p1 in this slot: the same key image, refused.
    let again = order_tx(
        &c,
        &key("p1"),
        slot,
        Side::Sell,
        9_000,
        100,
        None,
        &proceeds_to,
        &mut rng,
    );
    // A node building on blocks not yet final tells this from a replay of
    // an order those blocks hold by asking its final state.
    assert!(quartier_ledger::key_image_used(&c.state, &again));
    rejects(&c, &one_time(&c, again, &mut rng), TxError::DuplicateOrder);
    // No order on chain names a meter.
    let book = c.state.book(R1, Slot(slot)).unwrap();
    assert_eq!(book.orders.len(), 2);
    let registered: Vec<AccountId> = c.state.meters().map(|(a, _)| *a).collect();
    assert!(
        book.orders
            .iter()
            .all(|o| !registered.contains(&o.meter) && o.shielded.is_some())
    );

    // The settlement's output keys follow from public data: an attacker
    // computes them (here by settling a copy) and shields an output with
    // one of them first. The settlement must then pick other keys, so the
    // pool keeps one output per key and its snapshot restores.
    let gate = quartier_ledger::BlockContext {
        height: quartier_types::Height(c.height),
        time: Timestamp(SLOT_MS * 11 + GATE_MS),
    };
    let mut ahead = c.state.clone();
    let before = ahead.pool().len();
    quartier_ledger::execute_block(&mut ahead, &gate, Vec::new()).unwrap();
    let predicted = ahead.pool()[before].output.key;
    let (mut squat, opening) = create(&decoy.address(), 1, &mut rng).unwrap();
    squat.key = predicted;
    c.queue(
        &utility,
        TxBody::Shield {
            amount: Money::new(1),
            output: squat,
            mask: *opening.mask,
        },
    );
    let time = c.time + 1;
    c.block_ok(time);
    assert!(c.state.pool_has_key(&predicted));

    // Settlement pays the seller's proceeds and the buyer's refund into the
    // pool, to the addresses their orders named.
    c.block_ok(SLOT_MS * 11 + GATE_MS);
    let keys: std::collections::BTreeSet<[u8; 32]> =
        c.state.pool().iter().map(|o| o.output.key).collect();
    assert_eq!(
        keys.len(),
        c.state.pool().len(),
        "one output per one-time key"
    );
    let restored = State::from_snapshot(&c.state.snapshot().unwrap()).unwrap();
    assert_eq!(restored.root(), c.state.root());
    let s = c.state.settlement(R1, Slot(slot)).unwrap();
    let (b, se) = (s.clearing.orders[0], s.clearing.orders[1]);
    assert_eq!(s.clearing.totals.local_energy, Energy::new(600));
    let found = |w: &WalletKeys| -> Vec<u64> {
        c.state
            .pool()
            .iter()
            .filter_map(|o| w.view_key().scan(&o.output))
            .map(|r| r.amount)
            .collect()
    };
    assert_eq!(found(&proceeds_to), vec![se.receives.get()]);
    let escrow = Energy::new(1_000)
        .value_at(c.state.region(R1).unwrap().grid_tariff())
        .unwrap();
    assert_eq!(found(&refund_to), vec![escrow.get() - b.pays.get()]);
    assert_eq!(
        found(&buyer),
        vec![chf(10).get(), chf(10).get() - escrow.get()],
        "the change"
    );
    // What an observer knows of each amount: the shieldings' and the
    // settlement's payments are public, the change is not.
    let public = |w: &WalletKeys| -> Vec<Option<u64>> {
        c.state
            .pool()
            .iter()
            .filter(|o| w.view_key().scan(&o.output).is_some())
            .map(|o| o.public_amount.map(Money::get))
            .collect()
    };
    assert_eq!(public(&proceeds_to), vec![Some(se.receives.get())]);
    assert_eq!(public(&buyer), vec![Some(chf(10).get()), None]);
    supply_holds(&c.state);
}

/// Issue 17, points 3 and 5: outputs that are undecodable, torsioned, the
/// identity or copies of a pool key are refused; a transfer re-wrapped under
/// another one-time key is refused; a meter moves shielded funds once a
/// slot, and a stranger not at all. Each refusal changes nothing.
#[test]
fn bad_outputs_rewrapped_spends_and_floods_past_the_allowance_are_refused() {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let mut rng = ChaCha20Rng::from_seed([12; 32]);
    let mut c = chain();
    let utility = key("utility");
    let (alice, bob, decoy) = (
        WalletKeys::from_seed(&[1; 32]),
        WalletKeys::from_seed(&[2; 32]),
        WalletKeys::from_seed(&[3; 32]),
    );
    for _ in 0..4 {
        shield(&mut c, &utility, &decoy, chf(1), &mut rng);
    }
    let mine = shield(&mut c, &utility, &alice, chf(100), &mut rng);
    let torsioned = |bytes: [u8; 32]| {
        let p = CompressedEdwardsY(bytes).decompress().unwrap();
        (p + EIGHT_TORSION[1]).compress().0
    };
    let undecodable = {
        // The first y whose x² is not a square: no point has it.
        let mut y = [0u8; 32];
        while CompressedEdwardsY(y).decompress().is_some() {
            y[0] += 1;
        }
        y
    };
    let identity = CompressedEdwardsY::default().0;
    let existing = c.state.pool()[0].output.key;

    // Shielding a bad output.
    let bad_keys = [
        (
            torsioned(c.state.pool()[1].output.key),
            TxError::InvalidShieldedOutput,
        ),
        (undecodable, TxError::InvalidShieldedOutput),
        (identity, TxError::InvalidShieldedOutput),
        (existing, TxError::DuplicateOutputKey),
    ];
    for (bad, expected) in bad_keys {
        let (mut output, received) = create(&alice.address(), chf(5).get(), &mut rng).unwrap();
        output.key = bad;
        let tx = c.tx(
            &utility,
            TxBody::Shield {
                amount: chf(5),
                output,
                mask: *received.mask,
            },
        );
        rejects(&c, &tx, expected);
    }
    let (mut output, received) = create(&alice.address(), chf(5).get(), &mut rng).unwrap();
    output.tx_key = torsioned(output.tx_key);
    let tx = c.tx(
        &utility,
        TxBody::Shield {
            amount: chf(5),
            output,
            mask: *received.mask,
        },
    );
    rejects(&c, &tx, TxError::InvalidShieldedOutput);

    // Transfers whose outputs (signed as they are) reuse a key or carry torsion.
    let pay = [(&bob, chf(60).get()), (&alice, chf(40).get())];
    for (tamper, expected) in [
        (
            (|t: &mut ShieldedTransfer| t.outputs[1].key = t.outputs[0].key)
                as fn(&mut ShieldedTransfer),
            TxError::DuplicateOutputKey,
        ),
        (
            |t: &mut ShieldedTransfer| {
                let p = CompressedEdwardsY(t.outputs[0].key).decompress().unwrap();
                t.outputs[0].key = (p + EIGHT_TORSION[3]).compress().0;
            },
            TxError::InvalidShieldedOutput,
        ),
    ] {
        let (bad, _) = spend_tx_with(&c, &alice, mine, &pay, None, tamper, &mut rng);
        rejects(&c, &one_time(&c, bad, &mut rng), expected);
    }
    let (copy, _) = spend_tx_with(
        &c,
        &alice,
        mine,
        &pay,
        None,
        |t| t.outputs[0].key = existing,
        &mut rng,
    );
    rejects(
        &c,
        &one_time(&c, copy, &mut rng),
        TxError::DuplicateOutputKey,
    );

    // Re-wrapped: the same transfer under another one-time key.
    let (body, _) = spend_tx(&c, &alice, mine, &pay, None, &mut rng);
    let rewrapped = Tx::one_time(c.state.chain_id(), body.clone(), &[0x33; 32]);
    rejects(&c, &rewrapped, TxError::InvalidRingSignature);

    // An allowance of an old slot, or of a stranger's key, is refused.
    let TxBody::ShieldedTransfer {
        transfer,
        allowance: good,
    } = &body
    else {
        unreachable!()
    };
    let message = transfer.prefix_hash(
        (c.state.chain_id(), one_time_signer()),
        KIND_TRANSFER,
        Money::ZERO,
        None,
    );
    // Two slots later the allowance has expired.
    let mut state = c.state.clone();
    let later = quartier_ledger::BlockContext {
        height: c.ctx().height,
        time: Timestamp(SLOT_MS * 2),
    };
    let tx = one_time(&c, body.clone(), &mut rng);
    assert_eq!(
        quartier_ledger::apply(&mut state, &tx, &later).err(),
        Some(TxError::AllowanceExpired { slot: good.slot })
    );
    assert!(state == c.state);
    let stranger = key("stranger");
    let keys: Vec<[u8; 32]> = vec![id(&key(ALLOWED)).0, id(&stranger).0];
    let slot = good.slot;
    let forged = authorise::sign(
        &stranger.to_scalar().to_bytes(),
        &keys,
        1,
        &scope(c.state.chain_id(), R1, slot, PURPOSE_TRANSFER),
        message,
        &mut rng,
    )
    .unwrap();
    let by_stranger = TxBody::ShieldedTransfer {
        transfer: transfer.clone(),
        allowance: Allowance {
            region: R1,
            slot,
            authorisation: forged,
        },
    };
    rejects(
        &c,
        &one_time(&c, by_stranger, &mut rng),
        TxError::InvalidRingSignature,
    );

    // The flood: the meter's first transfer of the slot runs, its second
    // (another output, a valid spend) is past the bound.
    c.queue_signed(one_time(&c, body, &mut rng));
    let time = c.time + 1;
    c.block_ok(time);
    let change = c.state.pool().len() as u64 - 1;
    let (second, _) = spend_tx(
        &c,
        &alice,
        change,
        &[(&alice, chf(40).get())],
        None,
        &mut rng,
    );
    rejects(&c, &one_time(&c, second, &mut rng), TxError::AllowanceUsed);
    supply_holds(&c.state);
}

/// Issue 17, point 4: a sell is signed over the prosumers that can produce
/// it, so a small prosumer's sell beyond its own PV (but within a larger
/// neighbour's) is refused; and a meter can not add a public order beside
/// its shielded one on a shielded chain.
#[test]
fn a_sell_beyond_the_sellers_own_pv_and_public_orders_are_refused() {
    let mut rng = ChaCha20Rng::from_seed([13; 32]);
    let mut c = chain();
    let dso = key("dso");
    for (name, pv) in [("big", 5_000), ("small", 1_000)] {
        c.queue(
            &dso,
            TxBody::RegisterMeter {
                meter: id(&key(name)),
                region: R1,
                role: MeterRole::Prosumer,
                pv_watts: pv,
            },
        );
    }
    c.block_ok(SLOT_MS * 10 + 1);
    let payee = WalletKeys::from_seed(&[31; 32]);
    let slot = 10;
    // 1 kW produces 250 Wh a slot: a sell of 250 Wh is signed over both, a
    // sell of 1 000 Wh only over the 5 kW prosumer.
    let sells = |energy| meter_ring(&c.state, R1, Side::Sell, Energy::new(energy)).len();
    assert_eq!(
        (sells(250), sells(251), sells(1_250), sells(1_251)),
        (2, 1, 1, 0)
    );
    let small = |energy, rng: &mut ChaCha20Rng| {
        order_tx(
            &c,
            &key("small"),
            slot,
            Side::Sell,
            10_000,
            energy,
            None,
            &payee,
            rng,
        )
    };
    let ok = small(250, &mut rng);
    let mut state = c.state.clone();
    assert!(quartier_ledger::apply(&mut state, &one_time(&c, ok, &mut rng), &c.ctx()).is_ok());
    // The small prosumer signs a valid CLSAG over every prosumer of the
    // region for 1 000 Wh: the ledger verifies it over the prosumers able
    // to produce 1 000 Wh, which it is not one of, and refuses it.
    let TxBody::PlaceShieldedOrder { mut order } = small(1_000, &mut rng) else {
        unreachable!()
    };
    let all: Vec<[u8; 32]> = meter_ring(&c.state, R1, Side::Sell, Energy::ZERO)
        .iter()
        .map(|(a, _)| a.0)
        .collect();
    let me = all.iter().position(|k| *k == id(&key("small")).0).unwrap() as u8;
    let message = order.prefix_hash((c.state.chain_id(), one_time_signer()), Money::ZERO);
    order.authorisation = authorise::sign(
        &key("small").to_scalar().to_bytes(),
        &all,
        me,
        &scope(c.state.chain_id(), R1, Slot(slot), side_byte(Side::Sell)),
        message,
        &mut rng,
    )
    .unwrap();
    rejects(
        &c,
        &one_time(&c, TxBody::PlaceShieldedOrder { order }, &mut rng),
        TxError::InvalidRingSignature,
    );
    let public = c.tx(
        &key("small"),
        TxBody::PlaceOrder {
            region: R1,
            slot: Slot(slot),
            side: Side::Sell,
            limit: Price::new(10_000),
            energy: Energy::new(250),
        },
    );
    rejects(&c, &public, TxError::ShieldedOrdersOnly);
}

/// What a mempool admits of one-time orders by time: its clock is the last
/// finalized block's, which lags the next block's. A slot closed then is
/// closed for good (refused: a registered meter could otherwise send one
/// valid order per side for every past slot, each verified again by every
/// proposer); the slot just past the horizon may open by the next block
/// (admitted); the one after is refused.
#[test]
fn a_mempool_refuses_orders_for_closed_and_far_slots_and_admits_the_next() {
    let mut rng = ChaCha20Rng::from_seed([17; 32]);
    let mut c = chain();
    c.block_ok(SLOT_MS * 10 + 1);
    let payee = WalletKeys::from_seed(&[33; 32]);
    let now = c.state.genesis().slot_at(Timestamp(c.time)).0;
    assert_eq!(now, 10);
    let check = |slot: u64, rng: &mut ChaCha20Rng| {
        let body = order_tx(
            &c,
            &key(ALLOWED),
            slot,
            Side::Buy,
            10_000,
            0,
            None,
            &payee,
            rng,
        );
        let tx = one_time(&c, body, rng);
        let verified = quartier_ledger::verify_batch(vec![tx])
            .pop()
            .unwrap()
            .unwrap();
        quartier_ledger::check_one_time(&c.state, &verified, &c.ctx())
    };
    assert_eq!(
        check(8, &mut rng),
        Err(TxError::SlotClosed { slot: Slot(8) })
    );
    assert_eq!(check(10, &mut rng), Ok(()));
    // lead_slots is 1: slot 11 is open now, slot 12 by the next slot.
    assert_eq!(check(11, &mut rng), Ok(()));
    assert_eq!(check(12, &mut rng), Ok(()));
    assert_eq!(
        check(13, &mut rng),
        Err(TxError::SlotNotOpen { slot: Slot(13) })
    );
}
