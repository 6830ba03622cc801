//! One enclave of the committee as a state machine: everything the enclave
//! process does inside its boundary, with bytes in and bytes out, no I/O.
//!
//! The host (an untrusted process) carries messages between enclaves and the
//! chain. It learns nothing secret from them: DKG round-2 packages and epoch
//! secrets are sealed to the recipient's attested identity key; FROST
//! commitments, shares and group signatures are public by design.
//!
//! A member signs only what it computed itself: a slot's summary from a batch
//! it cleared, or an epoch key whose secret it holds. So a compromised host
//! or coordinator can not get a report signed that `t` honest members did not
//! compute.
//!
//! The state survives restarts sealed to the platform: [`EnclaveService::seal`]
//! encrypts it with HPKE to a key derived from the **simulated** platform
//! secret and the measurement (a real TEE derives the sealing key in
//! hardware), and [`EnclaveService::unseal`] restores it — only the latest
//! state sealed: the platform's **simulated** monotonic counter
//! ([`SimulatedMonotonicCounter`]) refuses any older copy the host kept.

use crate::attestation::{AttestationRoot, Measurement, Quote, VendorPolicy, verify_vendor};
use crate::auctioneer::{Auctioneer, AuctioneerState, Batch, BatchError, SlotReport, SlotSummary};
use crate::committee::{GroupPublicKey, GroupSignature, committee_message, report_message};
use crate::epoch::{EpochKeyShare, IdentityKey, epoch_key_message, share};
use crate::sealed::{
    Epoch, EpochKeyPair, HpkeKeyPair, hpke_open, hpke_open_auth, hpke_seal, hpke_seal_auth,
};
use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::SigningKey;
use frost_ristretto255 as frost;
use quartier_ledger::{Genesis, SealedBatch, StateKey, StateProof};
use quartier_light::{ChainAnchor, FinalizedHeader, LightError};
use quartier_types::rng::Rng06;
use quartier_types::{AccountId, RegionId, Slot, hash};
use rand_core::Rng as _;
use std::collections::BTreeMap;
use zeroize::Zeroize as _;

/// HPKE `info` of DKG round-2 packages.
pub const HPKE_INFO_DKG: &[u8] = b"QUARTIER_ENCLAVE_DKG_ROUND2";
/// HPKE `info` of the sealed state.
pub const HPKE_INFO_STATE: &[u8] = b"QUARTIER_ENCLAVE_SEALED_STATE";
/// How many recent slot reports a member keeps to serve receipts.
pub const KEPT_REPORTS: usize = 256;

/// Why the enclave refuses a request. Opaque where a detail would help an attacker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The request does not fit the enclave's state (e.g. no committee yet).
    #[error("not now: {0}")]
    State(&'static str),
    /// A message from another member does not decode or verify.
    #[error("invalid message")]
    Invalid,
    /// The enclave did not compute what it is asked to sign.
    #[error("will not sign: not what this enclave computed")]
    Unsigned,
    /// Signing commitments or shares that do not decode, or shares that do
    /// not verify against their members' key shares: those members (by
    /// index) cheated or answered garbage.
    #[error("bad signing answers from members {culprits:?}")]
    BadAnswers {
        /// The members whose answers failed.
        culprits: Vec<u16>,
    },
    /// Clearing a batch failed.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// What the host says the chain holds is not shown to be what it
    /// finalized.
    #[error("not the chain's: {0}")]
    Chain(#[from] ChainError),
    /// A sealed state that is not the latest this platform sealed: the
    /// host restored an older copy (or the simulated counter moved).
    #[error("sealed state {sealed} is not the platform's latest ({counter}): rolled back, refused")]
    RolledBack {
        /// The counter value the state was sealed at.
        sealed: u64,
        /// The platform's (simulated) monotonic counter.
        counter: u64,
    },
    /// The platform's (simulated) monotonic counter could not be read or
    /// moved on: nothing is sealed or unsealed without it.
    #[error("the platform's monotonic counter failed: {0}")]
    Counter(String),
}

/// Checks that `proof` shows `genesis` as the genesis record under
/// `header`'s root.
fn header_genesis(
    header: &FinalizedHeader,
    genesis: &Genesis,
    proof: &StateProof,
) -> Result<(), ServiceError> {
    let shown: Option<Genesis> = header
        .verify(&StateKey::Genesis, proof)
        .map_err(ChainError::Light)?;
    if shown.as_ref() != Some(genesis) {
        return Err(ServiceError::Chain(ChainError::OtherChain));
    }
    Ok(())
}

/// Why the enclave does not take something as the chain's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The genesis document is of another chain than the committee's.
    #[error("the genesis document is of another chain than this committee's")]
    OtherChain,
    /// The chain has no mode B.
    #[error("the chain has no sealed market")]
    NoSealedMarket,
    /// The finalized state holds no batch for the slot.
    #[error("the finalized state holds no such batch")]
    NoBatch,
    /// The batch does not follow the last one this enclave cleared for its
    /// region (a skipped batch, or one already cleared).
    #[error("the batch does not follow the last one cleared here")]
    OutOfTurn,
    /// A block older than one this enclave already took.
    #[error("an older finalized block than one already taken")]
    Stale,
    /// A DKG the chain's registry (as verified) can not seat: a member not
    /// registered with its quote, a revoked measurement, another `t`, a
    /// committee in office, or another chain.
    #[error("the chain's registry does not seat this committee")]
    NotSeated,
    /// A registry without the measurements or the committee record, or
    /// with another record.
    #[error("not the chain's enclave registry")]
    NotRegistry,
    /// A light-client check failed.
    #[error(transparent)]
    Light(#[from] LightError),
}

/// A closed slot's batch as the chain holds it, with what shows it: the
/// host fetches these from its node (`/api/v1/regions/{r}/batches/{s}/proof`).
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct FinalizedBatch {
    /// A finalized block's canonical encoding.
    pub block: Vec<u8>,
    /// Its simplex finalization certificate, encoded.
    pub finalization: Vec<u8>,
    /// The proof of the `StateKey::SealedBatch` record under its state root.
    pub proof: StateProof,
    /// The proof of the `StateKey::Genesis` record under the same root: the
    /// block is of the chain whose genesis the enclave was given (not of
    /// another with the same name and validators).
    pub genesis: StateProof,
}

/// What a signing session is for; each member derives the message itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Purpose {
    /// The summary of a slot this member cleared.
    Report {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
    },
    /// An epoch key whose secret this member holds.
    EpochKey {
        /// The epoch.
        epoch: Epoch,
        /// Its public key.
        public_key: [u8; 32],
    },
    /// The committee this member's DKG formed, to take office on chain:
    /// its threshold and members, as the member knows them
    /// ([`crate::committee::committee_message`]).
    Committee,
}

/// A DKG round-2 package sealed to its recipient's identity key.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SealedDkgPackage {
    /// The sender's member index.
    pub from: u16,
    /// The recipient's member index.
    pub to: u16,
    /// HPKE's encapsulated key.
    pub encapped_key: [u8; 32],
    /// The sealed package.
    pub ciphertext: Vec<u8>,
}

/// HPKE `info` of a state transfer to a rejoining member.
pub const HPKE_INFO_CATCH_UP: &[u8] = b"QUARTIER_ENCLAVE_CATCH_UP";

/// A member's clearing state sealed to another member's identity key, for
/// one that missed slots while it was down.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CatchUp {
    /// The sending member's identity key (sealed in HPKE auth mode from it).
    pub from: [u8; 32],
    /// The latest slot cleared, per region, in the state.
    pub cleared: Vec<(RegionId, Slot)>,
    /// HPKE's encapsulated key.
    pub encapped_key: [u8; 32],
    /// The sealed state (auctioneers and epoch keys).
    pub ciphertext: Vec<u8>,
}

/// What a member clears with: its epoch keys and auctioneers. Part of the
/// sealed state, and what a rejoining member receives.
#[derive(BorshSerialize, BorshDeserialize)]
struct ClearingState {
    epoch_keys: Vec<(Epoch, Vec<u8>)>,
    auctioneers: Vec<AuctioneerState>,
    /// Every key of an epoch before this one is erased.
    erased_below: Epoch,
}

/// Epoch keys, auctioneers and the erasure mark restored from a
/// [`ClearingState`].
type Clearing = (
    BTreeMap<Epoch, EpochKeyPair>,
    BTreeMap<RegionId, Auctioneer>,
    Epoch,
);

impl ClearingState {
    /// Overwrites the epoch secrets' bytes (once written out).
    fn zeroize_keys(&mut self) {
        for (_, secret) in &mut self.epoch_keys {
            secret.zeroize();
        }
    }

    /// The keys and auctioneers again; nothing if any of them does not decode.
    fn restore(self) -> Result<Clearing, ServiceError> {
        let mut epoch_keys = BTreeMap::new();
        for (epoch, secret) in self.epoch_keys {
            let key = EpochKeyPair::from_secret(epoch, &secret).ok_or(ServiceError::Invalid)?;
            epoch_keys.insert(epoch, key);
        }
        let mut auctioneers = BTreeMap::new();
        for a in self.auctioneers {
            let a = a.restore().ok_or(ServiceError::Invalid)?;
            auctioneers.insert(a.region(), a);
        }
        Ok((epoch_keys, auctioneers, self.erased_below))
    }
}

/// The committee as this member knows it: a DKG in progress, one that
/// finished here, or the committee every member confirmed.
#[derive(Clone)]
struct Membership {
    index: u16,
    t: u16,
    /// The chain the committee serves (from the invitation).
    chain: [u8; 32],
    identities: Vec<[u8; 32]>,
    /// Each member's chain account (its quote's report data): it signs the
    /// member's DKG round-1 package and the requests it coordinates.
    accounts: Vec<[u8; 32]>,
    /// The coordinator's attempt this membership is of.
    attempt: u64,
    /// The round-1 set this member's DKG finished with, once it did.
    round1: Option<hash::Digest>,
    /// Every member's signature over the finish, once confirmed (the
    /// certificate any member's host may deliver to the others).
    certificate: Option<Vec<[u8; 64]>>,
    /// The key share, once the DKG finished.
    key: Option<frost::keys::KeyPackage>,
    public: Option<frost::keys::PublicKeyPackage>,
}

impl Membership {
    /// Whether this is a committee every member confirmed.
    fn confirmed(&self) -> bool {
        self.certificate.is_some() && self.key.is_some()
    }

    /// The group key, once the DKG finished.
    fn group_key(&self) -> Result<GroupPublicKey, ServiceError> {
        group_key_of(self.public.as_ref().ok_or(ServiceError::State("no DKG"))?)
    }

    /// Checks `signatures` (by member index) are every member's account
    /// signature over this membership's finish with round-1 set `round1`.
    fn check_certificate(
        &self,
        round1: &hash::Digest,
        signatures: &[[u8; 64]],
    ) -> Result<GroupPublicKey, ServiceError> {
        let group = self.group_key()?;
        let message = finish_message(&self.chain, self.attempt, round1, &group);
        if signatures.len() != self.accounts.len() {
            return Err(ServiceError::Invalid);
        }
        for (account, signature) in self.accounts.iter().zip(signatures) {
            verify_account(account, &message.0, signature)?;
        }
        Ok(group)
    }

    fn sealed(&self) -> Result<SealedMembership, ServiceError> {
        Ok(SealedMembership {
            index: self.index,
            t: self.t,
            chain: self.chain,
            identities: self.identities.clone(),
            accounts: self.accounts.clone(),
            attempt: self.attempt,
            round1: self.round1.map(|d| d.0),
            certificate: self.certificate.clone(),
            key: self
                .key
                .as_ref()
                .map(|k| k.serialize().map_err(|_| ServiceError::Invalid))
                .transpose()?,
            public: self
                .public
                .as_ref()
                .map(|p| p.serialize().map_err(|_| ServiceError::Invalid))
                .transpose()?,
        })
    }
}

impl SealedMembership {
    fn restore(self) -> Result<Membership, ServiceError> {
        Ok(Membership {
            index: self.index,
            t: self.t,
            chain: self.chain,
            identities: self.identities,
            accounts: self.accounts,
            attempt: self.attempt,
            round1: self.round1.map(hash::Digest),
            certificate: self.certificate,
            key: self
                .key
                .map(|k| frost::keys::KeyPackage::deserialize(&k))
                .transpose()
                .map_err(|_| ServiceError::Invalid)?,
            public: self
                .public
                .map(|p| frost::keys::PublicKeyPackage::deserialize(&p))
                .transpose()
                .map_err(|_| ServiceError::Invalid)?,
        })
    }
}

/// How many finished, unconfirmed DKGs a member keeps per inviter (newest
/// last): a certificate that arrives after the member moved on to a later
/// attempt still confirms the key it finished with, and another inviter's
/// DKGs do not push it out.
const KEPT_FINISHED: usize = 4;

/// One inviter's DKG in progress at this member.
struct InProgress {
    membership: Membership,
    /// Round 1's secret, until the DKG finishes.
    dkg1: Option<frost::keys::dkg::round1::SecretPackage>,
    /// Round 2's secrets, one per round-1 set it ran with (by
    /// [`round1_digest`], newest last, at most [`KEPT_ROUND2`]): the finish
    /// names the set, so a replay of an earlier round-2 request (anyone on
    /// the network can send one) does not change what it finishes with.
    dkg2: Vec<Round2>,
    /// The round-1 request it answered (a digest of it) and its answer: the
    /// same request again (a replay anyone on the network can send) gets
    /// the same answer and does not start the DKG over.
    round1_answer: (hash::Digest, SignedPackage),
    /// When it last moved (by [`EnclaveService::arrivals`]).
    arrival: u64,
}

/// How many inviters' latest attempts a member keeps.
const KEPT_INVITERS: usize = 64;

/// The largest committee a member takes part in (so what it keeps of the
/// DKGs in progress is bounded: at most 64 inviters × 4 round-2 runs of
/// at most this many round-1 packages).
pub const MAX_COMMITTEE: u16 = 32;

/// Domain tag of a DKG invitation.
pub const TAG_DKG_INVITATION: &str = "QUARTIER_ENCLAVE_DKG_INVITATION";

/// What the coordinator signs to start a DKG.
fn invitation_message(chain: &[u8; 32], t: u16, attempt: u64, members: &[Quote]) -> hash::Digest {
    hash::tagged(
        TAG_DKG_INVITATION,
        &[
            chain,
            &t.to_le_bytes(),
            &attempt.to_le_bytes(),
            &borsh::to_vec(members).unwrap_or_default(),
        ],
    )
}

/// Domain tag of [`finish_message`].
pub const TAG_DKG_FINISH: &str = "QUARTIER_ENCLAVE_DKG_FINISH";

/// What a member signs with its account when its DKG finished: the chain,
/// the attempt, the round-1 set and the group key it derived. A member
/// holds the key as its committee's only with every member's signature
/// over the same ([`EnclaveService::dkg_confirm`]).
pub fn finish_message(
    chain: &[u8; 32],
    attempt: u64,
    round1: &hash::Digest,
    key: &GroupPublicKey,
) -> hash::Digest {
    hash::tagged(
        TAG_DKG_FINISH,
        &[chain, &attempt.to_le_bytes(), &round1.0, &key.0],
    )
}

/// What a member signs with its round-1 package: the chain, the attempt,
/// its index, the members and the package (a DKG for another chain does
/// not complete, and a package of another attempt is refused).
fn round1_message(
    chain: &[u8; 32],
    attempt: u64,
    index: u16,
    identities: &[[u8; 32]],
    package: &[u8],
) -> hash::Digest {
    let identities: Vec<u8> = identities.iter().flatten().copied().collect();
    hash::tagged(
        TAG_DKG_ROUND1,
        &[
            chain,
            &attempt.to_le_bytes(),
            &index.to_le_bytes(),
            &identities,
            package,
        ],
    )
}

/// Whether `(package, signature)` is member `index`'s round-1 package of
/// the DKG of the members whose quotes are `quotes` for chain `chain`:
/// decodable, and signed by its account as every other member checks it
/// (the coordinator checks it first, so the member named for a bad one is
/// the one that sent it).
pub(crate) fn round1_signed_by(
    chain: &[u8; 32],
    attempt: u64,
    quotes: &[Quote],
    index: u16,
    (package, signature): (&[u8], &[u8; 64]),
) -> bool {
    let identities: Vec<[u8; 32]> = quotes
        .iter()
        .filter_map(|q| q.report_data[..32].try_into().ok())
        .collect();
    let Some(account) = quote_account(quotes, index) else {
        return false;
    };
    frost::keys::dkg::round1::Package::deserialize(package).is_ok()
        && verify_account(
            &account,
            &round1_message(chain, attempt, index, &identities, package).0,
            signature,
        )
        .is_ok()
}

/// The account of member `index` of the members whose quotes are
/// `quotes` (its quote's report data is identity key ‖ account).
fn quote_account(quotes: &[Quote], index: u16) -> Option<[u8; 32]> {
    quotes
        .get(usize::from(index))
        .and_then(|q| <[u8; 32]>::try_from(&q.report_data[32..]).ok())
}

/// Whether `signature` is member `index`'s account signature over its
/// finish of attempt `attempt` with round-1 set `round1` and group key
/// `key` ([`finish_message`]), the members' quotes being `quotes`.
pub(crate) fn finish_signed_by(
    chain: &[u8; 32],
    attempt: u64,
    quotes: &[Quote],
    index: u16,
    (round1, key): (&hash::Digest, &GroupPublicKey),
    signature: &[u8; 64],
) -> bool {
    quote_account(quotes, index).is_some_and(|account| {
        verify_account(
            &account,
            &finish_message(chain, attempt, round1, key).0,
            signature,
        )
        .is_ok()
    })
}

/// Keeps at most `max` entries of `map`: past it, forgets the one (other
/// than `keep`) with the lowest `rank`.
fn forget_beyond<V>(
    map: &mut BTreeMap<[u8; 32], V>,
    max: usize,
    keep: &[u8; 32],
    rank: impl Fn(&V) -> u64,
) {
    while map.len() > max {
        let Some(lowest) = map
            .iter()
            .filter(|(who, _)| *who != keep)
            .min_by_key(|(_, v)| rank(v))
            .map(|(who, _)| *who)
        else {
            return;
        };
        map.remove(&lowest);
    }
}

/// The group key of a DKG's public key package.
fn group_key_of(public: &frost::keys::PublicKeyPackage) -> Result<GroupPublicKey, ServiceError> {
    let bytes = public
        .verifying_key()
        .serialize()
        .map_err(|_| ServiceError::Invalid)?;
    Ok(GroupPublicKey(
        bytes.try_into().map_err(|_| ServiceError::Invalid)?,
    ))
}

/// The associated data a round-2 package is sealed with: the attempt, its
/// sender and its recipient.
fn round2_aad(attempt: u64, from: u16, to: u16) -> Vec<u8> {
    [
        attempt.to_le_bytes().as_slice(),
        &from.to_le_bytes(),
        &to.to_le_bytes(),
    ]
    .concat()
}

/// Members' answers (commitments or shares) by FROST identifier, or
/// [`ServiceError::BadAnswers`] naming every member whose answer does not
/// decode.
fn decode_answers<T>(
    answers: &BTreeMap<u16, Vec<u8>>,
    decode: impl Fn(&[u8]) -> Option<T>,
) -> Result<BTreeMap<frost::Identifier, T>, ServiceError> {
    let mut parsed = BTreeMap::new();
    let mut garbled = Vec::new();
    for (index, bytes) in answers {
        match decode(bytes) {
            Some(answer) => {
                parsed.insert(identifier(*index)?, answer);
            }
            None => garbled.push(*index),
        }
    }
    if garbled.is_empty() {
        Ok(parsed)
    } else {
        Err(ServiceError::BadAnswers { culprits: garbled })
    }
}

/// Drops coordinator `by`'s oldest entries of `map` (keyed by coordinator
/// and session id) until at most `n` are left: one coordinator (or its
/// abandoned sessions) never crowds out another's.
fn keep_newest<V>(map: &mut BTreeMap<(u16, u64), V>, by: u16, n: usize) {
    while map.range((by, 0)..=(by, u64::MAX)).count() > n {
        let Some(oldest) = map.range((by, 0)..=(by, u64::MAX)).next().map(|(k, _)| *k) else {
            break;
        };
        map.remove(&oldest);
    }
}

/// An open signing session: the message, the nonces and the commitments
/// sent for them.
type OpenSession = (Vec<u8>, frost::round1::SigningNonces, Vec<u8>);

/// What a coordinator signs for a request to member `to`: bound to that
/// member, so nobody who sees the request can spend another member's
/// session with it.
fn coordinator_message(group: &GroupPublicKey, session: u64, to: u16, what: &[u8]) -> hash::Digest {
    hash::tagged(
        TAG_COORDINATOR,
        &[&group.0, &session.to_le_bytes(), &to.to_le_bytes(), what],
    )
}

/// The tag of [`answer_message`].
pub const TAG_SIGNING_ANSWER: &str = "QUARTIER_ENCLAVE_SIGNING_ANSWER";

/// The round of a signing answer: 1 for commitments, 2 for a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigningRound {
    /// Nonce commitments.
    Commit = 1,
    /// A signature share.
    Share = 2,
}

/// What a member signs with its account key over its answer `bytes` in
/// `round` of coordinator `by`'s session `session` of the committee with
/// group key `group` (the member is `from`), about `about`: the borsh
/// bytes of the [`Purpose`] for commitments, the signing package for a
/// share (so that a coordinator can not show a share with another package
/// than the one it was computed for). A relay that alters the answer is
/// caught (the signature fails), and a signed answer that FROST's checks
/// refuse, with what it was about, proves the member at fault.
pub fn answer_message(
    group: &GroupPublicKey,
    (session, by, from): (u64, u16, u16),
    round: SigningRound,
    about: &[u8],
    bytes: &[u8],
) -> hash::Digest {
    // What it is about as a digest: every part but the last has a fixed
    // length, so no two (about, bytes) give one message.
    let about = hash::tagged(TAG_SIGNING_ANSWER, &[about]);
    hash::tagged(
        TAG_SIGNING_ANSWER,
        &[
            &group.0,
            &session.to_le_bytes(),
            &by.to_le_bytes(),
            &from.to_le_bytes(),
            &[round as u8],
            &about.0,
            bytes,
        ],
    )
}

/// Checks an Ed25519 signature by the account `account`.
fn verify_account(
    account: &[u8; 32],
    message: &[u8],
    signature: &[u8; 64],
) -> Result<(), ServiceError> {
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(account).map_err(|_| ServiceError::Invalid)?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(signature))
        .map_err(|_| ServiceError::Invalid)
}

fn identifier(index: u16) -> Result<frost::Identifier, ServiceError> {
    let one_based = index.checked_add(1).ok_or(ServiceError::Invalid)?;
    frost::Identifier::try_from(one_based).map_err(|_| ServiceError::Invalid)
}

/// The enclave's own randomness on the **simulated** platform. A real TEE
/// draws it inside the enclave from the CPU (RDSEED/RDRAND on SGX and TDX,
/// the firmware's on SEV-SNP); here the enclave lives in its host's process,
/// so the operating system's generator stands in, read by the service
/// itself. No host parameter seeds or replaces it: identity keys, epoch
/// secrets, DKG polynomials and signing nonces are never the caller's.
struct SimulatedPlatformRng(rand_chacha::ChaCha20Rng);

impl SimulatedPlatformRng {
    fn new() -> Result<SimulatedPlatformRng, ServiceError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|_| ServiceError::State("no platform randomness"))?;
        let rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed);
        seed.zeroize();
        Ok(SimulatedPlatformRng(rng))
    }
}

/// A DKG round-1 package with its member's account signature.
pub type SignedPackage = (Vec<u8>, [u8; 64]);

/// Domain tag of a signed DKG round-1 package.
pub const TAG_DKG_ROUND1: &str = "QUARTIER_ENCLAVE_DKG_ROUND1";
/// Domain tag of a coordinator's signature on a signing request.
pub const TAG_COORDINATOR: &str = "QUARTIER_ENCLAVE_COORDINATOR";
/// Domain tag of a signing package's hash, as a member remembers the
/// package it gave a share for.
pub const TAG_SIGNING_PACKAGE: &str = "QUARTIER_ENCLAVE_SIGNING_PACKAGE";

/// What the enclave was built to trust (a real TEE measures it in): the
/// attestation roots (one per vendor) its peers' quotes must verify under,
/// the vendor mix a committee needs, and its own measurement, the only one
/// it forms a committee with.
#[derive(Clone)]
struct Trust {
    roots: Vec<AttestationRoot>,
    vendors: VendorPolicy,
    measurement: Measurement,
}

/// Round 2's secret and the others' round-1 packages it ran with, under
/// the digest of the round-1 set it was given.
type Round2 = (
    hash::Digest,
    frost::keys::dkg::round2::SecretPackage,
    BTreeMap<frost::Identifier, frost::keys::dkg::round1::Package>,
);

/// How many round-2 runs (round-1 sets) a member keeps until its DKG
/// finishes.
const KEPT_ROUND2: usize = 4;

/// The digest of a DKG's round-1 set, as the coordinator sends it in round
/// 2 and names it in the finish.
pub fn round1_digest(round1: &BTreeMap<u16, SignedPackage>) -> hash::Digest {
    let mut parts: Vec<Vec<u8>> = Vec::with_capacity(round1.len());
    for (index, (package, signature)) in round1 {
        parts.push(
            [
                index.to_le_bytes().as_slice(),
                &(package.len() as u64).to_le_bytes(),
                package,
                signature,
            ]
            .concat(),
        );
    }
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    hash::tagged(TAG_DKG_ROUND1_SET, &parts)
}

/// Domain tag of [`round1_digest`].
pub const TAG_DKG_ROUND1_SET: &str = "QUARTIER_ENCLAVE_DKG_ROUND1_SET";

/// One enclave.
pub struct EnclaveService {
    trust: Trust,
    rng: SimulatedPlatformRng,
    account: SigningKey,
    identity: IdentityKey,
    /// The committee every member confirmed, once there is one.
    membership: Option<Membership>,
    /// DKGs in progress, one per inviter (the first member's account; at
    /// most [`KEPT_INVITERS`]): another enclave's invitation does not end
    /// the coordinator's DKG. Not sealed.
    dkgs: BTreeMap<[u8; 32], InProgress>,
    /// DKGs that finished here and no certificate confirmed yet (at most
    /// [`KEPT_FINISHED`] per inviter, newest last).
    finished: Vec<Membership>,
    /// The latest attempt answered per inviter (the first member's
    /// account; at most [`KEPT_INVITERS`]): an earlier one is refused, and
    /// one inviter's numbers do not bind another's.
    /// With each, when it last came (by [`EnclaveService::arrivals`]).
    attempts: BTreeMap<[u8; 32], (u64, u64)>,
    /// Counts the DKG requests that started or moved a DKG here: past
    /// [`KEPT_INVITERS`], the inviter heard from longest ago is forgotten
    /// (not the one with the lowest attempt, a number each inviter picks).
    arrivals: u64,
    /// How many times a request changed what must survive a restart (a
    /// DKG's finish or confirmation, an epoch key created or received; not
    /// sealed itself): the host seals when it moves.
    durable_changes: u64,
    /// Epoch keys the chain published, by epoch (what clearing uses).
    epoch_keys: BTreeMap<Epoch, EpochKeyPair>,
    /// Keys created or received and not yet seen published: when the member
    /// whose turn an epoch is does not answer, two others may each create
    /// one, and only the one the chain publishes may be used.
    candidates: Vec<([u8; 32], EpochKeyPair)>,
    auctioneers: BTreeMap<RegionId, Auctioneer>,
    reports: BTreeMap<(RegionId, Slot), SlotReport>,
    /// Open signing sessions by (coordinator, session id): the message,
    /// the nonces and the commitments sent (sent again for the same
    /// request, which a lost answer makes the coordinator repeat).
    sessions: BTreeMap<(u16, u64), OpenSession>,
    /// Shares given, by (coordinator, session id), with their package's
    /// hash: the same package asked again gets the same share.
    shares_given: BTreeMap<(u16, u64), (hash::Digest, Vec<u8>)>,
    /// Each coordinator's latest session id: ids only increase, so a
    /// request is never answered twice.
    last_session: BTreeMap<u16, u64>,
    /// Every key of an epoch before this one is erased (see
    /// [`KEPT_EPOCHS_BEHIND`]).
    erased_below: Epoch,
    /// The chain's enclave registry as this enclave verified it
    /// ([`Self::observe_registry`]); a DKG runs only among its members.
    /// Not sealed: the host shows it again after a restart.
    registry: Option<Registry>,
    /// Per chain, the highest finalized block this enclave took (a batch's
    /// or the registry's): none lower of that chain is taken after it (a
    /// host showing another chain's registry in between does not reset
    /// it). At most [`KEPT_CHAINS`], the lowest heights dropped first. Not
    /// sealed.
    chain_heights: BTreeMap<[u8; 32], u64>,
    /// Per chain, the light-client anchor with the validator-set changes
    /// this enclave learnt ([`EnclaveService::learn_validator_sets`]): a
    /// certificate is checked against the set of its epoch. At most
    /// [`KEPT_CHAINS`]; not sealed (the host teaches them again).
    anchors: BTreeMap<[u8; 32], ChainAnchor>,
    /// The latest block time (ms) of the committee's chain under a
    /// certificate this enclave checked: the clock the host's choice of
    /// epochs is held to (not sealed: a restart starts without one).
    certified_time_ms: Option<u64>,
}

pub use quartier_enclave_proto::epoch::KEPT_EPOCHS_BEHIND;

/// How many chains' latest heights an enclave keeps (see
/// `EnclaveService::chain_heights`).
pub const KEPT_CHAINS: usize = 16;

// Every region's reports while each member of the largest committee waits
// its turn fit in what an enclave keeps (the host also stops clearing ahead
// at half of it).
const _: () =
    assert!(quartier_ledger::MAX_SEALED_REGIONS * quartier_ledger::MAX_COMMITTEE <= KEPT_REPORTS);

/// What the enclave verified of the chain's mode B registry: at a height
/// a quorum of the validators finalized, for the chain whose genesis hashes
/// to `chain`.
#[derive(Clone, Debug)]
struct Registry {
    chain: [u8; 32],
    /// The policy's threshold (`None` only from the test-only
    /// [`EnclaveService::trust_registry_unverified`]: any).
    threshold: Option<u16>,
    /// The registered enclaves the host showed (each proven).
    enclaves: BTreeMap<AccountId, quartier_ledger::Enclave>,
    /// The measurements the chain allows now.
    measurements: std::collections::BTreeSet<Measurement>,
    /// The committee in office, if any.
    committee: Option<quartier_ledger::Committee>,
}

impl Registry {
    /// Whether a DKG of `members` (quotes verified: identity, account and
    /// measurement each) for `chain` and `t` is one the chain can seat.
    fn admits(
        &self,
        chain: &[u8; 32],
        t: u16,
        members: &[([u8; 32], [u8; 32], Measurement)],
    ) -> bool {
        *chain == self.chain
            && self.threshold.is_none_or(|policy| policy == t)
            // No committee in office, or one whose members a revocation
            // evicted: a replacement forms outside it (and takes office
            // only by the validators' vote).
            && self.committee.as_ref().is_none_or(|c| {
                c.evicting()
                    && members
                        .iter()
                        .all(|(_, account, _)| !c.members.contains(&AccountId(*account)))
            })
            && members.iter().all(|(identity, account, measurement)| {
                self.measurements.contains(measurement)
                    && self.enclaves.get(&AccountId(*account)).is_some_and(|e| {
                        e.identity_key == *identity && e.measurement == *measurement
                    })
            })
    }
}

/// Records of the chain's state as the host shows them to its enclave: a
/// finalized block, its certificate and proofs under its state root.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
pub struct FinalizedRecords {
    /// A finalized block's canonical encoding.
    pub block: Vec<u8>,
    /// Its simplex finalization certificate, encoded.
    pub finalization: Vec<u8>,
    /// Proofs of records under its state root.
    pub proofs: Vec<StateProof>,
}

impl EnclaveService {
    /// A fresh enclave on `platform`: a new account key and identity key,
    /// from the enclave's own randomness.
    ///
    /// # Errors
    /// [`ServiceError::State`] if the platform has no randomness to give.
    pub fn new(platform: &SimulatedPlatform) -> Result<EnclaveService, ServiceError> {
        let mut rng = SimulatedPlatformRng::new()?;
        let mut seed = [0u8; 32];
        rng.0.fill_bytes(&mut seed);
        let account = SigningKey::from_bytes(&seed);
        seed.zeroize();
        let identity = IdentityKey::generate(&mut rng.0);
        Ok(EnclaveService {
            trust: platform.trust(),
            rng,
            account,
            identity,
            membership: None,
            dkgs: BTreeMap::new(),
            finished: Vec::new(),
            attempts: BTreeMap::new(),
            arrivals: 0,
            durable_changes: 0,
            epoch_keys: BTreeMap::new(),
            candidates: Vec::new(),
            auctioneers: BTreeMap::new(),
            reports: BTreeMap::new(),
            sessions: BTreeMap::new(),
            shares_given: BTreeMap::new(),
            last_session: BTreeMap::new(),
            erased_below: Epoch(0),
            registry: None,
            chain_heights: BTreeMap::new(),
            anchors: BTreeMap::new(),
            certified_time_ms: None,
        })
    }

    /// The enclave's chain account (it signs its own transactions).
    pub fn account(&self) -> AccountId {
        AccountId(self.account.verifying_key().to_bytes())
    }

    /// The key that signs the enclave's chain transactions; it never leaves
    /// the enclave in a real TEE. The host uses it here to sign what the
    /// enclave decided (simulated boundary).
    pub fn account_key(&self) -> &SigningKey {
        &self.account
    }

    /// The identity public key epoch secrets and DKG packages are sealed to.
    pub fn identity_key(&self) -> [u8; 32] {
        self.identity.public_key()
    }

    /// The report data its quote must carry: identity key ‖ account.
    pub fn report_data(&self) -> [u8; 64] {
        self.identity.report_data(self.account().0)
    }

    /// The group key, once the DKG finished.
    pub fn group_key(&self) -> Option<GroupPublicKey> {
        let m = self.membership.as_ref()?;
        m.group_key().ok()
    }

    /// The group key of the committee in office in the registry this
    /// enclave verified last ([`Self::observe_registry`]).
    pub fn registry_committee(&self) -> Option<GroupPublicKey> {
        self.registry
            .as_ref()
            .and_then(|r| r.committee.as_ref())
            .map(|c| c.group_key)
    }

    /// The accounts of the committee this member ran its DKG with
    /// (ascending), once the DKG finished: what its vote must name.
    pub fn committee_members(&self) -> Option<Vec<AccountId>> {
        let m = self.membership.as_ref()?;
        m.key.as_ref()?;
        Some(m.accounts.iter().map(|a| AccountId(*a)).collect())
    }

    /// The account of the committee member whose identity key is
    /// `identity` (as the DKG's quotes bound them), if any.
    pub fn member_with_identity(&self, identity: &[u8; 32]) -> Option<AccountId> {
        let m = self.membership.as_ref()?;
        m.key.as_ref()?;
        let i = m.identities.iter().position(|k| k == identity)?;
        m.accounts.get(i).map(|a| AccountId(*a))
    }

    /// How many members must sign for this member's committee, once its
    /// DKG finished.
    pub fn committee_threshold(&self) -> Option<u16> {
        let m = self.membership.as_ref()?;
        m.key.as_ref()?;
        Some(m.t)
    }

    /// The chain this member's committee serves, once it is in one.
    fn chain(&self) -> Result<[u8; 32], ServiceError> {
        self.membership
            .as_ref()
            .map(|m| m.chain)
            .ok_or(ServiceError::State("no committee"))
    }

    /// DKG round 1: this member is `index` of the committee whose members'
    /// quotes are `members` (ascending by account, as on chain); returns its
    /// round-1 package, signed by its account key.
    ///
    /// Every quote must verify under the enclave's attestation root with its
    /// own measurement (it forms a committee only with copies of its own
    /// code), `t` must be a majority and the committee at most
    /// [`MAX_COMMITTEE`], and once a committee is confirmed here the
    /// membership is fixed: anyone can reach the RPC, and a member named by
    /// a caller would be sent the clearing state. Until then each inviter
    /// (the first member) has one DKG in progress here, started over only
    /// for a later `attempt` of its own (the same request again gets the
    /// same answer); the DKGs this member finished stay until a
    /// certificate confirms one.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] for a quote that does not verify, an index
    /// that is not this member, accounts out of order, a minority `t` or
    /// too many members; [`ServiceError::State`] once the committee is
    /// confirmed, or for an attempt not later than the inviter's last one
    /// this member answered.
    pub fn dkg_round1(
        &mut self,
        index: u16,
        t: u16,
        attempt: u64,
        chain: [u8; 32],
        members: Vec<Quote>,
        invitation: &[u8; 64],
    ) -> Result<SignedPackage, ServiceError> {
        if self.membership.is_some() {
            return Err(ServiceError::State("committee formed"));
        }
        let request = hash::tagged(
            TAG_DKG_INVITATION,
            &[
                &invitation_message(&chain, t, attempt, &members).0,
                &index.to_le_bytes(),
                invitation,
            ],
        );
        if let Some(d) = self.dkgs.values().find(|d| d.round1_answer.0 == request) {
            return Ok(d.round1_answer.1.clone());
        }
        let n = u16::try_from(members.len()).map_err(|_| ServiceError::Invalid)?;
        if !(2..=MAX_COMMITTEE).contains(&n) || t <= n / 2 || t > n {
            return Err(ServiceError::Invalid);
        }
        let allowed = std::collections::BTreeSet::from([self.trust.measurement]);
        let mut seats = Vec::with_capacity(members.len());
        let mut identities = Vec::with_capacity(members.len());
        let mut accounts: Vec<[u8; 32]> = Vec::with_capacity(members.len());
        let mut vendors = Vec::with_capacity(members.len());
        for quote in &members {
            let (vendor, attested) = verify_vendor(&self.trust.roots, quote, &allowed)
                .map_err(|_| ServiceError::Invalid)?;
            vendors.push(vendor);
            let (identity, account) = attested.report_data.split_at(32);
            let account: [u8; 32] = account.try_into().map_err(|_| ServiceError::Invalid)?;
            if accounts.last().is_some_and(|last| *last >= account) {
                return Err(ServiceError::Invalid);
            }
            let identity: [u8; 32] = identity.try_into().map_err(|_| ServiceError::Invalid)?;
            seats.push((identity, account, attested.measurement));
            identities.push(identity);
            accounts.push(account);
        }
        // The chain's registry as this enclave verified it: every member
        // registered with this identity and measurement, the measurement
        // still allowed, the policy's t, no committee in office. Before,
        // the inviter's host chose t and the members among any genuine
        // enclaves, registered or not.
        let registry = self
            .registry
            .as_ref()
            .ok_or(ServiceError::State("no verified registry of the chain yet"))?;
        if !registry.admits(&chain, t, &seats) {
            return Err(ServiceError::Chain(ChainError::NotSeated));
        }
        // The vendor mix the enclave was built to require: a committee of
        // one vendor's hardware (or one where a vendor holds t) is refused
        // here, whatever the chain would say.
        if !self.trust.vendors.admits(&vendors, t) {
            return Err(ServiceError::Invalid);
        }
        if identities.get(usize::from(index)) != Some(&self.identity_key())
            || accounts.get(usize::from(index)) != Some(&self.account().0)
        {
            return Err(ServiceError::Invalid);
        }
        // Invited by the committee's first member (its coordinator), for
        // exactly these members and this t: nobody else starts a DKG here.
        let first = accounts.first().ok_or(ServiceError::Invalid)?;
        verify_account(
            first,
            &invitation_message(&chain, t, attempt, &members).0,
            invitation,
        )?;
        // An earlier attempt of this inviter's (a replay of a recorded
        // invitation) does not start this member's DKG over.
        let inviter = *first;
        if self
            .attempts
            .get(&inviter)
            .is_some_and(|(a, _)| attempt <= *a)
        {
            return Err(ServiceError::State("not a later DKG attempt"));
        }
        let (secret, package) =
            frost::keys::dkg::part1(identifier(index)?, n, t, Rng06(&mut self.rng.0))
                .map_err(|_| ServiceError::Invalid)?;
        let package = package.serialize().map_err(|_| ServiceError::Invalid)?;
        let message = round1_message(&chain, attempt, index, &identities, &package);
        let signature = ed25519_dalek::Signer::sign(&self.account, &message.0).to_bytes();
        let arrival = self.arrival();
        self.attempts.insert(inviter, (attempt, arrival));
        forget_beyond(&mut self.attempts, KEPT_INVITERS, &inviter, |(_, at)| *at);
        let membership = Membership {
            index,
            t,
            chain,
            identities,
            accounts,
            attempt,
            round1: None,
            certificate: None,
            key: None,
            public: None,
        };
        self.dkgs.insert(
            inviter,
            InProgress {
                membership,
                dkg1: Some(secret),
                dkg2: Vec::new(),
                round1_answer: (request, (package.clone(), signature)),
                arrival,
            },
        );
        forget_beyond(&mut self.dkgs, KEPT_INVITERS, &inviter, |d| d.arrival);
        Ok((package, signature))
    }

    /// As the committee's first member: the invitation to attempt
    /// `attempt` at a DKG of `members` with threshold `t` for chain `chain`
    /// (its account signature), which every member checks in
    /// [`EnclaveService::dkg_round1`].
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] if this enclave is not `members[0]`.
    pub fn invite(
        &self,
        chain: [u8; 32],
        t: u16,
        attempt: u64,
        members: &[Quote],
    ) -> Result<[u8; 64], ServiceError> {
        let first = members.first().ok_or(ServiceError::Invalid)?;
        if first.report_data[32..] != self.account().0 {
            return Err(ServiceError::Invalid);
        }
        let message = invitation_message(&chain, t, attempt, members);
        Ok(ed25519_dalek::Signer::sign(&self.account, &message.0).to_bytes())
    }

    /// DKG round 2: given every other member's round-1 package (by index),
    /// returns this member's round-2 packages, each sealed to its recipient.
    ///
    /// # Errors
    /// [`ServiceError`] if round 1 did not run here or a package is invalid.
    pub fn dkg_round2(
        &mut self,
        round1: &BTreeMap<u16, SignedPackage>,
    ) -> Result<Vec<SealedDkgPackage>, ServiceError> {
        let arrival = self.arrival();
        // The DKG whose round 1 this member answered with the set's entry
        // at its index: every member's package, this member's its own
        // answer (the set's digest names it in the finish, so nobody may
        // vary an entry the loop below would not check: an outsider sending
        // sets that differ only in this member's own entry pushed the
        // coordinator's run out).
        let d = self
            .dkgs
            .values_mut()
            .find(|d| {
                let n = d.membership.identities.len() as u16;
                round1.keys().copied().eq(0..n)
                    && round1.get(&d.membership.index) == Some(&d.round1_answer.1)
            })
            .ok_or(ServiceError::State("no DKG with this round-1 answer"))?;
        let m = &d.membership;
        let index = m.index;
        let identities = m.identities.clone();
        // Kept until the DKG finishes: a caller's garbage does not end it,
        // the same round 2 asked again (a lost answer, or anyone on the
        // network copying the request first) gives the same shares, and a
        // retry with another member's new round-1 package runs it again.
        let secret = d
            .dkg1
            .clone()
            .ok_or(ServiceError::State("no DKG round 1"))?;
        let accounts = m.accounts.clone();
        let chain = m.chain;
        let attempt = m.attempt;
        let mut packages = BTreeMap::new();
        for (from, (bytes, signature)) in round1 {
            if *from == index {
                continue;
            }
            // Signed by the member it is from: an outsider's well-formed
            // package for that index is refused.
            let account = accounts
                .get(usize::from(*from))
                .ok_or(ServiceError::Invalid)?;
            verify_account(
                account,
                &round1_message(&chain, attempt, *from, &identities, bytes).0,
                signature,
            )?;
            let package = frost::keys::dkg::round1::Package::deserialize(bytes)
                .map_err(|_| ServiceError::Invalid)?;
            packages.insert(identifier(*from)?, package);
        }
        let (secret2, out) =
            frost::keys::dkg::part2(secret, &packages).map_err(|_| ServiceError::Invalid)?;
        let set = round1_digest(round1);
        d.dkg2.retain(|(digest, _, _)| *digest != set);
        d.dkg2.push((set, secret2, packages));
        if d.dkg2.len() > KEPT_ROUND2 {
            d.dkg2.remove(0);
        }
        // Heard from now: the last to be forgotten.
        d.arrival = arrival;
        let inviter = accounts.first().copied().unwrap_or_default();
        if let Some((_, at)) = self.attempts.get_mut(&inviter) {
            *at = arrival;
        }
        let mut sealed = Vec::new();
        for (to, identity) in identities.iter().enumerate() {
            let to = u16::try_from(to).map_err(|_| ServiceError::Invalid)?;
            let Some(package) = out.get(&identifier(to)?) else {
                continue;
            };
            let mut plain = package.serialize().map_err(|_| ServiceError::Invalid)?;
            let aad = round2_aad(attempt, index, to);
            let result = hpke_seal_auth(
                identity,
                self.identity.pair(),
                HPKE_INFO_DKG,
                &plain,
                &aad,
                &mut self.rng.0,
            );
            plain.zeroize();
            let (encapped_key, ciphertext) = result.ok_or(ServiceError::Invalid)?;
            sealed.push(SealedDkgPackage {
                from: index,
                to,
                encapped_key,
                ciphertext,
            });
        }
        Ok(sealed)
    }

    /// DKG round 3: opens the packages sealed to this member and derives its
    /// key share and the group key; returns the group key and this
    /// member's account signature over its finish ([`finish_message`]).
    /// The key is the member's only once every member confirmed it
    /// ([`EnclaveService::dkg_confirm`]).
    ///
    /// # Errors
    /// [`ServiceError`] if round 2 did not run here or a package is invalid.
    pub fn dkg_finish(
        &mut self,
        round1: &hash::Digest,
        received: &[SealedDkgPackage],
    ) -> Result<(GroupPublicKey, [u8; 64]), ServiceError> {
        // The same finish again once it succeeded (anyone on the network
        // may deliver it first): the key it gave, nothing changed.
        if let Some(done) = self
            .finished
            .iter()
            .chain(self.membership.as_ref())
            .find(|m| m.round1 == Some(*round1))
        {
            let key = done.group_key()?;
            let message = finish_message(&done.chain, done.attempt, round1, &key);
            return Ok((key, self.sign_account(&message)));
        }
        // Kept until the DKG succeeds: forged packages do not end it. The
        // round 2 of the round-1 set the coordinator names.
        if self.membership.is_some() {
            return Err(ServiceError::State("committee formed"));
        }
        let d = self
            .dkgs
            .values_mut()
            .find(|d| d.dkg2.iter().any(|(digest, _, _)| digest == round1))
            .ok_or(ServiceError::State("no DKG round 2 with this round-1 set"))?;
        let (_, secret2, round1_packages) =
            d.dkg2
                .iter()
                .find(|(digest, _, _)| digest == round1)
                .ok_or(ServiceError::State("no DKG round 2 with this round-1 set"))?;
        let m = &d.membership;
        let mut packages = BTreeMap::new();
        for p in received.iter().filter(|p| p.to == m.index) {
            // Sealed in auth mode by the member it claims to be from.
            let sender = m
                .identities
                .get(usize::from(p.from))
                .ok_or(ServiceError::Invalid)?;
            let aad = round2_aad(m.attempt, p.from, p.to);
            let mut plain = hpke_open_auth(
                self.identity.secret(),
                sender,
                &p.encapped_key,
                HPKE_INFO_DKG,
                &p.ciphertext,
                &aad,
            )
            .ok_or(ServiceError::Invalid)?;
            let package = frost::keys::dkg::round2::Package::deserialize(&plain)
                .map_err(|_| ServiceError::Invalid);
            plain.zeroize();
            packages.insert(identifier(p.from)?, package?);
        }
        let (key, public) = frost::keys::dkg::part3(secret2, round1_packages, &packages)
            .map_err(|_| ServiceError::Invalid)?;
        let mut done = m.clone();
        done.round1 = Some(*round1);
        done.key = Some(key);
        done.public = Some(public);
        let group = done.group_key()?;
        let message = finish_message(&done.chain, done.attempt, round1, &group);
        // Its secrets go; its round-1 answer stays (a replayed invitation
        // gets it, and starts nothing).
        d.dkg1 = None;
        d.dkg2.clear();
        let inviter = done.accounts.first().copied().unwrap_or_default();
        self.finished.push(done);
        let of_inviter = |m: &Membership| m.accounts.first() == Some(&inviter);
        if self.finished.iter().filter(|m| of_inviter(m)).count() > KEPT_FINISHED
            && let Some(oldest) = self.finished.iter().position(of_inviter)
        {
            self.finished.remove(oldest);
        }
        let inviters: std::collections::BTreeSet<[u8; 32]> = self
            .finished
            .iter()
            .filter_map(|m| m.accounts.first().copied())
            .collect();
        if inviters.len() > KEPT_INVITERS
            && let Some(oldest) = self.finished.iter().position(|m| !of_inviter(m))
        {
            self.finished.remove(oldest);
        }
        self.durable_changes += 1;
        Ok((group, self.sign_account(&message)))
    }

    /// DKG confirmation: `signatures` (by member index) are every member's
    /// account signature over a finish this member's DKG ended with (the
    /// same round-1 set and group key): that key becomes the member's
    /// committee key, whatever DKG it runs meanwhile. Before, a member that
    /// finished while another could not held a key no committee could use
    /// and refused every later DKG. Anyone may deliver a certificate (the
    /// hosts of confirmed members do, until the committee is in office).
    ///
    /// # Errors
    /// [`ServiceError::State`] without a finished DKG of that round-1 set;
    /// [`ServiceError::Invalid`] unless every member signed it.
    pub fn dkg_confirm(
        &mut self,
        round1: &hash::Digest,
        signatures: &[[u8; 64]],
    ) -> Result<GroupPublicKey, ServiceError> {
        if let Some(m) = self.membership.as_ref() {
            // Confirmed already: the same certificate again.
            if m.round1 != Some(*round1) {
                return Err(ServiceError::State("committee formed"));
            }
            return m.check_certificate(round1, signatures);
        }
        let at = self
            .finished
            .iter()
            .position(|m| m.round1 == Some(*round1))
            .ok_or(ServiceError::State("no finished DKG with this round-1 set"))?;
        let group = self.finished[at].check_certificate(round1, signatures)?;
        let mut confirmed = self.finished.remove(at);
        confirmed.certificate = Some(signatures.to_vec());
        self.membership = Some(confirmed);
        self.durable_changes += 1;
        self.finished.clear();
        self.dkgs.clear();
        Ok(group)
    }

    /// How many times a request changed what must survive a restart (a
    /// DKG's finish or confirmation, an epoch key created or received): a
    /// host seals before it sends the answer of a request that moved it.
    pub fn durable_changes(&self) -> u64 {
        self.durable_changes
    }

    /// The certificate of this member's confirmed committee (the round-1
    /// set and every member's signature over the finish), for its host to
    /// deliver to members that have not confirmed.
    pub fn dkg_certificate(&self) -> Option<([u8; 32], Vec<[u8; 64]>)> {
        let m = self.membership.as_ref()?;
        Some((m.round1?.0, m.certificate.clone()?))
    }

    /// The next arrival number.
    fn arrival(&mut self) -> u64 {
        self.arrivals = self.arrivals.saturating_add(1);
        self.arrivals
    }

    /// This enclave's account signature over `message`.
    fn sign_account(&self, message: &hash::Digest) -> [u8; 64] {
        ed25519_dalek::Signer::sign(&self.account, &message.0).to_bytes()
    }

    /// Creates the key of `epoch` and seals its secret to every other member.
    ///
    /// # Errors
    /// [`ServiceError::State`] without a committee.
    pub fn create_epoch_key(
        &mut self,
        epoch: Epoch,
    ) -> Result<([u8; 32], Vec<EpochKeyShare>), ServiceError> {
        let (others, context) = self.share_recipients()?;
        let key = EpochKeyPair::generate(epoch, &mut self.rng.0);
        let shares = share(&key, &self.identity, &others, &context.0, &mut self.rng.0);
        let public = key.public_key();
        self.add_candidate(self.identity_key(), key)?;
        Ok((public, shares))
    }

    /// The other members' identities an epoch key is sealed to, and the
    /// group key the shares are bound to.
    fn share_recipients(&self) -> Result<(Vec<[u8; 32]>, GroupPublicKey), ServiceError> {
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        let others = m
            .identities
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != usize::from(m.index))
            .map(|(_, k)| *k)
            .collect();
        let context = self
            .group_key()
            .ok_or(ServiceError::State("no committee"))?;
        Ok((others, context))
    }

    /// The published key of `epoch` this member holds (or, before it is
    /// published, the candidate it created itself), sealed again to every
    /// other member (as in [`EnclaveService::create_epoch_key`]): a member
    /// that missed its share (down when it was sent, or the creator's seal
    /// failed before the shares left) gets it from any member that holds
    /// it; the others refuse it as one they hold.
    ///
    /// # Errors
    /// [`ServiceError::State`] without a committee or that key.
    pub fn reshare_epoch_key(&mut self, epoch: Epoch) -> Result<Vec<EpochKeyShare>, ServiceError> {
        let (others, context) = self.share_recipients()?;
        let me = self.identity_key();
        let key = self
            .epoch_keys
            .get(&epoch)
            .or_else(|| {
                self.candidates
                    .iter()
                    .find(|(from, k)| *from == me && k.epoch() == epoch)
                    .map(|(_, k)| k)
            })
            .ok_or(ServiceError::State("no such key"))?;
        Ok(share(
            key,
            &self.identity,
            &others,
            &context.0,
            &mut self.rng.0,
        ))
    }

    /// Takes an epoch secret another member of this committee sealed to
    /// this one (HPKE auth mode from the member's identity, bound to the
    /// group key): a key planted by anyone else is refused, so never held,
    /// signed or cleared with.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] if it does not open to `public_key` from a
    /// member; [`ServiceError::State`] without a committee.
    pub fn receive_epoch_key(
        &mut self,
        share: &EpochKeyShare,
        public_key: &[u8; 32],
    ) -> Result<(), ServiceError> {
        let context = self
            .group_key()
            .ok_or(ServiceError::State("no committee"))?;
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        // A share of an epoch published and held here, or passed, is a
        // replay: taking it could bring back an erased secret. A published
        // key this member missed (down, or caught up from a peer's state,
        // whose keys it does not take) is taken, in any order.
        if self.gone(share.epoch) || self.epoch_keys.contains_key(&share.epoch) {
            return Err(ServiceError::State("epoch already published"));
        }
        // Verified first: the answer says nothing about the candidates to
        // anyone who is not a member.
        let key = self
            .identity
            .receive(share, public_key, &m.identities, &context.0)
            .map_err(|_| ServiceError::Invalid)?;
        if self
            .candidates
            .iter()
            .any(|(_, k)| k.epoch() == share.epoch && k.public_key() == *public_key)
        {
            return Ok(());
        }
        self.add_candidate(share.from, key)
    }

    /// The most open signing sessions kept per coordinator.
    const SESSIONS_PER_COORDINATOR: usize = 8;

    /// The most candidate keys kept per sender, and per sender and epoch
    /// (a sender that restarted creates its epoch's key again): no member
    /// crowds out another's keys, and none is ever dropped for a later one
    /// (a compromised member could otherwise make the others drop the key
    /// it had signed and published, so that nobody holds it).
    const CANDIDATES_PER_SENDER: usize = 4;
    const CANDIDATES_PER_SENDER_AND_EPOCH: usize = 2;

    /// Keeps `key`, from the member with identity `from` (this one for a
    /// key it created), unless that sender has all its places taken.
    ///
    /// # Errors
    /// [`ServiceError::State`] when they are.
    fn add_candidate(&mut self, from: [u8; 32], key: EpochKeyPair) -> Result<(), ServiceError> {
        let of_sender = self.candidates.iter().filter(|(s, _)| *s == from);
        let same_epoch = of_sender
            .clone()
            .filter(|(_, k)| k.epoch() == key.epoch())
            .count();
        if of_sender.count() >= Self::CANDIDATES_PER_SENDER
            || same_epoch >= Self::CANDIDATES_PER_SENDER_AND_EPOCH
        {
            return Err(ServiceError::State("too many keys from this member"));
        }
        self.candidates.push((from, key));
        self.durable_changes += 1;
        Ok(())
    }

    /// Whether `epoch`'s key is gone here: erased on the schedule, or every
    /// auctioneer has entered a later epoch.
    fn gone(&self, epoch: Epoch) -> bool {
        epoch < self.erased_below
            || (!self.auctioneers.is_empty()
                && self.auctioneers.values().all(|a| epoch < a.erased_below()))
    }

    /// Takes the epoch keys the chain published, as `proven` shows them: a
    /// block a quorum of the committee's chain's validators finalized, and
    /// under its state root the genesis record and the `Epochs` record.
    /// Each published key this member holds becomes the one it clears with,
    /// and keys of epochs [`KEPT_EPOCHS_BEHIND`] before the newest are
    /// erased: on the chain's schedule, not on one a host makes up (a host
    /// can delay it by withholding newer records, not advance it; before,
    /// a host could name a far epoch and have its enclave erase every key,
    /// or settle a candidate the chain never published). Returns whether
    /// anything changed (the state must then be sealed again).
    ///
    /// # Errors
    /// [`ServiceError::Chain`] naming the failed check; [`ServiceError::State`]
    /// before a committee.
    pub fn observe_epochs(
        &mut self,
        genesis: &Genesis,
        proven: &FinalizedRecords,
    ) -> Result<bool, ServiceError> {
        let chain = self.chain()?;
        if genesis.chain_id().0.0 != chain {
            return Err(ServiceError::Chain(ChainError::OtherChain));
        }
        // An older block than one taken is fine here: published keys only
        // accumulate and erasure never goes back, so an older record can
        // only settle a key the chain published (a node behind the one a
        // batch proof came from does not stop the keys).
        let header = self.certified_header(genesis, &proven.block, &proven.finalization)?;
        let mut genesis_shown = false;
        let mut epochs = None;
        for proof in &proven.proofs {
            match proof.key {
                StateKey::Genesis => {
                    header_genesis(&header, genesis, proof)?;
                    genesis_shown = true;
                }
                StateKey::Epochs => {
                    epochs = header
                        .verify::<BTreeMap<Epoch, [u8; 32]>>(&proof.key, proof)
                        .map_err(ChainError::Light)?;
                }
                _ => return Err(ServiceError::Chain(ChainError::NotRegistry)),
            }
        }
        let (true, Some(epochs)) = (genesis_shown, epochs) else {
            return Err(ServiceError::Chain(ChainError::NotRegistry));
        };
        let changed = epochs.iter().fold(false, |changed, (e, k)| {
            self.settle_published(*e, k) || changed
        });
        self.took(&chain, &header);
        Ok(changed)
    }

    /// [`Self::settle_published`] as the host says, unchecked: for tests,
    /// compiled only with the `testing` feature (the enclave host never
    /// turns it on; see [`Self::observe_epochs`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn settle_epoch_key(&mut self, epoch: Epoch, public_key: &[u8; 32]) -> bool {
        self.settle_published(epoch, public_key)
    }

    /// The chain published `public_key` for `epoch`: that key, if this
    /// member holds it, becomes the one it clears with, and the other
    /// candidates of that epoch are dropped. Returns whether anything changed.
    fn settle_published(&mut self, epoch: Epoch, public_key: &[u8; 32]) -> bool {
        // The schedule follows what was published, held here or not: a
        // member that missed a key's share still erases the old ones.
        let erased = self.erase_before(Epoch(epoch.0.saturating_sub(KEPT_EPOCHS_BEHIND)));
        if self.gone(epoch)
            || self.epoch_keys.get(&epoch).map(EpochKeyPair::public_key) == Some(*public_key)
        {
            return erased;
        }
        let Some(i) = self
            .candidates
            .iter()
            .position(|(_, k)| k.epoch() == epoch && k.public_key() == *public_key)
        else {
            return erased;
        };
        let (_, key) = self.candidates.swap_remove(i);
        self.candidates.retain(|(_, k)| k.epoch() > epoch);
        self.epoch_keys.insert(epoch, key);
        true
    }

    /// Erases every key of an epoch before `epoch`: the published ones, the
    /// candidates and each auctioneer's (see [`KEPT_EPOCHS_BEHIND`]).
    /// Returns whether the mark moved (then the state must be sealed again).
    fn erase_before(&mut self, epoch: Epoch) -> bool {
        let moved = epoch > self.erased_below;
        self.erased_below = self.erased_below.max(epoch);
        let floor = self.erased_below;
        self.epoch_keys.retain(|e, _| *e >= floor);
        self.candidates.retain(|(_, k)| k.epoch() >= floor);
        for a in self.auctioneers.values_mut() {
            a.erase_before(floor);
        }
        moved
    }

    /// The public key of `epoch` this member settled as the chain's
    /// published one (not a candidate).
    pub fn settled_epoch_key(&self, epoch: Epoch) -> Option<[u8; 32]> {
        self.epoch_keys.get(&epoch).map(EpochKeyPair::public_key)
    }

    /// The public key this member holds for `epoch`, published or not.
    pub fn epoch_key(&self, epoch: Epoch) -> Option<[u8; 32]> {
        self.epoch_keys
            .get(&epoch)
            .or_else(|| {
                self.candidates
                    .iter()
                    .map(|(_, k)| k)
                    .find(|k| k.epoch() == epoch)
            })
            .map(EpochKeyPair::public_key)
    }

    /// The public key of the candidate for `epoch` this member created
    /// itself, if it holds one (a member publishes only its own: a key
    /// another member planted, perhaps a different one at each member,
    /// never holds it up).
    pub fn own_epoch_key(&self, epoch: Epoch) -> Option<[u8; 32]> {
        let me = self.identity_key();
        self.candidates
            .iter()
            .find(|(from, k)| *from == me && k.epoch() == epoch)
            .map(|(_, k)| k.public_key())
    }

    /// The latest block time (ms) of the committee's chain under a
    /// certificate this enclave checked (registry, epochs or a batch), if
    /// it checked one since it started.
    pub fn certified_time_ms(&self) -> Option<u64> {
        self.certified_time_ms
    }

    /// Checks `finalization` over `block` against `genesis`'s validators and
    /// that the block is not older than one taken before (the caller moves
    /// [`Self::chain_heights`] on once it took what the block shows).
    fn take_header(
        &mut self,
        genesis: &Genesis,
        block: &[u8],
        finalization: &[u8],
    ) -> Result<FinalizedHeader, ServiceError> {
        let header = self.certified_header(genesis, block, finalization)?;
        let chain = genesis.chain_id().0.0;
        if self
            .chain_heights
            .get(&chain)
            .is_some_and(|taken| header.height < *taken)
        {
            return Err(ServiceError::Chain(ChainError::Stale));
        }
        Ok(header)
    }

    /// Checks `finalization` over `block` against the validators of its
    /// epoch, as the changes learnt for `genesis`'s chain say.
    fn certified_header(
        &mut self,
        genesis: &Genesis,
        block: &[u8],
        finalization: &[u8],
    ) -> Result<FinalizedHeader, ServiceError> {
        let anchor = self.anchor(genesis)?;
        anchor
            .verify_finalized(block, finalization, &mut self.rng.0)
            .map_err(|e| ServiceError::Chain(ChainError::Light(e)))
    }

    /// The anchor of `genesis`'s chain: the one with the changes learnt,
    /// or the genesis validators'.
    fn anchor(&self, genesis: &Genesis) -> Result<ChainAnchor, ServiceError> {
        match self.anchors.get(&genesis.chain_id().0.0) {
            Some(anchor) => Ok(anchor.clone()),
            None => Ok(ChainAnchor::from_genesis(genesis).map_err(ChainError::Light)?),
        }
    }

    /// How many validator sets this enclave knows of `genesis`'s chain
    /// (1: the genesis set only).
    pub fn validator_sets_known(&self, genesis: &Genesis) -> usize {
        self.anchors
            .get(&genesis.chain_id().0.0)
            .map_or(1, |a| a.validator_sets().len())
    }

    /// Learns the chain's validator-set changes from its host: `changes`
    /// are all of them, oldest first (each the block that ends an epoch,
    /// its certificate by the set before and the proof of the chain's
    /// `ValidatorSets` record); those already learnt are skipped, each new
    /// one must follow from the sets before it. Returns how many sets it
    /// knows now.
    ///
    /// # Errors
    /// [`ChainError::Light`] for the first change that does not follow;
    /// what was learnt before it stays.
    pub fn learn_validator_sets(
        &mut self,
        genesis: &Genesis,
        changes: &[quartier_light::EpochChange],
    ) -> Result<usize, ServiceError> {
        let chain = genesis.chain_id().0.0;
        let mut anchor = self.anchor(genesis)?;
        let mut result = Ok(());
        for change in changes.iter().skip(anchor.validator_sets().len() - 1) {
            if let Err(e) = anchor.advance(change, &mut self.rng.0) {
                result = Err(ServiceError::Chain(ChainError::Light(e)));
                break;
            }
        }
        let known = anchor.validator_sets().len();
        if known > 1 {
            self.anchors.insert(chain, anchor);
            while self.anchors.len() > KEPT_CHAINS {
                let other = self.anchors.keys().find(|c| **c != chain).copied();
                match other {
                    Some(c) => self.anchors.remove(&c),
                    None => break,
                };
            }
        }
        result.map(|()| known)
    }

    /// Records that `header`'s block of `chain` was taken (its height, and
    /// its time as the latest certified time of the committee's chain).
    fn took(&mut self, chain: &[u8; 32], header: &FinalizedHeader) {
        let chain = *chain;
        if self.membership.as_ref().is_some_and(|m| m.chain == chain) {
            self.certified_time_ms = self.certified_time_ms.max(Some(header.time_ms));
        }
        let taken = self.chain_heights.entry(chain).or_insert(0);
        *taken = (*taken).max(header.height);
        while self.chain_heights.len() > KEPT_CHAINS {
            let lowest = self
                .chain_heights
                .iter()
                .filter(|(c, _)| **c != chain)
                .min_by_key(|(_, h)| **h)
                .map(|(c, _)| *c);
            match lowest {
                Some(c) => self.chain_heights.remove(&c),
                None => break,
            };
        }
    }

    /// Takes the chain's mode B registry as `proven` shows it: a block a
    /// quorum of `genesis`'s validators finalized, and under its state root
    /// the allowed measurements, the committee record (present or absent)
    /// and the registration of each enclave the host wants considered. A
    /// DKG then runs only among enclaves registered there with their
    /// quotes' identity and measurement, for the policy's threshold, while
    /// no committee is in office. The height never goes back for a chain:
    /// a host can withhold a newer registry (a revocation, say), not show
    /// an older one after a newer. Returns the height taken.
    ///
    /// # Errors
    /// [`ServiceError::Chain`] naming the failed check; a registry older
    /// than the one held; one without the measurements or committee proof.
    pub fn observe_registry(
        &mut self,
        genesis: &Genesis,
        proven: &FinalizedRecords,
    ) -> Result<u64, ServiceError> {
        let chain = genesis.chain_id().0.0;
        if self.membership.as_ref().is_some_and(|m| m.chain != chain) {
            return Err(ServiceError::Chain(ChainError::OtherChain));
        }
        let policy = genesis
            .sealed_market
            .as_ref()
            .ok_or(ServiceError::Chain(ChainError::NoSealedMarket))?;
        let header = self.take_header(genesis, &proven.block, &proven.finalization)?;
        let mut genesis_shown = false;
        let mut measurements = None;
        let mut committee = None;
        let mut enclaves = BTreeMap::new();
        for proof in &proven.proofs {
            match proof.key {
                StateKey::Measurements => {
                    measurements = header
                        .verify(&proof.key, proof)
                        .map_err(ChainError::Light)?;
                }
                StateKey::Genesis => {
                    header_genesis(&header, genesis, proof)?;
                    genesis_shown = true;
                }
                StateKey::Committee => {
                    let record: Option<quartier_ledger::Committee> = header
                        .verify(&proof.key, proof)
                        .map_err(ChainError::Light)?;
                    committee = Some(record);
                }
                StateKey::Enclave(account) => {
                    if let Some(e) = header
                        .verify(&proof.key, proof)
                        .map_err(ChainError::Light)?
                    {
                        enclaves.insert(account, e);
                    }
                }
                _ => return Err(ServiceError::Chain(ChainError::NotRegistry)),
            }
        }
        let (true, Some(measurements), Some(committee)) = (genesis_shown, measurements, committee)
        else {
            return Err(ServiceError::Chain(ChainError::NotRegistry));
        };
        self.took(&chain, &header);
        self.registry = Some(Registry {
            chain,
            threshold: Some(policy.threshold),
            enclaves,
            measurements,
            committee,
        });
        self.erase_handed_over();
        Ok(header.height)
    }

    /// Takes `members` as the registered enclaves of `chain`, every
    /// threshold as the policy's, unchecked: for tests of the DKG itself,
    /// compiled only with the `testing` feature (the enclave host never
    /// turns it on; see [`Self::observe_registry`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn trust_registry_unverified(&mut self, chain: [u8; 32], members: &[Quote]) {
        let enclaves = members
            .iter()
            .map(|q| {
                let (identity, account) = q.report_data.split_at(32);
                (
                    AccountId(account.try_into().unwrap_or([0; 32])),
                    quartier_ledger::Enclave {
                        identity_key: identity.try_into().unwrap_or([0; 32]),
                        measurement: q.measurement,
                        vendor: 0,
                        registered: quartier_types::Height(0),
                    },
                )
            })
            .collect();
        self.registry = Some(Registry {
            chain,
            threshold: None,
            enclaves,
            measurements: members.iter().map(|q| q.measurement).collect(),
            committee: None,
        });
    }

    /// Clears the closed slot `slot` of `region` as the chain holds it:
    /// `proven` must show the chain's [`SealedBatch`] record under the state
    /// root of a block that a quorum of the chain's validators finalized.
    /// The chain is the one this member's committee serves: `genesis` must
    /// hash to its chain id, and gives the validators and the epoch length.
    /// The host picks which finalized block, nothing else: a batch the
    /// chain never closed (one victim's order alone, to read it off the
    /// report's aggregates) is refused before any order is opened.
    ///
    /// # Errors
    /// [`ServiceError::Chain`] naming the check that failed;
    /// [`ServiceError::State`] before a committee; clearing's errors.
    pub fn clear_finalized(
        &mut self,
        genesis: &Genesis,
        region: RegionId,
        slot: Slot,
        proven: &FinalizedBatch,
    ) -> Result<&SlotReport, ServiceError> {
        if genesis.chain_id().0.0 != self.chain()? {
            return Err(ServiceError::Chain(ChainError::OtherChain));
        }
        let policy = genesis
            .sealed_market
            .as_ref()
            .ok_or(ServiceError::Chain(ChainError::NoSealedMarket))?;
        let header = self.take_header(genesis, &proven.block, &proven.finalization)?;
        header_genesis(&header, genesis, &proven.genesis)?;
        let batch: SealedBatch = header
            .verify(&StateKey::SealedBatch(region, slot), &proven.proof)
            .map_err(ChainError::Light)?
            .ok_or(ServiceError::Chain(ChainError::NoBatch))?;
        // Right after the last batch cleared here: a host that skipped one
        // would have its enclave clear from another prepaid ledger than the
        // committee's, and the difference of the two reports is the orders
        // the ledgers treat differently.
        if batch.previous != self.last_cleared(region) {
            return Err(ServiceError::Chain(ChainError::OutOfTurn));
        }
        let orders: Vec<crate::sealed::SealedOrder> =
            batch.orders.iter().map(|o| o.sealed.clone()).collect();
        let input = Batch {
            slot,
            params: batch.params,
            epoch: policy.epoch_of(slot),
            deposits: &batch.flows.deposits,
            orders: &orders,
            withdrawals: &batch.flows.withdrawals,
            traders: &batch.traders,
            expired: batch.expired,
        };
        self.clear(region, &input)?;
        let chain = self.chain()?;
        self.took(&chain, &header);
        self.reports
            .get(&(region, slot))
            .ok_or(ServiceError::State("no report"))
    }

    /// Clears `batch` as given, unchecked: for the crate's own tests and
    /// benchmarks of clearing, compiled only with the `testing`
    /// feature (the enclave host never turns it on; see
    /// [`Self::clear_finalized`]).
    ///
    /// # Errors
    /// As [`Self::clear_finalized`]'s clearing.
    #[cfg(any(test, feature = "testing"))]
    pub fn clear_unverified(
        &mut self,
        region: RegionId,
        batch: &Batch<'_>,
    ) -> Result<&SlotReport, ServiceError> {
        self.clear(region, batch)
    }

    /// Clears a closed slot of `region` (see [`Auctioneer::clear_batch`]) and
    /// keeps the report to serve receipts and to sign its summary. Only
    /// after the batch was checked against the chain
    /// ([`Self::clear_finalized`]).
    ///
    /// # Errors
    /// [`ServiceError`] if the epoch key is missing or clearing fails.
    pub(crate) fn clear(
        &mut self,
        region: RegionId,
        batch: &Batch<'_>,
    ) -> Result<&SlotReport, ServiceError> {
        let fresh = !self.auctioneers.contains_key(&region);
        if fresh {
            let auctioneer = if batch.expired || batch.epoch < self.erased_below {
                Auctioneer::after_erasure(self.chain()?, region, batch.params, self.erased_below)
            } else {
                let key = self
                    .epoch_keys
                    .get(&batch.epoch)
                    .map(EpochKeyPair::duplicate)
                    .ok_or(BatchError::MissingKey(batch.epoch.0))?;
                Auctioneer::new(self.chain()?, region, batch.params, key)
            };
            self.auctioneers.insert(region, auctioneer);
        }
        let auctioneer = self
            .auctioneers
            .get_mut(&region)
            .ok_or(ServiceError::State("no auctioneer"))?;
        for key in self.epoch_keys.values() {
            auctioneer.add_key(key.duplicate());
        }
        let report = match auctioneer.clear_batch(batch) {
            Ok(report) => report,
            Err(e) => {
                // Refused, nothing changes: no empty auctioneer is left
                // (a catch-up state with a region the chain never reported
                // is refused by the others).
                if fresh {
                    self.auctioneers.remove(&region);
                }
                return Err(e.into());
            }
        };
        // Keys of epochs every auctioneer has moved past are erased.
        let oldest = self
            .auctioneers
            .values()
            .filter_map(|a| a.epochs().first().copied())
            .min();
        if let Some(oldest) = oldest {
            self.epoch_keys.retain(|e, _| *e >= oldest);
        }
        self.reports.insert((region, batch.slot), report);
        // The oldest slot's report goes first, whatever its region: by key
        // order the lowest region lost all of its reports, then each new
        // one of it as soon as it was made, and never signed it (review).
        while self.reports.len() > KEPT_REPORTS {
            let Some(oldest) = self.reports.keys().min_by_key(|(r, s)| (*s, *r)).copied() else {
                break;
            };
            self.reports.remove(&oldest);
        }
        self.reports
            .get(&(region, batch.slot))
            .ok_or(ServiceError::State("no report"))
    }

    /// Its epoch keys (secrets) and auctioneers, for sealing or a catch-up.
    fn clearing_state(&self) -> ClearingState {
        ClearingState {
            epoch_keys: self
                .epoch_keys
                .values()
                .map(|k| (k.epoch(), k.secret_bytes()))
                .collect(),
            auctioneers: self.auctioneers.values().map(Auctioneer::export).collect(),
            erased_below: self.erased_below,
        }
    }

    /// As a member of the committee the registry's committee in office took
    /// over from: each region the successor has reported since (the chain's
    /// ledger is no longer this member's) is erased here, and once none is
    /// left, every epoch key. A revoked build keeps no more than it still
    /// has to hand over (before, its members kept every household's prepaid
    /// balance and their last epoch secrets for good).
    fn erase_handed_over(&mut self) {
        let (Some(mine), Some(c)) = (
            self.group_key(),
            self.registry.as_ref().and_then(|r| r.committee.as_ref()),
        ) else {
            return;
        };
        if c.predecessor.as_ref().is_none_or(|p| p.group_key != mine) {
            return;
        }
        let moved: Vec<RegionId> = self
            .auctioneers
            .iter()
            .filter(|(region, a)| c.ledgers.get(region) != Some(&a.ledger_digest()))
            .map(|(region, _)| *region)
            .collect();
        let mut changed = !moved.is_empty();
        for region in moved {
            self.auctioneers.remove(&region);
        }
        // The keys once the successor reported (so its members hold the
        // state, the keys of the batches it cleared among it): before, a
        // predecessor that never cleared a region erased them at once.
        let keys = !(self.epoch_keys.is_empty() && self.candidates.is_empty());
        if self.auctioneers.is_empty() && keys && c.reported {
            self.epoch_keys.clear();
            self.candidates.clear();
            self.reports.clear();
            changed = true;
        }
        if changed {
            self.durable_changes += 1;
        }
    }

    /// The committee in office as the verified registry shows it, if it
    /// took over from this member's committee and `to` is one of its
    /// members: its group key.
    fn successor_with(&self, to: &[u8; 32]) -> Option<GroupPublicKey> {
        let mine = self.group_key()?;
        let c = self.registry.as_ref()?.committee.as_ref()?;
        (c.predecessor.as_ref()?.group_key == mine && c.identities.contains(to))
            .then_some(c.group_key)
    }

    /// This member's committee is the one in office the verified registry
    /// shows, and `from` a member of the committee it took over from: that
    /// committee's group key and the first epoch this one keys.
    fn predecessor_with(&self, from: &[u8; 32]) -> Option<(GroupPublicKey, Epoch)> {
        let mine = self.group_key()?;
        let c = self.registry.as_ref()?.committee.as_ref()?;
        let p = c.predecessor.as_ref()?;
        (c.group_key == mine && p.identities.contains(from)).then_some((p.group_key, c.first_epoch))
    }

    /// Seals this member's clearing state (auctioneers and epoch keys) to
    /// the committee member with identity key `to`, for it to catch up, or
    /// to a member of the committee the chain seated in this one's place
    /// (as the verified registry shows it), for it to take over.
    ///
    /// # Errors
    /// [`ServiceError::Unsigned`] if `to` is not a member's identity.
    pub fn catch_up_for(&mut self, to: &[u8; 32]) -> Result<CatchUp, ServiceError> {
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        if m.key.is_none() || *to == self.identity_key() {
            return Err(ServiceError::Unsigned);
        }
        // To a member of this committee, or of the one the chain seated in
        // its place (the handover: bound to that committee's key).
        let context = if m.identities.contains(to) {
            self.group_key()
                .ok_or(ServiceError::State("no committee"))?
        } else {
            self.successor_with(to).ok_or(ServiceError::Unsigned)?
        };
        let mut state = self.clearing_state();
        if !m.identities.contains(to) {
            // A hand-over: the keys not yet settled here too (one the chain
            // published just before the seat, which this member no longer
            // observes); the successor settles only published ones.
            for (_, k) in &self.candidates {
                if !self.epoch_keys.contains_key(&k.epoch()) {
                    state.epoch_keys.push((k.epoch(), k.secret_bytes()));
                }
            }
        }
        let mut plain = borsh::to_vec(&state).map_err(|_| ServiceError::Invalid)?;
        state.zeroize_keys();
        let sealed = hpke_seal_auth(
            to,
            self.identity.pair(),
            HPKE_INFO_CATCH_UP,
            &plain,
            &context.0,
            &mut self.rng.0,
        );
        plain.zeroize();
        let (encapped_key, ciphertext) = sealed.ok_or(ServiceError::Invalid)?;
        let cleared = self
            .auctioneers
            .iter()
            .filter_map(|(r, a)| Some((*r, a.last_settled()?)))
            .collect();
        Ok(CatchUp {
            from: self.identity_key(),
            cleared,
            encapped_key,
            ciphertext,
        })
    }

    /// Adopts another member's clearing state, sealed to this member by
    /// another member of its committee (HPKE auth mode, bound to the group
    /// key): a state from anyone else is refused. Each region's ledger in it
    /// must be the one the committee signed in the report of its last slot
    /// (`reports`: the chain's, each with its group signature, checked here
    /// under this member's group key): one compromised member can seal any
    /// state to this one, but not get t signatures on a ledger it forged.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] if it is not from a member or does not open
    /// or decode; [`ServiceError::Unsigned`] if a region's ledger is not in
    /// a signed report; [`ServiceError::State`] without a committee or for
    /// a state older than this member's.
    pub fn catch_up(
        &mut self,
        catch_up: &CatchUp,
        reports: &[(SlotSummary, GroupSignature)],
    ) -> Result<(), ServiceError> {
        let context = self
            .group_key()
            .ok_or(ServiceError::State("no committee"))?;
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        if catch_up.from == self.identity_key() {
            return Err(ServiceError::Invalid);
        }
        // From a member of this committee, or (the handover) of the one it
        // took over from, whose reports the chain's latest are.
        let handover = if m.identities.contains(&catch_up.from) {
            None
        } else {
            Some(
                self.predecessor_with(&catch_up.from)
                    .ok_or(ServiceError::Invalid)?,
            )
        };
        let mut plain = hpke_open_auth(
            self.identity.secret(),
            &catch_up.from,
            &catch_up.encapped_key,
            HPKE_INFO_CATCH_UP,
            &catch_up.ciphertext,
            &context.0,
        )
        .ok_or(ServiceError::Invalid)?;
        let state: Result<ClearingState, _> = borsh::from_slice(&plain);
        plain.zeroize();
        // Its epoch keys and erasure mark are not taken (a compromised
        // member could plant keys of epochs far ahead, or erase every real
        // one): the member's own keys, and the published ones the others
        // reshare, are what it clears with, on its own erasure schedule.
        // A handover is the exception: the predecessor's keys of epochs
        // before this committee's first are the only ones that open the
        // batches it closed and did not report (taken as candidates: only
        // those the chain published are ever cleared with).
        let (keys, mut auctioneers, _) = state.map_err(|_| ServiceError::Invalid)?.restore()?;
        // What each region's ledger must be (its digest covers the last
        // slot settled): the chain's own record of the last report's, under
        // the committee in office the verified registry shows, when that is
        // this member's committee: reports since a hand-over are signed by
        // two committees, a region idle since by an older one still. A
        // handover needs it. Otherwise the reports given, each signed by
        // this committee.
        let recorded = self
            .registry
            .as_ref()
            .and_then(|r| r.committee.as_ref())
            .filter(|c| c.group_key == context)
            .map(|c| c.ledgers.clone());
        let expected: BTreeMap<RegionId, hash::Digest> = match recorded {
            Some(ledgers) => ledgers,
            None if handover.is_some() => return Err(ServiceError::Unsigned),
            None => {
                let chain = self.chain()?;
                for (summary, signature) in reports {
                    context
                        .verify(&report_message(&chain, summary), signature)
                        .map_err(|_| ServiceError::Unsigned)?;
                }
                reports.iter().map(|(s, _)| (s.region, s.ledger)).collect()
            }
        };
        // Every region the chain reported, at exactly its ledger (a state
        // that leaves a region out would have this member clear it from
        // nothing); no region with a ledger nobody signed.
        for (region, ledger) in &expected {
            let theirs = auctioneers.get(region).ok_or(ServiceError::Unsigned)?;
            if theirs.ledger_digest() != *ledger {
                return Err(ServiceError::Unsigned);
            }
        }
        if auctioneers
            .keys()
            .any(|region| !expected.contains_key(region))
        {
            return Err(ServiceError::Unsigned);
        }
        // Never backwards: an old state (replayed, or from a member behind
        // this one) would roll back the prepaid ledger.
        for (region, mine) in &self.auctioneers {
            let theirs = auctioneers.get(region).and_then(Auctioneer::last_settled);
            if theirs < mine.last_settled() {
                return Err(ServiceError::State(
                    "catch-up state older than this member's",
                ));
            }
        }
        for a in auctioneers.values_mut() {
            a.forget_keys(self.erased_below);
        }
        if let Some((_, first_epoch)) = handover {
            // One key an epoch from each sender, of the last few before
            // this committee's first (the erasure schedule keeps no more): a
            // compromised predecessor feeding hand-over after hand-over
            // grows nothing, nor keeps an honest one's key out.
            let oldest = Epoch(first_epoch.0.saturating_sub(KEPT_EPOCHS_BEHIND + 1));
            for (epoch, key) in keys {
                let held = self.epoch_keys.contains_key(&epoch)
                    || self
                        .candidates
                        .iter()
                        .any(|(s, k)| *s == catch_up.from && k.epoch() == epoch);
                if (oldest..first_epoch).contains(&epoch) && !self.gone(epoch) && !held {
                    self.candidates.push((catch_up.from, key));
                }
            }
            self.durable_changes += 1;
        }
        self.auctioneers = auctioneers;
        self.reports.clear();
        Ok(())
    }

    /// A report this member computed.
    pub fn report(&self, region: RegionId, slot: Slot) -> Option<&SlotReport> {
        self.reports.get(&(region, slot))
    }

    /// The latest slot this member cleared, per region.
    pub fn cleared(&self) -> Vec<(RegionId, Slot)> {
        self.auctioneers
            .iter()
            .filter_map(|(r, a)| Some((*r, a.last_settled()?)))
            .collect()
    }

    /// The latest slot of `region` this member cleared.
    pub fn last_cleared(&self, region: RegionId) -> Option<Slot> {
        self.auctioneers.get(&region)?.last_settled()
    }

    /// The auctioneer of `region`, once it cleared a batch.
    pub fn auctioneer(&self, region: RegionId) -> Option<&Auctioneer> {
        self.auctioneers.get(&region)
    }

    fn message(&self, purpose: &Purpose) -> Result<Vec<u8>, ServiceError> {
        let chain = self.chain()?;
        match purpose {
            Purpose::Report { region, slot } => self
                .reports
                .get(&(*region, *slot))
                .map(|r| report_message(&chain, &r.summary))
                .ok_or(ServiceError::Unsigned),
            Purpose::EpochKey { epoch, public_key } => {
                let held = self
                    .epoch_keys
                    .get(epoch)
                    .into_iter()
                    .chain(
                        self.candidates
                            .iter()
                            .map(|(_, k)| k)
                            .filter(|k| k.epoch() == *epoch),
                    )
                    .any(|k| k.public_key() == *public_key);
                if held {
                    Ok(epoch_key_message(&chain, *epoch, public_key))
                } else {
                    Err(ServiceError::Unsigned)
                }
            }
            Purpose::Committee => {
                let m = self
                    .membership
                    .as_ref()
                    .filter(|m| m.key.is_some())
                    .ok_or(ServiceError::Unsigned)?;
                Ok(committee_message(&chain, m.t, &m.accounts))
            }
        }
    }

    /// Signing round 1: commits to nonces for `session`, if this member
    /// computed what `purpose` names. Returns `(member index, commitments)`.
    ///
    /// # Errors
    /// [`ServiceError::Unsigned`] if it did not; [`ServiceError::State`]
    /// without a key share.
    pub fn sign_commit(
        &mut self,
        session: u64,
        purpose: &Purpose,
        by: u16,
        signature: &[u8; 64],
    ) -> Result<(u16, Vec<u8>), ServiceError> {
        let what = borsh::to_vec(purpose).map_err(|_| ServiceError::Invalid)?;
        self.check_coordinator(by, session, &what, signature)?;
        let message = self.message(purpose)?;
        // The same request again (a lost answer, or a copy someone sent
        // first): the same commitments, no new nonces.
        if let Some((m, _, commitments)) = self.sessions.get(&(by, session))
            && *m == message
        {
            let index = self
                .membership
                .as_ref()
                .ok_or(ServiceError::State("no committee"))?
                .index;
            return Ok((index, commitments.clone()));
        }
        // Each coordinator's session ids only increase: a replayed request
        // is refused, and does not replace the nonces its package is built on.
        if self
            .last_session
            .get(&by)
            .is_some_and(|last| session <= *last)
        {
            return Err(ServiceError::State("session not newer"));
        }
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        let key = m.key.as_ref().ok_or(ServiceError::State("no key share"))?;
        let (nonces, commitments) =
            frost::round1::commit(key.signing_share(), &mut Rng06(&mut self.rng.0));
        let index = m.index;
        let bytes = commitments.serialize().map_err(|_| ServiceError::Invalid)?;
        self.last_session.insert(by, session);
        self.sessions
            .insert((by, session), (message, nonces, bytes.clone()));
        // A few open sessions per coordinator, its oldest dropped first: one
        // coordinator (or its abandoned sessions) never crowds out another's.
        keep_newest(&mut self.sessions, by, Self::SESSIONS_PER_COORDINATOR);
        Ok((index, bytes))
    }

    /// Signing round 2: the share for `session`'s signing package, whose
    /// message must be the one committed to. The nonces are used once.
    ///
    /// # Errors
    /// [`ServiceError`] for an unknown session, another message or a bad package.
    pub fn sign_share(
        &mut self,
        session: u64,
        package: &[u8],
        by: u16,
        signature: &[u8; 64],
    ) -> Result<Vec<u8>, ServiceError> {
        self.check_coordinator(by, session, package, signature)?;
        let package_hash = hash::tagged(TAG_SIGNING_PACKAGE, &[package]);
        // The same package again: the same share (nothing new is revealed).
        if let Some((h, share)) = self.shares_given.get(&(by, session))
            && *h == package_hash
        {
            return Ok(share.clone());
        }
        let package =
            frost::SigningPackage::deserialize(package).map_err(|_| ServiceError::Invalid)?;
        let (message, _, _) = self
            .sessions
            .get(&(by, session))
            .ok_or(ServiceError::State("no such session"))?;
        if package.message() != message {
            return Err(ServiceError::Unsigned);
        }
        let (_, nonces, _) = self
            .sessions
            .remove(&(by, session))
            .ok_or(ServiceError::State("no such session"))?;
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        let key = m.key.as_ref().ok_or(ServiceError::State("no key share"))?;
        let share = frost::round2::sign(&package, &nonces, key)
            .map_err(|_| ServiceError::Invalid)?
            .serialize();
        self.shares_given
            .insert((by, session), (package_hash, share.clone()));
        // A few per coordinator, as its sessions.
        keep_newest(&mut self.shares_given, by, Self::SESSIONS_PER_COORDINATOR);
        Ok(share)
    }

    /// This member's membership and its committee's group key (the context
    /// every signing request and answer is bound to).
    fn committee_context(&self) -> Result<(&Membership, GroupPublicKey), ServiceError> {
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        let group = self
            .group_key()
            .ok_or(ServiceError::State("no committee"))?;
        Ok((m, group))
    }

    /// As coordinator: this member's signature on a signing request of
    /// `session` to member `to` about `what` (the borsh bytes of the [`Purpose`] for
    /// round 1, the signing package for round 2). Members answer signing
    /// requests only from a member of their committee, so an outsider can
    /// neither fill their session slots nor spend their nonces.
    ///
    /// # Errors
    /// [`ServiceError::State`] without a committee.
    pub fn authorise(
        &self,
        session: u64,
        to: u16,
        what: &[u8],
    ) -> Result<(u16, [u8; 64]), ServiceError> {
        let (m, group) = self.committee_context()?;
        let message = coordinator_message(&group, session, to, what);
        let signature = ed25519_dalek::Signer::sign(&self.account, &message.0).to_bytes();
        Ok((m.index, signature))
    }

    /// As a member: its account signature over its answer `bytes` in
    /// `round` of coordinator `by`'s session `session`, about `about`
    /// ([`answer_message`]).
    ///
    /// # Errors
    /// [`ServiceError::State`] without a committee.
    pub(crate) fn sign_answer(
        &self,
        (session, by): (u64, u16),
        round: SigningRound,
        about: &[u8],
        bytes: &[u8],
    ) -> Result<[u8; 64], ServiceError> {
        let (m, group) = self.committee_context()?;
        let message = answer_message(&group, (session, by, m.index), round, about, bytes);
        Ok(ed25519_dalek::Signer::sign(&self.account, &message.0).to_bytes())
    }

    /// As coordinator: whether `signature` is member `from`'s over its
    /// answer `bytes` in `round` of this member's session `session`, about
    /// `about` ([`answer_message`]).
    pub fn answer_signed(
        &self,
        (session, from): (u64, u16),
        round: SigningRound,
        about: &[u8],
        bytes: &[u8],
        signature: &[u8; 64],
    ) -> bool {
        let (Some(m), Some(group)) = (self.membership.as_ref(), self.group_key()) else {
            return false;
        };
        let Some(account) = m.accounts.get(usize::from(from)) else {
            return false;
        };
        let message = answer_message(&group, (session, m.index, from), round, about, bytes);
        verify_account(account, &message.0, signature).is_ok()
    }

    fn check_coordinator(
        &self,
        by: u16,
        session: u64,
        what: &[u8],
        signature: &[u8; 64],
    ) -> Result<(), ServiceError> {
        let (m, group) = self.committee_context()?;
        let account = m
            .accounts
            .get(usize::from(by))
            .ok_or(ServiceError::Invalid)?;
        verify_account(
            account,
            &coordinator_message(&group, session, m.index, what).0,
            signature,
        )
    }

    /// As coordinator: the signing package for `purpose` from members'
    /// commitments (at least the threshold).
    ///
    /// # Errors
    /// [`ServiceError::BadAnswers`] naming members whose commitments do not
    /// decode; [`ServiceError`] otherwise if this member can not name the
    /// message or there are too few.
    pub fn signing_package(
        &self,
        purpose: &Purpose,
        commitments: &BTreeMap<u16, Vec<u8>>,
    ) -> Result<Vec<u8>, ServiceError> {
        let message = self.message(purpose)?;
        let m = self
            .membership
            .as_ref()
            .ok_or(ServiceError::State("no committee"))?;
        if commitments.len() < usize::from(m.t) {
            return Err(ServiceError::State("fewer commitments than the threshold"));
        }
        let parsed = decode_answers(commitments, |b| {
            frost::round1::SigningCommitments::deserialize(b).ok()
        })?;
        frost::SigningPackage::new(parsed, &message)
            .serialize()
            .map_err(|_| ServiceError::Invalid)
    }

    /// As coordinator: the group signature from the package and the shares.
    ///
    /// # Errors
    /// [`ServiceError::BadAnswers`] naming the members whose shares do not
    /// verify; [`ServiceError::Invalid`] for too few or undecodable ones.
    pub fn aggregate(
        &self,
        package: &[u8],
        shares: &BTreeMap<u16, Vec<u8>>,
    ) -> Result<GroupSignature, ServiceError> {
        let package =
            frost::SigningPackage::deserialize(package).map_err(|_| ServiceError::Invalid)?;
        let public = self
            .membership
            .as_ref()
            .and_then(|m| m.public.as_ref())
            .ok_or(ServiceError::State("no committee"))?;
        let parsed = decode_answers(shares, |b| {
            frost::round2::SignatureShare::deserialize(b).ok()
        })?;
        let signature = frost::aggregate(&package, &parsed, public).map_err(|e| match e {
            frost::Error::InvalidSignatureShare { culprits } => ServiceError::BadAnswers {
                culprits: shares
                    .keys()
                    .copied()
                    .filter(|i| identifier(*i).is_ok_and(|id| culprits.contains(&id)))
                    .collect(),
            },
            _ => ServiceError::Invalid,
        })?;
        let bytes = signature.serialize().map_err(|_| ServiceError::Invalid)?;
        bytes.try_into().map_err(|_| ServiceError::Invalid)
    }

    /// The state sealed to this platform and measurement: account and
    /// identity keys, the key share, epoch keys and every auctioneer.
    /// Signing sessions and a DKG in progress are not kept.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] if a component does not serialise.
    pub fn seal(&mut self, platform: &SimulatedPlatform) -> Result<Vec<u8>, ServiceError> {
        let membership = self
            .membership
            .as_ref()
            .map(Membership::sealed)
            .transpose()?;
        let finished = self
            .finished
            .iter()
            .map(Membership::sealed)
            .collect::<Result<Vec<_>, _>>()?;
        // The counter moves on before the state leaves the enclave: every
        // copy sealed earlier is refused from now on.
        let counter = platform
            .counter
            .read()
            .map_err(ServiceError::Counter)?
            .checked_add(1)
            .ok_or(ServiceError::Counter("exhausted".to_string()))?;
        let state = SealedState {
            counter,
            account: self.account.to_bytes().to_vec(),
            identity: self.identity.secret_bytes(),
            membership,
            finished,
            attempts: self
                .attempts
                .iter()
                .map(|(who, (attempt, arrival))| (*who, *attempt, *arrival))
                .collect(),
            candidates: self
                .candidates
                .iter()
                .map(|(from, k)| (*from, k.epoch(), k.secret_bytes()))
                .collect(),
            clearing: self.clearing_state(),
        };
        let mut plain = borsh::to_vec(&state).map_err(|_| ServiceError::Invalid)?;
        let sealing = platform.sealing_key()?;
        let sealed = hpke_seal(
            &sealing.public_key(),
            HPKE_INFO_STATE,
            &plain,
            &platform.measurement.0,
            &mut self.rng.0,
        );
        plain.zeroize();
        let (encapped, ciphertext) = sealed.ok_or(ServiceError::Invalid)?;
        let moved = platform
            .counter
            .increment()
            .map_err(ServiceError::Counter)?;
        if moved != counter {
            // Someone else moved the counter meanwhile: this copy is stale.
            return Err(ServiceError::RolledBack {
                sealed: counter,
                counter: moved,
            });
        }
        Ok([encapped.as_slice(), &ciphertext].concat())
    }

    /// The enclave a [`EnclaveService::seal`] on the same platform and
    /// measurement saved.
    ///
    /// # Errors
    /// [`ServiceError::Invalid`] if the bytes do not open or decode.
    pub fn unseal(
        bytes: &[u8],
        platform: &SimulatedPlatform,
    ) -> Result<EnclaveService, ServiceError> {
        let (encapped, ciphertext) = bytes.split_at_checked(32).ok_or(ServiceError::Invalid)?;
        let encapped: [u8; 32] = encapped.try_into().map_err(|_| ServiceError::Invalid)?;
        let sealing = platform.sealing_key()?;
        let mut plain = hpke_open(
            &sealing.secret,
            &encapped,
            HPKE_INFO_STATE,
            ciphertext,
            &platform.measurement.0,
        )
        .ok_or(ServiceError::Invalid)?;
        let state: Result<SealedState, _> = borsh::from_slice(&plain);
        plain.zeroize();
        let state = state.map_err(|_| ServiceError::Invalid)?;
        let counter = platform.counter.read().map_err(ServiceError::Counter)?;
        if state.counter != counter {
            return Err(ServiceError::RolledBack {
                sealed: state.counter,
                counter,
            });
        }
        // Unsealing moves the counter on too: this copy opens once, so the
        // host can neither restart from it again nor run two enclaves from
        // it. (The host must seal the restored enclave anew.)
        platform
            .counter
            .increment()
            .map_err(ServiceError::Counter)?;
        let account: [u8; 32] = state
            .account
            .as_slice()
            .try_into()
            .map_err(|_| ServiceError::Invalid)?;
        let identity = IdentityKey::from_secret(&state.identity).ok_or(ServiceError::Invalid)?;
        // Only a confirmed committee is ever sealed there; anything else is
        // dropped rather than taken for one.
        let membership = state
            .membership
            .map(SealedMembership::restore)
            .transpose()?
            .filter(Membership::confirmed);
        let finished = state
            .finished
            .into_iter()
            .map(SealedMembership::restore)
            .collect::<Result<Vec<_>, _>>()?;
        let (epoch_keys, auctioneers, erased_below) = state.clearing.restore()?;
        let candidates = state
            .candidates
            .into_iter()
            .map(|(from, epoch, secret)| {
                EpochKeyPair::from_secret(epoch, &secret)
                    .map(|k| (from, k))
                    .ok_or(ServiceError::Invalid)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EnclaveService {
            trust: platform.trust(),
            rng: SimulatedPlatformRng::new()?,
            account: SigningKey::from_bytes(&account),
            identity,
            membership,
            dkgs: BTreeMap::new(),
            finished,
            arrivals: state
                .attempts
                .iter()
                .map(|(_, _, arrival)| arrival.saturating_add(1))
                .max()
                .unwrap_or(0),
            attempts: state
                .attempts
                .into_iter()
                .map(|(who, attempt, arrival)| (who, (attempt, arrival)))
                .collect(),
            durable_changes: 0,
            epoch_keys,
            candidates,
            auctioneers,
            reports: BTreeMap::new(),
            sessions: BTreeMap::new(),
            shares_given: BTreeMap::new(),
            last_session: BTreeMap::new(),
            erased_below,
            registry: None,
            chain_heights: BTreeMap::new(),
            anchors: BTreeMap::new(),
            certified_time_ms: None,
        })
    }
}

#[derive(BorshSerialize, BorshDeserialize)]
struct SealedMembership {
    index: u16,
    t: u16,
    chain: [u8; 32],
    identities: Vec<[u8; 32]>,
    accounts: Vec<[u8; 32]>,
    attempt: u64,
    round1: Option<[u8; 32]>,
    certificate: Option<Vec<[u8; 64]>>,
    key: Option<Vec<u8>>,
    public: Option<Vec<u8>>,
}

#[derive(BorshSerialize, BorshDeserialize)]
struct SealedState {
    /// The platform's monotonic counter when this state was sealed.
    counter: u64,
    account: Vec<u8>,
    identity: Vec<u8>,
    membership: Option<SealedMembership>,
    /// DKGs finished and not yet confirmed.
    finished: Vec<SealedMembership>,
    /// The latest attempt answered per inviter, and when it came.
    attempts: Vec<([u8; 32], u64, u64)>,
    /// Epoch keys created or received and not yet seen published: (sender,
    /// epoch, secret). Not part of the clearing state a peer catching up
    /// receives.
    candidates: Vec<([u8; 32], Epoch, Vec<u8>)>,
    clearing: ClearingState,
}

/// The **simulated** platform an enclave runs on: a secret standing in for
/// the CPU's sealing fuse key, and the measurement of the running code. A
/// real TEE derives the sealing key in hardware from both, so only the same
/// code on the same machine can unseal.
pub struct SimulatedPlatform {
    secret: [u8; 32],
    /// The running code's measurement.
    pub measurement: Measurement,
    /// The attestation roots the code trusts for its peers' quotes, one per
    /// TEE vendor (a real enclave has them built in, so they are part of
    /// its measurement).
    pub attestation: Vec<AttestationRoot>,
    /// The vendor mix the code requires of a committee (built in likewise).
    pub vendors: VendorPolicy,
    counter: Box<dyn SimulatedMonotonicCounter>,
}

/// The platform's **simulated** monotonic counter, against rollback of
/// sealed state: [`EnclaveService::seal`] moves it on before the state
/// leaves the enclave and [`EnclaveService::unseal`] opens only the state
/// sealed at its current value. A real TEE keeps it out of the host's reach
/// (a TPM NV index, the platform's replay-protected memory, or a counter
/// service run by the other members); a simulated one is a value the host
/// could edit, which is why it is named so.
pub trait SimulatedMonotonicCounter: Send {
    /// The current value.
    ///
    /// # Errors
    /// Why it can not be read.
    fn read(&self) -> Result<u64, String>;
    /// Moves the value on by one and returns the new value.
    ///
    /// # Errors
    /// Why it could not be moved (then it did not move).
    fn increment(&self) -> Result<u64, String>;
}

/// A [`SimulatedMonotonicCounter`] in memory, from zero: for a platform
/// whose enclave never outlives the process (tests, benchmarks).
#[derive(Debug, Default)]
pub struct SimulatedMemoryCounter(std::sync::atomic::AtomicU64);

impl SimulatedMemoryCounter {
    /// A counter at `value` (a benchmark restoring one sealed state again).
    pub fn at(value: u64) -> SimulatedMemoryCounter {
        SimulatedMemoryCounter(std::sync::atomic::AtomicU64::new(value))
    }
}

impl SimulatedMonotonicCounter for SimulatedMemoryCounter {
    fn read(&self) -> Result<u64, String> {
        Ok(self.0.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn increment(&self) -> Result<u64, String> {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| v.checked_add(1))
            .map(|v| v + 1)
            .map_err(|_| "exhausted".to_string())
    }
}

impl SimulatedPlatform {
    /// A simulated platform with `secret` running `measurement`, whose code
    /// trusts quotes under `attestation` (one vendor, no vendor policy: see
    /// [`SimulatedPlatform::with_vendors`]); its monotonic counter is in
    /// memory from zero (see [`SimulatedPlatform::with_counter`]).
    pub fn new(
        secret: [u8; 32],
        measurement: Measurement,
        attestation: AttestationRoot,
    ) -> SimulatedPlatform {
        SimulatedPlatform {
            secret,
            measurement,
            attestation: vec![attestation],
            vendors: VendorPolicy::default(),
            counter: Box::new(SimulatedMemoryCounter::default()),
        }
    }

    /// The same platform, its code trusting quotes of any of `roots` (one
    /// per vendor) and requiring `policy` of a committee's vendors.
    pub fn with_vendors(
        mut self,
        roots: Vec<AttestationRoot>,
        policy: VendorPolicy,
    ) -> SimulatedPlatform {
        self.attestation = roots;
        self.vendors = policy;
        self
    }

    /// The same platform with `counter` as its monotonic counter (one that
    /// outlives the process, for an enclave that restarts).
    pub fn with_counter(
        mut self,
        counter: Box<dyn SimulatedMonotonicCounter>,
    ) -> SimulatedPlatform {
        self.counter = counter;
        self
    }

    fn trust(&self) -> Trust {
        Trust {
            roots: self.attestation.clone(),
            vendors: self.vendors,
            measurement: self.measurement,
        }
    }

    fn sealing_key(&self) -> Result<HpkeKeyPair, ServiceError> {
        let seed = hash::tagged(
            "QUARTIER_ENCLAVE_SIMULATED_SEALING_KEY",
            &[&self.secret, &self.measurement.0],
        );
        HpkeKeyPair::from_secret(&seed.0).ok_or(ServiceError::Invalid)
    }
}

impl Drop for SimulatedPlatform {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::SimulatedAttestationService;
    use crate::auctioneer::{Outcome, Receipt, ReceiptBody, Refusal, receipts_root};
    use crate::rpc::{Request, Response};
    use crate::sealed::{DropReason, OrderPayload, SignedOrder, seal};
    use quartier_types::{Energy, Money, Price, RegionParams, Side};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const R: RegionId = RegionId(1);
    const CHF: u64 = 100_000_000;
    /// The chain the test committees serve.
    const CHAIN: [u8; 32] = [0xc4; 32];

    fn params() -> RegionParams {
        RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500)).unwrap()
    }

    const MEASUREMENT: Measurement = Measurement([6; 32]);

    /// The (simulated) TEE vendor of the committee.
    fn vendor() -> SimulatedAttestationService {
        SimulatedAttestationService::new([42; 32])
    }

    fn platform() -> SimulatedPlatform {
        SimulatedPlatform::new([5; 32], MEASUREMENT, vendor().root())
    }

    fn enclave() -> EnclaveService {
        EnclaveService::new(&platform()).unwrap()
    }

    /// The member's quote, as its host registered it.
    fn quote(m: &EnclaveService) -> Quote {
        vendor().quote(MEASUREMENT, m.report_data())
    }

    /// Three enclaves, ascending by account, and their round-1 packages.
    fn round1() -> (Vec<EnclaveService>, BTreeMap<u16, SignedPackage>) {
        let mut members: Vec<EnclaveService> = (0..3).map(|_| enclave()).collect();
        members.sort_by_key(EnclaveService::account);
        let quotes: Vec<Quote> = members.iter().map(quote).collect();
        for m in &mut members {
            m.trust_registry_unverified(CHAIN, &quotes);
        }
        let invitation = members[0].invite(CHAIN, 2, 1, &quotes).unwrap();
        let mut round1 = BTreeMap::new();
        for (i, m) in (0u16..).zip(members.iter_mut()) {
            round1.insert(
                i,
                m.dkg_round1(i, 2, 1, CHAIN, quotes.clone(), &invitation)
                    .unwrap(),
            );
        }
        (members, round1)
    }

    /// Rounds 3 and 4 of the DKG of `round1` whose round-2 packages are
    /// `round2`: every member finishes and confirms; the group key.
    fn finish(
        members: &mut [EnclaveService],
        round1: &BTreeMap<u16, SignedPackage>,
        round2: &[SealedDkgPackage],
    ) -> GroupPublicKey {
        let set = round1_digest(round1);
        let finished: Vec<(GroupPublicKey, [u8; 64])> = members
            .iter_mut()
            .map(|m| m.dkg_finish(&set, round2).unwrap())
            .collect();
        assert!(
            finished.iter().all(|(k, _)| *k == finished[0].0),
            "one group key"
        );
        let signatures: Vec<[u8; 64]> = finished.iter().map(|(_, s)| *s).collect();
        for m in members.iter_mut() {
            assert_eq!(m.dkg_confirm(&set, &signatures).unwrap(), finished[0].0);
        }
        finished[0].0
    }

    /// Three enclaves after the DKG (t = 2), as the hosts would run it.
    fn committee() -> Vec<EnclaveService> {
        let (mut members, round1) = round1();
        let mut round2 = Vec::new();
        for m in &mut members {
            round2.extend(m.dkg_round2(&round1).unwrap());
        }
        finish(&mut members, &round1, &round2);
        members
    }

    /// Coordinator `c` gets `purpose` signed by `signers` (indices).
    fn sign(
        members: &mut [EnclaveService],
        c: usize,
        signers: &[usize],
        purpose: &Purpose,
    ) -> Result<GroupSignature, ServiceError> {
        // Session ids only increase per coordinator.
        static SESSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1_000);
        let session = SESSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let what = borsh::to_vec(purpose).unwrap();
        let mut commitments = BTreeMap::new();
        for &s in signers {
            let to = u16::try_from(s).unwrap();
            let (by, signature) = members[c].authorise(session, to, &what)?;
            let (index, bytes) = members[s].sign_commit(session, purpose, by, &signature)?;
            commitments.insert(index, bytes);
        }
        let package = members[c].signing_package(purpose, &commitments)?;
        let mut shares = BTreeMap::new();
        for &s in signers {
            let index = u16::try_from(s).unwrap();
            let (by, signature) = members[c].authorise(session, index, &package)?;
            shares.insert(
                index,
                members[s].sign_share(session, &package, by, &signature)?,
            );
        }
        members[c].aggregate(&package, &shares)
    }

    fn order(
        wallet: &SigningKey,
        slot: u64,
        side: Side,
        energy: u64,
        key: &[u8; 32],
        rng: &mut ChaCha20Rng,
    ) -> (crate::sealed::SealedOrder, HpkeKeyPair) {
        let receipt = HpkeKeyPair::generate(rng);
        let payload = OrderPayload {
            chain: CHAIN,
            wallet: AccountId(wallet.verifying_key().to_bytes()),
            region: R,
            slot: Slot(slot),
            epoch: Epoch(slot / 4),
            side,
            limit: Price::new(if side == Side::Buy { 12_000 } else { 10_000 }),
            energy: Energy::new(energy),
            receipt_key: receipt.public_key(),
        };
        let sealed = seal(key, &SignedOrder::sign(payload, wallet), rng).unwrap();
        (sealed, receipt)
    }

    /// One request as an outsider sends it: bytes to the RPC's decoder,
    /// then the dispatch the host runs.
    fn rpc(m: &mut EnclaveService, request: &Request) -> Response {
        let bytes = borsh::to_vec(request).unwrap();
        let request = crate::rpc::decode_request(&bytes).unwrap();
        m.handle(request)
    }

    /// A committee whose members all hold (and cleared with) epoch 2's key.
    fn committee_with_epoch_key() -> (Vec<EnclaveService>, [u8; 32]) {
        let mut members = committee();
        let public = publish(&mut members, 1, Epoch(2));
        (members, public)
    }

    /// Member `by` creates `epoch`'s key and shares it; the chain publishes
    /// it and every member settles it.
    fn publish(members: &mut [EnclaveService], by: usize, epoch: Epoch) -> [u8; 32] {
        let (public, shares) = members[by].create_epoch_key(epoch).unwrap();
        for share in &shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    m.receive_epoch_key(share, &public).unwrap();
                }
            }
        }
        for m in members.iter_mut() {
            assert!(m.settle_epoch_key(epoch, &public));
        }
        public
    }

    #[test]
    fn a_region_that_stops_clearing_still_erases_its_old_epoch_secrets() {
        let mut rng = ChaCha20Rng::from_seed([23; 32]);
        let (mut members, public) = committee_with_epoch_key();
        let buyer = SigningKey::from_bytes(&[1; 32]);
        let buyer_id = AccountId(buyer.verifying_key().to_bytes());
        let traders = [(buyer_id, Energy::ZERO)];
        let deposits = [(buyer_id, Money::new(10 * CHF))];
        let (buy, _) = order(&buyer, 8, Side::Buy, 500, &public, &mut rng);
        let orders = [buy];
        let eight = Batch {
            slot: Slot(8),
            params: params(),
            epoch: Epoch(2),
            deposits: &deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        };
        for m in members.iter_mut() {
            m.clear(R, &eight).unwrap();
        }
        // The region stops clearing (its gate is late, its hosts are slow,
        // nobody posts its reports) while the chain goes on publishing the
        // keys of later epochs. Three epochs on, epoch 2's secret is gone
        // from every member: a compromise from now on opens none of its
        // orders, whatever the clearing did.
        let three = publish(&mut members, 0, Epoch(3));
        publish(&mut members, 1, Epoch(4));
        // Epoch 5's key reaches members 0 and 1 only (2 was down when it was
        // shared): 2 erases on the chain's word all the same.
        let (five, shares) = members[0].create_epoch_key(Epoch(5)).unwrap();
        for share in &shares {
            if share.to == members[1].identity_key() {
                members[1].receive_epoch_key(share, &five).unwrap();
            }
        }
        for m in members.iter_mut() {
            assert!(m.settle_epoch_key(Epoch(5), &five), "erased, so changed");
        }
        assert_eq!(members[2].epoch_key(Epoch(5)), None);
        for m in &members {
            assert_eq!(m.epoch_key(Epoch(2)), None, "epoch 2 erased");
            assert!(!m.auctioneer(R).unwrap().epochs().contains(&Epoch(2)));
            assert!(m.epoch_key(Epoch(3)).is_some(), "the last three kept");
        }
        // A reshare of the erased epoch is refused, as is its sealed state.
        assert!(members[0].reshare_epoch_key(Epoch(2)).is_err());
        // The region's next slot of epoch 2 clears all the same, identically
        // on every member: its orders refused unopened, its custody flows
        // done, so the region's later reports are not held up.
        let (late, _) = order(&buyer, 9, Side::Buy, 500, &public, &mut rng);
        // An order of the slot sealed to a later epoch's key (which every
        // member still holds) is refused unopened too.
        let seller = SigningKey::from_bytes(&[2; 32]);
        let payload = OrderPayload {
            chain: CHAIN,
            wallet: AccountId(seller.verifying_key().to_bytes()),
            region: R,
            slot: Slot(9),
            epoch: Epoch(3),
            side: Side::Sell,
            limit: Price::new(10_000),
            energy: Energy::new(300),
            receipt_key: HpkeKeyPair::generate(&mut rng).public_key(),
        };
        let later = seal(&three, &SignedOrder::sign(payload, &seller), &mut rng).unwrap();
        let orders = [late, later];
        let withdrawals = [(buyer_id, Money::new(CHF))];
        let nine = Batch {
            slot: Slot(9),
            orders: &orders,
            deposits: &[],
            withdrawals: &withdrawals,
            expired: true,
            ..eight
        };
        let reports: Vec<SlotReport> = members
            .iter_mut()
            .map(|m| m.clear(R, &nine).unwrap().clone())
            .collect();
        assert!(reports.iter().all(|r| *r == reports[0]));
        let report = &reports[0];
        assert_eq!(report.summary.aggregates.cleared, 0);
        assert_eq!(report.summary.payouts, withdrawals.to_vec());
        for receipt in &report.receipts {
            assert!(matches!(
                receipt.body,
                ReceiptBody::Clear(Receipt {
                    wallet: None,
                    outcome: Outcome::Refused(Refusal::Dropped(DropReason::WrongEpoch)),
                    ..
                })
            ));
        }
        assert_eq!(report.receipts.len(), 2);
    }

    #[test]
    fn members_that_erased_at_different_moments_clear_a_late_slot_alike() {
        let mut rng = ChaCha20Rng::from_seed([24; 32]);
        let (mut members, public) = committee_with_epoch_key();
        publish(&mut members, 0, Epoch(3));
        publish(&mut members, 1, Epoch(4));
        // Epoch 5's key is published; member 2's host has not shown it yet,
        // so member 2 still holds epoch 2's secret and the others do not.
        let (five, shares) = members[0].create_epoch_key(Epoch(5)).unwrap();
        for share in &shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    m.receive_epoch_key(share, &five).unwrap();
                }
            }
        }
        for m in &mut members[..2] {
            m.settle_epoch_key(Epoch(5), &five);
        }
        assert!(members[2].epoch_key(Epoch(2)).is_some());
        assert!(members[0].epoch_key(Epoch(2)).is_none());
        let buyer = SigningKey::from_bytes(&[1; 32]);
        let buyer_id = AccountId(buyer.verifying_key().to_bytes());
        let (buy, _) = order(&buyer, 9, Side::Buy, 500, &public, &mut rng);
        let orders = [buy];
        let deposits = [(buyer_id, Money::new(CHF))];
        let traders = [(buyer_id, Energy::ZERO)];
        let late = Batch {
            slot: Slot(9),
            params: params(),
            epoch: Epoch(2),
            deposits: &deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        };
        // Not marked by the chain: those that erased can not clear it (they
        // sign nothing for it); the one holding the key could, alone.
        for m in &mut members[..2] {
            assert_eq!(
                m.clear(R, &late).err(),
                Some(ServiceError::Batch(BatchError::MissingKey(2)))
            );
        }
        // Marked (the chain published epoch 5's key while it waited): all
        // three clear it to the same report, whatever each still holds.
        let marked = Batch {
            expired: true,
            ..late
        };
        let reports: Vec<SlotReport> = members
            .iter_mut()
            .map(|m| m.clear(R, &marked).unwrap().clone())
            .collect();
        assert!(reports.iter().all(|r| *r == reports[0]));
        assert_eq!(reports[0].summary.aggregates.cleared, 0);
        for m in &members {
            assert_eq!(m.auctioneer(R).unwrap().prepaid(&buyer_id), Money::new(CHF));
        }
    }

    #[test]
    fn a_host_can_not_roll_its_enclave_back_to_an_older_sealed_state() {
        // The host keeps every state file its enclave ever sealed. Before
        // epoch 2's key was published the member sealed one state, after it
        // another; the host restarts the enclave from the older one, as if
        // the later events (an erased key, a cleared slot, a payout) had
        // never happened.
        let mut members = committee();
        let platform = platform();
        let older = members[1].seal(&platform).unwrap();
        let (public, shares) = members[1].create_epoch_key(Epoch(2)).unwrap();
        for share in &shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    m.receive_epoch_key(share, &public).unwrap();
                }
            }
        }
        assert!(members[1].settle_epoch_key(Epoch(2), &public));
        let newer = members[1].seal(&platform).unwrap();
        // The simulated monotonic counter moved on: the older state is refused.
        assert!(matches!(
            EnclaveService::unseal(&older, &platform),
            Err(ServiceError::RolledBack {
                sealed: 1,
                counter: 2
            })
        ));
        let restored = EnclaveService::unseal(&newer, &platform).unwrap();
        assert_eq!(restored.epoch_key(Epoch(2)), Some(public));
        // A platform whose counter is behind the state (the counter itself
        // rolled back) refuses it too.
        assert!(matches!(
            EnclaveService::unseal(&newer, &self::platform()),
            Err(ServiceError::RolledBack {
                sealed: 2,
                counter: 0
            })
        ));
    }

    #[test]
    fn the_enclave_draws_its_own_secrets() {
        // No constructor or request takes randomness from the host: two
        // enclaves made the same way share no key (with the host's seeded
        // generator they used to be identical).
        let (a, b) = (enclave(), enclave());
        assert_ne!(a.identity_key(), b.identity_key());
        assert_ne!(a.account(), b.account());
    }

    /// Reports are kept for the newest slots whatever their region: before,
    /// key order dropped the lowest region's first, then each new one of it
    /// as soon as it was made ("no report"), so that region was never
    /// signed again (review).
    #[test]
    fn two_regions_keep_their_newest_reports() {
        let mut m = committee().remove(0);
        let regions = [RegionId(1), RegionId(2)];
        for slot in 1..=(KEPT_REPORTS as u64) {
            for region in regions {
                let batch = Batch {
                    slot: Slot(slot),
                    params: params(),
                    epoch: Epoch(0),
                    deposits: &[],
                    orders: &[],
                    withdrawals: &[],
                    traders: &[],
                    expired: true,
                };
                assert!(m.clear(region, &batch).is_ok(), "{region:?} {slot}");
                assert!(m.report(region, Slot(slot)).is_some());
            }
        }
        assert_eq!(m.reports.len(), KEPT_REPORTS);
        let last = KEPT_REPORTS as u64;
        for region in regions {
            assert!(m.report(region, Slot(last - 100)).is_some());
        }
    }

    #[test]
    fn an_outsider_can_not_re_form_a_members_committee_to_take_its_secrets_through_the_rpc() {
        let mut rng = ChaCha20Rng::from_seed([21; 32]);
        let (mut members, public) = committee_with_epoch_key();
        let group = members[0].group_key().unwrap();
        let attacker = IdentityKey::generate(&mut rng);
        // The attack of issue 18: a committee of the victim and the attacker
        // (quoted by a vendor of its own: ours does not sign its key), then
        // the victim's clearing state sealed to the attacker.
        let own_vendor = SimulatedAttestationService::new([66; 32]);
        let attacker_quote = own_vendor.quote(MEASUREMENT, attacker.report_data([0xff; 32]));
        let reform = Request::DkgRound1 {
            index: 0,
            t: 2,
            attempt: u64::MAX,
            chain: CHAIN,
            members: vec![quote(&members[0]), attacker_quote],
            invitation: [0; 64],
        };
        assert!(matches!(
            rpc(&mut members[0], &reform),
            Response::Refused(_)
        ));
        let steal = Request::CatchUp {
            to: attacker.public_key(),
        };
        let answer = rpc(&mut members[0], &steal);
        if let Response::CatchUp(state) = &answer {
            let opened = hpke_open_auth(
                attacker.secret(),
                &state.from,
                &state.encapped_key,
                HPKE_INFO_CATCH_UP,
                &state.ciphertext,
                &group.0,
            );
            assert!(opened.is_none(), "the attacker opened the clearing state");
        }
        assert!(matches!(answer, Response::Refused(_)));
        // Nothing changed: same committee, same key, and it still signs.
        assert_eq!(members[0].group_key(), Some(group));
        assert_eq!(members[0].epoch_key(Epoch(2)), Some(public));
        let purpose = Purpose::EpochKey {
            epoch: Epoch(2),
            public_key: public,
        };
        assert!(sign(&mut members, 0, &[0, 1], &purpose).is_ok());
    }

    #[test]
    fn before_its_first_dkg_an_enclave_forms_a_committee_only_of_attested_copies_and_a_majority() {
        let mut members: Vec<EnclaveService> = (0..3).map(|_| enclave()).collect();
        members.sort_by_key(EnclaveService::account);
        let quotes: Vec<Quote> = members.iter().map(quote).collect();
        for m in &mut members {
            m.trust_registry_unverified(CHAIN, &quotes);
        }
        let attacker = IdentityKey::generate(&mut ChaCha20Rng::from_seed([26; 32]));
        let attacker_account = SigningKey::from_bytes(&[79; 32]);
        // What the outsider signs as an invitation (it is no member).
        let forge = |t: u16, quotes: &[Quote]| {
            ed25519_dalek::Signer::sign(
                &attacker_account,
                &invitation_message(&CHAIN, t, 1, quotes).0,
            )
            .to_bytes()
        };
        // The outsider adds itself as a fourth member (its key quoted by a
        // vendor of its own, or by ours for other code)...
        let forged = [
            SimulatedAttestationService::new([66; 32])
                .quote(MEASUREMENT, attacker.report_data([0xff; 32])),
            vendor().quote(Measurement([9; 32]), attacker.report_data([0xff; 32])),
        ];
        let honest = members[0].invite(CHAIN, 2, 1, &quotes).unwrap();
        for (i, m) in (0u16..).zip(members.iter_mut()) {
            let mut attacks = Vec::new();
            for extra in &forged {
                let mut with_attacker = quotes.clone();
                with_attacker.push(extra.clone());
                attacks.push((3, with_attacker.clone(), forge(3, &with_attacker)));
            }
            // ...runs the real members' DKG itself with a t of its own (3 of
            // 3 signs nothing the chain's 2 expect) or a subset of them...
            attacks.push((3, quotes.clone(), forge(3, &quotes)));
            attacks.push((2, quotes[1..].to_vec(), forge(2, &quotes[1..])));
            // ...replays the coordinator's invitation with another t, lowers
            // t, or reorders the members.
            attacks.push((3, quotes.clone(), honest));
            for t in [0, 1, 4] {
                attacks.push((t, quotes.clone(), forge(t, &quotes)));
            }
            let mut reordered = quotes.clone();
            reordered.swap(0, 2);
            attacks.push((2, reordered.clone(), forge(2, &reordered)));
            for (t, members, invitation) in attacks {
                let index = if members.len() < 3 {
                    i.saturating_sub(1)
                } else {
                    i
                };
                let request = Request::DkgRound1 {
                    index,
                    t,
                    attempt: 1,
                    chain: CHAIN,
                    members,
                    invitation,
                };
                assert!(matches!(rpc(m, &request), Response::Refused(_)));
            }
        }
        // The honest committee still forms.
        let mut round1 = BTreeMap::new();
        for (i, m) in (0u16..).zip(members.iter_mut()) {
            round1.insert(
                i,
                m.dkg_round1(i, 2, 1, CHAIN, quotes.clone(), &honest)
                    .unwrap(),
            );
        }
        let mut round2 = Vec::new();
        for m in &mut members {
            round2.extend(m.dkg_round2(&round1).unwrap());
        }
        finish(&mut members, &round1, &round2);
        assert!(
            members
                .iter()
                .all(|m| m.group_key() == members[0].group_key())
        );
    }

    #[test]
    fn an_enclave_built_for_several_vendors_forms_no_committee_one_vendor_could_sign_for() {
        // Three simulated vendors; the code requires two of them at least
        // and none holding t = 2 members.
        let vendors: Vec<SimulatedAttestationService> = (0..3u8)
            .map(|v| SimulatedAttestationService::new([60 + v; 32]))
            .collect();
        let roots: Vec<AttestationRoot> = vendors.iter().map(|v| v.root()).collect();
        let policy = VendorPolicy {
            min_vendors: 2,
            no_vendor_holds_threshold: true,
        };
        let platform = || {
            SimulatedPlatform::new([5; 32], MEASUREMENT, roots[0])
                .with_vendors(roots.clone(), policy)
        };
        let mut members: Vec<EnclaveService> = (0..3)
            .map(|_| EnclaveService::new(&platform()).unwrap())
            .collect();
        members.sort_by_key(EnclaveService::account);
        let quoted = |members: &[EnclaveService], on: [usize; 3]| -> Vec<Quote> {
            members
                .iter()
                .zip(on)
                .map(|(m, v)| vendors[v].quote(MEASUREMENT, m.report_data()))
                .collect()
        };
        let registered = quoted(&members, [0, 1, 2]);
        for m in &mut members {
            m.trust_registry_unverified(CHAIN, &registered);
        }
        // The hosts of one vendor's machines (whose quoting key they may
        // hold) invite a committee all on that vendor, or two on it: that
        // vendor alone would sign every report and epoch key.
        for on in [[0, 0, 0], [1, 1, 2], [0, 2, 2]] {
            let quotes = quoted(&members, on);
            let invitation = members[0].invite(CHAIN, 2, 1, &quotes).unwrap();
            for (i, m) in (0u16..).zip(members.iter_mut()) {
                let request = Request::DkgRound1 {
                    index: i,
                    t: 2,
                    attempt: 1,
                    chain: CHAIN,
                    members: quotes.clone(),
                    invitation,
                };
                assert!(matches!(rpc(m, &request), Response::Refused(_)), "{on:?}");
            }
        }
        // One member on each vendor: the committee forms.
        let quotes = quoted(&members, [0, 1, 2]);
        let invitation = members[0].invite(CHAIN, 2, 1, &quotes).unwrap();
        for (i, m) in (0u16..).zip(members.iter_mut()) {
            m.dkg_round1(i, 2, 1, CHAIN, quotes.clone(), &invitation)
                .unwrap();
        }
    }

    /// A member restarted between creating (or receiving) an epoch key and
    /// seeing it published: before, the key was not in the sealed state, so
    /// the restarted creator's host made another for the same epoch (two
    /// candidates per sender and epoch allowed for it) and a restarted
    /// recipient held none until the reshare.
    #[test]
    fn an_epoch_key_not_yet_published_survives_a_restart() {
        let mut members = committee();
        let platform = platform();
        let (public, shares) = members[0].create_epoch_key(Epoch(2)).unwrap();
        for share in &shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    m.receive_epoch_key(share, &public).unwrap();
                }
            }
        }
        for i in [0, 1] {
            let sealed = members[i].seal(&platform).unwrap();
            members[i] = EnclaveService::unseal(&sealed, &platform).unwrap();
            assert_eq!(members[i].epoch_key(Epoch(2)), Some(public), "member {i}");
            assert!(members[i].settle_epoch_key(Epoch(2), &public));
        }
    }

    #[test]
    fn a_repeated_share_request_gets_the_same_share_and_no_nonce_signs_twice() {
        let (mut members, public) = committee_with_epoch_key();
        let purpose = Purpose::EpochKey {
            epoch: Epoch(2),
            public_key: public,
        };
        let what = borsh::to_vec(&purpose).unwrap();
        let session = 77;
        let mut commitments = BTreeMap::new();
        for to in [0u16, 1] {
            let (by, signature) = members[1].authorise(session, to, &what).unwrap();
            let (i, c) = members[usize::from(to)]
                .sign_commit(session, &purpose, by, &signature)
                .unwrap();
            commitments.insert(i, c);
        }
        let package = members[1].signing_package(&purpose, &commitments).unwrap();
        let (by, signature) = members[1].authorise(session, 0, &package).unwrap();
        let share = members[0]
            .sign_share(session, &package, by, &signature)
            .unwrap();
        // Asked again (its answer was lost, or someone copied the request):
        // the same share.
        assert_eq!(
            members[0].sign_share(session, &package, by, &signature),
            Ok(share)
        );
        // Another package for the same session (its nonces would sign a
        // second message: the key share would leak) is refused, and so is
        // the session's commitment request again.
        let mut other = commitments.clone();
        let (by2, sig2) = members[1].authorise(session, 2, &what).unwrap();
        let (i2, c2) = members[2]
            .sign_commit(session, &purpose, by2, &sig2)
            .unwrap();
        other.remove(&1);
        other.insert(i2, c2);
        let second = members[1].signing_package(&purpose, &other).unwrap();
        assert_ne!(second, package);
        let (by, signature) = members[1].authorise(session, 0, &second).unwrap();
        assert!(
            members[0]
                .sign_share(session, &second, by, &signature)
                .is_err()
        );
        let (by, signature) = members[1].authorise(session, 0, &what).unwrap();
        assert!(
            members[0]
                .sign_commit(session, &purpose, by, &signature)
                .is_err()
        );
    }

    #[test]
    fn signing_requests_from_anyone_but_a_member_are_refused() {
        let (mut members, public) = committee_with_epoch_key();
        let purpose = Purpose::EpochKey {
            epoch: Epoch(2),
            public_key: public,
        };
        // An outsider fills member 0's sessions with high ids (they used to
        // push the host's sessions out) and spends nonces: all refused.
        let outsider = SigningKey::from_bytes(&[78; 32]);
        let group = members[0].group_key().unwrap();
        let what = borsh::to_vec(&purpose).unwrap();
        for session in (u64::MAX - 63)..=u64::MAX {
            let forged = ed25519_dalek::Signer::sign(
                &outsider,
                &coordinator_message(&group, session, 0, &what).0,
            )
            .to_bytes();
            for by in 0..3 {
                let flood = Request::SignCommit {
                    session,
                    purpose,
                    by,
                    signature: forged,
                };
                assert!(matches!(rpc(&mut members[0], &flood), Response::Refused(_)));
            }
        }
        assert!(members[0].sessions.is_empty());
        // A member's request answered, then replayed (a lost answer, or a
        // copy someone sent first): the same commitments again, no new
        // nonces (the ones the coordinator builds on stay); an older
        // session is refused.
        let (by, signature) = members[1].authorise(u64::MAX - 1, 0, &what).unwrap();
        let commit = Request::SignCommit {
            session: u64::MAX - 1,
            purpose,
            by,
            signature,
        };
        let first = rpc(&mut members[0], &commit);
        assert!(matches!(first, Response::Committed(..)));
        assert_eq!(rpc(&mut members[0], &commit), first);
        let (by, signature) = members[1].authorise(u64::MAX - 2, 0, &what).unwrap();
        let older = Request::SignCommit {
            session: u64::MAX - 2,
            purpose,
            by,
            signature,
        };
        assert!(matches!(rpc(&mut members[0], &older), Response::Refused(_)));
        // A copy of the request to member 0, sent to member 2 ahead of the
        // coordinator's own (to spend member 2's session so that its real
        // request is refused and member 2 left out): signed for member 0
        // only, refused, and member 2 still answers the coordinator.
        assert!(matches!(
            rpc(&mut members[2], &commit),
            Response::Refused(_)
        ));
        let (by, signature) = members[1].authorise(u64::MAX - 1, 2, &what).unwrap();
        let to_2 = Request::SignCommit {
            session: u64::MAX - 1,
            purpose,
            by,
            signature,
        };
        assert!(matches!(
            rpc(&mut members[2], &to_2),
            Response::Committed(..)
        ));
        // Member 2 abandons 20 sessions (a Byzantine coordinator, or an
        // honest one whose peers had not cleared yet): member 0 keeps only
        // its newest few, and member 0's own sessions still sign.
        for session in 1..=20 {
            let (by, signature) = members[2].authorise(session, 0, &what).unwrap();
            assert!(
                members[0]
                    .sign_commit(session, &purpose, by, &signature)
                    .is_ok()
            );
        }
        let of_2 = members[0]
            .sessions
            .keys()
            .filter(|(by, _)| *by == 2)
            .count();
        assert_eq!(of_2, EnclaveService::SESSIONS_PER_COORDINATOR);
        assert!(
            members[0].sessions.contains_key(&(2, 20)),
            "the newest stays"
        );
        assert!(sign(&mut members, 0, &[0, 1], &purpose).is_ok());
    }

    #[test]
    fn an_outsiders_epoch_key_is_never_taken_signed_or_cleared_with() {
        let mut rng = ChaCha20Rng::from_seed([22; 32]);
        let (mut members, _) = committee_with_epoch_key();
        let group = members[0].group_key().unwrap();
        let outsider = IdentityKey::generate(&mut rng);
        let planted = EpochKeyPair::generate(Epoch(3), &mut rng);
        let recipients: Vec<[u8; 32]> = members.iter().map(EnclaveService::identity_key).collect();
        // Sealed from the outsider's own identity, and claiming member 1's.
        let own = share(&planted, &outsider, &recipients, &group.0, &mut rng);
        let mut claimed = own.clone();
        for s in &mut claimed {
            s.from = members[1].identity_key();
        }
        // Member 1 coordinates a signing of the planted key (as a host that
        // believed it would).
        let planted_purpose = Purpose::EpochKey {
            epoch: Epoch(3),
            public_key: planted.public_key(),
        };
        let requests: Vec<(u16, [u8; 64])> = (0..3)
            .map(|to| {
                members[1]
                    .authorise(1, to, &borsh::to_vec(&planted_purpose).unwrap())
                    .unwrap()
            })
            .collect();
        for (i, m) in members.iter_mut().enumerate() {
            let (by, signature) = requests[i];
            let me = m.identity_key();
            for s in own.iter().chain(&claimed).filter(|s| s.to == me) {
                let request = Request::ReceiveEpochKey {
                    share: s.clone(),
                    public_key: planted.public_key(),
                };
                assert!(
                    matches!(rpc(m, &request), Response::Refused(_)),
                    "member {i} took the planted key"
                );
            }
            // So the host sees no key for epoch 3 and makes its own, and no
            // member signs the outsider's.
            assert_eq!(m.epoch_key(Epoch(3)), None);
            let commit = Request::SignCommit {
                session: 1,
                purpose: planted_purpose,
                by,
                signature,
            };
            assert_eq!(
                rpc(m, &commit),
                Response::Refused(ServiceError::Unsigned.to_string())
            );
        }
    }

    #[test]
    fn a_clearing_state_from_anyone_but_a_member_is_refused() {
        let mut rng = ChaCha20Rng::from_seed([23; 32]);
        let (mut members, _) = committee_with_epoch_key();
        let group = members[0].group_key().unwrap();
        let outsider = IdentityKey::generate(&mut rng);
        // A host answering the catch-up call with a state of its making: a
        // key it knows for a later epoch.
        let planted = EpochKeyPair::generate(Epoch(9), &mut rng);
        let state = ClearingState {
            epoch_keys: vec![(Epoch(9), planted.secret_bytes())],
            auctioneers: Vec::new(),
            erased_below: Epoch(0),
        };
        let plain = borsh::to_vec(&state).unwrap();
        let to = members[0].identity_key();
        let (encapped_key, ciphertext) = hpke_seal_auth(
            &to,
            outsider.pair(),
            HPKE_INFO_CATCH_UP,
            &plain,
            &group.0,
            &mut rng,
        )
        .unwrap();
        let forged = CatchUp {
            from: outsider.public_key(),
            cleared: vec![(R, Slot(99))],
            encapped_key,
            ciphertext,
        };
        assert_eq!(
            members[0].catch_up(&forged, &[]),
            Err(ServiceError::Invalid)
        );
        let as_member = CatchUp {
            from: members[1].identity_key(),
            ..forged
        };
        assert_eq!(
            members[0].catch_up(&as_member, &[]),
            Err(ServiceError::Invalid)
        );
        assert_eq!(members[0].epoch_key(Epoch(9)), None);
        // A member's own catch-up still opens.
        let real = members[1].catch_up_for(&to).unwrap();
        assert_eq!(members[0].catch_up(&real, &[]), Ok(()));
    }

    #[test]
    fn a_member_behind_takes_no_forged_ledger_from_a_compromised_member() {
        let mut rng = ChaCha20Rng::from_seed([26; 32]);
        let (mut members, public) = committee_with_epoch_key();
        let reported = cleared_without_member_1(&mut members, &public, &[R], &mut rng);
        // Member 2 is compromised: its operator reads its identity secret
        // and seals to member 1 a state at exactly the chain's reports whose
        // ledger credits the operator's meter with 1 000 CHF.
        let mallory = AccountId([0x4d; 32]);
        let mut state = members[2].clearing_state();
        state.auctioneers[0].forge_credit(mallory, Money::new(1_000 * CHF));
        let forged = sealed_by_member_2(&members, &state, &[R], &mut rng);
        assert!(
            members[1].catch_up(&forged, &reported).is_err(),
            "member 1 took a forged ledger"
        );
        assert_eq!(members[1].last_cleared(R), None);
        // The state the report was signed for is taken.
        let to = members[1].identity_key();
        let honest = members[2].catch_up_for(&to).unwrap();
        assert_eq!(members[1].catch_up(&honest, &reported), Ok(()));
        assert_eq!(members[1].last_cleared(R), Some(Slot(8)));
        assert_eq!(
            members[1].auctioneer(R).unwrap().prepaid(&mallory),
            Money::ZERO
        );
    }

    /// Members 0 and 2 clear slot 8 of regions `regions` (a buyer deposits
    /// 1 CHF and buys in each) and sign each report; member 1 was down.
    /// The chain's reports with their signatures.
    fn cleared_without_member_1(
        members: &mut [EnclaveService],
        public: &[u8; 32],
        regions: &[RegionId],
        rng: &mut ChaCha20Rng,
    ) -> Vec<(SlotSummary, GroupSignature)> {
        let buyer = SigningKey::from_bytes(&[1; 32]);
        let buyer_id = AccountId(buyer.verifying_key().to_bytes());
        let traders = [(buyer_id, Energy::ZERO)];
        let deposits = [(buyer_id, Money::new(CHF))];
        let mut reported = Vec::new();
        for region in regions {
            let (mut buy, _) = order(&buyer, 8, Side::Buy, 100, public, rng);
            buy.region = *region;
            let orders = [buy];
            let batch = Batch {
                slot: Slot(8),
                params: params(),
                epoch: Epoch(2),
                deposits: &deposits,
                orders: &orders,
                withdrawals: &[],
                traders: &traders,
                expired: false,
            };
            for i in [0, 2] {
                members[i].clear(*region, &batch).unwrap();
            }
            let purpose = Purpose::Report {
                region: *region,
                slot: Slot(8),
            };
            let signature = sign(members, 0, &[0, 2], &purpose).unwrap();
            let summary = members[0].report(*region, Slot(8)).unwrap().summary.clone();
            reported.push((summary, signature));
        }
        reported
    }

    /// `state` sealed to member 1 by member 2 (whose identity secret its
    /// compromised operator reads), as a catch-up at slot 8 of `regions`.
    fn sealed_by_member_2(
        members: &[EnclaveService],
        state: &ClearingState,
        regions: &[RegionId],
        rng: &mut ChaCha20Rng,
    ) -> CatchUp {
        let plain = borsh::to_vec(state).unwrap();
        let (encapped_key, ciphertext) = hpke_seal_auth(
            &members[1].identity_key(),
            members[2].identity.pair(),
            HPKE_INFO_CATCH_UP,
            &plain,
            &members[2].group_key().unwrap().0,
            rng,
        )
        .unwrap();
        CatchUp {
            from: members[2].identity_key(),
            cleared: regions.iter().map(|r| (*r, Slot(8))).collect(),
            encapped_key,
            ciphertext,
        }
    }

    #[test]
    fn a_member_behind_takes_no_state_that_leaves_a_region_out() {
        let mut rng = ChaCha20Rng::from_seed([27; 32]);
        let (mut members, public) = committee_with_epoch_key();
        let r2 = RegionId(2);
        let reported = cleared_without_member_1(&mut members, &public, &[R, r2], &mut rng);
        // Member 2's operator seals to member 1 its state without region 2
        // (whose every prepaid balance member 1 would then clear from
        // nothing, and sign with member 2).
        let mut state = members[2].clearing_state();
        state.auctioneers.retain(|a| a.region() != r2);
        let forged = sealed_by_member_2(&members, &state, &[R, r2], &mut rng);
        assert_eq!(
            members[1].catch_up(&forged, &reported),
            Err(ServiceError::Unsigned)
        );
        assert_eq!(members[1].cleared(), Vec::new());
        let to = members[1].identity_key();
        let honest = members[2].catch_up_for(&to).unwrap();
        assert_eq!(members[1].catch_up(&honest, &reported), Ok(()));
        assert_eq!(members[1].cleared(), vec![(R, Slot(8)), (r2, Slot(8))]);
    }

    #[test]
    fn a_member_behind_takes_no_epoch_keys_or_erasure_from_a_peer() {
        let mut rng = ChaCha20Rng::from_seed([28; 32]);
        let (mut members, public) = committee_with_epoch_key();
        let reported = cleared_without_member_1(&mut members, &public, &[R], &mut rng);
        // Member 2's operator plants a key of epoch 1 000 and an erasure
        // mark there in its otherwise honest state: member 1 would erase
        // every real key, refuse every share after, and sign epoch 1 000's
        // key with member 2 (after which the chain refuses every earlier
        // epoch's key as stale).
        let (planted, _) = members[2].create_epoch_key(Epoch(1_000)).unwrap();
        let secret = members[2]
            .candidates
            .iter()
            .map(|(_, k)| k)
            .find(|k| k.epoch() == Epoch(1_000))
            .unwrap()
            .secret_bytes();
        let mut state = members[2].clearing_state();
        state.epoch_keys = vec![(Epoch(1_000), secret)];
        state.erased_below = Epoch(1_000);
        let forged = sealed_by_member_2(&members, &state, &[R], &mut rng);
        assert_eq!(members[1].catch_up(&forged, &reported), Ok(()));
        assert_eq!(members[1].epoch_key(Epoch(1_000)), None);
        assert_eq!(members[1].epoch_key(Epoch(2)), Some(public));
        let planted_purpose = Purpose::EpochKey {
            epoch: Epoch(1_000),
            public_key: planted,
        };
        assert!(sign(&mut members, 2, &[1, 2], &planted_purpose).is_err());
        // It clears slot 9 with the others.
        let buyer = SigningKey::from_bytes(&[1; 32]);
        let buyer_id = AccountId(buyer.verifying_key().to_bytes());
        let (buy, _) = order(&buyer, 9, Side::Buy, 100, &public, &mut rng);
        let orders = [buy];
        let traders = [(buyer_id, Energy::ZERO)];
        let nine = Batch {
            slot: Slot(9),
            params: params(),
            epoch: Epoch(2),
            deposits: &[],
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        };
        let summaries: Vec<SlotSummary> = members
            .iter_mut()
            .map(|m| m.clear(R, &nine).unwrap().summary.clone())
            .collect();
        assert!(summaries.iter().all(|s| *s == summaries[0]));
    }

    /// Member `by` creates `epoch`'s key and shares it; each other member
    /// takes its share (or says why not).
    fn share_key(
        members: &mut [EnclaveService],
        by: usize,
        epoch: Epoch,
    ) -> ([u8; 32], Vec<Result<(), ServiceError>>) {
        let (public, shares) = members[by].create_epoch_key(epoch).unwrap();
        let mut taken = Vec::new();
        for share in &shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    taken.push(m.receive_epoch_key(share, &public));
                }
            }
        }
        (public, taken)
    }

    #[test]
    fn one_member_can_not_crowd_out_another_members_epoch_key() {
        let (mut members, _) = committee_with_epoch_key();
        // Member 2 is compromised: before the member whose turn it is, it
        // shares five keys of epoch 3 (it can then publish one of its own
        // or none). Before, three keys of an epoch were all a member took.
        for i in 0..5 {
            members[2].candidates.clear();
            let (_, taken) = share_key(&mut members, 2, Epoch(3));
            let kept = i < EnclaveService::CANDIDATES_PER_SENDER_AND_EPOCH;
            assert!(taken.iter().all(|t| t.is_ok() == kept), "{i}: {taken:?}");
        }
        let (honest, taken) = share_key(&mut members, 1, Epoch(3));
        assert_eq!(taken, vec![Ok(()), Ok(())]);
        let purpose = Purpose::EpochKey {
            epoch: Epoch(3),
            public_key: honest,
        };
        assert!(sign(&mut members, 1, &[0, 1], &purpose).is_ok());
    }

    #[test]
    fn a_compromised_member_can_not_make_the_others_drop_the_key_it_published() {
        // Member 2 is compromised: its key of epoch 3 is signed with member
        // 0 and published; then, before the hosts settle it, it shares
        // another key of epoch 3 and four of later epochs. Every member
        // still holds the published key (before, each kept only a sender's
        // newest: nobody held it, nobody could reshare it, and no slot of
        // epoch 3 cleared).
        let (mut members, _) = committee_with_epoch_key();
        let (published, _) = share_key(&mut members, 2, Epoch(3));
        let purpose = Purpose::EpochKey {
            epoch: Epoch(3),
            public_key: published,
        };
        assert!(sign(&mut members, 2, &[0, 2], &purpose).is_ok());
        for epoch in [3, 4, 5, 6, 7] {
            members[2].candidates.clear();
            let _ = share_key(&mut members, 2, Epoch(epoch));
        }
        for m in &mut members[..2] {
            assert!(m.settle_epoch_key(Epoch(3), &published));
            assert_eq!(m.epoch_key(Epoch(3)), Some(published));
        }
    }

    #[test]
    fn after_an_outage_the_key_of_the_epoch_it_is_now_is_taken_and_signed() {
        // Epoch 2's key is the newest published; the committee was down for
        // several epochs. The key of the epoch it is now is taken and signed
        // (the chain bounds how far ahead a key may be published).
        let (mut members, _) = committee_with_epoch_key();
        let (public, taken) = share_key(&mut members, 0, Epoch(10));
        assert_eq!(taken, vec![Ok(()), Ok(())]);
        let purpose = Purpose::EpochKey {
            epoch: Epoch(10),
            public_key: public,
        };
        assert!(sign(&mut members, 0, &[0, 2], &purpose).is_ok());
    }

    #[test]
    fn a_published_key_a_member_missed_is_taken_after_a_later_one() {
        // Member 2 was down when epoch 3's key was shared and published;
        // it got epoch 4's. Epoch 3's, reshared to it, is still taken
        // (before, a share of an epoch below the newest it held was
        // refused as a replay, and it could not clear epoch 3's slots).
        let (mut members, _) = committee_with_epoch_key();
        let (three, shares) = members[0].create_epoch_key(Epoch(3)).unwrap();
        for share in &shares {
            if share.to == members[1].identity_key() {
                members[1].receive_epoch_key(share, &three).unwrap();
            }
        }
        for m in &mut members[..2] {
            assert!(m.settle_epoch_key(Epoch(3), &three));
        }
        let four = publish(&mut members, 1, Epoch(4));
        assert_eq!(members[2].epoch_key(Epoch(4)), Some(four));
        let to = members[2].identity_key();
        let reshared = members[1].reshare_epoch_key(Epoch(3)).unwrap();
        let share = reshared.iter().find(|s| s.to == to).unwrap();
        assert_eq!(members[2].receive_epoch_key(share, &three), Ok(()));
        assert!(members[2].settle_epoch_key(Epoch(3), &three));
        assert_eq!(members[2].epoch_key(Epoch(3)), Some(three));
    }

    #[test]
    fn replayed_shares_and_old_catch_ups_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([25; 32]);
        let mut members = committee();
        let (public, shares) = members[1].create_epoch_key(Epoch(2)).unwrap();
        let to0 = members[0].identity_key();
        let share0 = shares.iter().find(|s| s.to == to0).unwrap().clone();
        for m in members.iter_mut() {
            if let Some(s) = shares.iter().find(|s| s.to == m.identity_key()) {
                m.receive_epoch_key(s, &public).unwrap();
            }
            assert!(m.settle_epoch_key(Epoch(2), &public));
        }
        // Epoch 2 is published: its share again is a replay.
        assert_eq!(
            members[0].receive_epoch_key(&share0, &public),
            Err(ServiceError::State("epoch already published"))
        );
        // The next epoch's key survives its share replayed, and rival keys
        // beyond one per member.
        let (next, next_shares) = members[1].create_epoch_key(Epoch(3)).unwrap();
        let next0 = next_shares.iter().find(|s| s.to == to0).unwrap().clone();
        for _ in 0..20 {
            assert_eq!(members[0].receive_epoch_key(&next0, &next), Ok(()));
        }
        let mut refused = 0;
        for _ in 0..20 {
            // (Member 2 misbehaves: its own enclave's limit is not asked.)
            members[2].candidates.clear();
            let (rival, rival_shares) = members[2].create_epoch_key(Epoch(3)).unwrap();
            let s = rival_shares.iter().find(|s| s.to == to0).unwrap();
            refused += usize::from(members[0].receive_epoch_key(s, &rival).is_err());
        }
        assert_eq!(refused, 18, "two keys per sender and epoch");
        assert!(members[0].settle_epoch_key(Epoch(3), &next));

        // Member 0 and 1 clear slot 8; a catch-up made then is refused once
        // member 0 cleared slot 9 (it would roll its prepaid ledger back).
        let buyer = SigningKey::from_bytes(&[1; 32]);
        let buyer_id = AccountId(buyer.verifying_key().to_bytes());
        let traders = [(buyer_id, Energy::ZERO)];
        let deposits = [(buyer_id, Money::new(CHF))];
        let (buy, _) = order(&buyer, 8, Side::Buy, 100, &public, &mut rng);
        let orders = [buy];
        let batch = Batch {
            slot: Slot(8),
            params: params(),
            epoch: Epoch(2),
            deposits: &deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        };
        for m in &mut members[..2] {
            m.clear(R, &batch).unwrap();
        }
        let old = members[1].catch_up_for(&to0).unwrap();
        let eight = Purpose::Report {
            region: R,
            slot: Slot(8),
        };
        let signature = sign(&mut members, 0, &[0, 1], &eight).unwrap();
        let summary = members[0].report(R, Slot(8)).unwrap().summary.clone();
        let reported = [(summary, signature)];
        let (buy, _) = order(&buyer, 9, Side::Buy, 100, &public, &mut rng);
        let orders = [buy];
        let nine = Batch {
            slot: Slot(9),
            orders: &orders,
            deposits: &[],
            ..batch
        };
        members[0].clear(R, &nine).unwrap();
        let before = members[0].auctioneer(R).unwrap().prepaid(&buyer_id);
        assert_eq!(
            members[0].catch_up(&old, &reported),
            Err(ServiceError::State(
                "catch-up state older than this member's"
            ))
        );
        assert_eq!(members[0].last_cleared(R), Some(Slot(9)));
        assert_eq!(members[0].auctioneer(R).unwrap().prepaid(&buyer_id), before);
    }

    #[test]
    fn a_member_that_missed_a_share_gets_the_published_key_from_any_member() {
        let mut members = committee();
        let (public, shares) = members[1].create_epoch_key(Epoch(2)).unwrap();
        // Member 2 is down: only member 0 takes its share; the key is published.
        let to0 = members[0].identity_key();
        let s0 = shares.iter().find(|s| s.to == to0).unwrap();
        members[0].receive_epoch_key(s0, &public).unwrap();
        for m in &mut members[..2] {
            assert!(m.settle_epoch_key(Epoch(2), &public));
        }
        assert!(!members[2].settle_epoch_key(Epoch(2), &public));
        // Back, it gets the key from member 0 (not from any whole state).
        let again = members[0].reshare_epoch_key(Epoch(2)).unwrap();
        let to1 = members[1].identity_key();
        let to2 = members[2].identity_key();
        let s1 = again.iter().find(|s| s.to == to1).unwrap();
        assert!(
            members[1].receive_epoch_key(s1, &public).is_err(),
            "held already"
        );
        let s2 = again.iter().find(|s| s.to == to2).unwrap();
        members[2].receive_epoch_key(s2, &public).unwrap();
        assert!(members[2].settle_epoch_key(Epoch(2), &public));
        assert_eq!(members[2].epoch_key(Epoch(2)), Some(public));
        // A key it does not hold, it does not reshare.
        assert!(members[0].reshare_epoch_key(Epoch(3)).is_err());
    }

    #[test]
    fn forged_dkg_packages_do_not_end_the_dkg() {
        let mut rng = ChaCha20Rng::from_seed([24; 32]);
        let (mut members, round1) = round1();
        let identities: Vec<[u8; 32]> = members.iter().map(EnclaveService::identity_key).collect();
        // An outsider sends member 0 garbage for round 2 first, then a
        // well-formed round-1 package of its own for member 1's index,
        // signed with its own key.
        let garbage = Request::DkgRound2 {
            round1: BTreeMap::from([(1, (vec![7; 40], [0; 64])), (2, (vec![8; 40], [0; 64]))]),
        };
        assert!(matches!(
            rpc(&mut members[0], &garbage),
            Response::Refused(_)
        ));
        let (_, own) =
            frost::keys::dkg::part1(identifier(1).unwrap(), 3, 2, Rng06(&mut rng)).unwrap();
        let own = own.serialize().unwrap();
        let outsider_key = SigningKey::from_bytes(&[77; 32]);
        let signed = ed25519_dalek::Signer::sign(
            &outsider_key,
            &round1_message(&CHAIN, 1, 1, &identities, &own).0,
        )
        .to_bytes();
        let mut substituted = round1.clone();
        substituted.insert(1, (own, signed));
        let substitute = Request::DkgRound2 {
            round1: substituted,
        };
        assert!(matches!(
            rpc(&mut members[0], &substitute),
            Response::Refused(_)
        ));
        let mut round2 = Vec::new();
        for m in &mut members {
            round2.extend(m.dkg_round2(&round1).unwrap());
        }
        // Then a round-2 package claiming to be member 1's, sealed by the
        // outsider (a real package's plaintext would not help: it can not
        // seal as member 1).
        let outsider = IdentityKey::generate(&mut rng);
        let (encapped_key, ciphertext) = hpke_seal_auth(
            &identities[0],
            outsider.pair(),
            HPKE_INFO_DKG,
            b"forged",
            &round2_aad(1, 1, 0),
            &mut rng,
        )
        .unwrap();
        let mut forged: Vec<SealedDkgPackage> =
            round2.iter().filter(|p| p.from != 1).cloned().collect();
        forged.push(SealedDkgPackage {
            from: 1,
            to: 0,
            encapped_key,
            ciphertext,
        });
        let forged_finish = Request::DkgFinish {
            round1: round1_digest(&round1).0,
            packages: forged,
        };
        assert!(matches!(
            rpc(&mut members[0], &forged_finish),
            Response::Refused(_)
        ));
        finish(&mut members, &round1, &round2);
    }

    #[test]
    fn a_committee_shares_epoch_keys_clears_alike_signs_with_two_of_three_and_survives_a_restart() {
        let mut rng = ChaCha20Rng::from_seed([11; 32]);
        let mut members = committee();
        let group = members[0].group_key().unwrap();

        // Member 1 creates epoch 2's key and seals it to the others.
        let (public, shares) = members[1].create_epoch_key(Epoch(2)).unwrap();
        for share in &shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    m.receive_epoch_key(share, &public).unwrap();
                }
            }
        }
        let purpose = Purpose::EpochKey {
            epoch: Epoch(2),
            public_key: public,
        };
        let sig = sign(&mut members, 0, &[0, 2], &purpose).unwrap();
        assert_eq!(
            group.verify(&epoch_key_message(&CHAIN, Epoch(2), &public), &sig),
            Ok(())
        );
        // Member 2 also made a key for epoch 2 (its turn-holder looked down)
        // and sealed it to the others; only the published one is used.
        let (rival, rival_shares) = members[2].create_epoch_key(Epoch(2)).unwrap();
        for share in &rival_shares {
            for m in members.iter_mut() {
                if share.to == m.identity_key() {
                    m.receive_epoch_key(share, &rival).unwrap();
                }
            }
        }
        for m in members.iter_mut() {
            assert!(m.settle_epoch_key(Epoch(2), &public), "the published key");
            assert_eq!(m.epoch_key(Epoch(2)), Some(public));
        }
        // Nobody signs an epoch key it does not hold.
        let forged = Purpose::EpochKey {
            epoch: Epoch(2),
            public_key: [9; 32],
        };
        assert_eq!(
            sign(&mut members, 0, &[0, 1], &forged),
            Err(ServiceError::Unsigned)
        );

        // A slot: every member clears the same batch to the same report.
        let (buyer, seller) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let buyer_id = AccountId(buyer.verifying_key().to_bytes());
        let (buy, buy_receipt) = order(&buyer, 8, Side::Buy, 1_000, &public, &mut rng);
        let (sell, _) = order(&seller, 8, Side::Sell, 700, &public, &mut rng);
        let deposits = [(buyer_id, Money::new(10 * CHF))];
        let orders = [buy, sell];
        let seller_id = AccountId(seller.verifying_key().to_bytes());
        let mut traders = [(buyer_id, Energy::ZERO), (seller_id, Energy::new(1_000))];
        traders.sort();
        let batch = Batch {
            slot: Slot(8),
            params: params(),
            epoch: Epoch(2),
            deposits: &deposits,
            orders: &orders,
            withdrawals: &[],
            traders: &traders,
            expired: false,
        };
        let reports: Vec<SlotReport> = members
            .iter_mut()
            .map(|m| m.clear(R, &batch).unwrap().clone())
            .collect();
        assert!(reports.iter().all(|r| *r == reports[0]));
        let report = &reports[0];
        assert_eq!(
            report.summary.receipts_root,
            receipts_root(&report.receipts)
        );
        let mine = report
            .receipts
            .iter()
            .find_map(|r| r.open(&buy_receipt))
            .unwrap();
        assert!(
            matches!(mine.outcome, Outcome::Cleared { matched, .. } if matched == Energy::new(700))
        );

        // Member 0 is stopped: 1 and 2 still sign, with 1 coordinating.
        let slot8 = Purpose::Report {
            region: R,
            slot: Slot(8),
        };
        let sig = sign(&mut members, 1, &[1, 2], &slot8).unwrap();
        assert_eq!(
            group.verify(&report_message(&CHAIN, &report.summary), &sig),
            Ok(())
        );
        // One alone can not: the package needs the threshold's commitments.
        assert!(sign(&mut members, 1, &[1], &slot8).is_err());

        // Member 2 restarts from its sealed state and rejoins.
        let platform = platform();
        let sealed = members[2].seal(&platform).unwrap();
        let before = members[2].auctioneer(R).unwrap().custody();
        members[2] = EnclaveService::unseal(&sealed, &platform).unwrap();
        assert_eq!(members[2].group_key(), Some(group));
        assert_eq!(members[2].auctioneer(R).unwrap().custody(), before);
        // Another platform or measurement can not open it.
        let other = SimulatedPlatform::new([5; 32], Measurement([7; 32]), vendor().root());
        assert!(EnclaveService::unseal(&sealed, &other).is_err());
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert!(EnclaveService::unseal(&flipped, &platform).is_err());

        let (buy, _) = order(&buyer, 9, Side::Buy, 500, &public, &mut rng);
        let orders = [buy];
        let next = Batch {
            slot: Slot(9),
            orders: &orders,
            deposits: &[],
            ..batch
        };
        let reports: Vec<SlotReport> = members
            .iter_mut()
            .map(|m| m.clear(R, &next).unwrap().clone())
            .collect();
        assert!(
            reports.iter().all(|r| *r == reports[0]),
            "restarted member agrees"
        );
        let slot9 = Purpose::Report {
            region: R,
            slot: Slot(9),
        };
        let sig = sign(&mut members, 2, &[0, 2], &slot9).unwrap();
        assert_eq!(
            group.verify(&report_message(&CHAIN, &reports[0].summary), &sig),
            Ok(())
        );
        // Nobody signs a slot it did not clear.
        let unseen = Purpose::Report {
            region: R,
            slot: Slot(10),
        };
        assert_eq!(
            sign(&mut members, 0, &[0, 1], &unseen),
            Err(ServiceError::Unsigned)
        );

        // Member 0 is down for slot 10; the others clear it. Back, it takes
        // member 1's state (sealed to its identity, which only members may
        // ask for) and agrees on slot 11 again.
        let (buy, _) = order(&buyer, 10, Side::Buy, 300, &public, &mut rng);
        let orders = [buy];
        let ten = Batch {
            slot: Slot(10),
            orders: &orders,
            ..next
        };
        for m in &mut members[1..] {
            m.clear(R, &ten).unwrap();
        }
        let outsider = enclave();
        assert_eq!(
            members[1].catch_up_for(&outsider.identity_key()).err(),
            Some(ServiceError::Unsigned)
        );
        let to = members[0].identity_key();
        let state = members[1].catch_up_for(&to).unwrap();
        assert_eq!(state.cleared, vec![(R, Slot(10))]);
        let slot10 = Purpose::Report {
            region: R,
            slot: Slot(10),
        };
        let signature = sign(&mut members, 1, &[1, 2], &slot10).unwrap();
        let summary = members[1].report(R, Slot(10)).unwrap().summary.clone();
        let reported = [(summary, signature)];
        assert!(
            members[2].catch_up(&state, &reported).is_err(),
            "sealed to member 0 only"
        );
        members[0].catch_up(&state, &reported).unwrap();
        assert_eq!(members[0].last_cleared(R), Some(Slot(10)));
        let (sell, _) = order(&seller, 11, Side::Sell, 200, &public, &mut rng);
        let orders = [sell];
        let eleven = Batch {
            slot: Slot(11),
            orders: &orders,
            ..next
        };
        let reports: Vec<SlotReport> = members
            .iter_mut()
            .map(|m| m.clear(R, &eleven).unwrap().clone())
            .collect();
        assert!(reports.iter().all(|r| *r == reports[0]), "caught up");
    }
}
