//! Sealed orders (DESIGN §7): an order signed by the household's wallet key,
//! padded to one fixed size and sealed with HPKE (RFC 9180: X25519-HKDF-SHA256,
//! HKDF-SHA256, ChaCha20Poly1305, base mode) to the committee's epoch key.
//!
//! The chain sees only `(region, slot, epoch)`, an encapsulated key and a
//! ciphertext whose length never depends on the order. Those three public
//! fields are the AEAD's associated data, so a ciphertext moved to another
//! slot, region or epoch does not open; inside, the signed payload repeats
//! them and must agree.

use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signer as _, SigningKey};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use quartier_types::{AccountId, Energy, Price, RegionId, Side, Slot, hash};
use rand_core::CryptoRng;

/// Domain tag of the wallet's signature over an order.
pub const TAG_ORDER: &str = "QUARTIER_ENCLAVE_ORDER";
/// HPKE `info` of sealed orders.
pub const HPKE_INFO: &[u8] = b"QUARTIER_ENCLAVE_SEALED_ORDER";
/// Plaintext size after padding: every sealed order has the same length.
pub const PADDED_LEN: usize = 256;
/// Ciphertext size: the padded plaintext and the 16-byte tag.
pub const CIPHERTEXT_LEN: usize = PADDED_LEN + 16;

/// A key epoch of the enclave committee.
#[derive(
    Clone,
    Copy,
    Default,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

/// What the household's wallet signs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct OrderPayload {
    /// The chain it is for (its genesis hash): another chain's enclaves
    /// refuse it.
    pub chain: [u8; 32],
    /// The wallet (and prepaid account) placing the order.
    pub wallet: AccountId,
    /// The region.
    pub region: RegionId,
    /// The slot.
    pub slot: Slot,
    /// The epoch whose key it is sealed to.
    pub epoch: Epoch,
    /// Buy or sell.
    pub side: Side,
    /// Limit price.
    pub limit: Price,
    /// Energy.
    pub energy: Energy,
    /// The X25519 key the household's receipt is sealed to (fresh per order,
    /// so receipts do not link a household's orders).
    pub receipt_key: [u8; 32],
}

/// An order with the wallet's Ed25519 signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedOrder {
    /// The order.
    pub payload: OrderPayload,
    /// The wallet's signature over `TAG_ORDER ‖ borsh(payload)`.
    pub signature: [u8; 64],
}

fn signing_digest(payload: &OrderPayload) -> hash::Digest {
    hash::tagged(TAG_ORDER, &[&borsh::to_vec(payload).unwrap_or_default()])
}

impl SignedOrder {
    /// Signs `payload` with the wallet key `key` (whose account must be `payload.wallet`).
    pub fn sign(payload: OrderPayload, key: &SigningKey) -> SignedOrder {
        SignedOrder {
            payload,
            signature: key.sign(&signing_digest(&payload).0).to_bytes(),
        }
    }

    /// Whether the signature is the wallet's.
    pub fn verify(&self) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.payload.wallet.0) else {
            return false;
        };
        let signature = ed25519_dalek::Signature::from_bytes(&self.signature);
        key.verify_strict(&signing_digest(&self.payload).0, &signature)
            .is_ok()
    }
}

/// A sealed order as it goes on chain.
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
pub struct SealedOrder {
    /// The region (public).
    pub region: RegionId,
    /// The slot (public).
    pub slot: Slot,
    /// The epoch key it is sealed to (public).
    pub epoch: Epoch,
    /// HPKE's encapsulated key.
    #[serde(with = "quartier_types::hex")]
    pub encapped_key: [u8; 32],
    /// The sealed, padded order: always [`CIPHERTEXT_LEN`] bytes.
    #[serde(with = "quartier_types::hex")]
    pub ciphertext: Vec<u8>,
}

/// Why an enclave drops a sealed order; the household's receipt names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, BorshSerialize, BorshDeserialize)]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum DropReason {
    /// Sealed to an epoch that is not the current one (its key is erased).
    #[error("sealed to another epoch's key")]
    WrongEpoch = 0,
    /// Does not open: another key, or moved to another region or slot.
    #[error("does not open with the epoch key for this region and slot")]
    Undecryptable = 1,
    /// Opens, but the padded order inside is malformed.
    #[error("malformed order inside")]
    Malformed = 2,
    /// The wallet's signature does not verify.
    #[error("bad wallet signature")]
    BadSignature = 3,
    /// The signed region, slot or epoch differ from the public ones.
    #[error("signed region, slot or epoch differ from the sealed ones")]
    Mismatch = 4,
}

/// Why sealing failed (a bad epoch public key).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The epoch public key is not an X25519 point encoding.
    #[error("invalid epoch public key")]
    InvalidKey,
}

/// An epoch key pair; only enclaves hold the secret, which is erased
/// (zeroized) when dropped.
pub struct EpochKeyPair {
    epoch: Epoch,
    secret: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl EpochKeyPair {
    /// A fresh key pair for `epoch` from `rng`.
    pub fn generate(epoch: Epoch, rng: &mut impl CryptoRng) -> EpochKeyPair {
        let (secret, public) = X25519HkdfSha256::gen_keypair_with_rng(rng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        EpochKeyPair {
            epoch,
            secret,
            public: bytes,
        }
    }

    /// The key pair of `epoch` with the secret `bytes` (a received share),
    /// or `None` if they are not a valid secret key.
    pub fn from_secret(epoch: Epoch, bytes: &[u8]) -> Option<EpochKeyPair> {
        let secret = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(bytes).ok()?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&X25519HkdfSha256::sk_to_pk(&secret).to_bytes());
        Some(EpochKeyPair {
            epoch,
            secret,
            public,
        })
    }

    /// A second handle on the same key (for another region's auctioneer).
    pub fn duplicate(&self) -> EpochKeyPair {
        EpochKeyPair {
            epoch: self.epoch,
            secret: self.secret.clone(),
            public: self.public,
        }
    }

    /// The secret key's bytes, to share with other members (zeroize after use).
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.secret.to_bytes().to_vec()
    }

    /// A seed only holders of this key can compute, for `region` and `slot`:
    /// it drives the sealing of that slot's receipts, so every enclave of
    /// the committee publishes byte-identical receipts (and the same root).
    pub fn receipt_seed(&self, region: RegionId, slot: Slot) -> [u8; 32] {
        let mut secret = self.secret_bytes();
        let seed = hash::tagged(
            "QUARTIER_ENCLAVE_RECEIPT_SEED",
            &[&secret, &region.0.to_le_bytes(), &slot.0.to_le_bytes()],
        );
        zeroize::Zeroize::zeroize(&mut secret);
        seed.0
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The public key households seal to.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Opens `sealed` and checks the order inside.
    ///
    /// # Errors
    /// The [`DropReason`] of an order that must be dropped.
    pub fn open(&self, sealed: &SealedOrder) -> Result<SignedOrder, DropReason> {
        if sealed.epoch != self.epoch {
            return Err(DropReason::WrongEpoch);
        }
        let padded = hpke_open(
            &self.secret,
            &sealed.encapped_key,
            HPKE_INFO,
            &sealed.ciphertext,
            &aad(sealed.region, sealed.slot, sealed.epoch),
        )
        .ok_or(DropReason::Undecryptable)?;
        let order = unpad(&padded).ok_or(DropReason::Malformed)?;
        if !order.verify() {
            return Err(DropReason::BadSignature);
        }
        let p = &order.payload;
        if (p.region, p.slot, p.epoch) != (sealed.region, sealed.slot, sealed.epoch) {
            return Err(DropReason::Mismatch);
        }
        Ok(order)
    }
}

/// HPKE base-mode seal of `plaintext` to the X25519 public key `to`:
/// `(encapsulated key, ciphertext)`, or `None` for an invalid key.
pub fn hpke_seal(
    to: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Option<([u8; 32], Vec<u8>)> {
    seal_in(&OpModeS::Base, to, info, plaintext, aad, rng)
}

/// HPKE seal in `mode` (base or auth) to `to`.
fn seal_in(
    mode: &OpModeS<'_, X25519HkdfSha256>,
    to: &[u8; 32],
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Option<([u8; 32], Vec<u8>)> {
    let public = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(to).ok()?;
    let (encapped, ciphertext) =
        hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            mode, &public, info, plaintext, aad, rng,
        )
        .ok()?;
    let mut key = [0u8; 32];
    key.copy_from_slice(&encapped.to_bytes());
    Some((key, ciphertext))
}

/// HPKE base-mode open with the secret key `secret`, or `None`.
pub fn hpke_open(
    secret: &<X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    encapped_key: &[u8; 32],
    info: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    open_in(&OpModeR::Base, secret, encapped_key, info, ciphertext, aad)
}

/// HPKE open in `mode` (base or auth) with `secret`.
fn open_in(
    mode: &OpModeR<'_, X25519HkdfSha256>,
    secret: &<X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    encapped_key: &[u8; 32],
    info: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    let encapped = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(encapped_key).ok()?;
    hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        mode, secret, &encapped, info, ciphertext, aad,
    )
    .ok()
}

/// HPKE auth-mode seal from `sender` to `to`: the recipient learns that the
/// holder of `sender`'s secret sealed it (RFC 9180 §5.1.3), or `None`.
pub fn hpke_seal_auth(
    to: &[u8; 32],
    sender: &HpkeKeyPair,
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    rng: &mut impl CryptoRng,
) -> Option<([u8; 32], Vec<u8>)> {
    let own = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&sender.public).ok()?;
    let mode = OpModeS::Auth((sender.secret.clone(), own));
    seal_in(&mode, to, info, plaintext, aad, rng)
}

/// HPKE auth-mode open with `secret` of what `sender` sealed, or `None`
/// (also when anyone else sealed it).
pub fn hpke_open_auth(
    secret: &<X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    sender: &[u8; 32],
    encapped_key: &[u8; 32],
    info: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    let sender = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(sender).ok()?;
    open_in(
        &OpModeR::Auth(sender),
        secret,
        encapped_key,
        info,
        ciphertext,
        aad,
    )
}

/// An X25519 HPKE key pair: a household's receipt key or an enclave's
/// identity. The secret is zeroized when dropped.
pub struct HpkeKeyPair {
    /// The private key (inside the enclave or the wallet that made it).
    pub secret: <X25519HkdfSha256 as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl HpkeKeyPair {
    /// A fresh key pair from `rng`.
    pub fn generate(rng: &mut impl CryptoRng) -> HpkeKeyPair {
        let (secret, public) = X25519HkdfSha256::gen_keypair_with_rng(rng);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&public.to_bytes());
        HpkeKeyPair {
            secret,
            public: bytes,
        }
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The one-time receipt key a wallet puts in its order for `slot` of
    /// `region`: derived from the wallet's secret, so the household can
    /// re-derive it to open its receipts later without storing anything,
    /// and nobody without the secret can link two of them.
    pub fn receipt_key(wallet: &SigningKey, region: RegionId, slot: Slot) -> HpkeKeyPair {
        let seed = hash::tagged(
            "QUARTIER_ENCLAVE_RECEIPT_KEY",
            &[
                wallet.as_bytes(),
                &region.0.to_le_bytes(),
                &slot.0.to_le_bytes(),
            ],
        );
        // Any 32 bytes are an X25519 secret (clamped on use), so this is Some.
        match HpkeKeyPair::from_secret(&seed.0) {
            Some(k) => k,
            None => unreachable!("32 bytes are always an X25519 secret key"),
        }
    }

    /// The key pair whose secret is `bytes`, or `None` if they are not one.
    pub fn from_secret(bytes: &[u8]) -> Option<HpkeKeyPair> {
        let secret = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(bytes).ok()?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&X25519HkdfSha256::sk_to_pk(&secret).to_bytes());
        Some(HpkeKeyPair { secret, public })
    }

    /// The secret key's bytes (zeroize after use).
    pub fn secret_bytes(&self) -> Vec<u8> {
        self.secret.to_bytes().to_vec()
    }
}

fn aad(region: RegionId, slot: Slot, epoch: Epoch) -> Vec<u8> {
    let mut aad = Vec::with_capacity(20);
    aad.extend_from_slice(&region.0.to_le_bytes());
    aad.extend_from_slice(&slot.0.to_le_bytes());
    aad.extend_from_slice(&epoch.0.to_le_bytes());
    aad
}

/// `len (u16 LE) ‖ borsh(order) ‖ zeros` to [`PADDED_LEN`] bytes.
fn pad(order: &SignedOrder) -> Vec<u8> {
    let body = borsh::to_vec(order).unwrap_or_default();
    pad_to(&body, PADDED_LEN).unwrap_or_default()
}

fn unpad(padded: &[u8]) -> Option<SignedOrder> {
    borsh::from_slice(unpad_from(padded, PADDED_LEN)?).ok()
}

/// `len (u16 LE) ‖ body ‖ zeros` to `len` bytes, so that a ciphertext's
/// size says nothing of its content; `None` if `body` does not fit.
pub fn pad_to(body: &[u8], len: usize) -> Option<Vec<u8>> {
    let prefix = u16::try_from(body.len()).ok()?.to_le_bytes();
    if body.len() + 2 > len {
        return None;
    }
    let mut padded = Vec::with_capacity(len);
    padded.extend_from_slice(&prefix);
    padded.extend_from_slice(body);
    padded.resize(len, 0);
    Some(padded)
}

/// The body of a [`pad_to`] block of exactly `len` bytes with zero padding.
pub fn unpad_from(padded: &[u8], len: usize) -> Option<&[u8]> {
    if padded.len() != len {
        return None;
    }
    let body_len = usize::from(u16::from_le_bytes([*padded.first()?, *padded.get(1)?]));
    let body = padded.get(2..2 + body_len)?;
    if padded[2 + body_len..].iter().any(|&b| b != 0) {
        return None;
    }
    Some(body)
}

/// Seals `order` to the epoch public key `epoch_key` under the public
/// `(region, slot, epoch)` taken from the order itself.
///
/// # Errors
/// [`SealError::InvalidKey`] if `epoch_key` is not a valid public key.
pub fn seal(
    epoch_key: &[u8; 32],
    order: &SignedOrder,
    rng: &mut impl CryptoRng,
) -> Result<SealedOrder, SealError> {
    let p = &order.payload;
    let (encapped_key, ciphertext) = hpke_seal(
        epoch_key,
        HPKE_INFO,
        &pad(order),
        &aad(p.region, p.slot, p.epoch),
        rng,
    )
    .ok_or(SealError::InvalidKey)?;
    Ok(SealedOrder {
        region: p.region,
        slot: p.slot,
        epoch: p.epoch,
        encapped_key,
        ciphertext,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn wallet() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    fn order(epoch: Epoch) -> SignedOrder {
        let key = wallet();
        SignedOrder::sign(
            OrderPayload {
                chain: [0xc4; 32],
                wallet: AccountId(key.verifying_key().to_bytes()),
                region: RegionId(1),
                slot: Slot(42),
                epoch,
                side: Side::Buy,
                limit: Price::new(18_000),
                energy: Energy::new(750),
                receipt_key: [7; 32],
            },
            &key,
        )
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::from_seed([5; 32])
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 9180 appendix A.2.1 (base mode, DHKEM(X25519, HKDF-SHA256),
    /// HKDF-SHA256, ChaCha20Poly1305), first encryption: our suite is that one.
    #[test]
    fn the_rfc_9180_a_2_1_vector_opens() {
        let sk_r = unhex("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb");
        let keys = EpochKeyPair::from_secret(Epoch(0), &sk_r).unwrap();
        assert_eq!(
            keys.public_key().to_vec(),
            unhex("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a")
        );
        let enc: [u8; 32] =
            unhex("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a")
                .try_into()
                .unwrap();
        let info = unhex("4f6465206f6e2061204772656369616e2055726e");
        let aad = unhex("436f756e742d30");
        let ct = unhex(
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
        );
        let pt = hpke_open(&keys.secret, &enc, &info, &ct, &aad).unwrap();
        assert_eq!(pt, b"Beauty is truth, truth beauty");
        // One flipped bit of the tag and it does not open.
        let mut bad = ct.clone();
        bad[ct.len() - 1] ^= 1;
        assert_eq!(hpke_open(&keys.secret, &enc, &info, &bad, &aad), None);
    }

    #[test]
    fn a_sealed_order_opens_with_the_epoch_key() {
        let mut rng = rng();
        let keys = EpochKeyPair::generate(Epoch(3), &mut rng);
        let o = order(Epoch(3));
        let sealed = seal(&keys.public_key(), &o, &mut rng).unwrap();
        assert_eq!(sealed.ciphertext.len(), CIPHERTEXT_LEN);
        assert_eq!(keys.open(&sealed), Ok(o));
    }

    #[test]
    fn orders_for_the_wrong_epoch_key_slot_or_region_are_dropped() {
        let mut rng = rng();
        let old = EpochKeyPair::generate(Epoch(2), &mut rng);
        let current = EpochKeyPair::generate(Epoch(3), &mut rng);
        // Sealed to the old epoch's key.
        let stale = seal(&old.public_key(), &order(Epoch(2)), &mut rng).unwrap();
        assert_eq!(current.open(&stale), Err(DropReason::WrongEpoch));
        // Claims the current epoch but was sealed to another key.
        let wrong_key = seal(&old.public_key(), &order(Epoch(3)), &mut rng).unwrap();
        assert_eq!(current.open(&wrong_key), Err(DropReason::Undecryptable));
        // Moved to another slot or region on chain.
        let good = seal(&current.public_key(), &order(Epoch(3)), &mut rng).unwrap();
        let moved = SealedOrder {
            slot: Slot(43),
            ..good.clone()
        };
        assert_eq!(current.open(&moved), Err(DropReason::Undecryptable));
        let moved = SealedOrder {
            region: RegionId(2),
            ..good.clone()
        };
        assert_eq!(current.open(&moved), Err(DropReason::Undecryptable));
        let mut flipped = good;
        flipped.ciphertext[7] ^= 1;
        assert_eq!(current.open(&flipped), Err(DropReason::Undecryptable));
    }

    #[test]
    fn a_forged_wallet_signature_or_a_mismatch_is_dropped() {
        let mut rng = rng();
        let keys = EpochKeyPair::generate(Epoch(3), &mut rng);
        // Someone else signs an order in the wallet's name.
        let mut forged = order(Epoch(3));
        forged.signature =
            SignedOrder::sign(forged.payload, &SigningKey::from_bytes(&[4; 32])).signature;
        let sealed = seal(&keys.public_key(), &forged, &mut rng).unwrap();
        assert_eq!(keys.open(&sealed), Err(DropReason::BadSignature));
        // A validly signed order for slot 42, sealed (correctly, as far as
        // the AEAD goes) under public fields naming slot 99.
        let o = order(Epoch(3));
        let sealed = seal_under(&keys, &o, RegionId(1), Slot(99), Epoch(3), &mut rng);
        assert_eq!(keys.open(&sealed), Err(DropReason::Mismatch));
    }

    /// Seals `order` under public fields of the caller's choice.
    fn seal_under(
        keys: &EpochKeyPair,
        order: &SignedOrder,
        region: RegionId,
        slot: Slot,
        epoch: Epoch,
        rng: &mut ChaCha20Rng,
    ) -> SealedOrder {
        let (encapped_key, ciphertext) = hpke_seal(
            &keys.public_key(),
            HPKE_INFO,
            &pad(order),
            &aad(region, slot, epoch),
            rng,
        )
        .unwrap();
        SealedOrder {
            region,
            slot,
            epoch,
            encapped_key,
            ciphertext,
        }
    }

    proptest::proptest! {
        /// Every sealed order has the same size, whatever it says.
        #[test]
        fn sealed_orders_all_have_one_size(limit in 0u64..u64::MAX, energy in 0u64..u64::MAX, sell: bool, seed: [u8; 32]) {
            let mut rng = ChaCha20Rng::from_seed(seed);
            let keys = EpochKeyPair::generate(Epoch(1), &mut rng);
            let mut o = order(Epoch(1));
            o.payload.limit = Price::new(limit);
            o.payload.energy = Energy::new(energy);
            o.payload.side = if sell { Side::Sell } else { Side::Buy };
            let o = SignedOrder::sign(o.payload, &wallet());
            let sealed = seal(&keys.public_key(), &o, &mut rng).unwrap();
            proptest::prop_assert_eq!(sealed.ciphertext.len(), CIPHERTEXT_LEN);
            proptest::prop_assert_eq!(keys.open(&sealed), Ok(o));
        }
    }
}
