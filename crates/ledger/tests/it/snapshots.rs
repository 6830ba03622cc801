//! State snapshots: a state stored as bytes comes back with the same root and
//! records, goes on exactly like the original, and corrupt bytes are refused.

use crate::kit::*;
use quartier_ledger::{GovernanceChange, MeterRole, SnapshotError, State, TxBody};
use quartier_types::{Energy, Price, RegionId, Side, Slot};

/// A chain with every kind of record: accounts, meters, regions, an open
/// book, a settlement and a proposal.
fn busy_chain() -> Chain {
    let mut c = Chain::new();
    let (buyer, seller) = (key("buyer"), key("seller"));
    c.enrol(&buyer, RegionId(1), MeterRole::Consumer, 0, chf(10));
    c.enrol(&seller, RegionId(1), MeterRole::Prosumer, 8_000, chf(10));
    c.queue(
        &key("validator-0"),
        TxBody::Propose {
            change: GovernanceChange::Add(id(&key("x"))),
        },
    );
    c.block_ok(0);
    for slot in [0u64, 1] {
        let order = |side, limit| TxBody::PlaceOrder {
            region: RegionId(1),
            slot: Slot(slot),
            side,
            limit: Price::new(limit),
            energy: Energy::new(500),
        };
        c.queue(&buyer, order(Side::Buy, 18_000));
        c.queue(&seller, order(Side::Sell, 9_000));
    }
    c.block_ok(1);
    // Slot 0 settles; slot 1's book stays open.
    c.block_ok(c.state.genesis().close_of(Slot(0)).0);
    assert_eq!(c.state.settlements().count(), 1);
    assert_eq!(c.state.books().count(), 1);
    c
}

#[test]
fn a_snapshot_restores_the_state_which_then_goes_on_identically() {
    let mut c = busy_chain();
    let bytes = c.state.snapshot().unwrap();
    let restored = State::from_snapshot(&bytes).unwrap();
    assert_eq!(restored.root(), c.state.root());
    assert_eq!(restored.meta(), c.state.meta());
    assert!(restored.accounts().eq(c.state.accounts()));
    assert!(restored.settlements().eq(c.state.settlements()));
    assert!(restored.books().eq(c.state.books()));
    assert_eq!(restored.chain_id(), c.state.chain_id());
    // The next block (settling slot 1) gives the same root on both.
    // A twin chain built the same way, its state replaced by the restored one.
    let mut twin = busy_chain();
    twin.state = restored;
    let close = c.state.genesis().close_of(Slot(1)).0;
    let a = c.block_ok(close).root;
    let b = twin.block_ok(close).root;
    assert_eq!(a, b);
}

#[test]
fn corrupt_or_uncommitted_snapshots_are_refused() {
    let c = busy_chain();
    let bytes = c.state.snapshot().unwrap();
    // A flipped byte inside the records: another state than the root says.
    let mut flipped = bytes.clone();
    let i = flipped.len() - 40;
    flipped[i] ^= 1;
    assert!(matches!(
        State::from_snapshot(&flipped),
        Err(SnapshotError::RootMismatch | SnapshotError::Malformed)
    ));
    assert_eq!(
        State::from_snapshot(&bytes[..bytes.len() - 1]).err(),
        Some(SnapshotError::Malformed)
    );
    // A state with changes not yet committed has no root to vouch for them.
    let mut dirty = c.state.clone();
    let tx = c.tx(
        &key("buyer"),
        TxBody::Transfer {
            to: id(&key("seller")),
            amount: chf(1),
        },
    );
    quartier_ledger::apply(&mut dirty, &tx, &c.ctx()).unwrap();
    assert_eq!(dirty.snapshot().err(), Some(SnapshotError::Uncommitted));
}
