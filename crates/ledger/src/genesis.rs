//! The genesis document: who holds which role, the regions and the clock.

use crate::GenesisError;
use borsh::{BorshDeserialize, BorshSerialize};
use quartier_enclave_proto::attestation::{AttestationRoot, Measurement};
use quartier_enclave_proto::sealed::Epoch;
use quartier_types::hash::{self, Digest};
use quartier_types::{AccountId, Money, RegionId, RegionParams, Slot, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Domain tag of the chain id.
pub const TAG_CHAIN_ID: &str = "QUARTIER_LEDGER_CHAIN_ID";

/// The shortest consensus epoch a genesis may set, in blocks (an epoch's
/// last block is proposed again as the next one's first, so a very short
/// epoch spends most of its views on boundaries).
pub const MIN_EPOCH_BLOCKS: u64 = 4;

/// Identifies one chain: the tagged hash of its genesis document. Every
/// transaction names it, so a transaction signed for one chain is void on another.
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
pub struct ChainId(pub Digest);

/// The chain's first state.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// A human name, part of the chain id ("quartier-devnet").
    pub chain_name: String,
    /// The grid operator's account.
    pub dso: AccountId,
    /// The utility's account.
    pub utility: AccountId,
    /// The initial validator set.
    pub validators: Vec<AccountId>,
    /// The regions and their market parameters.
    pub regions: Vec<(RegionId, RegionParams)>,
    /// Slot length Δ in milliseconds (900 000 for 15 minutes).
    pub slot_ms: u64,
    /// How long after a slot ends its orders are still accepted, in milliseconds.
    pub gate_ms: u64,
    /// How many slots ahead of the current one orders are accepted.
    pub lead_slots: u64,
    /// The metered interval a slot stands for, in milliseconds (900 000: the
    /// energy of 15 minutes). Equal to `slot_ms` on a real chain; a devnet that
    /// accelerates time has a shorter `slot_ms` for the same metered interval.
    pub metered_ms: u64,
    /// Initial balances (part of the IOU supply from the start).
    pub allocations: Vec<(AccountId, Money)>,
    /// Privacy mode B: the enclave policy; `None` disables sealed orders.
    #[serde(default)]
    pub sealed_market: Option<SealedMarketPolicy>,
    /// Privacy mode A: the shielded pool's policy; `None` disables it.
    #[serde(default)]
    pub shielded: Option<crate::ShieldedPolicy>,
    /// How many slots a settlement (and a mode B report) stays in the state
    /// after its slot; older ones are dropped at the next block, their orders
    /// kept only by archive nodes' blocks. 0 keeps them forever.
    #[serde(default)]
    pub history_slots: u64,
    /// What the roles may do without a vote: the utility's minting per
    /// period and the PV capacity the DSO registers (governance changes
    /// them, [`crate::GovernanceChange::SetLimits`]).
    #[serde(default)]
    pub limits: Limits,
    /// Consensus epochs: blocks per epoch. The validator set the ledger
    /// holds after the last block of an epoch signs the next epoch (a
    /// governance change to it takes effect at the next boundary); 0: one
    /// epoch for the chain's life, and the genesis validators sign it for
    /// good (a change then moves only the governance votes).
    #[serde(default)]
    pub epoch_blocks: u64,
}

/// Bounds on the roles' power that only a vote lifts: a leaked utility key
/// mints at most `mint_per_period` a period, a leaked DSO key registers no
/// PV beyond `max_pv_watts` (DESIGN §14: the utility and the DSO are
/// trusted for their roles, not beyond).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most the utility mints per period without a vote
    /// ([`crate::GovernanceChange::ApproveMint`] adds to it); `None`: no
    /// cap.
    #[serde(default)]
    pub mint_per_period: Option<Money>,
    /// The period, in slots (from slot 0; at least 1 when there is a cap).
    #[serde(default)]
    pub period_slots: u64,
    /// The largest PV capacity (watts peak) the DSO registers without a
    /// vote ([`crate::GovernanceChange::ApprovePv`]); `None`: no bound.
    #[serde(default)]
    pub max_pv_watts: Option<u32>,
    /// The most PV capacity (watts peak, all meters together) the DSO
    /// registers per period without a vote: many meters at the bound each
    /// are still bounded; `None`: no bound.
    #[serde(default)]
    pub new_pv_watts_per_period: Option<u64>,
    /// The highest grid tariff the utility sets without a vote (feed-in is
    /// at most the grid tariff, and feed-in the utility can not pay is
    /// issued to it as cover: an unbounded tariff would mint through
    /// cover); `None`: no bound.
    #[serde(default)]
    pub max_grid_tariff: Option<quartier_types::Price>,
}

impl Limits {
    /// Whether the limits are consistent: a cap per period needs a period.
    pub fn valid(&self) -> bool {
        (self.mint_per_period.is_none() && self.new_pv_watts_per_period.is_none())
            || self.period_slots > 0
    }
}

/// How a chain admits auctioneer enclaves (privacy mode B, DESIGN §7).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedMarketPolicy {
    /// Who signs quotes: one root per TEE vendor (only simulated backends
    /// exist here); an enclave's vendor is the index of its quote's root.
    pub attestation: Vec<AttestationRoot>,
    /// Which vendor mixes a committee may have.
    #[serde(default)]
    pub vendors: quartier_enclave_proto::attestation::VendorPolicy,
    /// Measurements allowed from the start; governance adds and revokes more.
    pub measurements: Vec<Measurement>,
    /// How many committee members must sign a report or an epoch key.
    pub threshold: u16,
    /// Slots per epoch key: households seal slot `s` to epoch `s / epoch_slots`.
    pub epoch_slots: u64,
    /// How the chain's first committee takes office. Every later one needs
    /// a `SeatCommittee` vote, except one that re-forms from the committee
    /// in office without the members a revocation evicted.
    #[serde(default)]
    pub first_committee: FirstCommittee,
}

/// How a chain's first enclave committee takes office.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
pub enum FirstCommittee {
    /// Once all its members voted for it: registered enclaves of an allowed
    /// measurement in the vendor mix the policy asks (the genesis, which the
    /// prosumers agreed to, is the vote in advance).
    #[default]
    ByItsMembers = 0,
    /// Only once the validators seat it (`GovernanceChange::SeatCommittee`).
    ByVote = 1,
}

impl SealedMarketPolicy {
    /// The epoch whose key seals orders for `slot`.
    pub fn epoch_of(&self, slot: Slot) -> Epoch {
        Epoch(slot.0 / self.epoch_slots.max(1))
    }
}

impl Genesis {
    /// A chain named `chain_name` with these roles and validators and the
    /// everyday rest: 15-minute slots standing for 15 metered minutes,
    /// orders accepted one slot ahead and up to a minute after a slot, no
    /// region, no allocation, neither privacy mode, every settlement kept,
    /// the default limits and one consensus epoch for ever. Change fields
    /// with struct update syntax (`Genesis { regions, ..Genesis::new(…) }`).
    pub fn new(
        chain_name: impl Into<String>,
        dso: AccountId,
        utility: AccountId,
        validators: Vec<AccountId>,
    ) -> Genesis {
        Genesis {
            chain_name: chain_name.into(),
            dso,
            utility,
            validators,
            regions: vec![],
            slot_ms: 900_000,
            gate_ms: 60_000,
            lead_slots: 1,
            metered_ms: 900_000,
            allocations: vec![],
            sealed_market: None,
            shielded: None,
            history_slots: 0,
            limits: Limits::default(),
            epoch_blocks: 0,
        }
    }

    /// The chain id: the tagged hash of the canonical bytes of this document.
    pub fn chain_id(&self) -> ChainId {
        ChainId(hash::tagged(TAG_CHAIN_ID, &[&crate::canonical(self)]))
    }

    /// Checks the document's invariants.
    ///
    /// # Errors
    /// The first [`GenesisError`] found.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let distinct = self.validators.iter().collect::<BTreeSet<_>>().len();
        if self.validators.is_empty() || distinct != self.validators.len() {
            return Err(GenesisError::Validators);
        }
        let regions = self.regions.iter().map(|(r, _)| r).collect::<BTreeSet<_>>();
        if regions.len() != self.regions.len() {
            return Err(GenesisError::DuplicateRegion);
        }
        if self.epoch_blocks != 0 && self.epoch_blocks < MIN_EPOCH_BLOCKS {
            return Err(GenesisError::EpochBlocks);
        }
        if self.slot_ms == 0 || self.metered_ms == 0 {
            return Err(GenesisError::SlotLength);
        }
        if self.dso == self.utility {
            return Err(GenesisError::Roles);
        }
        if !self.limits.valid()
            || self
                .limits
                .max_grid_tariff
                .is_some_and(|max| self.regions.iter().any(|(_, p)| p.grid_tariff() > max))
        {
            return Err(GenesisError::Limits);
        }
        let accounts = self
            .allocations
            .iter()
            .map(|(a, _)| a)
            .collect::<BTreeSet<_>>();
        let total = self
            .allocations
            .iter()
            .try_fold(Money::ZERO, |sum, (_, m)| sum.checked_add(*m));
        if accounts.len() != self.allocations.len() || total.is_none() {
            return Err(GenesisError::Allocations);
        }
        if let Some(policy) = &self.shielded
            && !(2..=255).contains(&policy.ring_size)
        {
            return Err(GenesisError::ShieldedPool);
        }
        if let Some(policy) = &self.sealed_market
            && (policy.threshold < 2
                || policy.epoch_slots == 0
                // An epoch key is published one slot ahead of the lead, and
                // the chain takes keys up to the epoch after a block's own:
                // with a longer lead the hosts would ask for a key the chain
                // refuses, and the first slots of an epoch would find none.
                || self.lead_slots >= policy.epoch_slots
                || policy.attestation.is_empty()
                // A vendor listed twice would count as two.
                || policy
                    .attestation
                    .iter()
                    .enumerate()
                    .any(|(i, r)| policy.attestation[..i].contains(r))
                || usize::from(policy.vendors.min_vendors) > policy.attestation.len()
                || self.regions.len() > crate::MAX_SEALED_REGIONS)
        {
            return Err(GenesisError::SealedMarket);
        }
        if self.sealed_market.is_some() && self.shielded.is_some() {
            // A meter could place a sealed and a shielded order in one slot.
            return Err(GenesisError::TwoPrivacyModes);
        }
        Ok(())
    }

    /// The slot that contains time `t`.
    pub fn slot_at(&self, t: Timestamp) -> Slot {
        Slot(t.0 / self.slot_ms.max(1))
    }

    /// The first time at which orders for `slot` are refused and its book clears:
    /// `(slot + 1)·Δ + gate`, saturating at the end of time.
    pub fn close_of(&self, slot: Slot) -> Timestamp {
        let end = slot.0.saturating_add(1).saturating_mul(self.slot_ms);
        Timestamp(end.saturating_add(self.gate_ms))
    }
}

/// The most regions a mode B chain may have: each member keeps the reports
/// of every region's recent slots until they are signed.
pub const MAX_SEALED_REGIONS: usize = 16;

/// How this chain runs mode A, fixed at genesis.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct ShieldedPolicy {
    /// Members of every funds ring: the real output and `ring_size − 1` decoys.
    pub ring_size: u16,
}
