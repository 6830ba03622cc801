//! The discriminatory double auction that clears one region's slot (DESIGN §3).
//!
//! One sealed batch per region and slot: all orders are known before clearing.
//!
//! 1. Every limit must lie in `[feed_in_tariff, grid_tariff]`.
//! 2. A sell's effective ask is `limit + local_fee`. Sells are sorted by effective
//!    ask ascending, buys by bid descending; ties go to the earlier input
//!    position (on chain: block height, then index in the block).
//! 3. While the best bid is at least the best effective ask, they trade
//!    `q = min(remaining buy, remaining sell)` at the buyer price
//!    `p = floor((bid + effective_ask) / 2)`; the seller gets `p − local_fee`
//!    per kWh and the DSO `local_fee`. Partial fills continue with the rest.
//! 4. What is left goes to the utility: unmatched buys are supplied at the grid
//!    tariff, unmatched sells are bought at the feed-in tariff.
//!
//! The floor in step 3 is the market's only rounding: at most half a
//! milli-Rappen per kWh, always in the buyer's favour. Every value is
//! `Wh × mRp/kWh = µRp` exact, so money is conserved to the µRp:
//! `buyers_pay + utility_buys = sellers_receive + dso_fees + utility_sells`.
//!
//! [`clear`] is pure and runs in O(n log n).
#![forbid(unsafe_code)]

pub mod json;

use borsh::{BorshDeserialize, BorshSerialize};
use quartier_types::{Energy, Money, Order, Price, RegionParams, Side};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;

/// The position of an order in the input of [`clear`].
pub type OrderIndex = u32;

/// Why a book can not be cleared. Every variant is a caller error: the book or
/// the parameters are not admissible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuctionError {
    /// An order's limit lies outside `[feed_in_tariff, grid_tariff]`.
    #[error("order {order}: limit {limit} outside [{min}, {max}]")]
    LimitOutOfRange {
        /// Position of the order in the input.
        order: OrderIndex,
        /// The order's limit.
        limit: Price,
        /// The region's feed-in tariff.
        min: Price,
        /// The region's grid tariff.
        max: Price,
    },
    /// An amount of money or energy does not fit in 64 bits. The order named is
    /// the one whose value, or whose addition to a total, overflowed.
    #[error("order {order}: amount overflows 64 bits")]
    Overflow {
        /// Position of the order in the input.
        order: OrderIndex,
    },
    /// More orders than an [`OrderIndex`] can address.
    #[error("{count} orders exceed the limit of {}", OrderIndex::MAX)]
    TooManyOrders {
        /// The number of orders given.
        count: usize,
    },
}

/// One match between a buy and a sell.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct Trade {
    /// The buy order.
    pub buy: OrderIndex,
    /// The sell order.
    pub sell: OrderIndex,
    /// Energy traded.
    pub energy: Energy,
    /// What the buyer pays per kWh.
    pub price: Price,
    /// What the seller receives per kWh: `price − fee`.
    pub seller_price: Price,
    /// The DSO's local fee per kWh.
    pub fee: Price,
}

/// Energy of one order that the market did not match, exchanged with the utility.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize,
)]
pub struct GridFlow {
    /// The order.
    pub order: OrderIndex,
    /// `Buy`: the utility supplies the energy; `Sell`: the utility takes it.
    pub side: Side,
    /// Energy exchanged with the utility.
    pub energy: Energy,
    /// The grid tariff for a buy, the feed-in tariff for a sell.
    pub price: Price,
}

/// The outcome for one order.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct OrderResult {
    /// Energy matched in the local market.
    pub matched: Energy,
    /// Energy exchanged with the utility; `matched + to_grid` is the order's energy.
    pub to_grid: Energy,
    /// What the order's owner pays (buys only).
    pub pays: Money,
    /// What the order's owner receives (sells only).
    pub receives: Money,
}

/// Sums over a clearing.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    BorshSerialize,
    BorshDeserialize,
)]
pub struct Totals {
    /// Energy traded between neighbours.
    pub local_energy: Energy,
    /// Energy the utility supplied to unmatched buys.
    pub grid_import: Energy,
    /// Energy the utility took from unmatched sells.
    pub grid_export: Energy,
    /// What all buyers pay, local trades and grid supply together.
    pub buyers_pay: Money,
    /// What all sellers receive, local trades and feed-in together.
    pub sellers_receive: Money,
    /// What the DSO receives in local fees.
    pub dso_fees: Money,
    /// What the utility receives for grid supply.
    pub utility_sells: Money,
    /// What the utility pays for feed-in.
    pub utility_buys: Money,
}

impl Totals {
    /// Whether money is conserved to the µRp:
    /// `buyers_pay + utility_buys == sellers_receive + dso_fees + utility_sells`.
    pub fn is_balanced(&self) -> bool {
        let inflow = u128::from(self.buyers_pay.get()) + u128::from(self.utility_buys.get());
        let outflow = u128::from(self.sellers_receive.get())
            + u128::from(self.dso_fees.get())
            + u128::from(self.utility_sells.get());
        inflow == outflow
    }
}

/// The result of clearing one book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, BorshSerialize, BorshDeserialize)]
pub struct Clearing {
    /// Trades in the order they were matched.
    pub trades: Vec<Trade>,
    /// Flows to and from the utility, in input order of their orders.
    pub grid: Vec<GridFlow>,
    /// One result per input order, in input order.
    pub orders: Vec<OrderResult>,
    /// Sums over the whole clearing.
    pub totals: Totals,
}

impl Clearing {
    /// The energy-weighted mean of the prices buyers paid in local trades,
    /// rounded down, or `None` without trades (a statistic for reports; no
    /// money is computed from it).
    ///
    /// # Examples
    /// ```
    /// use quartier_auction::clear;
    /// use quartier_types::{Energy, Order, Price, RegionParams, Side};
    ///
    /// let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)?;
    /// let order = |side, limit, energy| Order {
    ///     side,
    ///     limit: Price::new(limit),
    ///     energy: Energy::new(energy),
    /// };
    /// // 100 Wh at (20 000 + 8 000) / 2 = 14 000 and 300 Wh at (18 000 + 12 000) / 2 = 15 000.
    /// let book = [
    ///     order(Side::Buy, 20_000, 100),
    ///     order(Side::Sell, 8_000, 100),
    ///     order(Side::Buy, 18_000, 300),
    ///     order(Side::Sell, 12_000, 300),
    /// ];
    /// let clearing = clear(&params, &book)?;
    /// assert_eq!(clearing.mean_price(), Some(Price::new(14_750)));
    /// assert_eq!(clear(&params, &[])?.mean_price(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mean_price(&self) -> Option<Price> {
        let (energy, value) = self.trades.iter().fold((0u128, 0u128), |(e, v), t| {
            let energy = u128::from(t.energy.get());
            (e + energy, v + energy * u128::from(t.price.get()))
        });
        (energy > 0).then(|| Price::new(u64::try_from(value / energy).unwrap_or(u64::MAX)))
    }
}

/// Clears one region's book for one slot with the discriminatory rule.
///
/// `orders[i]` is identified by its position `i` in the results; input order
/// breaks ties between equal prices.
///
/// # Errors
/// [`AuctionError::LimitOutOfRange`] for an inadmissible limit,
/// [`AuctionError::Overflow`] if an order's value or a total does not fit in 64
/// bits, [`AuctionError::TooManyOrders`] beyond `u32::MAX` orders.
///
/// # Examples
/// ```
/// use quartier_auction::clear;
/// use quartier_types::{Energy, Order, Price, RegionParams, Side};
///
/// let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)?;
/// let book = [
///     Order { side: Side::Buy, limit: Price::new(20_000), energy: Energy::new(1_200) },
///     Order { side: Side::Sell, limit: Price::new(8_000), energy: Energy::new(800) },
/// ];
/// let clearing = clear(&params, &book)?;
/// assert_eq!(clearing.trades[0].price, Price::new(14_000));
/// assert_eq!(clearing.totals.grid_import, Energy::new(400));
/// assert!(clearing.totals.is_balanced());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn clear(params: &RegionParams, orders: &[Order]) -> Result<Clearing, AuctionError> {
    if u32::try_from(orders.len()).is_err() {
        return Err(AuctionError::TooManyOrders {
            count: orders.len(),
        });
    }
    let fee = params.local_fee();
    let mut buys: Vec<(Price, OrderIndex)> = Vec::new();
    let mut sells: Vec<(Price, OrderIndex)> = Vec::new();
    for (i, order) in (0..).zip(orders) {
        if !params.admits(order.limit) {
            return Err(AuctionError::LimitOutOfRange {
                order: i,
                limit: order.limit,
                min: params.feed_in_tariff(),
                max: params.grid_tariff(),
            });
        }
        // Every price an order can meet is at most the grid tariff, so this bounds
        // everything the order can pay or receive.
        if order.energy.value_at(params.grid_tariff()).is_none() {
            return Err(AuctionError::Overflow { order: i });
        }
        if order.energy.is_zero() {
            continue;
        }
        match order.side {
            Side::Buy => buys.push((order.limit, i)),
            Side::Sell => {
                let ask = order
                    .limit
                    .checked_add(fee)
                    .ok_or(AuctionError::Overflow { order: i })?;
                sells.push((ask, i));
            }
        }
    }
    // The index in the key makes the unstable sort deterministic: ties go to the
    // earlier order.
    buys.sort_unstable_by_key(|&(bid, i)| (Reverse(bid), i));
    sells.sort_unstable_by_key(|&(ask, i)| (ask, i));

    let mut remaining: Vec<Energy> = orders.iter().map(|o| o.energy).collect();
    let mut trades = Vec::new();
    let (mut b, mut s) = (0, 0);
    while let (Some(&(bid, buy)), Some(&(ask, sell))) = (buys.get(b), sells.get(s)) {
        if bid < ask {
            break;
        }
        let (rb, rs) = (remaining[buy as usize], remaining[sell as usize]);
        let energy = rb.min(rs);
        let price = Price::mean_floor(bid, ask);
        trades.push(Trade {
            buy,
            sell,
            energy,
            price,
            // price ≥ ask = sell limit + fee, so this never underflows.
            seller_price: price.checked_sub(fee).unwrap_or(Price::ZERO),
            fee,
        });
        remaining[buy as usize] = rb.checked_sub(energy).unwrap_or(Energy::ZERO);
        remaining[sell as usize] = rs.checked_sub(energy).unwrap_or(Energy::ZERO);
        if remaining[buy as usize].is_zero() {
            b += 1;
        }
        if remaining[sell as usize].is_zero() {
            s += 1;
        }
    }
    settle(params, orders, trades, &remaining)
}

/// Turns the matched trades and the remainders into money flows and totals.
fn settle(
    params: &RegionParams,
    orders: &[Order],
    trades: Vec<Trade>,
    remaining: &[Energy],
) -> Result<Clearing, AuctionError> {
    let mut results = vec![OrderResult::default(); orders.len()];
    let mut totals = Totals::default();
    for t in &trades {
        let overflow = AuctionError::Overflow { order: t.buy };
        let paid = t.energy.value_at(t.price).ok_or(overflow.clone())?;
        let to_seller = t.energy.value_at(t.seller_price).ok_or(overflow.clone())?;
        let fees = t.energy.value_at(t.fee).ok_or(overflow.clone())?;
        let buyer = &mut results[t.buy as usize];
        buyer.matched = add(buyer.matched, t.energy, t.buy)?;
        buyer.pays = add(buyer.pays, paid, t.buy)?;
        let seller = &mut results[t.sell as usize];
        seller.matched = add(seller.matched, t.energy, t.sell)?;
        seller.receives = add(seller.receives, to_seller, t.sell)?;
        totals.local_energy = add(totals.local_energy, t.energy, t.buy)?;
        totals.dso_fees = add(totals.dso_fees, fees, t.buy)?;
    }
    let mut grid = Vec::new();
    for (i, ((order, &rest), result)) in (0..).zip(orders.iter().zip(remaining).zip(&mut results)) {
        if !rest.is_zero() {
            let price = match order.side {
                Side::Buy => params.grid_tariff(),
                Side::Sell => params.feed_in_tariff(),
            };
            let value = rest
                .value_at(price)
                .ok_or(AuctionError::Overflow { order: i })?;
            result.to_grid = rest;
            match order.side {
                Side::Buy => {
                    result.pays = add(result.pays, value, i)?;
                    totals.grid_import = add(totals.grid_import, rest, i)?;
                    totals.utility_sells = add(totals.utility_sells, value, i)?;
                }
                Side::Sell => {
                    result.receives = add(result.receives, value, i)?;
                    totals.grid_export = add(totals.grid_export, rest, i)?;
                    totals.utility_buys = add(totals.utility_buys, value, i)?;
                }
            }
            grid.push(GridFlow {
                order: i,
                side: order.side,
                energy: rest,
                price,
            });
        }
        totals.buyers_pay = add(totals.buyers_pay, result.pays, i)?;
        totals.sellers_receive = add(totals.sellers_receive, result.receives, i)?;
    }
    Ok(Clearing {
        trades,
        grid,
        orders: results,
        totals,
    })
}

/// Checked addition for any unit, naming `order` on overflow.
fn add<U: CheckedAdd>(a: U, b: U, order: OrderIndex) -> Result<U, AuctionError> {
    a.checked_add_unit(b)
        .ok_or(AuctionError::Overflow { order })
}

/// The units that [`add`] sums.
trait CheckedAdd: Sized {
    fn checked_add_unit(self, rhs: Self) -> Option<Self>;
}

impl CheckedAdd for Energy {
    fn checked_add_unit(self, rhs: Self) -> Option<Self> {
        self.checked_add(rhs)
    }
}

impl CheckedAdd for Money {
    fn checked_add_unit(self, rhs: Self) -> Option<Self> {
        self.checked_add(rhs)
    }
}
