//! Spending shielded outputs: one CLSAG per input over a ring of pool
//! outputs (the real one hidden among decoys), with a key image that is the
//! same whenever the same output is spent — the chain keeps the set of
//! images and refuses a second spend. Each input carries a pseudo-output
//! commitment re-randomising its amount; the transaction balances when
//! `Σ pseudo-outs = Σ output commitments + (public amount)·H`, which anyone
//! checks without learning an amount.
//!
//! The signatures are `monero-clsag`'s; its message is a 32-byte hash the
//! caller binds the whole transaction into.

use crate::keys::point;
use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::Scalar as DScalar;
use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::EdwardsPoint;
use monero_clsag::{Clsag, ClsagContext, Decoys};
use monero_ed25519::{Commitment, CompressedPoint, Point, Scalar};
use quartier_types::rng::Rng06;
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// The largest ring `monero-clsag` signs over.
pub const MAX_RING: usize = 255;

/// A ring member: an output's one-time key and amount commitment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RingMember {
    /// The one-time public key.
    pub key: [u8; 32],
    /// The amount commitment.
    pub commitment: [u8; 32],
}

/// One signed input as it goes on chain.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Spend {
    /// The ring: the real output among decoys, in the order signed.
    pub ring: Vec<RingMember>,
    /// The key image `x·Hp(P)` of the real output.
    pub key_image: [u8; 32],
    /// The pseudo-output commitment: same amount, fresh mask.
    pub pseudo_out: [u8; 32],
    /// The CLSAG (`s` per member, `c1`, `D`), monero's encoding.
    pub signature: Vec<u8>,
}

/// A secret input: the output's one-time secret, its opening and its ring.
pub struct Input {
    /// `x` with `x·G` = the real member's key.
    pub secret: Zeroizing<DScalar>,
    /// The real output's commitment opening.
    pub opening: Commitment,
    /// The ring.
    pub ring: Vec<RingMember>,
    /// The real output's position in the ring.
    pub real: u8,
}

/// Why a spend can not be signed or does not verify. Opaque on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    /// The ring is empty, too large, has undecodable members, or the real
    /// member does not match the secret and opening.
    #[error("invalid ring")]
    InvalidRing,
    /// The signature does not verify, or its encoding is malformed.
    #[error("invalid ring signature")]
    InvalidSignature,
}

fn ring_points(ring: &[RingMember]) -> Result<Vec<[Point; 2]>, SpendError> {
    if ring.is_empty() || ring.len() > MAX_RING {
        return Err(SpendError::InvalidRing);
    }
    ring.iter()
        .map(|m| {
            Some([
                Point::from(point(&m.key)?),
                Point::from(point(&m.commitment)?),
            ])
        })
        .collect::<Option<Vec<_>>>()
        .ok_or(SpendError::InvalidRing)
}

/// The key image of the output with one-time secret `x` and key `P = x·G`:
/// `x·Hp(P)` with monero-oxide's hash to point.
pub fn key_image(x: &DScalar) -> [u8; 32] {
    let public = ED25519_BASEPOINT_TABLE * x;
    let generator: EdwardsPoint = Point::biased_hash(public.compress().0).into();
    (generator * x).compress().0
}

/// Signs `inputs` for a transaction whose output masks sum to
/// `output_masks` and whose content hashes to `message`.
///
/// # Errors
/// [`SpendError::InvalidRing`] if an input's ring or secret is inconsistent.
pub fn sign(
    inputs: Vec<Input>,
    output_masks: &DScalar,
    message: [u8; 32],
    rng: &mut impl CryptoRng,
) -> Result<Vec<Spend>, SpendError> {
    let mut contexts = Vec::with_capacity(inputs.len());
    let mut public = Vec::with_capacity(inputs.len());
    for input in inputs {
        let points = ring_points(&input.ring)?;
        // monero-clsag wants strictly increasing chain positions; ours are
        // not part of the signed message, so the ring's own order serves.
        let offsets = (0..points.len() as u64).map(|i| u64::from(i > 0)).collect();
        let decoys = Decoys::new(offsets, input.real, points).ok_or(SpendError::InvalidRing)?;
        let context =
            ClsagContext::new(decoys, input.opening).map_err(|_| SpendError::InvalidRing)?;
        public.push((input.ring, key_image(&input.secret)));
        contexts.push((Zeroizing::new(Scalar::from(*input.secret)), context));
    }
    let signed = Clsag::sign(
        &mut Rng06(rng),
        contexts,
        Scalar::from(*output_masks),
        message,
    )
    .map_err(|_| SpendError::InvalidRing)?;
    signed
        .into_iter()
        .zip(public)
        .map(|((clsag, pseudo_out), (ring, key_image))| {
            let mut signature = Vec::new();
            clsag
                .write(&mut signature)
                .map_err(|_| SpendError::InvalidSignature)?;
            Ok(Spend {
                ring,
                key_image,
                pseudo_out: pseudo_out.compress().to_bytes(),
                signature,
            })
        })
        .collect()
}

/// Verifies one input's ring signature against `message`.
///
/// # Errors
/// [`SpendError`] if the ring or the signature is invalid.
pub fn verify(spend: &Spend, message: &[u8; 32]) -> Result<(), SpendError> {
    ring_points(&spend.ring)?;
    let mut bytes = spend.signature.as_slice();
    let clsag =
        Clsag::read(spend.ring.len(), &mut bytes).map_err(|_| SpendError::InvalidSignature)?;
    if !bytes.is_empty() {
        return Err(SpendError::InvalidSignature);
    }
    let ring = spend
        .ring
        .iter()
        .map(|m| {
            [
                CompressedPoint::from(m.key),
                CompressedPoint::from(m.commitment),
            ]
        })
        .collect();
    clsag
        .verify(
            ring,
            &CompressedPoint::from(spend.key_image),
            &CompressedPoint::from(spend.pseudo_out),
            message,
        )
        .map_err(|_| SpendError::InvalidSignature)
}

/// Whether `Σ pseudo-outs = Σ outputs + public·H`: the inputs' amounts
/// equal the outputs' plus the amount made public (escrow and fee).
pub fn balanced(spends: &[Spend], outputs: &[[u8; 32]], public: u64) -> bool {
    fn sum<'a>(mut points: impl Iterator<Item = &'a [u8; 32]>) -> Option<EdwardsPoint> {
        points.try_fold(EdwardsPoint::default(), |acc, p| Some(acc + point(p)?))
    }
    let Some(inputs) = sum(spends.iter().map(|s| &s.pseudo_out)) else {
        return false;
    };
    let Some(outputs) = sum(outputs.iter()) else {
        return false;
    };
    // public·H is the commitment to `public` with a zero mask.
    let public_commitment: EdwardsPoint = Commitment::new(Scalar::from(DScalar::ZERO), public)
        .commit()
        .into();
    inputs == outputs + public_commitment
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::WalletKeys;
    use crate::output::{Output, create};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    struct Pool {
        outputs: Vec<Output>,
        rng: ChaCha20Rng,
    }

    fn pool(n: usize) -> Pool {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let other = WalletKeys::from_seed(&[9; 32]);
        let outputs = (0..n)
            .map(|i| create(&other.address(), i as u64, &mut rng).unwrap().0)
            .collect();
        Pool { outputs, rng }
    }

    fn member(o: &Output) -> RingMember {
        RingMember {
            key: o.key,
            commitment: o.commitment,
        }
    }

    /// Alice spends her output of 1 000 into 600 (to Bob) + a public 400.
    fn spend(ring_size: usize) -> (Vec<Spend>, Vec<[u8; 32]>, [u8; 32], [u8; 32]) {
        let mut p = pool(ring_size);
        let alice = WalletKeys::from_seed(&[1; 32]);
        let bob = WalletKeys::from_seed(&[2; 32]);
        let (mine, _) = create(&alice.address(), 1_000, &mut p.rng).unwrap();
        let real = (ring_size / 2) as u8;
        let mut ring: Vec<RingMember> = p.outputs.iter().take(ring_size - 1).map(member).collect();
        ring.insert(usize::from(real), member(&mine));
        let received = alice.view_key().scan(&mine).unwrap();
        let (out, out_secret) = create(&bob.address(), 600, &mut p.rng).unwrap();
        let mask = DScalar::from_bytes_mod_order(*out_secret.mask);
        let message = [7; 32];
        let secret = alice.one_time_secret(&mine).unwrap();
        let image = key_image(&secret);
        let input = Input {
            secret,
            opening: received.opening(),
            ring,
            real,
        };
        let spends = sign(vec![input], &mask, message, &mut p.rng).unwrap();
        (spends, vec![out.commitment], message, image)
    }

    #[test]
    fn a_spend_verifies_balances_and_carries_the_outputs_key_image() {
        for k in [2usize, 8, 16] {
            let (spends, outputs, message, image) = spend(k);
            assert_eq!(spends[0].ring.len(), k);
            assert_eq!(verify(&spends[0], &message), Ok(()));
            assert_eq!(
                spends[0].key_image, image,
                "the same output, the same image"
            );
            assert!(balanced(&spends, &outputs, 400));
            assert!(!balanced(&spends, &outputs, 401), "amounts must add up");
            assert!(!balanced(&spends, &outputs, 399));
        }
    }

    #[test]
    fn any_tampering_breaks_the_signature() {
        let (spends, _, message, _) = spend(8);
        let s = &spends[0];
        assert_eq!(verify(s, &[8; 32]), Err(SpendError::InvalidSignature));
        let mut t = s.clone();
        t.key_image = spends[0].ring[0].key;
        assert!(verify(&t, &message).is_err(), "another key image");
        let mut t = s.clone();
        t.ring.swap(0, 1);
        assert!(verify(&t, &message).is_err(), "ring order");
        let mut t = s.clone();
        t.ring[3].commitment = t.ring[4].commitment;
        assert!(verify(&t, &message).is_err(), "a member's commitment");
        let mut t = s.clone();
        t.pseudo_out = t.ring[0].commitment;
        assert!(verify(&t, &message).is_err(), "pseudo-out");
        let mut t = s.clone();
        t.signature[5] ^= 1;
        assert!(verify(&t, &message).is_err(), "signature bytes");
        let mut t = s.clone();
        t.signature.push(0);
        assert_eq!(verify(&t, &message), Err(SpendError::InvalidSignature));
        let mut t = s.clone();
        t.ring.pop();
        assert!(verify(&t, &message).is_err(), "ring size");
    }

    #[test]
    fn signing_with_a_key_not_in_the_ring_fails() {
        let mut p = pool(4);
        let alice = WalletKeys::from_seed(&[1; 32]);
        let (mine, _) = create(&alice.address(), 1_000, &mut p.rng).unwrap();
        let received = alice.view_key().scan(&mine).unwrap();
        let input = Input {
            secret: alice.one_time_secret(&mine).unwrap(),
            opening: received.opening(),
            ring: p.outputs.iter().map(member).collect(),
            real: 1,
        };
        assert_eq!(
            sign(vec![input], &DScalar::ZERO, [0; 32], &mut p.rng).err(),
            Some(SpendError::InvalidRing)
        );
    }

    /// Issue 17, point 1, for a funds spend: a ring of 16 outputs whose
    /// openings are all public (as shield outputs reveal theirs), signed as
    /// each member in turn. An observer who knows every member's mask and
    /// tries every small pseudo-output mask names the signer every time when
    /// the pseudo-output's mask is public (the control: masks summing to
    /// zero), and never when it is the outputs' secret mask sum.
    #[test]
    fn a_funds_spend_does_not_name_its_signer() {
        use crate::linking::{signer_by_known_masks, small_mask};
        let mut rng = ChaCha20Rng::from_seed([11; 32]);
        let owner = WalletKeys::from_seed(&[1; 32]);
        let mut masks = std::collections::BTreeMap::new();
        let mut ring = Vec::new();
        let mut secrets = Vec::new();
        for _ in 0..16 {
            let (o, received) = create(&owner.address(), 1_000, &mut rng).unwrap();
            masks.insert(o.commitment, *received.mask);
            secrets.push((owner.one_time_secret(&o).unwrap(), received));
            ring.push(member(&o));
        }
        let known = |c: &[u8; 32]| masks.get(c).copied().or_else(|| small_mask(c, 1_000, 16));
        let bob = WalletKeys::from_seed(&[2; 32]);
        let mut named = [0usize; 2];
        for (real, (secret, received)) in secrets.into_iter().enumerate() {
            for (case, public) in [(0, true), (1, false)] {
                let output_masks = if public {
                    DScalar::ZERO
                } else {
                    let (_, out) = create(&bob.address(), 1_000, &mut rng).unwrap();
                    DScalar::from_bytes_mod_order(*out.mask)
                };
                let input = Input {
                    secret: secret.clone(),
                    opening: received.opening(),
                    ring: ring.clone(),
                    real: real as u8,
                };
                let s = sign(vec![input], &output_masks, [3; 32], &mut rng).unwrap();
                let found = signer_by_known_masks(&s[0].signature, &ring, &s[0].pseudo_out, known);
                assert!(found.is_none_or(|f| f == real), "a wrong member named");
                named[case] += usize::from(found.is_some());
            }
        }
        assert_eq!(
            named,
            [16, 0],
            "named with a public / a secret pseudo-out mask"
        );
    }
}
