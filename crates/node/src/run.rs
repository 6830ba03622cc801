//! Runs one validator as an OS process: tokio runtime, authenticated p2p with
//! the static validator set, consensus, transaction gossip and the HTTP API.

use crate::api::{self, Gossip};
use crate::config::{NetworkGenesis, NodeConfig, read_key};
use crate::storage::BlockLog;
use crate::validator::{
    self, CHANNEL_BACKFILL, CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_RESOLVER, CHANNEL_VOTES,
    Channels, ValidatorConfig,
};
use crate::{LedgerApp, Mempool, MempoolConfig};
use anyhow::{Context as _, anyhow};
use commonware_codec::DecodeExt as _;
use commonware_cryptography::{ChaCha20Poly1305, Signer as _, ed25519};
use commonware_p2p::authenticated::lookup;
use commonware_p2p::{Address, AddressableManager as _, Receiver as _, Recipients, Sender as _};
use commonware_runtime::{
    IoBuf, Metrics as _, Quota, Runner as _, Spawner as _, Supervisor as _, tokio,
};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::ordered::Map;
use commonware_utils::sync::Mutex;
use commonware_utils::{NZU32, NZU64, NZUsize};
use quartier_ledger::{SignedTx, State};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

/// p2p channel of transaction gossip.
pub const CHANNEL_TXS: u64 = 5;
/// The largest p2p message (a full block).
const MAX_MESSAGE: u32 = 8 * 1024 * 1024;

/// Messages per second each peer may send on a channel (and the burst it may
/// send at once). commonware sizes every channel's mailbox, and the router's,
/// from these (peers × burst slots, allocated and written at start), so they
/// are the validator's largest fixed cost: 100 000 a second on each channel
/// held 5.3 GB per process. Consensus needs a few messages per view (a view
/// takes ≥ 50 ms); gossip carries one message per transaction, and a slot's
/// orders arrive within about a second.
struct ChannelRates {
    votes: u32,
    certificates: u32,
    resolver: u32,
    backfill: u32,
    blocks: u32,
    txs: u32,
}

/// Threads serving the API (beside consensus' own).
const API_THREADS: usize = 2;

/// The validator's channel rates (see [`ChannelRates`]).
const CHANNEL_RATES: ChannelRates = ChannelRates {
    votes: 256,
    certificates: 256,
    resolver: 256,
    backfill: 128,
    blocks: 64,
    txs: 4096,
};

fn per_second(rate: u32) -> Quota {
    Quota::per_second(std::num::NonZeroU32::new(rate).unwrap_or(NZU32!(1)))
}

/// The consensus namespace of a chain (the light client's, see
/// [`quartier_light::namespace`]).
fn namespace(genesis: &NetworkGenesis) -> Vec<u8> {
    quartier_light::namespace(&genesis.ledger)
}

fn public_key(hex_key: &str) -> anyhow::Result<ed25519::PublicKey> {
    let bytes = hex::decode(hex_key).with_context(|| format!("peer key {hex_key}"))?;
    ed25519::PublicKey::decode(bytes::Bytes::from(bytes))
        .map_err(|e| anyhow!("peer key {hex_key}: {e}"))
}

/// Fetches `url`'s sync bundle and installs it in the empty `log`; returns
/// the certificate consensus starts from.
fn join_by_state_sync(
    config: &NodeConfig,
    genesis: &NetworkGenesis,
    log: &BlockLog,
    seed: &[u8],
    url: &str,
) -> anyhow::Result<crate::sync::BlockFinalization> {
    let consensus = config.data_dir.join("consensus");
    if std::fs::read_dir(&consensus).is_ok_and(|mut d| d.next().is_some()) {
        return Err(anyhow!(
            "state sync needs an empty data folder; {} holds consensus data",
            consensus.display()
        ));
    }
    let client = quartier_client::NodeClient::new(url)?;
    let (status, body) = client.get_bytes("/api/v1/sync", crate::sync::MAX_SYNC_RESPONSE_BYTES)?;
    if status != 200 {
        let body = String::from_utf8_lossy(&body);
        return Err(anyhow!("{url} serves no sync bundle ({status}): {body}"));
    }
    let bundle: crate::sync::SyncBundle =
        serde_json::from_slice(&body).context("sync bundle from the peer")?;
    // Batch verification's coefficients must be unpredictable to the peer:
    // derived from this node's secret key and the bundle.
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(
        quartier_types::hash::tagged("QUARTIER_STATE_SYNC_VERIFY", &[seed, &bundle.finalization]).0,
    );
    let anchor = quartier_light::ChainAnchor::from_genesis(&genesis.ledger)
        .map_err(|e| anyhow!("genesis validators: {e}"))?;
    let floor = crate::sync::install(log, &genesis.ledger, &anchor, &bundle, &mut rng)?;
    tracing::info!(
        snapshot = bundle.snapshot_height,
        blocks = bundle.blocks.len(),
        "joined by state sync from {url}"
    );
    Ok(floor)
}

/// Runs the node until the process is stopped. With `sync_from` (a peer's API
/// URL) a node with an empty data folder first joins from that peer's state
/// sync bundle, checked against the genesis validators.
///
/// # Errors
/// A one-line cause if the configuration, key, storage, the sync bundle or a
/// listener is unusable.
pub fn run(config: NodeConfig, sync_from: Option<&str>) -> anyhow::Result<()> {
    let genesis = NetworkGenesis::load(&config.genesis_file)?;
    let seed = read_key(&config.key_file)?;
    let signer = ed25519::PrivateKey::decode(bytes::Bytes::copy_from_slice(&seed))
        .map_err(|e| anyhow!("key: {e}"))?;
    let me = signer.public_key();
    // Validators and candidates: whom this node may ever connect to.
    let peers = genesis
        .address_book()
        .map(|p| Ok((public_key(&p.public_key)?, p.p2p)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !peers.iter().any(|(k, _)| *k == me) {
        return Err(anyhow!(
            "this node's key is neither a validator nor a candidate of the genesis"
        ));
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let state = State::from_genesis(genesis.ledger.clone()).map_err(|e| anyhow!("genesis: {e}"))?;
    let log = BlockLog::open(&config.data_dir.join("blocks.redb"))?;
    let floor = match sync_from {
        Some(url) => Some(join_by_state_sync(&config, &genesis, &log, &seed, url)?),
        None => None,
    };
    let mut app = LedgerApp::open(state, Mempool::new(MempoolConfig::default()), log)?
        .with_idle_block_interval(Duration::from_millis(config.idle_block_ms))
        .with_snapshot_interval(config.snapshot_every_blocks);
    if config.block_retention_ms > 0 {
        app = app.with_block_retention(Duration::from_millis(config.block_retention_ms));
    }
    tracing::info!(height = app.view().height, "resumed from the block log");

    let runtime = tokio::Config::new()
        .with_storage_directory(config.data_dir.join("consensus"))
        .with_worker_threads(2);
    tokio::Runner::new(runtime).start(|context| async move {
        let namespace = namespace(&genesis);
        let handshake = Cups::<_, ChaCha20Poly1305>::new(
            Sake {
                signer: signer.clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        );
        let mut p2p = lookup::Config::local(
            handshake,
            &[namespace.as_slice(), b"/p2p"].concat(),
            config.p2p_listen,
            NZUsize!(peers.len()),
            MAX_MESSAGE,
            NZUsize!(1024),
        );
        // Only the latest set counts: a validator voted out is disconnected
        // at the boundary.
        p2p.tracked_peer_sets = NZUsize!(1);
        let (mut network, mut oracle) = lookup::Network::new(context.child("network"), p2p);
        // The peers are the validators by governance and the current
        // epoch's (and this node): a candidate is connected once voted in,
        // so that it catches up before the epoch it signs.
        let epochs = app.epochs();
        let mut changes = epochs.watch();
        let mut tracked = connectable(&peers, &epochs, &me)?;
        let mut set_id = 0;
        oracle.track(set_id, tracked.clone());
        let mut tracker = oracle.clone();
        context.child("peers").spawn(move |_| async move {
            while futures::StreamExt::next(&mut changes).await.is_some() {
                match connectable(&peers, &epochs, &me) {
                    Ok(now) if now != tracked => {
                        set_id += 1;
                        tracing::info!(peers = now.len(), "validator peers changed");
                        tracker.track(set_id, now.clone());
                        tracked = now;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        });
        let rates = CHANNEL_RATES;
        let channels = Channels {
            votes: network.register(CHANNEL_VOTES, per_second(rates.votes)),
            certificates: network.register(CHANNEL_CERTIFICATES, per_second(rates.certificates)),
            resolver: network.register(CHANNEL_RESOLVER, per_second(rates.resolver)),
            backfill: network.register(CHANNEL_BACKFILL, per_second(rates.backfill)),
            blocks: network.register(CHANNEL_BLOCKS, per_second(rates.blocks)),
        };
        let (txs_out, mut txs_in) = network.register(CHANNEL_TXS, per_second(rates.txs));
        network.start();

        let partition = "validator";
        let mut validator_config = ValidatorConfig::new(&namespace, partition, signer);
        validator_config.floor = floor;
        // Consensus archives drop whole sections: one per snapshot interval.
        validator_config.archive_section =
            NonZeroU64::new(config.snapshot_every_blocks).unwrap_or(NZU64!(1024));
        validator::start(
            context.child("validator"),
            validator_config,
            channels,
            oracle.clone(),
            oracle,
            app.clone(),
            app.clone(),
        )
        .await?;

        // Transactions other validators accepted: admit them here too.
        let gossip_app = app.clone();
        context.child("gossip").spawn(move |_| async move {
            while let Ok((_, message)) = txs_in.recv().await {
                if let Ok(tx) = SignedTx::decode(message.as_ref()) {
                    let _ = gossip_app.submit(tx);
                }
            }
        });
        let txs_out = Arc::new(Mutex::new(txs_out));
        let gossip: Gossip = Arc::new(move |bytes: Vec<u8>| {
            txs_out
                .lock()
                .send(Recipients::All, IoBuf::from(bytes), false);
        });

        // Voted in, this validator joins with its own key (the ledger
        // seats it at a boundary only then); again at each change until
        // the chain has it (a join sent before any peer was connected is
        // sent again at the next boundary).
        let (join_app, join_gossip) = (app.clone(), gossip.clone());
        let ledger_key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut changes = app.epochs().watch();
        context.child("join").spawn(move |_| async move {
            loop {
                join_if_voted_in(&join_app, &ledger_key, &join_gossip);
                if futures::StreamExt::next(&mut changes).await.is_none() {
                    return;
                }
            }
        });

        let listener = std::net::TcpListener::bind(config.api_listen)
            .with_context(|| format!("binding the API on {}", config.api_listen))?;
        tracing::info!(api = %config.api_listen, p2p = %config.p2p_listen, "validator running");
        let runtime = context.child("metrics");
        let runtime_metrics: api::RuntimeMetrics = Arc::new(move || runtime.encode());
        let limits = crate::api_guard::ApiLimits::default();
        let router = api::router_with(
            app,
            gossip,
            api::Extras {
                runtime: Some(runtime_metrics),
                audit_report: config.audit_report.clone(),
                limits,
                sync_dir: Some(config.data_dir.join("sync")),
            },
        );
        // The API serves on threads of its own: however many clients read,
        // and however much they ask for, consensus keeps its runtime's
        // workers (and reads take no lock consensus needs, see
        // `LedgerApp::with_state`).
        let (done, api_stopped) = futures::channel::oneshot::channel();
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                let _ = done.send(serve_api(listener, router, limits));
            })
            .context("starting the API thread")?;
        api_stopped
            .await
            .map_err(|_| anyhow!("the API thread ended without a word"))?
    })
}

/// Sends `JoinValidators` signed by `key` if governance voted it in and it
/// neither signs the current epoch nor joined yet.
fn join_if_voted_in(app: &LedgerApp, key: &ed25519_dalek::SigningKey, gossip: &Gossip) {
    let me = quartier_types::AccountId(key.verifying_key().to_bytes());
    let tx = app.with_state(|s| {
        let epoch = s.consensus_epoch_of(quartier_types::Height(s.meta().height.0 + 1));
        let due = s.validators().contains(&me)
            && !s.joining().contains(&me)
            && !s.validator_set(epoch).is_some_and(|v| v.contains(&me));
        due.then(|| {
            quartier_ledger::Tx {
                chain_id: s.chain_id(),
                signer: me,
                nonce: s.account(&me).nonce,
                body: quartier_ledger::TxBody::JoinValidators,
            }
            .sign(key)
        })
    });
    if let Some(tx) = tx {
        tracing::info!("voted in: joining the validators");
        // Sent whether or not it is pending here already: a join that
        // reached no peer is sent again.
        let _ = app.submit(tx.clone());
        gossip(tx.encode());
    }
}

/// The peers this node connects to: of `book` (validators and candidates),
/// the validators by governance and those of the current epoch, and itself.
fn connectable(
    book: &[(ed25519::PublicKey, std::net::SocketAddr)],
    epochs: &crate::epochs::EpochWatch,
    me: &ed25519::PublicKey,
) -> anyhow::Result<Map<ed25519::PublicKey, Address>> {
    let current = epochs.validators(epochs.current()).unwrap_or_default();
    book.iter()
        .filter(|(k, _)| {
            let id = quartier_types::AccountId(crate::epochs::account_bytes(k));
            k == me || epochs.is_governance_validator(&id) || current.contains(&id)
        })
        .map(|(k, a)| (k.clone(), Address::from(*a)))
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| anyhow!("a key is listed twice in the network genesis"))
}

/// Serves `router` on `listener` until the server fails.
fn serve_api(
    listener: std::net::TcpListener,
    router: axum::Router,
    limits: crate::api_guard::ApiLimits,
) -> anyhow::Result<()> {
    let runtime = ::tokio::runtime::Builder::new_multi_thread()
        .worker_threads(API_THREADS)
        .thread_name("api")
        .enable_all()
        .build()
        .context("building the API runtime")?;
    runtime.block_on(async move {
        listener.set_nonblocking(true).context("the API listener")?;
        let listener = ::tokio::net::TcpListener::from_std(listener).context("the API listener")?;
        crate::api_guard::serve(listener, router, limits)
            .await
            .context("API server")
    })
}
