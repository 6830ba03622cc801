//! `quartier clear` as a user runs it: exit codes, stdout and stderr.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn quartier(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_quartier"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn example() -> String {
    format!("{}/../../examples/slot.json", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn clears_the_example_file() {
    let out = quartier(&["clear", &example()], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["trades"].as_array().unwrap().is_empty());
    let t = &v["totals"];
    let n = |k: &str| t[k].as_u64().unwrap();
    assert_eq!(
        n("buyers_pay") + n("utility_buys"),
        n("sellers_receive") + n("dso_fees") + n("utility_sells")
    );
}

#[test]
fn reads_stdin_and_pretty_prints() {
    let input = std::fs::read(example()).unwrap();
    let compact = quartier(&["clear", "-"], &input);
    let pretty = quartier(&["clear", "--pretty"], &input);
    assert!(compact.status.success() && pretty.status.success());
    assert_eq!(compact.stdout.iter().filter(|&&b| b == b'\n').count(), 1);
    assert!(pretty.stdout.iter().filter(|&&b| b == b'\n').count() > 10);
    let a: serde_json::Value = serde_json::from_slice(&compact.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&pretty.stdout).unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_input_exits_2_with_one_line_and_no_stdout() {
    let params = r#""params": {"grid_tariff": 20750, "feed_in_tariff": 4000, "local_fee": 0}"#;
    let cases: &[(&str, String)] = &[
        ("malformed", "{\"params\": ".to_string()),
        ("missing", format!(r#"{{{params}}}"#)),
        (
            "unknown",
            format!(r#"{{{params}, "orders": [], "extra": 1}}"#),
        ),
        (
            "negative",
            format!(
                r#"{{{params}, "orders": [{{"id": "h1", "side": "buy", "limit": 5000, "energy": -3}}]}}"#
            ),
        ),
        (
            "fractional",
            format!(
                r#"{{{params}, "orders": [{{"id": "h1", "side": "buy", "limit": 5000.5, "energy": 3}}]}}"#
            ),
        ),
        (
            "limit",
            format!(
                r#"{{{params}, "orders": [{{"id": "h7", "side": "sell", "limit": 1, "energy": 3}}]}}"#
            ),
        ),
        (
            "duplicate",
            format!(
                r#"{{{params}, "orders": [{{"id": "h1", "side": "buy", "limit": 5000, "energy": 3}},
                                         {{"id": "h1", "side": "sell", "limit": 5000, "energy": 3}}]}}"#
            ),
        ),
        (
            "overflow",
            format!(
                r#"{{{params}, "orders": [{{"id": "h9", "side": "buy", "limit": 5000, "energy": 18446744073709551615}}]}}"#
            ),
        ),
    ];
    let expect_in_message = [
        "EOF",
        "orders",
        "extra",
        "orders[0].energy",
        "orders[0].limit",
        "`h7`",
        "`h1`",
        "`h9`",
    ];
    for ((name, input), needle) in cases.iter().zip(expect_in_message) {
        let out = quartier(&["clear"], input.as_bytes());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: stdout not empty");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{name}: `{needle}` not in {stderr}"
        );
    }
}

#[test]
fn a_missing_file_is_bad_input() {
    let out = quartier(&["clear", "/nonexistent/slot.json"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/slot.json"));
}
