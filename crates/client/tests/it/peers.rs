//! A node or enclave peer as an attacker or a broken process runs it: a raw
//! TCP listener that answers what the test tells it to. The client must
//! return a typed error (never hang for minutes, never read without bound,
//! never follow the peer elsewhere).

use quartier_client::{ClientError, NodeClient};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

/// Serves one connection to a client of it: reads the request head, writes
/// `reply`, and holds the connection open until `ask` has returned (a peer
/// that stops writing, not one that hangs up); `ask`'s answer.
fn ask_peer<T>(reply: &'static [u8], ask: impl FnOnce(&NodeClient) -> T) -> T {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (release, held) = mpsc::channel::<()>();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        stream.write_all(reply).unwrap();
        stream.flush().unwrap();
        let _ = held.recv();
    });
    let answer = ask(&NodeClient::new(&url).unwrap());
    drop(release);
    handle.join().unwrap();
    answer
}

/// A peer that sends its head and then stalls costs the caller one wait
/// (10 s), as a silent peer: not the whole-reply deadline (minutes), which
/// is for a peer that trickles.
#[test]
fn a_peer_that_stalls_after_its_head_is_a_timeout_not_a_hang() {
    let reply = ask_peer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{",
        |client| client.get("/api/v1/status"),
    );
    assert!(
        matches!(&reply, Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut),
        "{reply:?}"
    );
}

/// A reply longer than the caller reads is refused, not buffered.
#[test]
fn a_reply_past_the_limit_is_refused() {
    let reply = ask_peer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 52\r\n\r\n\"01234567890123456789012345678901234567890123456789\"",
        |client| client.get_bytes("/big", 20),
    );
    assert!(matches!(reply, Err(ClientError::TooLarge(20))), "{reply:?}");
}

/// Error statuses are answers the caller reads; a redirect is not followed
/// (a peer can not send the client to another host).
#[test]
fn statuses_are_answers_and_redirects_are_not_followed() {
    let reply = ask_peer(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 13\r\n\r\n{\"error\":\"x\"}",
        |client| client.get("/missing").unwrap(),
    );
    assert_eq!(reply.0, 404);
    assert_eq!(reply.1["error"], "x");
    let reply = ask_peer(
        b"HTTP/1.1 302 Found\r\nLocation: http://192.0.2.1:9/\r\nContent-Length: 2\r\n\r\n{}",
        |client| client.get("/moved").unwrap(),
    );
    assert_eq!(reply.0, 302);
}

/// A body that is not JSON is a typed error.
#[test]
fn a_reply_that_is_not_json_is_malformed() {
    let reply = ask_peer(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        |client| client.get("/api/v1/status"),
    );
    assert!(matches!(reply, Err(ClientError::Malformed)), "{reply:?}");
}

/// Only `http://host:port` URLs.
#[test]
fn other_urls_are_refused() {
    for url in [
        "https://127.0.0.1:1",
        "127.0.0.1:1",
        "http://",
        "http://a/b",
    ] {
        assert!(
            matches!(NodeClient::new(url), Err(ClientError::Url(_))),
            "{url}"
        );
    }
}

/// A node too busy to say where a transaction stands (its request deadline,
/// 408) is a status to ask again about, not a malformed answer.
#[test]
fn a_busy_node_asked_for_a_transaction_is_a_status() {
    let reply = ask_peer(
        b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 35\r\n\r\n{\"error\":\"request took too long\"}  ",
        |client| client.tx_status(&quartier_types::hash::Digest([1; 32])),
    );
    assert!(matches!(reply, Err(ClientError::Status(408))), "{reply:?}");
}
