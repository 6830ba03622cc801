//! `quartier enclave measure`: the measurement is the plain SHA-256 of the
//! binary, so anyone can check it with `sha256sum`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

fn measure(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quartier"))
        .args(["enclave", "measure"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_measurement_is_the_sha256_of_the_binary() {
    let dir = std::env::temp_dir().join(format!("quartier-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("abc");
    std::fs::write(&file, b"abc").unwrap();
    let out = measure(&["--binary", file.to_str().unwrap()]);
    assert!(out.status.success());
    // FIPS 180-2 test vector: SHA-256("abc").
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // Without a file: this executable, 64 hex digits, the same each time.
    let own = measure(&[]);
    assert!(own.status.success());
    let own = String::from_utf8(own.stdout).unwrap();
    assert_eq!(own.trim().len(), 64);
    assert_eq!(String::from_utf8(measure(&[]).stdout).unwrap(), own);
    // A missing file is bad input: exit code 2, nothing on stdout.
    let missing = measure(&["--binary", dir.join("nope").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(missing.stdout.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}
