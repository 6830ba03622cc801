//! Test helpers shared by quartier's tests (a dev-dependency only): keys by
//! label, the validators' consensus keys, seeded randomness and a Byzantine
//! signer. Each crate's own fixtures (its genesis, its chain driver) build
//! on these and on [`quartier_ledger::Genesis::new`].

use commonware_codec::DecodeExt as _;
use commonware_cryptography::ed25519;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use quartier_ledger::{SignedTx, Tx};
use quartier_types::{AccountId, hash};
use sha2::{Digest as _, Sha512};

/// The key derived from a label: the same label always gives the same key.
pub fn key(label: &str) -> SigningKey {
    SigningKey::from_bytes(&hash::tagged("QUARTIER_TEST_KEY", &[label.as_bytes()]).0)
}

/// The account of a key.
pub fn id(key: &SigningKey) -> AccountId {
    AccountId(key.verifying_key().to_bytes())
}

/// `n` validators' consensus keys, from fixed seeds (the same `n` always
/// gives the same keys, and a longer list starts with a shorter one).
///
/// # Panics
/// Never: every 32-byte seed is an ed25519 secret key.
pub fn validator_keys(n: u64) -> Vec<ed25519::PrivateKey> {
    (0..n)
        .map(|i| {
            let seed = hash::tagged("QUARTIER_TEST_VALIDATOR", &[&i.to_le_bytes()]);
            ed25519::PrivateKey::decode(bytes::Bytes::copy_from_slice(&seed.0))
                .expect("a 32-byte seed is a key")
        })
        .collect()
}

/// As [`validator_keys`], from a family `seed`: another family is another
/// set of validators (a second chain, an outsider's).
///
/// # Panics
/// Never, as [`validator_keys`].
pub fn validator_keys_of(seed: u8, n: u8) -> Vec<ed25519::PrivateKey> {
    (0..n)
        .map(|i| {
            let bytes = hash::tagged("TEST_VALIDATOR", &[&[seed, i]]).0;
            ed25519::PrivateKey::decode(bytes::Bytes::copy_from_slice(&bytes))
                .expect("a 32-byte seed is a key")
        })
        .collect()
}

/// The account of a validator's consensus key.
///
/// # Panics
/// Never: an ed25519 public key is 32 bytes.
pub fn validator_account(key: &ed25519::PrivateKey) -> AccountId {
    use commonware_cryptography::Signer as _;
    AccountId(
        key.public_key()
            .as_ref()
            .try_into()
            .expect("an ed25519 public key is 32 bytes"),
    )
}

/// A deterministic random generator for a test.
pub fn seeded_rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    let mut bytes = [0; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(bytes)
}

/// `tx` signed by `key` with the commitment `R = r·B + T` (T of order two)
/// and `s = r + H(R ‖ A ‖ M)·a`: the equation holds up to `T`, which
/// `verify_strict` (cofactorless) refuses and a batch check misses whenever
/// its random coefficient for the signature is even. A Byzantine proposer's
/// signature.
///
/// # Panics
/// Never: the constant is the point of order two, `(0, −1)`.
pub fn sign_with_torsion(tx: Tx, key: &SigningKey) -> SignedTx {
    let mut order_two = [0xff; 32];
    order_two[0] = 0xec;
    order_two[31] = 0x7f;
    let order_two = CompressedEdwardsY(order_two)
        .decompress()
        .expect("(0, -1) is on the curve");
    let a = key.to_scalar();
    let public = key.verifying_key().to_bytes();
    let r = Scalar::from(0x5eed_u64) * Scalar::from(0x1234_5678_9abc_u64);
    let big_r = curve25519_dalek::constants::ED25519_BASEPOINT_POINT * r + order_two;
    let big_r = big_r.compress().to_bytes();
    let mut h = Sha512::new();
    h.update(big_r);
    h.update(public);
    h.update(tx.signing_bytes());
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * Scalar::from_bytes_mod_order(a.to_bytes());
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(&big_r);
    signature[32..].copy_from_slice(s.as_bytes());
    SignedTx { tx, signature }
}
