//! Types of the node's HTTP/JSON API that both the node's handlers and its
//! clients use: the server encodes them, clients decode them, so the two can
//! not drift apart.

use serde::{Deserialize, Serialize};

/// The body of `POST /api/v1/txs`: one transaction's canonical bytes, hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitTx {
    /// The transaction's canonical bytes, hex.
    pub tx: String,
}

/// The answer to an accepted `POST /api/v1/txs` (`202 Accepted`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The transaction's hash, hex.
    pub hash: String,
}

/// Where a transaction stands on a node (`GET /api/v1/txs/{hash}`; the
/// answer also carries the `hash` asked about).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxStatus {
    /// In a finalized block at `height`.
    Finalized {
        /// The block's height.
        height: u64,
    },
    /// In this node's mempool.
    Pending,
    /// The ledger rejected it when a block was built here.
    Rejected {
        /// Why.
        reason: String,
    },
    /// Never seen here (or rejected long ago).
    Unknown,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report
    use super::*;

    /// The JSON the API serves, and clients decode, for each status.
    #[test]
    fn tx_status_json_is_fixed() {
        for (status, json) in [
            (
                TxStatus::Finalized { height: 7 },
                r#"{"status":"finalized","height":7}"#,
            ),
            (TxStatus::Pending, r#"{"status":"pending"}"#),
            (
                TxStatus::Rejected { reason: "x".into() },
                r#"{"status":"rejected","reason":"x"}"#,
            ),
            (TxStatus::Unknown, r#"{"status":"unknown"}"#),
        ] {
            assert_eq!(serde_json::to_string(&status).unwrap(), json);
            assert_eq!(serde_json::from_str::<TxStatus>(json).unwrap(), status);
        }
        let with_hash = r#"{"status":"pending","hash":"00"}"#;
        assert_eq!(
            serde_json::from_str::<TxStatus>(with_hash).unwrap(),
            TxStatus::Pending
        );
    }
}
