//! `quartier enclave run`: the untrusted host process around one auctioneer
//! enclave (DESIGN §7). There is no TEE hardware here, so the enclave
//! ([`EnclaveService`]) runs inside this process and its boundary is the
//! [`Request`]/[`Response`] API: the host carries bytes between the enclave,
//! its peers and the chain, and never needs a secret to do so. Attestation
//! and sealing use the **simulated** backends.
//!
//! The host's loop follows the chain's mode B state (`GET /api/v1/sealed`):
//! register the enclave; when all `n` expected enclaves are registered, the
//! member with the lowest account runs the DKG over the peers' APIs and every
//! member votes its group key into office; the member whose turn it is
//! creates each epoch key ahead of its slots, seals it to the others and has
//! it signed and published; every member clears every closed batch in slot
//! order; and for each batch one member (by turn, any other after a delay)
//! collects `t` signature shares and posts the report. The enclave's state is
//! sealed to a file after every change, so a restarted host resumes.
// The host is I/O: it waits on the chain and its peers in wall-clock time.
#![allow(clippy::disallowed_methods)]

use crate::client::NodeClient;
use axum::extract::State as AxumState;
use axum::routing::{get, post};
use axum::{Json, Router};
use commonware_utils::sync::Mutex;
use quartier_enclave::attestation::{
    Measurement, Quote, SimulatedAttestationService, select_committee,
};
use quartier_enclave::auctioneer::SlotSummary;
use quartier_enclave::committee::GroupSignature;
use quartier_enclave::coordinator::{SignEffect, SignOutcome, SigningSession};
use quartier_enclave::dkg::{DkgEffect, DkgOutcome, DkgSession};
use quartier_enclave::rpc::{Request, Response, decode_request};
use quartier_enclave::sealed::Epoch;
use quartier_enclave::service::{
    ChainError, EnclaveService, FinalizedBatch, FinalizedRecords, Purpose, ServiceError,
    SimulatedMonotonicCounter, SimulatedPlatform,
};
use quartier_ledger::{ChainId, Committee, Enclave, Genesis, SealedMarketPolicy, Tx, TxBody};
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
    /// [`crate::config::ConfigError`] naming the file and the problem.
    pub fn load(
        path: &std::path::Path,
        measurement: Measurement,
    ) -> Result<EnclaveHostConfig, crate::config::ConfigError> {
        let text = std::fs::read_to_string(path).map_err(crate::config::io_error(path))?;
        let mut file: EnclaveConfigFile =
            toml::from_str(&text).map_err(|e| crate::config::invalid(path, e))?;
        // Every host seats the same committee from the same registry (the
        // convention `select_committee` is), and a registry proof carries
        // at most the chain's largest committee.
        if !(2..=quartier_ledger::MAX_COMMITTEE).contains(&file.committee_size) {
            return Err(crate::config::invalid(
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
            simulated_platform_secret: crate::config::read_key(
                &file.simulated_platform_secret_file,
            )?,
            simulated_attestation_seed: crate::config::read_key(
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
            let limits = crate::api_guard::ApiLimits::default();
            let _ = crate::api_guard::serve(listener, router(api), limits).await;
        });
    });
    let mut host = Host::new(config.clone(), shared);
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

/// Calls an enclave's API: `None` if it is unreachable or answers nonsense.
pub fn call(peer: &NodeClient, request: &Request) -> Option<Response> {
    let body = json!({ "request": hex::encode(borsh::to_vec(request).ok()?) }).to_string();
    let (code, reply) = peer.post("/enclave/v1/rpc", &body).ok()?;
    if code != 200 {
        return None;
    }
    let bytes = hex::decode(reply["response"].as_str()?).ok()?;
    borsh::from_slice(&bytes).ok()
}

/// The chain's mode B state as the host reads it.
struct ChainView {
    chain_id: ChainId,
    time_ms: u64,
    slot_ms: u64,
    lead_slots: u64,
    regions: Vec<RegionId>,
    policy: SealedMarketPolicy,
    enclaves: BTreeMap<AccountId, Enclave>,
    committee: Option<Committee>,
    epochs: BTreeMap<Epoch, [u8; 32]>,
    /// Closed batches awaiting a report (contents fetched when cleared).
    batches: Vec<(RegionId, Slot)>,
}

struct Host {
    config: EnclaveHostConfig,
    shared: Handle,
    nodes: Vec<NodeClient>,
    peers: Vec<NodeClient>,
    /// A transaction sent and not yet seen applied: (nonce, hash, when).
    in_flight: Option<(u64, quartier_types::hash::Digest, Instant)>,
    /// When each batch was first seen cleared here.
    cleared_at: BTreeMap<(RegionId, Slot), Instant>,
    voted: Option<quartier_enclave::committee::GroupPublicKey>,
    /// The latest signing session this host coordinated.
    last_session: u64,
    /// The latest DKG attempt this host coordinated.
    last_attempt: u64,
    /// When this member last sent its published epoch keys to the others.
    reshared_at: Option<Instant>,
    /// When this member last delivered its DKG certificate to the others.
    certified_at: Option<Instant>,
    /// The chain's genesis document, once read (the enclave checks it
    /// against its committee's chain id).
    genesis: Option<Genesis>,
    /// When the enclave last took the chain's registry.
    observed_at: Option<Instant>,
    /// When the enclave was last shown the chain's epoch keys, and the
    /// epochs the view listed then.
    epochs_observed_at: Option<Instant>,
    epochs_seen: std::collections::BTreeSet<Epoch>,
}

impl Host {
    fn new(config: EnclaveHostConfig, shared: Handle) -> Host {
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
        Host {
            config,
            shared,
            nodes,
            peers,
            in_flight: None,
            cleared_at: BTreeMap::new(),
            voted: None,
            last_session: 0,
            last_attempt: 0,
            reshared_at: None,
            certified_at: None,
            genesis: None,
            observed_at: None,
            epochs_observed_at: None,
            epochs_seen: std::collections::BTreeSet::new(),
        }
    }

    /// Shows the enclave the chain's mode B registry (it verifies the
    /// certificate and proofs itself) with the registrations of the
    /// committee this host would invite: it runs a DKG only among enclaves
    /// registered there. At most once a second.
    fn observe_registry(&mut self, view: &ChainView) {
        if self
            .observed_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.observed_at = Some(Instant::now());
        let Some(genesis) = self.genesis() else {
            return;
        };
        let accounts: Vec<String> = self
            .would_invite(view)
            .iter()
            .map(ToString::to_string)
            .collect();
        let path = format!(
            "/api/v1/sealed/registry/proof?accounts={}",
            accounts.join(",")
        );
        let Some(records) = self.get(&path).and_then(|v| finalized_records(&v)) else {
            return;
        };
        let taken = self
            .shared
            .lock()
            .service
            .observe_registry(&genesis, &records);
        if let Err(why) = taken {
            tracing::warn!(%why, "the enclave did not take the chain's registry");
            // Perhaps a node's genesis of another chain: read it again.
            self.genesis = None;
        }
    }

    /// Shows the enclave the epoch keys the chain published (it verifies
    /// the certificate and the proof itself): a newly published epoch at
    /// once; an epoch the view lists that the enclave has not settled (it
    /// may get its share later) once a second; otherwise not at all (every
    /// host of a devnet shares one address's proof places with the batch
    /// proofs). Whether that changed the enclave.
    fn observe_epochs(&mut self, view: &ChainView) -> bool {
        let new = view.epochs.keys().any(|e| !self.epochs_seen.contains(e));
        // Only epochs the enclave still keeps keys for (the chain lists
        // older ones too).
        let newest = view.epochs.keys().next_back().map_or(0, |e| e.0);
        let kept = newest.saturating_sub(quartier_enclave::service::KEPT_EPOCHS_BEHIND);
        let unsettled = view
            .epochs
            .range(Epoch(kept)..)
            .any(|(e, k)| self.shared.lock().service.settled_epoch_key(*e) != Some(*k));
        let waited = self
            .epochs_observed_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if !(new || (unsettled && waited)) {
            return false;
        }
        self.epochs_observed_at = Some(Instant::now());
        self.epochs_seen = view.epochs.keys().copied().collect();
        let Some(genesis) = self.genesis() else {
            return false;
        };
        let Some(records) = self
            .get("/api/v1/sealed/epochs/proof")
            .and_then(|v| finalized_records(&v))
        else {
            return false;
        };
        let taken = self
            .shared
            .lock()
            .service
            .observe_epochs(&genesis, &records);
        taken.unwrap_or_else(|why| {
            tracing::warn!(%why, "the enclave did not take the chain's epoch keys");
            if matches!(why, ServiceError::Chain(ChainError::OtherChain)) {
                // Perhaps a node's genesis of another chain: read it again.
                self.genesis = None;
            }
            false
        })
    }

    /// The committee this host's rule seats from the registered enclaves
    /// (every host computes the same from the same view).
    fn would_invite(&self, view: &ChainView) -> Vec<AccountId> {
        let registered: Vec<(AccountId, u16)> =
            view.enclaves.iter().map(|(a, e)| (*a, e.vendor)).collect();
        select_committee(&registered, self.config.committee_size)
    }

    /// The chain's genesis document, read from a node once.
    fn genesis(&mut self) -> Option<Genesis> {
        if self.genesis.is_none() {
            self.genesis = self
                .get("/api/v1/genesis")
                .and_then(|v| serde_json::from_value(v).ok());
        }
        self.genesis.clone()
    }

    fn get(&self, path: &str) -> Option<serde_json::Value> {
        self.nodes.iter().find_map(|n| match n.get(path) {
            Ok((200, v)) => Some(v),
            _ => None,
        })
    }

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
        let epochs = crate::client::epoch_keys(&sealed).into_iter().collect();
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
        Some(ChainView {
            chain_id,
            time_ms: status["time_ms"].as_u64()?,
            slot_ms: status["slot_ms"].as_u64()?.max(1),
            lead_slots: status["lead_slots"].as_u64()?,
            regions: status["regions"]
                .as_array()?
                .iter()
                .filter_map(|r| Some(RegionId(u32::try_from(r["region"].as_u64()?).ok()?)))
                .collect(),
            policy: serde_json::from_value(sealed["policy"].clone()).ok()?,
            enclaves,
            committee: serde_json::from_value(sealed["committee"].clone()).ok()?,
            epochs,
            batches,
        })
    }

    /// Signs and submits `body` from the enclave's account, one at a time.
    fn submit(&mut self, view: &ChainView, body: TxBody) -> bool {
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
            let status = self
                .get(&format!("/api/v1/txs/{hash}"))
                .and_then(|v| v["status"].as_str().map(str::to_owned));
            let dead = match status.as_deref() {
                Some("rejected") => true,
                Some("pending" | "finalized") => false,
                _ => at.elapsed() > Duration::from_secs(2),
            };
            if !dead {
                return false;
            }
        }
        let tx = Tx {
            chain_id: view.chain_id,
            signer: account,
            nonce,
            body,
        }
        .sign(&key);
        let body = json!({ "tx": hex::encode(tx.encode()) }).to_string();
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

    fn tick(&mut self) {
        let Some(view) = self.view() else {
            return;
        };
        let me = self.shared.lock().service.account();
        if !view.enclaves.contains_key(&me) {
            self.register(&view);
            return;
        }
        let Some(committee) = view.committee.clone() else {
            self.observe_registry(&view);
            self.form_committee(&view, me);
            return;
        };
        let Some(index) = committee.members.iter().position(|m| *m == me) else {
            // Outside the committee: its registry stays current (a committee
            // in office, a revoked measurement), so no DKG takes it in.
            self.observe_registry(&view);
            return;
        };
        if self.shared.lock().service.group_key() != Some(committee.group_key) {
            return;
        }
        // Clear only with the keys the chain published, as the enclave
        // checks them itself.
        if self.observe_epochs(&view) {
            self.seal();
        }
        self.publish_epoch_keys(&view, &committee, index);
        self.reshare_epoch_keys(&view, &committee);
        if self.catch_up(&view, &committee) {
            self.clear_and_report(&view, &committee, index);
        }
    }

    /// Whether this member is in step with the chain's reports; if a slot
    /// was reported that it never cleared (it was down, or slower than the
    /// others), it takes a peer's clearing state sealed to its identity.
    fn catch_up(&mut self, view: &ChainView, committee: &Committee) -> bool {
        let mut behind = false;
        let mut reported = BTreeMap::new();
        // The chain's latest report per region with its group signature: a
        // peer's state is taken only with these ledgers (the enclave checks).
        let mut signed = Vec::new();
        for region in &view.regions {
            let path = format!("/api/v1/regions/{}/reports?last=1", region.0);
            let Some(body) = self.get(&path) else {
                continue;
            };
            let Some(latest) = body["reports"][0]["summary"]["slot"].as_u64() else {
                continue;
            };
            reported.insert(*region, Slot(latest));
            let posted: Option<quartier_ledger::PostedReport> =
                serde_json::from_value(body["reports"][0].clone()).ok();
            let posted = posted.map(|p| {
                signed.push((p.summary.clone(), p.signature));
                p.summary
            });
            let (cleared, mine) = {
                let s = self.shared.lock();
                (
                    s.service.last_cleared(*region),
                    s.service
                        .report(*region, Slot(latest))
                        .map(|r| r.summary.clone()),
                )
            };
            // Cleared, but not as the chain took it (t others cleared the
            // slot otherwise, e.g. after the epoch's key was erased here and
            // not there): this member's ledger is off, it takes theirs.
            let diverged = cleared == Some(Slot(latest))
                && mine.is_some_and(|m| posted.is_some_and(|p| p != m));
            behind |= cleared.is_none_or(|c| c.0 < latest) || diverged;
        }
        if !behind {
            return true;
        }
        // Only a state at exactly the chain's reports: one that cleared
        // further holds slots the chain has not taken yet, whose reports this
        // member would then never have computed, so it could not sign them
        // (with one member down, the region would stop).
        self.take_peer_state(committee, &signed, |state| {
            let cleared: BTreeMap<RegionId, Slot> = state.cleared.iter().copied().collect();
            cleared == reported
        })
    }

    /// Adopts the first peer's clearing state that `enough` accepts and the
    /// enclave takes (it refuses one older than its own); whether one was.
    fn take_peer_state(
        &mut self,
        committee: &Committee,
        signed: &[(SlotSummary, GroupSignature)],
        enough: impl Fn(&quartier_enclave::service::CatchUp) -> bool,
    ) -> bool {
        let (me, identity) = {
            let s = self.shared.lock();
            (s.service.account(), s.service.identity_key())
        };
        let peers = self.peers_by_member(&committee.members);
        for (member, peer) in committee.members.iter().zip(&peers) {
            let Some(peer) = peer.as_ref().filter(|_| *member != me) else {
                continue;
            };
            let Some(Response::CatchUp(state)) = call(peer, &Request::CatchUp { to: identity })
            else {
                continue;
            };
            if enough(&state) && self.shared.lock().service.catch_up(&state, signed).is_ok() {
                tracing::info!(from = %member, "took a peer's clearing state");
                self.seal();
                return true;
            }
        }
        false
    }

    fn register(&mut self, view: &ChainView) {
        let (quote, identity_key) = {
            let s = self.shared.lock();
            (s.quote.clone(), s.service.identity_key())
        };
        self.seal();
        self.submit(
            view,
            TxBody::RegisterEnclave {
                quote,
                identity_key,
            },
        );
    }

    /// `n` registered enclaves, spread over the vendors
    /// ([`select_committee`]), form the committee; the lowest of them runs
    /// the DKG; each member votes for its result, naming the members the
    /// DKG ran with (not today's selection: a later registration can change
    /// that, and a vote for another list would never reach the chain's
    /// unanimity), with the group's signature over them and the threshold
    /// (the members sign only what their own DKG formed).
    fn form_committee(&mut self, view: &ChainView, me: AccountId) {
        let formed = {
            let s = self.shared.lock();
            s.service.group_key().zip(
                s.service
                    .committee_members()
                    .zip(s.service.committee_threshold()),
            )
        };
        if let Some((group_key, (members, threshold))) = formed {
            self.deliver_certificate(&members);
            if self.voted != Some(group_key)
                && let Some(signature) = self.sign(&members, threshold, Purpose::Committee)
                && self.submit(
                    view,
                    TxBody::ActivateCommittee {
                        members,
                        group_key,
                        signature,
                    },
                )
            {
                self.voted = Some(group_key);
            }
            return;
        }
        let members = self.would_invite(view);
        if members.len() < self.config.committee_size || !members.contains(&me) {
            return;
        }
        if members.first() == Some(&me) && self.run_dkg(view, &members).is_some() {
            self.seal();
        }
    }

    /// Until the committee is in office, every few seconds: the
    /// certificate this member's DKG was confirmed with, to every other
    /// member (one whose confirmation was lost, or whose host restarted it
    /// before it came, takes its key with it; a member that confirmed
    /// refuses every later DKG, so without it no committee would form).
    fn deliver_certificate(&mut self, members: &[AccountId]) {
        if self
            .certified_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.certified_at = Some(Instant::now());
        let Some((round1, signatures)) = self.shared.lock().service.dkg_certificate() else {
            return;
        };
        let request = Request::DkgConfirm { round1, signatures };
        let me = self.shared.lock().service.account();
        for (member, peer) in members.iter().zip(self.peers_by_member(members)) {
            if *member != me
                && let Some(peer) = peer
            {
                let _ = call(&peer, &request);
            }
        }
    }

    /// The peer clients by member index (matched through their status).
    fn peers_by_member(&self, members: &[AccountId]) -> Vec<Option<NodeClient>> {
        let mut by_account = BTreeMap::new();
        for p in &self.peers {
            if let Ok((200, s)) = p.get("/enclave/v1/status")
                && let Ok(account) = serde_json::from_value::<AccountId>(s["account"].clone())
            {
                // The first peer configured for an account keeps it: a later
                // one claiming the same account does not take its requests.
                by_account.entry(account).or_insert_with(|| p.clone());
            }
        }
        members.iter().map(|m| by_account.get(m).cloned()).collect()
    }

    fn run_dkg(&mut self, view: &ChainView, members: &[AccountId]) -> Option<()> {
        let peers: Vec<NodeClient> = self
            .peers_by_member(members)
            .into_iter()
            .collect::<Option<_>>()?;
        // Each member's quote, from its own API, for the identity the chain
        // registered (the enclaves check the quotes themselves).
        let mut quotes: Vec<Quote> = Vec::with_capacity(members.len());
        for (member, p) in members.iter().zip(&peers) {
            let registered = view.enclaves.get(member)?.identity_key;
            let quote: Quote = match p.get("/enclave/v1/status") {
                Ok((200, status)) => serde_json::from_value(status["quote"].clone()).ok()?,
                _ => return None,
            };
            if quote.report_data[..32] != registered {
                return None;
            }
            quotes.push(quote);
        }
        let t = view.policy.threshold;
        let chain = view.chain_id.0.0;
        // Each attempt later than the last (the members start over only for
        // a later one): the clock in µs, or one past the last.
        let attempt = micros_since_epoch().max(self.last_attempt.saturating_add(1));
        self.last_attempt = attempt;
        // The sans-IO DKG decides; this host only carries its requests.
        let (mut dkg, effects) = {
            let s = self.shared.lock();
            DkgSession::start(&s.service, chain, t, attempt, quotes)
        };
        let mut queue: std::collections::VecDeque<DkgEffect> = effects.into();
        while let Some(DkgEffect::Call { member, request }) = queue.pop_front() {
            let answer = peers
                .get(usize::from(member))
                .and_then(|p| call(p, &request));
            queue.extend(dkg.reply(member, answer));
        }
        match dkg.outcome() {
            DkgOutcome::Formed(_) => {
                tracing::info!(members = members.len(), t, "committee key generated");
                Some(())
            }
            outcome => {
                tracing::warn!(?outcome, "committee key generation failed");
                None
            }
        }
    }

    /// One signing session for `purpose` among the reachable members: the
    /// sans-IO [`SigningSession`] decides, this host only carries its
    /// requests (members that fail or cheat are left out and others asked).
    fn sign(
        &mut self,
        members: &[AccountId],
        threshold: u16,
        purpose: Purpose,
    ) -> Option<GroupSignature> {
        let peers = self.peers_by_member(members);
        // Session ids only increase (the members refuse any other): the
        // clock in µs, or one past the last.
        let session = micros_since_epoch().max(self.last_session.saturating_add(1));
        let n = u16::try_from(members.len()).ok()?;
        let (mut signing, effects) = {
            let s = self.shared.lock();
            SigningSession::start(&s.service, session, purpose, n, threshold)
        };
        let mut queue: std::collections::VecDeque<SignEffect> = effects.into();
        while let Some(SignEffect::Call { member, request }) = queue.pop_front() {
            let answer = peers
                .get(usize::from(member))
                .and_then(Option::as_ref)
                .and_then(|p| call(p, &request));
            if let Some(Response::Refused(why)) = &answer {
                tracing::debug!(?purpose, member, %why, "a member refused");
            }
            let s = self.shared.lock();
            queue.extend(signing.reply(&s.service, member, answer));
        }
        self.last_session = signing.session();
        match signing.outcome() {
            SignOutcome::Signed(signature) => Some(*signature),
            SignOutcome::Failed(why) => {
                tracing::debug!(?purpose, %why, "signing failed");
                None
            }
            SignOutcome::Pending => None,
        }
    }

    /// Keys for the slots orders may be placed for now, created by the
    /// member whose turn the epoch is, published with the committee's signature.
    /// Every few seconds, every published key this member holds goes again
    /// to the others, sealed to each: a member that was down when a key was
    /// shared gets it (no peer's whole state is trusted for it).
    fn reshare_epoch_keys(&mut self, view: &ChainView, committee: &Committee) {
        if self
            .reshared_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(3))
        {
            return;
        }
        self.reshared_at = Some(Instant::now());
        let peers = self.peers_by_member(&committee.members);
        // Every published key this member still holds (the erasure schedule
        // keeps a few): a member that caught up from a peer's state takes
        // none of its keys, and may need an older epoch's for a batch still
        // waiting.
        for (epoch, public_key) in view.epochs.iter().map(|(e, k)| (*e, *k)) {
            let Ok(shares) = self.shared.lock().service.reshare_epoch_key(epoch) else {
                continue;
            };
            // Each share opens only for its recipient; the rest refuse it.
            for share in shares {
                for p in peers.iter().flatten() {
                    let request = Request::ReceiveEpochKey {
                        share: share.clone(),
                        public_key,
                    };
                    if matches!(call(p, &request), Some(Response::EpochKeyReceived)) {
                        break;
                    }
                }
            }
        }
    }

    fn publish_epoch_keys(&mut self, view: &ChainView, committee: &Committee, index: usize) {
        let now = Slot(view.time_ms / view.slot_ms);
        let first = view.policy.epoch_of(now);
        let last = view
            .policy
            .epoch_of(Slot(now.0.saturating_add(view.lead_slots + 1)));
        let n = committee.members.len().max(1) as u64;
        for e in first.0..=last.0 {
            let epoch = Epoch(e);
            if view.epochs.contains_key(&epoch) {
                continue;
            }
            if usize::try_from(e % n).ok() != Some(index) && epoch > first {
                continue;
            }
            let held = self.shared.lock().service.epoch_key(epoch);
            let public_key = match held {
                Some(k) => k,
                None => {
                    let created = {
                        let mut s = self.shared.lock();
                        s.service.create_epoch_key(epoch)
                    };
                    let Ok((public_key, shares)) = created else {
                        return;
                    };
                    // Sealed before a share leaves: a restart while sending
                    // does not make this member create a second key (and if
                    // it can not be sealed, no share leaves).
                    if !self.seal() {
                        return;
                    }
                    let peers = self.peers_by_member(&committee.members);
                    for share in shares {
                        for p in peers.iter().flatten() {
                            let _ = call(
                                p,
                                &Request::ReceiveEpochKey {
                                    share: share.clone(),
                                    public_key,
                                },
                            );
                        }
                    }
                    public_key
                }
            };
            let purpose = Purpose::EpochKey { epoch, public_key };
            if let Some(signature) = self.sign(&committee.members, committee.threshold, purpose) {
                self.submit(
                    view,
                    TxBody::PublishEpochKey {
                        epoch,
                        public_key,
                        signature,
                    },
                );
            }
            return;
        }
    }

    /// Clears every closed batch in order; posts the report when it is this
    /// member's turn (or another member's turn passed a second ago).
    fn clear_and_report(&mut self, view: &ChainView, committee: &Committee, index: usize) {
        let mut batches = view.batches.clone();
        batches.sort_by_key(|(region, slot)| (*slot, *region));
        let n = committee.members.len().max(1);
        for (region, slot) in batches {
            let done = self
                .shared
                .lock()
                .service
                .last_cleared(region)
                .is_some_and(|last| last >= slot);
            // Not further ahead of the chain's reports than the enclave
            // keeps reports: one cleared and dropped before it was signed
            // would never be signed.
            if !done && self.cleared_at.len() >= quartier_enclave::service::KEPT_REPORTS / 2 {
                return;
            }
            if !done {
                // The batch as the chain finalized it: the enclave checks
                // the certificate and the proof itself, so no node (nor
                // this host) can hand it a batch the chain never closed.
                let Some(genesis) = self.genesis() else {
                    return;
                };
                let path = format!("/api/v1/regions/{}/batches/{}/proof", region.0, slot.0);
                let Some(proven) = self.get(&path).and_then(|v| finalized_batch(&v)) else {
                    return;
                };
                let cleared = self
                    .shared
                    .lock()
                    .service
                    .clear_finalized(&genesis, region, slot, &proven)
                    .map(|_| ());
                if matches!(cleared, Err(ServiceError::Chain(ChainError::OtherChain))) {
                    // Another chain's genesis (a node that lied, or of
                    // another chain): read it again, perhaps from another.
                    self.genesis = None;
                }
                let cleared = cleared.map_err(|e| e.to_string());
                if let Err(why) = cleared {
                    // E.g. a published epoch key whose share never arrived.
                    // Not taken from a peer's whole clearing state: a
                    // Byzantine member would hand over a forged ledger (the
                    // recovery of one key is still to be built).
                    tracing::warn!(region = region.0, slot = slot.0, %why, "can not clear batch");
                    return;
                }
                self.seal();
                self.cleared_at.insert((region, slot), Instant::now());
            }
            let turn = (index + n - (slot.0 % n as u64) as usize) % n;
            let waited = self
                .cleared_at
                .get(&(region, slot))
                .map_or(Duration::MAX, Instant::elapsed);
            if waited < Duration::from_secs(turn as u64) {
                continue;
            }
            let Some(summary) = self
                .shared
                .lock()
                .service
                .report(region, slot)
                .map(|r| r.summary.clone())
            else {
                continue;
            };
            if let Some(signature) = self.sign(
                &committee.members,
                committee.threshold,
                Purpose::Report { region, slot },
            ) {
                self.submit(view, TxBody::PostSettlementReport { summary, signature });
            }
            // One report per tick: the next waits for this one's nonce.
            return;
        }
        self.cleared_at.retain(|k, _| view.batches.contains(k));
    }
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
