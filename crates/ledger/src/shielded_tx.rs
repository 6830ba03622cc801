//! Mode A's transaction formats: shielded transfers, orders and allowances,
//! and the prefixes their ring signatures sign.

use crate::{ChainId, canonical};
use borsh::{BorshDeserialize, BorshSerialize};
use quartier_shielded::authorise::{self, Authorisation, Scope};
use quartier_shielded::keys::Address;
use quartier_shielded::output::Output;
use quartier_types::hash::{self};
use quartier_types::{AccountId, Energy, Money, Price, RegionId, Side, Slot};
use serde::{Deserialize, Serialize};

/// Domain tag of the message a shielded transfer's ring signatures sign.
pub const TAG_SHIELDED_PREFIX: &str = "QUARTIER_LEDGER_SHIELDED_PREFIX";
/// The most inputs one shielded transaction spends.
pub const MAX_SHIELDED_INPUTS: usize = 4;

/// One spent input: its ring as pool indices, its key image, pseudo-output
/// and CLSAG.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ShieldedInput {
    /// The ring's pool indices, strictly increasing.
    pub ring: Vec<u64>,
    /// The key image.
    #[serde(with = "quartier_types::hex")]
    pub key_image: [u8; 32],
    /// The pseudo-output commitment.
    #[serde(with = "quartier_types::hex")]
    pub pseudo_out: [u8; 32],
    /// The CLSAG, monero's encoding.
    #[serde(with = "quartier_types::hex")]
    pub signature: Vec<u8>,
}

/// Inputs spent into range-proved outputs.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ShieldedTransfer {
    /// The inputs.
    pub inputs: Vec<ShieldedInput>,
    /// The new outputs (at least one: change may be zero).
    pub outputs: Vec<Output>,
    /// One Bulletproof+ over the outputs' commitments.
    #[serde(with = "quartier_types::hex")]
    pub range_proof: Vec<u8>,
}

/// What a shielded transfer's signatures bind: everything but the CLSAGs.
#[derive(BorshSerialize)]
struct Prefix<'a> {
    chain_id: ChainId,
    signer: AccountId,
    kind: &'static str,
    rings: Vec<(&'a [u64], &'a [u8; 32])>,
    outputs: &'a [Output],
    range_proof: &'a [u8],
    public: u64,
    to: Option<AccountId>,
}

impl ShieldedTransfer {
    /// The 32-byte message its ring signatures sign: the chain, the
    /// one-time key that signs the transaction, the kind of transaction,
    /// every ring and key image, the outputs, the range proof, the public
    /// amount and its recipient. (Pseudo-outputs are chosen while signing;
    /// each CLSAG binds its own.)
    pub fn prefix_hash(
        &self,
        (chain_id, signer): (ChainId, AccountId),
        kind: &'static str,
        public: Money,
        to: Option<AccountId>,
    ) -> [u8; 32] {
        let prefix = Prefix {
            chain_id,
            signer,
            kind,
            rings: self
                .inputs
                .iter()
                .map(|i| (i.ring.as_slice(), &i.key_image))
                .collect(),
            outputs: &self.outputs,
            range_proof: &self.range_proof,
            public: public.get(),
            to,
        };
        hash::tagged(TAG_SHIELDED_PREFIX, &[&canonical(&prefix)]).0
    }
}

/// The kind names bound into the prefix.
pub const KIND_TRANSFER: &str = "transfer";
/// See [`KIND_TRANSFER`].
pub const KIND_UNSHIELD: &str = "unshield";

/// A transfer's or unshield's right to run: a registered meter of `region`
/// authorises one per `slot` (the block's slot or the one before), so a
/// flood of one-time transactions is bounded by the meters' count.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Allowance {
    /// The meter's region.
    pub region: RegionId,
    /// The slot it is spent in.
    pub slot: Slot,
    /// The ring signature over the region's meters, scope
    /// (chain, region, slot, transfer), message the transfer's prefix.
    pub authorisation: Authorisation,
}

/// The scope of an authorisation on this chain.
pub fn scope(chain_id: ChainId, region: RegionId, slot: Slot, purpose: u8) -> Scope {
    Scope {
        chain_id: chain_id.0.0,
        region: region.0,
        slot: slot.0,
        purpose,
    }
}

/// The kind name of an order's prefix.
pub const KIND_ORDER: &str = "order";

/// A shielded order: public price and amount, hidden originator.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ShieldedOrder {
    /// The region.
    pub region: RegionId,
    /// The slot.
    pub slot: Slot,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub limit: Price,
    /// Energy (zero for a cover order).
    pub energy: Energy,
    /// A buy's funds: pool outputs spent into the escrow (the public amount,
    /// `energy × grid tariff`) and change. `None` for sells and empty buys.
    pub funds: Option<ShieldedTransfer>,
    /// The fresh stealth address settlement pays proceeds or the refund to.
    pub payee: Address,
    /// The meter's ring signature over the region's meters (prosumers for a
    /// sell), tweaked per (region, slot, side).
    pub authorisation: Authorisation,
}

#[derive(BorshSerialize)]
struct OrderPrefix<'a> {
    chain_id: ChainId,
    signer: AccountId,
    kind: &'static str,
    region: RegionId,
    slot: Slot,
    side: Side,
    limit: Price,
    energy: Energy,
    escrow: u64,
    payee: &'a Address,
    funds: Option<[u8; 32]>,
}

impl ShieldedOrder {
    /// The message both the funds' and the authorisation's ring signatures
    /// sign: the chain, the one-time key signing the transaction, the order,
    /// its escrow, its payee and the funds' own prefix.
    pub fn prefix_hash(&self, (chain_id, signer): (ChainId, AccountId), escrow: Money) -> [u8; 32] {
        let prefix = OrderPrefix {
            chain_id,
            signer,
            kind: KIND_ORDER,
            region: self.region,
            slot: self.slot,
            side: self.side,
            limit: self.limit,
            energy: self.energy,
            escrow: escrow.get(),
            payee: &self.payee,
            funds: self
                .funds
                .as_ref()
                .map(|f| f.prefix_hash((chain_id, signer), KIND_ORDER, escrow, None)),
        };
        hash::tagged(TAG_SHIELDED_PREFIX, &[&canonical(&prefix)]).0
    }
}

/// The side's byte in the authorisation tweak.
pub fn side_byte(side: Side) -> u8 {
    match side {
        Side::Buy => authorise::PURPOSE_BUY,
        Side::Sell => authorise::PURPOSE_SELL,
    }
}
