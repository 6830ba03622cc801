//! An enclave host's RPC (`POST /enclave/v1/rpc`): the boundary of a mode B
//! enclave, which its peers, households and tools call.

use crate::NodeClient;
use quartier_enclave::rpc::{Request, Response, decode_response};

/// The JSON body of an RPC call carrying `request`, `None` if it does not
/// encode.
pub fn rpc_body(request: &Request) -> Option<String> {
    let bytes = borsh::to_vec(request).ok()?;
    Some(serde_json::json!({ "request": hex::encode(bytes) }).to_string())
}

/// Calls an enclave's API: `None` if it is unreachable or answers nonsense.
pub fn call(peer: &NodeClient, request: &Request) -> Option<Response> {
    let (code, reply) = peer.post("/enclave/v1/rpc", &rpc_body(request)?).ok()?;
    if code != 200 {
        return None;
    }
    let bytes = hex::decode(reply["response"].as_str()?).ok()?;
    decode_response(&bytes)
}
