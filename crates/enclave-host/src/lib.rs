//! `quartier enclave run`: the untrusted host process around one auctioneer
//! enclave (DESIGN §7). There is no TEE hardware here, so the enclave
//! ([`EnclaveService`]) runs inside this process and its boundary is the
//! [`Request`]/[`Response`] API: the host carries bytes between the enclave,
//! its peers and the chain, and never needs a secret to do so. Attestation
//! and sealing use the **simulated** backends.
//!
//! What the host does is decided by the sans-IO
//! [`quartier_enclave::host::HostMachine`] (registration, committee, epoch
//! keys, catch-up, clearing and reports, failover): every 100 ms this
//! process reads the chain's mode B state (`GET /api/v1/sealed`), hands it
//! to the machine and carries out its effects (reads of finalized records,
//! calls to the peers' enclaves, transactions, seals) one by one, handing
//! each result back. The enclave's state is sealed to a file after every
//! change that must survive a restart, so a restarted host resumes.
// The host is I/O: it waits on the chain and its peers in wall-clock time.
#![allow(clippy::disallowed_methods)]

use axum::extract::State as AxumState;
use axum::routing::{get, post};
use axum::{Json, Router};
use commonware_utils::sync::Mutex;
use quartier_client::NodeClient;
use quartier_client::enclave::call;
use quartier_enclave::attestation::{Measurement, Quote, SimulatedAttestationService};
use quartier_enclave::host::{ChainView, Effect, HostMachine, HostSettings, Input};
use quartier_enclave::rpc::{Request, Response, decode_request};
use quartier_enclave::service::{
    EnclaveService, FinalizedBatch, FinalizedRecords, ServiceError, SimulatedMonotonicCounter,
    SimulatedPlatform,
};
use quartier_ledger::{ChainId, PostedReport, TxBody};
use quartier_types::api::TxStatus;
use quartier_types::{AccountId, RegionId, Slot};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the host runs.
#[derive(Clone, Debug)]
pub struct EnclaveHostConfig {
    /// Chain API URLs (the first reachable one is used).
    pub nodes: Vec<String>,
    /// This enclave's API address.
    pub listen: SocketAddr,
    /// Every committee member's API URL, this one included.
    pub peers: Vec<String>,
    /// Where the sealed state lives.
    pub state_file: PathBuf,
    /// The **simulated** platform secret (stands in for the CPU's sealing key).
    pub simulated_platform_secret: [u8; 32],
    /// The **simulated** attestation service's secret (stands in for the TEE
    /// vendor's quoting key; a devnet's enclaves of one vendor share it).
    pub simulated_attestation_seed: [u8; 32],
    /// The attestation roots the enclave code trusts, one per vendor (its
    /// own vendor's alone if empty): built into a real enclave.
    pub simulated_vendor_roots: Vec<quartier_enclave::attestation::AttestationRoot>,
    /// The vendor mix the enclave code requires of a committee.
    pub vendor_policy: quartier_enclave::attestation::VendorPolicy,
    /// The measurement of the running enclave code.
    pub measurement: Measurement,
    /// How many enclaves form the committee.
    pub committee_size: usize,
}

/// An `enclave.toml`: where the host finds the chain, its peers and its
/// (simulated) secrets. Relative paths are taken from the file's folder.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnclaveConfigFile {
    /// Chain API URLs.
    pub nodes: Vec<String>,
    /// This enclave's API address.
    pub listen: SocketAddr,
    /// Every committee member's API URL, this one included.
    pub peers: Vec<String>,
    /// Where the sealed state lives.
    pub state_file: PathBuf,
    /// File with the **simulated** platform secret (64 hex digits).
    pub simulated_platform_secret_file: PathBuf,
    /// File with the **simulated** attestation service's secret (64 hex digits).
    pub simulated_attestation_seed_file: PathBuf,
    /// The attestation roots of every vendor the enclave code trusts (its own
    /// vendor's alone if none are given).
    #[serde(default)]
    pub simulated_vendor_roots: Vec<quartier_enclave::attestation::AttestationRoot>,
    /// The vendor mix the enclave code requires of a committee.
    #[serde(default)]
    pub vendor_policy: quartier_enclave::attestation::VendorPolicy,
    /// How many enclaves form the committee.
    pub committee_size: usize,
}

impl EnclaveConfigFile {
    /// Loads an `enclave.toml` and its secrets; `measurement` is the running code's.
    ///
    /// # Errors
    /// [`quartier_node::config::ConfigError`] naming the file and the problem.
    pub fn load(
        path: &std::path::Path,
        measurement: Measurement,
    ) -> Result<EnclaveHostConfig, quartier_node::config::ConfigError> {
        let text = std::fs::read_to_string(path).map_err(quartier_node::config::io_error(path))?;
        let mut file: EnclaveConfigFile =
            toml::from_str(&text).map_err(|e| quartier_node::config::invalid(path, e))?;
        // Every host seats the same committee from the same registry (the
        // convention `select_committee` is), and a registry proof carries
        // at most the chain's largest committee.
        if !(2..=quartier_ledger::MAX_COMMITTEE).contains(&file.committee_size) {
            return Err(quartier_node::config::invalid(
                path,
                format!(
                    "committee_size: 2 to {} (and the same for every enclave)",
                    quartier_ledger::MAX_COMMITTEE
                ),
            ));
        }
        let base = path.parent().unwrap_or(std::path::Path::new("."));
        for p in [
            &mut file.state_file,
            &mut file.simulated_platform_secret_file,
            &mut file.simulated_attestation_seed_file,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(EnclaveHostConfig {
            nodes: file.nodes,
            listen: file.listen,
            peers: file.peers,
            state_file: file.state_file,
            simulated_platform_secret: quartier_node::config::read_key(
                &file.simulated_platform_secret_file,
            )?,
            simulated_attestation_seed: quartier_node::config::read_key(
                &file.simulated_attestation_seed_file,
            )?,
            simulated_vendor_roots: file.simulated_vendor_roots,
            vendor_policy: file.vendor_policy,
            measurement,
            committee_size: file.committee_size,
        })
    }
}

/// Why the host stopped.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The sealed state file exists but does not unseal.
    #[error("sealed state {0} does not unseal on this (simulated) platform")]
    Unseal(PathBuf),
    /// The sealed state file is not the latest the enclave sealed: an older
    /// copy was put back (rollback), and the enclave refuses it.
    #[error(
        "sealed state {} was sealed at counter {sealed}, the platform's simulated monotonic counter is at {counter}: an older copy, refused (rollback)",
        path.display()
    )]
    RolledBack {
        /// The state file.
        path: PathBuf,
        /// Its counter value.
        sealed: u64,
        /// The platform's.
        counter: u64,
    },
    /// A file or socket failed.
    #[error("{0}")]
    Io(String),
}

/// The **simulated** platform's monotonic counter: a file beside the sealed
/// state (`<state file>.simulated-counter`, a decimal number), replaced
/// atomically. A real TEE keeps its counter where the host can not set it
/// back; this file the host could edit, so it stops a state file copied
/// back, not a host that also rewrites the counter.
struct SimulatedFileCounter {
    path: PathBuf,
}

impl SimulatedFileCounter {
    fn beside(state_file: &std::path::Path) -> SimulatedFileCounter {
        let mut name = state_file.as_os_str().to_owned();
        name.push(".simulated-counter");
        SimulatedFileCounter {
            path: PathBuf::from(name),
        }
    }
}

impl SimulatedMonotonicCounter for SimulatedFileCounter {
    fn read(&self) -> Result<u64, String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|e| format!("{}: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    fn increment(&self) -> Result<u64, String> {
        let next = self
            .read()?
            .checked_add(1)
            .ok_or_else(|| "exhausted".to_string())?;
        let tmp = self.path.with_extension("simulated-counter.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(next.to_string().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("{}: {e}", self.path.display()))?;
        Ok(next)
    }
}

/// The enclave, shared by the API and the loop, with its quote.
struct Shared {
    service: EnclaveService,
    /// The URL peers dial this enclave at (`http://` and the listen
    /// address): the only one it proves its account for.
    url: String,
    quote: Quote,
    /// The **simulated** platform the enclave seals its state to.
    platform: SimulatedPlatform,
    /// Where the sealed state is written.
    state_file: PathBuf,
    /// The enclave's [`EnclaveService::durable_changes`] when its state was last
    /// written.
    sealed_changes: u64,
}

impl Shared {
    /// Seals the enclave's state and writes it (fsync, then rename over
    /// the last); whether it was written.
    fn seal(&mut self) -> bool {
        // The counter moves on with the seal: a state not written now can
        // not be restored later (the older file is refused).
        match self.service.seal(&self.platform) {
            Ok(bytes) => {
                let tmp = self.state_file.with_extension("tmp");
                let written = (|| -> std::io::Result<()> {
                    use std::io::Write as _;
                    let mut file = std::fs::File::create(&tmp)?;
                    file.write_all(&bytes)?;
                    file.sync_all()?;
                    std::fs::rename(&tmp, &self.state_file)
                })();
                if let Err(e) = &written {
                    tracing::error!(error = %e, "writing the sealed state failed");
                    return false;
                }
                self.sealed_changes = self.service.durable_changes();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "sealing the enclave state failed");
                false
            }
        }
    }
}

type Handle = Arc<Mutex<Shared>>;

/// Runs the host until the process is stopped.
///
/// # Errors
/// [`HostError`] if the state does not unseal or the API can not bind.
pub fn run(config: &EnclaveHostConfig) -> Result<(), HostError> {
    let vendor = SimulatedAttestationService::new(config.simulated_attestation_seed);
    let roots = if config.simulated_vendor_roots.is_empty() {
        vec![vendor.root()]
    } else {
        config.simulated_vendor_roots.clone()
    };
    let platform = SimulatedPlatform::new(
        config.simulated_platform_secret,
        config.measurement,
        vendor.root(),
    )
    .with_vendors(roots, config.vendor_policy)
    .with_counter(Box::new(SimulatedFileCounter::beside(&config.state_file)));
    let service = match std::fs::read(&config.state_file) {
        Ok(bytes) => EnclaveService::unseal(&bytes, &platform).map_err(|e| match e {
            ServiceError::RolledBack { sealed, counter } => HostError::RolledBack {
                path: config.state_file.clone(),
                sealed,
                counter,
            },
            ServiceError::Counter(why) => HostError::Io(format!("the simulated counter: {why}")),
            _ => HostError::Unseal(config.state_file.clone()),
        })?,
        Err(_) => EnclaveService::new(&platform).map_err(|e| HostError::Io(e.to_string()))?,
    };
    tracing::info!(
        account = %service.account(),
        measurement = %config.measurement,
        "simulated enclave starting (no TEE hardware: simulated attestation and sealing)"
    );
    // The enclave's quote (simulated: the host plays the vendor's quoting
    // service), served to the committee's coordinator for the DKG.
    let quote = vendor.quote(config.measurement, service.report_data());
    let shared: Handle = Arc::new(Mutex::new(Shared {
        service,
        url: format!("http://{}", config.listen),
        quote,
        platform,
        state_file: config.state_file.clone(),
        sealed_changes: 0,
    }));
    let api = shared.clone();
    let listen = config.listen;
    let listener = std::net::TcpListener::bind(listen)
        .map_err(|e| HostError::Io(format!("binding {listen}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| HostError::Io(e.to_string()))?;
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            // The same connection caps and timeouts as a validator's API.
            let limits = quartier_node::api_guard::ApiLimits::default();
            let _ = quartier_node::api_guard::serve(listener, router(api), limits).await;
        });
    });
    let mut host = Host::new(config, shared);
    // Unsealing moved the counter on: the file must hold the state sealed
    // at its new value before anything else happens.
    host.seal();
    loop {
        host.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The enclave's API: `POST /enclave/v1/rpc` with `{"request": hex}` answers
/// `{"response": hex}`; `GET /enclave/v1/status`.
fn router(shared: Handle) -> Router {
    Router::new()
        .route("/enclave/v1/rpc", post(rpc))
        .route("/enclave/v1/status", get(status))
        .with_state(shared)
}

async fn rpc(
    AxumState(shared): AxumState<Handle>,
    Json(body): Json<serde_json::Value>,
) -> Json<serde_json::Value> {
    let request = body["request"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| decode_request(&b));
    let response = match request {
        Some(Request::Identify { url, .. }) if url != shared.lock().url => {
            // A challenge relayed from another address.
            Response::Refused("not served at this address".into())
        }
        Some(r) => {
            let mut s = shared.lock();
            // The DKG's steps change what the enclave must not forget (the
            // attempts it answered, a finish it signed, a confirmed key):
            // sealed before the answer leaves, so a restart never loses a
            // step a peer already holds the answer to.
            let response = s.service.handle(r);
            // Every change not yet written that must survive a restart (a
            // DKG step, an epoch key received; this request's or an earlier
            // one whose seal failed and that a retry answered from memory) is
            // sealed before the answer leaves; if sealing fails the answer
            // does not leave (the coordinator tries again), so no peer holds
            // what a restart would lose.
            if s.service.durable_changes() != s.sealed_changes && !s.seal() {
                Response::Refused("sealing the enclave state failed".into())
            } else {
                response
            }
        }
        None => Response::Refused("malformed request".into()),
    };
    Json(json!({ "response": hex::encode(borsh::to_vec(&response).unwrap_or_default()) }))
}

async fn status(AxumState(shared): AxumState<Handle>) -> Json<serde_json::Value> {
    let s = shared.lock();
    Json(json!({
        "account": s.service.account(),
        "identity_key": hex::encode(s.service.identity_key()),
        "group_key": s.service.group_key(),
        "cleared": s
            .service
            .cleared()
            .iter()
            .map(|(r, slot)| json!({ "region": r, "slot": slot }))
            .collect::<Vec<_>>(),
        "attestation": "simulated",
        "quote": s.quote,
    }))
}

/// The executor of the host's [`HostMachine`]: it reads the chain, calls
/// peers, submits transactions and seals the enclave's state, and hands
/// every result back. It decides nothing itself.
struct Host {
    shared: Handle,
    machine: HostMachine,
    nodes: Vec<NodeClient>,
    peers: Vec<NodeClient>,
    /// The peers by the account each proved it is (a signature over a
    /// fresh challenge and the URL dialled), and when that was read (again
    /// after 30 s, or after 2 s for a member no peer proved).
    by_account: Option<(Instant, BTreeMap<AccountId, Vec<NodeClient>>)>,
    /// Peers that did not answer, and until when they are not asked (a
    /// slow or unreachable peer costs a tick one timeout, not one per
    /// request).
    quiet_until: BTreeMap<String, Instant>,
    /// The chain the transactions are signed for.
    chain_id: Option<ChainId>,
    /// A transaction sent and not yet seen applied: (nonce, hash, when).
    in_flight: Option<(u64, quartier_types::hash::Digest, Instant)>,
}

impl Host {
    fn new(config: &EnclaveHostConfig, shared: Handle) -> Host {
        let mut nodes: Vec<NodeClient> = config
            .nodes
            .iter()
            .filter_map(|u| NodeClient::new(u).ok())
            .collect();
        // Each enclave reads from another validator first, spreading the load.
        let me = format!("http://{}", config.listen);
        let offset = config.peers.iter().position(|p| *p == me).unwrap_or(0);
        if !nodes.is_empty() {
            let len = nodes.len();
            nodes.rotate_left(offset % len);
        }
        let peers = config
            .peers
            .iter()
            .filter_map(|u| NodeClient::new(u).ok())
            .collect();
        let quote = shared.lock().quote.clone();
        Host {
            shared,
            machine: HostMachine::new(HostSettings::new(config.committee_size, quote)),
            nodes,
            peers,
            by_account: None,
            quiet_until: BTreeMap::new(),
            chain_id: None,
            in_flight: None,
        }
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        self.nodes.iter().find_map(|n| match n.get(path) {
            Ok((200, v)) => Some(v),
            _ => None,
        })
    }

    /// The chain's mode B state, with each region's latest report.
    fn view(&self) -> Option<ChainView> {
        let status = self.get("/api/v1/status")?;
        let sealed = self.get("/api/v1/sealed")?;
        let chain_id = ChainId(quartier_types::hash::Digest(
            hex::decode(status["chain_id"].as_str()?)
                .ok()?
                .try_into()
                .ok()?,
        ));
        let enclaves = sealed["enclaves"]
            .as_array()?
            .iter()
            .filter_map(|e| {
                Some((
                    serde_json::from_value(e["account"].clone()).ok()?,
                    serde_json::from_value(e["enclave"].clone()).ok()?,
                ))
            })
            .collect();
        let epochs = quartier_client::epoch_keys(&sealed).into_iter().collect();
        let batches = sealed["batches"]
            .as_array()?
            .iter()
            .filter_map(|b| {
                Some((
                    RegionId(u32::try_from(b["region"].as_u64()?).ok()?),
                    Slot(b["slot"].as_u64()?),
                ))
            })
            .collect();
        let regions: Vec<RegionId> = status["regions"]
            .as_array()?
            .iter()
            .filter_map(|r| Some(RegionId(u32::try_from(r["region"].as_u64()?).ok()?)))
            .collect();
        let committee: Option<quartier_ledger::Committee> =
            serde_json::from_value(sealed["committee"].clone()).ok()?;
        // The latest reports matter only to a member in office.
        let mut reports = BTreeMap::new();
        if committee.is_some() {
            for region in &regions {
                let path = format!("/api/v1/regions/{}/reports?last=1", region.0);
                if let Some(posted) = self.get(&path).and_then(|body| {
                    serde_json::from_value::<PostedReport>(body["reports"][0].clone()).ok()
                }) {
                    reports.insert(*region, posted);
                }
            }
        }
        Some(ChainView {
            chain_id,
            time_ms: status["time_ms"].as_u64()?,
            slot_ms: status["slot_ms"].as_u64()?.max(1),
            lead_slots: status["lead_slots"].as_u64()?,
            regions,
            policy: serde_json::from_value(sealed["policy"].clone()).ok()?,
            enclaves,
            measurements: serde_json::from_value(sealed["measurements"].clone()).ok()?,
            committee,
            candidates: sealed["committee_candidates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| serde_json::from_value(c["group_key"].clone()).ok())
                .collect(),
            epochs,
            batches,
            reports,
            validator_sets: sealed["validator_sets"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1),
        })
    }

    /// One tick: the machine's effects carried out until it is done.
    fn tick(&mut self) {
        let Some(view) = self.view() else {
            return;
        };
        self.chain_id = Some(view.chain_id);
        let mut input = Input::Tick(Box::new(view));
        loop {
            let effect = {
                let mut s = self.shared.lock();
                self.machine
                    .handle(micros_since_epoch(), input, &mut s.service)
            };
            let Some(effect) = effect else {
                return;
            };
            input = self.execute(effect);
        }
    }

    /// Carries out one effect; its result.
    fn execute(&mut self, effect: Effect) -> Input {
        match effect {
            Effect::FetchGenesis => Input::Genesis(
                self.get("/api/v1/genesis")
                    .and_then(|v| serde_json::from_value(v).ok()),
            ),
            Effect::FetchRegistry { accounts } => {
                let accounts: Vec<String> = accounts.iter().map(ToString::to_string).collect();
                let path = format!(
                    "/api/v1/sealed/registry/proof?accounts={}",
                    accounts.join(",")
                );
                Input::Records(self.get(&path).and_then(|v| finalized_records(&v)))
            }
            Effect::FetchValidatorSets => Input::ValidatorSets(
                self.get("/api/v1/epochs")
                    .and_then(|v| {
                        serde_json::from_value::<Vec<quartier_node::sync::EpochEvidence>>(
                            v["changes"].clone(),
                        )
                        .ok()
                    })
                    .and_then(|changes| {
                        changes
                            .iter()
                            .map(|c| c.decode().ok())
                            .collect::<Option<Vec<_>>>()
                    }),
            ),
            Effect::FetchEpochs => Input::Records(
                self.get("/api/v1/sealed/epochs/proof")
                    .and_then(|v| finalized_records(&v)),
            ),
            Effect::FetchBatch { region, slot } => {
                let path = format!("/api/v1/regions/{}/batches/{}/proof", region.0, slot.0);
                Input::Batch(
                    self.get(&path)
                        .and_then(|v| finalized_batch(&v))
                        .map(Box::new),
                )
            }
            Effect::FetchQuote { member } => Input::Quote(
                self.peers_of(member)
                    .iter()
                    .find_map(|p| match p.get("/enclave/v1/status") {
                        Ok((200, status)) => serde_json::from_value(status["quote"].clone()).ok(),
                        _ => None,
                    })
                    .map(Box::new),
            ),
            Effect::Call { member, request } => {
                let answer = self.call_member(member, &request);
                if let Some(Response::Refused(why)) = &answer {
                    tracing::debug!(%member, %why, "a member refused");
                }
                Input::Answer(answer)
            }
            Effect::Submit(body) => Input::Submitted(self.submit(body)),
            Effect::Seal => Input::Sealed(self.seal()),
        }
    }

    /// The peers that proved to serve `member`'s enclave: each configured
    /// peer is asked to sign a fresh challenge and the URL dialled with its
    /// account key, every 30 s (before, the account a peer's status named
    /// was taken on its word, so a peer listed first could claim another
    /// member's account and take every request meant for it; a challenge
    /// relayed to that member is refused there, for another URL).
    fn peers_of(&mut self, member: AccountId) -> Vec<NodeClient> {
        let stale = self.by_account.as_ref().is_none_or(|(at, map)| {
            at.elapsed() > Duration::from_secs(30)
                || (!map.contains_key(&member) && at.elapsed() > Duration::from_secs(2))
        });
        if stale {
            let mut by_account: BTreeMap<AccountId, Vec<NodeClient>> = BTreeMap::new();
            for p in self.peers.clone() {
                if self.quiet(&p) {
                    continue;
                }
                let Ok(nonce) = quartier_client::random_seed() else {
                    continue;
                };
                let url = format!("http://{}", p.authority());
                match call(
                    &p,
                    &Request::Identify {
                        nonce,
                        url: url.clone(),
                    },
                ) {
                    Some(Response::Identity(account, signature))
                        if proves(&account, (&nonce, &url), &signature) =>
                    {
                        by_account.entry(account).or_default().push(p);
                    }
                    Some(_) => {}
                    None => self.silence(&p),
                }
            }
            self.by_account = Some((Instant::now(), by_account));
        }
        self.by_account
            .as_ref()
            .and_then(|(_, m)| m.get(&member))
            .cloned()
            .unwrap_or_default()
    }

    /// `request` to `member`'s enclave: the first of its proven peers that
    /// answers; one that does not is left quiet for a while.
    /// A refusal is not taken as the member's last word while another
    /// proven peer remains (a relay may refuse in its name), and a peer
    /// that took over 2 s is left unasked for a while too.
    fn call_member(&mut self, member: AccountId, request: &Request) -> Option<Response> {
        let mut refused = None;
        for p in self.peers_of(member) {
            if self.quiet(&p) {
                continue;
            }
            let started = Instant::now();
            let answer = call(&p, request);
            if answer.is_none() || started.elapsed() > Duration::from_secs(2) {
                self.silence(&p);
            }
            match answer {
                Some(Response::Refused(why)) => refused = Some(Response::Refused(why)),
                Some(answer) => return Some(answer),
                None => {}
            }
        }
        refused
    }

    fn quiet(&self, peer: &NodeClient) -> bool {
        self.quiet_until
            .get(peer.authority())
            .is_some_and(|until| Instant::now() < *until)
    }

    fn silence(&mut self, peer: &NodeClient) {
        self.quiet_until.insert(
            peer.authority().to_string(),
            Instant::now() + Duration::from_secs(10),
        );
    }

    /// Signs and submits `body` from the enclave's account, one at a time.
    fn submit(&mut self, body: TxBody) -> bool {
        let Some(chain_id) = self.chain_id else {
            return false;
        };
        let (account, key) = {
            let s = self.shared.lock();
            (s.service.account(), s.service.account_key().clone())
        };
        let Some(nonce) = self
            .get(&format!("/api/v1/accounts/{account}"))
            .and_then(|a| a["nonce"].as_u64())
        else {
            return false;
        };
        if let Some((sent, hash, at)) = self.in_flight
            && nonce <= sent
        {
            // The last one has not applied: wait for it, unless the chain
            // refused it (e.g. another member's report came first) or it
            // is lost; then its nonce is free again.
            let status = self.nodes.iter().find_map(|n| n.tx_status(&hash).ok());
            let dead = match status {
                Some(TxStatus::Rejected { .. }) => true,
                Some(TxStatus::Pending | TxStatus::Finalized { .. }) => false,
                Some(TxStatus::Unknown) | None => at.elapsed() > Duration::from_secs(2),
            };
            if !dead {
                return false;
            }
        }
        let tx = quartier_client::tx::sign(chain_id, &key, nonce, body);
        let body = quartier_client::tx::submit_body(&tx);
        let sent = self
            .nodes
            .iter()
            .any(|n| matches!(n.post("/api/v1/txs", &body), Ok((200..=299, _))));
        if sent {
            self.in_flight = Some((nonce, tx.hash(), Instant::now()));
        }
        sent
    }

    /// Seals the enclave's state; whether it was written.
    fn seal(&self) -> bool {
        self.shared.lock().seal()
    }
}

/// Whether `signature` is `account`'s over the challenge `nonce` sent to
/// `url`.
fn proves(account: &AccountId, (nonce, url): (&[u8; 32], &str), signature: &[u8; 64]) -> bool {
    ed25519_dalek::VerifyingKey::from_bytes(&account.0).is_ok_and(|key| {
        key.verify_strict(
            &quartier_enclave::rpc::identify_message(nonce, url).0,
            &ed25519_dalek::Signature::from_bytes(signature),
        )
        .is_ok()
    })
}

/// A `/sealed/registry/proof` answer as the enclave takes it.
fn finalized_records(v: &serde_json::Value) -> Option<FinalizedRecords> {
    let bytes = |text: &serde_json::Value| hex::decode(text.as_str()?).ok();
    Some(FinalizedRecords {
        block: bytes(&v["block"])?,
        finalization: bytes(&v["finalization"])?,
        proofs: v["proofs"]
            .as_array()?
            .iter()
            .map(|p| borsh::from_slice(&bytes(p)?).ok())
            .collect::<Option<Vec<_>>>()?,
    })
}

/// A `/batches/{slot}/proof` answer as the enclave takes it.
fn finalized_batch(v: &serde_json::Value) -> Option<FinalizedBatch> {
    let field = |name: &str| hex::decode(v[name].as_str()?).ok();
    Some(FinalizedBatch {
        block: field("block")?,
        finalization: field("finalization")?,
        proof: borsh::from_slice(&field("proof")?).ok()?,
        genesis: borsh::from_slice(&field("genesis")?).ok()?,
    })
}

/// The wall clock in µs since the Unix epoch (0 before it): where the ids
/// this host numbers (signing sessions, DKG attempts) start, so they keep
/// increasing across its restarts.
fn micros_since_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is the failure report
    use super::*;

    /// An enclave behind its RPC handler, served at `http://127.0.0.1:7501`.
    fn served() -> (Handle, AccountId) {
        let vendor = SimulatedAttestationService::new([8; 32]);
        let platform = SimulatedPlatform::new([9; 32], Measurement([1; 32]), vendor.root());
        let service = EnclaveService::new(&platform).unwrap();
        let account = service.account();
        let quote = vendor.quote(Measurement([1; 32]), service.report_data());
        let dir = std::env::temp_dir().join(format!("quartier-host-test-{}", std::process::id()));
        let shared = Arc::new(Mutex::new(Shared {
            service,
            url: "http://127.0.0.1:7501".into(),
            quote,
            platform,
            state_file: dir.join("state.sealed"),
            sealed_changes: 0,
        }));
        (shared, account)
    }

    fn ask(shared: &Handle, request: &Request) -> Response {
        let body =
            serde_json::from_str(&quartier_client::enclave::rpc_body(request).unwrap()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Json(reply) = runtime.block_on(rpc(AxumState(shared.clone()), Json(body)));
        quartier_enclave::rpc::decode_response(
            &hex::decode(reply["response"].as_str().unwrap()).unwrap(),
        )
        .unwrap()
    }

    /// A Byzantine peer relays a host's challenge to another member's
    /// enclave to pass as that member: the member's host refuses a
    /// challenge for a URL it does not serve, and a proof for its own URL
    /// does not verify for the relay's.
    #[test]
    fn a_relayed_identity_challenge_proves_nothing() {
        let (shared, account) = served();
        let nonce = [3; 32];
        let relay = "http://127.0.0.1:7666";
        let relayed = ask(
            &shared,
            &Request::Identify {
                nonce,
                url: relay.into(),
            },
        );
        assert!(matches!(relayed, Response::Refused(_)), "{relayed:?}");
        let own = "http://127.0.0.1:7501";
        let Response::Identity(who, signature) = ask(
            &shared,
            &Request::Identify {
                nonce,
                url: own.into(),
            },
        ) else {
            panic!("no identity");
        };
        assert_eq!(who, account);
        assert!(proves(&account, (&nonce, own), &signature));
        assert!(!proves(&account, (&nonce, relay), &signature));
        assert!(!proves(&account, (&[4; 32], own), &signature));
    }
}
