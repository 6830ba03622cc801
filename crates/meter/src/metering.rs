//! Which flows a meter orders (issue 17: a buy must not say whether its
//! household has PV).
//!
//! [`Metering::Net`] orders what the household draws from or feeds into the
//! grid: one order a slot, a buy of `consumed − produced` or a sell of the
//! rest. In a sunny slot only households without PV (and prosumers whose PV
//! falls short) then buy, so a buy's side alone narrows its household to the
//! few without PV. [`Metering::Gross`] ("buy all, sell all", as gross-metered
//! feed-in tariffs settle) orders both flows: a buy of everything the
//! household consumed and, with PV, a sell of everything it produced. Every
//! household then buys its load every slot, prosumers as much as consumers,
//! and its own PV reaches it through the market: the energy a prosumer uses
//! itself is bought and sold like any other, at the book's prices.

use quartier_types::Side;

/// How a meter's reading becomes orders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metering {
    /// One order of the net flow (the open market's and mode B's rule).
    #[default]
    Net,
    /// A buy of the consumption and a sell of the production (mode A's).
    Gross,
}

impl Metering {
    /// The orders, `(side, Wh)`, for a slot in which the household consumed
    /// `consumed_wh` and its PV produced `produced_wh`: none for a zero
    /// flow (the caller sends its cover order then).
    pub fn orders(self, consumed_wh: u64, produced_wh: u64) -> Vec<(Side, u64)> {
        let (buy, sell) = match self {
            Metering::Net => (
                consumed_wh.saturating_sub(produced_wh),
                produced_wh.saturating_sub(consumed_wh),
            ),
            Metering::Gross => (consumed_wh, produced_wh),
        };
        [(Side::Buy, buy), (Side::Sell, sell)]
            .into_iter()
            .filter(|(_, wh)| *wh > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn net_orders_one_flow_and_gross_both() {
        assert_eq!(Metering::Net.orders(300, 1_000), vec![(Side::Sell, 700)]);
        assert_eq!(Metering::Net.orders(300, 100), vec![(Side::Buy, 200)]);
        assert_eq!(Metering::Net.orders(300, 300), vec![]);
        assert_eq!(
            Metering::Gross.orders(300, 1_000),
            vec![(Side::Buy, 300), (Side::Sell, 1_000)]
        );
        assert_eq!(Metering::Gross.orders(300, 0), vec![(Side::Buy, 300)]);
        assert_eq!(Metering::Gross.orders(0, 0), vec![]);
    }

    proptest! {
        /// Both rules order the same net energy: bought minus sold is what
        /// the household drew from the grid.
        #[test]
        fn both_rules_order_the_metered_net(c in 0u64..1_000_000, p in 0u64..1_000_000) {
            for rule in [Metering::Net, Metering::Gross] {
                let net: i128 = rule
                    .orders(c, p)
                    .iter()
                    .map(|(side, wh)| match side {
                        Side::Buy => i128::from(*wh),
                        Side::Sell => -i128::from(*wh),
                    })
                    .sum();
                prop_assert_eq!(net, i128::from(c) - i128::from(p));
            }
        }
    }
}
