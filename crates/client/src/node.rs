//! A blocking client of one node's JSON API (meter agents, tools, tests), on
//! `ureq`.

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
    /// The node answered with a status the call does not expect (e.g. 408
    /// when it was too busy to answer in time): worth asking again.
    #[error("the node answered {0}")]
    Status(u16),
}

/// The longest reply the client reads unless a call says otherwise.
pub const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// The longest a whole reply may take (a peer that sends a byte now and
/// then is cut off), in seconds per MiB of the most the call reads, at least
/// a minute.
const SECONDS_PER_MIB: u64 = 2;

/// How long connecting (all addresses a name resolves to), and then each wait
/// for the peer (a read, a write), may take: a peer that drops the handshake
/// or stops answering costs that, not minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's API, e.g. `http://127.0.0.1:7401`.
#[derive(Clone, Debug)]
pub struct NodeClient {
    authority: String,
    agent: ureq::Agent,
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
        let agent = ureq::Agent::config_builder()
            // Statuses are answers the callers read, not errors.
            .http_status_as_error(false)
            // The node's address is the one given: no proxy from the
            // environment, no redirect elsewhere.
            .proxy(None)
            .max_redirects(0)
            // One connection a request, as the node's API guard counts them
            // (it closes idle connections on its own schedule).
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_request(Some(WAIT_TIMEOUT))
            .timeout_send_body(Some(WAIT_TIMEOUT))
            .timeout_recv_response(Some(WAIT_TIMEOUT))
            // Every read and write of the body too: a peer that sends its
            // head and then stalls costs this, not the whole-reply deadline.
            .timeout_per_read(Some(WAIT_TIMEOUT))
            .timeout_per_write(Some(WAIT_TIMEOUT))
            .build()
            .new_agent();
        Ok(NodeClient {
            authority: authority.to_string(),
            agent,
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

    /// `GET /api/v1/txs/{hash}`: where the transaction stands on the node.
    ///
    /// # Errors
    /// [`ClientError`] if the node is unreachable or the answer does not
    /// decode.
    pub fn tx_status(
        &self,
        hash: &quartier_types::hash::Digest,
    ) -> Result<quartier_types::api::TxStatus, ClientError> {
        let (code, v) = self.get(&format!("/api/v1/txs/{hash}"))?;
        if code != 200 {
            return Err(ClientError::Status(code));
        }
        serde_json::from_value(v).map_err(|_| ClientError::Malformed)
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

    fn exchange_bytes(
        &self,
        method: &str,
        path: &str,
        body: &str,
        max_bytes: usize,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        // The whole reply within a deadline: a peer that sends a byte now
        // and then is cut off.
        let allowed = Duration::from_secs((SECONDS_PER_MIB * (max_bytes as u64 >> 20)).max(60));
        let url = format!("http://{}{path}", self.authority);
        let sent = if method == "POST" {
            self.agent
                .post(&url)
                .config()
                .timeout_global(Some(allowed))
                .build()
                .content_type("application/json")
                .send(body)
        } else {
            self.agent
                .get(&url)
                .config()
                .timeout_global(Some(allowed))
                .build()
                .call()
        };
        let failed = |e: ureq::Error| match e {
            // The whole reply's deadline: a peer that trickles its answer.
            ureq::Error::Timeout(ureq::Timeout::Global | ureq::Timeout::PerCall) => {
                ClientError::TooSlow(allowed)
            }
            // One wait (connecting, a read, a write): the peer is silent.
            ureq::Error::Timeout(t) => ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {WAIT_TIMEOUT:?} ({t})"),
            )),
            ureq::Error::BodyExceedsLimit(_) => ClientError::TooLarge(max_bytes),
            ureq::Error::Io(e) => ClientError::Io(e),
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
                ClientError::Io(std::io::Error::other(e))
            }
            ureq::Error::BadUri(_) => ClientError::Url(url.clone()),
            _ => ClientError::Malformed,
        };
        let mut reply = sent.map_err(failed)?;
        let status = reply.status().as_u16();
        let bytes = reply
            .body_mut()
            .with_config()
            .limit(max_bytes as u64)
            .read_to_vec()
            .map_err(failed)?;
        Ok((status, bytes))
    }
}
