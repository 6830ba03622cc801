//! Properties of the discriminatory auction over random books (DESIGN §3).

use proptest::prelude::*;
use quartier_auction::{Clearing, Trade, clear};
use quartier_types::{Energy, Order, Price, RegionParams, Side};

const CASES: u32 = 1_000;

fn params() -> impl Strategy<Value = RegionParams> {
    (
        0u64..12_000,
        0u64..30_000,
        prop_oneof![Just(0u64), 0u64..4_000],
    )
        .prop_map(|(feed_in, span, fee)| {
            RegionParams::new(
                Price::new(feed_in + span),
                Price::new(feed_in),
                Price::new(fee),
            )
            .unwrap()
        })
}

/// A limit inside the region's range, often on a coarse grid so ties are common.
fn limit(p: RegionParams) -> impl Strategy<Value = Price> {
    let (lo, hi) = (p.feed_in_tariff().get(), p.grid_tariff().get());
    prop_oneof![
        (0u64..=4).prop_map(move |k| Price::new(lo + (hi - lo) * k / 4)),
        (lo..=hi).prop_map(Price::new),
    ]
}

fn order(p: RegionParams) -> impl Strategy<Value = Order> {
    (
        prop_oneof![Just(Side::Buy), Just(Side::Sell)],
        limit(p),
        prop_oneof![1 => Just(0u64), 4 => 1u64..5_000],
    )
        .prop_map(|(side, limit, energy)| Order {
            side,
            limit,
            energy: Energy::new(energy),
        })
}

fn book() -> impl Strategy<Value = (RegionParams, Vec<Order>)> {
    params().prop_flat_map(|p| (Just(p), prop::collection::vec(order(p), 0..48)))
}

fn effective(p: &RegionParams, o: &Order) -> u64 {
    match o.side {
        Side::Buy => o.limit.get(),
        Side::Sell => o.limit.get() + p.local_fee().get(),
    }
}

/// An O(n²) restatement of DESIGN §3 written independently of the crate: pick
/// the best bid and best effective ask by scanning, trade, repeat.
fn reference_trades(p: &RegionParams, orders: &[Order]) -> Vec<Trade> {
    let mut rest: Vec<u64> = orders.iter().map(|o| o.energy.get()).collect();
    let best = |side: Side, rest: &[u64]| {
        (0..orders.len())
            .filter(|&i| orders[i].side == side && rest[i] > 0)
            .min_by_key(|&i| {
                let e = effective(p, &orders[i]);
                let key = if side == Side::Buy { u64::MAX - e } else { e };
                (key, i)
            })
    };
    let mut trades = Vec::new();
    while let (Some(b), Some(s)) = (best(Side::Buy, &rest), best(Side::Sell, &rest)) {
        let (bid, ask) = (effective(p, &orders[b]), effective(p, &orders[s]));
        if bid < ask {
            break;
        }
        let q = rest[b].min(rest[s]);
        let price = (bid + ask) / 2;
        trades.push(Trade {
            buy: b as u32,
            sell: s as u32,
            energy: Energy::new(q),
            price: Price::new(price),
            seller_price: Price::new(price - p.local_fee().get()),
            fee: p.local_fee(),
        });
        rest[b] -= q;
        rest[s] -= q;
    }
    trades
}

fn check_money(p: &RegionParams, orders: &[Order], c: &Clearing) -> Result<(), TestCaseError> {
    let t = &c.totals;
    prop_assert!(t.is_balanced(), "money not conserved: {t:?}");
    prop_assert_eq!(
        t.buyers_pay.get() + t.utility_buys.get(),
        t.sellers_receive.get() + t.dso_fees.get() + t.utility_sells.get()
    );
    // Per order: pays/receives are exactly its trades plus its grid flow.
    let mut expected = vec![(0u128, 0u128); orders.len()];
    for tr in &c.trades {
        expected[tr.buy as usize].0 += u128::from(tr.energy.get()) * u128::from(tr.price.get());
        expected[tr.sell as usize].1 +=
            u128::from(tr.energy.get()) * u128::from(tr.seller_price.get());
    }
    for (i, (o, r)) in orders.iter().zip(&c.orders).enumerate() {
        let grid = u128::from(r.to_grid.get());
        match o.side {
            Side::Buy => expected[i].0 += grid * u128::from(p.grid_tariff().get()),
            Side::Sell => expected[i].1 += grid * u128::from(p.feed_in_tariff().get()),
        }
        prop_assert_eq!(u128::from(r.pays.get()), expected[i].0, "order {} pays", i);
        prop_assert_eq!(
            u128::from(r.receives.get()),
            expected[i].1,
            "order {} receives",
            i
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn money_is_conserved_to_the_micro_rappen((p, orders) in book()) {
        let c = clear(&p, &orders).unwrap();
        check_money(&p, &orders, &c)?;
    }

    #[test]
    fn no_trade_lies_outside_either_limit((p, orders) in book()) {
        let c = clear(&p, &orders).unwrap();
        for t in &c.trades {
            let (buy, sell) = (&orders[t.buy as usize], &orders[t.sell as usize]);
            prop_assert_eq!(buy.side, Side::Buy);
            prop_assert_eq!(sell.side, Side::Sell);
            prop_assert!(t.price <= buy.limit, "buyer pays above its limit: {t:?}");
            prop_assert!(t.seller_price >= sell.limit, "seller below its limit: {t:?}");
            prop_assert_eq!(t.price.get() - t.seller_price.get(), p.local_fee().get());
            prop_assert!(t.energy.get() > 0, "empty trade {t:?}");
        }
    }

    #[test]
    fn no_order_is_served_beyond_its_energy((p, orders) in book()) {
        let c = clear(&p, &orders).unwrap();
        let mut matched = vec![0u64; orders.len()];
        for t in &c.trades {
            matched[t.buy as usize] += t.energy.get();
            matched[t.sell as usize] += t.energy.get();
        }
        prop_assert_eq!(c.orders.len(), orders.len());
        for (i, (o, r)) in orders.iter().zip(&c.orders).enumerate() {
            prop_assert_eq!(r.matched.get(), matched[i]);
            prop_assert_eq!(r.matched.get() + r.to_grid.get(), o.energy.get(), "order {}", i);
        }
        let grid: u64 = c.grid.iter().map(|g| g.energy.get()).sum();
        let to_grid: u64 = c.orders.iter().map(|r| r.to_grid.get()).sum();
        prop_assert_eq!(grid, to_grid);
        let bought: u64 = c.trades.iter().map(|t| t.energy.get()).sum();
        prop_assert_eq!(c.totals.local_energy.get(), bought);
    }

    #[test]
    fn nothing_left_over_could_still_trade((p, orders) in book()) {
        let c = clear(&p, &orders).unwrap();
        let left = |side| {
            orders.iter().zip(&c.orders)
                .filter(move |(o, r)| o.side == side && r.to_grid.get() > 0)
                .map(|(o, _)| effective(&p, o))
        };
        if let (Some(bid), Some(ask)) = (left(Side::Buy).max(), left(Side::Sell).min()) {
            prop_assert!(bid < ask, "bid {bid} ≥ ask {ask} left unmatched");
        }
    }

    #[test]
    fn matches_an_independent_reference((p, orders) in book()) {
        let c = clear(&p, &orders).unwrap();
        prop_assert_eq!(c.trades, reference_trades(&p, &orders));
    }

    #[test]
    fn same_input_same_output((p, orders) in book()) {
        prop_assert_eq!(clear(&p, &orders).unwrap(), clear(&p, &orders).unwrap());
    }

    #[test]
    fn with_distinct_prices_input_order_does_not_matter(
        (p, orders, perm) in book().prop_flat_map(|(p, orders)| {
            // Keep one order per (side, effective price): then the matching is unique.
            let mut seen = std::collections::BTreeSet::new();
            let orders: Vec<Order> = orders
                .into_iter()
                .filter(|o| seen.insert((o.side, effective(&p, o))))
                .collect();
            let n = orders.len();
            (Just(p), Just(orders), Just((0..n).collect::<Vec<usize>>()).prop_shuffle())
        })
    ) {
        let c = clear(&p, &orders).unwrap();
        let shuffled: Vec<Order> = perm.iter().map(|&i| orders[i]).collect();
        let s = clear(&p, &shuffled).unwrap();
        for (j, &i) in perm.iter().enumerate() {
            prop_assert_eq!(s.orders[j], c.orders[i]);
        }
        let unshuffled: Vec<Trade> = s.trades.iter().map(|t| Trade {
            buy: perm[t.buy as usize] as u32,
            sell: perm[t.sell as usize] as u32,
            ..*t
        }).collect();
        prop_assert_eq!(unshuffled, c.trades);
        prop_assert_eq!(s.totals, c.totals);
    }

    #[test]
    fn limits_outside_the_tariffs_are_rejected((p, mut orders) in book(), pick: prop::sample::Index, above: bool) {
        prop_assume!(!orders.is_empty());
        let i = pick.index(orders.len());
        orders[i].limit = if above {
            Price::new(p.grid_tariff().get() + 1)
        } else {
            match p.feed_in_tariff().get().checked_sub(1) {
                Some(v) => Price::new(v),
                None => return Ok(()),
            }
        };
        let err = clear(&p, &orders).unwrap_err();
        prop_assert!(
            matches!(err, quartier_auction::AuctionError::LimitOutOfRange { order, .. } if order as usize <= i),
            "{err:?}"
        );
    }
}

#[test]
fn huge_energies_overflow_with_a_typed_error() {
    let p = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap();
    let big = u64::MAX / 20_750; // the largest energy whose value still fits
    let o = |side, energy| Order {
        side,
        limit: Price::new(20_000),
        energy: Energy::new(energy),
    };
    assert!(clear(&p, &[o(Side::Buy, big)]).is_ok());
    assert_eq!(
        clear(&p, &[o(Side::Buy, big + 1)]).unwrap_err(),
        quartier_auction::AuctionError::Overflow { order: 0 }
    );
    // Each order fits, the sum of two does not: the second one is named.
    assert_eq!(
        clear(&p, &[o(Side::Buy, big), o(Side::Buy, big)]).unwrap_err(),
        quartier_auction::AuctionError::Overflow { order: 1 }
    );
}
