//! What the fuzz targets share: a fixed chain to check peers' bytes against.

use quartier_ledger::Genesis;
use quartier_light::ChainAnchor;
use quartier_types::{AccountId, Price, RegionId, RegionParams};

/// The account of the signing key whose secret is `seed` repeated.
fn account(seed: u8) -> AccountId {
    AccountId(
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes(),
    )
}

/// A genesis of four validators and one region, and its light anchor: the
/// chain a fuzzed sync bundle claims to be of.
///
/// # Panics
/// Never for these constants (the region's tariffs are ordered, the
/// validators' keys are valid points).
pub fn fixture_chain() -> (Genesis, ChainAnchor) {
    let genesis = Genesis {
        regions: vec![(
            RegionId(1),
            RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)
                .expect("ordered tariffs"),
        )],
        epoch_blocks: 16,
        ..Genesis::new(
            "quartier-fuzz",
            account(1),
            account(2),
            (10..14).map(account).collect(),
        )
    };
    let anchor = ChainAnchor::from_genesis(&genesis).expect("valid validator keys");
    (genesis, anchor)
}
