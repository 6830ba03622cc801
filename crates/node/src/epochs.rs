//! Consensus epochs: which validators sign which heights.
//!
//! The ledger decides (`Genesis::epoch_blocks`, `State::validator_set`):
//! epoch `e` spans heights `e·L .. (e+1)·L`, and the validator set the
//! ledger holds after the last block of epoch `e` signs epoch `e + 1`. A
//! node learns an epoch's set by applying the block before it, so consensus
//! (marshal's certificate checks, simplex's engine per epoch) asks
//! [`EpochWatch`] and gets an answer only for the epochs its finalized state
//! decides: a certificate of a later epoch is not checked against a guess.

use crate::block::{BlockDigest, Scheme};
use commonware_codec::DecodeExt as _;
use commonware_consensus::types::{Epoch, FixedEpocher};
use commonware_cryptography::certificate::{Provider, Scoped};
use commonware_cryptography::ed25519;
use commonware_utils::ordered::Set;
use commonware_utils::sync::Mutex;
use quartier_ledger::{State, ValidatorSet};
use quartier_types::AccountId;
use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::sync::Arc;

/// The epoch length of a chain whose genesis sets none: one epoch for the
/// chain's life (commonware's epochs need a length).
const ONE_EPOCH: NonZeroU64 = match NonZeroU64::new(u64::MAX / 2) {
    Some(n) => n,
    None => unreachable!(),
};

/// The epoch boundary a node has finalized: the last block of the epoch
/// before `epoch`, on which `epoch`'s first block builds.
///
/// Simplex runs one engine per epoch and marshal re-proposes this block as
/// the first of the next epoch, so it is finalized once, in its own epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boundary {
    /// The epoch that starts after the block.
    pub epoch: u64,
    /// The block's height.
    pub height: u64,
    /// The block.
    pub block: BlockDigest,
}

/// What the node's finalized state says about consensus epochs, shared
/// between the application (which updates it as blocks finalize) and
/// consensus (which reads it). Cloning shares it.
#[derive(Clone, Default)]
pub struct EpochWatch {
    inner: Arc<Mutex<Watch>>,
}

#[derive(Default)]
struct Watch {
    epoch_blocks: u64,
    /// The latest epoch the finalized state decides.
    known: u64,
    sets: Vec<ValidatorSet>,
    /// The ledger's validators now (signing from the next boundary on).
    governance: BTreeSet<AccountId>,
    /// The latest boundary finalized here (none in epoch 0, or when the
    /// node joined after it).
    boundary: Option<Boundary>,
    /// Woken at each boundary.
    listeners: Vec<futures::channel::mpsc::UnboundedSender<Boundary>>,
    /// Woken when governance's validators or the decided epoch change.
    watchers: Vec<futures::channel::mpsc::UnboundedSender<()>>,
}

impl EpochWatch {
    /// Takes what the finalized `state` says, and the latest `boundary`
    /// finalized (the listeners hear of a new one).
    pub(crate) fn update(&self, state: &State, boundary: Option<Boundary>) {
        let mut w = self.inner.lock();
        w.epoch_blocks = state.epoch_blocks();
        let mut changed = w.known != state.known_consensus_epoch();
        w.known = state.known_consensus_epoch();
        if w.sets.len() != state.validator_sets().len() {
            w.sets = state.validator_sets().to_vec();
        }
        if &w.governance != state.validators() {
            w.governance = state.validators().clone();
            changed = true;
        }
        if changed {
            w.watchers
                .retain(|watcher| watcher.unbounded_send(()).is_ok());
        }
        if let Some(boundary) = boundary
            && w.boundary != Some(boundary)
        {
            w.boundary = Some(boundary);
            w.listeners
                .retain(|listener| listener.unbounded_send(boundary).is_ok());
        }
    }

    /// Boundaries finalized from now on.
    pub fn subscribe(&self) -> futures::channel::mpsc::UnboundedReceiver<Boundary> {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        self.inner.lock().listeners.push(sender);
        receiver
    }

    /// A wake-up whenever governance's validators or the decided epoch
    /// change (who a node should connect to).
    pub fn watch(&self) -> futures::channel::mpsc::UnboundedReceiver<()> {
        let (sender, receiver) = futures::channel::mpsc::unbounded();
        self.inner.lock().watchers.push(sender);
        receiver
    }

    /// The epoch of the next block to finalize (the latest one decided).
    pub fn current(&self) -> u64 {
        self.inner.lock().known
    }

    /// The boundary `epoch` starts from, if this node finalized it.
    pub fn boundary(&self, epoch: u64) -> Option<Boundary> {
        self.inner.lock().boundary.filter(|b| b.epoch == epoch)
    }

    /// Blocks per epoch, as commonware's epocher.
    pub fn epocher(&self) -> FixedEpocher {
        let blocks = self.inner.lock().epoch_blocks;
        FixedEpocher::new(NonZeroU64::new(blocks).unwrap_or(ONE_EPOCH))
    }

    /// The validators that sign `epoch`, if the finalized state decides it.
    pub fn validators(&self, epoch: u64) -> Option<BTreeSet<AccountId>> {
        let w = self.inner.lock();
        if epoch > w.known {
            return None;
        }
        w.sets
            .iter()
            .rev()
            .find(|s| s.from_epoch <= epoch)
            .map(|s| s.validators.clone())
    }

    /// Whether `key` is a validator by governance now (it signs from the
    /// next boundary on, or signs now and stays).
    pub fn is_governance_validator(&self, key: &AccountId) -> bool {
        self.inner.lock().governance.contains(key)
    }
}

/// A consensus key's bytes, as the ledger names accounts.
pub fn account_bytes(key: &ed25519::PublicKey) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(commonware_codec::Encode::encode(key).as_ref());
    bytes
}

/// An account id as a consensus key (the ledger admits only keys that are
/// Ed25519 points; one that is not is left out of the set).
pub fn consensus_key(id: &AccountId) -> Option<ed25519::PublicKey> {
    ed25519::PublicKey::decode(bytes::Bytes::copy_from_slice(&id.0)).ok()
}

/// The consensus schemes of each epoch, for marshal and simplex: this
/// validator's signer in the epochs whose set has it, a verifier in the
/// others; nothing for an epoch the node has not decided yet.
#[derive(Clone)]
pub struct EpochSchemes {
    watch: EpochWatch,
    namespace: Arc<Vec<u8>>,
    signer: ed25519::PrivateKey,
    cache: Arc<Mutex<BTreeMap<u64, Scoped<Scheme>>>>,
}

impl EpochSchemes {
    /// The schemes `signer` uses under `namespace`, from what `watch` says.
    pub fn new(watch: EpochWatch, namespace: &[u8], signer: ed25519::PrivateKey) -> EpochSchemes {
        EpochSchemes {
            watch,
            namespace: Arc::new(namespace.to_vec()),
            signer,
            cache: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The participants of `epoch`, if decided.
    pub fn participants(&self, epoch: u64) -> Option<Set<ed25519::PublicKey>> {
        let keys: Vec<ed25519::PublicKey> = self
            .watch
            .validators(epoch)?
            .iter()
            .filter_map(consensus_key)
            .collect();
        Set::try_from(keys).ok()
    }
}

impl Provider for EpochSchemes {
    type Scope = Epoch;
    type Scheme = Scheme;

    fn scoped(&self, epoch: Epoch) -> Option<Scoped<Scheme>> {
        if let Some(scoped) = self.cache.lock().get(&epoch.get()) {
            return Some(scoped.clone());
        }
        let participants = self.participants(epoch.get())?;
        let scoped =
            match Scheme::signer(&self.namespace, participants.clone(), self.signer.clone()) {
                Some(signer) => Scoped::scheme(Arc::new(signer)),
                None => Scoped::verifier(Arc::new(Scheme::verifier(&self.namespace, participants))),
            };
        let mut cache = self.cache.lock();
        cache.insert(epoch.get(), scoped.clone());
        // A few recent epochs are asked for again and again; older ones
        // rarely (a peer's backfill), and are rebuilt then.
        while cache.len() > 8 {
            cache.pop_first();
        }
        Some(scoped)
    }
}
