//! Fuzzes what a joining validator does with a peer's `GET /api/v1/sync`
//! answer: the JSON, then [`verify`], every check `install` makes before
//! it writes; and, on the same bytes, the snapshot's decoders (zstd with its
//! bound, then the state) that `verify` reaches only behind a valid
//! certificate. No input panics. A bundle `verify` accepts is consistent:
//! its blocks chain up to the certified one from the snapshot's height.
//!
//! Limit: the fuzzer can not forge the fixture validators' certificate, so
//! the checks after it (the chain of blocks, the snapshot against the first
//! block's root, the epoch changes recorded) are reached only by a seed
//! signed with the fixture's keys, which the corpus does not have yet.
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
    if let Ok(verified) = verify(&genesis, &anchor, &bundle, &mut rng) {
        let blocks = verified.blocks();
        assert_eq!(blocks.len(), bundle.blocks.len());
        assert_eq!(
            blocks.first().map(|b| b.height().get()),
            Some(bundle.snapshot_height)
        );
        for pair in blocks.windows(2) {
            assert_eq!(
                pair[1].parent(),
                commonware_cryptography::Digestible::digest(&pair[0])
            );
        }
    }
});
