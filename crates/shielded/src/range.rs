//! Range proofs: one aggregate Bulletproof+ (`monero-bulletproofs`) that
//! every output commitment of a transaction hides an amount in `[0, 2^64)`,
//! so no output can carry a negative amount that would mint money.

use monero_bulletproofs::Bulletproof;
use monero_ed25519::{Commitment, CompressedPoint};
use quartier_types::rng::Rng06;
use rand_core::CryptoRng;

/// The most commitments one proof covers.
pub const MAX_OUTPUTS: usize = 16;

/// Why a range proof can not be made or does not verify. Opaque on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// No outputs, or more than [`MAX_OUTPUTS`].
    #[error("need 1 to 16 outputs")]
    Count,
    /// The proof does not verify or does not decode.
    #[error("invalid range proof")]
    Invalid,
}

/// Proves the openings' commitments are in range; the proof's bytes.
///
/// # Errors
/// [`RangeError::Count`] for 0 or more than [`MAX_OUTPUTS`] openings.
pub fn prove(openings: Vec<Commitment>, rng: &mut impl CryptoRng) -> Result<Vec<u8>, RangeError> {
    if openings.is_empty() || openings.len() > MAX_OUTPUTS {
        return Err(RangeError::Count);
    }
    let proof =
        Bulletproof::prove_plus(&mut Rng06(rng), openings).map_err(|_| RangeError::Count)?;
    Ok(proof.serialize())
}

/// Verifies `proof` for `commitments`.
///
/// # Errors
/// [`RangeError`] if it does not decode or verify.
pub fn verify(
    commitments: &[[u8; 32]],
    proof: &[u8],
    rng: &mut impl CryptoRng,
) -> Result<(), RangeError> {
    if commitments.is_empty() || commitments.len() > MAX_OUTPUTS {
        return Err(RangeError::Count);
    }
    let mut bytes = proof;
    let proof = Bulletproof::read_plus(&mut bytes).map_err(|_| RangeError::Invalid)?;
    if !bytes.is_empty() {
        return Err(RangeError::Invalid);
    }
    let commitments: Vec<CompressedPoint> = commitments
        .iter()
        .map(|c| CompressedPoint::from(*c))
        .collect();
    if proof.verify(&mut Rng06(rng), &commitments) {
        Ok(())
    } else {
        Err(RangeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::WalletKeys;
    use crate::output::create;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn outputs_prove_their_range_and_a_swapped_commitment_fails() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let to = WalletKeys::from_seed(&[1; 32]).address();
        let (a, ra) = create(&to, 600, &mut rng).unwrap();
        let (b, rb) = create(&to, u64::MAX, &mut rng).unwrap();
        let proof = prove(vec![ra.opening(), rb.opening()], &mut rng).unwrap();
        assert_eq!(
            verify(&[a.commitment, b.commitment], &proof, &mut rng),
            Ok(())
        );
        let (c, _) = create(&to, 600, &mut rng).unwrap();
        assert_eq!(
            verify(&[a.commitment, c.commitment], &proof, &mut rng),
            Err(RangeError::Invalid)
        );
        assert!(verify(&[a.commitment], &proof, &mut rng).is_err());
        let mut flipped = proof.clone();
        flipped[40] ^= 1;
        assert!(verify(&[a.commitment, b.commitment], &flipped, &mut rng).is_err());
        let mut longer = proof;
        longer.push(0);
        assert_eq!(
            verify(&[a.commitment, b.commitment], &longer, &mut rng),
            Err(RangeError::Invalid)
        );
        assert_eq!(prove(vec![], &mut rng), Err(RangeError::Count));
    }
}
