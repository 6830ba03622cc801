//! Wires one validator: marshal (archives, backfill resolver, block broadcast),
//! the inline wrapper around the ledger application, and simplex.
//!
//! Generic over the runtime and the p2p network, so the production node
//! (tokio, authenticated p2p) runs exactly what the deterministic tests run
//! (deterministic runtime, simulated network).

use crate::application::{LedgerApp, Scheme};
use crate::block::{Block, BlockDigest};
use commonware_broadcast::buffered;
use commonware_consensus::marshal::{
    self, core::Actor as MarshalActor, resolver::p2p as marshal_resolver, standard::Inline,
};
use commonware_consensus::simplex::{
    self,
    config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
    elector::RoundRobin,
    types::Context,
};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::{ConstantProvider, Verifier as _};
use commonware_cryptography::{Digested, Digestible as _, Sha256, ed25519};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::prunable;
use commonware_storage::translator::EightCap;
use commonware_utils::ordered::Set;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use std::num::NonZeroU64;
use std::time::Duration;

/// p2p channel of consensus votes.
pub const CHANNEL_VOTES: u64 = 0;
/// p2p channel of consensus certificates.
pub const CHANNEL_CERTIFICATES: u64 = 1;
/// p2p channel of simplex's certificate resolver.
pub const CHANNEL_RESOLVER: u64 = 2;
/// p2p channel of marshal's block backfill.
pub const CHANNEL_BACKFILL: u64 = 3;
/// p2p channel on which proposers broadcast blocks.
pub const CHANNEL_BLOCKS: u64 = 4;

/// One validator's consensus settings.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// Domain separation of every consensus signature (one per chain).
    pub namespace: Vec<u8>,
    /// Prefix of this validator's storage partitions.
    pub partition: String,
    /// The validator's consensus (and p2p identity) key.
    pub signer: ed25519::PrivateKey,
    /// All validators' public keys.
    pub participants: Vec<ed25519::PublicKey>,
    /// How long to wait for a leader's proposal before voting to skip it.
    pub leader_timeout: Duration,
    /// How long to wait for a certificate after a proposal.
    pub certification_timeout: Duration,
    /// How often to re-broadcast votes while a view is stuck.
    pub timeout_retry: Duration,
    /// After how long a silent leader's whole term is skipped.
    pub skip_timeout: Duration,
    /// Heights per file section of marshal's block and certificate archives;
    /// pruning deletes whole sections.
    pub archive_section: NonZeroU64,
    /// Start consensus from this certificate instead of genesis: a node that
    /// joined by state sync (its application is at that block already).
    pub floor: Option<crate::sync::BlockFinalization>,
}

impl ValidatorConfig {
    /// Settings for a validator with the default timeouts (1 s leader, 2 s
    /// certification, 3 s retry, 4 s skip).
    pub fn new(
        namespace: &[u8],
        partition: &str,
        signer: ed25519::PrivateKey,
        participants: Vec<ed25519::PublicKey>,
    ) -> ValidatorConfig {
        ValidatorConfig {
            namespace: namespace.to_vec(),
            partition: partition.to_string(),
            signer,
            participants,
            leader_timeout: Duration::from_secs(1),
            certification_timeout: Duration::from_secs(2),
            timeout_retry: Duration::from_secs(3),
            skip_timeout: Duration::from_secs(4),
            archive_section: NZU64!(1024),
            floor: None,
        }
    }
}

/// The p2p channels a validator needs, as (sender, receiver) pairs.
pub struct Channels<S, R> {
    /// [`CHANNEL_VOTES`].
    pub votes: (S, R),
    /// [`CHANNEL_CERTIFICATES`].
    pub certificates: (S, R),
    /// [`CHANNEL_RESOLVER`].
    pub resolver: (S, R),
    /// [`CHANNEL_BACKFILL`].
    pub backfill: (S, R),
    /// [`CHANNEL_BLOCKS`].
    pub blocks: (S, R),
}

/// Why a validator could not start.
#[derive(Debug, thiserror::Error)]
pub enum ValidatorError {
    /// The signer is not among the participants.
    #[error("this validator's key is not a participant")]
    NotAParticipant,
    /// The participants contain duplicates.
    #[error("duplicate participant")]
    DuplicateParticipant,
    /// A consensus archive could not be opened.
    #[error("consensus storage: {0}")]
    Storage(#[from] commonware_storage::archive::Error),
}

/// The application contract simplex drives through the inline wrapper.
pub trait Proposer<E>:
    commonware_consensus::Application<
        E,
        Block = Block,
        SigningScheme = Scheme,
        Context = Context<BlockDigest, ed25519::PublicKey>,
        Input = (),
    >
{
}

impl<E, A> Proposer<E> for A where
    A: commonware_consensus::Application<
            E,
            Block = Block,
            SigningScheme = Scheme,
            Context = Context<BlockDigest, ed25519::PublicKey>,
            Input = (),
        >
{
}

/// Starts a validator whose blocks `proposer` builds and verifies and whose
/// finalized blocks `app` applies (normally the same application).
///
/// # Errors
/// [`ValidatorError`] if the key or the storage is unusable.
#[allow(clippy::too_many_arguments)]
pub async fn start<E, S, R, Bl, Pp, A>(
    context: E,
    config: ValidatorConfig,
    channels: Channels<S, R>,
    blocker: Bl,
    peers: Pp,
    app: LedgerApp,
    proposer: A,
) -> Result<Vec<Handle<()>>, ValidatorError>
where
    E: Clock + rand_core::CryptoRng + Spawner + Storage + Metrics,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
    Bl: Blocker<PublicKey = ed25519::PublicKey> + Clone,
    Pp: Provider<PublicKey = ed25519::PublicKey> + Clone,
    A: Proposer<E>,
{
    let me = commonware_cryptography::Signer::public_key(&config.signer);
    let participants: Set<ed25519::PublicKey> = Set::try_from(config.participants.clone())
        .map_err(|_| ValidatorError::DuplicateParticipant)?;
    let scheme = Scheme::signer(&config.namespace, participants, config.signer.clone())
        .ok_or(ValidatorError::NotAParticipant)?;
    let partition = config.partition.clone();
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(64));
    // One epoch for the life of the chain: validator-set changes are ledger
    // governance, applied to consensus in a later release.
    let epocher = FixedEpocher::new(NZU64!(u64::MAX / 2));
    let genesis_block = app.genesis_block();
    let genesis_digest = genesis_block.digest();

    let resolver = marshal_resolver::init(
        context.child("resolver"),
        marshal_resolver::Config {
            public_key: me.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: NZUsize!(1024),
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );
    let (broadcast, buffer) = buffered::Engine::new(
        context.child("broadcast"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: NZUsize!(1024),
            deque_size: 10,
            priority: false,
            codec_config: (),
            peer_provider: peers,
            strategy: Sequential,
        },
    );
    let mut handles = vec![broadcast.start(channels.blocks)];

    let finalizations = prunable::Archive::init(
        context.child("finalizations"),
        archive(
            &partition,
            &page_cache,
            "finalizations",
            Scheme::certificate_codec_config_unbounded(),
            config.archive_section,
        ),
    )
    .await?;
    let blocks = prunable::Archive::init(
        context.child("blocks"),
        archive(
            &partition,
            &page_cache,
            "blocks",
            (),
            config.archive_section,
        ),
    )
    .await?;
    let (actor, mailbox, _floor) = MarshalActor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            start: match config.floor.clone() {
                Some(finalization) => marshal::Start::Floor(finalization),
                None => {
                    marshal::Start::Genesis(Digested::precomputed(genesis_block, genesis_digest))
                }
            },
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
    let pruning = mailbox.clone();
    let finality = mailbox.clone();
    app.set_finality_source(std::sync::Arc::new(move |height| {
        let finality = finality.clone();
        Box::pin(async move {
            finality
                .get_finalization(commonware_consensus::types::Height::new(height))
                .await
                .map(|f| commonware_codec::Encode::encode(&f).to_vec())
        })
    }));
    app.set_pruner(Box::new(move |height| {
        pruning.prune(commonware_consensus::types::Height::new(height));
    }));
    handles.push(actor.start(app, buffer, resolver));

    let inline = Inline::new(context.child("application"), proposer, mailbox, epocher);
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: inline.clone(),
            relay: inline.clone(),
            reporter: inline,
            strategy: Sequential,
            partition: format!("{partition}-simplex"),
            mailbox_size: NZUsize!(1024),
            epoch: Epoch::zero(),
            floor: match config.floor {
                Some(finalization) => Floor::Finalized(finalization),
                None => Floor::Genesis(genesis_digest),
            },
            replay_buffer: NZUsize!(1 << 16),
            write_buffer: NZUsize!(1 << 16),
            page_cache,
            leader_timeout: config.leader_timeout,
            certification_timeout: config.certification_timeout,
            timeout_retry: config.timeout_retry,
            view_retention: ViewDelta::new(10),
            skip: SkipPolicy::Enabled {
                timeout: config.skip_timeout,
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(Duration::from_secs(1)),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );
    handles.push(engine.start(channels.votes, channels.certificates, channels.resolver));
    Ok(handles)
}

/// The configuration of one of marshal's archives: prunable in sections of
/// `section` heights, so a node that keeps a window of blocks drops whole files.
fn archive<C>(
    partition: &str,
    page_cache: &CacheRef,
    name: &str,
    codec_config: C,
    section: NonZeroU64,
) -> prunable::Config<EightCap, C> {
    prunable::Config {
        translator: EightCap,
        metadata_partition: format!("{partition}-{name}-metadata"),
        key_partition: format!("{partition}-{name}-key"),
        key_page_cache: page_cache.clone(),
        value_partition: format!("{partition}-{name}-value"),
        compression: None,
        codec_config,
        items_per_section: section,
        key_write_buffer: NZUsize!(1 << 16),
        value_write_buffer: NZUsize!(1 << 16),
        replay_buffer: NZUsize!(1 << 16),
    }
}
