//! Why a transaction or a genesis is rejected.

use quartier_enclave_proto::attestation::AttestationError;
use quartier_types::{Energy, Money, Price, RegionId, Slot};

/// The roles that transactions are authorised by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub enum Role {
    /// The grid operator: registers meters, sets the local fee.
    Dso,
    /// The utility: issues IOUs, sets tariffs.
    Utility,
    /// A registered, active meter.
    Meter,
    /// A meter registered with PV capacity: the only kind that may sell.
    Prosumer,
    /// A member of the validator set.
    Validator,
    /// A registered auctioneer enclave (mode B).
    Enclave,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Dso => "DSO",
            Role::Utility => "utility",
            Role::Meter => "registered meter",
            Role::Prosumer => "prosumer meter",
            Role::Validator => "validator",
            Role::Enclave => "registered enclave",
        })
    }
}

/// Why a transaction was rejected. A rejected transaction changes nothing.
///
/// Grouped by cause: the envelope (bytes, signature, chain, nonce), the signer's
/// authority, and the body's content against the current state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    // --- envelope ---
    /// The bytes are not a canonical transaction or exceed the size limit.
    #[error("malformed transaction")]
    Malformed,
    /// The signature does not verify for the signer's key.
    #[error("invalid signature")]
    BadSignature,
    /// The transaction was signed for another chain.
    #[error("transaction is for another chain")]
    WrongChain,
    /// The nonce is not the signer's next nonce (a replay or a gap).
    #[error("bad nonce: expected {expected}, got {got}")]
    BadNonce {
        /// The signer's next nonce.
        expected: u64,
        /// The nonce in the transaction.
        got: u64,
    },

    // --- authority ---
    /// The utility's mint would exceed the period's cap and what votes
    /// approved beyond it.
    #[error("mint above the period's cap ({cap} µRp, {minted} minted): needs a vote")]
    MintCap {
        /// The cap per period.
        cap: Money,
        /// Minted this period so far.
        minted: Money,
    },
    /// The PV capacity is above the chain's bound and no vote approved it
    /// for this meter.
    #[error("PV capacity above the bound of {bound} W: needs a vote")]
    PvAboveBound {
        /// The bound.
        bound: u32,
    },
    /// The grid tariff is above the chain's bound (a vote raises it).
    #[error("grid tariff above the bound of {bound:?}: needs a vote")]
    TariffAboveBound {
        /// The bound.
        bound: Price,
    },
    /// The PV capacity registered this period would exceed the period's
    /// cap (a vote approves a meter above it).
    #[error("PV registered this period would exceed {cap} W: needs a vote")]
    NewPvCap {
        /// The cap per period.
        cap: u64,
    },
    /// The signer's key holds a role that governance froze: every
    /// transaction it signs is refused until the role has a new key.
    #[error("the signer's role is frozen by governance")]
    Frozen,
    /// The signer lacks the role this transaction needs.
    #[error("not authorised: needs the {role} role")]
    NotAuthorised {
        /// The role needed.
        role: Role,
    },

    // --- content ---
    /// The meter named or signing is not registered.
    #[error("unknown meter")]
    UnknownMeter,
    /// The meter was retired and can no longer trade or be re-registered.
    #[error("meter is retired")]
    MeterRetired,
    /// The key is already registered as a meter.
    #[error("meter already registered")]
    AlreadyRegistered,
    /// A consumer must have no PV capacity, a prosumer some.
    #[error("PV capacity does not match the meter's role")]
    CapacityMismatch,
    /// The region does not exist.
    #[error("unknown region {0}")]
    UnknownRegion(RegionId),
    /// The meter is registered in another region than the order's.
    #[error("meter is registered in another region")]
    WrongRegion,
    /// The slot's gate has closed.
    #[error("{slot} is closed for orders")]
    SlotClosed {
        /// The slot.
        slot: Slot,
    },
    /// The slot is too far in the future to accept orders yet.
    #[error("{slot} is not open for orders yet")]
    SlotNotOpen {
        /// The slot.
        slot: Slot,
    },
    /// The meter already has an order on this side of this slot.
    #[error("duplicate order for this meter, slot and side")]
    DuplicateOrder,
    /// No such order to cancel.
    #[error("no such order")]
    NoSuchOrder,
    /// The limit lies outside the region's `[feed_in_tariff, grid_tariff]`.
    #[error("limit {limit} outside [{min}, {max}]")]
    LimitOutOfRange {
        /// The order's limit.
        limit: Price,
        /// The feed-in tariff.
        min: Price,
        /// The grid tariff.
        max: Price,
    },
    /// A sell offers more energy than the meter's PV can produce in one slot.
    #[error("sell of {energy} exceeds the PV capacity of {max} per slot")]
    ExceedsCapacity {
        /// The energy offered.
        energy: Energy,
        /// The most the registered PV can produce in a slot.
        max: Energy,
    },
    /// The signer's balance does not cover the amount.
    #[error("insufficient funds: needs {needed}, has {available}")]
    InsufficientFunds {
        /// What the transaction needs.
        needed: Money,
        /// What the signer has.
        available: Money,
    },
    /// An amount of zero where a positive one is required.
    #[error("amount must be positive")]
    ZeroAmount,
    /// A transfer to the signer's own account.
    #[error("transfer to self")]
    SelfTransfer,
    /// The tariffs are inadmissible (feed-in above grid).
    #[error("invalid tariffs: {0}")]
    InvalidTariffs(quartier_types::ParamsError),
    /// The proposal does not exist or is already decided.
    #[error("unknown or decided proposal")]
    UnknownProposal,
    /// The validator already voted on this proposal.
    #[error("already voted")]
    AlreadyVoted,
    /// The validator has joined already, or signs the current epoch.
    #[error("this validator has joined already")]
    AlreadyJoined,
    /// The validator change can not apply to the current set.
    #[error("validator change does not apply to the current set")]
    InvalidProposal,
    /// An amount would overflow 64 bits.
    #[error("amount overflows")]
    Overflow,

    // --- privacy mode B ---
    /// This chain has no sealed market (no enclave policy at genesis).
    #[error("this chain has no sealed market")]
    NoSealedMarket,
    /// The quote is refused: bad signature, unknown measurement, wrong backend.
    #[error("attestation refused: {0}")]
    Attestation(AttestationError),
    /// The quote's report data is not `identity_key ‖ signer`.
    #[error("quote does not vouch for this identity key and account")]
    QuoteBinding,
    /// The enclave account is already registered.
    #[error("enclave already registered")]
    EnclaveRegistered,
    /// The committee is malformed: unsorted or duplicate members, an
    /// unregistered member, the signer not among them, or fewer than the threshold.
    #[error("invalid committee")]
    InvalidCommittee,
    /// The committee's members break the chain's vendor policy (too few
    /// TEE vendors, or one vendor holding the threshold).
    #[error("the committee breaks the TEE vendor policy")]
    VendorPolicy,
    /// No committee has taken office yet.
    #[error("no enclave committee in office")]
    NoCommittee,
    /// Members of the committee in office were evicted (their measurement
    /// was revoked): no new sealed order, deposit or epoch key until a
    /// committee without them takes office (they could read them).
    #[error("the enclave committee in office has evicted members")]
    CommitteeEvicting,
    /// [`crate::MAX_CANDIDATES`] committee candidates wait, each named by an
    /// open `SeatCommittee` proposal.
    #[error("too many committee candidates wait for a vote")]
    CandidatesFull,
    /// The epoch's key is a former committee's: orders are sealed only to
    /// keys the committee in office made.
    #[error("epoch {0} was keyed by a former committee")]
    FormerCommitteeEpoch(u64),
    /// The epoch is past the one after the block's: its key is published
    /// only when its time comes.
    #[error("epoch {0} is too far ahead")]
    EpochTooFar(u64),
    /// The epoch is not later than the last published one.
    #[error("epoch {0} is not later than the last published")]
    StaleEpoch(u64),
    /// The sealed order names an epoch whose key was never published.
    #[error("no key published for epoch {0}")]
    UnknownEpoch(u64),
    /// The sealed ciphertext does not have the one fixed size.
    #[error("sealed order has the wrong size")]
    SealedOrderSize,
    /// The committee's signature does not verify.
    #[error("invalid committee signature")]
    InvalidGroupSignature,
    /// No closed batch of sealed orders waits for this report.
    #[error("no sealed batch awaits a report for this region and slot")]
    NoSuchBatch,
    /// An earlier slot of the region still awaits its report.
    #[error("an earlier slot of the region awaits its report")]
    ReportOutOfOrder,
    /// The report does not fit its batch: order count, unbalanced totals, a
    /// payout nobody requested, or more money out than custody holds.
    #[error("report does not fit its batch")]
    ReportMismatch,

    // --- privacy mode A ---
    /// This chain has no shielded pool.
    #[error("this chain has no shielded pool")]
    NoShieldedPool,
    /// A shielding output's keys do not decode or its commitment does not
    /// open to the amount and mask revealed.
    #[error("shielded output does not open to the shielded amount")]
    InvalidShieldedOutput,
    /// Wrong input or output count, ring size, ring order or a ring index
    /// not in the pool, or a nonce other than 0 from the one-time signer.
    #[error("malformed shielded transfer")]
    InvalidShieldedTransfer,
    /// A key image was already spent (a double spend), or twice in one transaction.
    #[error("key image already spent")]
    KeyImageSpent,
    /// A ring signature does not verify.
    #[error("invalid ring signature")]
    InvalidRingSignature,
    /// The range proof does not verify for the outputs.
    #[error("invalid range proof")]
    InvalidRangeProof,
    /// Inputs and outputs do not balance with the public amount.
    #[error("inputs and outputs do not balance")]
    Unbalanced,
    /// A new output's one-time key is already in the pool, or twice in
    /// the transaction.
    #[error("an output's one-time key is already in the pool")]
    DuplicateOutputKey,
    /// A transfer's allowance names a slot other than the block's or the
    /// one before.
    #[error("the allowance of slot {slot} is not valid now")]
    AllowanceExpired {
        /// The slot it names.
        slot: Slot,
    },
    /// This meter already used its allowance of that slot.
    #[error("this meter already moved shielded funds in that slot")]
    AllowanceUsed,
    /// A meter's key must be a prime-order point: mode A's rings are built
    /// over the registered keys, and one undecodable key would break them all.
    #[error("a meter key must be a valid prime-order public key")]
    InvalidMeterKey,
    /// On a chain with a shielded pool, meters place shielded orders only
    /// (a public order beside a shielded one would trade twice in a slot).
    #[error("this chain takes shielded orders only")]
    ShieldedOrdersOnly,
}

/// Why a genesis document is not admissible.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    /// The validator set is empty or has duplicates.
    #[error("validators must be non-empty and distinct")]
    Validators,
    /// Two regions share an id.
    #[error("duplicate region")]
    DuplicateRegion,
    /// Slot length or metered interval zero.
    #[error("slot length and metered interval must be positive")]
    SlotLength,
    /// Two allocations to one account, or their sum overflows.
    #[error("allocations must name distinct accounts and fit in 64 bits")]
    Allocations,
    /// The DSO and the utility must be distinct accounts.
    #[error("DSO and utility must be distinct")]
    Roles,
    /// The mode A ring size must be 2 to 255 (`monero-clsag`'s limit).
    #[error("shielded ring size must be 2 to 255")]
    ShieldedPool,
    /// The mode B policy needs a threshold of at least 2 and epochs of at least one slot.
    #[error("sealed market policy needs threshold >= 2 and epoch_slots >= 1")]
    SealedMarket,
    /// A chain runs one privacy mode: mode A or mode B, not both.
    #[error("a chain runs mode A (shielded) or mode B (sealed), not both")]
    TwoPrivacyModes,
    /// A mint cap needs a period of at least one slot.
    #[error("a mint cap needs period_slots >= 1")]
    Limits,
    /// Consensus epochs are too short.
    #[error("epoch_blocks must be 0 (one epoch) or at least 4")]
    EpochBlocks,
}

/// Why a state snapshot can not be taken or loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The state has uncommitted changes (caller misuse).
    #[error("the state has uncommitted changes")]
    Uncommitted,
    /// The bytes are not a snapshot (local corruption).
    #[error("malformed snapshot")]
    Malformed,
    /// The records do not give the recorded root (local corruption).
    #[error("snapshot records do not match its root")]
    RootMismatch,
}

pub(crate) fn require(ok: bool, role: Role) -> Result<(), TxError> {
    if ok {
        Ok(())
    } else {
        Err(TxError::NotAuthorised { role })
    }
}
