//! Wires one validator: marshal (archives, backfill resolver, block broadcast),
//! the inline wrapper around the ledger application, and simplex.
//!
//! Generic over the runtime and the p2p network, so the production node
//! (tokio, authenticated p2p) runs exactly what the deterministic tests run
//! (deterministic runtime, simulated network).

use crate::application::{LedgerApp, Scheme};
use crate::block::{Block, BlockDigest};
use crate::epochs::{Boundary, EpochSchemes, EpochWatch};
use commonware_broadcast::buffered;
use commonware_consensus::Epochable as _;
use commonware_consensus::marshal::{
    self, core::Actor as MarshalActor, resolver::p2p as marshal_resolver, standard::Inline,
};
use commonware_consensus::simplex::{
    self,
    config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
    elector::RoundRobin,
    types::Context,
};
use commonware_consensus::types::{Epoch, Epocher as _, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::Verifier as _;
use commonware_cryptography::{Digested, Digestible as _, Sha256, ed25519};
use commonware_p2p::utils::mux::{Builder as _, MuxHandle, Muxer};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::prunable;
use commonware_storage::translator::EightCap;
use commonware_utils::vec::NonEmptyVec;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize};
use quartier_types::AccountId;
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
    pub fn new(namespace: &[u8], partition: &str, signer: ed25519::PrivateKey) -> ValidatorConfig {
        ValidatorConfig {
            namespace: namespace.to_vec(),
            partition: partition.to_string(),
            signer,
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
    /// The node's finalized state is in an epoch after genesis, but it has
    /// neither that epoch's boundary block nor a certificate of it.
    #[error("no start for consensus epoch {0}: neither its boundary block nor a certificate in it")]
    NoFloor(u64),
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
/// Consensus runs in epochs ([`crate::epochs`]): marshal checks each
/// certificate against the validator set of its epoch, and one simplex
/// engine runs at a time, for the epoch of the next block: signing if this
/// validator is in its set; not at all once governance voted it out (it
/// signed the epoch before, is in neither this epoch's set nor governance's:
/// its consensus stops and it signs nothing more); else observing (a
/// validator voted in for a later epoch, or a node that only follows).
///
/// # Errors
/// [`ValidatorError`] if the storage is unusable or the node can not tell
/// where its epoch starts.
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
    let epochs = app.epochs();
    // Subscribed before the current epoch is read: no boundary falls between.
    let boundaries = epochs.subscribe();
    let schemes = EpochSchemes::new(epochs.clone(), &config.namespace, config.signer.clone());
    let partition = config.partition.clone();
    let page_cache = CacheRef::new(NZU16!(4096), NZUsize!(64));
    let epocher = epochs.epocher();
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
            provider: schemes.clone(),
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
    handles.push(actor.start(app.clone(), buffer, resolver));

    // Where the first engine starts: the node's own floor (state sync) if
    // it is of this epoch, else the epoch's boundary block, else the
    // certificate of the tip marshal stored.
    let current = epochs.current();
    let floor = match config.floor.clone() {
        Some(finalization) if finalization.epoch().get() == current => {
            Floor::Finalized(finalization)
        }
        _ if current == 0 => Floor::Genesis(genesis_digest),
        _ => match epochs.boundary(current) {
            Some(boundary) => Floor::Genesis(boundary.block),
            // A node that joined by state sync inside this epoch: the
            // latest certificate of this epoch that marshal stored (the
            // tip may have been finalized as an ancestor, without one).
            None => {
                let first = epocher
                    .first(Epoch::new(current))
                    .map_or(0, commonware_consensus::types::Height::get);
                let tip = app.view().height;
                let mut found = None;
                for height in (first.max(tip.saturating_sub(MAX_FLOOR_SEARCH))..=tip).rev() {
                    if let Some(finalization) = mailbox
                        .get_finalization(commonware_consensus::types::Height::new(height))
                        .await
                        && finalization.epoch().get() == current
                    {
                        found = Some(finalization);
                        break;
                    }
                }
                Floor::Finalized(found.ok_or(ValidatorError::NoFloor(current))?)
            }
        },
    };
    let inline = Inline::new(
        context.child("application"),
        proposer,
        mailbox.clone(),
        epocher,
    );
    let orchestrator = Orchestrator {
        context: context.child("epochs"),
        settings: config,
        me,
        epochs,
        schemes,
        blocker,
        inline,
        marshal: mailbox,
        app,
    };
    handles.push(context.child("orchestrator").spawn(move |_| {
        orchestrator.run(
            current,
            floor,
            channels.votes,
            channels.certificates,
            channels.resolver,
            boundaries,
        )
    }));
    Ok(handles)
}

/// How far below its tip a node looks for a certificate of its epoch to
/// start consensus from (after it joined by state sync inside the epoch).
const MAX_FLOOR_SEARCH: u64 = 4_096;

/// The consensus floor of an epoch's engine.
type EpochFloor = Floor<Scheme, BlockDigest>;

/// Runs one simplex engine per epoch, moving to the next at each boundary
/// the application finalizes.
struct Orchestrator<E, Bl, A>
where
    E: Clock + rand_core::CryptoRng + Spawner + Storage + Metrics,
    Bl: Blocker<PublicKey = ed25519::PublicKey> + Clone,
    A: Proposer<E>,
{
    context: E,
    settings: ValidatorConfig,
    me: ed25519::PublicKey,
    epochs: EpochWatch,
    schemes: EpochSchemes,
    blocker: Bl,
    inline: Inline<E, Scheme, A, Block, FixedEpocher>,
    marshal: MarshalMailbox,
    app: LedgerApp,
}

/// Marshal's mailbox as the orchestrator uses it.
type MarshalMailbox = commonware_consensus::marshal::core::Mailbox<
    Scheme,
    commonware_consensus::marshal::standard::Standard<Block>,
>;

impl<E, Bl, A> Orchestrator<E, Bl, A>
where
    E: Clock + rand_core::CryptoRng + Spawner + Storage + Metrics,
    Bl: Blocker<PublicKey = ed25519::PublicKey> + Clone,
    A: Proposer<E>,
{
    async fn run<S, R>(
        mut self,
        mut epoch: u64,
        mut floor: EpochFloor,
        votes: (S, R),
        certificates: (S, R),
        resolver: (S, R),
        mut boundaries: futures::channel::mpsc::UnboundedReceiver<Boundary>,
    ) where
        S: Sender<PublicKey = ed25519::PublicKey>,
        R: Receiver<PublicKey = ed25519::PublicKey>,
    {
        // Each channel carries every epoch's messages, each epoch a
        // subchannel; messages of an epoch this node has not reached go to
        // the backup channel, a sign that it missed a boundary.
        let (mux, mut votes, mut vote_backup) =
            Muxer::builder(self.context.child("votes"), votes.0, votes.1)
                .with_backup()
                .build();
        mux.start();
        let (mux, mut certificates, mut certificate_backup) = Muxer::builder(
            self.context.child("certificates"),
            certificates.0,
            certificates.1,
        )
        .with_backup()
        .build();
        mux.start();
        let (mux, mut resolver) =
            Muxer::new(self.context.child("resolver_mux"), resolver.0, resolver.1);
        mux.start();
        let epocher = self.epochs.epocher();
        loop {
            // None: voted out, no engine; it still follows the boundaries
            // (voted in again, it signs again from that epoch).
            let engine = self
                .enter(epoch, floor, &mut votes, &mut certificates, &mut resolver)
                .await;
            // The epoch before's engine is gone, and a restart starts in
            // this one: its journal is deleted (one partition per epoch
            // would pile up, some thousand a day).
            if let Some(before) = epoch.checked_sub(1) {
                let partition = format!("{}-simplex-{before}", self.settings.partition);
                if let Err(e) = self.context.remove(&partition, None).await {
                    tracing::debug!(%e, epoch = before, "consensus journal not removed");
                }
            }
            // A change of the set is served to joiners with the certificate
            // of its block: stored now (and at start, for one a crash left
            // without), off consensus' path; a node without a log has
            // nothing to store.
            let app = self.app.clone();
            self.context.child("evidence").spawn(move |_| async move {
                if let Err(e) = app.complete_epoch_changes().await {
                    tracing::debug!(%e, "epoch change evidence incomplete");
                }
            });
            // Until the boundary into a later epoch is finalized here.
            let next = loop {
                // Biased: polled in order, so a deterministic run stays so.
                ::tokio::select! {
                    biased;
                    boundary = futures::StreamExt::next(&mut boundaries) => match boundary {
                        Some(b) if b.epoch > epoch => break b,
                        Some(_) => {}
                        None => return,
                    },
                    message = vote_backup.recv() => {
                        let Some((their, (from, _))) = message else { return };
                        self.behind(&epocher, epoch, their, from);
                    },
                    message = certificate_backup.recv() => {
                        let Some((their, (from, _))) = message else { return };
                        self.behind(&epocher, epoch, their, from);
                    },
                }
            };
            if let Some(engine) = engine {
                engine.abort();
            }
            tracing::info!(
                from = epoch,
                to = next.epoch,
                height = next.height,
                "epoch boundary"
            );
            epoch = next.epoch;
            floor = Floor::Genesis(next.block);
        }
    }

    /// A peer sent a message of a later epoch: fetch the finalization of
    /// this epoch's last block from it (marshal then delivers the blocks up
    /// to it, and the boundary moves this node on).
    fn behind(&self, epocher: &FixedEpocher, epoch: u64, theirs: u64, from: ed25519::PublicKey) {
        if theirs <= epoch {
            return;
        }
        if let Some(last) = epocher.last(Epoch::new(epoch)) {
            self.marshal.hint_finalized(last, NonEmptyVec::new(from));
        }
    }

    /// Starts `epoch`'s engine: signing if this validator is in the epoch's
    /// set, `None` if it was voted out at this boundary (its consensus
    /// stops), observing otherwise.
    async fn enter<S: Sender<PublicKey = ed25519::PublicKey>>(
        &mut self,
        epoch: u64,
        floor: EpochFloor,
        votes: &mut MuxHandle<S>,
        certificates: &mut MuxHandle<S>,
        resolver: &mut MuxHandle<S>,
    ) -> Option<Handle<()>> {
        let participants = self.schemes.participants(epoch)?;
        let namespace = &self.settings.namespace;
        let scheme = match Scheme::signer(
            namespace,
            participants.clone(),
            self.settings.signer.clone(),
        ) {
            Some(signer) => signer,
            // Voted out: it signed the epoch before and governance no
            // longer has it.
            None if epoch > 0
                && self
                    .schemes
                    .participants(epoch - 1)
                    .is_some_and(|before| before.position(&self.me).is_some())
                && !self.epochs.is_governance_validator(&AccountId(
                    crate::epochs::account_bytes(&self.me),
                )) =>
            {
                tracing::info!(epoch, "removed from the validator set: consensus stops");
                return None;
            }
            // Voted in for a later epoch, or a node that follows the chain.
            None => {
                tracing::info!(epoch, "observing epoch: not in its validator set");
                Scheme::verifier(namespace, participants)
            }
        };
        let votes = votes.register(epoch).await.ok()?;
        let certificates = certificates.register(epoch).await.ok()?;
        let resolver = resolver.register(epoch).await.ok()?;
        let settings = &self.settings;
        let engine = simplex::Engine::new(
            self.context.child("simplex").with_attribute("epoch", epoch),
            simplex::Config {
                scheme,
                elector: RoundRobin::<Sha256>::default(),
                blocker: self.blocker.clone(),
                automaton: self.inline.clone(),
                relay: self.inline.clone(),
                reporter: self.inline.clone(),
                strategy: Sequential,
                partition: format!("{}-simplex-{epoch}", settings.partition),
                mailbox_size: NZUsize!(1024),
                epoch: Epoch::new(epoch),
                floor,
                replay_buffer: NZUsize!(1 << 16),
                write_buffer: NZUsize!(1 << 16),
                page_cache: CacheRef::new(NZU16!(4096), NZUsize!(64)),
                leader_timeout: settings.leader_timeout,
                certification_timeout: settings.certification_timeout,
                timeout_retry: settings.timeout_retry,
                view_retention: ViewDelta::new(10),
                skip: SkipPolicy::Enabled {
                    timeout: settings.skip_timeout,
                    budget: SkipBudget::Participants,
                },
                fetch_timeout: NZDuration!(Duration::from_secs(1)),
                fetch_retry_delay: Duration::from_millis(100),
                forward: ForwardPolicy::Disabled,
                track_historical_votes: false,
            },
        );
        tracing::info!(epoch, "entered epoch");
        Some(engine.start(votes, certificates, resolver))
    }
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
