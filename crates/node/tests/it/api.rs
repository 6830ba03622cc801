//! The HTTP API in-process: every route, bad input answered with the right
//! 4xx and a JSON error, and no state change from a rejected request.

use crate::harness::*;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use quartier_ledger::TxBody;
use quartier_node::LedgerApp;
use quartier_node::api::{Gossip, router};
use std::sync::{Arc, Mutex};
use tower::ServiceExt as _;

fn setup() -> (LedgerApp, axum::Router, Arc<Mutex<Vec<Vec<u8>>>>) {
    let keys = validator_keys(4);
    let app = app(&genesis(&keys));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let log = sent.clone();
    let gossip: Gossip = Arc::new(move |b| log.lock().unwrap().push(b));
    (app.clone(), router(app, gossip), sent)
}

/// One request to `router`: its status and JSON body (null if not JSON).
pub async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Runs `f` on a fresh tokio runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn every_route_answers() {
    block_on(async {
        let (app, router, _) = setup();
        let (s, v) = call(&router, "GET", "/api/v1/status", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["height"], 0);
        assert_eq!(v["validators"].as_array().unwrap().len(), 4);
        assert_eq!(
            v["chain_id"],
            app.with_state(|s| s.chain_id().0.to_string())
        );
        let utility = id(&key("utility")).to_string();
        let (s, v) = call(&router, "GET", &format!("/api/v1/accounts/{utility}"), "").await;
        assert_eq!((s, v["nonce"].clone()), (StatusCode::OK, 0.into()));
        let (s, v) = call(&router, "GET", "/api/v1/blocks/0", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["root"], app.view().root.to_string());
        // No consensus, no snapshot: nothing to sync from, said so.
        let (s, v) = call(&router, "GET", "/api/v1/sync", "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            v["error"].as_str().unwrap().contains("no sync bundle"),
            "{v}"
        );
        let (s, v) = call(&router, "GET", "/api/v1/regions/1/slots/7", "").await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["book"].is_null() && v["settlement"].is_null());
        let (s, v) = call(&router, "GET", "/api/v1/regions/1/meters", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v["meters"], serde_json::json!([]));
        // Mode B on a chain without the policy: empty, and says so.
        let (s, v) = call(&router, "GET", "/api/v1/sealed", "").await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["policy"].is_null() && v["committee"].is_null());
        assert_eq!(v["batches"], serde_json::json!([]));
        assert_eq!(v["custody"], 0);
        let (s, v) = call(&router, "GET", "/api/v1/regions/1/reports?last=5", "").await;
        assert_eq!(
            (s, v["reports"].clone()),
            (StatusCode::OK, serde_json::json!([]))
        );
        let (s, _) = call(&router, "GET", "/api/v1/regions/1/reports?last=0", "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        // Mode A's pool, empty on this chain; a bad range is refused.
        let (s, v) = call(&router, "GET", "/api/v1/pool/outputs?from=0&limit=10", "").await;
        assert_eq!((s, v["total"].clone()), (StatusCode::OK, 0.into()));
        assert_eq!(v["outputs"], serde_json::json!([]));
        let (s, _) = call(&router, "GET", "/api/v1/pool/outputs?limit=5000", "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, v) = call(&router, "GET", "/api/v1/pool/key_images?limit=10", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            (v["key_images"].clone(), v["more"].clone()),
            (serde_json::json!([]), false.into())
        );
        for bad in ["after=zz", "after=00", "limit=0", "limit=4097", "from=1"] {
            let uri = format!("/api/v1/pool/key_images?{bad}");
            let (s, v) = call(&router, "GET", &uri, "").await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
            assert!(v["error"].is_string(), "{bad}: {v}");
        }
        let (s, v) = call(&router, "GET", "/api/v1/regions/1/rings", "").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(
            (v["buy"].clone(), v["sell"].clone()),
            (serde_json::json!([]), serde_json::json!([]))
        );
        let (s, _) = call(&router, "GET", "/api/v1/regions/x/rings", "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            call(&router, "GET", "/api/v1/status", "").await.1["shielded"].is_null(),
            "no pool on this chain"
        );
        // A block's transactions in full, or a bad flag.
        let (s, v) = call(&router, "GET", "/api/v1/blocks/0?full=true", "").await;
        assert_eq!(
            (s, v["txs"].clone()),
            (StatusCode::OK, serde_json::json!([]))
        );
        let (s, _) = call(&router, "GET", "/api/v1/blocks/0?full=yes", "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    });
}

#[test]
fn the_openapi_document_and_the_router_agree() {
    use quartier_node::api::{OPENAPI, ROUTES};
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: std::collections::BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let routed: std::collections::BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);
    block_on(async {
        let (_, router, _) = setup();
        let (s, served) = call(&router, "GET", "/api/v1/openapi.json", "").await;
        assert_eq!((s, served), (StatusCode::OK, doc));
        // Every listed route exists in the router (filled-in path parameters).
        for (method, path) in ROUTES {
            let uri = path
                .replace("{id}", &"ab".repeat(32))
                .replace("{hash}", &"ab".repeat(32))
                .replace("{height}", "0")
                .replace("{region}", "1")
                .replace("{slot}", "1");
            let (s, v) = call(&router, &method.to_uppercase(), &uri, r#"{"tx":"00"}"#).await;
            assert!(
                !(s == StatusCode::NOT_FOUND && v["error"] == "no such route"),
                "{method} {path} is documented but not routed"
            );
        }
    });
}

#[test]
fn an_account_comes_with_a_proof_that_verifies_against_the_root() {
    block_on(async {
        let utility = id(&key("utility"));
        let mut g = genesis(&validator_keys(4));
        g.allocations = vec![(utility, quartier_types::Money::new(123_456))];
        let gossip: Gossip = Arc::new(|_| {});
        let router = router(app(&g), gossip);
        // A never-seen account: an absence proof.
        let stranger = id(&key("stranger"));
        let (_, v) = call(&router, "GET", &format!("/api/v1/accounts/{stranger}"), "").await;
        assert!(v["value"].is_null(), "{v}");
        assert!(v["proof"].is_string(), "{v}");
        let absent = quartier_ledger::StateProof {
            key: quartier_ledger::StateKey::Account(stranger),
            value: None,
            proof: borsh::from_slice(&hex::decode(v["proof"].as_str().unwrap()).unwrap()).unwrap(),
        };
        let root = quartier_types::hash::Digest(
            hex::decode(v["root"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap(),
        );
        absent.verify(root).unwrap();
        let (s, v) = call(&router, "GET", &format!("/api/v1/accounts/{utility}"), "").await;
        assert_eq!(s, StatusCode::OK);
        let bytes = |field: &str| hex::decode(v[field].as_str().unwrap()).unwrap();
        let root = quartier_types::hash::Digest(bytes("root").try_into().unwrap());
        let mut proof = quartier_ledger::StateProof {
            key: quartier_ledger::StateKey::Account(utility),
            value: v["value"].as_str().map(|h| hex::decode(h).unwrap()),
            proof: borsh::from_slice(&bytes("proof")).unwrap(),
        };
        proof.verify(root).unwrap();
        let account: quartier_ledger::Account = proof.decode().unwrap().unwrap();
        assert_eq!(account.balance.get(), 123_456);
        assert_eq!(v["balance"], 123_456);
        // A client that is lied to about the balance notices.
        let mut forged = account;
        forged.balance = quartier_types::Money::new(account.balance.get() + 1);
        proof.value = Some(borsh::to_vec(&forged).unwrap());
        assert!(proof.verify(root).is_err());
    });
}

#[test]
fn tx_status_goes_from_unknown_to_pending() {
    block_on(async {
        let (app, router, _) = setup();
        let tx = app.with_state(|s| registrations(s, 1)).remove(0);
        let uri = format!("/api/v1/txs/{}", tx.hash());
        assert_eq!(call(&router, "GET", &uri, "").await.1["status"], "unknown");
        app.submit(tx).unwrap();
        assert_eq!(call(&router, "GET", &uri, "").await.1["status"], "pending");
        let (s, _) = call(&router, "GET", "/api/v1/txs/xyz", "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    });
}

#[test]
fn metrics_are_prometheus_text() {
    block_on(async {
        let (_, router, _) = setup();
        let request = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = String::from_utf8(
            to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        for name in [
            "quartier_height",
            "quartier_mempool_txs",
            "quartier_finalized_txs_total",
            "quartier_rejected_txs_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} missing:\n{text}"
            );
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name} "))),
                "{name} value missing"
            );
        }
    });
}

#[test]
fn a_valid_tx_is_admitted_and_gossiped_once() {
    block_on(async {
        let (app, router, sent) = setup();
        let tx = app.with_state(|s| registrations(s, 1)).remove(0);
        let body = format!(r#"{{"tx":"{}"}}"#, hex::encode(tx.encode()));
        let (s, v) = call(&router, "POST", "/api/v1/txs", &body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["hash"], tx.hash().to_string());
        assert_eq!(app.view().mempool, 1);
        let (s, _) = call(&router, "POST", "/api/v1/txs", &body).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert_eq!(
            sent.lock().unwrap().len(),
            1,
            "a duplicate must not be gossiped"
        );
    });
}

#[test]
fn bad_requests_get_4xx_json_and_change_nothing() {
    block_on(async {
        let (app, router, sent) = setup();
        let good = app.with_state(|s| registrations(s, 1)).remove(0);
        let mut forged = good.clone();
        forged.tx.body = TxBody::Redeem {
            amount: quartier_types::Money::new(1),
        };
        let mut other_chain_genesis = genesis(&validator_keys(4));
        other_chain_genesis.chain_name = "elsewhere".into();
        let other = app_state(&other_chain_genesis, |s| registrations(s, 1)).remove(0);
        let hex_tx =
            |t: &quartier_ledger::SignedTx| format!(r#"{{"tx":"{}"}}"#, hex::encode(t.encode()));
        // Past the body limit (4 × MAX_TX_BYTES of JSON).
        let oversized = format!(
            r#"{{"tx":"{}"}}"#,
            "ab".repeat(2 * quartier_ledger::MAX_TX_BYTES + 8)
        );
        let cases: Vec<(&str, &str, String, StatusCode)> = vec![
            (
                "POST",
                "/api/v1/txs",
                "not json".into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/txs",
                r#"{"tx": 5}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/txs",
                r#"{"tx":"00","x":1}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/txs",
                r#"{"tx":"zz"}"#.into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/txs",
                r#"{"tx":"00"}"#.into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/txs",
                hex_tx(&forged),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/txs",
                hex_tx(&other),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/txs",
                oversized,
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                "GET",
                "/api/v1/accounts/xyz",
                String::new(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/blocks/abc",
                String::new(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/blocks/99",
                String::new(),
                StatusCode::NOT_FOUND,
            ),
            (
                "GET",
                "/api/v1/regions/x/slots/1",
                String::new(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/regions/-1/meters",
                String::new(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "GET",
                "/api/v1/nothing",
                String::new(),
                StatusCode::NOT_FOUND,
            ),
        ];
        let root = app.view();
        for (method, uri, body, expected) in cases {
            let (s, v) = call(&router, method, uri, &body).await;
            assert_eq!(s, expected, "{method} {uri} {body:.40}: {v}");
            assert!(v["error"].is_string(), "{uri}: no JSON error: {v}");
        }
        assert_eq!(app.view(), root, "a rejected request changed the node");
        assert!(
            sent.lock().unwrap().is_empty(),
            "a rejected tx was gossiped"
        );
    });
}

fn app_state<T>(g: &quartier_ledger::Genesis, f: impl FnOnce(&quartier_ledger::State) -> T) -> T {
    f(&quartier_ledger::State::from_genesis(g.clone()).unwrap())
}

/// The websocket's messages are the ones the OpenAPI document describes.
#[test]
fn stream_messages_match_the_documented_schemas() {
    use quartier_node::StreamEvent;
    let doc: serde_json::Value = serde_json::from_str(quartier_node::api::OPENAPI).unwrap();
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let events = [
        (
            "StreamBlock",
            StreamEvent::Block {
                height: 3,
                time_ms: 9,
                root: "ab".repeat(32),
                txs: 2,
            },
        ),
        (
            "StreamSettlement",
            StreamEvent::Settlement {
                region: 1,
                slot: 4,
                height: 3,
                orders: 5,
                local_energy: 6,
                grid_import: 7,
                grid_export: 8,
            },
        ),
    ];
    for (name, event) in events {
        let v = serde_json::to_value(&event).unwrap();
        let s = schema(name);
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut documented: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap())
            .collect();
        keys.sort_unstable();
        documented.sort_unstable();
        assert_eq!(keys, documented, "{name}");
        assert_eq!(v["type"], s["properties"]["type"]["const"], "{name}");
    }
    let refs = doc["paths"]["/api/v1/stream"]["get"]["x-websocket-messages"]["oneOf"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(refs, 3);
}

/// Mode A: the pool pages are what wallets decode (`PoolOutput`), with the
/// slot and public amount decoys are drawn by.
#[test]
fn pool_outputs_are_served_as_wallets_decode_them() {
    use quartier_ledger::{BlockContext, PoolOutput, ShieldedPolicy, State, execute_block};
    use quartier_types::Money;
    use rand_core::SeedableRng as _;
    block_on(async {
        let keys = validator_keys(4);
        let mut g = genesis(&keys);
        g.shielded = Some(ShieldedPolicy { ring_size: 4 });
        g.allocations = vec![(id(&key("utility")), Money::new(5_000))];
        let mut state = State::from_genesis(g.clone()).unwrap();
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
        let to = quartier_shielded::keys::WalletKeys::from_seed(&[5; 32]).address();
        let (output, received) = quartier_shielded::output::create(&to, 1_000, &mut rng).unwrap();
        let shield = tx(
            &state,
            &key("utility"),
            0,
            TxBody::Shield {
                amount: Money::new(1_000),
                output,
                mask: *received.mask,
            },
        );
        let ctx = BlockContext {
            height: quartier_types::Height(1),
            time: quartier_types::Timestamp(3 * 900_000 + 1),
        };
        let out = execute_block(&mut state, &ctx, vec![shield]).unwrap();
        assert!(out.results.iter().all(Result::is_ok));
        let app = LedgerApp::new(
            state,
            quartier_node::Mempool::new(quartier_node::MempoolConfig::default()),
        );
        let router = router(app, Arc::new(|_| {}));
        let (s, v) = call(&router, "GET", "/api/v1/pool/outputs?from=0&limit=10", "").await;
        assert_eq!((s, v["total"].clone()), (StatusCode::OK, 1.into()));
        let served: PoolOutput = serde_json::from_value(v["outputs"][0].clone()).unwrap();
        assert_eq!(served.output, output);
        assert_eq!(served.slot, quartier_types::Slot(3));
        assert_eq!(served.public_amount, Some(Money::new(1_000)));
    });
}

#[test]
fn the_audit_report_is_served_as_written_and_bad_files_are_refused() {
    use quartier_node::api::{Extras, router_with};
    let keys = validator_keys(4);
    let app = app(&genesis(&keys));
    let path = fresh_dir("api-audit").join("audit.json");
    let serving = router_with(
        app.clone(),
        Arc::new(|_| {}),
        Extras {
            audit_report: Some(path.clone()),
            ..Extras::default()
        },
    );
    let plain = router(app, Arc::new(|_| {}));
    block_on(async {
        // A node configured without a report: 404, and its status says so.
        let (s, v) = call(&plain, "GET", "/api/v1/audit", "").await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
        assert!(v["error"].is_string());
        assert_eq!(
            call(&plain, "GET", "/api/v1/status", "").await.1["audit"],
            false
        );
        assert_eq!(
            call(&serving, "GET", "/api/v1/status", "").await.1["audit"],
            true
        );
        // None written yet: 204, no body.
        let (s, v) = call(&serving, "GET", "/api/v1/audit", "").await;
        assert_eq!((s, v), (StatusCode::NO_CONTENT, serde_json::Value::Null));
        // Written: served as written.
        let report =
            serde_json::json!({ "slot": 7, "slots": 3, "reports": [], "cryptographic": null });
        std::fs::write(&path, report.to_string()).unwrap();
        assert_eq!(
            call(&serving, "GET", "/api/v1/audit", "").await,
            (StatusCode::OK, report)
        );
        // Not JSON (a torn or foreign file): 503 with a JSON error.
        std::fs::write(&path, b"{\"slot\": 7, \"rep").unwrap();
        let (s, v) = call(&serving, "GET", "/api/v1/audit", "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
        assert!(v["error"].as_str().unwrap().contains("not JSON"), "{v}");
    });
}

/// The registry proof route refuses an account list that does not parse,
/// is empty or is longer than a committee, before it builds anything; on
/// a node without consensus (no certificate) a good list gets 503.
#[test]
fn the_registry_proof_route_checks_its_account_list() {
    block_on(async {
        let g = genesis(&validator_keys(4));
        let router = router(app(&g), Arc::new(|_| {}));
        let path = |q: &str| format!("/api/v1/sealed/registry/proof{q}");
        let one = id(&key("enclave-0"));
        let many: Vec<String> = (0..=quartier_ledger::MAX_COMMITTEE)
            .map(|i| id(&key(&format!("enclave-{i}"))).to_string())
            .collect();
        for query in [
            String::new(),
            "?accounts=".to_string(),
            "?accounts=zz".to_string(),
            format!("?accounts={}", many.join(",")),
            format!("?accounts={one}&other=1"),
        ] {
            let (s, v) = call(&router, "GET", &path(&query), "").await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{query}: {v}");
        }
        let (s, v) = call(&router, "GET", &path(&format!("?accounts={one},{one}")), "").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    });
}
