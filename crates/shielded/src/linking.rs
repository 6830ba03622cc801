//! Known attacks on the published bytes of a ring signature, for tests and
//! for the auditor's cryptographic adversary: what an observer computes from
//! a CLSAG, its ring and its pseudo-output alone.
//!
//! CLSAG publishes `D/8` with `D = z·Hp(P_π)`, where `z` is the difference
//! between the real member's commitment mask and the pseudo-output's. While
//! `z` is secret, `D` hides the signer (deciding whether `D = z·Hp(P_j)` for
//! an unknown `z` is a DDH instance). Whenever an observer can name `z` —
//! both masks public, as with a fixed pseudo-output over commitments of a
//! known opening — it computes `z·Hp(P_j)/8` for every member and finds the
//! one that matches: [`signer_by_known_masks`].

use crate::keys::point;
use crate::spend::RingMember;
use curve25519_dalek::Scalar as DScalar;
use curve25519_dalek::edwards::EdwardsPoint;
use monero_ed25519::{Commitment, Point, Scalar};

/// The `D/8` component of a CLSAG in monero's encoding (its last 32 bytes).
pub fn clsag_d(signature: &[u8]) -> Option<[u8; 32]> {
    let start = signature.len().checked_sub(32)?;
    signature.get(start..)?.try_into().ok()
}

/// The mask of `commitment` if it commits to `amount` with a small mask
/// (`0..=max_mask`): what an observer tries for commitments built from
/// constants.
pub fn small_mask(commitment: &[u8; 32], amount: u64, max_mask: u8) -> Option<[u8; 32]> {
    (0..=max_mask).map(DScalar::from).find_map(|m| {
        let c = Commitment::new(Scalar::from(m), amount).commit().compress();
        (c.to_bytes() == *commitment).then_some(m.to_bytes())
    })
}

/// The position of the signer of `signature` in `ring` if the mask
/// difference is public: `known_mask` returns the mask of a commitment the
/// observer can open (a shield output's revealed mask, a constant), and the
/// pseudo-output's mask must be known as well. `None` when no member's
/// `z·Hp(P_j)/8` equals the signature's `D/8` for any mask difference the
/// observer can name: the attack found nothing.
pub fn signer_by_known_masks(
    signature: &[u8],
    ring: &[RingMember],
    pseudo_out: &[u8; 32],
    known_mask: impl Fn(&[u8; 32]) -> Option<[u8; 32]>,
) -> Option<usize> {
    let published = clsag_d(signature)?;
    let pseudo_mask = scalar(&known_mask(pseudo_out)?)?;
    let inv_eight = DScalar::from(8u8).invert();
    ring.iter().position(|member| {
        let (Some(mask), Some(key)) = (
            known_mask(&member.commitment).and_then(|m| scalar(&m)),
            point(&member.key),
        ) else {
            return false;
        };
        let generator: EdwardsPoint = Point::biased_hash(key.compress().0).into();
        (generator * ((mask - pseudo_mask) * inv_eight))
            .compress()
            .0
            == published
    })
}

/// The amount-filtering attack on a transaction's funds rings: which
/// members an observer who knows every public amount can not rule out.
///
/// `rings[j][m]` is the public amount of member `m` of input `j` (`None`
/// when hidden: it may hold anything up to the supply), and the inputs
/// together held at least `spent` (what the transaction pays out in public).
/// Member `m` of ring `j` is ruled out when even the largest member of every
/// other ring could not make up the rest:
/// `amount(m) + Σ_{k≠j} max(ring k) < spent`. The effective ring size is the
/// number of `true`s per ring.
pub fn amount_consistent(rings: &[Vec<Option<u64>>], spent: u64) -> Vec<Vec<bool>> {
    // The most each ring can hold; a hidden member makes it unbounded.
    let most: Vec<Option<u128>> = rings
        .iter()
        .map(|ring| {
            ring.iter()
                .try_fold(0u128, |max, a| a.map(|a| max.max(u128::from(a))))
        })
        .collect();
    rings
        .iter()
        .enumerate()
        .map(|(j, ring)| {
            let others: Option<u128> = most
                .iter()
                .enumerate()
                .filter(|(k, _)| *k != j)
                .try_fold(0u128, |sum, (_, m)| m.map(|m| sum + m));
            ring.iter()
                .map(|a| match (a, others) {
                    (Some(a), Some(others)) => u128::from(*a) + others >= u128::from(spent),
                    _ => true,
                })
                .collect()
        })
        .collect()
}

fn scalar(bytes: &[u8; 32]) -> Option<DScalar> {
    DScalar::from_canonical_bytes(*bytes).into()
}

#[cfg(test)]
mod tests {
    use super::amount_consistent;

    #[test]
    fn one_input_rules_out_members_below_what_it_paid() {
        let rings = vec![vec![Some(5), None, Some(10), Some(9)]];
        assert_eq!(
            amount_consistent(&rings, 10),
            vec![vec![false, true, true, false]]
        );
    }

    #[test]
    fn other_rings_make_up_the_rest_unless_all_their_amounts_are_public() {
        // The second ring holds at most 4 in public: the first needs ≥ 6;
        // the first at most 6: the second needs ≥ 4.
        let rings = vec![vec![Some(5), Some(6)], vec![Some(4), Some(1)]];
        assert_eq!(
            amount_consistent(&rings, 10),
            vec![vec![false, true], vec![true, false]]
        );
        // A hidden member in the second ring: nothing in the first is ruled out.
        // The second ring still needs ≥ 4 of itself.
        let rings = vec![vec![Some(5), Some(6)], vec![Some(3), None]];
        assert_eq!(
            amount_consistent(&rings, 10),
            vec![vec![true, true], vec![false, true]]
        );
    }
}
