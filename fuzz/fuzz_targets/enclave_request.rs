//! Fuzzes the enclave's RPC, what anyone who reaches `POST /enclave/v1/rpc`
//! sends: every input is refused as malformed, or answered by a fresh
//! enclave without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quartier_enclave::rpc::decode_request;
use quartier_enclave::service::EnclaveService;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    if let Some(request) = decode_request(data) {
        let mut rng = ChaCha20Rng::from_seed([7; 32]);
        let mut enclave = EnclaveService::new(&mut rng);
        let _ = enclave.handle(request, &mut rng);
    }
});
