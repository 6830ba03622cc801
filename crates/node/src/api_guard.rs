//! The API's defences against floods: what one client, or many, can hold
//! of a validator's API (DESIGN §14: an outsider who reaches the port).
//!
//! - **Connections**: at most [`ApiLimits::max_connections`] at once and
//!   [`ApiLimits::max_connections_per_ip`] from one address; past either, a
//!   new connection waits in the kernel's backlog (the whole cap) or is
//!   closed at once (one address's). A connection lives at most
//!   [`ApiLimits::connection_lifetime`] (a client that asks and never reads
//!   its answer holds its place no longer). An IPv6 address counts by its
//!   /64 prefix (what one host is usually given), here and below.
//! - **Slow clients**: a request's head must arrive within
//!   [`ApiLimits::header_timeout`] (hyper's header-read timeout: a slowloris
//!   client is cut off), and a request, its body included, is answered
//!   within [`ApiLimits::request_timeout`] or gets 408.
//! - **Websockets**: at most [`ApiLimits::max_websockets`] streams and
//!   [`ApiLimits::max_websockets_per_ip`] from one address; past them `503`.
//! - **Writes**: each address may submit [`ApiLimits::writes_per_second`]
//!   transactions a second (bursts of [`ApiLimits::write_burst`]), and
//!   one-time (mode A) transactions, whose proofs cost milliseconds each to
//!   verify, [`ApiLimits::one_time_per_second`] (bursts of
//!   [`ApiLimits::one_time_burst`]); past them `429`.
//! - **State sync**: one bundle built at a time (a node with a data
//!   directory builds it once per snapshot and streams it from the file);
//!   at most [`ApiLimits::max_sync_streams`] sent at once and
//!   [`ApiLimits::max_sync_streams_per_ip`] to one address; past them
//!   `503`.

use axum::Router;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// What one client and all clients together may hold of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Open connections from one address.
    pub max_connections_per_ip: usize,
    /// Websocket streams at once.
    pub max_websockets: usize,
    /// Websocket streams from one address.
    pub max_websockets_per_ip: usize,
    /// How long a connection may stay open (a websocket, once upgraded, is
    /// not bound by it).
    pub connection_lifetime: Duration,
    /// Time for a request's head to arrive.
    pub header_timeout: Duration,
    /// Time to answer a request, reading its body included.
    pub request_timeout: Duration,
    /// Transactions one address may submit a second.
    pub writes_per_second: u32,
    /// The burst of transactions one address may submit at once.
    pub write_burst: u32,
    /// One-time (mode A) transactions one address may submit a second.
    pub one_time_per_second: u32,
    /// The burst of one-time transactions one address may submit at once.
    pub one_time_burst: u32,
    /// Stored sync bundles sent at once.
    pub max_sync_streams: usize,
    /// Stored sync bundles sent to one address at once.
    pub max_sync_streams_per_ip: usize,
}

impl Default for ApiLimits {
    /// Sized for a devnet's meter fleet, which submits every household's
    /// orders from one address (37 households: up to ~110 transactions a
    /// slot; `bench chain`: 2 000 orders in a burst).
    fn default() -> Self {
        ApiLimits {
            max_connections: 512,
            max_connections_per_ip: 64,
            max_websockets: 64,
            max_websockets_per_ip: 8,
            connection_lifetime: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            writes_per_second: 1_000,
            write_burst: 8_000,
            one_time_per_second: 50,
            one_time_burst: 500,
            max_sync_streams: 64,
            max_sync_streams_per_ip: 2,
        }
    }
}

/// The address a request came from, as the server saw it (an IPv6
/// address by its /64 prefix, see [`client_key`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// What the limits count a client by: its IPv4 address, or the /64 prefix
/// of its IPv6 address (one host usually gets a whole /64, so counting
/// whole addresses would give it 2⁶⁴ quotas).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

/// Which write quota a transaction draws on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// A transaction of an account.
    Account,
    /// A one-time (mode A) transaction.
    OneTime,
}

/// How many light-client proofs (mode B enclaves' batches and registry)
/// are built at once; a request beyond gets 503 (its host retries).
pub const MAX_PROOFS_BUILDING: usize = 4;

/// How many of them for one address (the hosts of a devnet share one).
pub const PROOFS_PER_ADDRESS: usize = 2;

/// The API's shared limits at run time.
#[derive(Clone)]
pub struct Guard {
    limits: ApiLimits,
    writes: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    one_time: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    websockets: Arc<tokio::sync::Semaphore>,
    websockets_per_ip: Arc<PerIp>,
    sync: Arc<tokio::sync::Semaphore>,
    sync_streams: Arc<tokio::sync::Semaphore>,
    sync_streams_per_ip: Arc<PerIp>,
    proofs: Arc<tokio::sync::Semaphore>,
    proofs_per_ip: Arc<PerIp>,
    /// Write checks since the limiters' tables were last trimmed.
    checks: Arc<std::sync::atomic::AtomicU64>,
}

/// A stream's place (a websocket's, a sync bundle's), held while it lives.
pub struct Place {
    _all: tokio::sync::OwnedSemaphorePermit,
    _mine: Leave,
}

fn quota(per_second: u32, burst: u32) -> Quota {
    let nz = |n: u32| NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(nz(per_second)).allow_burst(nz(burst))
}

impl Guard {
    /// The run-time state of `limits`.
    pub fn new(limits: ApiLimits) -> Guard {
        Guard {
            limits,
            writes: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                limits.writes_per_second,
                limits.write_burst,
            ))),
            one_time: Arc::new(DefaultKeyedRateLimiter::keyed(quota(
                limits.one_time_per_second,
                limits.one_time_burst,
            ))),
            websockets: Arc::new(tokio::sync::Semaphore::new(limits.max_websockets)),
            websockets_per_ip: Arc::new(PerIp::default()),
            sync: Arc::new(tokio::sync::Semaphore::new(1)),
            sync_streams: Arc::new(tokio::sync::Semaphore::new(limits.max_sync_streams)),
            sync_streams_per_ip: Arc::new(PerIp::default()),
            proofs: Arc::new(tokio::sync::Semaphore::new(MAX_PROOFS_BUILDING)),
            proofs_per_ip: Arc::new(PerIp::default()),
            checks: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// The limits.
    pub fn limits(&self) -> ApiLimits {
        self.limits
    }

    /// Whether `ip` may submit one more transaction of `kind` now (a
    /// request without an address, as in tests of the router alone, counts
    /// as the unspecified address).
    pub fn allow_write(&self, ip: Option<IpAddr>, kind: WriteKind) -> bool {
        let ip = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let limiter = match kind {
            WriteKind::Account => &self.writes,
            WriteKind::OneTime => &self.one_time,
        };
        // Addresses whose bucket is full again are forgotten every 4 096
        // checks, so many addresses do not grow the tables for good (and a
        // large table is not scanned on every check).
        let checks = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if checks % 4_096 == 4_095 {
            self.writes.retain_recent();
            self.one_time.retain_recent();
        }
        limiter.check_key(&ip).is_ok()
    }

    /// A websocket's place for `ip`, held while the stream lives; `None`
    /// when all are taken, or all of the address's share.
    pub fn websocket(&self, ip: Option<IpAddr>) -> Option<Place> {
        place(
            ip,
            (&self.websockets_per_ip, self.limits.max_websockets_per_ip),
            &self.websockets,
        )
    }

    /// A stored sync bundle's place for `ip`, held while it is sent; `None`
    /// when all are taken, or all of the address's share.
    pub fn sync_stream(&self, ip: Option<IpAddr>) -> Option<Place> {
        place(
            ip,
            (
                &self.sync_streams_per_ip,
                self.limits.max_sync_streams_per_ip,
            ),
            &self.sync_streams,
        )
    }

    /// A light-client proof builder's place for `ip` (a block, its
    /// certificate and state proofs); `None` while [`MAX_PROOFS_BUILDING`]
    /// others build, or [`PROOFS_PER_ADDRESS`] for the same address.
    pub fn proof(&self, ip: Option<IpAddr>) -> Option<Place> {
        place(ip, (&self.proofs_per_ip, PROOFS_PER_ADDRESS), &self.proofs)
    }

    /// The state sync builder's place; `None` while another builds.
    pub fn sync(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.sync).try_acquire_owned().ok()
    }
}

/// One of `all` and one of the address's `max` places in `mine`.
fn place(
    ip: Option<IpAddr>,
    (mine, max): (&Arc<PerIp>, usize),
    all: &Arc<tokio::sync::Semaphore>,
) -> Option<Place> {
    let ip = ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let mine = mine.enter(client_key(ip), max)?;
    let all = Arc::clone(all).try_acquire_owned().ok()?;
    Some(Place {
        _all: all,
        _mine: mine,
    })
}

/// Open connections (or streams) per address.
#[derive(Default)]
pub struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Leave> {
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Leave(Arc::clone(self), ip))
    }
}

/// Leaves an address's count when the connection ends.
pub struct Leave(Arc<PerIp>, IpAddr);

impl Drop for Leave {
    fn drop(&mut self) {
        let mut open = self.0.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Answers 408 to a request not answered within `limit`, its body's reading
/// included (a client that sends its body a byte at a time is cut off).
async fn deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({ "error": "request took too long" })),
        )
            .into_response(),
    }
}

/// Serves `router` on `listener` under `limits` (see the module
/// documentation) until accepting fails for good.
///
/// # Errors
/// The listener's error if it can no longer accept.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ApiLimits,
) -> std::io::Result<()> {
    use hyper::server::conn::http1::Builder;
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.request_timeout,
        deadline,
    ));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // At the cap, wait for a connection to end before taking another.
        let permit = Arc::clone(&connections)
            .acquire_owned()
            .await
            .map_err(std::io::Error::other)?;
        let (stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: pause, then go on.
                tracing::warn!("API accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = client_key(addr.ip());
        let Some(leave) = per_ip.enter(ip, limits.max_connections_per_ip) else {
            // One address over its share: closed at once.
            drop(stream);
            continue;
        };
        let service = router.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ClientIp(ip));
                request.map(axum::body::Body::new)
            },
        );
        let builder = builder.clone();
        tokio::spawn(async move {
            let connection = builder
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .with_upgrades();
            match tokio::time::timeout(limits.connection_lifetime, connection).await {
                Ok(Err(e)) => tracing::debug!("API connection from {ip}: {e}"),
                Err(_) => tracing::debug!("API connection from {ip} closed: open too long"),
                Ok(Ok(())) => {}
            }
            drop((permit, leave));
        });
    }
}
