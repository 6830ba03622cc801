//! Fuzzes the enclave's RPC, what anyone who reaches `POST /enclave/v1/rpc`
//! sends: every input is refused as malformed, or answered by a fresh
//! enclave without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_enclave::attestation::{Measurement, SimulatedAttestationService};
use quartier_enclave::rpc::decode_request;
use quartier_enclave::service::{EnclaveService, SimulatedPlatform};

fuzz_target!(|data: &[u8]| {
    if let Some(request) = decode_request(data) {
        let root = SimulatedAttestationService::new([8; 32]).root();
        let platform = SimulatedPlatform::new([9; 32], Measurement([1; 32]), root);
        let mut enclave = EnclaveService::new(&platform).expect("platform randomness");
        let _ = enclave.handle(request);
    }
});
