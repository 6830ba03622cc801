//! Attestation of auctioneer enclaves (DESIGN §7).
//!
//! A quote says "code with this measurement runs in an enclave and vouches for
//! this report data" (the enclave's identity key). The ledger admits an
//! enclave only if a verifier accepts its quote and governance allowed its
//! measurement. Verifiers are pluggable through [`AttestationVerifier`].
//!
//! There is no TEE hardware here, so the only backend is **simulated**:
//! [`SimulatedAttestationService`] plays the hardware vendor and signs quotes
//! with an Ed25519 key; [`SimulatedAttestationVerifier`] checks them against
//! that key. A simulated quote proves only that whoever holds the simulated
//! service's key said so — nothing about real hardware. A real SGX/TDX
//! verifier (e.g. DCAP) implements the same trait.

use borsh::{BorshDeserialize, BorshSerialize};
use quartier_types::{AccountId, hash};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Domain tag of what a simulated attestation service signs.
pub const TAG_SIMULATED_QUOTE: &str = "QUARTIER_ENCLAVE_SIMULATED_QUOTE";

/// SHA-256 of the enclave binary built reproducibly.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
pub struct Measurement(#[serde(with = "quartier_types::hex")] pub [u8; 32]);

impl Measurement {
    /// The measurement of an enclave binary: the plain SHA-256 of its bytes
    /// (what `sha256sum` prints, so anyone can check it).
    pub fn of_binary(bytes: &[u8]) -> Measurement {
        use sha2::Digest as _;
        Measurement(sha2::Sha256::digest(bytes).into())
    }
}

impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&quartier_types::hex::encode(&self.0))
    }
}

/// Which attestation backend produced a quote.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
pub enum Backend {
    /// The simulated backend: no hardware, a software signing key.
    Simulated = 0,
}

/// A quote: measurement and report data, signed by the attestation backend.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Quote {
    /// The backend that signed it.
    pub backend: Backend,
    /// The enclave code's measurement.
    pub measurement: Measurement,
    /// What the enclave vouches for: its identity key and commitments.
    #[serde(with = "quartier_types::hex")]
    pub report_data: [u8; 64],
    /// The backend's signature.
    #[serde(with = "quartier_types::hex")]
    pub signature: [u8; 64],
}

/// What a chain trusts to sign quotes: the root of its attestation policy,
/// fixed at genesis. Verification goes through the backend's
/// [`AttestationVerifier`]; nothing outside this crate needs to know which.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AttestationRoot {
    /// The simulated backend's service key (no hardware: see the module docs).
    Simulated {
        /// The simulated service's Ed25519 verifying key.
        #[serde(with = "quartier_types::hex")]
        key: [u8; 32],
    },
}

impl AttestationRoot {
    /// Verifies `quote` with this root's backend against `allowed`.
    ///
    /// # Errors
    /// [`AttestationError`] if the quote is refused, or the root's key is
    /// not a valid key ([`AttestationError::InvalidQuote`]).
    pub fn verify(
        &self,
        quote: &Quote,
        allowed: &BTreeSet<Measurement>,
    ) -> Result<Attested, AttestationError> {
        match self {
            AttestationRoot::Simulated { key } => {
                let key = ed25519_dalek::VerifyingKey::from_bytes(key)
                    .map_err(|_| AttestationError::InvalidQuote)?;
                SimulatedAttestationVerifier { key }.verify(quote, allowed)
            }
        }
    }
}

/// The attestation roots a chain (or an enclave) trusts, one per TEE
/// vendor: a quote's vendor is the index of the root it verifies under.
///
/// # Errors
/// The last root's [`AttestationError`] if none accepts `quote`
/// ([`AttestationError::InvalidQuote`] without roots).
pub fn verify_vendor(
    roots: &[AttestationRoot],
    quote: &Quote,
    allowed: &BTreeSet<Measurement>,
) -> Result<(u16, Attested), AttestationError> {
    let mut last = AttestationError::InvalidQuote;
    for (vendor, root) in (0u16..).zip(roots) {
        match root.verify(quote, allowed) {
            Ok(attested) => return Ok((vendor, attested)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Which vendor mixes a committee may have: agreement among TEEs of
/// different vendors, so that one vendor's broken hardware (or its
/// quoting key) does not hand over the committee.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct VendorPolicy {
    /// The fewest distinct vendors among the members.
    pub min_vendors: u16,
    /// No vendor may hold `t` or more members (so no vendor alone can sign).
    pub no_vendor_holds_threshold: bool,
}

impl VendorPolicy {
    /// Whether members of these vendors (one entry per member) may form a
    /// committee of threshold `t`.
    pub fn admits(&self, vendors: &[u16], t: u16) -> bool {
        let mut counts = std::collections::BTreeMap::<u16, usize>::new();
        for v in vendors {
            *counts.entry(*v).or_default() += 1;
        }
        counts.len() >= usize::from(self.min_vendors)
            && (!self.no_vendor_holds_threshold || counts.values().all(|c| *c < usize::from(t)))
    }
}

/// The committee of `n` that registered enclaves (each with its vendor)
/// form: the vendors in the order of their lowest account, each in turn
/// giving its next lowest account, until `n` are chosen; the members
/// ascending. Whoever registers many enclaves under one vendor (a leaked
/// vendor key, or one vendor's cheap hardware) gets at most its share of
/// the seats, never all the first places. Fewer than `n` candidates: all.
pub fn select_committee(enclaves: &[(AccountId, u16)], n: usize) -> Vec<AccountId> {
    let mut by_vendor: std::collections::BTreeMap<u16, Vec<AccountId>> =
        std::collections::BTreeMap::new();
    for (account, vendor) in enclaves {
        by_vendor.entry(*vendor).or_default().push(*account);
    }
    let mut queues: Vec<std::collections::VecDeque<AccountId>> = by_vendor
        .into_values()
        .map(|mut accounts| {
            accounts.sort_unstable();
            accounts.into()
        })
        .collect();
    queues.sort_by_key(|q| q.front().copied());
    let mut members = Vec::with_capacity(n.min(enclaves.len()));
    while members.len() < n && queues.iter().any(|q| !q.is_empty()) {
        for q in &mut queues {
            if members.len() < n
                && let Some(account) = q.pop_front()
            {
                members.push(account);
            }
        }
    }
    members.sort_unstable();
    members
}

/// Why a quote is not accepted. Verification failures are opaque (STYLE §3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// Governance has not allowed this measurement.
    #[error("measurement not allowed")]
    UnknownMeasurement,
    /// The quote is not from this verifier's backend.
    #[error("quote from another attestation backend")]
    WrongBackend,
    /// The quote does not verify.
    #[error("invalid quote")]
    InvalidQuote,
}

/// What an accepted quote establishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attested {
    /// The allowed measurement it ran.
    pub measurement: Measurement,
    /// The report data it vouched for.
    pub report_data: [u8; 64],
}

/// Checks quotes against a set of allowed measurements.
pub trait AttestationVerifier {
    /// Accepts `quote` if it verifies and its measurement is in `allowed`.
    ///
    /// # Errors
    /// [`AttestationError`] otherwise.
    fn verify(
        &self,
        quote: &Quote,
        allowed: &BTreeSet<Measurement>,
    ) -> Result<Attested, AttestationError>;
}

fn signed_bytes(measurement: &Measurement, report_data: &[u8; 64]) -> hash::Digest {
    hash::tagged(TAG_SIMULATED_QUOTE, &[&measurement.0, report_data])
}

/// The simulated attestation "hardware": signs quotes with a software key.
/// Simulated: it stands in for a TEE vendor's quoting enclave.
pub struct SimulatedAttestationService {
    key: ed25519_dalek::SigningKey,
}

impl SimulatedAttestationService {
    /// A simulated service with the secret `seed`.
    pub fn new(seed: [u8; 32]) -> SimulatedAttestationService {
        SimulatedAttestationService {
            key: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The attestation root a chain that trusts this simulated service holds.
    pub fn root(&self) -> AttestationRoot {
        AttestationRoot::Simulated {
            key: self.key.verifying_key().to_bytes(),
        }
    }

    /// The verifier that trusts this simulated service.
    pub fn verifier(&self) -> SimulatedAttestationVerifier {
        SimulatedAttestationVerifier {
            key: self.key.verifying_key(),
        }
    }

    /// A simulated quote for an enclave with `measurement` vouching for `report_data`.
    pub fn quote(&self, measurement: Measurement, report_data: [u8; 64]) -> Quote {
        use ed25519_dalek::Signer as _;
        let signature = self
            .key
            .sign(&signed_bytes(&measurement, &report_data).0)
            .to_bytes();
        Quote {
            backend: Backend::Simulated,
            measurement,
            report_data,
            signature,
        }
    }
}

/// Verifies quotes of a [`SimulatedAttestationService`]. Simulated: it proves
/// nothing about hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimulatedAttestationVerifier {
    key: ed25519_dalek::VerifyingKey,
}

impl AttestationVerifier for SimulatedAttestationVerifier {
    fn verify(
        &self,
        quote: &Quote,
        allowed: &BTreeSet<Measurement>,
    ) -> Result<Attested, AttestationError> {
        if quote.backend != Backend::Simulated {
            return Err(AttestationError::WrongBackend);
        }
        let signature = ed25519_dalek::Signature::from_bytes(&quote.signature);
        self.key
            .verify_strict(
                &signed_bytes(&quote.measurement, &quote.report_data).0,
                &signature,
            )
            .map_err(|_| AttestationError::InvalidQuote)?;
        if !allowed.contains(&quote.measurement) {
            return Err(AttestationError::UnknownMeasurement);
        }
        Ok(Attested {
            measurement: quote.measurement,
            report_data: quote.report_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclaves_crowded_under_one_vendor_get_only_its_share_of_the_seats() {
        // Someone with one vendor's (leaked) attestation key registers five
        // enclaves whose accounts sort before the two other vendors' ones.
        let id = |b: u8| AccountId([b; 32]);
        let registered = [
            (id(1), 0),
            (id(2), 0),
            (id(3), 0),
            (id(4), 0),
            (id(5), 0),
            (id(8), 1),
            (id(9), 2),
        ];
        let policy = VendorPolicy {
            min_vendors: 2,
            no_vendor_holds_threshold: true,
        };
        // Taking the first three would seat vendor 0 alone: a committee the
        // chain refuses, so none would form.
        let first: Vec<u16> = registered[..3].iter().map(|e| e.1).collect();
        assert!(!policy.admits(&first, 2));
        let members = select_committee(&registered, 3);
        assert_eq!(members, vec![id(1), id(8), id(9)]);
        let vendors: Vec<u16> = members
            .iter()
            .map(|m| registered.iter().find(|e| e.0 == *m).unwrap().1)
            .collect();
        assert!(policy.admits(&vendors, 2));
        // Five seats: vendor 0 gets three (one each in turn, then the rest).
        let five = select_committee(&registered, 5);
        assert_eq!(five, vec![id(1), id(2), id(3), id(8), id(9)]);
        assert_eq!(select_committee(&registered[..2], 3), vec![id(1), id(2)]);
    }

    #[test]
    fn a_quote_names_the_vendor_whose_root_it_verifies_under_and_the_policy_counts_vendors() {
        let (a, b) = (
            SimulatedAttestationService::new([1; 32]),
            SimulatedAttestationService::new([2; 32]),
        );
        let m = Measurement([7; 32]);
        let roots = [a.root(), b.root()];
        let (vendor, _) = verify_vendor(&roots, &b.quote(m, [9; 64]), &allowed(m)).unwrap();
        assert_eq!(vendor, 1);
        let stranger = SimulatedAttestationService::new([3; 32]).quote(m, [9; 64]);
        assert!(verify_vendor(&roots, &stranger, &allowed(m)).is_err());
        let policy = VendorPolicy {
            min_vendors: 2,
            no_vendor_holds_threshold: true,
        };
        assert!(policy.admits(&[0, 1, 2], 2));
        assert!(!policy.admits(&[0, 0, 1], 2), "vendor 0 alone signs");
        assert!(!policy.admits(&[0, 0, 0], 2));
        assert!(policy.admits(&[0, 0, 1, 1, 2], 3));
        assert!(VendorPolicy::default().admits(&[0, 0, 0], 2));
    }

    fn allowed(m: Measurement) -> BTreeSet<Measurement> {
        [m].into_iter().collect()
    }

    #[test]
    fn a_quote_of_an_allowed_measurement_verifies() {
        let service = SimulatedAttestationService::new([1; 32]);
        let m = Measurement([7; 32]);
        let q = service.quote(m, [9; 64]);
        let a = service.verifier().verify(&q, &allowed(m)).unwrap();
        assert_eq!(a.report_data, [9; 64]);
    }

    #[test]
    fn unknown_measurements_and_bad_signatures_are_rejected() {
        let service = SimulatedAttestationService::new([1; 32]);
        let m = Measurement([7; 32]);
        let v = service.verifier();
        let q = service.quote(Measurement([8; 32]), [9; 64]);
        assert_eq!(
            v.verify(&q, &allowed(m)),
            Err(AttestationError::UnknownMeasurement)
        );
        // Any change to a signed quote breaks it.
        let good = service.quote(m, [9; 64]);
        let mut forged = good.clone();
        forged.report_data[0] ^= 1;
        assert_eq!(
            v.verify(&forged, &allowed(m)),
            Err(AttestationError::InvalidQuote)
        );
        let mut forged = good.clone();
        forged.signature[5] ^= 1;
        assert_eq!(
            v.verify(&forged, &allowed(m)),
            Err(AttestationError::InvalidQuote)
        );
        // A quote from another (simulated) vendor key.
        let other = SimulatedAttestationService::new([2; 32]).quote(m, [9; 64]);
        assert_eq!(
            v.verify(&other, &allowed(m)),
            Err(AttestationError::InvalidQuote)
        );
    }
}
