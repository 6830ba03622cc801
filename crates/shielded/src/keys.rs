//! CryptoNote wallet keys: a spend key that authorises spending and a view
//! key that finds a wallet's outputs (and their amounts) but can not spend.

use borsh::{BorshDeserialize, BorshSerialize};
use curve25519_dalek::Scalar as DScalar;
use curve25519_dalek::constants::ED25519_BASEPOINT_TABLE;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::traits::IsIdentity;
use monero_ed25519::Scalar;
use zeroize::Zeroizing;

/// Domain tag of the spend key's derivation from a seed.
pub const TAG_SPEND_KEY: &str = "QUARTIER_SHIELDED_SPEND_KEY";
/// Domain tag of the view key's derivation from the spend key.
pub const TAG_VIEW_KEY: &str = "QUARTIER_SHIELDED_VIEW_KEY";

/// `Hs(tag ‖ parts…)`: Keccak-256 reduced mod l (monero-ed25519's hash to
/// scalar), with our tag length-prefixed in front.
pub(crate) fn hash_to_scalar(tag: &str, parts: &[&[u8]]) -> DScalar {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&(tag.len() as u64).to_le_bytes());
    data.extend_from_slice(tag.as_bytes());
    for p in parts {
        data.extend_from_slice(p);
    }
    Scalar::hash(data).into()
}

/// Decodes a point; `None` for a non-canonical or off-curve encoding.
pub(crate) fn point(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let p = CompressedEdwardsY(*bytes).decompress()?;
    // Canonical encodings only: re-encoding must give the same bytes.
    (p.compress().0 == *bytes).then_some(p)
}

/// Whether `bytes` is the canonical encoding of a point of the prime-order
/// subgroup other than the identity: what a one-time key, a transaction
/// key and a commitment must be. A torsioned key has several key images (a
/// double spend), an identity or undecodable one breaks every ring that
/// picks it as a decoy.
pub fn is_prime_order_point(bytes: &[u8; 32]) -> bool {
    point(bytes).is_some_and(|p| p.is_torsion_free() && !p.is_identity())
}

/// A wallet's public address: where others send it outputs.
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
pub struct Address {
    /// The view public key `A = a·G`.
    #[serde(with = "quartier_types::hex")]
    pub view: [u8; 32],
    /// The spend public key `B = b·G`.
    #[serde(with = "quartier_types::hex")]
    pub spend: [u8; 32],
}

impl Address {
    /// Whether both keys are prime-order points ([`is_prime_order_point`]):
    /// outputs made to it are well-formed.
    pub fn is_valid(&self) -> bool {
        is_prime_order_point(&self.view) && is_prime_order_point(&self.spend)
    }
}

/// A wallet's secret keys. Secret: no `Debug`, zeroized on drop.
pub struct WalletKeys {
    view: Zeroizing<DScalar>,
    spend: Zeroizing<DScalar>,
}

/// What a light client needs to find its outputs: the view secret and the
/// spend public key. It can read amounts but not spend.
pub struct ViewKey {
    pub(crate) view: Zeroizing<DScalar>,
    pub(crate) spend_public: EdwardsPoint,
}

impl WalletKeys {
    /// The wallet of a 32-byte secret seed: `b = Hs(seed)`, `a = Hs(b)`
    /// (as in CryptoNote, the view key follows from the spend key).
    pub fn from_seed(seed: &[u8; 32]) -> WalletKeys {
        let spend = Zeroizing::new(hash_to_scalar(TAG_SPEND_KEY, &[seed]));
        let view = Zeroizing::new(hash_to_scalar(TAG_VIEW_KEY, &[spend.as_bytes()]));
        WalletKeys { view, spend }
    }

    /// The public address.
    pub fn address(&self) -> Address {
        Address {
            view: (ED25519_BASEPOINT_TABLE * &*self.view).compress().0,
            spend: (ED25519_BASEPOINT_TABLE * &*self.spend).compress().0,
        }
    }

    /// The view key, for a light client or an auditor the household trusts.
    pub fn view_key(&self) -> ViewKey {
        ViewKey {
            view: self.view.clone(),
            spend_public: ED25519_BASEPOINT_TABLE * &*self.spend,
        }
    }

    pub(crate) fn spend_secret(&self) -> &DScalar {
        &self.spend
    }
}
