//! The enclave committee's group key and threshold-signed slot reports
//! (DESIGN §7): a FROST Pedersen DKG (`frost-ristretto255`, RFC 9591
//! ciphersuite FROST(ristretto255, SHA-512)) gives each of `n` enclaves a
//! share of one group key; any `t` of them sign a report, fewer can not.
//! The chain stores the group key and accepts a report only with a valid
//! group signature over it.
//!
//! The three DKG rounds run here in memory, the way enclaves would run them
//! over their channels; the host carries the packages between processes.

use crate::report::SlotSummary;
use borsh::{BorshDeserialize, BorshSerialize};
use frost_ristretto255 as frost;
use quartier_types::hash;
use quartier_types::rng::Rng06;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Domain tag of the message a committee signs for a slot report.
pub const TAG_REPORT: &str = "QUARTIER_ENCLAVE_REPORT";

/// Why the committee could not do something. Verification is opaque.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitteeError {
    /// Invalid sizes: need `2 ≤ t ≤ n`.
    #[error("need 2 <= t <= n")]
    Sizes,
    /// A DKG round failed (a participant's package did not verify).
    #[error("key generation failed")]
    Dkg,
    /// Fewer than `t` members tried to sign, or a share did not verify.
    #[error("not enough valid signature shares")]
    TooFewSigners,
    /// The signature does not verify under the group key.
    #[error("invalid group signature")]
    InvalidSignature,
}

/// One enclave's share of the group key. Secret: no `Debug`.
pub struct Member {
    id: frost::Identifier,
    key: frost::keys::KeyPackage,
}

/// The committee's public key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKey {
    public: frost::keys::PublicKeyPackage,
    threshold: u16,
}

impl GroupKey {
    /// The group verifying key's 32-byte encoding (what the chain stores).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.public.verifying_key().serialize().unwrap_or_default()
    }

    /// The group verifying key as the chain stores it.
    pub fn public_key(&self) -> GroupPublicKey {
        let mut out = [0; 32];
        let bytes = self.to_bytes();
        if bytes.len() == 32 {
            out.copy_from_slice(&bytes);
        }
        GroupPublicKey(out)
    }

    /// How many members must sign.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// Checks a group signature over `message`.
    ///
    /// # Errors
    /// [`CommitteeError::InvalidSignature`] if it does not verify.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), CommitteeError> {
        let signature = frost::Signature::deserialize(signature)
            .map_err(|_| CommitteeError::InvalidSignature)?;
        self.public
            .verifying_key()
            .verify(message, &signature)
            .map_err(|_| CommitteeError::InvalidSignature)
    }
}

/// Runs the FROST Pedersen DKG among `n` members with threshold `t`.
///
/// # Errors
/// [`CommitteeError::Sizes`] for invalid sizes, [`CommitteeError::Dkg`] if a
/// round fails.
pub fn generate(
    n: u16,
    t: u16,
    rng: &mut impl rand_core::CryptoRng,
) -> Result<(Vec<Member>, GroupKey), CommitteeError> {
    if t < 2 || t > n {
        return Err(CommitteeError::Sizes);
    }
    let ids: Vec<frost::Identifier> = (1..=n)
        .map(|i| frost::Identifier::try_from(i).map_err(|_| CommitteeError::Sizes))
        .collect::<Result<_, _>>()?;
    let mut round1_secret = BTreeMap::new();
    let mut round1_public = BTreeMap::new();
    for id in &ids {
        let (secret, package) =
            frost::keys::dkg::part1(*id, n, t, Rng06(rng)).map_err(|_| CommitteeError::Dkg)?;
        round1_secret.insert(*id, secret);
        round1_public.insert(*id, package);
    }
    let others = |me: &frost::Identifier| {
        round1_public
            .iter()
            .filter(|(id, _)| *id != me)
            .map(|(id, p)| (*id, p.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let mut round2_secret = BTreeMap::new();
    let mut round2_to: BTreeMap<frost::Identifier, BTreeMap<frost::Identifier, _>> =
        BTreeMap::new();
    for (id, secret) in round1_secret {
        let (secret2, packages) =
            frost::keys::dkg::part2(secret, &others(&id)).map_err(|_| CommitteeError::Dkg)?;
        round2_secret.insert(id, secret2);
        for (to, package) in packages {
            round2_to.entry(to).or_default().insert(id, package);
        }
    }
    let mut members = Vec::new();
    let mut public = None;
    for (id, secret2) in &round2_secret {
        let received = round2_to.remove(id).unwrap_or_default();
        let (key, public_package) = frost::keys::dkg::part3(secret2, &others(id), &received)
            .map_err(|_| CommitteeError::Dkg)?;
        // Every member must derive the same group key.
        if public.as_ref().is_some_and(|p| p != &public_package) {
            return Err(CommitteeError::Dkg);
        }
        public = Some(public_package);
        members.push(Member { id: *id, key });
    }
    let public = public.ok_or(CommitteeError::Dkg)?;
    Ok((
        members,
        GroupKey {
            public,
            threshold: t,
        },
    ))
}

/// The message a committee signs for a slot of chain `chain`: the tagged
/// hash of the chain id and its summary's canonical bytes (region, slot,
/// receipts root, aggregates, payouts). Another chain refuses it.
pub fn report_message(chain: &[u8; 32], summary: &SlotSummary) -> Vec<u8> {
    let bytes = borsh::to_vec(summary).unwrap_or_default();
    hash::tagged(TAG_REPORT, &[chain, &bytes]).0.to_vec()
}

/// Domain tag of the message a committee signs to take office.
pub const TAG_COMMITTEE: &str = "QUARTIER_ENCLAVE_COMMITTEE";

/// The message a committee signs to take office on chain `chain`: the
/// threshold its key needs and its members' accounts (ascending, as on
/// chain). A member signs it only for the threshold and members its own DKG
/// ran with, so the chain, which checks the threshold against its policy,
/// never puts in office a committee whose key needs more (or fewer) signers
/// or other members than it records.
pub fn committee_message(chain: &[u8; 32], threshold: u16, members: &[[u8; 32]]) -> Vec<u8> {
    let members: Vec<u8> = members.iter().flatten().copied().collect();
    hash::tagged(TAG_COMMITTEE, &[chain, &threshold.to_le_bytes(), &members])
        .0
        .to_vec()
}

/// The group's verifying key as the chain stores it: 32 bytes, with nothing
/// else needed to check a group signature.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct GroupPublicKey(#[serde(with = "quartier_types::hex")] pub [u8; 32]);

/// A FROST group signature: 64 bytes (R ‖ z).
pub type GroupSignature = [u8; 64];

impl GroupPublicKey {
    /// Checks a group signature over `message`.
    ///
    /// # Errors
    /// [`CommitteeError::InvalidSignature`] if the key or the signature does
    /// not decode, or the signature does not verify.
    pub fn verify(&self, message: &[u8], signature: &GroupSignature) -> Result<(), CommitteeError> {
        let key = frost::VerifyingKey::deserialize(&self.0)
            .map_err(|_| CommitteeError::InvalidSignature)?;
        let signature = frost::Signature::deserialize(signature)
            .map_err(|_| CommitteeError::InvalidSignature)?;
        key.verify(message, &signature)
            .map_err(|_| CommitteeError::InvalidSignature)
    }
}

/// `signers` sign `message` together (FROST's two rounds and aggregation).
///
/// # Errors
/// [`CommitteeError::TooFewSigners`] with fewer than the threshold.
pub fn sign(
    signers: &[&Member],
    group: &GroupKey,
    message: &[u8],
    rng: &mut impl rand_core::CryptoRng,
) -> Result<Vec<u8>, CommitteeError> {
    if signers.len() < usize::from(group.threshold) {
        return Err(CommitteeError::TooFewSigners);
    }
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for m in signers {
        let (n, c) = frost::round1::commit(m.key.signing_share(), &mut Rng06(rng));
        nonces.insert(m.id, n);
        commitments.insert(m.id, c);
    }
    let package = frost::SigningPackage::new(commitments, message);
    let mut shares = BTreeMap::new();
    for m in signers {
        let n = nonces.get(&m.id).ok_or(CommitteeError::TooFewSigners)?;
        let share =
            frost::round2::sign(&package, n, &m.key).map_err(|_| CommitteeError::TooFewSigners)?;
        shares.insert(m.id, share);
    }
    let signature = frost::aggregate(&package, &shares, &group.public)
        .map_err(|_| CommitteeError::TooFewSigners)?;
    signature
        .serialize()
        .map_err(|_| CommitteeError::TooFewSigners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn message(n: u8) -> Vec<u8> {
        hash::tagged("TEST", &[&[n]]).0.to_vec()
    }

    #[test]
    fn any_t_of_n_sign_and_fewer_can_not() {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let (members, group) = generate(3, 2, &mut rng).unwrap();
        assert_eq!(members.len(), 3);
        assert_eq!(group.to_bytes().len(), 32);
        for pair in [[0, 1], [0, 2], [1, 2]] {
            let signers: Vec<&Member> = pair.iter().map(|&i| &members[i]).collect();
            let sig = sign(&signers, &group, &message(1), &mut rng).unwrap();
            assert_eq!(group.verify(&message(1), &sig), Ok(()));
            // The signature is over this report only.
            assert_eq!(
                group.verify(&message(2), &sig),
                Err(CommitteeError::InvalidSignature)
            );
        }
        let alone = sign(&[&members[0]], &group, &message(1), &mut rng);
        assert_eq!(alone, Err(CommitteeError::TooFewSigners));
    }

    #[test]
    fn a_signature_of_another_committee_is_rejected() {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let (members, group) = generate(3, 2, &mut rng).unwrap();
        let (_, other_group) = generate(3, 2, &mut rng).unwrap();
        let sig = sign(&[&members[0], &members[1]], &group, &message(1), &mut rng).unwrap();
        assert_eq!(group.verify(&message(1), &sig), Ok(()));
        assert_eq!(
            other_group.verify(&message(1), &sig),
            Err(CommitteeError::InvalidSignature)
        );
        assert_eq!(generate(3, 4, &mut rng).err(), Some(CommitteeError::Sizes));
        assert_eq!(generate(3, 1, &mut rng).err(), Some(CommitteeError::Sizes));
    }
}
