//! Mode A from a household's side, against a node: restore a shielded
//! wallet by scanning the whole pool locally (the node serves outputs and
//! key images, never learns a view key), shield IOUs into it and unshield
//! out of it. What `quartier wallet balance|history|shield|unshield` runs.

use crate::tx::{account, nonce, submit_body};
use crate::{ClientError, NodeClient};
use ed25519_dalek::SigningKey;
use quartier_ledger::{KIND_UNSHIELD, ShieldedPolicy, ShieldedTransfer, SignedTx, Tx, TxBody};
use quartier_meter::wallet::{MeterRing, RingPolicy, ShieldedWallet, WalletError};
use quartier_types::api::TxStatus;
use quartier_types::{AccountId, Money, RegionId, Side, Slot};
use rand_core::SeedableRng as _;
use std::time::{Duration, Instant};

/// Why a wallet operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ShieldedClientError {
    /// The node could not be reached or answered nonsense.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The chain does not run mode A.
    #[error("this chain has no shielded pool (it does not run privacy mode A)")]
    NoPool,
    /// The wallet can not pay.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The chain refused the transaction.
    #[error("the chain refused the transaction: {0}")]
    Refused(String),
    /// The transaction was not final in time.
    #[error("the transaction was not final within {0:?}")]
    Timeout(Duration),
    /// No randomness from the operating system.
    #[error("no randomness: {0}")]
    Randomness(String),
}

/// Mode A: the ring policy of a household's wallet on a chain with `policy`.
pub fn ring_policy(policy: ShieldedPolicy) -> RingPolicy {
    RingPolicy {
        ring_size: usize::from(policy.ring_size),
    }
}

/// The chain's mode A policy, from `GET /api/v1/status`.
///
/// # Errors
/// [`ShieldedClientError::NoPool`] if the chain has none.
pub fn policy(api: &NodeClient) -> Result<ShieldedPolicy, ShieldedClientError> {
    let (_, status) = api.get("/api/v1/status")?;
    serde_json::from_value(status["shielded"].clone()).map_err(|_| ShieldedClientError::NoPool)
}

/// The wallet of `seed` as the chain shows it now: every pool output
/// scanned, spent ones marked from the chain's key images.
///
/// # Errors
/// [`ShieldedClientError`] if the node can not be read or runs no pool.
pub fn restore(api: &NodeClient, seed: [u8; 32]) -> Result<ShieldedWallet, ShieldedClientError> {
    let mut wallet = ShieldedWallet::from_seed(seed, ring_policy(policy(api)?));
    wallet.scan(0, &crate::pool_outputs(api, 0)?);
    wallet.mark_spent(&crate::key_images(api)?);
    Ok(wallet)
}

fn rng() -> Result<rand_chacha::ChaCha20Rng, ShieldedClientError> {
    crate::random_seed()
        .map(rand_chacha::ChaCha20Rng::from_seed)
        .map_err(|e| ShieldedClientError::Randomness(e.to_string()))
}

/// Submits `tx` and waits until it is final.
///
/// # Errors
/// [`ShieldedClientError`] if it is refused or not final within `timeout`.
pub fn submit_final(
    api: &NodeClient,
    tx: &SignedTx,
    timeout: Duration,
) -> Result<(), ShieldedClientError> {
    let deadline = Instant::now() + timeout;
    let (code, reply) = api.post("/api/v1/txs", &submit_body(tx))?;
    if code != 202 && code != 409 {
        return Err(ShieldedClientError::Refused(crate::error_of(&reply)));
    }
    while Instant::now() < deadline {
        match api.tx_status(&tx.hash()) {
            Ok(TxStatus::Finalized { .. }) => return Ok(()),
            Ok(TxStatus::Rejected { reason }) => return Err(ShieldedClientError::Refused(reason)),
            // Not final yet, or the node could not say now (e.g. too busy):
            // the transaction was accepted, so ask again until the deadline.
            Ok(TxStatus::Pending | TxStatus::Unknown) | Err(ClientError::Status(_)) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ShieldedClientError::Timeout(timeout))
}

/// Moves `amount` of the transparent IOUs of `key`'s account into a new
/// output of the wallet of `seed`. The account and the amount are public;
/// the output's later spends are not linked to it.
///
/// # Errors
/// [`ShieldedClientError`] if the chain refuses it or it is not final in time.
pub fn shield(
    api: &NodeClient,
    key: &SigningKey,
    seed: [u8; 32],
    amount: Money,
    timeout: Duration,
) -> Result<(), ShieldedClientError> {
    let wallet = ShieldedWallet::from_seed(seed, ring_policy(policy(api)?));
    let (output, received) =
        quartier_shielded::output::create(&wallet.address(), amount.get(), &mut rng()?)
            .map_err(|e| ShieldedClientError::Refused(e.to_string()))?;
    let (_, status) = api.get("/api/v1/status")?;
    let chain_id = chain_id(&status)?;
    let n = nonce(api, &account(key))?;
    let tx = Tx {
        chain_id,
        signer: account(key),
        nonce: n,
        body: TxBody::Shield {
            amount,
            output,
            mask: *received.mask,
        },
    }
    .sign(key);
    submit_final(api, &tx, timeout)
}

fn chain_id(status: &serde_json::Value) -> Result<quartier_ledger::ChainId, ShieldedClientError> {
    crate::chain_id(status).ok_or(ClientError::Malformed.into())
}

/// Spends outputs of the wallet of `seed` to pay `amount` to the transparent
/// account `to`, from a one-time signer (change back to the wallet), on the
/// allowance of the household's `meter` in `region` (one a slot).
///
/// # Errors
/// [`ShieldedClientError`] if the wallet can not pay, the chain refuses it
/// or it is not final in time.
pub fn unshield(
    api: &NodeClient,
    (seed, meter): (&[u8; 32], &SigningKey),
    (region, to, amount): (RegionId, AccountId, Money),
    timeout: Duration,
) -> Result<(), ShieldedClientError> {
    let mut wallet = restore(api, *seed)?;
    let (_, status) = api.get("/api/v1/status")?;
    let chain_id = chain_id(&status)?;
    // The chain's slot now (its last block's), as the ledger reckons it.
    let now = status["time_ms"]
        .as_u64()
        .zip(status["slot_ms"].as_u64().filter(|ms| *ms > 0))
        .map(|(t, ms)| t / ms)
        .ok_or(ClientError::Malformed)?;
    let ring = crate::meter_rings(api, region)?.allowance;
    let mut rng = rng()?;
    let mut secret = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut rng, &mut secret);
    let signer = Tx::one_time_signer(&secret);
    let message =
        |t: &ShieldedTransfer| t.prefix_hash((chain_id, signer), KIND_UNSHIELD, amount, Some(to));
    let transfer = wallet.transfer(amount, None, message, (Slot(now), Side::Buy), &mut rng)?;
    let meter = MeterRing {
        scalar: meter.to_scalar().to_bytes(),
        key: account(meter).0,
        ring: &ring,
    };
    let allowance = meter.allowance(chain_id, (region, Slot(now)), message(&transfer), &mut rng)?;
    let unshield = TxBody::Unshield {
        transfer,
        to,
        amount,
        allowance,
    };
    let tx = Tx::one_time(chain_id, unshield, &secret);
    submit_final(api, &tx, timeout)
}
