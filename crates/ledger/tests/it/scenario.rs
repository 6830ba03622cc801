//! A day of trading: 37 households (27 prosumers) over 96 slots, every balance
//! reconciled with the settlements to the µRp.

use crate::kit::*;
use quartier_auction::clear;
use quartier_ledger::{Event, Genesis, MeterRole, Settlement, TxBody};
use quartier_types::{AccountId, Energy, Money, Order, Price, RegionId, Side, Slot};
use std::collections::BTreeMap;

const HOUSEHOLDS: usize = 37;
const PROSUMERS: usize = 27;
const SLOTS: u64 = 96;

/// A synthetic net load in Wh for household `h` in slot `s` (a quarter hour of
/// a June day): a base load with morning and evening peaks minus a PV bell.
fn net_wh(h: usize, s: u64, pv_watts: u32) -> i64 {
    let hour = s as f64 / 4.0;
    let base = 60.0 + (h * 37 % 50) as f64;
    let peaks = 120.0 * (-((hour - 7.5) / 1.0).powi(2)).exp()
        + 250.0 * (-((hour - 19.0) / 1.5).powi(2)).exp();
    let sun = (-((hour - 13.0) / 3.0).powi(2)).exp();
    let pv = f64::from(pv_watts) * 0.25 * 0.8 * sun;
    (base + peaks - pv).round() as i64
}

fn region_of(h: usize) -> RegionId {
    if h.is_multiple_of(3) { R2 } else { R1 }
}

#[test]
fn thirty_seven_households_trade_a_day_and_every_balance_reconciles() {
    let households: Vec<_> = (0..HOUSEHOLDS)
        .map(|h| key(&format!("household-{h}")))
        .collect();
    let pv: Vec<u32> = (0..HOUSEHOLDS)
        .map(|h| {
            if h < PROSUMERS {
                3_000 + (h as u32 * 431) % 12_000
            } else {
                0
            }
        })
        .collect();
    let mut c = Chain::from_genesis(Genesis {
        allocations: vec![(id(&key("utility")), chf(20))],
        sealed_market: None,
        shielded: None,
        ..genesis()
    });
    let (dso, utility) = (key("dso"), key("utility"));
    for (h, k) in households.iter().enumerate() {
        let role = if pv[h] > 0 {
            MeterRole::Prosumer
        } else {
            MeterRole::Consumer
        };
        c.queue(
            &dso,
            TxBody::RegisterMeter {
                meter: id(k),
                region: region_of(h),
                role,
                pv_watts: pv[h],
            },
        );
        c.queue(
            &utility,
            TxBody::Mint {
                to: id(k),
                amount: chf(50),
            },
        );
    }
    c.block_ok(0);
    let start: BTreeMap<AccountId, Money> = c
        .state
        .accounts()
        .map(|(a, acc)| (*a, acc.balance))
        .collect();

    let mut settled = 0;
    for s in 0..=SLOTS {
        if s < SLOTS {
            for (h, k) in households.iter().enumerate() {
                let net = net_wh(h, s, pv[h]);
                let (side, limit) = if net >= 0 {
                    (Side::Buy, 15_000 + (h as u64 * 997 + s * 13) % 12_000)
                } else {
                    (Side::Sell, 4_000 + (h as u64 * 541 + s * 7) % 9_000)
                };
                let params = c.state.region(region_of(h)).copied().unwrap();
                let limit = limit.clamp(params.feed_in_tariff().get(), params.grid_tariff().get());
                c.queue(
                    k,
                    TxBody::PlaceOrder {
                        region: region_of(h),
                        slot: Slot(s),
                        side,
                        limit: Price::new(limit),
                        energy: Energy::new(net.unsigned_abs()),
                    },
                );
            }
        }
        // Inside slot s's gate: orders for s are accepted, slot s − 1 settles.
        let out = c.block_ok((s + 1) * SLOT_MS + 1_000);
        settled += out
            .events
            .iter()
            .filter(|e| matches!(e, Event::SlotSettled { .. }))
            .count();
    }
    assert_eq!(
        settled,
        2 * SLOTS as usize,
        "every slot of both regions settled"
    );
    assert_eq!(c.state.books().count(), 0);
    assert_eq!(c.state.meta().escrow, Money::ZERO);

    // Reconcile: every balance is its start plus what the settlements say.
    let mut expected: BTreeMap<AccountId, i128> = start
        .iter()
        .map(|(a, m)| (*a, i128::from(m.get())))
        .collect();
    let (dso_id, utility_id) = (id(&dso), id(&utility));
    let mut local = 0u64;
    for st in c.state.settlements() {
        check_settlement(st);
        for (o, r) in st.orders.iter().zip(&st.clearing.orders) {
            *expected.entry(o.meter).or_default() +=
                i128::from(r.receives.get()) - i128::from(r.pays.get());
        }
        let t = &st.clearing.totals;
        *expected.entry(dso_id).or_default() += i128::from(t.dso_fees.get());
        *expected.entry(utility_id).or_default() += i128::from(t.utility_sells.get())
            - i128::from(t.utility_buys.get())
            + i128::from(st.utility_cover.get());
        local += t.local_energy.get();
    }
    for (account, balance) in c.state.accounts() {
        let want = expected.get(account).copied().unwrap_or(0);
        assert_eq!(i128::from(balance.balance.get()), want, "{account}");
    }
    let total: u128 = c
        .state
        .accounts()
        .map(|(_, a)| u128::from(a.balance.get()))
        .sum();
    assert_eq!(total, u128::from(c.state.meta().supply.get()));
    assert!(local > 0, "a sunny day must trade locally");
}

/// A stored settlement is exactly the auction re-run on its stored orders.
pub fn check_settlement(st: &Settlement) {
    let orders: Vec<Order> = st.orders.iter().map(|o| o.order).collect();
    assert_eq!(clear(&st.params, &orders).unwrap(), st.clearing);
}

#[test]
fn feed_in_the_utility_can_not_pay_is_issued_to_it_and_recorded() {
    let mut c = Chain::from_genesis(Genesis {
        allocations: vec![],
        sealed_market: None,
        shielded: None,
        ..genesis()
    });
    let seller = key("seller");
    c.queue(
        &key("dso"),
        TxBody::RegisterMeter {
            meter: id(&seller),
            region: R1,
            role: MeterRole::Prosumer,
            pv_watts: 10_000,
        },
    );
    c.block_ok(0);
    c.queue(
        &seller,
        TxBody::PlaceOrder {
            region: R1,
            slot: Slot(0),
            side: Side::Sell,
            limit: Price::new(8_000),
            energy: Energy::new(2_000),
        },
    );
    c.block_ok(SLOT_MS);
    let out = c.block_ok(SLOT_MS + GATE_MS);
    // 2 000 Wh at the feed-in tariff of 4 000 mRp/kWh = 8 000 000 µRp.
    let paid = Money::new(8_000_000);
    assert!(out.events.contains(&Event::UtilityCovered { amount: paid }));
    assert_eq!(c.state.account(&id(&seller)).balance, paid);
    assert_eq!(c.state.account(&id(&key("utility"))).balance, Money::ZERO);
    assert_eq!(c.state.meta().supply, paid);
    assert_eq!(c.state.meta().issued, paid);
    assert_eq!(c.state.settlement(R1, Slot(0)).unwrap().utility_cover, paid);
}

#[test]
fn settlements_older_than_the_history_window_leave_the_state() {
    const HISTORY: u64 = 4;
    let mut c = Chain::from_genesis(Genesis {
        history_slots: HISTORY,
        limits: Default::default(),
        ..genesis()
    });
    let (buyer, seller) = (key("buyer"), key("seller"));
    c.enrol(&buyer, R1, MeterRole::Consumer, 0, chf(50));
    c.enrol(&seller, R1, MeterRole::Prosumer, 8_000, Money::ZERO);
    c.block_ok(0);
    for s in 0..12u64 {
        for (k, side, limit) in [(&buyer, Side::Buy, 20_000), (&seller, Side::Sell, 8_000)] {
            c.queue(
                k,
                TxBody::PlaceOrder {
                    region: R1,
                    slot: Slot(s),
                    side,
                    limit: Price::new(limit),
                    energy: Energy::new(300),
                },
            );
        }
        // Inside slot s's gate: slot s − 1 settles.
        c.block_ok((s + 1) * SLOT_MS + 1_000);
        let current = s + 1;
        let kept: Vec<u64> = c.state.region_settlements(R1).map(|st| st.slot.0).collect();
        // Settled so far: up to s − 1; kept: the last HISTORY slots before `current`.
        let want: Vec<u64> = (current.saturating_sub(HISTORY)..s).collect();
        assert_eq!(kept, want, "at slot {current}");
        // Gone from the Merkle tree too: a proof of absence against the root.
        if let Some(gone) = current.checked_sub(HISTORY + 1) {
            let proof = c
                .state
                .prove(quartier_ledger::StateKey::Settlement(R1, Slot(gone)))
                .unwrap();
            assert_eq!(proof.value, None, "slot {gone}");
            proof.verify(c.state.root()).unwrap();
        }
    }
    // Money is still conserved (balances plus the open book's escrow):
    // forgetting history moves no balance.
    let total: u128 = c
        .state
        .accounts()
        .map(|(_, a)| u128::from(a.balance.get()))
        .sum::<u128>()
        + u128::from(c.state.meta().escrow.get());
    assert_eq!(total, u128::from(c.state.meta().supply.get()));
    // A node restoring from a snapshot holds the same window and root.
    let restored = quartier_ledger::State::from_snapshot(&c.state.snapshot().unwrap()).unwrap();
    assert_eq!(restored.root(), c.state.root());
    let slots = |st: &quartier_ledger::State| -> Vec<u64> {
        st.region_settlements(R1).map(|x| x.slot.0).collect()
    };
    assert_eq!(slots(&restored), vec![8, 9, 10]);
    assert_eq!(slots(&restored), slots(&c.state));
}
