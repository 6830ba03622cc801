//! Merkle proofs of balances and settlements verify against the state root.

use crate::kit::*;
use quartier_ledger::{Account, MeterRole, Settlement, StateKey, TxBody};
use quartier_types::{Energy, Money, Price, Side, Slot};

#[test]
fn balance_and_settlement_proofs_verify_and_tampering_fails() {
    let mut c = Chain::new();
    let (buyer, seller) = (key("b"), key("s"));
    c.enrol(&buyer, R1, MeterRole::Consumer, 0, chf(10));
    c.enrol(&seller, R1, MeterRole::Prosumer, 8_000, Money::ZERO);
    c.block_ok(0);
    let order = |side, limit, energy| TxBody::PlaceOrder {
        region: R1,
        slot: Slot(0),
        side,
        limit: Price::new(limit),
        energy: Energy::new(energy),
    };
    c.queue(&buyer, order(Side::Buy, 18_000, 900));
    c.queue(&seller, order(Side::Sell, 9_000, 600));
    c.block_ok(SLOT_MS);
    let out = c.block_ok(SLOT_MS + GATE_MS);
    let root = out.root;
    assert_eq!(root, c.state.root());

    let proof = c.state.prove(StateKey::Account(id(&buyer))).unwrap();
    proof.verify(root).unwrap();
    let account: Account = proof.decode().unwrap().unwrap();
    assert_eq!(account, c.state.account(&id(&buyer)));

    let proof = c.state.prove(StateKey::Settlement(R1, Slot(0))).unwrap();
    proof.verify(root).unwrap();
    let settlement: Settlement = proof.decode().unwrap().unwrap();
    assert_eq!(settlement.clearing.totals.local_energy, Energy::new(600));

    // A changed value, a wrong key, or another root all fail.
    let mut forged = proof.clone();
    let mut bytes = forged.value.take().unwrap();
    bytes[0] ^= 1;
    forged.value = Some(bytes);
    assert!(forged.verify(root).is_err());
    let mut moved = proof.clone();
    moved.key = StateKey::Settlement(R1, Slot(1));
    assert!(moved.verify(root).is_err());
    let mut other_root = root;
    other_root.0[0] ^= 1;
    assert!(proof.verify(other_root).is_err());

    // Absence is provable too: no settlement for a slot nobody traded in.
    let absent = c.state.prove(StateKey::Settlement(R1, Slot(7))).unwrap();
    assert!(absent.value.is_none());
    absent.verify(root).unwrap();
}
