//! A light client of a quartier chain: it checks that a value is in the
//! state the chain finalized, trusting nothing but the chain's genesis
//! document. The enclaves of privacy mode B use it so that their host can
//! not make them clear a batch, or serve a committee, the chain never had.
//!
//! Three checks, each against the one before:
//! 1. [`ChainAnchor::verify_finalized`]: a simplex finalization certificate
//!    carries a quorum (`n − f`, `f = ⌊(n−1)/3⌋`) of the genesis validators'
//!    ed25519 signatures over a block digest, in the chain's namespace;
//! 2. the block's encoding hashes to that digest ([`block_digest`]), so its
//!    state root is the one consensus finalized;
//! 3. [`FinalizedHeader::verify`]: a JMT proof ties a state value (or its
//!    absence) to that root.
//!
//! The certificate is verified with commonware's own ed25519 certificate
//! code, instantiated for simplex's finalize subject (namespace
//! `‹chain namespace›_FINALIZE`, message the encoded proposal), so a format
//! change in consensus shows as a failing test against real finalizations
//! (`quartier-node`'s `light` test), not as a silent divergence.
//!
//! Validator-set changes follow the epoch chain: a certificate is checked
//! against the set of its epoch, and its epoch must be its block's (the
//! genesis' `epoch_blocks`). The anchor starts with the genesis set; each
//! [`EpochChange`] (the block that ends an epoch, its certificate by the set
//! the anchor has for that epoch, and a proof of the `ValidatorSets` record
//! under its root) teaches it the next set ([`ChainAnchor::advance`]). A
//! certificate of an epoch after the last change it learnt is checked
//! against the latest set it has: a later change it was not shown makes
//! that check fail, unless the sets before and after it share a quorum (a
//! change and its undoing, say), which then vouches for the block as much
//! as the set of record would have. What it can not tell is a history forked by a set that was voted out (its
//! keys leaked, say) and signs on after its removal: as with any
//! proof-of-authority light client, the removed keys are trusted not to
//! sign, or the client is given a recent change by someone it trusts.

use borsh::BorshDeserialize;
use bytes::Bytes;
use commonware_codec::varint::UInt;
use commonware_codec::{Decode as _, DecodeExt as _, ReadExt as _};
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::{Hasher as _, Sha256, ed25519};
use commonware_parallel::Sequential;
use quartier_ledger::{ChainId, Genesis, StateProof, ValidatorSet};
use quartier_types::AccountId;
use quartier_types::hash::Digest;

/// A verifier of finalizations by `validators` (distinct Ed25519 keys).
fn verifier(namespace: &[u8], validators: &[AccountId]) -> Result<FinalizeScheme, LightError> {
    let keys = validators
        .iter()
        .map(|v| ed25519::PublicKey::decode(Bytes::copy_from_slice(&v.0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| LightError::Validators)?;
    let count = keys.len();
    let participants =
        commonware_utils::ordered::Set::try_from(keys).map_err(|_| LightError::Validators)?;
    if participants.len() != count || count == 0 {
        return Err(LightError::Validators);
    }
    Ok(FinalizeScheme::verifier(namespace, participants))
}

/// Domain tag of a block's digest (what consensus finalizes).
pub const TAG_BLOCK: &[u8] = b"QUARTIER_NODE_BLOCK";

/// The consensus namespace of a chain: its name, so two chains never mix
/// votes.
pub fn namespace(genesis: &Genesis) -> Vec<u8> {
    format!("quartier/{}", genesis.chain_name).into_bytes()
}

/// A block's digest: the tagged SHA-256 of its canonical encoding.
pub fn block_digest(encoded: &[u8]) -> [u8; 32] {
    let digest = Sha256::hash(&[TAG_BLOCK, encoded]);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Why a proof of finalized state is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LightError {
    /// The genesis document's validators are not ed25519 keys, or not distinct.
    #[error("the genesis validator set is not a set of ed25519 keys")]
    Validators,
    /// The finalization does not decode.
    #[error("the finalization does not decode")]
    MalformedFinalization,
    /// The certificate is not a quorum of the validators over its proposal.
    #[error("the finalization is not signed by a quorum of the validators")]
    BadCertificate,
    /// The block does not decode.
    #[error("the block does not decode")]
    MalformedBlock,
    /// The block is not the one the certificate finalized.
    #[error("the block is not the one finalized")]
    WrongBlock,
    /// The state proof does not match the block's state root.
    #[error("the state proof does not match the finalized state root")]
    BadProof,
    /// The proof is of another key than the one asked for.
    #[error("the state proof is of another key")]
    WrongKey,
    /// The certificate's epoch is not its block's.
    #[error("the certificate's epoch is not its block's")]
    WrongEpoch,
    /// An epoch change that is not at the last block of an epoch, or does
    /// not extend the sets the anchor knows by the one that follows it.
    #[error("not an epoch change that follows the anchor's")]
    NotAnEpochChange,
}

/// What teaches a [`ChainAnchor`] a change of the validator set: the last
/// block of the epoch before it, that block's finalization, and the proof
/// of the chain's `ValidatorSets` record under its state root.
#[derive(Clone, Debug)]
pub struct EpochChange {
    /// The block's canonical encoding.
    pub block: Vec<u8>,
    /// Its finalization, encoded as consensus stores it.
    pub finalization: Vec<u8>,
    /// The `ValidatorSets` record with its proof.
    pub proof: StateProof,
}

/// What a light client trusts: one chain's namespace and validators, both
/// from its genesis document.
#[derive(Clone, Debug)]
pub struct ChainAnchor {
    chain_id: ChainId,
    namespace: Vec<u8>,
    epoch_blocks: u64,
    /// The sets learnt, oldest first, as the chain records them.
    sets: Vec<ValidatorSet>,
    /// A verifier per entry of `sets`.
    verifiers: Vec<FinalizeScheme>,
}

/// A block header the chain finalized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinalizedHeader {
    /// The block's digest.
    pub digest: [u8; 32],
    /// Its height.
    pub height: u64,
    /// Its time, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The state root after it.
    pub state_root: Digest,
}

impl ChainAnchor {
    /// The anchor of the chain `genesis` starts.
    ///
    /// # Errors
    /// [`LightError::Validators`] if a validator is not an ed25519 key or
    /// one is listed twice.
    pub fn from_genesis(genesis: &Genesis) -> Result<ChainAnchor, LightError> {
        let namespace = namespace(genesis);
        let verifier = verifier(&namespace, &genesis.validators)?;
        Ok(ChainAnchor {
            chain_id: genesis.chain_id(),
            namespace,
            epoch_blocks: genesis.epoch_blocks,
            sets: vec![ValidatorSet {
                from_epoch: 0,
                validators: genesis.validators.iter().copied().collect(),
            }],
            verifiers: vec![verifier],
        })
    }

    /// The epoch of the block at `height`.
    fn epoch_of(&self, height: u64) -> u64 {
        height.checked_div(self.epoch_blocks).unwrap_or(0)
    }

    /// The validator sets learnt, oldest first.
    pub fn validator_sets(&self) -> &[ValidatorSet] {
        &self.sets
    }

    /// Learns the validator set that `change` proves: its block must end
    /// an epoch, be finalized by the set the anchor has for that epoch, and
    /// its `ValidatorSets` record must extend the sets learnt so far by the
    /// next epoch's.
    ///
    /// # Errors
    /// The [`LightError`] of the first check that failed; the anchor is
    /// unchanged then.
    pub fn advance(
        &mut self,
        change: &EpochChange,
        rng: &mut impl rand_core::CryptoRng,
    ) -> Result<(), LightError> {
        let header = self.verify_finalized(&change.block, &change.finalization, rng)?;
        let next = header.height.saturating_add(1);
        if self.epoch_blocks == 0 || !next.is_multiple_of(self.epoch_blocks) {
            return Err(LightError::NotAnEpochChange);
        }
        let sets: Vec<ValidatorSet> = header
            .verify(&quartier_ledger::StateKey::ValidatorSets, &change.proof)?
            .ok_or(LightError::BadProof)?;
        let learnt = sets.len();
        if learnt <= self.sets.len()
            || sets[..self.sets.len()] != self.sets[..]
            || sets.last().map(|s| s.from_epoch) != Some(next / self.epoch_blocks)
            || learnt != self.sets.len() + 1
        {
            return Err(LightError::NotAnEpochChange);
        }
        let newest = sets.last().ok_or(LightError::NotAnEpochChange)?;
        let ids: Vec<AccountId> = newest.validators.iter().copied().collect();
        let verifier = verifier(&self.namespace, &ids)?;
        self.verifiers.push(verifier);
        self.sets = sets;
        Ok(())
    }

    /// The chain this anchor is of.
    pub fn chain_id(&self) -> ChainId {
        self.chain_id
    }

    /// Checks that `finalization` (a simplex finalization, encoded) is a
    /// quorum certificate over the digest of `block` (its canonical
    /// encoding) and returns the block's header.
    ///
    /// `rng` draws the batch-verification coefficients: it must be
    /// unpredictable to whoever supplied the certificate.
    ///
    /// # Errors
    /// The [`LightError`] of the first check that failed.
    pub fn verify_finalized(
        &self,
        block: &[u8],
        finalization: &[u8],
        rng: &mut impl rand_core::CryptoRng,
    ) -> Result<FinalizedHeader, LightError> {
        let Parts {
            epoch,
            proposal,
            payload,
            certificate,
        } = split_finalization(finalization)?;
        // The set of the certificate's epoch: the latest learnt that starts
        // at or before it.
        let verifier = self
            .sets
            .iter()
            .zip(&self.verifiers)
            .rev()
            .find(|(s, _)| s.from_epoch <= epoch)
            .map(|(_, v)| v)
            .ok_or(LightError::WrongEpoch)?;
        let certificate = commonware_cryptography::ed25519::certificate::Certificate::decode_cfg(
            Bytes::copy_from_slice(certificate),
            &verifier.certificate_codec_config(),
        )
        .map_err(|_| LightError::MalformedFinalization)?;
        let subject = Finalize {
            proposal,
            _digest: std::marker::PhantomData::<commonware_cryptography::sha256::Digest>,
        };
        if !verifier.verify_certificate(rng, subject, &certificate, &Sequential) {
            return Err(LightError::BadCertificate);
        }
        let digest = block_digest(block);
        if digest != payload {
            return Err(LightError::WrongBlock);
        }
        let header = read_header(block)?;
        // A set signs its own epoch's heights only: a certificate of one
        // epoch over a block of another counts for neither.
        if self.epoch_of(header.height) != epoch {
            return Err(LightError::WrongEpoch);
        }
        Ok(FinalizedHeader { digest, ..header })
    }
}

impl FinalizedHeader {
    /// Checks `proof` against this header's state root and that it proves
    /// the value of `key`, then decodes it (`None`: the key is absent).
    ///
    /// # Errors
    /// [`LightError::WrongKey`], [`LightError::BadProof`].
    pub fn verify<T: BorshDeserialize>(
        &self,
        key: &quartier_ledger::StateKey,
        proof: &StateProof,
    ) -> Result<Option<T>, LightError> {
        if proof.key != *key {
            return Err(LightError::WrongKey);
        }
        proof
            .verify(self.state_root)
            .map_err(|_| LightError::BadProof)?;
        proof.decode().map_err(|_| LightError::BadProof)
    }
}

/// An encoded simplex finalization's parts.
struct Parts<'a> {
    /// The consensus epoch of the proposal's round.
    epoch: u64,
    /// The proposal's bytes: what the validators signed.
    proposal: &'a [u8],
    /// The block digest the proposal carries.
    payload: [u8; 32],
    /// The certificate's bytes.
    certificate: &'a [u8],
}

/// Splits an encoded simplex finalization into its [`Parts`].
fn split_finalization(bytes: &[u8]) -> Result<Parts<'_>, LightError> {
    let bad = |_| LightError::MalformedFinalization;
    let mut buf = Bytes::copy_from_slice(bytes);
    // Proposal: round (epoch, view), parent view, payload digest.
    let epoch: u64 = UInt::<u64>::read(&mut buf).map_err(bad)?.into();
    for _ in 0..2 {
        UInt::<u64>::read(&mut buf).map_err(bad)?;
    }
    let payload = <[u8; 32]>::read(&mut buf).map_err(bad)?;
    let used = bytes.len() - buf.len();
    Ok(Parts {
        epoch,
        proposal: &bytes[..used],
        payload,
        certificate: &bytes[used..],
    })
}

/// Reads a block encoding's header fields (parent, height, time, state
/// root); the transactions after them are not decoded.
fn read_header(block: &[u8]) -> Result<FinalizedHeader, LightError> {
    let bad = |_| LightError::MalformedBlock;
    let mut buf = Bytes::copy_from_slice(block.get(..128).unwrap_or(block));
    <[u8; 32]>::read(&mut buf).map_err(bad)?;
    let height: u64 = UInt::<u64>::read(&mut buf).map_err(bad)?.into();
    let time_ms = u64::read(&mut buf).map_err(bad)?;
    let state_root = <[u8; 32]>::read(&mut buf).map_err(bad)?;
    Ok(FinalizedHeader {
        digest: [0; 32],
        height,
        time_ms,
        state_root: Digest(state_root),
    })
}

/// Simplex's finalize subject and the ed25519 certificate scheme over it.
/// Public inside a private module: the macro's scheme needs them public,
/// nothing outside this crate sees them.
mod scheme {
    #![allow(missing_docs)]
    use bytes::Bytes;
    use commonware_cryptography::impl_certificate_ed25519;
    use commonware_utils::N3f1;

    /// What each validator's finalize vote signs: the encoded proposal.
    #[derive(Clone, Debug)]
    pub struct Finalize<'a, D> {
        pub proposal: &'a [u8],
        pub _digest: std::marker::PhantomData<D>,
    }

    /// The namespace a finalize vote is signed in.
    #[derive(Clone, Debug)]
    pub struct FinalizeNamespace(Vec<u8>);

    impl commonware_cryptography::certificate::Namespace for FinalizeNamespace {
        fn derive(namespace: &[u8]) -> Self {
            FinalizeNamespace([namespace, b"_FINALIZE"].concat())
        }
    }

    impl<D: Clone + std::fmt::Debug + Send + Sync> commonware_cryptography::certificate::Subject
        for Finalize<'_, D>
    {
        type Namespace = FinalizeNamespace;

        fn namespace<'b>(&self, derived: &'b FinalizeNamespace) -> &'b [u8] {
            &derived.0
        }

        fn message(&self) -> Bytes {
            Bytes::copy_from_slice(self.proposal)
        }
    }

    impl_certificate_ed25519!(Finalize<'a, D>, FinalizeNamespace, N3f1);
}

use scheme::{Finalize, Scheme as FinalizeScheme};

/// Test support: finalizations in simplex's format, signed by keys the test
/// holds (what a validator set's finalize votes assemble to). Compiled only
/// with the `testing` feature; nothing in a node or an enclave host uses it.
#[cfg(feature = "testing")]
pub mod testing {
    use super::{FinalizeScheme, Genesis, namespace, scheme::Finalize};
    use commonware_codec::varint::UInt;
    use commonware_codec::{Encode as _, Write as _};
    use commonware_cryptography::certificate::Scheme as _;
    use commonware_cryptography::ed25519;
    use commonware_cryptography::sha256::Digest as Sha256Digest;

    /// A finalization of the block with `digest` in `view`, signed by
    /// `signers` (indices into `keys`, which must be `genesis`'s validators
    /// in its order), encoded as consensus stores it.
    ///
    /// # Panics
    /// If a key is not a validator or `signers` is empty (test input).
    pub fn finalization(
        genesis: &Genesis,
        keys: &[ed25519::PrivateKey],
        signers: &[usize],
        view: u64,
        digest: [u8; 32],
    ) -> Vec<u8> {
        finalization_in(genesis, keys, signers, 0, view, digest)
    }

    /// [`finalization`] in consensus `epoch`, by the set `keys` (that
    /// epoch's validators, in any order).
    ///
    /// # Panics
    /// If a key is listed twice or `signers` is empty (test input).
    pub fn finalization_in(
        genesis: &Genesis,
        keys: &[ed25519::PrivateKey],
        signers: &[usize],
        epoch: u64,
        view: u64,
        digest: [u8; 32],
    ) -> Vec<u8> {
        use commonware_cryptography::Signer as _;
        let mut proposal = Vec::new();
        UInt(epoch).write(&mut proposal);
        UInt(view).write(&mut proposal);
        UInt(view.saturating_sub(1)).write(&mut proposal);
        proposal.extend_from_slice(&digest);
        let participants = commonware_utils::ordered::Set::try_from(
            keys.iter().map(|k| k.public_key()).collect::<Vec<_>>(),
        )
        .expect("distinct keys");
        let subject = || Finalize {
            proposal: &proposal,
            _digest: std::marker::PhantomData::<Sha256Digest>,
        };
        let mut attestations: Vec<_> = signers
            .iter()
            .map(|&i| {
                FinalizeScheme::signer(&namespace(genesis), participants.clone(), keys[i].clone())
                    .expect("a validator")
                    .sign(subject())
                    .expect("signs")
            })
            .collect();
        // Assembled by hand, not with the scheme's `assemble`: a test may
        // want a certificate with fewer signatures than a quorum.
        attestations.sort_by_key(|a| a.signer);
        let certificate = commonware_cryptography::ed25519::certificate::Certificate {
            signers: commonware_cryptography::certificate::Signers::new(
                u32::try_from(participants.len()).expect("few validators"),
                attestations.iter().map(|a| a.signer),
            )
            .expect("distinct signers"),
            signatures: attestations.into_iter().map(|a| a.signature).collect(),
        };
        [proposal, certificate.encode().to_vec()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use quartier_types::AccountId;

    fn genesis(validators: Vec<AccountId>) -> Genesis {
        Genesis {
            gate_ms: 0,
            ..Genesis::new(
                "light-test",
                AccountId([1; 32]),
                AccountId([2; 32]),
                validators,
            )
        }
    }

    /// An ed25519 public key's bytes (the base point's encoding is one).
    const KEY: [u8; 32] = [
        0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
        0x66, 0x66,
    ];

    #[test]
    fn a_validator_set_must_be_distinct_keys() {
        assert!(ChainAnchor::from_genesis(&genesis(vec![AccountId(KEY)])).is_ok());
        assert_eq!(
            ChainAnchor::from_genesis(&genesis(vec![AccountId(KEY), AccountId(KEY)])).err(),
            Some(LightError::Validators)
        );
        assert_eq!(
            ChainAnchor::from_genesis(&genesis(Vec::new())).err(),
            Some(LightError::Validators)
        );
    }

    #[test]
    fn the_namespace_is_the_chain_name() {
        assert_eq!(
            namespace(&genesis(vec![AccountId(KEY)])),
            b"quartier/light-test".to_vec()
        );
    }

    proptest! {
        /// Whatever bytes a host hands over as block and finalization,
        /// they are refused with a typed error, never a panic.
        #[test]
        fn arbitrary_bytes_are_refused(
            block in proptest::collection::vec(any::<u8>(), 0..200),
            finalization in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let anchor = ChainAnchor::from_genesis(&genesis(vec![AccountId(KEY)])).unwrap();
            let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([3; 32]);
            prop_assert!(anchor.verify_finalized(&block, &finalization, &mut rng).is_err());
        }
    }
}
