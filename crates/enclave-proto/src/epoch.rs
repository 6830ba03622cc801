//! Epoch keys (DESIGN §7): one enclave generates each epoch's HPKE key pair
//! and sends its secret to the other committee members, each sealed to that
//! member's attested identity key; the committee threshold-signs the epoch's
//! public key, which the chain publishes for households to seal to. A
//! member drops the previous epoch's secret when it takes the next
//! (forward secrecy: a later compromise does not open earlier orders).
//!
//! An identity key is an X25519 HPKE key pair generated inside the enclave;
//! its public half is the first 32 bytes of the quote's report data, so a
//! share can only be opened by code with an allowed measurement.

use crate::sealed::{Epoch, EpochKeyPair, HpkeKeyPair, hpke_open_auth, hpke_seal_auth};
use quartier_types::hash;
use rand_core::CryptoRng;
use zeroize::Zeroize as _;

/// HPKE `info` of epoch-key shares.
pub const HPKE_INFO_SHARE: &[u8] = b"QUARTIER_ENCLAVE_EPOCH_KEY_SHARE";
/// Domain tag of what the committee signs to publish an epoch key.
pub const TAG_EPOCH_KEY: &str = "QUARTIER_ENCLAVE_EPOCH_KEY";

/// How many epochs before the newest published one a member keeps keys
/// for. When the chain publishes epoch `e`'s key, every key of an epoch
/// before `e − KEPT_EPOCHS_BEHIND` is erased — on the chain's schedule of
/// publishing keys ahead of their slots, not on clearing: a region that
/// stops clearing loses its old secrets all the same, and a slot of an
/// erased epoch clears with every order refused unopened.
pub const KEPT_EPOCHS_BEHIND: u64 = 2;

/// Why an epoch-key share is refused. Opaque on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ShareError {
    /// Not for this identity, tampered, or not the published key.
    #[error("invalid epoch key share")]
    Invalid,
}

/// An enclave's identity key pair; the secret never leaves the enclave.
pub struct IdentityKey(HpkeKeyPair);

impl IdentityKey {
    /// A fresh identity from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> IdentityKey {
        IdentityKey(HpkeKeyPair::generate(rng))
    }

    /// The identity whose secret is `bytes` (from the sealed state).
    pub fn from_secret(bytes: &[u8]) -> Option<IdentityKey> {
        HpkeKeyPair::from_secret(bytes).map(IdentityKey)
    }

    /// The key pair (stays inside the enclave), to seal from this identity.
    pub fn pair(&self) -> &HpkeKeyPair {
        &self.0
    }

    /// The secret key (stays inside the enclave).
    pub fn secret(&self) -> &<hpke::kem::X25519HkdfSha256 as hpke::Kem>::PrivateKey {
        &self.0.secret
    }

    /// The secret's bytes, for the sealed state (zeroize after use).
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.0.secret_bytes()
    }

    /// The public key other members seal epoch secrets to.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.public_key()
    }

    /// The quote's report data: the identity public key, then `binding`
    /// (e.g. the hash of the member's DKG commitments).
    pub fn report_data(&self, binding: [u8; 32]) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[..32].copy_from_slice(&self.public_key());
        data[32..].copy_from_slice(&binding);
        data
    }

    /// Opens `share` and returns the epoch key pair, if it is for this
    /// identity, was sealed (HPKE auth mode) by one of `senders` — the other
    /// committee members' identities — for the committee `context` names,
    /// and its public key is `published`.
    ///
    /// # Errors
    /// [`ShareError::Invalid`] otherwise: a share from anyone else (an
    /// outsider planting a key it knows) does not open.
    pub fn receive(
        &self,
        share: &EpochKeyShare,
        published: &[u8; 32],
        senders: &[[u8; 32]],
        context: &[u8],
    ) -> Result<EpochKeyPair, ShareError> {
        if share.to != self.public_key()
            || share.from == self.public_key()
            || !senders.contains(&share.from)
        {
            return Err(ShareError::Invalid);
        }
        let mut secret = hpke_open_auth(
            &self.0.secret,
            &share.from,
            &share.encapped_key,
            HPKE_INFO_SHARE,
            &share.ciphertext,
            &share_aad(share.epoch, published, context),
        )
        .ok_or(ShareError::Invalid)?;
        let key = EpochKeyPair::from_secret(share.epoch, &secret);
        secret.zeroize();
        let key = key.ok_or(ShareError::Invalid)?;
        if &key.public_key() != published {
            return Err(ShareError::Invalid);
        }
        Ok(key)
    }
}

/// An epoch secret sealed to one member's identity key.
#[derive(Clone, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize)]
pub struct EpochKeyShare {
    /// The epoch.
    pub epoch: Epoch,
    /// The sender's identity public key (the share is sealed in HPKE auth
    /// mode from it).
    pub from: [u8; 32],
    /// The recipient's identity public key.
    pub to: [u8; 32],
    /// HPKE's encapsulated key.
    pub encapped_key: [u8; 32],
    /// The sealed secret.
    pub ciphertext: Vec<u8>,
}

fn share_aad(epoch: Epoch, public: &[u8; 32], context: &[u8]) -> Vec<u8> {
    let mut aad = epoch.0.to_le_bytes().to_vec();
    aad.extend_from_slice(public);
    aad.extend_from_slice(context);
    aad
}

/// Seals `key`'s secret from identity `from` to each recipient identity
/// (attested beforehand), bound to the committee `context` names (its group
/// key) and to the epoch and public key.
pub fn share(
    key: &EpochKeyPair,
    from: &IdentityKey,
    recipients: &[[u8; 32]],
    context: &[u8],
    rng: &mut impl CryptoRng,
) -> Vec<EpochKeyShare> {
    let mut secret = key.secret_bytes();
    let aad = share_aad(key.epoch(), &key.public_key(), context);
    let shares = recipients
        .iter()
        .filter_map(|to| {
            let (encapped_key, ciphertext) =
                hpke_seal_auth(to, from.pair(), HPKE_INFO_SHARE, &secret, &aad, rng)?;
            Some(EpochKeyShare {
                epoch: key.epoch(),
                from: from.public_key(),
                to: *to,
                encapped_key,
                ciphertext,
            })
        })
        .collect();
    secret.zeroize();
    shares
}

/// What the committee signs to publish an epoch key on chain `chain`
/// (another chain refuses it).
pub fn epoch_key_message(chain: &[u8; 32], epoch: Epoch, public: &[u8; 32]) -> Vec<u8> {
    hash::tagged(TAG_EPOCH_KEY, &[chain, &epoch.0.to_le_bytes(), public])
        .0
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::committee;
    use crate::sealed::{OrderPayload, SignedOrder, seal};
    use quartier_types::{AccountId, Energy, Price, RegionId, Side, Slot};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn order(epoch: Epoch) -> SignedOrder {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        SignedOrder::sign(
            OrderPayload {
                chain: [0xc4; 32],
                wallet: AccountId(key.verifying_key().to_bytes()),
                region: RegionId(1),
                slot: Slot(8),
                epoch,
                side: Side::Sell,
                limit: Price::new(9_000),
                energy: Energy::new(321),
                receipt_key: [7; 32],
            },
            &key,
        )
    }

    #[test]
    fn members_receive_the_epoch_key_and_open_what_households_sealed() {
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let ids: Vec<IdentityKey> = (0..3).map(|_| IdentityKey::generate(&mut rng)).collect();
        let (members, group) = committee::generate(3, 2, &mut rng).unwrap();
        // Member 0 creates epoch 5's key and shares it with 1 and 2.
        let key = EpochKeyPair::generate(Epoch(5), &mut rng);
        let published = key.public_key();
        let recipients = [ids[1].public_key(), ids[2].public_key()];
        let shares = share(&key, &ids[0], &recipients, b"committee", &mut rng);
        // Any two members publish it with a group signature.
        let msg = epoch_key_message(&[0xc4; 32], Epoch(5), &published);
        let sig = committee::sign(&[&members[0], &members[1]], &group, &msg, &mut rng).unwrap();
        assert_eq!(group.verify(&msg, &sig), Ok(()));
        // A household seals to the published key; every member opens it.
        let o = order(Epoch(5));
        let sealed = seal(&published, &o, &mut rng).unwrap();
        assert_eq!(key.open(&sealed), Ok(o));
        for (id, s) in ids[1..].iter().zip(&shares) {
            let received = id
                .receive(s, &published, &[ids[0].public_key()], b"committee")
                .unwrap();
            assert_eq!(received.open(&sealed), Ok(o));
        }
    }

    #[test]
    fn a_share_opens_only_for_its_identity_from_a_member_and_the_published_key() {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let alice = IdentityKey::generate(&mut rng);
        let bob = IdentityKey::generate(&mut rng);
        let mallory = IdentityKey::generate(&mut rng);
        let members = [alice.public_key(), bob.public_key()];
        let key = EpochKeyPair::generate(Epoch(1), &mut rng);
        let shares = share(&key, &bob, &[alice.public_key()], b"c", &mut rng);
        let s = &shares[0];
        let receive = |id: &IdentityKey, s: &EpochKeyShare, public: &[u8; 32], context: &[u8]| {
            id.receive(s, public, &members, context).err()
        };
        assert_eq!(receive(&alice, s, &key.public_key(), b"c"), None);
        // Another enclave (say, one that was never attested) can not open it,
        // even claiming to be the recipient.
        assert_eq!(
            receive(&mallory, s, &key.public_key(), b"c"),
            Some(ShareError::Invalid)
        );
        let mut redirected = s.clone();
        redirected.to = mallory.public_key();
        assert_eq!(
            receive(&mallory, &redirected, &key.public_key(), b"c"),
            Some(ShareError::Invalid)
        );
        // A share presented for another published key, epoch or committee
        // is refused.
        let other = EpochKeyPair::generate(Epoch(1), &mut rng);
        assert_eq!(
            receive(&alice, s, &other.public_key(), b"c"),
            Some(ShareError::Invalid)
        );
        let mut later = s.clone();
        later.epoch = Epoch(2);
        assert_eq!(
            receive(&alice, &later, &key.public_key(), b"c"),
            Some(ShareError::Invalid)
        );
        assert_eq!(
            receive(&alice, s, &key.public_key(), b"another"),
            Some(ShareError::Invalid)
        );
        // An outsider plants a key it knows: from itself it is no member's;
        // naming Bob as its sender, it does not open (HPKE auth mode).
        let planted = EpochKeyPair::generate(Epoch(3), &mut rng);
        let from_mallory = share(&planted, &mallory, &[alice.public_key()], b"c", &mut rng);
        assert_eq!(
            receive(&alice, &from_mallory[0], &planted.public_key(), b"c"),
            Some(ShareError::Invalid)
        );
        let mut as_bob = from_mallory[0].clone();
        as_bob.from = bob.public_key();
        assert_eq!(
            receive(&alice, &as_bob, &planted.public_key(), b"c"),
            Some(ShareError::Invalid)
        );
        // The quote's report data carries the identity key.
        assert_eq!(&alice.report_data([9; 32])[..32], &alice.public_key());
    }
}
