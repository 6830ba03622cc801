//! Orders and the market parameters of a region.

use crate::{Energy, Price};
use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Which side of the book an order is on.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[borsh(use_discriminant = true)]
pub enum Side {
    /// The meter consumed more than it produced and buys the difference.
    Buy = 0,
    /// The meter produced more than it consumed and sells the surplus.
    Sell = 1,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        })
    }
}

/// One meter's order for one slot: what it wants to trade and its limit price.
///
/// An order is valid on its own; whether its limit is admissible depends on the
/// region ([`RegionParams::admits`]). `energy = 0` is a valid dummy order that
/// never trades.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// Buy or sell.
    pub side: Side,
    /// For a buy the highest price the buyer pays; for a sell the lowest price the
    /// seller accepts before the local fee.
    pub limit: Price,
    /// The energy the meter measured in the slot.
    pub energy: Energy,
}

/// Why a set of region parameters is not admissible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The utility would buy at a higher price than it sells.
    #[error("feed_in_tariff {feed_in} exceeds grid_tariff {grid}")]
    FeedInAboveGrid {
        /// The feed-in tariff given.
        feed_in: Price,
        /// The grid tariff given.
        grid: Price,
    },
}

/// The market parameters of one region: the utility's tariffs and the DSO's fee.
///
/// Invariant: `feed_in_tariff ≤ grid_tariff`. Limits of orders must lie in
/// `[feed_in_tariff, grid_tariff]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, BorshSerialize, Serialize, Deserialize)]
#[serde(try_from = "RegionParamsFields")]
pub struct RegionParams {
    grid_tariff: Price,
    feed_in_tariff: Price,
    local_fee: Price,
}

/// The unchecked wire form of [`RegionParams`].
#[derive(BorshDeserialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegionParamsFields {
    grid_tariff: Price,
    feed_in_tariff: Price,
    local_fee: Price,
}

impl TryFrom<RegionParamsFields> for RegionParams {
    type Error = ParamsError;

    fn try_from(f: RegionParamsFields) -> Result<Self, Self::Error> {
        RegionParams::new(f.grid_tariff, f.feed_in_tariff, f.local_fee)
    }
}

impl BorshDeserialize for RegionParams {
    fn deserialize_reader<R: std::io::Read>(reader: &mut R) -> std::io::Result<Self> {
        let fields = RegionParamsFields::deserialize_reader(reader)?;
        RegionParams::try_from(fields)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

impl RegionParams {
    /// Region parameters from the utility's tariffs and the DSO's fee per kWh.
    ///
    /// # Errors
    /// [`ParamsError::FeedInAboveGrid`] if `feed_in_tariff > grid_tariff`.
    pub fn new(
        grid_tariff: Price,
        feed_in_tariff: Price,
        local_fee: Price,
    ) -> Result<Self, ParamsError> {
        if feed_in_tariff > grid_tariff {
            return Err(ParamsError::FeedInAboveGrid {
                feed_in: feed_in_tariff,
                grid: grid_tariff,
            });
        }
        Ok(Self {
            grid_tariff,
            feed_in_tariff,
            local_fee,
        })
    }

    /// The price at which the utility sells energy the market did not supply.
    pub const fn grid_tariff(&self) -> Price {
        self.grid_tariff
    }

    /// The price at which the utility buys surplus the market did not take.
    pub const fn feed_in_tariff(&self) -> Price {
        self.feed_in_tariff
    }

    /// The DSO's fee per kWh traded locally, paid by the buyer on top of the ask.
    pub const fn local_fee(&self) -> Price {
        self.local_fee
    }

    /// Whether `limit` is an admissible order limit: `feed_in ≤ limit ≤ grid`.
    pub fn admits(&self, limit: Price) -> bool {
        (self.feed_in_tariff..=self.grid_tariff).contains(&limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RegionParams {
        RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap()
    }

    #[test]
    fn feed_in_above_grid_is_rejected() {
        let err = RegionParams::new(Price::new(1), Price::new(2), Price::ZERO).unwrap_err();
        assert!(matches!(err, ParamsError::FeedInAboveGrid { .. }));
    }

    #[test]
    fn admits_the_closed_tariff_range() {
        let p = params();
        assert!(p.admits(Price::new(4_000)));
        assert!(p.admits(Price::new(20_750)));
        assert!(!p.admits(Price::new(3_999)));
        assert!(!p.admits(Price::new(20_751)));
    }

    #[test]
    fn json_decoding_validates() {
        let ok: RegionParams = serde_json::from_str(
            r#"{"grid_tariff": 20750, "feed_in_tariff": 4000, "local_fee": 0}"#,
        )
        .unwrap();
        assert_eq!(ok, params());
        let bad = serde_json::from_str::<RegionParams>(
            r#"{"grid_tariff": 1, "feed_in_tariff": 4000, "local_fee": 0}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("exceeds grid_tariff"));
        let unknown = serde_json::from_str::<RegionParams>(
            r#"{"grid_tariff": 1, "feed_in_tariff": 0, "local_fee": 0, "x": 1}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn borsh_round_trips_and_validates() {
        let bytes = borsh::to_vec(&params()).unwrap();
        assert_eq!(bytes.len(), 24);
        assert_eq!(borsh::from_slice::<RegionParams>(&bytes).unwrap(), params());
        let mut bad = bytes.clone();
        bad[..8].copy_from_slice(&1u64.to_le_bytes());
        assert!(borsh::from_slice::<RegionParams>(&bad).is_err());
    }

    #[test]
    fn side_encodings_are_fixed() {
        assert_eq!(borsh::to_vec(&Side::Buy).unwrap(), [0]);
        assert_eq!(borsh::to_vec(&Side::Sell).unwrap(), [1]);
        assert!(borsh::from_slice::<Side>(&[2]).is_err());
        assert_eq!(serde_json::to_string(&Side::Sell).unwrap(), r#""sell""#);
    }
}
