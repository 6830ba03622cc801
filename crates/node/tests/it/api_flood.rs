//! The API under a flood, played by a client on loopback through a real
//! socket: slow heads, too many connections from one address, too many
//! websockets, too many writes. Each is cut off at its limit
//! (`quartier_node::api_guard`) while a well-behaved request is still
//! answered.

use crate::harness::*;
use quartier_client::NodeClient;
use quartier_node::LedgerApp;
use quartier_node::api::{Extras, router_with};
use quartier_node::api_guard::{ApiLimits, serve};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Small limits, so a test reaches them with a handful of sockets.
const LIMITS: ApiLimits = ApiLimits {
    max_connections: 16,
    max_connections_per_ip: 4,
    max_websockets: 3,
    max_websockets_per_ip: 2,
    connection_lifetime: Duration::from_secs(30),
    header_timeout: Duration::from_millis(300),
    request_timeout: Duration::from_secs(1),
    writes_per_second: 1,
    write_burst: 3,
    one_time_per_second: 1,
    one_time_burst: 1,
    max_sync_streams: 2,
    max_sync_streams_per_ip: 1,
};

/// Serves `app`'s API under [`LIMITS`] on a loopback port of its own;
/// the runtime lives as long as the returned guard.
fn serving(app: LedgerApp) -> (SocketAddr, tokio::runtime::Runtime) {
    serving_with(app, LIMITS)
}

/// As [`serving`], under `limits`.
fn serving_with(app: LedgerApp, limits: ApiLimits) -> (SocketAddr, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let extras = Extras {
        limits,
        ..Extras::default()
    };
    let router = router_with(app, Arc::new(|_| {}), extras);
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        serve(listener, router, limits).await
    });
    (addr, runtime)
}

/// Whether the server closed `stream` (an end of file or a reset) before
/// the socket's read timeout: the test's bound, far above the server's.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A 408 before the close is fine: read on to the end.
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

fn status_works(addr: SocketAddr) -> bool {
    let client = NodeClient::new(&format!("http://{addr}")).unwrap();
    matches!(client.get("/api/v1/status"), Ok((200, _)))
}

#[test]
fn a_slowloris_client_is_cut_off_and_others_are_served() {
    let (addr, _runtime) = serving(app(&genesis(&validator_keys(4))));
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // The rest of the head never comes.
    assert!(status_works(addr));
    assert!(closed_by_server(&mut slow), "the slow head was kept open");
}

#[test]
fn a_body_that_never_ends_gets_408() {
    let (addr, _runtime) = serving(app(&genesis(&validator_keys(4))));
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(
        b"POST /api/v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tx\":",
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply:?}");
    assert!(status_works(addr));
}

#[test]
fn one_address_holds_at_most_its_share_of_connections() {
    // Heads may take a minute here: only the per-address cap can close the
    // extra connection within the test's 20-second read bound.
    let limits = ApiLimits {
        header_timeout: Duration::from_secs(60),
        ..LIMITS
    };
    let (addr, _runtime) = serving_with(app(&genesis(&validator_keys(4))), limits);
    let held: Vec<TcpStream> = (0..LIMITS.max_connections_per_ip)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    // Each held connection has sent nothing yet; one more is closed at once.
    let mut extra = TcpStream::connect(addr).unwrap();
    assert!(closed_by_server(&mut extra), "a fifth connection was kept");
    drop(held);
    // Gone (the server sees them close): the address is served again.
    let client = NodeClient::new(&format!("http://{addr}")).unwrap();
    let mut served = false;
    for _ in 0..200 {
        if matches!(client.get("/api/v1/status"), Ok((200, _))) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(served);
}

#[test]
fn websockets_past_the_cap_are_refused() {
    let (addr, _runtime) = serving(app(&genesis(&validator_keys(4))));
    let url = format!("ws://{addr}/api/v1/stream");
    let open = |url: &str| {
        let stream = TcpStream::connect(addr).unwrap();
        tungstenite::client(url, stream).map_err(Box::new)
    };
    let first = open(&url).expect("first stream");
    let second = open(&url).expect("second stream");
    match open(&url) {
        Err(e) => match *e {
            tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
            }
            e => panic!("third stream: {e}"),
        },
        Ok(_) => panic!("a third stream was opened"),
    }
    drop((first, second));
    assert!(status_works(addr));
}

#[test]
fn writes_past_an_address_quota_get_429_before_any_verification() {
    let app = app(&genesis(&validator_keys(4)));
    let (addr, _runtime) = serving(app.clone());
    let client = NodeClient::new(&format!("http://{addr}")).unwrap();
    // Transfers signed by a stranger without funds: within the quota they
    // are admitted (or refused by the mempool, which does not matter here);
    // past it the guard answers 429 naming the address's quota.
    let txs = app.with_state(|s| {
        (0..6u64)
            .map(|i| {
                let body = quartier_ledger::TxBody::Transfer {
                    to: id(&key("nobody")),
                    amount: quartier_types::Money::new(1),
                };
                tx(s, &key("flooder"), i, body)
            })
            .collect::<Vec<_>>()
    });
    let replies: Vec<(u16, String)> = txs
        .iter()
        .map(|t| {
            let body = format!(r#"{{"tx":"{}"}}"#, hex::encode(t.encode()));
            let (code, reply) = client.post("/api/v1/txs", &body).unwrap();
            (code, reply["error"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let quota = |(code, error): &(u16, String)| *code == 429 && error.contains("this address");
    assert!(replies[..3].iter().all(|r| !quota(r)), "{replies:?}");
    assert!(
        replies[3..].iter().filter(|r| quota(r)).count() >= 2,
        "{replies:?}"
    );
    // None of those refused for the quota reached the mempool.
    for (t, r) in txs.iter().zip(&replies) {
        if quota(r) {
            assert_eq!(app.tx_status(&t.hash()), quartier_node::TxStatus::Unknown);
        }
    }
    assert!(status_works(addr), "reads are not limited");
}
