//! The contract's state, its keys in the Merkle tree, and proofs.

mod sealed;
mod shielded;

use crate::SignedTx;
use crate::TxError;
use crate::VerifiedTx;
use crate::merkle::{MerkleStore, MerkleStoreCorrupt};
use crate::verified::ProofMemo;
use crate::{
    Authority, ChainId, Genesis, GenesisError, GovernanceChange, MeterRole, SnapshotError,
    canonical,
};
use borsh::{BorshDeserialize, BorshSerialize};
use jmt::KeyHash;
use quartier_auction::Clearing;
use quartier_enclave_proto::attestation::Measurement;
use quartier_enclave_proto::committee::GroupPublicKey;
use quartier_enclave_proto::sealed::Epoch;
use quartier_types::hash::Digest;
use quartier_types::{
    AccountId, Energy, Height, Money, Order, RegionId, RegionParams, Slot, Timestamp,
};
pub use sealed::{
    Committee, CommitteeCandidate, CommitteeVote, CustodyFlows, Enclave, PostedReport, Predecessor,
    SealedBatch, SealedEntry,
};
use serde::{Deserialize, Serialize};
pub use shielded::PoolOutput;
use std::collections::{BTreeMap, BTreeSet};

/// An account's IOU balance and its count of accepted transactions.
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
pub struct Account {
    /// Spendable IOUs (escrowed funds are not included).
    pub balance: Money,
    /// The nonce the account's next transaction must carry.
    pub nonce: u64,
}

/// A registered meter.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Meter {
    /// The grid region it trades in.
    pub region: RegionId,
    /// Consumer or prosumer.
    pub role: MeterRole,
    /// PV capacity in watts peak.
    pub pv_watts: u32,
    /// Retired meters place no new orders.
    pub retired: bool,
}

/// An order in a book, with its owner and the escrow it locked.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct BookOrder {
    /// The meter that placed it and gets paid or refunded.
    pub meter: AccountId,
    /// The order.
    pub order: Order,
    /// Funds locked: `energy × grid_tariff` for a buy, zero for a sell.
    pub escrow: Money,
    /// Mode A: the stealth address settlement pays and the authorisation's
    /// key image; `None` for a public meter's order (then `meter` is paid).
    #[serde(default)]
    pub shielded: Option<ShieldedPayee>,
}

/// Where a shielded order is paid, and what made it unique in its book.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct ShieldedPayee {
    /// The fresh stealth address proceeds or the refund go to.
    pub payee: quartier_shielded::keys::Address,
    /// The key image of the order's authorisation (one per meter, slot and side).
    #[serde(with = "quartier_types::hex")]
    pub key_image: [u8; 32],
}

/// An open book: one region's orders for one slot, in arrival order.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Book {
    /// The region's parameters when the book opened; they hold until it clears,
    /// so escrow computed at placement always covers the bill.
    pub params: RegionParams,
    /// Orders in arrival order (block height, then position in the block).
    pub orders: Vec<BookOrder>,
}

/// A cleared book: its orders, the clearing, and what the utility had to cover.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Settlement {
    /// The region.
    pub region: RegionId,
    /// The slot.
    pub slot: Slot,
    /// The block that settled it.
    pub height: Height,
    /// The parameters it cleared with.
    pub params: RegionParams,
    /// The orders in arrival order; `clear(params, orders)` gives `clearing`.
    pub orders: Vec<BookOrder>,
    /// The result of the auction.
    pub clearing: Clearing,
    /// IOUs issued to the utility because its balance could not pay feed-in.
    pub utility_cover: Money,
}

/// The key holding a role ([`Authority`]) now.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AuthorityKey {
    /// The key: it signs the role's transactions and its account receives
    /// the role's market flows.
    pub key: AccountId,
    /// Frozen by governance: every transaction `key` signs is refused.
    pub frozen: bool,
    /// The block from which `key` holds the role (0: since genesis).
    pub since: Height,
}

/// The validators that sign consensus from an epoch on (until the next
/// entry's).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ValidatorSet {
    /// The first consensus epoch they sign.
    pub from_epoch: u64,
    /// Their keys.
    pub validators: BTreeSet<AccountId>,
}

impl AuthorityKey {
    /// A genesis key, not frozen.
    pub fn genesis(key: AccountId) -> AuthorityKey {
        AuthorityKey {
            key,
            frozen: false,
            since: Height(0),
        }
    }
}

/// The roles' limits and what counts against them.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Issuance {
    /// The limits in force.
    pub limits: crate::Limits,
    /// The period `minted` counts in (slot / `period_slots`).
    pub period: u64,
    /// What the utility minted in `period`.
    pub minted: Money,
    /// What votes approved beyond the cap in `period` and mints have not
    /// used yet (gone with the period: an old approval never serves a key
    /// that leaks later).
    pub allowance: Money,
    /// PV capacity registered without a vote in `period`, watts peak.
    pub pv_registered: u64,
    /// PV capacities votes approved above the bound, by meter (used once,
    /// by its registration).
    pub pv_approved: BTreeMap<AccountId, u32>,
}

/// An open proposal to change the validator set.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Proposal {
    /// The change.
    pub change: GovernanceChange,
    /// When it was made: it lapses [`Proposal::LIFETIME_SLOTS`] slots later
    /// (left-over votes do not wait for a later majority).
    pub opened: quartier_types::Timestamp,
    /// Validators in favour.
    pub yes: BTreeSet<AccountId>,
    /// Validators against.
    pub no: BTreeSet<AccountId>,
}

impl Proposal {
    /// How long a proposal stays open, in slots (a day of quarter hours).
    pub const LIFETIME_SLOTS: u64 = 96;
}

/// Chain-wide counters.
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
pub struct Meta {
    /// The last applied block.
    pub height: Height,
    /// Its time.
    pub time: Timestamp,
    /// IOUs in existence: all balances plus all escrow.
    pub supply: Money,
    /// IOUs locked in open books.
    pub escrow: Money,
    /// All IOUs ever issued (genesis allocations, `Mint`, utility cover).
    pub issued: Money,
    /// All IOUs ever redeemed.
    pub redeemed: Money,
    /// The id of the next proposal.
    pub next_proposal: u64,
    /// IOUs in the mode B enclaves' custody (prepaid balances and their escrow).
    pub custody: Money,
    /// IOUs in the mode A shielded pool (shielded less unshielded).
    pub shielded: Money,
}

/// A key of the state in the Merkle tree. Its borsh bytes, hashed, are the
/// tree key; the value is the borsh bytes of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize)]
pub enum StateKey {
    /// The genesis document.
    Genesis,
    /// The chain-wide counters.
    Meta,
    /// The validator set.
    Validators,
    /// An account.
    Account(AccountId),
    /// A meter registration.
    Meter(AccountId),
    /// A region's current parameters.
    Region(RegionId),
    /// An open book.
    Book(RegionId, Slot),
    /// A settlement.
    Settlement(RegionId, Slot),
    /// A governance proposal.
    Proposal(u64),
    /// Mode B: the allowed enclave measurements.
    Measurements,
    /// Mode B: a registered enclave.
    Enclave(AccountId),
    /// Mode B: the committee in office.
    Committee,
    /// Mode B: a member's vote for a committee.
    CommitteeVote(AccountId),
    /// Mode B: the recent epoch keys.
    Epochs,
    /// Mode B: a slot's sealed orders before its gate.
    SealedBook(RegionId, Slot),
    /// Mode B: a region's deposits and withdrawal requests not yet batched.
    CustodyFlows(RegionId),
    /// Mode B: a closed slot awaiting its report.
    SealedBatch(RegionId, Slot),
    /// Mode B: an accepted report.
    SealedReport(RegionId, Slot),
    /// Mode A: a pool output by index.
    PoolOutput(u64),
    /// Mode A: a spent key image.
    KeyImage([u8; 32]),
    /// The keys of the DSO's and the utility's roles.
    Authorities,
    /// The roles' limits and what was minted and approved against them.
    Issuance,
    /// The validator set of each consensus epoch (an entry where it changed).
    ValidatorSets,
    /// Validators voted in that joined (and wait for a boundary to sign).
    Joining,
    /// Mode B: the committees waiting for the validators to seat one.
    CommitteeCandidates,
}

impl StateKey {
    /// The key's hash in the tree.
    pub fn key_hash(&self) -> KeyHash {
        KeyHash::with::<sha2::Sha256>(canonical(self))
    }
}

/// The typed contents of the state, compared as a whole by tests.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub(crate) struct Records {
    pub(crate) genesis: Genesis,
    pub(crate) meta: Meta,
    pub(crate) validators: BTreeSet<AccountId>,
    pub(crate) accounts: BTreeMap<AccountId, Account>,
    pub(crate) meters: BTreeMap<AccountId, Meter>,
    pub(crate) regions: BTreeMap<RegionId, RegionParams>,
    /// Keyed slot first, so the books due at a gate are a prefix.
    pub(crate) books: BTreeMap<(Slot, RegionId), Book>,
    pub(crate) settlements: BTreeMap<(RegionId, Slot), Settlement>,
    pub(crate) proposals: BTreeMap<u64, Proposal>,
    pub(crate) measurements: BTreeSet<Measurement>,
    pub(crate) enclaves: BTreeMap<AccountId, Enclave>,
    pub(crate) committee: Option<Committee>,
    pub(crate) committee_votes: BTreeMap<AccountId, CommitteeVote>,
    pub(crate) committee_candidates: BTreeMap<GroupPublicKey, CommitteeCandidate>,
    pub(crate) epochs: BTreeMap<Epoch, [u8; 32]>,
    /// Keyed slot first, like `books`.
    pub(crate) sealed_books: BTreeMap<(Slot, RegionId), Vec<SealedEntry>>,
    pub(crate) custody_flows: BTreeMap<RegionId, CustodyFlows>,
    pub(crate) batches: BTreeMap<(RegionId, Slot), SealedBatch>,
    pub(crate) reports: BTreeMap<(RegionId, Slot), PostedReport>,
    pub(crate) pool: Vec<PoolOutput>,
    pub(crate) key_images: BTreeSet<[u8; 32]>,
    /// Who holds each role now (the genesis keys until governance rotates
    /// them).
    pub(crate) authorities: BTreeMap<Authority, AuthorityKey>,
    /// The roles' limits, the period's mints and the votes' approvals.
    pub(crate) issuance: Issuance,
    /// The consensus validator set from each epoch where it changed on,
    /// oldest first: the first entry is epoch 0's, the genesis validators.
    pub(crate) validator_sets: Vec<ValidatorSet>,
    /// Validators voted in that sent `JoinValidators` and do not sign yet.
    pub(crate) joining: BTreeSet<AccountId>,
    /// The pool's one-time keys: an index derived from `pool` (rebuilt from
    /// it on restore, not part of the snapshot), so a new output can not
    /// reuse a key (two outputs with one key share one key image: only one
    /// of them could ever be spent).
    #[borsh(skip)]
    pub(crate) pool_keys: BTreeSet<[u8; 32]>,
}

/// The contract's state: typed records, the keys changed since the last
/// commit, and the Merkle tree as of the last commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub(crate) records: Records,
    chain_id: ChainId,
    dirty: BTreeSet<StateKey>,
    tree: MerkleStore,
    /// Proofs this node already verified (not state: see [`ProofMemo`]).
    pub(crate) verified: ProofMemo,
    /// Transaction signatures this node already verified, apart from the
    /// proofs so that a flood of signed junk can not push those out.
    pub(crate) signatures: ProofMemo,
}

/// A value of the state with its Merkle proof against a root; its borsh
/// bytes are how a light client receives it.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct StateProof {
    /// The key proven.
    pub key: StateKey,
    /// The value's borsh bytes, or `None` for a proof of absence.
    pub value: Option<Vec<u8>>,
    /// The proof.
    pub proof: jmt::proof::SparseMerkleProof<sha2::Sha256>,
}

/// A proof does not match the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid proof")]
pub struct InvalidProof;

impl StateProof {
    /// Checks the proof against `root`.
    ///
    /// # Errors
    /// [`InvalidProof`] if the value (or its absence) is not what `root` commits to.
    pub fn verify(&self, root: Digest) -> Result<(), InvalidProof> {
        self.proof
            .verify(
                jmt::RootHash(root.0),
                self.key.key_hash(),
                self.value.as_ref(),
            )
            .map_err(|_| InvalidProof)
    }

    /// Decodes the proven value.
    ///
    /// # Errors
    /// [`InvalidProof`] if the bytes are not a `T`.
    pub fn decode<T: BorshDeserialize>(&self) -> Result<Option<T>, InvalidProof> {
        self.value
            .as_deref()
            .map(|v| borsh::from_slice(v).map_err(|_| InvalidProof))
            .transpose()
    }
}

impl State {
    /// The state at genesis, committed.
    ///
    /// # Errors
    /// [`GenesisError`] if the document is inadmissible.
    pub fn from_genesis(genesis: Genesis) -> Result<State, GenesisError> {
        genesis.validate()?;
        let mut records = Records {
            meta: Meta::default(),
            validators: genesis.validators.iter().copied().collect(),
            accounts: BTreeMap::new(),
            meters: BTreeMap::new(),
            regions: genesis.regions.iter().copied().collect(),
            books: BTreeMap::new(),
            settlements: BTreeMap::new(),
            proposals: BTreeMap::new(),
            measurements: genesis
                .sealed_market
                .iter()
                .flat_map(|p| p.measurements.iter().copied())
                .collect(),
            enclaves: BTreeMap::new(),
            committee: None,
            committee_votes: BTreeMap::new(),
            committee_candidates: BTreeMap::new(),
            epochs: BTreeMap::new(),
            sealed_books: BTreeMap::new(),
            custody_flows: BTreeMap::new(),
            batches: BTreeMap::new(),
            reports: BTreeMap::new(),
            pool: Vec::new(),
            key_images: BTreeSet::new(),
            pool_keys: BTreeSet::new(),
            issuance: Issuance {
                limits: genesis.limits,
                ..Issuance::default()
            },
            authorities: BTreeMap::from([
                (Authority::Dso, AuthorityKey::genesis(genesis.dso)),
                (Authority::Utility, AuthorityKey::genesis(genesis.utility)),
            ]),
            validator_sets: vec![ValidatorSet {
                from_epoch: 0,
                validators: genesis.validators.iter().copied().collect(),
            }],
            joining: BTreeSet::new(),
            genesis,
        };
        let mut dirty = BTreeSet::from([
            StateKey::Genesis,
            StateKey::Meta,
            StateKey::Validators,
            StateKey::Measurements,
            StateKey::Epochs,
            StateKey::Authorities,
            StateKey::Issuance,
            StateKey::ValidatorSets,
            StateKey::Joining,
        ]);
        for (account, amount) in &records.genesis.allocations {
            records.accounts.entry(*account).or_default().balance = *amount;
            dirty.insert(StateKey::Account(*account));
        }
        let total = records
            .genesis
            .allocations
            .iter()
            .try_fold(Money::ZERO, |s, (_, m)| s.checked_add(*m))
            .ok_or(GenesisError::Allocations)?;
        records.meta.supply = total;
        records.meta.issued = total;
        dirty.extend(records.regions.keys().map(|r| StateKey::Region(*r)));
        let mut state = State {
            chain_id: records.genesis.chain_id(),
            records,
            dirty,
            tree: MerkleStore::default(),
            verified: ProofMemo::default(),
            signatures: ProofMemo::default(),
        };
        state.commit().map_err(|_| GenesisError::Allocations)?;
        Ok(state)
    }

    /// The committed state as bytes: its root and every record. A node
    /// stores one now and then so a restart replays only the blocks after it.
    ///
    /// # Errors
    /// [`SnapshotError::Uncommitted`] if records changed since the last commit.
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        if self.has_uncommitted_changes() {
            return Err(SnapshotError::Uncommitted);
        }
        Ok(canonical(&(self.root(), &self.records)))
    }

    /// The state a [`State::snapshot`] holds. The Merkle tree is rebuilt from
    /// the records and must reach the recorded root.
    ///
    /// # Errors
    /// [`SnapshotError::Malformed`] for bytes that do not decode,
    /// [`SnapshotError::RootMismatch`] if the records do not give the root.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        let (root, mut records): (Digest, Records) =
            borsh::from_slice(bytes).map_err(|_| SnapshotError::Malformed)?;
        records.pool_keys = records.pool.iter().map(|o| o.output.key).collect();
        if records.pool_keys.len() != records.pool.len() {
            return Err(SnapshotError::Malformed);
        }
        let r = &records;
        let mut dirty = BTreeSet::from([
            StateKey::Genesis,
            StateKey::Meta,
            StateKey::Validators,
            StateKey::Authorities,
            StateKey::Issuance,
            StateKey::ValidatorSets,
            StateKey::Joining,
        ]);
        dirty.extend(r.accounts.keys().map(|k| StateKey::Account(*k)));
        dirty.extend(r.meters.keys().map(|k| StateKey::Meter(*k)));
        dirty.extend(r.regions.keys().map(|k| StateKey::Region(*k)));
        dirty.extend(
            r.books
                .keys()
                .map(|(slot, region)| StateKey::Book(*region, *slot)),
        );
        dirty.extend(
            r.settlements
                .keys()
                .map(|(region, slot)| StateKey::Settlement(*region, *slot)),
        );
        dirty.extend(r.proposals.keys().map(|k| StateKey::Proposal(*k)));
        dirty.extend((0..r.pool.len() as u64).map(StateKey::PoolOutput));
        dirty.extend(r.key_images.iter().map(|k| StateKey::KeyImage(*k)));
        dirty.extend([StateKey::Measurements, StateKey::Epochs]);
        if r.committee.is_some() {
            dirty.insert(StateKey::Committee);
        }
        if !r.committee_candidates.is_empty() {
            dirty.insert(StateKey::CommitteeCandidates);
        }
        dirty.extend(r.enclaves.keys().map(|k| StateKey::Enclave(*k)));
        dirty.extend(
            r.committee_votes
                .keys()
                .map(|k| StateKey::CommitteeVote(*k)),
        );
        dirty.extend(
            r.sealed_books
                .keys()
                .map(|(slot, region)| StateKey::SealedBook(*region, *slot)),
        );
        dirty.extend(r.custody_flows.keys().map(|k| StateKey::CustodyFlows(*k)));
        dirty.extend(
            r.batches
                .keys()
                .map(|(region, slot)| StateKey::SealedBatch(*region, *slot)),
        );
        dirty.extend(
            r.reports
                .keys()
                .map(|(region, slot)| StateKey::SealedReport(*region, *slot)),
        );
        let mut state = State {
            chain_id: records.genesis.chain_id(),
            records,
            dirty,
            tree: MerkleStore::default(),
            verified: ProofMemo::default(),
            signatures: ProofMemo::default(),
        };
        let rebuilt = state.commit().map_err(|_| SnapshotError::RootMismatch)?;
        if rebuilt != root {
            return Err(SnapshotError::RootMismatch);
        }
        Ok(state)
    }

    /// Detaches this state from the proofs its clones verified: it verifies
    /// every ring signature and range proof again (what a node that just
    /// started does; benchmarks measure verification this way).
    pub fn forget_verified_proofs(&mut self) {
        self.verified = ProofMemo::default();
        self.signatures = ProofMemo::default();
    }

    /// How many transaction signatures this node remembers having verified
    /// (shared by every copy of the state; at most a fixed capacity).
    pub fn remembered_signatures(&self) -> usize {
        self.signatures.len()
    }

    /// The chain's id.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// The genesis document.
    pub fn genesis(&self) -> &Genesis {
        &self.records.genesis
    }

    /// Chain-wide counters.
    pub fn meta(&self) -> &Meta {
        &self.records.meta
    }

    /// An account; a never-seen account is empty.
    pub fn account(&self, id: &AccountId) -> Account {
        self.records.accounts.get(id).copied().unwrap_or_default()
    }

    /// All accounts with state.
    pub fn accounts(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.records.accounts.iter()
    }

    /// A meter's registration.
    pub fn meter(&self, id: &AccountId) -> Option<&Meter> {
        self.records.meters.get(id)
    }

    /// Every registered meter, by account.
    pub fn meters(&self) -> impl Iterator<Item = (&AccountId, &Meter)> {
        self.records.meters.iter()
    }

    /// A region's current parameters.
    pub fn region(&self, id: RegionId) -> Option<&RegionParams> {
        self.records.regions.get(&id)
    }

    /// The validator set as governance left it: it votes on proposals from
    /// the block that changed it, and signs blocks from the next consensus
    /// epoch on ([`State::validator_set`]).
    pub fn validators(&self) -> &BTreeSet<AccountId> {
        &self.records.validators
    }

    /// Blocks per consensus epoch (0: one epoch for the chain's life).
    pub fn epoch_blocks(&self) -> u64 {
        self.records.genesis.epoch_blocks
    }

    /// The consensus epoch of the block at `height`: epoch `e` spans heights
    /// `e·L .. (e+1)·L` for `L` = [`State::epoch_blocks`] (genesis is in
    /// epoch 0).
    pub fn consensus_epoch_of(&self, height: Height) -> u64 {
        match self.epoch_blocks() {
            0 => 0,
            blocks => height.0 / blocks,
        }
    }

    /// The latest consensus epoch whose validator set this state decides:
    /// the one after the last epoch whose final block it has applied.
    pub fn known_consensus_epoch(&self) -> u64 {
        match self.epoch_blocks() {
            0 => 0,
            blocks => self.meta().height.0.saturating_add(1) / blocks,
        }
    }

    /// The validators that sign consensus `epoch`, if this state decides
    /// it (`epoch` ≤ [`State::known_consensus_epoch`]).
    pub fn validator_set(&self, epoch: u64) -> Option<&BTreeSet<AccountId>> {
        if epoch > self.known_consensus_epoch() {
            return None;
        }
        self.records
            .validator_sets
            .iter()
            .rev()
            .find(|s| s.from_epoch <= epoch)
            .map(|s| &s.validators)
    }

    /// Every change of the consensus validator set, oldest first.
    pub fn validator_sets(&self) -> &[ValidatorSet] {
        &self.records.validator_sets
    }

    /// Validators voted in that joined and wait for a boundary to sign.
    pub fn joining(&self) -> &BTreeSet<AccountId> {
        &self.records.joining
    }

    /// An open book.
    pub fn book(&self, region: RegionId, slot: Slot) -> Option<&Book> {
        self.records.books.get(&(slot, region))
    }

    /// All open books, earliest slot first.
    pub fn books(&self) -> impl Iterator<Item = ((Slot, RegionId), &Book)> {
        self.records.books.iter().map(|(k, b)| (*k, b))
    }

    /// Whether a block at `time` would settle a book or close a sealed one
    /// (some gate has closed).
    pub fn settlement_due(&self, time: Timestamp) -> bool {
        let due = |slot: &Slot| self.records.genesis.close_of(*slot) <= time;
        self.records
            .books
            .keys()
            .next()
            .is_some_and(|(s, _)| due(s))
            || self
                .records
                .sealed_books
                .keys()
                .next()
                .is_some_and(|(s, _)| due(s))
    }

    /// A settlement.
    pub fn settlement(&self, region: RegionId, slot: Slot) -> Option<&Settlement> {
        self.records.settlements.get(&(region, slot))
    }

    /// All settlements by region and slot.
    pub fn settlements(&self) -> impl Iterator<Item = &Settlement> {
        self.records.settlements.values()
    }

    /// One region's settlements in slot order.
    pub fn region_settlements(
        &self,
        region: RegionId,
    ) -> impl DoubleEndedIterator<Item = &Settlement> {
        self.records
            .settlements
            .range((region, Slot(0))..=(region, Slot(u64::MAX)))
            .map(|(_, s)| s)
    }

    /// Mode B: the measurements enclaves may register with.
    pub fn measurements(&self) -> &BTreeSet<Measurement> {
        &self.records.measurements
    }

    /// Mode B: the registered enclaves.
    pub fn enclaves(&self) -> &BTreeMap<AccountId, Enclave> {
        &self.records.enclaves
    }

    /// The key holding `authority` now (a frozen one included).
    pub fn authority(&self, authority: Authority) -> AccountId {
        self.authority_key(authority).key
    }

    /// The key holding `authority` now, whether it is frozen and since when.
    pub fn authority_key(&self, authority: Authority) -> AuthorityKey {
        self.records
            .authorities
            .get(&authority)
            .cloned()
            .unwrap_or_else(|| {
                AuthorityKey::genesis(match authority {
                    Authority::Dso => self.records.genesis.dso,
                    Authority::Utility => self.records.genesis.utility,
                })
            })
    }

    /// The roles' limits and what was minted and approved against them.
    pub fn issuance(&self) -> &Issuance {
        &self.records.issuance
    }

    /// Whether `key` holds a role (frozen or not).
    pub fn holds_role(&self, key: &AccountId) -> bool {
        self.records.authorities.values().any(|a| a.key == *key)
    }

    /// Whether `key` holds a role that governance froze.
    pub fn is_frozen(&self, key: &AccountId) -> bool {
        self.records
            .authorities
            .values()
            .any(|a| a.frozen && a.key == *key)
    }

    /// Mode B: the committee in office.
    pub fn committee(&self) -> Option<&Committee> {
        self.records.committee.as_ref()
    }

    /// Mode B: the committees whose members all voted for them, waiting
    /// for the validators to seat one, by group key.
    pub fn committee_candidates(&self) -> &BTreeMap<GroupPublicKey, CommitteeCandidate> {
        &self.records.committee_candidates
    }

    /// Mode B: the recent epoch keys, oldest first.
    pub fn epoch_keys(&self) -> &BTreeMap<Epoch, [u8; 32]> {
        &self.records.epochs
    }

    /// Mode B: a slot's sealed orders before its gate.
    pub fn sealed_book(&self, region: RegionId, slot: Slot) -> Option<&[SealedEntry]> {
        self.records
            .sealed_books
            .get(&(slot, region))
            .map(Vec::as_slice)
    }

    /// Mode B: the closed slots awaiting a report, by region and slot.
    pub fn sealed_batches(&self) -> impl Iterator<Item = ((RegionId, Slot), &SealedBatch)> {
        self.records.batches.iter().map(|(k, b)| (*k, b))
    }

    /// Mode B: an accepted report.
    pub fn sealed_report(&self, region: RegionId, slot: Slot) -> Option<&PostedReport> {
        self.records.reports.get(&(region, slot))
    }

    /// Mode B: one region's accepted reports in slot order.
    pub fn region_reports(
        &self,
        region: RegionId,
    ) -> impl DoubleEndedIterator<Item = &PostedReport> {
        self.records
            .reports
            .range((region, Slot(0))..=(region, Slot(u64::MAX)))
            .map(|(_, r)| r)
    }

    /// Mode A: the pool's outputs, oldest first (index = position).
    pub fn pool(&self) -> &[PoolOutput] {
        &self.records.pool
    }

    /// Mode A: whether a pool output has the one-time key `key`.
    pub fn pool_has_key(&self, key: &[u8; 32]) -> bool {
        self.records.pool_keys.contains(key)
    }

    /// Mode A: whether `key_image` was spent.
    pub fn key_image_spent(&self, key_image: &[u8; 32]) -> bool {
        self.records.key_images.contains(key_image)
    }

    /// Mode A: the spent key images, ascending, after `after` if given
    /// (a light client pages through them all; asking for one would tell
    /// the node which it cares about).
    pub fn key_images_after(&self, after: Option<[u8; 32]>) -> impl Iterator<Item = &[u8; 32]> {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.records.key_images.range((lower, Bound::Unbounded))
    }

    /// A proposal.
    pub fn proposal(&self, id: u64) -> Option<&Proposal> {
        self.records.proposals.get(&id)
    }

    /// The open proposals, by id.
    pub fn proposals(&self) -> impl Iterator<Item = (u64, &Proposal)> {
        self.records.proposals.iter().map(|(id, p)| (*id, p))
    }

    /// The most energy a meter's PV can produce in one slot: `Wp × metered interval / 1 h`.
    pub fn capacity_per_slot(&self, meter: &Meter) -> Energy {
        let wh =
            u128::from(meter.pv_watts) * u128::from(self.records.genesis.metered_ms) / 3_600_000;
        Energy::new(u64::try_from(wh).unwrap_or(u64::MAX))
    }

    /// The root of the state as of the last commit.
    pub fn root(&self) -> Digest {
        Digest(self.tree.root().0)
    }

    /// Whether records changed since the last commit.
    pub fn has_uncommitted_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Marks a key as changed.
    pub(crate) fn touch(&mut self, key: StateKey) {
        self.dirty.insert(key);
    }

    /// Writes all changed records into the tree and returns the new root.
    ///
    /// # Errors
    /// [`MerkleStoreCorrupt`] if the tree's nodes are inconsistent (fatal).
    pub fn commit(&mut self) -> Result<Digest, MerkleStoreCorrupt> {
        let writes = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| (key.key_hash(), self.encode(&key)))
            .collect();
        self.tree.update(writes).map(|r| Digest(r.0))
    }

    /// The current bytes of the record under `key`, `None` if absent.
    fn encode(&self, key: &StateKey) -> Option<Vec<u8>> {
        let r = &self.records;
        match key {
            StateKey::Genesis => Some(canonical(&r.genesis)),
            StateKey::Meta => Some(canonical(&r.meta)),
            StateKey::Validators => Some(canonical(&r.validators)),
            StateKey::Account(id) => r.accounts.get(id).map(canonical),
            StateKey::Meter(id) => r.meters.get(id).map(canonical),
            StateKey::Region(id) => r.regions.get(id).map(canonical),
            StateKey::Book(region, slot) => r.books.get(&(*slot, *region)).map(canonical),
            StateKey::Settlement(region, slot) => {
                r.settlements.get(&(*region, *slot)).map(canonical)
            }
            StateKey::Proposal(id) => r.proposals.get(id).map(canonical),
            StateKey::Measurements => Some(canonical(&r.measurements)),
            StateKey::Enclave(id) => r.enclaves.get(id).map(canonical),
            StateKey::Committee => r.committee.as_ref().map(canonical),
            StateKey::CommitteeVote(id) => r.committee_votes.get(id).map(canonical),
            StateKey::CommitteeCandidates => {
                (!r.committee_candidates.is_empty()).then(|| canonical(&r.committee_candidates))
            }
            StateKey::Epochs => Some(canonical(&r.epochs)),
            StateKey::SealedBook(region, slot) => {
                r.sealed_books.get(&(*slot, *region)).map(canonical)
            }
            StateKey::CustodyFlows(region) => r.custody_flows.get(region).map(canonical),
            StateKey::SealedBatch(region, slot) => r.batches.get(&(*region, *slot)).map(canonical),
            StateKey::SealedReport(region, slot) => r.reports.get(&(*region, *slot)).map(canonical),
            StateKey::PoolOutput(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| r.pool.get(i))
                .map(canonical),
            StateKey::KeyImage(k) => r.key_images.contains(k).then(|| vec![1]),
            StateKey::Authorities => Some(canonical(&r.authorities)),
            StateKey::Issuance => Some(canonical(&r.issuance)),
            StateKey::ValidatorSets => Some(canonical(&r.validator_sets)),
            StateKey::Joining => Some(canonical(&r.joining)),
        }
    }

    /// Test support: puts a closed mode B batch into the state as the
    /// chain's gate would (commit to see it under the root). Compiled only
    /// with the `testing` feature; no node code path has it.
    #[cfg(feature = "testing")]
    pub fn insert_sealed_batch_for_testing(
        &mut self,
        region: RegionId,
        slot: Slot,
        batch: crate::SealedBatch,
    ) {
        self.records.batches.insert((region, slot), batch);
        self.touch(StateKey::SealedBatch(region, slot));
    }

    /// Test support: registers a mode B enclave as the chain would after
    /// checking its quote (commit to see it under the root). Compiled only
    /// with the `testing` feature.
    #[cfg(feature = "testing")]
    pub fn insert_enclave_for_testing(&mut self, account: AccountId, enclave: crate::Enclave) {
        self.records.enclaves.insert(account, enclave);
        self.touch(StateKey::Enclave(account));
    }

    /// Test support: publishes an epoch key. Compiled only with the
    /// `testing` feature.
    #[cfg(feature = "testing")]
    pub fn insert_epoch_key_for_testing(&mut self, epoch: Epoch, public_key: [u8; 32]) {
        self.records.epochs.insert(epoch, public_key);
        self.touch(StateKey::Epochs);
    }

    /// Test support: puts a committee in office. Compiled only with the
    /// `testing` feature.
    #[cfg(feature = "testing")]
    pub fn insert_committee_for_testing(&mut self, committee: crate::Committee) {
        self.records.committee = Some(committee);
        self.touch(StateKey::Committee);
    }

    /// A proof of the committed value under `key` (or of its absence).
    ///
    /// # Errors
    /// [`MerkleStoreCorrupt`] if the tree's nodes are inconsistent.
    pub fn prove(&self, key: StateKey) -> Result<StateProof, MerkleStoreCorrupt> {
        let (value, proof) = self.tree.prove(key.key_hash())?;
        Ok(StateProof { key, value, proof })
    }
}

impl State {
    /// Checks a transaction's signature as [`SignedTx::verify`] does, once
    /// per validator: a signature that verified is remembered (in a memo of
    /// the state's, apart from the proofs', shared by its copies and out of
    /// consensus), so the block that holds a transaction the mempool
    /// admitted does not verify it again.
    ///
    /// # Errors
    /// [`TxError::BadSignature`].
    pub fn verify_tx(&self, tx: SignedTx) -> Result<VerifiedTx, TxError> {
        tx.verify_remembering(&self.signatures)
    }

    /// As [`crate::State::verify_tx`], remembering nothing: a signature the
    /// memo holds passes, another is verified;
    /// [`crate::State::remember_signature`] once the transaction applied (or
    /// a one-time transaction's proofs verified). A block of transactions
    /// from fresh keys whose bodies fail, or false orders, would otherwise
    /// push honest signatures out of the memo.
    ///
    /// # Errors
    /// [`TxError::BadSignature`].
    pub fn verify_tx_unremembered(&self, tx: SignedTx) -> Result<VerifiedTx, TxError> {
        tx.verify_unless_remembered(&self.signatures)
    }

    /// Remembers the signature of `tx` as verified (see
    /// [`crate::State::verify_tx`]). For a transaction checked with
    /// [`SignedTx::verify`], which remembers nothing: a one-time
    /// transaction's signature is worth remembering only once its proofs
    /// verified too, or every false order, each signed by a fresh key,
    /// would push an honest signature out of the memo.
    pub fn remember_signature(&self, tx: &VerifiedTx) {
        tx.remember_in(&self.signatures);
    }
}
