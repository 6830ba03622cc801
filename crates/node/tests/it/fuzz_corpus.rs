//! Replays the node's fuzz corpora and past crashes on stable Rust (the
//! `block`, `sync_bundle` and `api_submit` targets under `fuzz/`), so a
//! fixed crash stays fixed without cargo-fuzz. With
//! `QUARTIER_WRITE_FUZZ_SEEDS=1` it first writes the seeds: real blocks, a
//! sync bundle of a real block and real transaction bodies. (The sync
//! bundle replay checks against this harness's chain, not the fuzz crate's
//! fixture: both refuse a bundle nobody signed.)

use crate::harness::*;
use commonware_codec::{DecodeExt as _, Encode as _};
use commonware_cryptography::Digestible as _;
use quartier_ledger::{State, TxBody};
use quartier_light::ChainAnchor;
use quartier_node::Block;
use quartier_node::api::submitted_tx;
use quartier_node::sync::{SyncBundle, verify};
use quartier_types::api::SubmitTx;
use quartier_types::{Money, hash};
use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every input of a target's corpus and regressions, with its path.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            all.push((path, bytes));
        }
    }
    all
}

fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Real blocks: the genesis block and one carrying meter registrations.
fn seed_blocks() -> Vec<Block> {
    let keys = validator_keys(4);
    let state = State::from_genesis(genesis(&keys)).unwrap();
    let first = Block::genesis(state.root());
    let txs = registrations(&state, 3);
    let second = Block::new(
        first.digest(),
        commonware_consensus::types::Height::new(1),
        1_000,
        hash::tagged("ROOT", &[]),
        txs,
    );
    vec![first, second]
}

#[test]
fn block_corpus_decodes_canonically_without_panic() {
    if std::env::var_os("QUARTIER_WRITE_FUZZ_SEEDS").is_some() {
        for (i, block) in seed_blocks().iter().enumerate() {
            write_seed("block", &format!("block-{i}"), &block.encode());
        }
    }
    let all = inputs("block");
    for (path, bytes) in &all {
        if let Ok(block) = Block::decode(bytes::Bytes::copy_from_slice(bytes)) {
            assert_eq!(
                block.encode().as_ref(),
                bytes.as_slice(),
                "{}",
                path.display()
            );
        }
    }
    assert!(all.len() >= 2, "block corpus missing: {} inputs", all.len());
}

#[test]
fn sync_bundle_corpus_is_refused_without_panic() {
    let keys = validator_keys(4);
    let genesis = genesis(&keys);
    if std::env::var_os("QUARTIER_WRITE_FUZZ_SEEDS").is_some() {
        let blocks = seed_blocks();
        let bundle = SyncBundle {
            snapshot_height: 0,
            snapshot: zstd::encode_all(&b"not a snapshot"[..], 1).unwrap(),
            blocks: blocks.iter().map(|b| hex::encode(b.encode())).collect(),
            epochs: vec![],
            finalization: vec![0; 64],
        };
        write_seed(
            "sync_bundle",
            "two-blocks",
            &serde_json::to_vec(&bundle).unwrap(),
        );
    }
    let anchor = ChainAnchor::from_genesis(&genesis).unwrap();
    let all = inputs("sync_bundle");
    for (path, bytes) in &all {
        // As the fuzz target does: the snapshot's decoders on the raw bytes.
        if let Ok(snapshot) = quartier_node::sync::decompress_snapshot(bytes) {
            let _ = State::from_snapshot(&snapshot);
        }
        if let Ok(bundle) = serde_json::from_slice::<SyncBundle>(bytes) {
            let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed([7; 32]);
            assert!(
                verify(&genesis, &anchor, &bundle, &mut rng).is_err(),
                "{}",
                path.display()
            );
        }
    }
    assert!(!all.is_empty(), "sync bundle corpus missing");
}

#[test]
fn api_submit_corpus_decodes_without_panic() {
    if std::env::var_os("QUARTIER_WRITE_FUZZ_SEEDS").is_some() {
        let keys = validator_keys(4);
        let state = State::from_genesis(genesis(&keys)).unwrap();
        let transfer = tx(
            &state,
            &key("someone"),
            0,
            TxBody::Transfer {
                to: id(&key("other")),
                amount: Money::new(5),
            },
        );
        let body = quartier_client::tx::submit_body(&transfer);
        write_seed("api_submit", "transfer", body.as_bytes());
        write_seed(
            "api_submit",
            "registration",
            quartier_client::tx::submit_body(&registrations(&state, 1)[0]).as_bytes(),
        );
        write_seed("api_submit", "odd-hex", br#"{"tx":"abc"}"#);
    }
    let all = inputs("api_submit");
    let mut decoded = 0;
    for (path, bytes) in &all {
        if let Ok(body) = serde_json::from_slice::<SubmitTx>(bytes)
            && let Ok((raw, tx)) = submitted_tx(&body)
        {
            assert_eq!(tx.encode(), raw, "{}", path.display());
            decoded += 1;
        }
    }
    assert!(decoded >= 2, "api_submit corpus missing: {decoded} decoded");
}
