//! A minimal blocking HTTP/1.1 client for a node's JSON API (loopback tools,
//! tests and meter agents; no TLS).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not `http://host:port`.
    #[error("unsupported node URL {0} (expected http://host:port)")]
    Url(String),
    /// The node could not be reached or the connection broke.
    #[error("node unreachable: {0}")]
    Io(#[from] std::io::Error),
    /// The reply is not HTTP with a JSON body.
    #[error("malformed reply from the node")]
    Malformed,
    /// The reply is longer than the client reads.
    #[error("the node's reply is longer than {0} bytes")]
    TooLarge(usize),
    /// The reply did not arrive in time (the node sends it too slowly).
    #[error("the node's reply took longer than {0:?}")]
    TooSlow(Duration),
}

/// The longest reply the client reads unless a call says otherwise.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// The longest a whole reply may take (a peer that sends a byte now and
/// then is cut off), in seconds per MiB of the most the call reads, at least
/// a minute.
const SECONDS_PER_MIB: u64 = 2;

/// A node's API, e.g. `http://127.0.0.1:7401`.
#[derive(Clone, Debug)]
pub struct NodeClient {
    authority: String,
}

impl NodeClient {
    /// A client for the node at `url`.
    ///
    /// # Errors
    /// [`ClientError::Url`] if `url` is not `http://host:port`.
    pub fn new(url: &str) -> Result<NodeClient, ClientError> {
        let authority = url
            .strip_prefix("http://")
            .map(|a| a.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::Url(url.to_string()))?;
        Ok(NodeClient {
            authority: authority.to_string(),
        })
    }

    /// The `host:port` this client calls.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `GET path`: the status code and the JSON body.
    ///
    /// # Errors
    /// [`ClientError`] if the node is unreachable or the reply malformed.
    pub fn get(&self, path: &str) -> Result<(u16, serde_json::Value), ClientError> {
        self.request("GET", path, "")
    }

    /// `GET path` of a text resource (`/metrics`): the status code and the body.
    ///
    /// # Errors
    /// [`ClientError`] if the node is unreachable or the reply malformed.
    pub fn get_text(&self, path: &str) -> Result<(u16, String), ClientError> {
        self.exchange("GET", path, "")
    }

    /// `POST path` with a JSON body: the status code and the JSON body.
    ///
    /// # Errors
    /// [`ClientError`] if the node is unreachable or the reply malformed.
    pub fn post(&self, path: &str, body: &str) -> Result<(u16, serde_json::Value), ClientError> {
        self.request("POST", path, body)
    }

    /// `GET path` of a JSON resource that may be large: the status code and
    /// the body's bytes, of at most `max_bytes` (the reply is read no
    /// further).
    ///
    /// # Errors
    /// [`ClientError::TooLarge`] past `max_bytes`, or another
    /// [`ClientError`] if the node is unreachable or the reply malformed.
    pub fn get_bytes(&self, path: &str, max_bytes: usize) -> Result<(u16, Vec<u8>), ClientError> {
        self.exchange_bytes("GET", path, "", max_bytes)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, serde_json::Value), ClientError> {
        let (status, text) = self.exchange(method, path, body)?;
        let json = serde_json::from_str(&text).map_err(|_| ClientError::Malformed)?;
        Ok((status, json))
    }

    fn exchange(&self, method: &str, path: &str, body: &str) -> Result<(u16, String), ClientError> {
        let (status, bytes) = self.exchange_bytes(method, path, body, MAX_REPLY_BYTES)?;
        let text = String::from_utf8(bytes).map_err(|_| ClientError::Malformed)?;
        Ok((status, text))
    }

    // A client's deadline is the wall clock's: this is I/O, not pure code.
    #[allow(clippy::disallowed_methods)]
    fn exchange_bytes(
        &self,
        method: &str,
        path: &str,
        body: &str,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        // Each address the name resolves to, 5 s each: a peer that drops
        // the handshake costs that, not the system's minutes.
        let mut stream = None;
        let mut last = std::io::Error::from(std::io::ErrorKind::NotFound);
        for address in std::net::ToSocketAddrs::to_socket_addrs(self.authority.as_str())? {
            match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or(last)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.authority,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        // The head is small; the body at most `max_bytes`, read within a
        // deadline for the whole reply.
        const MAX_HEAD: usize = 16 * 1024;
        let limit = max_bytes.saturating_add(MAX_HEAD);
        let allowed = Duration::from_secs((SECONDS_PER_MIB * (max_bytes as u64 >> 20)).max(60));
        let deadline = std::time::Instant::now() + allowed;
        let mut reply = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::TooSlow(allowed));
            }
            stream.set_read_timeout(Some(left.min(Duration::from_secs(10))))?;
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            if reply.len() + n > limit {
                return Err(ClientError::TooLarge(max_bytes));
            }
            reply.extend_from_slice(&chunk[..n]);
        }
        let head_end = reply
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .filter(|&at| at <= MAX_HEAD)
            .ok_or(ClientError::Malformed)?;
        let body = reply.split_off(head_end + 4);
        if body.len() > max_bytes {
            return Err(ClientError::TooLarge(max_bytes));
        }
        let status = std::str::from_utf8(&reply)
            .ok()
            .and_then(|head| head.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or(ClientError::Malformed)?;
        Ok((status, body))
    }
}

/// Mode B: the epoch keys in a `GET /api/v1/sealed` answer, oldest first
/// (entries that do not decode are left out).
pub fn epoch_keys(sealed: &serde_json::Value) -> Vec<(quartier_enclave::sealed::Epoch, [u8; 32])> {
    sealed["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let key = hex::decode(e["public_key"].as_str()?).ok()?;
            Some((
                quartier_enclave::sealed::Epoch(e["epoch"].as_u64()?),
                key.try_into().ok()?,
            ))
        })
        .collect()
}

/// Mode B: the epoch keys in a `GET /api/v1/sealed` answer a household may
/// seal to now: those the committee in office made (from its
/// `first_epoch`), none while it evicts members (they could open them).
pub fn sealable_epoch_keys(
    sealed: &serde_json::Value,
) -> Vec<(quartier_enclave::sealed::Epoch, [u8; 32])> {
    let committee = &sealed["committee"];
    let evicting = committee["evicted"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    let Some(first) = committee["first_epoch"].as_u64().filter(|_| !evicting) else {
        return Vec::new();
    };
    epoch_keys(sealed)
        .into_iter()
        .filter(|(epoch, _)| epoch.0 >= first)
        .collect()
}

/// Mode A: pool outputs from index `from` to the end, page by page.
///
/// # Errors
/// [`ClientError`] if the node is unreachable or a page does not decode.
pub fn pool_outputs(
    api: &NodeClient,
    from: u64,
) -> Result<Vec<quartier_ledger::PoolOutput>, ClientError> {
    let mut outputs = Vec::new();
    loop {
        let at = from + outputs.len() as u64;
        let (status, page) = api.get(&format!("/api/v1/pool/outputs?from={at}&limit=4096"))?;
        let entries = page["outputs"].as_array().filter(|_| status == 200);
        let entries = entries.ok_or(ClientError::Malformed)?;
        for e in entries {
            outputs.push(serde_json::from_value(e.clone()).map_err(|_| ClientError::Malformed)?);
        }
        let total = page["total"].as_u64().ok_or(ClientError::Malformed)?;
        if entries.is_empty() || from + outputs.len() as u64 >= total {
            return Ok(outputs);
        }
    }
}

/// Mode A: every spent key image on chain, page by page.
///
/// # Errors
/// [`ClientError`] if the node is unreachable or a page does not decode.
pub fn key_images(api: &NodeClient) -> Result<std::collections::BTreeSet<[u8; 32]>, ClientError> {
    let mut images = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let (status, page) = api.get(&format!("/api/v1/pool/key_images?limit=4096{after}"))?;
        let entries = page["key_images"].as_array().filter(|_| status == 200);
        for e in entries.ok_or(ClientError::Malformed)? {
            let image = e
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or(ClientError::Malformed)?;
            images.insert(image);
            after = format!("&after={}", hex::encode(image));
        }
        if page["more"] != true {
            return Ok(images);
        }
    }
}

/// Mode A: a ring of meter keys, in the order the ledger verifies it.
pub type MeterRing = Vec<[u8; 32]>;

/// Mode A: a region's prosumers with the energy each can produce in a slot,
/// in the ledger's order (a sell of `E` is signed over those that reach `E`).
pub type Sellers = Vec<([u8; 32], quartier_types::Energy)>;

/// Mode A: a region's rings, as `GET /api/v1/regions/{r}/rings` serves them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterRings {
    /// Every active meter: a buy's ring.
    pub buy: MeterRing,
    /// The active prosumers with their energy per slot.
    pub sell: Sellers,
    /// Every meter ever registered: an allowance's ring.
    pub allowance: MeterRing,
}

/// Mode A: a region's meter rings.
///
/// # Errors
/// [`ClientError`] if the node is unreachable or the answer does not decode.
pub fn meter_rings(
    api: &NodeClient,
    region: quartier_types::RegionId,
) -> Result<MeterRings, ClientError> {
    let (status, v) = api.get(&format!("/api/v1/regions/{}/rings", region.0))?;
    let key = |k: &serde_json::Value| {
        k.as_str()
            .and_then(|a| a.parse::<quartier_types::AccountId>().ok())
            .map(|a| a.0)
            .ok_or(ClientError::Malformed)
    };
    let list = |side: &str| {
        v[side]
            .as_array()
            .filter(|_| status == 200)
            .ok_or(ClientError::Malformed)
    };
    let buy = list("buy")?.iter().map(key).collect::<Result<_, _>>()?;
    let allowance: MeterRing = list("allowance")?
        .iter()
        .map(key)
        .collect::<Result<_, _>>()?;
    let sell = list("sell")?
        .iter()
        .map(|s| {
            let energy = s["energy_per_slot"]
                .as_u64()
                .ok_or(ClientError::Malformed)?;
            Ok((key(&s["meter"])?, quartier_types::Energy::new(energy)))
        })
        .collect::<Result<_, ClientError>>()?;
    Ok(MeterRings {
        buy,
        sell,
        allowance,
    })
}

/// The chain id in a `GET /api/v1/status` answer.
pub fn chain_id(status: &serde_json::Value) -> Option<quartier_ledger::ChainId> {
    let bytes = hex::decode(status["chain_id"].as_str()?).ok()?;
    Some(quartier_ledger::ChainId(quartier_types::hash::Digest(
        bytes.try_into().ok()?,
    )))
}
