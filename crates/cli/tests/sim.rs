//! `quartier sim` as a user runs it: output, determinism, CSV files and bad input.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::{Command, Output};

fn quartier(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quartier"))
        .args(args)
        .output()
        .unwrap()
}

const SMALL: [&str; 9] = [
    "sim",
    "--households",
    "6",
    "--prosumers",
    "4",
    "--days",
    "2",
    "--seed",
    "9",
];

#[test]
fn json_is_identical_for_a_seed_and_adds_up() {
    let args: Vec<&str> = SMALL.iter().copied().chain(["--json"]).collect();
    let (a, b) = (quartier(&args), quartier(&args));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "same seed, same bytes");
    let v: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(v["households"].as_array().unwrap().len(), 6);
    let e = &v["energy"];
    let n = |k: &str| e[k].as_u64().unwrap();
    assert_eq!(
        n("consumed_wh"),
        n("self_consumed_wh") + n("local_wh") + n("imported_wh")
    );
    assert_eq!(
        n("produced_wh"),
        n("self_consumed_wh") + n("local_wh") + n("exported_wh")
    );
    let other: Vec<&str> = args
        .iter()
        .map(|a| if *a == "9" { "10" } else { a })
        .collect();
    assert_ne!(
        quartier(&other).stdout,
        a.stdout,
        "another seed, other figures"
    );
}

#[test]
fn the_table_and_the_csv_files() {
    let dir = std::env::temp_dir().join(format!("quartier-sim-csv-{}", std::process::id()));
    let mut args: Vec<&str> = SMALL.to_vec();
    let dir_arg = dir.to_str().unwrap().to_string();
    args.extend(["--csv-out", &dir_arg]);
    let out = quartier(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for line in [
        "self-sufficiency",
        "community self-consumption",
        "community saving",
    ] {
        assert!(table.contains(line), "{line} missing from\n{table}");
    }
    let slots = std::fs::read_to_string(dir.join("slots.csv")).unwrap();
    assert_eq!(slots.lines().count(), 1 + 2 * 96);
    let households = std::fs::read_to_string(dir.join("households.csv")).unwrap();
    assert_eq!(households.lines().count(), 1 + 6);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_plans_exit_2_with_one_line() {
    for args in [
        vec!["sim", "--households", "3", "--prosumers", "4"],
        vec!["sim", "--days", "0"],
        vec!["sim", "--strategy", "greedy"],
    ] {
        let out = quartier(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn a_written_run_is_audited() {
    let dir = std::env::temp_dir().join(format!("quartier-audit-{}", std::process::id()));
    let dir_arg = dir.to_str().unwrap().to_string();
    let mut args: Vec<&str> = SMALL.to_vec();
    args.extend(["--start-day", "180", "--write-run", &dir_arg]);
    let out = quartier(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = dir.join("audit.svg");
    let svg_arg = svg.to_str().unwrap().to_string();
    let out = quartier(&["audit", "--run", &dir_arg, "--json", "--svg", &svg_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &audit["reports"];
    let transparent = &v[0];
    assert_eq!(transparent["households"], 6);
    assert!(transparent["top1"].as_f64().unwrap() >= 0.99);
    let hidden = &v[1];
    assert!(hidden["top1"].as_f64().unwrap() < 0.99);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    // The auditor reads only public.json for its attacks; a truth from
    // another run is refused.
    let other = dir.join("other");
    let other_arg = other.to_str().unwrap().to_string();
    let mut args: Vec<&str> = SMALL
        .iter()
        .map(|a| if *a == "2" { "1" } else { a })
        .collect();
    args.extend(["--write-run", &other_arg]);
    assert!(quartier(&args).status.success());
    let wrong_truth = other.join("truth.json");
    let out = quartier(&[
        "audit",
        "--run",
        &dir_arg,
        "--truth",
        wrong_truth.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audit_and_privacy_bad_input_exit_2() {
    for args in [
        vec!["audit", "--run", "/nonexistent/quartier-run"],
        vec!["sim", "--privacy", "enclave", "--write-run", "/tmp/x"],
        vec!["sim", "--start-day", "0"],
    ] {
        let out = quartier(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
    }
}
