//! Who may place a shielded order (DESIGN §6): a CLSAG over the region's
//! registered meter keys, each tweaked by a public per-(region, slot, side)
//! scalar `t`: `P' = P + t·G`, signed with `x' = x + t`. The key image
//! `x'·Hp(P')` is therefore the same for one meter, slot and side (the chain
//! refuses a second order) and unrelated from one slot to the next (two
//! orders of a meter do not link through keys). Ring members carry the
//! commitment `G` (mask 1, amount 0) and the pseudo-output is `2·G`: this
//! ring proves membership, not money (CLSAG needs the two to differ).
//!
//! A meter's registered key is its Ed25519 account key `A = s·G`; its
//! secret scalar crosses from `ed25519-dalek` as bytes.

use crate::keys::{hash_to_scalar, point};
use crate::spend::{self, Input, RingMember, Spend, SpendError};
use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::Scalar as DScalar;
use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use monero_ed25519::{Commitment, Scalar};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// Domain tag of the per-(region, slot, side) tweak.
pub const TAG_METER_TWEAK: &str = "QUARTIER_SHIELDED_METER_TWEAK";

/// A meter's authorisation of one order: the ring signature over the
/// tweaked keys (the ring itself is the region's registry, not carried).
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Authorisation {
    /// The key image: unique per meter, region, slot and side.
    #[serde(with = "quartier_types::hex")]
    pub key_image: [u8; 32],
    /// The CLSAG, monero's encoding.
    #[serde(with = "quartier_types::hex")]
    pub signature: Vec<u8>,
}

/// The mask of the authorisation's fixed pseudo-output `2·G`.
fn pseudo_mask() -> DScalar {
    DScalar::from(2u8)
}

/// The public tweak of (region, slot, side).
pub fn tweak(region: u32, slot: u64, side: u8) -> DScalar {
    hash_to_scalar(
        TAG_METER_TWEAK,
        &[&region.to_le_bytes(), &slot.to_le_bytes(), &[side]],
    )
}

/// The ring of tweaked keys for `meters` (registered Ed25519 keys, in the
/// order the ring is signed and verified over).
fn tweaked_ring(meters: &[[u8; 32]], t: &DScalar) -> Result<Vec<RingMember>, SpendError> {
    let g = ED25519_BASEPOINT_TABLE * &DScalar::ONE;
    let shift = ED25519_BASEPOINT_TABLE * t;
    meters
        .iter()
        .map(|m| {
            let p = point(m).ok_or(SpendError::InvalidRing)?;
            Ok(RingMember {
                key: (p + shift).compress().0,
                commitment: g.compress().0,
            })
        })
        .collect()
}

/// Signs `message` as the meter with Ed25519 secret scalar `meter_scalar`
/// (its `SigningKey::to_scalar()` bytes), at position `real` of `meters`.
///
/// # Errors
/// [`SpendError::InvalidRing`] if the scalar is not canonical, the ring is
/// invalid, or the meter is not at `real`.
pub fn sign(
    meter_scalar: &[u8; 32],
    meters: &[[u8; 32]],
    real: u8,
    (region, slot, side): (u32, u64, u8),
    message: [u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<Authorisation, SpendError> {
    let x: Option<DScalar> = DScalar::from_canonical_bytes(*meter_scalar).into();
    let t = tweak(region, slot, side);
    let secret = Zeroizing::new(x.ok_or(SpendError::InvalidRing)? + t);
    let ring = tweaked_ring(meters, &t)?;
    let input = Input {
        secret,
        opening: Commitment::new(Scalar::from(DScalar::ONE), 0),
        ring,
        real,
    };
    let mut signed = spend::sign(vec![input], &pseudo_mask(), message, rng)?;
    let s = signed.pop().ok_or(SpendError::InvalidRing)?;
    Ok(Authorisation {
        key_image: s.key_image,
        signature: s.signature,
    })
}

/// Verifies an authorisation over the region's registered `meters`.
///
/// # Errors
/// [`SpendError`] if it does not verify.
pub fn verify(
    auth: &Authorisation,
    meters: &[[u8; 32]],
    (region, slot, side): (u32, u64, u8),
    message: &[u8; 32],
) -> Result<(), SpendError> {
    let t = tweak(region, slot, side);
    let ring = tweaked_ring(meters, &t)?;
    let spend = Spend {
        ring,
        key_image: auth.key_image,
        pseudo_out: (ED25519_BASEPOINT_TABLE * &pseudo_mask()).compress().0,
        signature: auth.signature.clone(),
    };
    spend::verify(&spend, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn meters(n: u8) -> Vec<SigningKey> {
        (0..n)
            .map(|i| SigningKey::from_bytes(&[i + 1; 32]))
            .collect()
    }

    fn keys(m: &[SigningKey]) -> Vec<[u8; 32]> {
        m.iter().map(|k| k.verifying_key().to_bytes()).collect()
    }

    #[test]
    fn one_image_per_meter_slot_and_side_and_none_shared_across_slots() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let m = meters(8);
        let ring = keys(&m);
        let me = m[3].to_scalar().to_bytes();
        let a = sign(&me, &ring, 3, (1, 100, 0), [1; 32], &mut rng).unwrap();
        assert_eq!(verify(&a, &ring, (1, 100, 0), &[1; 32]), Ok(()));
        // A second order of the same meter, slot and side: the same image.
        let again = sign(&me, &ring, 3, (1, 100, 0), [2; 32], &mut rng).unwrap();
        assert_eq!(again.key_image, a.key_image);
        // Another slot or side: another, unrelated image.
        let next = sign(&me, &ring, 3, (1, 101, 0), [1; 32], &mut rng).unwrap();
        let sell = sign(&me, &ring, 3, (1, 100, 1), [1; 32], &mut rng).unwrap();
        assert_ne!(next.key_image, a.key_image);
        assert_ne!(sell.key_image, a.key_image);
        // Two meters in the same slot: different images.
        let other = sign(
            &m[5].to_scalar().to_bytes(),
            &ring,
            5,
            (1, 100, 0),
            [1; 32],
            &mut rng,
        )
        .unwrap();
        assert_ne!(other.key_image, a.key_image);
    }

    #[test]
    fn outsiders_other_slots_and_tampering_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let m = meters(8);
        let ring = keys(&m);
        let a = sign(
            &m[2].to_scalar().to_bytes(),
            &ring,
            2,
            (1, 100, 0),
            [1; 32],
            &mut rng,
        )
        .unwrap();
        // Verified for another slot, side, region, message or ring: refused.
        assert!(verify(&a, &ring, (1, 101, 0), &[1; 32]).is_err());
        assert!(verify(&a, &ring, (1, 100, 1), &[1; 32]).is_err());
        assert!(verify(&a, &ring, (2, 100, 0), &[1; 32]).is_err());
        assert!(verify(&a, &ring, (1, 100, 0), &[9; 32]).is_err());
        assert!(verify(&a, &ring[1..], (1, 100, 0), &[1; 32]).is_err());
        let mut t = a.clone();
        t.signature[3] ^= 1;
        assert!(verify(&t, &ring, (1, 100, 0), &[1; 32]).is_err());
        // A key not registered can not sign in the ring's name.
        let outsider = SigningKey::from_bytes(&[99; 32]).to_scalar().to_bytes();
        assert_eq!(
            sign(&outsider, &ring, 2, (1, 100, 0), [1; 32], &mut rng).err(),
            Some(SpendError::InvalidRing)
        );
    }
}
