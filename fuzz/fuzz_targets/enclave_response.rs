//! Fuzzes what a host takes from a peer's enclave (`POST /enclave/v1/rpc`'s
//! answer): every input is refused as malformed, or decodes to an answer
//! that encodes back to the same bytes (no second reading of one answer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_enclave::rpc::decode_response;

fuzz_target!(|data: &[u8]| {
    if let Some(response) = decode_response(data) {
        let again = borsh::to_vec(&response).expect("an answer encodes");
        assert_eq!(again, data, "one answer, one encoding");
    }
});
