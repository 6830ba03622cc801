//! Mode A's records: the pool's outputs.

use borsh::{BorshDeserialize, BorshSerialize};
use quartier_shielded::output::Output;
use quartier_types::{Height, Money, Slot};
use serde::{Deserialize, Serialize};

/// An output in the pool with the block that created it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct PoolOutput {
    /// The output.
    pub output: Output,
    /// The block it was created in.
    pub height: Height,
    /// The slot of that block's time: the clock a wallet measures an
    /// output's age in when it draws decoys.
    pub slot: Slot,
    /// Its amount when the chain shows it (a shielding's, or a settlement's
    /// payment, computed from the public book); `None` when only its owner
    /// knows it. Wallets draw decoys an observer with these amounts can not
    /// rule out.
    pub public_amount: Option<Money>,
    /// For a settlement's payment: the slot it settles. A wallet derives
    /// its payee keys per slot, so this is how a restored wallet finds its
    /// proceeds and refunds without scanning with every slot's keys.
    pub settles: Option<Slot>,
}
