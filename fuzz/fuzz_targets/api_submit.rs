//! Fuzzes the body of `POST /api/v1/txs`, the node API's one JSON body:
//! parsed as axum's `Json` extractor parses it (serde_json into
//! `SubmitTx`), then decoded as the handler decodes it. No input panics; a
//! transaction accepted is canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_node::api::submitted_tx;
use quartier_types::api::SubmitTx;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<SubmitTx>(data) else {
        return;
    };
    if let Ok((bytes, tx)) = submitted_tx(&body) {
        assert_eq!(tx.encode(), bytes, "decoding accepted non-canonical bytes");
        let _ = tx.verify();
    }
});
