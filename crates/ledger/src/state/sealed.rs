//! Mode B's records: enclaves, committees, sealed books, batches and reports.

use borsh::{BorshDeserialize, BorshSerialize};
use quartier_enclave_proto::committee::{GroupPublicKey, GroupSignature};
use quartier_enclave_proto::report::SlotSummary;
use quartier_enclave_proto::sealed::{Epoch, SealedOrder};
use quartier_types::hash::Digest;
use quartier_types::{AccountId, Energy, Height, Money, RegionId, RegionParams, Slot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A registered auctioneer enclave.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Enclave {
    /// Its X25519 identity key, vouched for by its quote.
    #[serde(with = "quartier_types::hex")]
    pub identity_key: [u8; 32],
    /// The measurement its quote attested.
    pub measurement: quartier_enclave_proto::attestation::Measurement,
    /// Its TEE vendor: the index of the genesis attestation root its quote
    /// verified under.
    pub vendor: u16,
    /// The block that registered it.
    pub registered: Height,
}

/// The enclave committee in office.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Committee {
    /// Its members, ascending.
    pub members: Vec<AccountId>,
    /// The FROST group key.
    pub group_key: GroupPublicKey,
    /// How many members must sign.
    pub threshold: u16,
    /// The block it took office in.
    pub since: Height,
    /// Per region, the prepaid ledger its last report left
    /// (`SlotSummary::ledger`): the next report must clear from it.
    #[serde(default)]
    pub ledgers: BTreeMap<RegionId, Digest>,
    /// Per region, the slot of the last batch closed while it is in
    /// office (each batch names it as its `previous`).
    #[serde(default)]
    pub closed: BTreeMap<RegionId, Slot>,
    /// Members whose measurement was revoked while in office: while any
    /// are, the committee takes no new sealed order, deposit or epoch key
    /// (they would read them) until the validators seat a committee in its
    /// place.
    #[serde(default)]
    pub evicted: Vec<AccountId>,
    /// The first epoch whose key it publishes: a key of an earlier epoch is
    /// a former committee's, whose members may not be this one's, and no
    /// order is sealed to it any more.
    #[serde(default)]
    pub first_epoch: Epoch,
    /// Each member's identity key (its registration's when it took office):
    /// what a successor's members check a handed-over state's sender by,
    /// after the member left the registry.
    #[serde(default)]
    pub identities: Vec<[u8; 32]>,
    /// The committee it took over from: its members hand their clearing
    /// state (the prepaid ledgers and the epoch keys of batches still
    /// waiting) to this one's. Seated in place of a committee that never
    /// reported (so never showed it took its own predecessor's state
    /// over), that committee's predecessor.
    #[serde(default)]
    pub predecessor: Option<Predecessor>,
    /// Per region, the slot of the last report the chain took (this
    /// committee's or a predecessor's): what a member catching up, or
    /// taking over, must have cleared to, kept when the reports
    /// themselves are pruned from history.
    #[serde(default)]
    pub last_reported: BTreeMap<RegionId, Slot>,
    /// Whether this committee posted a report.
    #[serde(default)]
    pub reported: bool,
}

/// The committee a committee in office took over from.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Predecessor {
    /// Its group key (its last reports are signed with it).
    pub group_key: GroupPublicKey,
    /// Its members, ascending.
    pub members: Vec<AccountId>,
    /// Their identity keys, in the same order.
    pub identities: Vec<[u8; 32]>,
}

impl Committee {
    /// Whether members of it were evicted.
    pub fn evicting(&self) -> bool {
        !self.evicted.is_empty()
    }
}

/// A committee whose members all voted for it, waiting for the validators
/// to seat it (`GovernanceChange::SeatCommittee`). One at a time: a later
/// unanimous vote replaces it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CommitteeCandidate {
    /// Its members, ascending.
    pub members: Vec<AccountId>,
    /// The FROST group key.
    pub group_key: GroupPublicKey,
    /// How many members must sign.
    pub threshold: u16,
    /// The block its last member voted in.
    pub voted: Height,
}

/// A member's vote for a committee.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CommitteeVote {
    /// The members voted for.
    pub members: Vec<AccountId>,
    /// The group key voted for.
    pub group_key: GroupPublicKey,
}

/// A sealed order in a book, with the meter that submitted it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SealedEntry {
    /// The submitting meter.
    pub meter: AccountId,
    /// The sealed order.
    pub sealed: SealedOrder,
}

/// Custody movements of one region waiting for the next batch.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct CustodyFlows {
    /// Deposits, in arrival order.
    pub deposits: Vec<(AccountId, Money)>,
    /// Withdrawal requests, in arrival order.
    pub withdrawals: Vec<(AccountId, Money)>,
}

/// One region's slot after its gate: what the enclaves must clear.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SealedBatch {
    /// The region's parameters when the gate closed: the enclaves clear with them.
    pub params: RegionParams,
    /// The sealed orders in arrival order.
    pub orders: Vec<SealedEntry>,
    /// Deposits credited before the orders are opened; withdrawal requests
    /// decided after the slot clears.
    pub flows: CustodyFlows,
    /// The block that closed it.
    pub closed: Height,
    /// Each meter that submitted an order, ascending, with the most it may
    /// sell in the slot: its registered PV over one metering period, zero
    /// for a consumer. The enclaves refuse an order of any other wallet and
    /// a sell above its meter's figure; the chain refuses a report that
    /// sells more than their sum.
    #[serde(default)]
    pub traders: Vec<(AccountId, Energy)>,
    /// Its epoch's key is past the enclaves' erasure schedule (the chain
    /// published a key [`KEPT_EPOCHS_BEHIND`] epochs later while it waited
    /// for its report), or was never published (a batch of custody flows
    /// only): the enclaves clear it with every order refused unopened,
    /// entering no epoch. Set by the chain, so every member decides alike.
    #[serde(default)]
    pub expired: bool,
    /// The region's batch closed before this one (`None` for the first
    /// under the committee): an enclave clears a batch only right after
    /// this one, so a host can not skip one to make its enclave clear a
    /// later one from another prepaid ledger than the committee's.
    #[serde(default)]
    pub previous: Option<Slot>,
}

/// A report the chain accepted.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct PostedReport {
    /// The signed summary.
    pub summary: SlotSummary,
    /// The committee's signature.
    #[serde(with = "quartier_types::hex")]
    pub signature: GroupSignature,
    /// The block that accepted it.
    pub height: Height,
    /// IOUs issued to the utility because its balance could not pay feed-in.
    pub utility_cover: Money,
    /// What the batch showed, kept once its ciphertexts are gone: each
    /// sealed order's submitting meter and size in bytes, in arrival order
    /// (public in the blocks anyway; the mode B auditor reads it).
    #[serde(default)]
    pub submissions: Vec<(AccountId, u32)>,
    /// The batch's deposits and withdrawal requests.
    #[serde(default)]
    pub flows: CustodyFlows,
}
