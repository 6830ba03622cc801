//! Fuzzes the `quartier clear` input decoder and the clearing behind it.
//!
//! Any input must either be rejected with a typed error or clear to a balanced
//! result; a decoded request must survive a JSON round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_auction::json::{clear_json, decode_request};

fuzz_target!(|data: &[u8]| {
    let Ok(request) = decode_request(data) else {
        return;
    };
    let again = serde_json::to_vec(&request).expect("a decoded request serialises");
    assert_eq!(
        decode_request(&again).expect("re-encoded request decodes"),
        request
    );
    if let Ok(response) = clear_json(data) {
        assert!(response.totals.is_balanced(), "money not conserved");
        assert_eq!(response.orders.len(), request.orders.len());
    }
});
