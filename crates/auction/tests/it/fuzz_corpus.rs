//! Replays every input the fuzzer kept (seeds and past crashes) through the
//! decoder on stable Rust, so a fixed crash stays fixed without cargo-fuzz.

use quartier_auction::json::clear_json;
use std::path::PathBuf;

#[test]
fn fuzz_corpus_and_regressions_decode_without_panic() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut replayed = 0;
    for dir in ["corpus/clear_request", "regressions/clear_request"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            if let Ok(response) = clear_json(&input) {
                assert!(response.totals.is_balanced(), "{}", path.display());
            }
            replayed += 1;
        }
    }
    assert!(
        replayed > 0,
        "no fuzz inputs found under {}",
        root.display()
    );
}
