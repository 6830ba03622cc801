//! What an auctioneer enclave publishes about a slot: receipts (one per
//! sealed order, sealed to its wallet), aggregates and the summary the
//! committee signs. Verifiers (the ledger, meters) need these types only.

use crate::sealed::{DropReason, HpkeKeyPair, SealedOrder, hpke_open};
use borsh::{BorshDeserialize, BorshSerialize};
use quartier_auction::Totals;
use quartier_types::hash::{self, Digest};
use quartier_types::{AccountId, Money, Order, Price, RegionId, Slot};
use serde::{Deserialize, Serialize};

/// Domain tag of a receipt's hash.
pub const TAG_RECEIPT: &str = "QUARTIER_ENCLAVE_RECEIPT";
/// Domain tag of the receipts root.
pub const TAG_RECEIPTS_ROOT: &str = "QUARTIER_ENCLAVE_RECEIPTS_ROOT";

/// Why an opened order is still refused (beyond [`DropReason`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, BorshSerialize, BorshDeserialize)]
pub enum Refusal {
    /// The sealed order does not open or is not valid.
    #[error(transparent)]
    Dropped(#[from] DropReason),
    /// For another region than this auctioneer's.
    #[error("order for another region")]
    WrongRegion,
    /// The slot's book is already cleared.
    #[error("the slot is already settled")]
    SlotSettled,
    /// The limit is outside [feed-in, grid].
    #[error("limit outside the tariff band")]
    LimitOutOfRange,
    /// The wallet already has an order on this side in this slot.
    #[error("duplicate order")]
    Duplicate,
    /// A buy's escrow exceeds the wallet's prepaid balance.
    #[error("prepaid balance too small")]
    InsufficientPrepaid,
    /// The wallet is not a meter that submitted an order for this slot
    /// (the chain names them in the batch).
    #[error("the wallet is not a meter trading in this slot")]
    NotATrader,
    /// A sell above what the wallet's registered PV produces in one slot
    /// (any sell of a meter without PV).
    #[error("sell exceeds the meter's PV capacity")]
    ExceedsCapacity,
    /// Signed for another chain (a replay of an order placed there).
    #[error("order for another chain")]
    WrongChain,
}

/// What a household learns about its sealed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum Outcome {
    /// Accepted and cleared.
    Cleared {
        /// The order.
        order: Order,
        /// Matched locally.
        matched: quartier_types::Energy,
        /// What it paid (buys).
        pays: Money,
        /// What it received (sells).
        receives: Money,
    },
    /// Refused, and why.
    Refused(Refusal),
}

/// One receipt per sealed order of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct Receipt {
    /// Hash of the sealed order it answers (the household knows it).
    pub sealed: Digest,
    /// The wallet, if the order opened.
    pub wallet: Option<AccountId>,
    /// What happened.
    pub outcome: Outcome,
}

/// HPKE `info` of sealed receipts.
pub const HPKE_INFO_RECEIPT: &[u8] = b"QUARTIER_ENCLAVE_RECEIPT";

/// A receipt's plaintext size after padding: a cleared order's receipt and
/// a refused one's seal to the same length (their sizes would tell the
/// public which meters' orders were refused, e.g. a buy over its prepaid
/// balance).
pub const RECEIPT_PADDED_LEN: usize = 128;

/// A receipt as published: sealed to the receipt key its order carried, or
/// in clear when the order never opened (then it says only why).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct PublishedReceipt {
    /// Hash of the sealed order it answers.
    pub sealed: Digest,
    /// The receipt.
    pub body: ReceiptBody,
}

/// A published receipt's content.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub enum ReceiptBody {
    /// For an order that did not open, or whose receipt key can not be
    /// sealed to (a low-order point the household chose): readable by
    /// anyone, names no wallet.
    Clear(Receipt),
    /// HPKE-sealed to the order's receipt key (AAD = the sealed order's hash).
    Sealed {
        /// HPKE's encapsulated key.
        encapped_key: [u8; 32],
        /// The sealed receipt.
        ciphertext: Vec<u8>,
    },
}

impl PublishedReceipt {
    /// The receipt's hash, a leaf of the receipts root.
    pub fn hash(&self) -> Digest {
        hash::tagged(TAG_RECEIPT, &[&borsh::to_vec(self).unwrap_or_default()])
    }

    /// Opens the receipt with the secret of the receipt key the household
    /// put in its order (or reads a clear one); `None` if it is not theirs.
    pub fn open(&self, key: &HpkeKeyPair) -> Option<Receipt> {
        match &self.body {
            ReceiptBody::Clear(r) => Some(*r),
            ReceiptBody::Sealed {
                encapped_key,
                ciphertext,
            } => {
                let plain = hpke_open(
                    &key.secret,
                    encapped_key,
                    HPKE_INFO_RECEIPT,
                    ciphertext,
                    &self.sealed.0,
                )?;
                let body = crate::sealed::unpad_from(&plain, RECEIPT_PADDED_LEN)?;
                let receipt: Receipt = borsh::from_slice(body).ok()?;
                (receipt.sealed == self.sealed).then_some(receipt)
            }
        }
    }
}

/// The hash of a sealed order, as its receipt names it.
pub fn sealed_hash(sealed: &SealedOrder) -> Digest {
    hash::tagged(
        "QUARTIER_ENCLAVE_SEALED",
        &[&borsh::to_vec(sealed).unwrap_or_default()],
    )
}

/// The lowest, highest and energy-weighted mean trade price of a slot.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct PriceRange {
    /// The lowest trade price.
    pub min: Price,
    /// The highest trade price.
    pub max: Price,
    /// The energy-weighted mean.
    pub mean: Price,
}

/// The public part of a slot's report.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Aggregates {
    /// Sealed orders received.
    pub sealed: u32,
    /// Orders accepted and cleared.
    pub cleared: u32,
    /// The clearing's totals (volumes and money flows).
    pub totals: Totals,
    /// The trade prices, if any trade.
    pub prices: Option<PriceRange>,
}

/// What the committee signs and the chain stores for a slot: everything
/// public about it. The receipts themselves are served by the enclaves; the
/// root commits to them.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SlotSummary {
    /// The region.
    pub region: RegionId,
    /// The slot.
    pub slot: Slot,
    /// Root over the receipts' hashes, in submission order.
    pub receipts_root: Digest,
    /// Public aggregates.
    pub aggregates: Aggregates,
    /// Withdrawals out of custody the enclave approved, in request order.
    pub payouts: Vec<(AccountId, Money)>,
    /// The region's prepaid ledger after the slot
    /// ([`Auctioneer::ledger_digest`]): salted with the members' epoch
    /// secrets, so it says nothing to anyone else, and signed with the
    /// rest, so a member that fell behind takes a peer's ledger only if t
    /// members computed it.
    pub ledger: Digest,
    /// The ledger the slot was cleared from: the `ledger` of the region's
    /// previous report, or [`FIRST_LEDGER`] for its first. The chain takes
    /// a report only if it continues the last one, so no t members' report
    /// builds on a ledger the committee never signed.
    pub ledger_before: Digest,
}

/// [`SlotSummary::ledger_before`] of a region's first report.
pub const FIRST_LEDGER: Digest = Digest([0; 32]);

/// A slot's summary with its receipts.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SlotReport {
    /// The signed, public part.
    pub summary: SlotSummary,
    /// The receipts, in submission order (each household opens its own).
    pub receipts: Vec<PublishedReceipt>,
}

/// The receipts root: a tagged hash of the count and every leaf in order.
pub fn receipts_root(receipts: &[PublishedReceipt]) -> Digest {
    let leaves: Vec<Digest> = receipts.iter().map(PublishedReceipt::hash).collect();
    let count = (leaves.len() as u64).to_le_bytes();
    let mut parts: Vec<&[u8]> = vec![&count];
    parts.extend(leaves.iter().map(|d| d.0.as_slice()));
    hash::tagged(TAG_RECEIPTS_ROOT, &parts)
}
