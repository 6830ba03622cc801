//! Fuzzes the block decoder, what a peer's proposal, a backfill answer and a
//! sync bundle's blocks go through.
//!
//! Any input is either refused or canonical: it re-encodes to exactly the same
//! bytes and decoding those again gives the same block and digest (a block
//! with two encodings would have two digests).
#![no_main]

use commonware_codec::{DecodeExt, Encode};
use commonware_cryptography::Digestible;
use libfuzzer_sys::fuzz_target;
use quartier_node::Block;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(bytes::Bytes::copy_from_slice(data)) {
        let again = block.encode();
        assert_eq!(
            again.as_ref(),
            data,
            "decoding accepted non-canonical bytes"
        );
        let twice = Block::decode(again).expect("a re-encoded block decodes");
        assert_eq!(twice.digest(), block.digest());
        assert_eq!(twice.txs().len(), block.txs().len());
    }
});
