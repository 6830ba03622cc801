//! Wire-format conformance: SHA-256 of the canonical encodings of fixed
//! values (a genesis, transactions of each kind a household or role sends,
//! the state after a settled slot). They fail when a format changes, on
//! purpose: a changed encoding forks the chain from nodes that did not
//! change, so it must be a decision (update the fixture, say why in the
//! commit, bump what needs bumping), never an accident.
//!
//! To update after a deliberate change: run the test, copy the `computed`
//! line of each failure into its fixture.

use crate::kit::{Chain, GATE_MS, R1, SLOT_MS, chf, genesis, id, key};
use quartier_ledger::{MeterRole, SignedTx, TxBody};
use quartier_types::hash::Digest;
use quartier_types::{Energy, Price, Side, Slot};
use sha2::{Digest as _, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn check(what: &str, computed: &str, fixture: &str) {
    assert_eq!(
        computed, fixture,
        "{what}: its canonical encoding changed (computed {computed})"
    );
}

fn hex_digest(d: Digest) -> String {
    hex::encode(d.0)
}

/// One transaction of each kind the devnet's roles and households send
/// every day, signed (Ed25519 signatures are deterministic).
fn transactions(chain: &Chain) -> Vec<(&'static str, SignedTx)> {
    let meter = key("meter");
    vec![
        (
            "register_meter",
            chain.tx(
                &key("dso"),
                TxBody::RegisterMeter {
                    meter: id(&meter),
                    region: R1,
                    role: MeterRole::Prosumer,
                    pv_watts: 8_000,
                },
            ),
        ),
        (
            "mint",
            chain.tx(
                &key("utility"),
                TxBody::Mint {
                    to: id(&meter),
                    amount: chf(200),
                },
            ),
        ),
        (
            "place_order",
            chain.tx(
                &meter,
                TxBody::PlaceOrder {
                    region: R1,
                    slot: Slot(3),
                    side: Side::Buy,
                    limit: Price::new(15_000),
                    energy: Energy::new(1_234),
                },
            ),
        ),
        (
            "transfer",
            chain.tx(
                &meter,
                TxBody::Transfer {
                    to: id(&key("neighbour")),
                    amount: chf(1),
                },
            ),
        ),
    ]
}

#[test]
fn genesis_and_chain_id_encodings_are_fixed() {
    let g = genesis();
    check(
        "chain id (hash of the genesis)",
        &hex_digest(g.chain_id().0),
        "c15274f6c00df60d8b151934f3b5f167eeb5d22c113ff081e8d7d4d2dc5c6238",
    );
    let chain = Chain::new();
    check(
        "genesis state root",
        &hex_digest(chain.state.root()),
        "598a2e64b235814eb129367aa4f15c87ba65accc9892673a178d4aaf14d97661",
    );
}

#[test]
fn transaction_encodings_are_fixed() {
    let chain = Chain::new();
    let fixtures = [
        (
            "register_meter",
            "1b22b09e56bd9f047a285868cdb65eb7261fd66f28682e6e0ee5204119437483",
        ),
        (
            "mint",
            "86c4626095254cb23dc93124548e56a493672c4e88f651f12ac6a9f2e5cfc0bb",
        ),
        (
            "place_order",
            "215c22c43addefee8f2955887f17da0710009d809f0aa73e37ef932b63762004",
        ),
        (
            "transfer",
            "497ab938d10043036e0cc3ac07d653b3af0697b3112067fcc3e1aaaddff2750d",
        ),
    ];
    let txs = transactions(&chain);
    assert_eq!(txs.len(), fixtures.len(), "a fixture for each transaction");
    for ((name, tx), (fixture_name, fixture)) in txs.into_iter().zip(fixtures) {
        assert_eq!(name, fixture_name);
        check(name, &sha256(&tx.encode()), fixture);
    }
}

/// The state after two meters trade one slot: every record a settlement
/// writes (accounts, the book, the settlement, the meta totals) is under
/// the root.
#[test]
fn the_state_encoding_after_a_settled_slot_is_fixed() {
    let mut chain = Chain::new();
    let (buyer, seller) = (key("buyer"), key("seller"));
    chain.enrol(&buyer, R1, MeterRole::Consumer, 0, chf(100));
    chain.enrol(&seller, R1, MeterRole::Prosumer, 8_000, chf(0));
    chain.block_ok(1_000);
    for (who, side, limit, energy) in [
        (&buyer, Side::Buy, 18_000, 700),
        (&seller, Side::Sell, 9_000, 500),
    ] {
        chain.queue(
            who,
            TxBody::PlaceOrder {
                region: R1,
                slot: Slot(1),
                side,
                limit: Price::new(limit),
                energy: Energy::new(energy),
            },
        );
    }
    chain.block_ok(SLOT_MS + 1_000);
    // Past slot 1's gate: the book is cleared and settled.
    chain.block_ok(2 * SLOT_MS + GATE_MS + 1_000);
    assert!(
        chain
            .state
            .settlement(R1, Slot(1))
            .is_some_and(|s| !s.clearing.trades.is_empty()),
        "slot 1 settled with a trade"
    );
    check(
        "state root after a settled slot",
        &hex_digest(chain.state.root()),
        "912b9e4b122e3d6150f125cc849664be69275ec628861ee714f888ca9b981fc9",
    );
}
