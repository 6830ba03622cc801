//! Identifiers and positions in time.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// A grid region: one low-voltage network with its own order book per slot.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
#[serde(transparent)]
pub struct RegionId(pub u32);

/// A market slot: slot `s` covers `[s·Δ, (s+1)·Δ)` for the chain's slot length Δ.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
#[serde(transparent)]
pub struct Slot(pub u64);

/// A distance between two slots, so that `Slot + Slot` does not compile.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
#[serde(transparent)]
pub struct SlotDelta(pub u64);

/// A block height on the chain.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
#[serde(transparent)]
pub struct Height(pub u64);

impl Slot {
    /// The slot `delta` after this one, or `None` on overflow.
    pub const fn checked_add(self, delta: SlotDelta) -> Option<Slot> {
        match self.0.checked_add(delta.0) {
            Some(s) => Some(Slot(s)),
            None => None,
        }
    }

    /// The distance from `earlier` to this slot, or `None` if `earlier` is later.
    pub const fn checked_since(self, earlier: Slot) -> Option<SlotDelta> {
        match self.0.checked_sub(earlier.0) {
            Some(d) => Some(SlotDelta(d)),
            None => None,
        }
    }
}

impl std::fmt::Display for RegionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "region {}", self.0)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "slot {}", self.0)
    }
}

impl std::fmt::Display for Height {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "height {}", self.0)
    }
}

/// An account, named by the 32-byte Ed25519 verifying key that signs for it.
///
/// JSON form: 64 lowercase hex digits.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, BorshSerialize, BorshDeserialize,
)]
pub struct AccountId(pub [u8; 32]);

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountId({self})")
    }
}

/// Why a string is not an [`AccountId`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("an account id is 64 hex digits")]
pub struct AccountIdError;

impl std::str::FromStr for AccountId {
    type Err = AccountIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(AccountIdError);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(AccountIdError),
        };
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(AccountId(out))
    }
}

impl Serialize for AccountId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as Deserialize>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A point in time: milliseconds since the Unix epoch, as carried by a block.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
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
#[serde(transparent)]
pub struct Timestamp(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_id_hex_round_trips_and_rejects_junk() {
        let id = AccountId([0xab; 32]);
        let hex = id.to_string();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex.parse::<AccountId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), id);
        assert!("ab".parse::<AccountId>().is_err());
        assert!("AB".repeat(32).parse::<AccountId>().is_err());
        assert!("zz".repeat(32).parse::<AccountId>().is_err());
    }
}
