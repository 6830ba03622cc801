//! Signing a transaction and submitting it: the one place that builds the
//! body of `POST /api/v1/txs`.

use crate::{ClientError, NodeClient};
use ed25519_dalek::SigningKey;
use quartier_ledger::{ChainId, SignedTx, Tx, TxBody};
use quartier_types::AccountId;

/// The account of a signing key.
pub fn account(key: &SigningKey) -> AccountId {
    AccountId(key.verifying_key().to_bytes())
}

/// `body` signed by `key` with `nonce` on chain `chain_id`.
pub fn sign(chain_id: ChainId, key: &SigningKey, nonce: u64, body: TxBody) -> SignedTx {
    Tx {
        chain_id,
        signer: account(key),
        nonce,
        body,
    }
    .sign(key)
}

/// The JSON body of `POST /api/v1/txs` submitting `tx`.
pub fn submit_body(tx: &SignedTx) -> String {
    let body = quartier_types::api::SubmitTx {
        tx: hex::encode(tx.encode()),
    };
    serde_json::to_string(&body).expect("a struct of one string serialises")
}

/// The next nonce of account `who` (0 for an account the chain does not
/// know).
///
/// # Errors
/// [`ClientError`] if the node can not be read.
pub fn nonce(api: &NodeClient, who: &AccountId) -> Result<u64, ClientError> {
    Ok(api.get(&format!("/api/v1/accounts/{who}"))?.1["nonce"]
        .as_u64()
        .unwrap_or(0))
}
