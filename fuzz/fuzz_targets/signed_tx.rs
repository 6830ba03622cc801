//! Fuzzes the transaction decoder, the first thing untrusted bytes meet.
//!
//! Any input is either rejected as malformed or is canonical: it re-encodes to
//! exactly the same bytes. Verifying a decoded transaction never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_ledger::SignedTx;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTx::decode(data) {
        assert_eq!(tx.encode(), data, "decoding accepted non-canonical bytes");
        let _ = tx.verify();
    }
});
