//! Identifiers and positions in time.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

/// A grid region: one low-voltage network with its own order book per slot.
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
#[serde(transparent)]
pub struct RegionId(pub u32);

/// A market slot: slot `s` covers `[s·Δ, (s+1)·Δ)` for the chain's slot length Δ.
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
#[serde(transparent)]
pub struct Slot(pub u64);

/// A distance between two slots, so that `Slot + Slot` does not compile.
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
#[serde(transparent)]
pub struct SlotDelta(pub u64);

/// A block height on the chain.
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
