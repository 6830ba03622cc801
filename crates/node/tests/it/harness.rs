//! Wires N validators on the deterministic runtime and a simulated network
//! through the same `quartier_node::validator::start` the production node uses.

use commonware_cryptography::{Signer as _, ed25519};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Quota, Supervisor as _, deterministic};
use commonware_utils::{NZU32, NZU64, NZUsize, probability};
use ed25519_dalek::SigningKey;
use quartier_ledger::{Genesis, MeterRole, SignedTx, State, Tx, TxBody};
use quartier_node::validator::{
    self, CHANNEL_BACKFILL, CHANNEL_BLOCKS, CHANNEL_CERTIFICATES, CHANNEL_RESOLVER, CHANNEL_VOTES,
    Channels, Proposer, ValidatorConfig,
};
use quartier_node::{LedgerApp, Mempool, MempoolConfig};
pub use quartier_testkit::{id, key, sign_with_torsion, validator_keys};
use quartier_types::{Price, RegionId, RegionParams};
use std::time::Duration;

/// The consensus namespace of [`genesis`]'s chain (`quartier_light::namespace`).
pub const NAMESPACE: &[u8] = b"quartier/quartier-sim";
pub const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
pub const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(5),
    success_rate: probability!(1.0),
};

/// The ledger genesis shared by all validators.
pub fn genesis(validators: &[ed25519::PrivateKey]) -> Genesis {
    Genesis {
        regions: vec![(
            RegionId(1),
            RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap(),
        )],
        ..Genesis::new(
            "quartier-sim",
            id(&key("dso")),
            id(&key("utility")),
            validators
                .iter()
                .map(quartier_testkit::validator_account)
                .collect(),
        )
    }
}

/// A signed ledger transaction.
pub fn tx(state: &State, signer: &SigningKey, nonce: u64, body: TxBody) -> SignedTx {
    Tx {
        chain_id: state.chain_id(),
        signer: id(signer),
        nonce,
        body,
    }
    .sign(signer)
}

/// Registration of `n` consumer meters by the DSO, nonces from 0.
pub fn registrations(state: &State, n: usize) -> Vec<SignedTx> {
    (0..n)
        .map(|i| {
            let body = TxBody::RegisterMeter {
                meter: id(&key(&format!("meter-{i}"))),
                region: RegionId(1),
                role: MeterRole::Consumer,
                pv_watts: 0,
            };
            tx(state, &key("dso"), i as u64, body)
        })
        .collect()
}

/// Whether `app` has finalized `tx`.
pub fn is_final(app: &LedgerApp, tx: &SignedTx) -> bool {
    matches!(
        app.tx_status(&tx.hash()),
        quartier_node::TxStatus::Finalized { .. }
    )
}

/// The simulated network with every validator as a peer, links between all.
pub async fn network(
    context: &deterministic::Context,
    keys: &[ed25519::PrivateKey],
) -> Oracle<ed25519::PublicKey, deterministic::Context> {
    let peers: Vec<_> = keys.iter().map(|k| k.public_key()).collect();
    let (network, oracle) = Network::new_with_peers(
        context.child("network"),
        simulated::Config {
            max_size: 8 * 1024 * 1024,
            max_peers_per_set: NZUsize!(peers.len()),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        peers.clone(),
    )
    .await;
    network.start();
    for a in &peers {
        for b in &peers {
            if a != b {
                oracle.add_link(a.clone(), b.clone(), LINK).await.unwrap();
            }
        }
    }
    oracle
}

/// Starts one validator: marshal (with its archives, backfill resolver and
/// block broadcast), the inline wrapper around the ledger, and simplex.
pub async fn start_validator(
    context: deterministic::Context,
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    me: usize,
    app: LedgerApp,
) {
    start_validator_with(context, oracle, keys, me, app.clone(), app, None).await;
}

/// Like [`start_validator`], with `proposer` building and verifying blocks in
/// place of the ledger application (for Byzantine tests; `app` still applies
/// finalized blocks) and consensus starting from `floor` when given (a node
/// that joined by state sync).
pub async fn start_validator_with<A: Proposer<deterministic::Context>>(
    context: deterministic::Context,
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    me: usize,
    app: LedgerApp,
    proposer: A,
    floor: Option<quartier_node::sync::BlockFinalization>,
) {
    let public = keys[me].public_key();
    let control = oracle.control(public.clone());
    let channels = Channels {
        votes: control.register(CHANNEL_VOTES, QUOTA).await.unwrap(),
        certificates: control.register(CHANNEL_CERTIFICATES, QUOTA).await.unwrap(),
        resolver: control.register(CHANNEL_RESOLVER, QUOTA).await.unwrap(),
        backfill: control.register(CHANNEL_BACKFILL, QUOTA).await.unwrap(),
        blocks: control.register(CHANNEL_BLOCKS, QUOTA).await.unwrap(),
    };
    let mut config = ValidatorConfig::new(NAMESPACE, &format!("validator-{me}"), keys[me].clone());
    // Small archive sections, so pruning tests see whole sections go.
    config.archive_section = NZU64!(8);
    config.floor = floor;
    validator::start(
        context,
        config,
        channels,
        control,
        oracle.manager(),
        app,
        proposer,
    )
    .await
    .unwrap();
}

/// Cuts every link between the two groups, both ways.
pub async fn partition(
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    a: &[usize],
    b: &[usize],
) {
    for &i in a {
        for &j in b {
            let (x, y) = (keys[i].public_key(), keys[j].public_key());
            oracle.remove_link(x.clone(), y.clone()).await.unwrap();
            oracle.remove_link(y, x).await.unwrap();
        }
    }
}

/// Restores every link between the two groups, both ways.
pub async fn heal(
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    a: &[usize],
    b: &[usize],
) {
    for &i in a {
        for &j in b {
            let (x, y) = (keys[i].public_key(), keys[j].public_key());
            oracle.add_link(x.clone(), y.clone(), LINK).await.unwrap();
            oracle.add_link(y, x, LINK).await.unwrap();
        }
    }
}

/// Gives every app the same transactions, as gossip would.
pub fn submit_to_all(apps: &[LedgerApp], txs: &[SignedTx]) {
    for a in apps {
        for t in txs {
            a.submit(t.clone()).unwrap();
        }
    }
}

/// Starts validator `i` with `apps[i]`, for every `i`.
pub async fn start_all(
    context: &deterministic::Context,
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    apps: &[LedgerApp],
) {
    for (i, a) in apps.iter().enumerate() {
        let child = context.child("validator").with_attribute("index", i);
        start_validator(child, oracle, keys, i, a.clone()).await;
    }
}

/// Waits in virtual time until every app in `which` has finalized `height`.
pub async fn wait_for_height(
    context: &deterministic::Context,
    apps: &[LedgerApp],
    which: &[usize],
    height: u64,
) {
    while which.iter().any(|&i| apps[i].view().height < height) {
        commonware_runtime::Clock::sleep(context, Duration::from_millis(50)).await;
    }
}

/// A fresh application on the genesis state.
pub fn app(genesis: &Genesis) -> LedgerApp {
    LedgerApp::new(
        State::from_genesis(genesis.clone()).unwrap(),
        Mempool::new(MempoolConfig::default()),
    )
}

/// The deterministic runtime seeded with `seed`, failing a test after ten
/// minutes of virtual time.
pub fn seeded(seed: u64) -> deterministic::Config {
    deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(600)))
}

/// An empty scratch folder for `name`, unique to this test process.
pub fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("quartier-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Four validators of a genesis with mode A on (rings of 4; `adjust` may
/// change the genesis further), started on the simulated network.
pub async fn start_shielded(
    context: &deterministic::Context,
    adjust: impl FnOnce(&mut Genesis),
) -> Vec<LedgerApp> {
    let keys = validator_keys(4);
    let mut genesis = genesis(&keys);
    genesis.shielded = Some(quartier_ledger::ShieldedPolicy { ring_size: 4 });
    adjust(&mut genesis);
    let oracle = network(context, &keys).await;
    let apps: Vec<_> = (0..4).map(|_| app(&genesis)).collect();
    start_all(context, &oracle, &keys, &apps).await;
    apps
}

/// A shielded cover order (zero energy, no funds) on `side` of the next
/// slot by `meter` of region 1, with limit `limit`, from the one-time key
/// of `secret`.
pub fn cover_order(
    state: &State,
    meter: &SigningKey,
    side: quartier_types::Side,
    limit: u64,
    secret: &[u8; 32],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> SignedTx {
    use quartier_ledger::meter_ring;
    use quartier_meter::wallet::{MeterRing, OrderRequest, RingPolicy, ShieldedWallet};
    use quartier_types::{Energy, Slot};
    let chain_id = state.chain_id();
    let slot = Slot(state.genesis().slot_at(state.meta().time).0 + 1);
    let params = *state.region(RegionId(1)).unwrap();
    let ring: Vec<[u8; 32]> = meter_ring(state, RegionId(1), side, Energy::ZERO)
        .iter()
        .map(|(a, _)| a.0)
        .collect();
    let scalar = meter.to_scalar().to_bytes();
    let ring_of = MeterRing {
        scalar,
        key: id(meter).0,
        ring: &ring,
    };
    let request = OrderRequest {
        region: RegionId(1),
        params,
        slot,
        side,
        limit: Price::new(limit),
        energy: Energy::ZERO,
    };
    let mut wallet = ShieldedWallet::from_seed(id(meter).0, RingPolicy { ring_size: 4 });
    let signer = Tx::one_time_signer(secret);
    let order = wallet
        .order((chain_id, signer), &request, &ring_of, rng)
        .unwrap();
    Tx::one_time(chain_id, TxBody::PlaceShieldedOrder { order }, secret)
}

/// A fresh application persisting in a block log at `path` (reopened from
/// it if it holds blocks), with a snapshot every 8 blocks (so it serves
/// state sync bundles).
pub fn open_logged(genesis: &Genesis, path: &std::path::Path) -> LedgerApp {
    LedgerApp::open(
        State::from_genesis(genesis.clone()).unwrap(),
        Mempool::new(MempoolConfig::default()),
        quartier_node::storage::BlockLog::open(path).unwrap(),
    )
    .unwrap()
    .with_snapshot_interval(8)
}

/// Starts validator `i` with `app`, a node that joined by state sync:
/// consensus from `floor`.
pub async fn start_joined(
    context: &deterministic::Context,
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    i: usize,
    app: &LedgerApp,
    floor: quartier_node::sync::BlockFinalization,
) {
    let child = context.child("validator").with_attribute("index", i);
    start_validator_with(
        child,
        oracle,
        keys,
        i,
        app.clone(),
        app.clone(),
        Some(floor),
    )
    .await;
}
