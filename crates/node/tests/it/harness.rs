//! Wires N validators (simplex + marshal + the ledger application) on the
//! deterministic runtime and a simulated network, as the production node will
//! on tokio and authenticated p2p.

use commonware_broadcast::buffered;
use commonware_codec::DecodeExt as _;
use commonware_consensus::marshal::{
    self, core::Actor as MarshalActor, resolver::p2p as marshal_resolver, standard::Inline,
};
use commonware_consensus::simplex::{
    self,
    config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
    elector::RoundRobin,
};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::ConstantProvider;
use commonware_cryptography::{Digestible as _, Sha256, Signer as _, ed25519};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Quota, Supervisor as _, deterministic};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZU16, NZU32, NZU64, NZUsize, ordered::Set, probability};
use ed25519_dalek::SigningKey;
use quartier_ledger::{Genesis, MeterRole, SignedTx, State, Tx, TxBody};
use quartier_node::{LedgerApp, Mempool, MempoolConfig};
use quartier_types::hash;
use quartier_types::{AccountId, Price, RegionId, RegionParams};
use std::time::Duration;

pub const NAMESPACE: &[u8] = b"quartier-test";
pub const QUOTA: Quota = Quota::per_second(NZU32!(10_000));
pub const LINK: Link = Link {
    latency: Duration::from_millis(20),
    jitter: Duration::from_millis(5),
    success_rate: probability!(1.0),
};

/// The validators' consensus keys, from fixed seeds.
pub fn validator_keys(n: u64) -> Vec<ed25519::PrivateKey> {
    (0..n)
        .map(|i| {
            let seed = hash::tagged("QUARTIER_TEST_VALIDATOR", &[&i.to_le_bytes()]);
            ed25519::PrivateKey::decode(bytes::Bytes::copy_from_slice(&seed.0)).unwrap()
        })
        .collect()
}

/// A ledger key from a label.
pub fn key(label: &str) -> SigningKey {
    SigningKey::from_bytes(&hash::tagged("QUARTIER_TEST_KEY", &[label.as_bytes()]).0)
}

pub fn id(k: &SigningKey) -> AccountId {
    AccountId(k.verifying_key().to_bytes())
}

/// The ledger genesis shared by all validators.
pub fn genesis(validators: &[ed25519::PrivateKey]) -> Genesis {
    Genesis {
        chain_name: "quartier-sim".into(),
        dso: id(&key("dso")),
        utility: id(&key("utility")),
        validators: validators
            .iter()
            .map(|k| AccountId(k.public_key().as_ref().try_into().unwrap()))
            .collect(),
        regions: vec![(
            RegionId(1),
            RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap(),
        )],
        slot_ms: 900_000,
        gate_ms: 60_000,
        lead_slots: 1,
        allocations: vec![],
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
    start_validator_with(context, oracle, keys, me, app.clone(), app).await;
}

/// Like [`start_validator`], with `proposer` building and verifying blocks in
/// place of the ledger application (for Byzantine tests); `app` still applies
/// finalized blocks.
pub async fn start_validator_with<A>(
    context: deterministic::Context,
    oracle: &Oracle<ed25519::PublicKey, deterministic::Context>,
    keys: &[ed25519::PrivateKey],
    me: usize,
    app: LedgerApp,
    proposer: A,
) where
    A: commonware_consensus::Application<
            deterministic::Context,
            Block = quartier_node::Block,
            SigningScheme = quartier_node::Scheme,
            Context = commonware_consensus::simplex::types::Context<
                quartier_node::BlockDigest,
                ed25519::PublicKey,
            >,
            Input = (),
        >,
{
    let private = keys[me].clone();
    let public = private.public_key();
    let participants: Set<ed25519::PublicKey> =
        Set::try_from(keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
    let scheme = quartier_node::Scheme::signer(NAMESPACE, participants, private).unwrap();
    let partition = format!("validator-{me}");
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(64));
    let epocher = FixedEpocher::new(NZU64!(u64::MAX / 2));
    let genesis_block = app.with_state(LedgerApp::genesis_block);
    let genesis_digest = genesis_block.digest();

    let control = oracle.control(public.clone());
    let votes = control.register(0, QUOTA).await.unwrap();
    let certificates = control.register(1, QUOTA).await.unwrap();
    let resolver_net = control.register(2, QUOTA).await.unwrap();
    let backfill = control.register(3, QUOTA).await.unwrap();
    let blocks_net = control.register(4, QUOTA).await.unwrap();

    let resolver = marshal_resolver::init(
        context.child("resolver"),
        marshal_resolver::Config {
            public_key: public.clone(),
            peer_provider: oracle.manager(),
            blocker: oracle.control(public.clone()),
            mailbox_size: NZUsize!(1024),
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        backfill,
    );
    let (broadcast, buffer) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: public.clone(),
            mailbox_size: NZUsize!(1024),
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: oracle.manager(),
            strategy: Sequential,
        },
    );
    broadcast.start(blocks_net);

    let finalizations = immutable::Archive::init(
        context.child("finalizations"),
        archive(
            &partition,
            &page_cache,
            "finalizations",
            <quartier_node::Scheme as commonware_cryptography::certificate::Verifier>::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .unwrap();
    let blocks = immutable::Archive::init(
        context.child("blocks"),
        archive(&partition, &page_cache, "blocks", ()),
    )
    .await
    .unwrap();

    let (actor, mailbox, _floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: marshal::Start::Genesis(commonware_cryptography::Digested::precomputed(
                genesis_block,
                genesis_digest,
            )),
            mailbox_size: NZUsize!(1024),
            view_retention: ViewDelta::new(10),
            max_repair: NZUsize!(10),
            max_pending_acks: NZUsize!(1),
            block_codec_config: (),
            partition_prefix: partition.clone(),
            prunable_items_per_section: NZU64!(64),
            replay_buffer: NZUsize!(1 << 16),
            key_write_buffer: NZUsize!(1 << 16),
            value_write_buffer: NZUsize!(1 << 16),
            page_cache: page_cache.clone(),
            strategy: Sequential,
        },
    )
    .await;
    actor.start(app, buffer, resolver);

    let inline = Inline::new(context.child("application"), proposer, mailbox, epocher);
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker: oracle.control(public),
            automaton: inline.clone(),
            relay: inline.clone(),
            reporter: inline,
            strategy: Sequential,
            partition: format!("{partition}-simplex"),
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(1 << 16),
            write_buffer: NZUsize!(1 << 16),
            page_cache,
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(3),
            view_retention: ViewDelta::new(10),
            skip: SkipPolicy::Enabled {
                timeout: Duration::from_secs(4),
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );
    engine.start(votes, certificates, resolver_net);
}

/// The configuration of one of marshal's immutable archives.
fn archive<C>(
    partition: &str,
    page_cache: &CacheRef,
    name: &str,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{partition}-{name}-metadata"),
        freezer_table_partition: format!("{partition}-{name}-freezer-table"),
        freezer_table_initial_size: 64,
        freezer_table_resize_frequency: 10,
        freezer_table_resize_chunk_size: 10,
        freezer_key_partition: format!("{partition}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{partition}-{name}-freezer-value"),
        freezer_value_target_size: 1024,
        freezer_value_compression: None,
        ordinal_partition: format!("{partition}-{name}-ordinal"),
        items_per_section: NZU64!(64),
        codec_config,
        replay_buffer: NZUsize!(1 << 16),
        freezer_key_write_buffer: NZUsize!(1 << 16),
        freezer_value_write_buffer: NZUsize!(1 << 16),
        ordinal_write_buffer: NZUsize!(1 << 16),
    }
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

/// A fresh application on the genesis state.
pub fn app(genesis: &Genesis) -> LedgerApp {
    LedgerApp::new(
        State::from_genesis(genesis.clone()).unwrap(),
        Mempool::new(MempoolConfig::default()),
    )
}
