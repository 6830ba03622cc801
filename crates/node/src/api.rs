//! The HTTP/JSON API under `/api/v1` (DESIGN §5).
//!
//! Bad requests get a 4xx status with `{"error": "..."}` naming the problem
//! and change nothing.

use crate::application::LedgerApp;
use crate::mempool::MempoolError;
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt as _;
use quartier_ledger::{MAX_TX_BYTES, SignedTx};
use quartier_types::api::{SubmitTx, Submitted};
use quartier_types::{AccountId, Energy, RegionId, Side, Slot};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// The OpenAPI 3.1 document of these routes (served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route: method and path template, as in the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/status"),
    ("post", "/api/v1/txs"),
    ("get", "/api/v1/txs/{hash}"),
    ("get", "/api/v1/accounts/{id}"),
    ("get", "/api/v1/blocks/{height}"),
    ("get", "/api/v1/sync"),
    ("get", "/api/v1/regions/{region}/slots/{slot}"),
    ("get", "/api/v1/regions/{region}/meters"),
    ("get", "/api/v1/regions/{region}/settlements"),
    ("get", "/api/v1/sealed"),
    ("get", "/api/v1/governance"),
    ("get", "/api/v1/epochs"),
    ("get", "/api/v1/regions/{region}/reports"),
    ("get", "/api/v1/regions/{region}/reports/{slot}"),
    ("get", "/api/v1/regions/{region}/batches/{slot}"),
    ("get", "/api/v1/regions/{region}/batches/{slot}/proof"),
    ("get", "/api/v1/genesis"),
    ("get", "/api/v1/sealed/registry/proof"),
    ("get", "/api/v1/sealed/epochs/proof"),
    ("get", "/api/v1/pool/outputs"),
    ("get", "/api/v1/pool/key_images"),
    ("get", "/api/v1/regions/{region}/rings"),
    ("get", "/api/v1/audit"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/"),
    ("get", "/app.js"),
    ("get", "/style.css"),
    ("get", "/metrics"),
    ("get", "/api/v1/stream"),
];

/// Sends a transaction's bytes to the other validators.
pub type Gossip = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

/// Renders the consensus runtime's own metrics (Prometheus text: p2p
/// bandwidth, consensus and storage counters), appended to `/metrics`.
pub type RuntimeMetrics = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct Api {
    app: LedgerApp,
    gossip: Gossip,
    guard: crate::api_guard::Guard,
    runtime: Option<RuntimeMetrics>,
    audit_report: Option<Arc<std::path::PathBuf>>,
    sync_dir: Option<Arc<std::path::PathBuf>>,
    /// The snapshot height whose bundle was too large to serve (not built
    /// again for each request).
    too_large: Arc<std::sync::Mutex<Option<u64>>>,
}

/// What a validator's API serves beside the chain.
#[derive(Clone, Default)]
pub struct Extras {
    /// The consensus runtime's metrics, appended to `/metrics`.
    pub runtime: Option<RuntimeMetrics>,
    /// An auditor's latest report (JSON), served at `/api/v1/audit` for the
    /// dashboard; a devnet's host writes it from its simulated households'
    /// ground truth. `None`: the route answers 404.
    pub audit_report: Option<std::path::PathBuf>,
    /// What clients may hold of the API.
    pub limits: crate::api_guard::ApiLimits,
    /// Where the node keeps its state sync bundle: built once per
    /// snapshot, written here and streamed from the file to every client.
    /// `None`: built for each request, one at a time.
    pub sync_dir: Option<std::path::PathBuf>,
}

/// A JSON error with its status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad(reason: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, reason.to_string())
}

/// The API's routes for `app`; accepted transactions are passed to `gossip`.
pub fn router(app: LedgerApp, gossip: Gossip) -> Router {
    router_with(app, gossip, Extras::default())
}

/// As [`router`], serving `extras` too.
pub fn router_with(app: LedgerApp, gossip: Gossip, extras: Extras) -> Router {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/metrics", get(metrics))
        .route("/api/v1/stream", get(stream))
        .route(
            "/api/v1/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        )
        .route("/api/v1/txs", post(submit))
        .route("/api/v1/txs/{hash}", get(tx_status))
        .route("/api/v1/accounts/{id}", get(account))
        .route("/api/v1/blocks/{height}", get(block))
        .route("/api/v1/sync", get(sync_bundle))
        .route("/api/v1/regions/{region}/slots/{slot}", get(slot))
        .route("/api/v1/regions/{region}/meters", get(meters))
        .route("/api/v1/regions/{region}/settlements", get(settlements))
        .route("/api/v1/sealed", get(sealed))
        .route("/api/v1/governance", get(governance))
        .route("/api/v1/epochs", get(epoch_changes))
        .route("/api/v1/regions/{region}/reports", get(reports))
        .route("/api/v1/regions/{region}/reports/{slot}", get(report))
        .route("/api/v1/regions/{region}/batches/{slot}", get(batch))
        .route(
            "/api/v1/regions/{region}/batches/{slot}/proof",
            get(batch_proof),
        )
        .route("/api/v1/genesis", get(genesis))
        .route("/api/v1/sealed/registry/proof", get(registry_proof))
        .route("/api/v1/sealed/epochs/proof", get(epochs_proof))
        .route("/api/v1/pool/outputs", get(pool_outputs))
        .route("/api/v1/pool/key_images", get(key_images))
        .route("/api/v1/regions/{region}/rings", get(rings))
        .route("/api/v1/audit", get(audit_report))
        .route(
            "/",
            get(|| async { web("text/html; charset=utf-8", DASHBOARD_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { web("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { web("text/css; charset=utf-8", DASHBOARD_CSS) }),
        )
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        // A hex-encoded transaction plus JSON framing.
        .layer(DefaultBodyLimit::max(4 * MAX_TX_BYTES))
        .with_state(Api {
            app,
            gossip,
            guard: crate::api_guard::Guard::new(extras.limits),
            runtime: extras.runtime,
            audit_report: extras.audit_report.map(Arc::new),
            sync_dir: extras.sync_dir.map(Arc::new),
            too_large: Arc::default(),
        })
}

async fn status(AxumState(api): AxumState<Api>) -> Json<serde_json::Value> {
    let view = api.app.view();
    let (chain_id, time_ms, clock, regions, validators, shielded, privacy) =
        api.app.with_state(|s| {
            let g = s.genesis();
            (
                s.chain_id().0.to_string(),
                s.meta().time.0,
                (g.slot_ms, g.gate_ms, g.lead_slots),
                g.regions
                    .iter()
                    .map(|(r, _)| json!({ "region": r, "params": s.region(*r) }))
                    .collect::<Vec<_>>(),
                s.validators()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                g.shielded,
                // The genesis allows one privacy mode at most (it refuses both).
                if g.shielded.is_some() {
                    "shielded"
                } else if g.sealed_market.is_some() {
                    "enclave"
                } else {
                    "transparent"
                },
            )
        });
    Json(json!({
        "chain_id": chain_id,
        "height": view.height,
        "time_ms": time_ms,
        "slot_ms": clock.0,
        "gate_ms": clock.1,
        "lead_slots": clock.2,
        "regions": regions,
        "block": hex::encode(view.block.as_ref()),
        "root": view.root.to_string(),
        "mempool": view.mempool,
        "validators": validators,
        "shielded": shielded,
        "privacy": privacy,
        "audit": api.audit_report.is_some(),
    }))
}

/// The transaction a `POST /api/v1/txs` body carries, before any check of
/// its signature or of the ledger: what the handler does with the body's
/// bytes once axum has parsed the JSON (the `api_submit` fuzz target runs
/// it on arbitrary bytes).
///
/// # Errors
/// A plain reason (the answer's 400 text) if the hex or the transaction's
/// encoding is malformed.
pub fn submitted_tx(body: &SubmitTx) -> Result<(Vec<u8>, SignedTx), String> {
    let bytes = hex::decode(body.tx.trim()).map_err(|e| format!("tx: {e}"))?;
    let tx = SignedTx::decode(&bytes).map_err(|e| format!("tx: {e}"))?;
    Ok((bytes, tx))
}

async fn submit(
    AxumState(api): AxumState<Api>,
    client: Option<axum::Extension<crate::api_guard::ClientIp>>,
    body: Result<Json<SubmitTx>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Submitted>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let (bytes, tx) = submitted_tx(&body).map_err(bad)?;
    // The address's quota before any verification.
    let kind = if tx.tx.body.is_one_time() {
        crate::api_guard::WriteKind::OneTime
    } else {
        crate::api_guard::WriteKind::Account
    };
    if !api.guard.allow_write(client.map(|c| c.0.0), kind) {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many transactions from this address: ask again later".into(),
        ));
    }
    let hash = api.app.submit(tx).map_err(|e| match e {
        MempoolError::Duplicate => ApiError(StatusCode::CONFLICT, e.to_string()),
        // Not this tx: another carrying its key image. A client that reads
        // 409 as "already have it" must not take this for that.
        MempoolError::KeyImagePending | MempoolError::NonceTaken(_) => {
            ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        MempoolError::Full
        | MempoolError::AccountFull
        | MempoolError::GapsFull
        | MempoolError::NewcomersFull => ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        _ => bad(e),
    })?;
    (api.gossip)(bytes);
    Ok((
        StatusCode::ACCEPTED,
        Json(Submitted {
            hash: hash.to_string(),
        }),
    ))
}

async fn account(
    AxumState(api): AxumState<Api>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id: AccountId = id.parse().map_err(|e| bad(format!("account: {e}")))?;
    // One lock: the account, the proof, the root and the height agree.
    let (account, proof, root, height) = api.app.with_state(|s| {
        (
            s.account(&id),
            s.prove(quartier_ledger::StateKey::Account(id)),
            s.root(),
            s.meta().height.0,
        )
    });
    let proof = proof.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let proof_bytes = borsh::to_vec(&proof.proof)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({
        "account": id,
        "balance": account.balance,
        "nonce": account.nonce,
        "height": height,
        "root": root.to_string(),
        // Proof that `value` (borsh of the account record; null for a
        // never-seen account) is under StateKey::Account(id) in `root`.
        "value": proof.value.as_ref().map(hex::encode),
        "proof": hex::encode(proof_bytes),
    })))
}

async fn slot(
    AxumState(api): AxumState<Api>,
    Path((region, slot)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (region, slot) = region_and_slot(&region, &slot)?;
    let body = api.app.with_state(|s| {
        let g = s.genesis();
        let forgotten = g.history_slots > 0
            && slot.0.saturating_add(g.history_slots) < g.slot_at(s.meta().time).0
            && s.settlement(region, slot).is_none();
        (!forgotten).then(|| {
            json!({
                "region": region,
                "slot": slot,
                "book": s.book(region, slot),
                "settlement": s.settlement(region, slot),
                // Mode B: how many sealed orders the open slot holds (their
                // contents only the enclaves read).
                "sealed_orders": s.sealed_book(region, slot).map(<[_]>::len),
            })
        })
    });
    let body = body.ok_or_else(|| {
        ApiError(
            StatusCode::GONE,
            format!("slot {} is older than the chain's history window; archive nodes' blocks hold its orders", slot.0),
        )
    })?;
    Ok(Json(body))
}

/// The dashboard (DESIGN §10): static files embedded in the binary.
const DASHBOARD_HTML: &str = include_str!("../../../web/index.html");
const DASHBOARD_JS: &str = include_str!("../../../web/app.js");
const DASHBOARD_CSS: &str = include_str!("../../../web/style.css");

fn web(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// The region and slot of a path.
fn region_and_slot(region: &str, slot: &str) -> Result<(RegionId, Slot), ApiError> {
    let region = RegionId(region.parse().map_err(|_| bad("region: not a number"))?);
    let slot = Slot(slot.parse().map_err(|_| bad("slot: not a number"))?);
    Ok((region, slot))
}

/// `?last=N` of the settlements route.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Last {
    last: Option<usize>,
}

/// The region of a path and the `last` of its query (default 96, 1 to 2 976).
fn region_and_last(
    region: &str,
    query: Result<axum::extract::Query<Last>, axum::extract::rejection::QueryRejection>,
) -> Result<(RegionId, usize), ApiError> {
    let region = RegionId(region.parse().map_err(|_| bad("region: not a number"))?);
    let axum::extract::Query(Last { last }) = query.map_err(|e| bad(e.body_text()))?;
    let last = last.unwrap_or(96);
    if last == 0 || last > 2_976 {
        return Err(bad("last: 1 to 2976"));
    }
    Ok((region, last))
}

/// `GET /api/v1/regions/{region}/settlements?last=N`: a summary of the
/// region's last `N` settlements (default 96, at most 2 976), oldest first.
async fn settlements(
    AxumState(api): AxumState<Api>,
    Path(region): Path<String>,
    query: Result<axum::extract::Query<Last>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (region, last) = region_and_last(&region, query)?;
    let list = api.app.with_state(|s| {
        let mut list: Vec<serde_json::Value> = s
            .region_settlements(region)
            .rev()
            .take(last)
            .map(summary)
            .collect();
        list.reverse();
        list
    });
    Ok(Json(json!({ "region": region, "settlements": list })))
}

/// Privacy mode B's public state: policy, enclaves, committee, epoch keys and
/// the closed batches awaiting a report (what enclaves clear).
/// Governance: the validator set (governance's, and the set signing each
/// consensus epoch), the role keys (frozen or not, since which block), the roles' limits and what counts against them, the
/// allowed measurements and every open proposal with its votes.
async fn governance(AxumState(api): AxumState<Api>) -> Json<serde_json::Value> {
    use quartier_ledger::Authority;
    Json(api.app.with_state(|s| {
        // Tallies count the current validators only, as the ledger's
        // decision does; at most the 256 oldest open proposals (they lapse
        // after a day; `open` says how many there are).
        let validators = s.validators();
        let proposals: Vec<serde_json::Value> = s
            .proposals()
            .take(256)
            .map(|(id, p)| {
                json!({
                    "id": id,
                    "change": p.change,
                    "opened": p.opened,
                    "yes": p.yes,
                    "no": p.no,
                    "yes_count": p.yes.intersection(validators).count(),
                    "no_count": p.no.intersection(validators).count(),
                })
            })
            .collect();
        // Consensus epochs: the set of each change (and the height it
        // signs from), and where the next boundary is.
        let blocks = s.epoch_blocks();
        let epoch = s.consensus_epoch_of(quartier_types::Height(s.meta().height.0 + 1));
        let sets: Vec<serde_json::Value> = s
            .validator_sets()
            .iter()
            .map(|v| {
                json!({
                    "from_epoch": v.from_epoch,
                    "from_height": v.from_epoch.saturating_mul(blocks),
                    "validators": v.validators,
                })
            })
            .collect();
        json!({
            "height": s.meta().height,
            "validators": s.validators(),
            "consensus": {
                "epoch_blocks": blocks,
                "epoch": epoch,
                "signing": s.validator_set(epoch),
                "next_boundary": (blocks > 0).then(|| (epoch + 1) * blocks),
                "joining": s.joining(),
                "validator_sets": sets,
            },
            "authorities": {
                "dso": s.authority_key(Authority::Dso),
                "utility": s.authority_key(Authority::Utility),
            },
            "issuance": s.issuance(),
            "measurements": s.measurements(),
            "next_proposal": s.meta().next_proposal,
            "open": s.proposals().count(),
            "proposals": proposals,
        })
    }))
}

async fn sealed(AxumState(api): AxumState<Api>) -> Json<serde_json::Value> {
    Json(api.app.with_state(|s| {
        let batches: Vec<serde_json::Value> = s
            .sealed_batches()
            .map(|((region, slot), b)| {
                json!({ "region": region, "slot": slot, "orders": b.orders.len(), "closed": b.closed })
            })
            .collect();
        let enclaves: Vec<serde_json::Value> = s
            .enclaves()
            .iter()
            .map(|(account, e)| json!({ "account": account, "enclave": e }))
            .collect();
        let epochs: Vec<serde_json::Value> = s
            .epoch_keys()
            .iter()
            .map(|(epoch, key)| json!({ "epoch": epoch, "public_key": quartier_types::hex::encode(key) }))
            .collect();
        json!({
            "height": s.meta().height,
            "time": s.meta().time,
            "custody": s.meta().custody,
            "validator_sets": s.validator_sets().len(),
            "policy": s.genesis().sealed_market,
            "measurements": s.measurements(),
            "enclaves": enclaves,
            "committee": s.committee(),
            "committee_candidates": s.committee_candidates().values().collect::<Vec<_>>(),
            "epochs": epochs,
            "batches": batches,
        })
    }))
}

/// A closed batch awaiting its report: the sealed orders, the frozen
/// parameters, deposits and withdrawal requests (what enclaves clear).
async fn batch(
    AxumState(api): AxumState<Api>,
    Path((region, slot)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (region, slot) = region_and_slot(&region, &slot)?;
    api.app
        .with_state(|s| {
            s.sealed_batches()
                .find(|(k, _)| *k == (region, slot))
                .map(|(_, b)| serde_json::to_value(b).unwrap_or_default())
        })
        .map(|b| Json(json!({ "region": region, "slot": slot, "batch": b })))
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "no batch awaits a report there".into(),
            )
        })
}

/// A closed batch as a light client takes it (a mode B enclave): the
/// finalized block at this node's tip, its finalization certificate, and
/// the Merkle proof of the batch record under the block's state root.
async fn batch_proof(
    AxumState(api): AxumState<Api>,
    Path((region, slot)): Path<(String, String)>,
    client: Option<axum::Extension<crate::api_guard::ClientIp>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (region, slot) = region_and_slot(&region, &slot)?;
    let _building = proof_place(&api, client.map(|c| c.0.0))?;
    let internal = |e: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e);
    let state = api.app.finalized_state();
    let height = state.meta().height.0;
    let proof = state
        .prove(quartier_ledger::StateKey::SealedBatch(region, slot))
        .map_err(|e| internal(e.to_string()))?;
    if proof.value.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "no batch awaits a report there".into(),
        ));
    }
    let (block, finalization) = finalized_tip(&api, &state, height).await?;
    let proof = borsh::to_vec(&proof).map_err(|e| internal(e.to_string()))?;
    let genesis = state
        .prove(quartier_ledger::StateKey::Genesis)
        .map_err(|e| internal(e.to_string()))
        .and_then(|p| borsh::to_vec(&p).map_err(|e| internal(e.to_string())))?;
    Ok(Json(json!({
        "region": region,
        "slot": slot,
        "height": height,
        "block": block,
        "finalization": finalization,
        "proof": hex::encode(proof),
        "genesis": hex::encode(genesis),
    })))
}

/// Which registrations a registry proof carries.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryQuery {
    /// Comma-separated accounts (hex), at most
    /// [`quartier_ledger::MAX_COMMITTEE`]: the committee the caller's host
    /// would invite.
    accounts: String,
}

/// Mode B's registry as a light client (an enclave) takes it: the finalized
/// block at this node's tip, its finalization certificate, and proofs under
/// its state root of the genesis document, the allowed measurements, the
/// committee record (or its absence) and the registration (or its absence)
/// of each account asked for.
async fn registry_proof(
    AxumState(api): AxumState<Api>,
    client: Option<axum::Extension<crate::api_guard::ClientIp>>,
    query: Result<axum::extract::Query<RegistryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use quartier_ledger::StateKey;
    let axum::extract::Query(RegistryQuery { accounts }) = query.map_err(|e| bad(e.body_text()))?;
    let accounts = accounts
        .split(',')
        .map(|a| {
            a.parse::<AccountId>()
                .map_err(|e| bad(format!("accounts: {e}")))
        })
        .collect::<Result<std::collections::BTreeSet<_>, _>>()?;
    if accounts.len() > quartier_ledger::MAX_COMMITTEE {
        return Err(bad(format!(
            "accounts: at most {}",
            quartier_ledger::MAX_COMMITTEE
        )));
    }
    let _building = proof_place(&api, client.map(|c| c.0.0))?;
    let keys = [
        StateKey::Genesis,
        StateKey::Measurements,
        StateKey::Committee,
    ]
    .into_iter()
    .chain(accounts.into_iter().map(StateKey::Enclave));
    tip_records(&api, keys).await
}

/// Mode B's published epoch keys as a light client (a committee member)
/// takes them: the finalized block at this node's tip, its certificate, and
/// proofs under its state root of the genesis document and the epochs
/// record.
async fn epochs_proof(
    AxumState(api): AxumState<Api>,
    client: Option<axum::Extension<crate::api_guard::ClientIp>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use quartier_ledger::StateKey;
    let _building = proof_place(&api, client.map(|c| c.0.0))?;
    tip_records(&api, [StateKey::Genesis, StateKey::Epochs]).await
}

/// The finalized block at this node's tip, its certificate, and the borsh
/// proofs (hex) of `keys` under its state root.
async fn tip_records(
    api: &Api,
    keys: impl IntoIterator<Item = quartier_ledger::StateKey>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let internal = |e: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e);
    let state = api.app.finalized_state();
    let height = state.meta().height.0;
    let (block, finalization) = finalized_tip(api, &state, height).await?;
    let proofs = keys
        .into_iter()
        .map(|k| {
            let proof = state.prove(k).map_err(|e| internal(e.to_string()))?;
            borsh::to_vec(&proof)
                .map(hex::encode)
                .map_err(|e| internal(e.to_string()))
        })
        .collect::<Result<Vec<String>, ApiError>>()?;
    Ok(Json(json!({
        "height": height,
        "block": block,
        "finalization": finalization,
        "proofs": proofs,
    })))
}

/// A light-client proof builder's place for `ip`, or `503`.
fn proof_place(
    api: &Api,
    ip: Option<std::net::IpAddr>,
) -> Result<crate::api_guard::Place, ApiError> {
    api.guard.proof(ip).ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "proofs are being built for others: retry".into(),
        )
    })
}

/// The finalized block at `height` (the tip `state` is after) and its
/// certificate, both hex; `503` while either is not at hand.
async fn finalized_tip(
    api: &Api,
    state: &quartier_ledger::State,
    height: u64,
) -> Result<(String, String), ApiError> {
    let retry = |why: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, why);
    let block = api
        .app
        .finalized_block(height)
        .filter(|b| b.state_root() == state.root())
        .ok_or_else(|| retry(format!("block {height} is not readable here; retry")))?;
    let finalization = api.app.finalization(height).await.ok_or_else(|| {
        retry(format!(
            "no finalization certificate for block {height} yet; retry"
        ))
    })?;
    Ok((
        hex::encode(commonware_codec::Encode::encode(&block)),
        hex::encode(finalization),
    ))
}

/// The chain's genesis document (its hash is the chain id).
async fn genesis(AxumState(api): AxumState<Api>) -> Json<serde_json::Value> {
    let genesis = api.app.with_state(|s| s.genesis().clone());
    Json(serde_json::to_value(genesis).unwrap_or_default())
}

/// A page's size for the pool's paged lists: 1 024 unless asked, at most 4 096.
fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(1_024) {
        0 | 4_097.. => Err(bad("limit: 1 to 4096")),
        n => Ok(n),
    }
}

/// Which pool outputs a light client asks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputRange {
    from: Option<u64>,
    limit: Option<usize>,
}

/// Mode A: pool outputs from index `from` (at most `limit`, ≤ 4 096), for
/// light clients to scan with their view key locally — the node never
/// learns which are theirs.
async fn pool_outputs(
    AxumState(api): AxumState<Api>,
    query: Result<axum::extract::Query<OutputRange>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(OutputRange { from, limit }) =
        query.map_err(|e| bad(e.body_text()))?;
    let from = from.unwrap_or(0);
    let limit = page_limit(limit)?;
    Ok(Json(api.app.with_state(|s| {
        let pool = s.pool();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(pool.len());
        let outputs: Vec<serde_json::Value> = pool[start..]
            .iter()
            .take(limit)
            .zip(from..)
            .map(|(o, index)| {
                json!({
                    "index": index,
                    "height": o.height,
                    "slot": o.slot,
                    "public_amount": o.public_amount,
                    "settles": o.settles,
                    "output": o.output,
                })
            })
            .collect();
        json!({ "total": pool.len(), "outputs": outputs })
    })))
}

/// Which key images a light client asks for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageRange {
    after: Option<String>,
    limit: Option<usize>,
}

/// Mode A: spent key images after `after`, ascending (at most `limit`, ≤ 4 096).
async fn key_images(
    AxumState(api): AxumState<Api>,
    query: Result<axum::extract::Query<ImageRange>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(ImageRange { after, limit }) =
        query.map_err(|e| bad(e.body_text()))?;
    let after = after
        .map(|h| {
            hex::decode(&h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| bad("after: 64 hex digits"))
        })
        .transpose()?;
    let limit = page_limit(limit)?;
    Ok(Json(api.app.with_state(|s| {
        let mut images = s.key_images_after(after).map(hex::encode);
        let page: Vec<String> = images.by_ref().take(limit).collect();
        json!({ "key_images": page, "more": images.next().is_some() })
    })))
}

/// The largest audit report served (a devnet's is a few KB).
const AUDIT_REPORT_MAX_BYTES: u64 = 1 << 20;

/// Reads `path` whole if it is at most `max` bytes (an `InvalidData` error
/// otherwise), without reading more than that.
async fn read_capped(path: &std::path::Path, max: u64) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await?;
    let mut text = Vec::new();
    file.take(max + 1).read_to_end(&mut text).await?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(text)
}

/// The latest audit report, as its auditor wrote it (see [`Extras`]); 204
/// while none is written yet.
async fn audit_report(AxumState(api): AxumState<Api>) -> Result<Response, ApiError> {
    let Some(path) = api.audit_report else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this node serves no audit report".into(),
        ));
    };
    let text = match read_capped(path.as_path(), AUDIT_REPORT_MAX_BYTES).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Err(e) => {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("reading the audit report: {e}"),
            ));
        }
    };
    // Its writer replaces the file atomically; anything but JSON is refused.
    serde_json::from_slice::<serde_json::Value>(&text)
        .map(|v| Json(v).into_response())
        .map_err(|e| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the audit report is not JSON: {e}"),
            )
        })
}

/// Mode A: the meter rings of a region's shielded orders.
async fn rings(
    AxumState(api): AxumState<Api>,
    Path(region): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let region = RegionId(region.parse().map_err(|_| bad("region: not a number"))?);
    Ok(Json(api.app.with_state(|s| {
        let ring = |side| quartier_ledger::meter_ring(s, region, side, Energy::ZERO);
        let buy: Vec<AccountId> = ring(Side::Buy).into_iter().map(|(a, _)| a).collect();
        let sell: Vec<serde_json::Value> = ring(Side::Sell)
            .iter()
            .map(|(a, m)| json!({ "meter": a, "energy_per_slot": s.capacity_per_slot(m).get() }))
            .collect();
        let allowance: Vec<AccountId> = quartier_ledger::allowance_ring(s, region)
            .unwrap_or_default()
            .into_iter()
            .map(AccountId)
            .collect();
        json!({
            "region": region,
            "height": s.meta().height.0,
            "buy": buy,
            "sell": sell,
            "allowance": allowance,
        })
    })))
}

/// The region's last accepted mode B reports, oldest first.
async fn reports(
    AxumState(api): AxumState<Api>,
    Path(region): Path<String>,
    query: Result<axum::extract::Query<Last>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (region, last) = region_and_last(&region, query)?;
    let list = api.app.with_state(|s| {
        let mut list: Vec<serde_json::Value> = s
            .region_reports(region)
            .rev()
            .take(last)
            .map(|r| {
                // The list stays small: each report's batch details (its
                // submitters and custody flows) are at its own route.
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.remove("submissions");
                    o.remove("flows");
                }
                v
            })
            .collect();
        list.reverse();
        list
    });
    Ok(Json(json!({ "region": region, "reports": list })))
}

/// `GET /api/v1/regions/{region}/reports/{slot}`: one accepted mode B
/// report whole, with its batch's submitting meters, sizes and custody
/// flows.
async fn report(
    AxumState(api): AxumState<Api>,
    Path((region, slot)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (region, slot) = region_and_slot(&region, &slot)?;
    api.app
        .with_state(|s| s.sealed_report(region, slot).map(serde_json::to_value))
        .and_then(Result::ok)
        .map(|r| Json(json!({ "region": region, "slot": slot, "report": r })))
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no report for that slot".into()))
}

/// One settlement in a few numbers: volumes and the spread of trade prices.
fn summary(s: &quartier_ledger::Settlement) -> serde_json::Value {
    let t = &s.clearing.totals;
    let prices = s.clearing.trades.iter().map(|t| t.price.get());
    json!({
        "slot": s.slot,
        "height": s.height,
        "orders": s.orders.len(),
        "trades": s.clearing.trades.len(),
        "local_energy": t.local_energy,
        "grid_import": t.grid_import,
        "grid_export": t.grid_export,
        "buyers_pay": t.buyers_pay,
        "price_min": prices.clone().min(),
        "price_max": prices.max(),
        "price_mean": s.clearing.mean_price(),
    })
}

/// `GET /api/v1/regions/{region}/meters`: the DSO's public registry of the
/// region at the finalized height.
async fn meters(
    AxumState(api): AxumState<Api>,
    Path(region): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let region = RegionId(region.parse().map_err(|_| bad("region: not a number"))?);
    let body = api.app.with_state(|s| {
        let meters: Vec<serde_json::Value> = s
            .meters()
            .filter(|(_, m)| m.region == region)
            .map(|(id, m)| {
                json!({
                    "meter": id,
                    "role": m.role,
                    "pv_watts": m.pv_watts,
                    "retired": m.retired,
                })
            })
            .collect();
        json!({ "region": region, "height": s.meta().height.0, "meters": meters })
    });
    Ok(Json(body))
}

/// The evidence of every validator-set change (what a light client, e.g.
/// a mode B enclave, learns the sets of later epochs from), oldest first.
async fn epoch_changes(AxumState(api): AxumState<Api>) -> Result<Response, ApiError> {
    let changes = api
        .app
        .complete_epoch_changes()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(json!({ "changes": changes.as_slice() })).into_response())
}

/// A state sync bundle (`quartier node --sync-from`): 503 until this node has
/// a snapshot with a finalization certificate near it.
async fn sync_bundle(
    AxumState(api): AxumState<Api>,
    client: Option<axum::Extension<crate::api_guard::ClientIp>>,
) -> Result<Response, ApiError> {
    let unavailable = |why: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, why);
    let Some(dir) = api.sync_dir.clone() else {
        return built_sync_bundle(&api).await;
    };
    let Some(place) = api.guard.sync_stream(client.map(|c| c.0.0)) else {
        return Err(unavailable(
            "too many sync bundles being sent: try again later".into(),
        ));
    };
    let height = api
        .app
        .latest_snapshot_height()
        .ok_or_else(|| unavailable("no snapshot yet".into()))?;
    // The file system is used directly (a local disk, reads of 64 KiB):
    // the API runs on threads of its own, and in tests on a runtime that is
    // not tokio's.
    let too_large = *api
        .too_large
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if too_large == Some(height) {
        return Err(unavailable(
            "this node's sync bundle is larger than a node takes".into(),
        ));
    }
    let mut path = dir.join(bundle_name(&api.app, height));
    if std::fs::metadata(&path).is_err() {
        path = store_sync_bundle(&api, &dir).await?;
    }
    // Opened, it stays readable even if a newer bundle replaces it.
    let file = std::fs::File::open(&path)
        .map_err(|e| unavailable(format!("the stored bundle: {e}; try again")))?;
    let length = file
        .metadata()
        .map_err(|e| unavailable(e.to_string()))?
        .len();
    // Read and sent 64 KiB at a time; the place goes with the body.
    let body = futures::stream::unfold((file, place), |(mut file, place)| async move {
        use std::io::Read as _;
        let mut chunk = vec![0u8; 64 * 1024];
        match file.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(bytes::Bytes::from(chunk)), (file, place)))
            }
            Err(e) => Some((Err(e), (file, place))),
        }
    });
    Ok(json_body(length, axum::body::Body::from_stream(body)))
}

/// Builds the sync bundle of the latest snapshot and writes it to `dir`
/// (replacing any older one); its path. One is built at a time: a request
/// meanwhile gets 503.
async fn store_sync_bundle(
    api: &Api,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, ApiError> {
    let unavailable = |why: String| ApiError(StatusCode::SERVICE_UNAVAILABLE, why);
    let Some(_building) = api.guard.sync() else {
        return Err(unavailable(
            "the sync bundle is being built: try again later".into(),
        ));
    };
    let bundle = api
        .app
        .sync_bundle()
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let snapshot_height = bundle.snapshot_height;
    let path = dir.join(bundle_name(&api.app, snapshot_height));
    if std::fs::metadata(&path).is_ok() {
        // Built while this request waited for the snapshot.
        return Ok(path);
    }
    let bytes = serde_json::to_vec(&bundle)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    drop(bundle);
    if bytes.len() > crate::sync::MAX_SYNC_RESPONSE_BYTES {
        *api.too_large
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(snapshot_height);
        return Err(unavailable(format!(
            "the sync bundle is {} bytes, more than a node takes",
            bytes.len()
        )));
    }
    let written = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("sync.json.tmp");
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            // On disk before it has its name: a crash never leaves a
            // partial bundle to be served.
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // Older bundles go (one being sent stays readable until it is).
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("sync-") && name.ends_with(".json") && entry.path() != path {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    })();
    written.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(path)
}

/// The stored bundle's file name: the format, the chain and the snapshot
/// height (a bundle left by another chain or format is never served).
fn bundle_name(app: &LedgerApp, height: u64) -> String {
    let chain = app.with_state(|s| s.chain_id());
    let chain = hex::encode(chain.0.0);
    format!("sync-v{SYNC_BUNDLE_FORMAT}-{}-{height}.json", &chain[..16])
}

/// The format of [`crate::sync::SyncBundle`] files this node writes and
/// serves: a change of the bundle's or the snapshot's encoding moves it on.
const SYNC_BUNDLE_FORMAT: u32 = 5;

/// The sync bundle built for this request alone (a node without a data
/// directory), one at a time: the place is held by the body until its last
/// byte has gone (a client that asks and never reads holds it until the
/// connection's lifetime ends).
async fn built_sync_bundle(api: &Api) -> Result<Response, ApiError> {
    let Some(building) = api.guard.sync() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "a sync bundle is being built for another client: try again later".into(),
        ));
    };
    let bundle = api
        .app
        .sync_bundle()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let bytes = serde_json::to_vec(&bundle)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    drop(bundle);
    let length = bytes.len() as u64;
    let mut place = Some(building);
    let body =
        futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))])
            .chain(futures::stream::poll_fn(move |_| {
                // The body's end: the place goes with it.
                drop(place.take());
                std::task::Poll::Ready(None)
            }));
    Ok(json_body(length, axum::body::Body::from_stream(body)))
}

/// A JSON response of `length` bytes: the length up front, so a client
/// reads exactly the body, without chunked framing.
fn json_body(length: u64, body: axum::body::Body) -> Response {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/json".to_owned(),
            ),
            (axum::http::header::CONTENT_LENGTH, length.to_string()),
        ],
        body,
    )
        .into_response()
}

/// How much of a block's transactions to show.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockDetail {
    full: Option<bool>,
}

async fn block(
    AxumState(api): AxumState<Api>,
    Path(height): Path<String>,
    query: Result<axum::extract::Query<BlockDetail>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let axum::extract::Query(BlockDetail { full }) = query.map_err(|e| bad(e.body_text()))?;
    let height: u64 = height.parse().map_err(|_| bad("height: not a number"))?;
    let first_kept = api.app.first_kept_height();
    if (1..first_kept).contains(&height) {
        return Err(ApiError(
            StatusCode::GONE,
            format!("block {height} is pruned: this node keeps blocks from {first_kept}"),
        ));
    }
    let block = api.app.finalized_block(height).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no finalized block at {height}"),
        )
    })?;
    Ok(Json(json!({
        "height": height,
        "digest": hex::encode(commonware_cryptography::Digestible::digest(&block).as_ref()),
        "parent": hex::encode(block.parent().as_ref()),
        "time_ms": block.time_ms(),
        "root": block.state_root().to_string(),
        "txs": block
            .txs()
            .iter()
            .map(|t| match full {
                Some(true) => json!({
                    "hash": t.hash().to_string(),
                    "signer": t.tx.signer,
                    "nonce": t.tx.nonce,
                    "tx": hex::encode(t.encode()),
                }),
                _ => json!(t.hash().to_string()),
            })
            .collect::<Vec<_>>(),
    })))
}

/// Prometheus text exposition (version 0.0.4).
async fn metrics(AxumState(api): AxumState<Api>) -> impl IntoResponse {
    let m = api.app.metrics();
    let series: [(&str, &str, &str, String); 8] = [
        (
            "quartier_height",
            "gauge",
            "Finalized height.",
            m.height.to_string(),
        ),
        (
            "quartier_last_block_time_seconds",
            "gauge",
            "Time of the last finalized block.",
            format!("{:.3}", m.last_block_time_ms as f64 / 1000.0),
        ),
        (
            "quartier_finalized_txs_total",
            "counter",
            "Transactions finalized since the node started.",
            m.finalized_txs.to_string(),
        ),
        (
            "quartier_rejected_txs_total",
            "counter",
            "Transactions dropped because the ledger refused them in a block built here.",
            m.rejected_txs.to_string(),
        ),
        (
            "quartier_replayed_blocks_at_start",
            "gauge",
            "Blocks re-executed at start (those after the latest state snapshot).",
            m.replayed_blocks.to_string(),
        ),
        (
            "quartier_mempool_txs",
            "gauge",
            "Pending transactions.",
            m.mempool.to_string(),
        ),
        (
            "quartier_escrow_micro_rappen",
            "gauge",
            "IOUs locked in open books.",
            m.escrow.to_string(),
        ),
        (
            "quartier_open_books",
            "gauge",
            "Order books not yet settled.",
            m.open_books.to_string(),
        ),
    ];
    let mut text = String::new();
    for (name, kind, help, value) in series {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    }
    if let Some(runtime) = &api.runtime {
        text.push_str(&runtime());
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
}

/// `GET /api/v1/stream`: a websocket of [`crate::StreamEvent`]s as JSON text
/// messages. A client too slow to keep up gets `{"type":"lagged","missed":n}`.
async fn stream(
    AxumState(api): AxumState<Api>,
    client: Option<axum::Extension<crate::api_guard::ClientIp>>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let Some(place) = api.guard.websocket(client.map(|c| c.0.0)) else {
        return ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many streams open: try again later".into(),
        )
        .into_response();
    };
    let mut events = api.app.subscribe();
    upgrade.on_upgrade(move |mut socket| async move {
        let _place = place;
        use axum::extract::ws::Message;
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let text = match events.recv().await {
                Ok(event) => serde_json::to_string(&event).unwrap_or_default(),
                Err(RecvError::Lagged(missed)) => {
                    json!({ "type": "lagged", "missed": missed }).to_string()
                }
                Err(RecvError::Closed) => break,
            };
            if socket.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    })
}

async fn tx_status(
    AxumState(api): AxumState<Api>,
    Path(hash): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bytes: [u8; 32] = hex::decode(&hash)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("hash: 64 hex digits"))?;
    let status = api.app.tx_status(&quartier_types::hash::Digest(bytes));
    let mut body = serde_json::to_value(status).unwrap_or_default();
    body["hash"] = json!(hash);
    Ok(Json(body))
}
