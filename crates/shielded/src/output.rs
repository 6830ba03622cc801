//! One-time stealth outputs (CryptoNote): the sender picks `r`, publishes
//! `R = r·G` and pays to `P = Hs(8·r·A)·G + B`; only the holder of the view
//! secret `a` finds it (`8·a·R = 8·r·A`), only the holder of `b` can spend it
//! (`x = Hs(…) + b`). The amount is committed (`C = z·G + v·H`, monero's
//! Pedersen commitment) and encrypted to the owner; a one-byte view tag lets
//! a scanner skip 255 of 256 foreign outputs after one scalar multiplication.

use crate::keys::{Address, ViewKey, WalletKeys, hash_to_scalar, is_prime_order_point, point};
use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::Scalar as DScalar;
use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::EdwardsPoint;
use monero_ed25519::{Commitment, Scalar};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// Domain tag of the one-time key's scalar.
pub const TAG_OUTPUT_KEY: &str = "QUARTIER_SHIELDED_OUTPUT_KEY";
/// Domain tag of the view tag.
pub const TAG_VIEW_TAG: &str = "QUARTIER_SHIELDED_VIEW_TAG";
/// Domain tag of the commitment mask.
pub const TAG_MASK: &str = "QUARTIER_SHIELDED_COMMITMENT_MASK";
/// Domain tag of the amount's encryption pad.
pub const TAG_AMOUNT: &str = "QUARTIER_SHIELDED_AMOUNT";

/// An output as the chain stores it: 32 + 32 + 1 + 32 + 8 bytes.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Output {
    /// The one-time public key `P`.
    #[serde(with = "quartier_types::hex")]
    pub key: [u8; 32],
    /// The transaction key `R = r·G`.
    #[serde(with = "quartier_types::hex")]
    pub tx_key: [u8; 32],
    /// The first byte of `Keccak(tag ‖ 8·r·A)`.
    pub view_tag: u8,
    /// The Pedersen commitment to the amount.
    #[serde(with = "quartier_types::hex")]
    pub commitment: [u8; 32],
    /// The amount XOR a pad only the owner can compute.
    #[serde(with = "quartier_types::hex")]
    pub encrypted_amount: [u8; 8],
}

/// Whether `output`'s keys decode and its commitment opens to `amount`
/// with `mask` (what a shielding transaction reveals).
pub fn opens_to(output: &Output, amount: u64, mask: &[u8; 32]) -> bool {
    let mask: Option<DScalar> = DScalar::from_canonical_bytes(*mask).into();
    let Some(mask) = mask else {
        return false;
    };
    point(&output.key).is_some()
        && point(&output.tx_key).is_some()
        && Commitment::new(Scalar::from(mask), amount)
            .commit()
            .compress()
            .to_bytes()
            == output.commitment
}

/// Whether an output's keys and commitment are all prime-order points
/// ([`is_prime_order_point`]); uniqueness of its key is the pool's to check.
pub fn is_well_formed(output: &Output) -> bool {
    [output.key, output.tx_key, output.commitment]
        .iter()
        .all(is_prime_order_point)
}

/// What the owner learns from an output: its amount and commitment mask.
#[derive(Clone, PartialEq, Eq)]
pub struct Received {
    /// The amount.
    pub amount: u64,
    /// The commitment's mask.
    pub mask: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("amount", &self.amount)
            .finish_non_exhaustive()
    }
}

impl Received {
    /// The commitment's opening.
    pub fn opening(&self) -> Commitment {
        Commitment::new(
            Scalar::from(DScalar::from_bytes_mod_order(*self.mask)),
            self.amount,
        )
    }
}

/// The shared secrets of one output, from `D = 8·r·A = 8·a·R`.
struct Shared {
    key_scalar: Zeroizing<DScalar>,
    view_tag: u8,
}

fn shared(derivation: &EdwardsPoint) -> Shared {
    let d = derivation.compress().0;
    let key_scalar = Zeroizing::new(hash_to_scalar(TAG_OUTPUT_KEY, &[&d]));
    let mut tagged = Vec::with_capacity(64);
    tagged.extend_from_slice(&(TAG_VIEW_TAG.len() as u64).to_le_bytes());
    tagged.extend_from_slice(TAG_VIEW_TAG.as_bytes());
    tagged.extend_from_slice(&d);
    let view_tag = monero_primitives::keccak256(&tagged)[0];
    Shared {
        key_scalar,
        view_tag,
    }
}

fn mask_and_pad(key_scalar: &DScalar) -> (DScalar, [u8; 8]) {
    let mask = hash_to_scalar(TAG_MASK, &[key_scalar.as_bytes()]);
    let pad_scalar = hash_to_scalar(TAG_AMOUNT, &[key_scalar.as_bytes()]);
    let mut pad = [0u8; 8];
    pad.copy_from_slice(&pad_scalar.as_bytes()[..8]);
    (mask, pad)
}

fn xor8(a: [u8; 8], b: [u8; 8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Why an output can not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The address's keys are not valid points.
    #[error("invalid address")]
    InvalidAddress,
}

/// Creates an output paying `amount` to `to`; returns it with its opening.
///
/// # Errors
/// [`OutputError::InvalidAddress`] if a key of `to` does not decode.
pub fn create(
    to: &Address,
    amount: u64,
    rng: &mut impl CryptoRng,
) -> Result<(Output, Received), OutputError> {
    let mut wide = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(&mut wide[..]);
    let r = Zeroizing::new(DScalar::from_bytes_mod_order_wide(&wide));
    create_with(to, amount, &r)
}

/// Domain tag of the transaction key of an output the ledger creates.
pub const TAG_LEDGER_TX_KEY: &str = "QUARTIER_SHIELDED_LEDGER_TX_KEY";

/// An output the ledger itself creates (a settlement's payment to the
/// stealth address an order named), with `r` derived from `seed` so every
/// validator makes the same one. Anyone who knows the seed and the address
/// can compute its amount: use it only for amounts that are public anyway.
///
/// # Errors
/// [`OutputError::InvalidAddress`] if a key of `to` does not decode.
pub fn create_public(
    to: &Address,
    amount: u64,
    seed: &[u8; 32],
) -> Result<(Output, Received), OutputError> {
    let r = Zeroizing::new(hash_to_scalar(TAG_LEDGER_TX_KEY, &[seed]));
    create_with(to, amount, &r)
}

fn create_with(to: &Address, amount: u64, r: &DScalar) -> Result<(Output, Received), OutputError> {
    let view = point(&to.view).ok_or(OutputError::InvalidAddress)?;
    let spend = point(&to.spend).ok_or(OutputError::InvalidAddress)?;
    let tx_key = ED25519_BASEPOINT_TABLE * r;
    let s = shared(&(view * r).mul_by_cofactor());
    let key = ED25519_BASEPOINT_TABLE * &*s.key_scalar + spend;
    let (mask, pad) = mask_and_pad(&s.key_scalar);
    let commitment = Commitment::new(Scalar::from(mask), amount).commit();
    let output = Output {
        key: key.compress().0,
        tx_key: tx_key.compress().0,
        view_tag: s.view_tag,
        commitment: commitment.compress().to_bytes(),
        encrypted_amount: xor8(amount.to_le_bytes(), pad),
    };
    let received = Received {
        amount,
        mask: Zeroizing::new(mask.to_bytes()),
    };
    Ok((output, received))
}

impl ViewKey {
    /// Whether `output` is this wallet's, and if so what it received. The
    /// view tag is checked first: a foreign output costs one scalar
    /// multiplication and, 255 times in 256, nothing more.
    pub fn scan(&self, output: &Output) -> Option<Received> {
        let tx_key = point(&output.tx_key)?;
        let s = shared(&(tx_key * *self.view).mul_by_cofactor());
        if s.view_tag != output.view_tag {
            return None;
        }
        let expected = ED25519_BASEPOINT_TABLE * &*s.key_scalar + self.spend_public;
        if expected.compress().0 != output.key {
            return None;
        }
        let (mask, pad) = mask_and_pad(&s.key_scalar);
        let amount = u64::from_le_bytes(xor8(output.encrypted_amount, pad));
        // The commitment must open to what was encrypted, or the output is unusable.
        let commitment = Commitment::new(Scalar::from(mask), amount).commit();
        if commitment.compress().to_bytes() != output.commitment {
            return None;
        }
        Some(Received {
            amount,
            mask: Zeroizing::new(mask.to_bytes()),
        })
    }
}

impl WalletKeys {
    /// The one-time secret `x` with `x·G = P` of an output of this wallet.
    pub fn one_time_secret(&self, output: &Output) -> Option<Zeroizing<DScalar>> {
        self.view_key().scan(output)?;
        let tx_key = point(&output.tx_key)?;
        let view = self.view_key();
        let s = shared(&(tx_key * *view.view).mul_by_cofactor());
        Some(Zeroizing::new(*s.key_scalar + self.spend_secret()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn a_wallet_finds_exactly_its_outputs_and_their_amounts() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let alice = WalletKeys::from_seed(&[1; 32]);
        let bob = WalletKeys::from_seed(&[2; 32]);
        let mut outputs = Vec::new();
        for i in 0..200u64 {
            let to = if i % 7 == 0 { &alice } else { &bob };
            outputs.push(create(&to.address(), 1_000 + i, &mut rng).unwrap().0);
        }
        // A wallet restored from its seed finds the same outputs.
        let restored = WalletKeys::from_seed(&[1; 32]).view_key();
        let found: Vec<u64> = outputs
            .iter()
            .filter_map(|o| restored.scan(o))
            .map(|r| r.amount)
            .collect();
        let expected: Vec<u64> = (0..200u64)
            .filter(|i| i % 7 == 0)
            .map(|i| 1_000 + i)
            .collect();
        assert_eq!(found, expected);
        // One-time keys never repeat the address and open only for their owner.
        for o in &outputs {
            assert_ne!(o.key, alice.address().spend);
            let mine = alice.view_key().scan(o).is_some();
            assert_eq!(alice.one_time_secret(o).is_some(), mine);
            if let Some(x) = alice.one_time_secret(o) {
                assert_eq!((ED25519_BASEPOINT_TABLE * &*x).compress().0, o.key);
            }
        }
    }

    #[test]
    fn a_tampered_output_is_not_accepted_by_its_owner() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let alice = WalletKeys::from_seed(&[1; 32]);
        let (o, r) = create(&alice.address(), 5_000, &mut rng).unwrap();
        assert_eq!(alice.view_key().scan(&o).unwrap().amount, r.amount);
        let mut amount = o;
        amount.encrypted_amount[0] ^= 1;
        assert!(
            alice.view_key().scan(&amount).is_none(),
            "commitment no longer opens"
        );
        let mut key = o;
        key.key[3] ^= 1;
        assert!(alice.view_key().scan(&key).is_none());
    }
}
