//! The ledger as a commonware application: build, verify and apply blocks.
//!
//! Post-execution states of blocks this node built or verified are kept by
//! digest until their height is finalized, so consensus can build on an
//! unfinalized parent. A state that is not cached (after a restart, or for a
//! block learnt through backfill) is rebuilt by replaying the ancestry from the
//! last finalized state, checking every block's root on the way.

use crate::block::{Block, BlockDigest, MAX_BLOCK_TXS};
use crate::epochs::{Boundary, EpochWatch};
use crate::mempool::{Mempool, MempoolError};
use crate::storage::{BlockLog, StorageError};
use crate::sync::{EpochEvidence, SyncBundle, SyncError};
use commonware_actor::Feedback;
use commonware_codec::Encode as _;
use commonware_consensus::Reporter;
use commonware_consensus::marshal::{Update, ancestry::Ancestry};
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::{Digested, Digestible, ed25519::PublicKey};
use commonware_runtime::Clock;
use commonware_utils::Acknowledgement as _;
use commonware_utils::sync::Mutex;
use futures::StreamExt as _;
use quartier_ledger::{BlockContext, SignedTx, State, TxError, execute_block};
use quartier_types::Timestamp;
use quartier_types::hash::Digest;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

pub use crate::block::Scheme;

/// Default snapshot interval: a restart re-executes at most this many blocks
/// (about an hour of 4-second blocks; at 15-minute slots, far less than a day).
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1_024;

/// How far ahead of a verifier's clock a block's time may be before it waits.
const MAX_CLOCK_DRIFT: Duration = Duration::from_millis(500);

/// How far ahead of a verifier's clock a block's time may be at all: a block
/// further ahead is refused (a verifier waits for its clock only up to
/// here, so a leader can not hold it in `verify` for as long as it likes).
pub const MAX_BLOCK_LEAD: Duration = Duration::from_secs(2);

/// How far behind a verifier's clock a block's time may be when it is
/// verified: the leader stamps the time before it executes the block, which
/// then travels to the verifier, so honest blocks arrive a little behind.
/// Before this bound a leader could stamp its parent's time long after, and
/// take orders for a slot whose gate had passed; now it can back-date by at
/// most this much, which a region's gate should exceed (the devnet's gate is
/// a fifth of a slot).
pub const MAX_BLOCK_LAG: Duration = Duration::from_secs(3);

/// What the node streams to websocket clients as it finalizes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// A block was finalized and applied.
    Block {
        /// Its height.
        height: u64,
        /// Its time (ms since the epoch).
        time_ms: u64,
        /// The state root after it.
        root: String,
        /// Transactions in it.
        txs: usize,
    },
    /// A slot's book was cleared and settled in that block.
    Settlement {
        /// The region.
        region: u32,
        /// The slot.
        slot: u64,
        /// The block that settled it.
        height: u64,
        /// Orders in the book.
        orders: usize,
        /// Energy traded locally (Wh).
        local_energy: u64,
        /// Energy from the grid (Wh).
        grid_import: u64,
        /// Energy to the grid (Wh).
        grid_export: u64,
    },
}

pub use quartier_types::api::TxStatus;

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeMetrics {
    /// Finalized height.
    pub height: u64,
    /// Time of the last finalized block (ms since the epoch).
    pub last_block_time_ms: u64,
    /// Transactions finalized since the node started.
    pub finalized_txs: u64,
    /// Transactions this node dropped because the ledger refused them while
    /// it built a block.
    pub rejected_txs: u64,
    /// Blocks re-executed when the node started (those after its snapshot).
    pub replayed_blocks: u64,
    /// Pending transactions.
    pub mempool: usize,
    /// IOUs locked in open books (µRp).
    pub escrow: u64,
    /// Open books.
    pub open_books: usize,
}

/// What a node knows about the finalized chain (a snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainView {
    /// The last finalized height.
    pub height: u64,
    /// Its block's digest.
    pub block: BlockDigest,
    /// The state root after it.
    pub root: Digest,
    /// Pending transactions.
    pub mempool: usize,
}

struct Chain {
    genesis: Block,
    log: Option<Arc<BlockLog>>,
    /// Shared with readers: the API clones the `Arc` and reads without the lock.
    finalized: Arc<State>,
    finalized_block: BlockDigest,
    finalized_height: u64,
    executed: BTreeMap<BlockDigest, (u64, State)>,
    mempool: Mempool,
    roots: BTreeMap<u64, Digest>,
    /// Block times by height, from the lowest block kept.
    times: BTreeMap<u64, u64>,
    /// The lowest height whose block this node still stores (1 unless pruned).
    first_kept: u64,
    finalized_txs: u64,
    rejected_txs: u64,
    replayed_blocks: u64,
    last_block_time_ms: u64,
    /// Finalized transactions by hash, with their height.
    included: BTreeMap<Digest, u64>,
    /// Blocks per consensus epoch (the genesis'; 0: one epoch).
    epoch_blocks: u64,
    /// The latest epoch boundary finalized here.
    boundary: Option<Boundary>,
}

impl Chain {
    /// Records `b` (already applied to `finalized`) as the finalized tip.
    fn record(&mut self, digest: BlockDigest, b: &Block) {
        let height = b.height().get();
        self.finalized_block = digest;
        self.finalized_height = height;
        self.last_block_time_ms = b.time_ms();
        self.roots.insert(height, b.state_root());
        self.times.insert(height, b.time_ms());
        for tx in b.txs() {
            self.included.insert(tx.hash(), height);
        }
        if self.epoch_blocks > 0 && height.saturating_add(1).is_multiple_of(self.epoch_blocks) {
            self.boundary = Some(Boundary {
                epoch: height.saturating_add(1) / self.epoch_blocks,
                height,
                block: digest,
            });
        }
    }
}

/// The application handed to marshal's inline wrapper and, as reporter, to
/// marshal itself. Cloning shares the chain.
#[derive(Clone)]
pub struct LedgerApp {
    chain: Arc<Mutex<Chain>>,
    events: tokio::sync::broadcast::Sender<StreamEvent>,
    /// With nothing to include and no settlement due, a leader declines to
    /// propose until this long after the parent's time (0: always propose).
    idle_block_ms: u64,
    /// A state snapshot goes with every this-many-th finalized block (0: none).
    snapshot_every: u64,
    /// Blocks older than this (by block time, behind the tip) are deleted
    /// when a snapshot makes them unnecessary for a restart; `None`: archive.
    block_retention_ms: Option<u64>,
    /// Tells consensus storage (marshal) to prune below a height.
    pruner: Arc<Mutex<Option<Pruner>>>,
    /// Reads consensus' finalization certificates (for state sync bundles).
    finality: Arc<Mutex<Option<FinalitySource>>>,
    /// The latest certificate [`LedgerApp::finalization`] read, by height.
    tip_certificate: Arc<Mutex<Option<HeightCertificate>>>,
    /// Consensus epochs as the finalized state decides them.
    epochs: EpochWatch,
    /// The complete evidence of every validator-set change, once read (a
    /// change adds one; the API and sync bundles serve it again and again).
    evidence: Arc<Mutex<Option<Arc<Vec<EpochEvidence>>>>>,
}

/// Consensus' finalization certificate at a height, encoded, if it has one.
pub type FinalitySource =
    Arc<dyn Fn(u64) -> futures::future::BoxFuture<'static, Option<Vec<u8>>> + Send + Sync>;

/// A finalization certificate, encoded, with its block's height.
type HeightCertificate = (u64, Vec<u8>);

/// Prunes consensus storage below a height.
pub type Pruner = Box<dyn Fn(u64) + Send + Sync>;

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Why a node's stored chain could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The block log could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored block does not follow its parent or does not re-execute to its root.
    #[error("stored block at height {0} does not replay")]
    Replay(u64),
    /// The stored snapshot is corrupt or does not match its block's root.
    #[error("stored state snapshot at height {0} is invalid")]
    Snapshot(u64),
}

impl LedgerApp {
    /// An application starting from a genesis state (height 0), in memory only.
    pub fn new(genesis: State, mempool: Mempool) -> LedgerApp {
        let root = genesis.root();
        let genesis_block = Block::genesis(root);
        let epochs = EpochWatch::default();
        epochs.update(&genesis, None);
        let epoch_blocks = genesis.epoch_blocks();
        LedgerApp {
            chain: Arc::new(Mutex::new(Chain {
                finalized_block: genesis_block.digest(),
                genesis: genesis_block,
                log: None,
                finalized: Arc::new(genesis),
                finalized_height: 0,
                executed: BTreeMap::new(),
                mempool,
                roots: BTreeMap::from([(0, root)]),
                times: BTreeMap::new(),
                first_kept: 1,
                finalized_txs: 0,
                rejected_txs: 0,
                replayed_blocks: 0,
                last_block_time_ms: 0,
                included: BTreeMap::new(),
                epoch_blocks,
                boundary: None,
            })),
            idle_block_ms: 0,
            snapshot_every: DEFAULT_SNAPSHOT_EVERY,
            block_retention_ms: None,
            pruner: Arc::new(Mutex::new(None)),
            finality: Arc::new(Mutex::new(None)),
            tip_certificate: Arc::new(Mutex::new(None)),
            epochs,
            evidence: Arc::new(Mutex::new(None)),
            events: tokio::sync::broadcast::channel(1024).0,
        }
    }

    /// Events of blocks finalized from now on (a slow reader skips what it missed).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// Declines to build empty blocks until `idle` after the parent's time,
    /// unless a slot's gate has closed (its settlement is due). A declined
    /// proposal skips the view; nothing is stored, so an idle chain costs
    /// votes, not blocks.
    pub fn with_idle_block_interval(mut self, idle: Duration) -> LedgerApp {
        self.idle_block_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Deletes finalized blocks (from the block log and consensus storage)
    /// once they are older than `retention` behind the tip and a snapshot
    /// follows them. Peers down for longer than `retention` can then not
    /// catch up from this node.
    pub fn with_block_retention(mut self, retention: Duration) -> LedgerApp {
        self.block_retention_ms = Some(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Sets how consensus storage is pruned (shared by all clones).
    pub fn set_pruner(&self, pruner: Pruner) {
        *self.pruner.lock() = Some(pruner);
    }

    /// Sets where finalization certificates are read (shared by all clones).
    pub fn set_finality_source(&self, source: FinalitySource) {
        *self.finality.lock() = Some(source);
    }

    /// What another node needs to join from this node's state: the latest
    /// snapshot, the blocks from it to the first one with a finalization
    /// certificate (at most 64 on), and that certificate.
    ///
    /// # Errors
    /// [`SyncError::Unavailable`] if this node has no snapshot yet, or no
    /// certificate near it; [`SyncError::Storage`] if its log is unreadable.
    pub async fn sync_bundle(&self) -> Result<SyncBundle, SyncError> {
        let unavailable = |why: &str| SyncError::Unavailable(why.to_string());
        let source = self
            .finality
            .lock()
            .clone()
            .ok_or_else(|| unavailable("this node runs no consensus"))?;
        let (log, tip) = {
            let chain = self.chain.lock();
            let log = chain
                .log
                .clone()
                .ok_or_else(|| unavailable("no block log"))?;
            (log, chain.finalized_height)
        };
        // Read and packed without the chain's lock.
        let (height, snapshot) = log
            .latest_snapshot_packed()?
            .ok_or_else(|| unavailable("no snapshot yet"))?;
        for last in height..=tip.min(height.saturating_add(64)) {
            let Some(finalization) = source(last).await else {
                continue;
            };
            let blocks = (height..=last)
                .map(|h| self.finalized_block(h).map(|b| hex::encode(b.encode())))
                .collect::<Option<Vec<String>>>()
                .ok_or_else(|| unavailable("blocks after the snapshot were pruned; retry"))?;
            let epochs = self.complete_epoch_changes().await?.to_vec();
            return Ok(SyncBundle {
                snapshot_height: height,
                snapshot,
                blocks,
                epochs,
                finalization,
            });
        }
        Err(unavailable("no finalization certificate near the snapshot"))
    }

    /// The evidence of every validator-set change this node stores, each
    /// with the certificate of its block (read from consensus, and stored,
    /// where it was missing).
    ///
    /// # Errors
    /// [`SyncError::Unavailable`] if this node keeps no log or consensus
    /// has no certificate of a change's block; [`SyncError::Storage`].
    pub async fn complete_epoch_changes(&self) -> Result<Arc<Vec<EpochEvidence>>, SyncError> {
        let unavailable = |why: &str| SyncError::Unavailable(why.to_string());
        let (log, epoch_blocks, changes) = {
            let chain = self.chain.lock();
            let log = chain
                .log
                .clone()
                .ok_or_else(|| unavailable("no block log"))?;
            let changes: Vec<u64> = chain
                .finalized
                .validator_sets()
                .iter()
                .skip(1)
                .map(|s| s.from_epoch)
                .collect();
            (log, chain.epoch_blocks, changes)
        };
        if let Some(cached) = self.evidence.lock().as_ref()
            && cached.len() == changes.len()
        {
            return Ok(cached.clone());
        }
        let source = self.finality.lock().clone();
        let mut out = Vec::new();
        let mut missing = false;
        // Each is completed on its own: one whose certificate is not here
        // does not keep the later ones from being stored.
        let stored = log.epoch_changes()?;
        // Exactly the changes the state records: a node that lacks one (a
        // peer left it out of its bundle between the snapshot and the
        // tip) serves none, rather than a list nobody can follow.
        if stored.iter().map(|(epoch, _)| *epoch).collect::<Vec<_>>() != changes {
            return Err(unavailable(
                "this node lacks the evidence of a validator-set change",
            ));
        }
        for (epoch, mut evidence) in stored {
            if evidence.finalization.is_empty() {
                let height = epoch.saturating_mul(epoch_blocks).saturating_sub(1);
                let finalization = match &source {
                    Some(source) => source(height).await,
                    None => None,
                };
                match finalization {
                    Some(f) => {
                        evidence.finalization = hex::encode(f);
                        log.put_epoch_change(epoch, &evidence)?;
                    }
                    None => missing = true,
                }
            }
            out.push(evidence);
        }
        if missing {
            return Err(unavailable(
                "no certificate of an epoch change's block here",
            ));
        }
        let out = Arc::new(out);
        if out.len() == changes.len() {
            *self.evidence.lock() = Some(out.clone());
        }
        Ok(out)
    }

    /// Consensus' finalization certificate of the block at `height`,
    /// encoded, if it stores one (and this node runs consensus).
    /// The latest one read is kept: the mode B hosts ask for the tip's
    /// again and again, and each read is a request to consensus storage.
    pub async fn finalization(&self, height: u64) -> Option<Vec<u8>> {
        if let Some((h, bytes)) = self.tip_certificate.lock().as_ref()
            && *h == height
        {
            return Some(bytes.clone());
        }
        let source = self.finality.lock().clone()?;
        let bytes = source(height).await?;
        *self.tip_certificate.lock() = Some((height, bytes.clone()));
        Some(bytes)
    }

    /// The height this node's latest snapshot follows (what a sync bundle
    /// would start from), if it keeps a log with one.
    pub fn latest_snapshot_height(&self) -> Option<u64> {
        let log = self.chain.lock().log.clone()?;
        log.latest_snapshot_height().ok().flatten()
    }

    /// The lowest height whose block this node stores (1 unless pruned).
    pub fn first_kept_height(&self) -> u64 {
        self.chain.lock().first_kept
    }

    /// An application that persists finalized blocks in `log`, resumed from
    /// what the log holds: every stored block is re-executed from `genesis` and
    /// its root checked.
    ///
    /// # Errors
    /// [`OpenError`] if the log is unreadable or does not replay.
    pub fn open(genesis: State, mempool: Mempool, log: BlockLog) -> Result<LedgerApp, OpenError> {
        let app = LedgerApp::new(genesis, mempool);
        let snapshot = log.latest_snapshot()?;
        {
            let mut chain = app.chain.lock();
            let blocks = log.load()?;
            if let Some(first) = blocks.first()
                && first.height().get() > 1
            {
                // Pruned below `first`: the chain is trusted up to its parent,
                // and the state must come from a snapshot at or above it.
                if snapshot
                    .as_ref()
                    .is_none_or(|(at, _)| *at < first.height().get())
                {
                    return Err(OpenError::Snapshot(first.height().get()));
                }
                chain.finalized_block = first.parent();
                chain.finalized_height = first.height().get() - 1;
                chain.first_kept = first.height().get();
                chain.roots.clear();
            }
            for block in blocks {
                let height = block.height().get();
                let digest = block.digest();
                if block.parent() != chain.finalized_block {
                    return Err(OpenError::Replay(height));
                }
                match &snapshot {
                    // Up to the snapshot: only the chain of digests, the
                    // roots and the tx index; the state comes from the snapshot.
                    Some((at, _)) if height < *at => {}
                    Some((at, bytes)) if height == *at => {
                        let state =
                            State::from_snapshot(bytes).map_err(|_| OpenError::Snapshot(height))?;
                        if state.root() != block.state_root() {
                            return Err(OpenError::Snapshot(height));
                        }
                        chain.finalized = Arc::new(state);
                    }
                    _ => {
                        replay(Arc::make_mut(&mut chain.finalized), &block)
                            .ok_or(OpenError::Replay(height))?;
                        chain.replayed_blocks += 1;
                    }
                }
                chain.record(digest, &block);
            }
            if let Some((at, _)) = snapshot
                && chain.finalized_height < at
            {
                return Err(OpenError::Snapshot(at));
            }
            chain.log = Some(Arc::new(log));
            app.epochs.update(&chain.finalized, chain.boundary);
        }
        Ok(app)
    }

    /// Stores a state snapshot with every `blocks`-th finalized block (0:
    /// never), so a restart re-executes at most that many blocks.
    pub fn with_snapshot_interval(mut self, blocks: u64) -> LedgerApp {
        self.snapshot_every = blocks;
        self
    }

    /// Consensus epochs as this node's finalized state decides them.
    pub fn epochs(&self) -> EpochWatch {
        self.epochs.clone()
    }

    /// The genesis block: height 0 with the genesis state's root.
    pub fn genesis_block(&self) -> Block {
        self.chain.lock().genesis.clone()
    }

    /// A snapshot of the finalized chain.
    pub fn view(&self) -> ChainView {
        let chain = self.chain.lock();
        ChainView {
            height: chain.finalized_height,
            block: chain.finalized_block,
            root: chain.finalized.root(),
            mempool: chain.mempool.len(),
        }
    }

    /// The finalized block at `height`, from the block log (or genesis).
    pub fn finalized_block(&self, height: u64) -> Option<Block> {
        let log = {
            let chain = self.chain.lock();
            if height == 0 {
                return Some(chain.genesis.clone());
            }
            if height > chain.finalized_height {
                return None;
            }
            chain.log.clone()?
        };
        // Read and decoded without the chain's lock.
        log.get(height).ok().flatten()
    }

    /// Where a transaction stands on this node.
    pub fn tx_status(&self, hash: &Digest) -> TxStatus {
        let chain = self.chain.lock();
        if let Some(height) = chain.included.get(hash) {
            TxStatus::Finalized { height: *height }
        } else if chain.mempool.contains(hash) {
            TxStatus::Pending
        } else if let Some(reason) = chain.mempool.rejection(hash) {
            TxStatus::Rejected {
                reason: reason.to_owned(),
            }
        } else {
            TxStatus::Unknown
        }
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> NodeMetrics {
        let chain = self.chain.lock();
        NodeMetrics {
            height: chain.finalized_height,
            last_block_time_ms: chain.last_block_time_ms,
            finalized_txs: chain.finalized_txs,
            rejected_txs: chain.rejected_txs,
            replayed_blocks: chain.replayed_blocks,
            mempool: chain.mempool.len(),
            escrow: chain.finalized.meta().escrow.get(),
            open_books: chain.finalized.books().count(),
        }
    }

    /// The state root after each finalized height this node applied.
    pub fn finalized_roots(&self) -> BTreeMap<u64, Digest> {
        self.chain.lock().roots.clone()
    }

    /// Runs `f` on the finalized state, without holding the chain's lock
    /// (consensus goes on while `f` reads).
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.finalized_state())
    }

    /// The finalized state: a shared, immutable copy.
    pub fn finalized_state(&self) -> Arc<State> {
        Arc::clone(&self.chain.lock().finalized)
    }

    /// Admits a transaction to the mempool, checked against the finalized state.
    ///
    /// # Errors
    /// [`MempoolError`] if it is not admitted.
    pub fn submit(&self, tx: SignedTx) -> Result<Digest, MempoolError> {
        // Costly checks before the lock: the signature, and a one-time
        // transaction's ring signatures and range proofs, verify against a
        // copy of the finalized state while consensus goes on. What verifies
        // is remembered, so the admission under the lock and the block that
        // holds it do not verify it again; what fails is refused here, after
        // the cheap duplicate checks.
        let state = {
            // The cheap checks first, under the lock a moment: a duplicate,
            // a stale or far nonce or a spent quota costs no verification.
            let chain = self.chain.lock();
            if chain.included.contains_key(&tx.hash()) {
                return Err(MempoolError::Duplicate);
            }
            chain.mempool.precheck(&tx, &chain.finalized)?;
            Arc::clone(&chain.finalized)
        };
        // The signature is remembered by the admission, if at all (not a
        // fresh key's, nor a one-time transaction's whose proofs fail: each
        // false order comes from a fresh key, and a memo of their signatures
        // would push the honest ones out).
        let checked = state.verify_tx_unremembered(tx.clone()).and_then(|v| {
            if v.tx().body.is_one_time() {
                let ctx = crate::mempool::admission_context(&state);
                quartier_ledger::check_one_time(&state, &v, &ctx)?;
            }
            Ok(v)
        });
        let verified = match checked {
            Ok(verified) => verified,
            Err(e) => {
                let chain = self.chain.lock();
                let hash = tx.hash();
                if chain.included.contains_key(&hash) || chain.mempool.contains(&hash) {
                    return Err(MempoolError::Duplicate);
                }
                return Err(MempoolError::Invalid(e));
            }
        };
        let mut chain = self.chain.lock();
        // A one-time signer's transaction has no nonce to make a replay
        // stale: one already final is a duplicate, not a new transaction.
        if chain.included.contains_key(&tx.hash()) {
            return Err(MempoolError::Duplicate);
        }
        let Chain {
            mempool, finalized, ..
        } = &mut *chain;
        mempool.insert_verified(verified, finalized)
    }

    /// The cached post-state of `digest`, if known.
    fn known_state(&self, digest: &BlockDigest) -> Option<State> {
        let chain = self.chain.lock();
        if *digest == chain.finalized_block {
            return Some(State::clone(&chain.finalized));
        }
        chain.executed.get(digest).map(|(_, s)| s.clone())
    }

    /// The state after `block`, replaying ancestors from the nearest known state.
    async fn state_after(
        &self,
        block: Digested<Block>,
        ancestry: &mut impl Ancestry<Block>,
    ) -> Option<State> {
        let mut pending = vec![block];
        let mut state = loop {
            let top = pending.last()?;
            if let Some(state) = self.known_state(&top.digest()) {
                pending.pop();
                break state;
            }
            if top.inner().height().get() <= self.chain.lock().finalized_height {
                // Below the finalized tip on another branch: can not be built on.
                return None;
            }
            pending.push(ancestry.next().await?);
        };
        while let Some(block) = pending.pop() {
            let b = block.inner();
            replay(&mut state, b)?;
            self.chain
                .lock()
                .executed
                .insert(block.digest(), (b.height().get(), state.clone()));
        }
        Some(state)
    }

    /// Applies a finalized block exactly once.
    fn finalize(&self, block: &Digested<Block>) {
        let b = block.inner();
        let height = b.height().get();
        let mut chain = self.chain.lock();
        if height <= chain.finalized_height {
            return; // redelivered after a restart: already applied
        }
        let digest = block.digest();
        let state = match chain.executed.remove(&digest) {
            Some((_, state)) => state,
            None => {
                // Marshal delivers in height order, so the parent is our tip.
                assert_eq!(
                    b.parent(),
                    chain.finalized_block,
                    "finalized block does not extend the tip"
                );
                let mut state = State::clone(&chain.finalized);
                let outcome = execute_block(&mut state, &ctx(b), b.txs().to_vec())
                    .expect("a finalized block follows the finalized state");
                assert_eq!(
                    outcome.root,
                    b.state_root(),
                    "finalized block's root does not match"
                );
                state
            }
        };
        // Safety invariant: what we apply is what consensus finalized.
        assert_eq!(
            state.root(),
            b.state_root(),
            "applied state differs from the finalized root"
        );
        // Durable before acknowledged: a node that can not persist must halt.
        let snapshot = (self.snapshot_every > 0 && height.is_multiple_of(self.snapshot_every))
            .then(|| state.snapshot().ok())
            .flatten();
        let epoch_change = epoch_change(&state, b);
        if let Some(log) = &chain.log
            && let Err(e) = log.append(
                b,
                snapshot.as_deref(),
                epoch_change.as_ref().map(|(epoch, e)| (*epoch, e)),
            )
        {
            panic!("can not persist finalized block {height}: {e}");
        }
        chain.finalized = Arc::new(state);
        chain.record(digest, b);
        self.epochs.update(&chain.finalized, chain.boundary);
        chain.finalized_txs += b.txs().len() as u64;
        if snapshot.is_some()
            && let Some(retention) = self.block_retention_ms
        {
            self.prune(&mut chain, b.time_ms().saturating_sub(retention));
        }
        // Nobody listening is fine: send only fails without receivers.
        let _ = self.events.send(StreamEvent::Block {
            height,
            time_ms: b.time_ms(),
            root: b.state_root().to_string(),
            txs: b.txs().len(),
        });
        for st in chain
            .finalized
            .settlements()
            .filter(|s| s.height.0 == height)
        {
            let t = &st.clearing.totals;
            let _ = self.events.send(StreamEvent::Settlement {
                region: st.region.0,
                slot: st.slot.0,
                height,
                orders: st.orders.len(),
                local_energy: t.local_energy.get(),
                grid_import: t.grid_import.get(),
                grid_export: t.grid_export.get(),
            });
        }
        chain.executed.retain(|_, (h, _)| *h > height);
        let Chain {
            mempool, finalized, ..
        } = &mut *chain;
        for tx in b.txs() {
            mempool.remove(&tx.hash());
        }
        mempool.prune(finalized);
    }
}

/// The evidence of the validator-set change `b` ends its epoch with (none
/// if it does not end one, or the set stays): the block, and the proof of
/// the `ValidatorSets` record under the root of `state`, the state after it.
/// Its certificate is added once consensus has it
/// ([`LedgerApp::complete_epoch_changes`]).
fn epoch_change(state: &State, b: &Block) -> Option<(u64, EpochEvidence)> {
    let blocks = state.epoch_blocks();
    let next = b.height().get().saturating_add(1);
    if blocks == 0 || !next.is_multiple_of(blocks) {
        return None;
    }
    let latest = state.validator_sets().last()?;
    if latest.from_epoch != next / blocks {
        return None;
    }
    let proof = state.prove(quartier_ledger::StateKey::ValidatorSets).ok()?;
    Some((
        latest.from_epoch,
        EpochEvidence {
            block: hex::encode(b.encode()),
            finalization: String::new(),
            proof: hex::encode(borsh::to_vec(&proof).ok()?),
        },
    ))
}

/// Whether the one-time `tx` would be admitted against `state` (its
/// signature, rings, proofs and allowance, with the next block's time judged
/// loosely, as a mempool does).
fn passes_on(state: &State, tx: &SignedTx, ctx: &BlockContext) -> bool {
    state.verify_tx_unremembered(tx.clone()).is_ok_and(|v| {
        let passes = quartier_ledger::check_one_time(state, &v, ctx).is_ok();
        if passes {
            state.remember_signature(&v);
        }
        passes
    })
}

impl LedgerApp {
    /// Deletes the blocks older than `horizon` (block time) that are below the
    /// snapshot just written at the tip, from the log and from consensus
    /// storage, and forgets their roots and transactions.
    fn prune(&self, chain: &mut Chain, horizon: u64) {
        let tip = chain.finalized_height;
        // The lowest height to keep: the first block at or after the horizon,
        // never above the snapshot at the tip, and never above the block the
        // current consensus epoch starts from (a restart's engine starts
        // from its digest).
        let keep = chain
            .times
            .iter()
            .find(|(_, t)| **t >= horizon)
            .map_or(tip, |(h, _)| *h)
            .min(tip)
            .min(chain.boundary.map_or(tip, |b| b.height))
            // Nor above a set change whose certificate is not stored yet
            // (consensus storage is pruned with the blocks).
            .min(
                chain
                    .log
                    .as_ref()
                    .and_then(|log| log.first_incomplete_epoch_change().ok().flatten())
                    .map_or(tip, |epoch| {
                        epoch.saturating_mul(chain.epoch_blocks).saturating_sub(1)
                    }),
            );
        if keep <= chain.first_kept {
            return;
        }
        if let Some(log) = &chain.log
            && let Err(e) = log.prune_below(keep)
        {
            tracing::warn!("block log not pruned: {e}");
            return;
        }
        if let Some(pruner) = self.pruner.lock().as_ref() {
            pruner(keep);
        }
        chain.first_kept = keep;
        chain.times = chain.times.split_off(&keep);
        chain.roots = chain.roots.split_off(&keep);
        chain.included.retain(|_, h| *h >= keep);
        tracing::info!(below = keep, "pruned finalized blocks");
    }
}

/// Executes `b` on `state` (its parent's post-state) and checks it the way a
/// validator must: every transaction accepted and the resulting root equal to
/// the block's. `None` if it does not hold; `state` is then unusable.
fn replay(state: &mut State, b: &Block) -> Option<()> {
    let outcome = execute_block(state, &ctx(b), b.txs().to_vec()).ok()?;
    (outcome.results.iter().all(Result::is_ok) && outcome.root == b.state_root()).then_some(())
}

fn ctx(b: &Block) -> BlockContext {
    BlockContext {
        height: quartier_types::Height(b.height().get()),
        time: Timestamp(b.time_ms()),
    }
}

impl<E> commonware_consensus::Application<E> for LedgerApp
where
    E: Clock + Send + Sync + 'static,
{
    type SigningScheme = Scheme;
    type Context = Context<BlockDigest, PublicKey>;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
        _input: (),
    ) -> Option<Digested<Self::Block>> {
        let parent = ancestry.next().await?;
        let parent_digest = parent.digest();
        let (parent_height, parent_time) = (parent.inner().height(), parent.inner().time_ms());
        let mut state = self.state_after(parent, &mut ancestry).await?;
        let time_ms = millis(runtime.current()).max(parent_time);
        let height_seed = parent_height.get();
        let candidates = self.chain.lock().mempool.pending(
            MAX_BLOCK_TXS,
            |who| state.account(who).nonce,
            height_seed,
        );
        let idle = candidates.is_empty()
            && !state.settlement_due(Timestamp(time_ms))
            && time_ms < parent_time.saturating_add(self.idle_block_ms)
            && parent_height.get() > 0;
        if idle {
            return None;
        }
        let height = parent_height.next();
        let context = BlockContext {
            height: quartier_types::Height(height.get()),
            time: Timestamp(time_ms),
        };
        let outcome = execute_block(&mut state, &context, candidates.clone()).ok()?;
        // Rejected transactions changed nothing, so the block holds only the
        // accepted ones and re-executes to the same root.
        let mut txs = Vec::new();
        {
            let mut chain = self.chain.lock();
            for (tx, result) in candidates.into_iter().zip(&outcome.results) {
                match result {
                    Ok(_) => txs.push(tx),
                    // A future nonce may become valid: keep it pending.
                    Err(TxError::BadNonce { expected, got }) if got > expected => {}
                    // A nonce used only by a block not yet finalized (most
                    // likely by this very tx): it may still be final, or be
                    // needed again if that block is orphaned. Keep it; it
                    // leaves the mempool when it is finalized.
                    Err(TxError::BadNonce { .. })
                        if chain.finalized.account(&tx.tx.signer).nonce <= tx.tx.nonce => {}
                    // The same for a one-time tx (no nonce): a key image used
                    // only by a block not yet finalized — and only if the tx
                    // passes in full against the final state, so junk that
                    // fails on a key image (one repeated inside it, say) is
                    // refused for good, not kept to be verified again.
                    Err(
                        TxError::KeyImageSpent | TxError::DuplicateOrder | TxError::AllowanceUsed,
                    ) if tx.tx.body.is_one_time()
                        && !quartier_ledger::key_image_used(&chain.finalized, &tx.tx.body)
                        && passes_on(&chain.finalized, &tx, &context) => {}
                    Err(e) => {
                        chain.rejected_txs += 1;
                        chain.mempool.reject(tx.hash(), e.clone());
                    }
                }
            }
        }
        let block = Block::new(parent_digest, height, time_ms, outcome.root, txs);
        let digest = block.digest();
        self.chain
            .lock()
            .executed
            .insert(digest, (height.get(), state));
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        (runtime, _context): (E, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        let (Some(block), Some(parent)) = (ancestry.next().await, ancestry.next().await) else {
            tracing::warn!("verify: ancestry ended before the parent");
            return false;
        };
        let b = block.inner();
        if b.parent() != parent.digest()
            || b.height() != parent.inner().height().next()
            || b.time_ms() < parent.inner().time_ms()
            || b.txs().len() > MAX_BLOCK_TXS
        {
            tracing::warn!(
                height = b.height().get(),
                "verify: block does not follow its parent"
            );
            return false;
        }
        // A block from the near future is not invalid: wait for our clock.
        let now = millis(runtime.current());
        if b.time_ms() > now {
            let ahead = Duration::from_millis(b.time_ms() - now);
            if ahead > MAX_BLOCK_LEAD {
                tracing::warn!(
                    height = b.height().get(),
                    ?ahead,
                    "verify: block from the future"
                );
                return false;
            }
            if ahead > MAX_CLOCK_DRIFT {
                runtime.sleep(ahead - MAX_CLOCK_DRIFT).await;
            }
        } else {
            let behind = Duration::from_millis(now - b.time_ms());
            if behind > MAX_BLOCK_LAG {
                tracing::warn!(
                    height = b.height().get(),
                    ?behind,
                    "verify: back-dated block"
                );
                return false;
            }
        }
        let Some(mut state) = self.state_after(parent, &mut ancestry).await else {
            tracing::warn!(
                height = b.height().get(),
                "verify: parent state unavailable"
            );
            return false;
        };
        let Ok(outcome) = execute_block(&mut state, &ctx(b), b.txs().to_vec()) else {
            tracing::warn!(height = b.height().get(), "verify: block does not execute");
            return false;
        };
        if let Some(Err(e)) = outcome.results.iter().find(|r| r.is_err()) {
            tracing::warn!(height = b.height().get(), error = %e, "verify: block holds a rejected tx");
            return false;
        }
        if outcome.root != b.state_root() {
            tracing::warn!(height = b.height().get(), "verify: state root differs");
            return false;
        }
        self.chain
            .lock()
            .executed
            .insert(block.digest(), (b.height().get(), state));
        true
    }
}

impl Reporter for LedgerApp {
    type Activity = Update<Block>;

    fn report(&mut self, activity: Self::Activity) -> Feedback {
        if let Update::Block(block, ack) = activity {
            self.finalize(&block);
            ack.acknowledge();
        }
        Feedback::Ok
    }
}
