//! Who may place a shielded order or move shielded funds (DESIGN §6): a
//! CLSAG over the region's registered meter keys, each tweaked by a public
//! scalar `t` of the [`Scope`] (chain, region, slot, purpose):
//! `P' = P + t·G`, signed with `x' = x + t`. The key image `x'·Hp(P')` is
//! therefore the same for one meter and scope (the chain refuses a second
//! order, or a second transfer in a slot) and unrelated across scopes (two
//! orders of a meter do not link through keys, nor one meter on two chains).
//!
//! The ring proves membership, not money: every member carries the
//! commitment `G` (mask 1, amount 0) and the pseudo-output is `z'·G` with a
//! fresh, secret, uniformly random `z'`, published with the signature. CLSAG
//! publishes `D/8 = (1 − z')·Hp(P'_π)/8`; while `z'` is secret nobody can
//! tell which member's `Hp(P'_j)` it is built on (a DDH instance). A public
//! `z'` would name the signer at once (see [`crate::linking`]): the first
//! version used `z' = 2`.
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

/// Domain tag of the per-scope tweak.
pub const TAG_METER_TWEAK: &str = "QUARTIER_SHIELDED_METER_TWEAK";

/// The purpose byte of a buy order's authorisation.
pub const PURPOSE_BUY: u8 = 0;
/// The purpose byte of a sell order's authorisation.
pub const PURPOSE_SELL: u8 = 1;
/// The purpose byte of a transfer's or unshield's allowance.
pub const PURPOSE_TRANSFER: u8 = 2;

/// What an authorisation is for: one key image per meter and scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    /// The chain id's bytes.
    pub chain_id: [u8; 32],
    /// The region.
    pub region: u32,
    /// The slot.
    pub slot: u64,
    /// [`PURPOSE_BUY`], [`PURPOSE_SELL`] or [`PURPOSE_TRANSFER`].
    pub purpose: u8,
}

/// A meter's authorisation: the ring signature over the tweaked keys (the
/// ring itself is the region's registry, not carried).
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
    /// The key image: unique per meter and scope.
    #[serde(with = "quartier_types::hex")]
    pub key_image: [u8; 32],
    /// The pseudo-output `z'·G`, `z'` secret and random.
    #[serde(with = "quartier_types::hex")]
    pub pseudo_out: [u8; 32],
    /// The CLSAG, monero's encoding.
    #[serde(with = "quartier_types::hex")]
    pub signature: Vec<u8>,
}

/// The public tweak of a scope.
pub fn tweak(scope: &Scope) -> DScalar {
    hash_to_scalar(
        TAG_METER_TWEAK,
        &[
            &scope.chain_id,
            &scope.region.to_le_bytes(),
            &scope.slot.to_le_bytes(),
            &[scope.purpose],
        ],
    )
}

/// The ring of tweaked keys for `meters` (registered Ed25519 keys, in the
/// order the ring is signed and verified over), as the signature sees it.
///
/// # Errors
/// [`SpendError::InvalidRing`] if a key does not decode.
pub fn ring(meters: &[[u8; 32]], scope: &Scope) -> Result<Vec<RingMember>, SpendError> {
    let g = (ED25519_BASEPOINT_TABLE * &DScalar::ONE).compress().0;
    let shift = ED25519_BASEPOINT_TABLE * &tweak(scope);
    meters
        .iter()
        .map(|m| {
            let p = point(m).ok_or(SpendError::InvalidRing)?;
            Ok(RingMember {
                key: (p + shift).compress().0,
                commitment: g,
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
    scope: &Scope,
    message: [u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<Authorisation, SpendError> {
    let x: Option<DScalar> = DScalar::from_canonical_bytes(*meter_scalar).into();
    let secret = Zeroizing::new(x.ok_or(SpendError::InvalidRing)? + tweak(scope));
    let input = Input {
        secret,
        opening: Commitment::new(Scalar::from(DScalar::ONE), 0),
        ring: ring(meters, scope)?,
        real,
    };
    // The pseudo-output's mask: fresh, uniform, never published.
    let mut wide = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(&mut wide[..]);
    let mask = Zeroizing::new(DScalar::from_bytes_mod_order_wide(&wide));
    let mut signed = spend::sign(vec![input], &mask, message, rng)?;
    let s = signed.pop().ok_or(SpendError::InvalidRing)?;
    Ok(Authorisation {
        key_image: s.key_image,
        pseudo_out: s.pseudo_out,
        signature: s.signature,
    })
}

/// Verifies an authorisation over the registered `meters` for `scope`.
///
/// # Errors
/// [`SpendError`] if it does not verify.
pub fn verify(
    auth: &Authorisation,
    meters: &[[u8; 32]],
    scope: &Scope,
    message: &[u8; 32],
) -> Result<(), SpendError> {
    let spend = Spend {
        ring: ring(meters, scope)?,
        key_image: auth.key_image,
        pseudo_out: auth.pseudo_out,
        signature: auth.signature.clone(),
    };
    spend::verify(&spend, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linking::{signer_by_known_masks, small_mask};
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

    fn scope(chain: u8, region: u32, slot: u64, purpose: u8) -> Scope {
        Scope {
            chain_id: [chain; 32],
            region,
            slot,
            purpose,
        }
    }

    fn scalar(k: &SigningKey) -> [u8; 32] {
        k.to_scalar().to_bytes()
    }

    #[test]
    fn one_image_per_meter_and_scope_and_none_shared_across_scopes() {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let m = meters(8);
        let ring = keys(&m);
        let me = scalar(&m[3]);
        let here = scope(7, 1, 100, PURPOSE_BUY);
        let a = sign(&me, &ring, 3, &here, [1; 32], &mut rng).unwrap();
        assert_eq!(verify(&a, &ring, &here, &[1; 32]), Ok(()));
        // A second order of the same meter and scope: the same image.
        let again = sign(&me, &ring, 3, &here, [2; 32], &mut rng).unwrap();
        assert_eq!(again.key_image, a.key_image);
        assert_ne!(again.pseudo_out, a.pseudo_out, "a fresh mask every time");
        // Another slot, side, purpose or chain: another, unrelated image.
        for other in [
            scope(7, 1, 101, PURPOSE_BUY),
            scope(7, 1, 100, PURPOSE_SELL),
            scope(7, 1, 100, PURPOSE_TRANSFER),
            scope(8, 1, 100, PURPOSE_BUY),
        ] {
            let b = sign(&me, &ring, 3, &other, [1; 32], &mut rng).unwrap();
            assert_ne!(b.key_image, a.key_image, "{other:?}");
        }
        // Two meters in the same scope: different images.
        let other = sign(&scalar(&m[5]), &ring, 5, &here, [1; 32], &mut rng).unwrap();
        assert_ne!(other.key_image, a.key_image);
    }

    #[test]
    fn outsiders_other_scopes_and_tampering_are_refused() {
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        let m = meters(8);
        let ring = keys(&m);
        let here = scope(7, 1, 100, PURPOSE_BUY);
        let a = sign(&scalar(&m[2]), &ring, 2, &here, [1; 32], &mut rng).unwrap();
        // Verified for another scope, message or ring: refused.
        for other in [
            scope(7, 1, 101, PURPOSE_BUY),
            scope(7, 1, 100, PURPOSE_SELL),
            scope(7, 2, 100, PURPOSE_BUY),
            scope(9, 1, 100, PURPOSE_BUY),
        ] {
            assert!(verify(&a, &ring, &other, &[1; 32]).is_err(), "{other:?}");
        }
        assert!(verify(&a, &ring, &here, &[9; 32]).is_err());
        assert!(verify(&a, &ring[1..], &here, &[1; 32]).is_err());
        let mut t = a.clone();
        t.signature[3] ^= 1;
        assert!(verify(&t, &ring, &here, &[1; 32]).is_err());
        let mut t = a.clone();
        t.pseudo_out = (ED25519_BASEPOINT_TABLE * &DScalar::from(2u8)).compress().0;
        assert!(
            verify(&t, &ring, &here, &[1; 32]).is_err(),
            "another pseudo-out"
        );
        // A key not registered can not sign in the ring's name.
        let outsider = scalar(&SigningKey::from_bytes(&[99; 32]));
        assert_eq!(
            sign(&outsider, &ring, 2, &here, [1; 32], &mut rng).err(),
            Some(SpendError::InvalidRing)
        );
    }

    /// The attack of issue 17, point 1: sign as each member of a ring of 16
    /// and look for the member whose `z·Hp(P')/8` is the published `D/8`,
    /// for every mask difference an observer can name from commitments with
    /// small masks (the members' `G`, any pseudo-output `k·G`, k ≤ 64). It
    /// recognised the signer 16 times of 16 with the fixed pseudo-output
    /// `2·G`; it must recognise nobody.
    #[test]
    fn the_authorisation_does_not_name_its_signer() {
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        let m = meters(16);
        let ring = keys(&m);
        let here = scope(7, 1, 100, PURPOSE_BUY);
        let tweaked = super::ring(&ring, &here).unwrap();
        let mut named = 0;
        for (real, k) in m.iter().enumerate() {
            let a = sign(&scalar(k), &ring, real as u8, &here, [1; 32], &mut rng).unwrap();
            let found = signer_by_known_masks(&a.signature, &tweaked, &a.pseudo_out, |c| {
                small_mask(c, 0, 64)
            });
            named += usize::from(found.is_some());
        }
        assert_eq!(named, 0, "the signer was named {named} times of 16");
    }
}
