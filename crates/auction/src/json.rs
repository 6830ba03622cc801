//! The JSON form of a clearing, as read and printed by `quartier clear`.
//!
//! Input names each order with a string id; output refers to orders by that id.
//! Every number is an integer in the units of DESIGN §2 (Wh, mRp/kWh, µRp).
//!
//! ```json
//! {"params": {"grid_tariff": 20750, "feed_in_tariff": 4000, "local_fee": 0},
//!  "orders": [{"id": "h1", "side": "buy",  "limit": 20000, "energy": 1200},
//!             {"id": "h2", "side": "sell", "limit": 8000,  "energy": 800}]}
//! ```
//!
//! [`clear_json`] is the decoder for untrusted input: it rejects unknown or
//! missing fields, negative or fractional numbers, duplicate or empty ids and
//! inadmissible limits, and names the field or order at fault.

use crate::{AuctionError, Clearing, Totals, clear};
use quartier_types::{Energy, Money, Order, Price, RegionParams, Side};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A book to clear: the region's parameters and its orders in arrival order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearRequest {
    /// The region's tariffs and fee.
    pub params: RegionParams,
    /// The orders, earliest first.
    pub orders: Vec<NamedOrder>,
}

/// An order with the caller's name for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedOrder {
    /// The caller's id; unique within the request and not empty.
    pub id: String,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub limit: Price,
    /// Energy to trade.
    pub energy: Energy,
}

/// A trade between two named orders.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedTrade {
    /// Id of the buy order.
    pub buy: String,
    /// Id of the sell order.
    pub sell: String,
    /// Energy traded.
    pub energy: Energy,
    /// What the buyer pays per kWh.
    pub price: Price,
    /// What the seller receives per kWh.
    pub seller_price: Price,
    /// The DSO's fee per kWh.
    pub fee: Price,
}

/// Energy of a named order exchanged with the utility.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedGridFlow {
    /// Id of the order.
    pub order: String,
    /// Side of the order.
    pub side: Side,
    /// Energy exchanged with the utility.
    pub energy: Energy,
    /// The tariff applied.
    pub price: Price,
}

/// The outcome of a named order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedOrderResult {
    /// Id of the order.
    pub id: String,
    /// Energy matched locally.
    pub matched: Energy,
    /// Energy exchanged with the utility.
    pub to_grid: Energy,
    /// What the owner pays.
    pub pays: Money,
    /// What the owner receives.
    pub receives: Money,
}

/// A clearing with orders named by their ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClearResponse {
    /// Trades in the order they were matched.
    pub trades: Vec<NamedTrade>,
    /// Grid flows in input order.
    pub grid: Vec<NamedGridFlow>,
    /// One result per input order, in input order.
    pub orders: Vec<NamedOrderResult>,
    /// Sums over the clearing.
    pub totals: Totals,
}

/// Why a JSON clearing request was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClearRequestError {
    /// The JSON is malformed or does not have the request's shape.
    #[error("invalid request at `{path}`: {reason}")]
    Malformed {
        /// Where in the document the problem is, e.g. `orders[1].limit`.
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// Two orders share an id.
    #[error("duplicate order id `{id}`")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// An order has an empty id.
    #[error("order at `orders[{index}]` has an empty id")]
    EmptyId {
        /// Position of the order.
        index: usize,
    },
    /// An order's limit lies outside the tariff range.
    #[error("order `{id}`: limit {limit} outside [{min}, {max}]")]
    LimitOutOfRange {
        /// Id of the order.
        id: String,
        /// The order's limit.
        limit: Price,
        /// The feed-in tariff.
        min: Price,
        /// The grid tariff.
        max: Price,
    },
    /// An amount does not fit in 64 bits.
    #[error("order `{id}`: amount overflows 64 bits")]
    Overflow {
        /// Id of the order whose amount overflowed.
        id: String,
    },
    /// More orders than the auction can address.
    #[error("{count} orders exceed the auction's limit")]
    TooManyOrders {
        /// Number of orders given.
        count: usize,
    },
}

/// Decodes a request from JSON bytes, checking ids.
///
/// # Errors
/// [`ClearRequestError::Malformed`], [`ClearRequestError::DuplicateId`] or
/// [`ClearRequestError::EmptyId`].
pub fn decode_request(input: &[u8]) -> Result<ClearRequest, ClearRequestError> {
    let mut de = serde_json::Deserializer::from_slice(input);
    let request: ClearRequest =
        serde_path_to_error::deserialize(&mut de).map_err(|e| ClearRequestError::Malformed {
            path: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
    de.end().map_err(|e| ClearRequestError::Malformed {
        path: ".".to_string(),
        reason: e.to_string(),
    })?;
    let mut seen = BTreeSet::new();
    for (index, order) in request.orders.iter().enumerate() {
        if order.id.is_empty() {
            return Err(ClearRequestError::EmptyId { index });
        }
        if !seen.insert(order.id.as_str()) {
            return Err(ClearRequestError::DuplicateId {
                id: order.id.clone(),
            });
        }
    }
    Ok(request)
}

impl ClearRequest {
    /// Clears the request's book and names the result by order id.
    ///
    /// # Errors
    /// The auction's errors, with the order named by its id.
    pub fn clear(&self) -> Result<ClearResponse, ClearRequestError> {
        let book: Vec<Order> = self
            .orders
            .iter()
            .map(|o| Order {
                side: o.side,
                limit: o.limit,
                energy: o.energy,
            })
            .collect();
        let clearing = clear(&self.params, &book).map_err(|e| self.name_error(e))?;
        Ok(self.name_clearing(clearing))
    }

    fn id(&self, index: u32) -> String {
        self.orders[index as usize].id.clone()
    }

    fn name_error(&self, e: AuctionError) -> ClearRequestError {
        match e {
            AuctionError::LimitOutOfRange {
                order,
                limit,
                min,
                max,
            } => ClearRequestError::LimitOutOfRange {
                id: self.id(order),
                limit,
                min,
                max,
            },
            AuctionError::Overflow { order } => ClearRequestError::Overflow { id: self.id(order) },
            AuctionError::TooManyOrders { count } => ClearRequestError::TooManyOrders { count },
        }
    }

    fn name_clearing(&self, c: Clearing) -> ClearResponse {
        ClearResponse {
            trades: c
                .trades
                .iter()
                .map(|t| NamedTrade {
                    buy: self.id(t.buy),
                    sell: self.id(t.sell),
                    energy: t.energy,
                    price: t.price,
                    seller_price: t.seller_price,
                    fee: t.fee,
                })
                .collect(),
            grid: c
                .grid
                .iter()
                .map(|g| NamedGridFlow {
                    order: self.id(g.order),
                    side: g.side,
                    energy: g.energy,
                    price: g.price,
                })
                .collect(),
            orders: self
                .orders
                .iter()
                .zip(&c.orders)
                .map(|(o, r)| NamedOrderResult {
                    id: o.id.clone(),
                    matched: r.matched,
                    to_grid: r.to_grid,
                    pays: r.pays,
                    receives: r.receives,
                })
                .collect(),
            totals: c.totals,
        }
    }
}

/// Decodes a JSON request and clears it: the whole of `quartier clear`.
///
/// # Errors
/// Any [`ClearRequestError`]; nothing is cleared on error.
pub fn clear_json(input: &[u8]) -> Result<ClearResponse, ClearRequestError> {
    decode_request(input)?.clear()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(input: &str) -> String {
        clear_json(input.as_bytes()).unwrap_err().to_string()
    }

    const PARAMS: &str =
        r#""params": {"grid_tariff": 20750, "feed_in_tariff": 4000, "local_fee": 0}"#;

    #[test]
    fn issue_example_round_trips() {
        let input = format!(
            r#"{{{PARAMS}, "orders": [
                {{"id": "h1", "side": "buy", "limit": 20000, "energy": 1200}},
                {{"id": "h2", "side": "sell", "limit": 8000, "energy": 800}}]}}"#
        );
        let out = serde_json::to_value(clear_json(input.as_bytes()).unwrap()).unwrap();
        let expected: serde_json::Value = serde_json::from_str(
            r#"{"trades": [{"buy": "h1", "sell": "h2", "energy": 800, "price": 14000,
                 "seller_price": 14000, "fee": 0}],
                "grid": [{"order": "h1", "side": "buy", "energy": 400, "price": 20750}],
                "orders": [{"id": "h1", "matched": 800, "to_grid": 400, "pays": 19500000, "receives": 0},
                           {"id": "h2", "matched": 800, "to_grid": 0, "pays": 0, "receives": 11200000}],
                "totals": {"local_energy": 800, "grid_import": 400, "grid_export": 0,
                           "buyers_pay": 19500000, "sellers_receive": 11200000, "dso_fees": 0,
                           "utility_sells": 8300000, "utility_buys": 0}}"#,
        )
        .unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn errors_name_the_field() {
        let o = |body: &str| format!(r#"{{{PARAMS}, "orders": [{body}]}}"#);
        let e = err(&o(
            r#"{"id": "a", "side": "buy", "limit": 5000.5, "energy": 1}"#,
        ));
        assert!(e.contains("orders[0].limit"), "{e}");
        let e = err(&o(
            r#"{"id": "a", "side": "buy", "limit": 5000, "energy": -1}"#,
        ));
        assert!(e.contains("orders[0].energy"), "{e}");
        let e = err(&o(r#"{"id": "a", "side": "buy", "limit": 5000}"#));
        assert!(e.contains("missing field `energy`"), "{e}");
        let e = err(&o(
            r#"{"id": "a", "side": "buy", "limit": 5000, "energy": 1, "x": 0}"#,
        ));
        assert!(e.contains("unknown field `x`"), "{e}");
        let e = err(&o(
            r#"{"id": "a", "side": "hold", "limit": 5000, "energy": 1}"#,
        ));
        assert!(e.contains("orders[0].side"), "{e}");
        let e = err(&o(
            r#"{"id": "a", "side": "buy", "limit": 18446744073709551616, "energy": 1}"#,
        ));
        assert!(e.contains("orders[0].limit"), "{e}");
    }

    #[test]
    fn errors_name_the_order() {
        let o = |body: &str| format!(r#"{{{PARAMS}, "orders": [{body}]}}"#);
        let e = err(&o(
            r#"{"id": "a", "side": "buy", "limit": 5000, "energy": 1},
                          {"id": "a", "side": "sell", "limit": 5000, "energy": 1}"#,
        ));
        assert_eq!(e, "duplicate order id `a`");
        let e = err(&o(
            r#"{"id": "b", "side": "sell", "limit": 30000, "energy": 1}"#,
        ));
        assert_eq!(
            e,
            "order `b`: limit 30000 mRp/kWh outside [4000 mRp/kWh, 20750 mRp/kWh]"
        );
        let e = err(&o(
            r#"{"id": "c", "side": "buy", "limit": 5000, "energy": 18446744073709551615}"#,
        ));
        assert_eq!(e, "order `c`: amount overflows 64 bits");
        let e = err(&o(
            r#"{"id": "", "side": "buy", "limit": 5000, "energy": 1}"#,
        ));
        assert!(e.contains("empty id"), "{e}");
    }

    #[test]
    fn trailing_garbage_and_bad_params_are_rejected() {
        let e = err(&format!(r#"{{{PARAMS}, "orders": []}} x"#));
        assert!(e.contains("trailing"), "{e}");
        let e = err(
            r#"{"params": {"grid_tariff": 1, "feed_in_tariff": 2, "local_fee": 0}, "orders": []}"#,
        );
        assert!(
            e.contains("params") && e.contains("exceeds grid_tariff"),
            "{e}"
        );
    }
}
