//! Fuzzes the enclave's RPC, what anyone who reaches `POST /enclave/v1/rpc`
//! sends: every input is refused as malformed, or answered by a fresh
//! enclave without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_enclave::rpc::decode_request;
use quartier_enclave::service::EnclaveService;

fuzz_target!(|data: &[u8]| {
    if let Some(request) = decode_request(data) {
        let mut enclave = EnclaveService::new().expect("platform randomness");
        let _ = enclave.handle(request);
    }
});
