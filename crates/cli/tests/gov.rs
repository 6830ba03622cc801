//! `quartier gov` on a running four-validator network (OS processes): a
//! leaked utility key is frozen by two validators' votes at once, then
//! two thirds vote a new key in, which takes the role and the utility's
//! balance; `gov status` says so at each step.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::time::Duration;

mod support;

use support::validators::{Devnet, height, http, key_file, quartier, wait_for};

/// `quartier gov ACTION --node NODE --key <validator's key> ARGS…`.
fn gov(action: &str, node: &str, (dir, validator): (&Path, usize), args: &[&str]) -> String {
    let key = key_file(dir, &format!("validator-{validator}"));
    let mut all = vec!["gov", action, "--node", node, "--key", &key];
    all.extend_from_slice(args);
    quartier(&all)
}

/// The role's key and whether it is frozen, as the node serves them.
fn role(port: u16, name: &str) -> (String, bool) {
    let (_, g) = http(port, "GET", "/api/v1/governance", "").unwrap();
    let a = &g["authorities"][name];
    (
        a["key"].as_str().unwrap().to_owned(),
        a["frozen"].as_bool().unwrap(),
    )
}

fn balance(port: u16, account: &str) -> u64 {
    let (_, a) = http(port, "GET", &format!("/api/v1/accounts/{account}"), "").unwrap();
    a["balance"].as_u64().unwrap_or(0)
}

#[test]
fn validators_freeze_a_leaked_role_key_and_vote_a_new_one_in() {
    let base = 27_000 + (std::process::id() % 500) as u16 * 10;
    let dir = support::scratch("e2e-gov");
    let mut net = Devnet::lay_out(dir.clone(), base, &["--idle-block-ms", "300"]);
    for i in 0..4 {
        net.start_node(i);
    }
    let port = net.api_ports[0];
    let node = format!("http://127.0.0.1:{port}");
    wait_for("the network to run", Duration::from_secs(180), || {
        height(port) >= 2
    });
    let (leaked, frozen) = role(port, "utility");
    assert!(!frozen);
    let float = balance(port, &leaked);
    assert!(float > 0);

    // Two of four validators (more than a third) freeze it.
    let change = format!(r#"{{"freeze":{{"authority":"utility","key":"{leaked}"}}}}"#);
    let out = gov("propose", &node, (&dir, 0), &["--change", &change]);
    assert!(out.contains("proposal 0 open: {\"freeze\""), "{out}");
    let status = quartier(&["gov", "status", "--node", &node]);
    assert!(status.contains("yes 1/2 needed"), "{status}");
    gov("vote", &node, (&dir, 1), &["--proposal", "0"]);
    assert_eq!(role(port, "utility"), (leaked.clone(), true));
    assert!(quartier(&["gov", "status", "--node", &node]).contains("FROZEN"));

    // A new key, voted in by three of four.
    let fresh_file = dir.join("new-utility.key");
    let fresh = quartier(&["keygen", "--out", &fresh_file.display().to_string()]);
    let fresh = fresh.trim().rsplit(' ').next().unwrap().to_owned();
    let change =
        format!(r#"{{"rotate_key":{{"authority":"utility","from":"{leaked}","key":"{fresh}"}}}}"#);
    gov("propose", &node, (&dir, 2), &["--change", &change]);
    for v in [3, 0] {
        gov("vote", &node, (&dir, v), &["--proposal", "1"]);
    }
    assert_eq!(role(port, "utility"), (fresh.clone(), false));
    assert_eq!(balance(port, &fresh), float);
    assert_eq!(balance(port, &leaked), 0);
    // Every validator's state says the same.
    for &p in &net.api_ports {
        wait_for("the others to agree", Duration::from_secs(30), || {
            role(p, "utility") == (fresh.clone(), false)
        });
    }
}
