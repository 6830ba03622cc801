//! The dashboard in a real browser: Debian's headless Chromium, driven over
//! the DevTools protocol, against `quartier devnet` with households, in each
//! privacy mode. The depth and price charts render chain data, a trade this
//! test submits through the API shows up on the page, choosing its household
//! shows the fill, the privacy card names the chain's mode and shows the
//! devnet auditor's live figures, and the page logs no console error.
//! Screenshots are saved under `target/tmp/dashboard/`.
#![allow(clippy::unwrap_used)]
// test code: a panic is the failure report
// An OS-process test waits on real processes, with a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

use base64::Engine as _;
use ed25519_dalek::SigningKey;
use quartier_client::NodeClient;
use quartier_ledger::{Genesis, MeterRole, Tx, TxBody};
use quartier_types::{AccountId, Energy, Money, Price, RegionId, Side, Slot};
use serde_json::{Value, json};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{ProcessGroup, scratch, wait_for};
use tungstenite::{Message, WebSocket};

mod support;

const BASE_PORT: u16 = 7_800;
/// The mode A devnet's ports.
const SHIELDED_BASE_PORT: u16 = 8_200;
/// The mode B devnet's ports (enclaves at +8…+10).
const ENCLAVE_BASE_PORT: u16 = 8_300;

/// One devnet and one browser at a time: each is four validators, a fleet
/// and Chromium on a 2-core machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A DevTools session with one page.
struct Browser {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    console_errors: Vec<String>,
}

impl Browser {
    fn connect(port: u16) -> Browser {
        let pages = wait_for("chromium's DevTools", Duration::from_secs(60), || {
            devtools_get(port, "/json/list")
        });
        let url = pages
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == "page")
            .and_then(|p| p["webSocketDebuggerUrl"].as_str())
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (socket, _) = tungstenite::client(url.as_str(), stream).unwrap();
        let mut b = Browser {
            socket,
            next_id: 0,
            console_errors: Vec::new(),
        };
        for method in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(method, json!({}));
        }
        b
    }

    /// Sends a command and returns its result, noting console errors that
    /// arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(msg)).unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
            match v["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    self.console_errors
                        .push(v["params"]["exceptionDetails"].to_string());
                }
                Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                    self.console_errors.push(v["params"]["args"].to_string());
                }
                Some("Log.entryAdded") if v["params"]["entry"]["level"] == "error" => {
                    self.console_errors.push(v["params"]["entry"].to_string());
                }
                _ => {}
            }
        }
    }

    /// Evaluates `expression` in the page and returns its value.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        r["result"]["value"].clone()
    }

    fn wait_until(&mut self, what: &str, limit: Duration, expression: &str) {
        let deadline = Instant::now() + limit;
        while self.eval(expression) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

/// `GET path` from Chromium's DevTools HTTP endpoint, which keeps the
/// connection open: read exactly Content-Length bytes.
fn devtools_get(port: u16, path: &str) -> Option<Value> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

fn key(dir: &Path, name: &str) -> SigningKey {
    SigningKey::from_bytes(
        &quartier_node::config::read_key(&dir.join(format!("keys/{name}.key"))).unwrap(),
    )
}

fn account(k: &SigningKey) -> AccountId {
    AccountId(k.verifying_key().to_bytes())
}

/// Submits one tx signed by `k` with the account's next nonce; waits until final.
fn submit(api: &NodeClient, genesis: &Genesis, k: &SigningKey, body: TxBody) {
    let me = account(k);
    let nonce = api.get(&format!("/api/v1/accounts/{me}")).unwrap().1["nonce"]
        .as_u64()
        .unwrap();
    let tx = Tx {
        chain_id: genesis.chain_id(),
        signer: me,
        nonce,
        body,
    }
    .sign(k);
    let (code, reply) = api
        .post(
            "/api/v1/txs",
            &format!(r#"{{"tx":"{}"}}"#, hex::encode(tx.encode())),
        )
        .unwrap();
    assert_eq!(code, 202, "{reply}");
    let hash = tx.hash();
    wait_for("a tx to be final", Duration::from_secs(60), || {
        let (_, v) = api.get(&format!("/api/v1/txs/{hash}")).ok()?;
        assert_ne!(v["status"], "rejected", "{v}");
        (v["status"] == "finalized").then_some(())
    });
}

/// A devnet with 12 households (8 with PV) in `privacy` mode and Chromium
/// showing its dashboard.
struct Dashboard {
    dir: PathBuf,
    artifacts: PathBuf,
    url: String,
    page: Browser,
    // Dropped last: the browser, then the devnet.
    _browser: ProcessGroup,
    _devnet: ProcessGroup,
}

impl Dashboard {
    fn open(privacy: &str, base_port: u16, extra: &[&str]) -> Dashboard {
        let dir = scratch(&format!("dashboard-{privacy}"));
        let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
        std::fs::create_dir_all(&artifacts).unwrap();
        let log = std::fs::File::create(artifacts.join(format!("devnet-{privacy}.log"))).unwrap();
        let devnet = ProcessGroup::spawn(
            Command::new(env!("CARGO_BIN_EXE_quartier"))
                .args(["devnet", "--privacy", privacy, "--slot-seconds", "3"])
                .args(["--households", "12", "--prosumers", "8"])
                .args(extra)
                .args(["--base-port", &base_port.to_string(), "--dir"])
                .arg(&dir)
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log)),
        );
        wait_for("meters.json", Duration::from_secs(240), || {
            dir.join("meters.json").exists().then_some(())
        });
        let url = format!("http://127.0.0.1:{}", base_port + 1);
        let chromium = ["chromium", "chromium-browser"]
            .into_iter()
            .find(|c| {
                Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .expect("Debian's chromium is needed (scripts/setup installs it)");
        let devtools_port = base_port + 50;
        let profile = dir.join("chromium-profile");
        let browser = ProcessGroup::spawn(
            Command::new(chromium)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                ])
                .args(["--window-size=1280,1800", "--hide-scrollbars"])
                .arg(format!("--remote-debugging-port={devtools_port}"))
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut page = Browser::connect(devtools_port);
        page.call("Page.navigate", json!({ "url": format!("{url}/") }));
        Dashboard {
            dir,
            artifacts,
            url,
            page,
            _browser: browser,
            _devnet: devnet,
        }
    }

    /// The chain card shows the roles' keys, the open proposals and the
    /// validator set by consensus epoch.
    fn shows_the_governance(&mut self) {
        self.page.wait_until(
            "the roles and proposals",
            Duration::from_secs(60),
            "document.querySelector('#roles').textContent.includes('utility') \
             && document.querySelector('#proposals').textContent.includes('no open proposals') \
             && document.querySelector('#epochs').textContent.includes('from epoch 0 (height 0): 4 validators') \
             && document.querySelector('#epoch-now').textContent.includes('a change voted now signs from height')",
        );
    }

    /// The privacy card names `mode` and shows the live auditor's figures;
    /// the chain card shows the governance.
    fn shows_the_privacy_mode(&mut self, mode: &str) {
        self.shows_the_governance();
        self.page.wait_until(
            "the privacy mode",
            Duration::from_secs(60),
            &format!("document.getElementById('privacy-mode').textContent === '{mode}'"),
        );
        self.page.wait_until(
            "the live audit figures",
            Duration::from_secs(120),
            "!!window.quartier.audit && document.querySelector('#audit').textContent.includes('top-1')",
        );
    }

    /// A phone-sized screen lays out without overflow; no console errors.
    fn lays_out_on_a_phone_without_errors(&mut self, name: &str) {
        self.page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true }),
        );
        self.page.wait_until(
            "the phone layout",
            Duration::from_secs(10),
            "document.documentElement.scrollWidth <= 390",
        );
        self.page
            .screenshot(&self.artifacts.join(format!("phone-{name}.png")));
        assert!(
            self.page.console_errors.is_empty(),
            "console errors: {:?}",
            self.page.console_errors
        );
        eprintln!("screenshots in {}", self.artifacts.display());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_dashboard_shows_the_market_live() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut d = Dashboard::open("transparent", BASE_PORT, &[]);
    let api = NodeClient::new(&d.url).unwrap();
    let genesis: quartier_node::config::NetworkGenesis =
        serde_json::from_str(&std::fs::read_to_string(d.dir.join("genesis.json")).unwrap())
            .unwrap();
    let genesis = genesis.ledger;
    let page = &mut d.page;

    // The charts render data from the chain.
    page.wait_until(
        "the price chart",
        Duration::from_secs(90),
        "!!document.querySelector('#prices path.mean')",
    );
    page.wait_until(
        "the depth chart",
        Duration::from_secs(60),
        "!!document.querySelector('#depth path.buy, #depth path.sell')",
    );

    // A trade submitted through the API: a new seller at the feed-in tariff
    // and a new buyer at the grid tariff are the best ask and bid, so they
    // trade with each other.
    let (dso, utility) = (key(&d.dir, "dso"), key(&d.dir, "utility"));
    let seller = SigningKey::from_bytes(&[0x5e; 32]);
    let buyer = SigningKey::from_bytes(&[0xb0; 32]);
    for (k, role, pv) in [
        (&seller, MeterRole::Prosumer, 10_000),
        (&buyer, MeterRole::Consumer, 0),
    ] {
        let register = TxBody::RegisterMeter {
            meter: account(k),
            region: RegionId(1),
            role,
            pv_watts: pv,
        };
        submit(&api, &genesis, &dso, register);
        submit(
            &api,
            &genesis,
            &utility,
            TxBody::Mint {
                to: account(k),
                amount: Money::new(50 * 100_000_000),
            },
        );
    }
    let now = api.get("/api/v1/status").unwrap().1["time_ms"]
        .as_u64()
        .unwrap();
    let slot = Slot(now / genesis.slot_ms + 1);
    for (k, side, limit) in [(&seller, Side::Sell, 4_000), (&buyer, Side::Buy, 20_750)] {
        let order = TxBody::PlaceOrder {
            region: RegionId(1),
            slot,
            side,
            limit: Price::new(limit),
            energy: Energy::new(1_234),
        };
        submit(&api, &genesis, k, order);
    }
    let seller_id = account(&seller).to_string();
    page.wait_until(
        "the test's trade on the page",
        Duration::from_secs(60),
        &format!(
            "document.querySelector('#trades').textContent.includes('{}')",
            &seller_id[..8]
        ),
    );
    page.screenshot(&d.artifacts.join("dashboard.png"));

    // Choosing the seller's household shows its fill.
    page.wait_until(
        "the seller in the meter list",
        Duration::from_secs(30),
        &format!("!!document.querySelector('#meter option[value=\"{seller_id}\"]')"),
    );
    page.eval(&format!(
        "(() => {{ const s = document.getElementById('meter'); s.value = '{seller_id}'; s.dispatchEvent(new Event('change')); return true; }})()"
    ));
    page.wait_until(
        "the seller's fill",
        Duration::from_secs(30),
        "!!document.querySelector('#fills') && document.querySelector('#fills').textContent.includes('1.234 kWh')",
    );
    page.screenshot(&d.artifacts.join("household.png"));

    // Open orders: the auditor names every household's orders (the test's
    // own traders are no household of the fleet and are not scored).
    d.shows_the_privacy_mode("transparent");
    // The test's own two traders are no household of the fleet: left out
    // of the scores, and the page says so.
    d.page.wait_until(
        "the left-out orders on the page",
        Duration::from_secs(60),
        "document.querySelector('#audit').textContent.includes('not scored')",
    );
    let audit = d.page.eval("window.quartier.audit");
    assert!(audit["foreign_orders"].as_u64().unwrap() >= 2, "{audit}");
    assert_eq!(audit["reports"][0]["top1"].as_f64(), Some(1.0), "{audit}");
    assert_eq!(audit["cryptographic"], Value::Null, "{audit}");
    d.lays_out_on_a_phone_without_errors("transparent");
}

/// Mode A: the card says "shielded" and shows the cryptographic adversary's
/// live findings — no ring signer named, nothing reused — beside the
/// statistical attacks; trades name no meter.
#[test]
fn the_dashboard_of_a_shielded_market_shows_its_live_audit() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut d = Dashboard::open("shielded", SHIELDED_BASE_PORT, &["--ring-size", "8"]);
    d.page.wait_until(
        "the price chart",
        Duration::from_secs(120),
        "!!document.querySelector('#prices path.mean')",
    );
    d.shows_the_privacy_mode("shielded");
    d.page.wait_until(
        "the cryptographic findings",
        Duration::from_secs(60),
        "!!window.quartier.audit.cryptographic && document.querySelector('#audit').textContent.includes('ring signers named')",
    );
    let audit = d.page.eval("window.quartier.audit");
    let c = &audit["cryptographic"];
    assert!(c["orders"].as_u64().unwrap() > 0, "{audit}");
    for attack in [
        "authorisations_named",
        "inputs_named",
        "key_image_repeats",
        "signer_repeats",
        "payee_repeats",
    ] {
        assert_eq!(c[attack], 0, "{attack}: {audit}");
    }
    // What the page shows is what the auditor found.
    let shown = d
        .page
        .eval("document.querySelector('#audit').textContent")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        shown.contains(&format!("0 of {} orders", c["orders"])),
        "{shown}"
    );
    assert!(
        audit["reports"][0]["top1"].as_f64().unwrap() < 1.0,
        "{audit}"
    );
    assert_eq!(audit["foreign_orders"], 0, "{audit}");
    // Trades name no meter.
    d.page.wait_until(
        "a local trade",
        Duration::from_secs(90),
        "document.querySelectorAll('#trades tbody tr td').length >= 4",
    );
    let trades = d
        .page
        .eval("document.querySelector('#trades tbody').textContent")
        .as_str()
        .unwrap()
        .to_string();
    assert!(trades.contains("shielded"), "{trades}");
    d.page
        .screenshot(&d.artifacts.join("dashboard-shielded.png"));
    d.lays_out_on_a_phone_without_errors("shielded");
}

/// Mode B: the card says "enclave"; the charts show the signed reports'
/// aggregates, the last slot its sealed and cleared counts and withdrawals,
/// the committee card its members, threshold, epoch key and custody; the
/// book shows how many sealed orders it holds and nothing of them.
#[test]
fn the_dashboard_of_a_sealed_market_shows_what_mode_b_publishes() {
    let _one = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut d = Dashboard::open("enclave", ENCLAVE_BASE_PORT, &["--enclaves", "3"]);
    d.page.wait_until(
        "the privacy mode",
        Duration::from_secs(60),
        "document.getElementById('privacy-mode').textContent === 'enclave'",
    );
    d.shows_the_governance();
    d.page.wait_until(
        "a signed report in the charts",
        Duration::from_secs(300),
        "window.quartier.reports.length > 0 && !!document.querySelector('#energy rect')",
    );
    d.page.wait_until(
        "the committee",
        Duration::from_secs(60),
        "document.querySelector('#committee').textContent.includes('2 of 3 sign a report') && document.querySelector('#committee').textContent.includes('in office, keys epochs from 0')",
    );
    // What the page shows is what the chain published (read together).
    let seen = d.page.eval(
        "JSON.stringify([window.quartier.reports[window.quartier.reports.length - 1].summary, \
         document.querySelector('#trades-summary').textContent, \
         document.querySelector('#book-summary').textContent, \
         document.querySelector('#trades tbody').textContent])",
    );
    let seen: Value = serde_json::from_str(seen.as_str().unwrap()).unwrap();
    let summary = &seen[0];
    let shown = seen[1].as_str().unwrap();
    let sealed = summary["aggregates"]["sealed"].as_u64().unwrap();
    assert_eq!(sealed, 12, "{summary}");
    assert!(
        shown.starts_with(&format!(
            "{sealed} sealed orders, {} cleared",
            summary["aggregates"]["cleared"]
        )),
        "{shown}"
    );
    assert!(
        seen[2]
            .as_str()
            .unwrap()
            .contains("sealed orders in the open slots"),
        "{seen}"
    );
    assert!(
        seen[3].as_str().unwrap().contains("inside the enclaves"),
        "{seen}"
    );
    // The committee card matches the chain's committee.
    let api = NodeClient::new(&d.url).unwrap();
    let (_, sealed_market) = api.get("/api/v1/sealed").unwrap();
    let committee = d
        .page
        .eval("document.querySelector('#committee').textContent")
        .as_str()
        .unwrap()
        .to_string();
    for m in sealed_market["committee"]["members"].as_array().unwrap() {
        assert!(committee.contains(&m.as_str().unwrap()[..8]), "{committee}");
    }
    // The privacy card shows the live insider's attack on the sealed
    // orders, as the auditor wrote it (page and report read together).
    d.page.wait_until(
        "the live mode B audit",
        Duration::from_secs(300),
        "!!window.quartier.audit && !!window.quartier.audit.sealed \
         && document.querySelector('#audit').textContent.includes('named by the insider')",
    );
    let seen = d.page.eval(
        "JSON.stringify([window.quartier.audit.sealed, document.querySelector('#audit').textContent])",
    );
    let seen: Value = serde_json::from_str(seen.as_str().unwrap()).unwrap();
    let (report, card) = (&seen[0], seen[1].as_str().unwrap());
    assert!(report["orders"].as_u64().unwrap() > 0, "{report}");
    let top1 = report["top1"].as_f64().unwrap();
    assert!(card.contains(&format!("{:.1} %", 100.0 * top1)), "{card}");
    assert!(card.contains("the insider runs 3"), "{card}");
    d.page
        .screenshot(&d.artifacts.join("dashboard-enclave.png"));
    d.lays_out_on_a_phone_without_errors("enclave");
}
