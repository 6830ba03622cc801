//! What a block gives the transactions it carries (its height and time) and
//! what it reports besides their direct effects (events).

use crate::tx::GovernanceChange;
use quartier_types::{AccountId, Energy, Height, Money, RegionId, Slot, Timestamp};
use serde::{Deserialize, Serialize};

/// What the block being executed says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockContext {
    /// The block's height.
    pub height: Height,
    /// The block's time.
    pub time: Timestamp,
}

/// Something that happened in a block that is not a transaction's direct effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A book cleared and settled.
    SlotSettled {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
        /// Orders in the book.
        orders: u32,
        /// Energy traded locally.
        local_energy: Energy,
    },
    /// A book could not be cleared (an invariant failed); every escrow was refunded.
    SlotVoided {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
    },
    /// The utility's balance could not pay feed-in; this much was issued to it.
    UtilityCovered {
        /// The amount issued.
        amount: Money,
    },
    /// A governance change passed.
    GovernanceChanged {
        /// The change.
        change: GovernanceChange,
    },
    /// Mode B: an enclave registered.
    EnclaveRegistered {
        /// Its account.
        enclave: AccountId,
    },
    /// Mode B: a committee's members all voted for it; it waits for the
    /// validators to seat it.
    CommitteeCandidate {
        /// Its group key.
        group_key: quartier_enclave_proto::committee::GroupPublicKey,
    },
    /// Mode B: a committee took office.
    CommitteeActivated {
        /// Its group key.
        group_key: quartier_enclave_proto::committee::GroupPublicKey,
    },
    /// Mode B: a slot's report was accepted and its money moved.
    SealedSlotSettled {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
        /// Sealed orders in the batch.
        orders: u32,
        /// Energy traded locally.
        local_energy: Energy,
    },
}
