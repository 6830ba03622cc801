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
        chain_name: "quartier-fuzz".into(),
        dso: account(1),
        utility: account(2),
        validators: (10..14).map(account).collect(),
        regions: vec![(
            RegionId(1),
            RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)
                .expect("ordered tariffs"),
        )],
        slot_ms: 900_000,
        gate_ms: 60_000,
        lead_slots: 1,
        metered_ms: 900_000,
        allocations: vec![],
        sealed_market: None,
        shielded: None,
        history_slots: 0,
        limits: Default::default(),
        epoch_blocks: 16,
    };
    let anchor = ChainAnchor::from_genesis(&genesis).expect("valid validator keys");
    (genesis, anchor)
}
