//! Fuzzes what a joining validator does with a peer's `GET /api/v1/sync`
//! answer: the JSON, then every check before anything is written (hex, the
//! validator-set changes, the certificate, the blocks, zstd, the snapshot).
//! No input panics, and a bundle of arbitrary bytes is never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_fuzz::fixture_chain;
use quartier_node::sync::{SyncBundle, decompress_snapshot, verify};

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = decompress_snapshot(data) {
        let _ = quartier_ledger::State::from_snapshot(&snapshot);
    }
    let Ok(bundle) = serde_json::from_slice::<SyncBundle>(data) else {
        return;
    };
    let (genesis, anchor) = fixture_chain();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([7; 32]);
    assert!(
        verify(&genesis, &anchor, &bundle, &mut rng).is_err(),
        "a bundle no validator signed was accepted"
    );
});
