//! The three units of the market: energy, price and money.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// Defines a `u64` unit newtype with checked arithmetic.
macro_rules! unit {
    ($(#[$doc:meta])* $name:ident, $suffix:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            BorshSerialize, BorshDeserialize, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Zero of this unit.
            pub const ZERO: Self = Self(0);
            /// The largest representable amount.
            pub const MAX: Self = Self(u64::MAX);

            /// Wraps a raw amount in this unit.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw amount in this unit.
            pub const fn get(self) -> u64 {
                self.0
            }

            /// Whether the amount is zero.
            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }

            /// `self + rhs`, or `None` on overflow.
            pub const fn checked_add(self, rhs: Self) -> Option<Self> {
                match self.0.checked_add(rhs.0) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - rhs`, or `None` if `rhs > self`.
            pub const fn checked_sub(self, rhs: Self) -> Option<Self> {
                match self.0.checked_sub(rhs.0) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{} {}", self.0, $suffix)
            }
        }
    };
}

unit!(
    /// Energy in whole watt-hours (Wh).
    Energy,
    "Wh"
);
unit!(
    /// A price in milli-Rappen per kilowatt-hour (mRp/kWh); 20.75 Rp/kWh is 20 750.
    Price,
    "mRp/kWh"
);
unit!(
    /// Money in micro-Rappen (µRp); one franc is 10^8 µRp.
    Money,
    "µRp"
);

impl Energy {
    /// The value of this energy at `price`: `Wh × mRp/kWh = µRp`, exact.
    ///
    /// Returns `None` if the value does not fit in [`Money`].
    pub fn value_at(self, price: Price) -> Option<Money> {
        let micro = u128::from(self.0) * u128::from(price.0);
        u64::try_from(micro).ok().map(Money)
    }

    /// The smaller of two energies.
    pub fn min(self, other: Self) -> Self {
        Self(self.0.min(other.0))
    }
}

impl Price {
    /// The mean of two prices rounded down: `floor((a + b) / 2)`.
    ///
    /// This is the only rounding in the market (DESIGN §3); it can not overflow.
    pub const fn mean_floor(a: Price, b: Price) -> Price {
        Price(a.0.midpoint(b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn value_is_exact_in_micro_rappen() {
        // 1.2 kWh at 20.75 Rp/kWh = 24.9 Rp = 24_900_000 µRp.
        assert_eq!(
            Energy::new(1_200).value_at(Price::new(20_750)),
            Some(Money::new(24_900_000))
        );
    }

    #[test]
    fn value_overflow_is_none() {
        assert_eq!(Energy::MAX.value_at(Price::new(2)), None);
        assert_eq!(Energy::MAX.value_at(Price::new(1)), Some(Money::MAX));
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Money::MAX.checked_add(Money::new(1)), None);
        assert_eq!(Money::ZERO.checked_sub(Money::new(1)), None);
        assert_eq!(
            Energy::new(3).checked_sub(Energy::new(1)),
            Some(Energy::new(2))
        );
    }

    #[test]
    fn serde_is_a_bare_integer() {
        let json = serde_json::to_string(&Price::new(20_750)).unwrap();
        assert_eq!(json, "20750");
        assert!(serde_json::from_str::<Price>("-1").is_err());
        assert!(serde_json::from_str::<Price>("1.5").is_err());
    }

    proptest! {
        #[test]
        fn mean_floor_matches_wide_arithmetic(a: u64, b: u64) {
            let wide = (u128::from(a) + u128::from(b)) / 2;
            prop_assert_eq!(u128::from(Price::mean_floor(Price::new(a), Price::new(b)).get()), wide);
        }
    }
}
