//! Transactions: what they say, how they are signed and decoded.
//!
//! A [`SignedTx`] is `borsh(Tx) ‖ signature`. The signature is Ed25519 by the
//! signer's key over `QUARTIER_LEDGER_TX ‖ borsh(Tx)`; the `Tx` names the chain
//! and the signer's next nonce, so it can be neither replayed nor moved to
//! another chain. Decoding is strict: canonical bytes only, no trailing bytes,
//! at most [`MAX_TX_BYTES`].

use crate::shielded_tx::ShieldedTransfer;
use crate::verified::ProofMemo;
use crate::{ChainId, TxError, canonical};
use borsh::{BorshDeserialize, BorshSerialize};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use quartier_enclave_proto::attestation::{Measurement, Quote};
use quartier_enclave_proto::committee::{GroupPublicKey, GroupSignature};
use quartier_enclave_proto::report::SlotSummary;
use quartier_enclave_proto::sealed::{Epoch, SealedOrder};
use quartier_shielded::output::Output;
use quartier_types::hash::{self, Digest};
use quartier_types::{AccountId, Energy, Money, Price, RegionId, Side, Slot};
use serde::{Deserialize, Serialize};

/// Domain prefix of the signed message.
pub const TAG_TX: &[u8] = b"QUARTIER_LEDGER_TX";
/// Domain tag of a transaction's hash.
pub const TAG_TX_HASH: &str = "QUARTIER_LEDGER_TX_HASH";
/// The largest encoded transaction accepted.
pub const MAX_TX_BYTES: usize = 8 * 1024;

/// What a meter is registered as.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[borsh(use_discriminant = true)]
pub enum MeterRole {
    /// Consumes only: may buy.
    Consumer = 0,
    /// Has PV: may buy and sell.
    Prosumer = 1,
}

/// A governance decision, taken by 2/3 of the validators: a change to the
/// validator set, or to the enclave measurements mode B admits.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GovernanceChange {
    /// Admit a validator.
    Add(AccountId),
    /// Remove a validator.
    Remove(AccountId),
    /// Allow enclaves built from this measurement to register.
    AllowMeasurement(Measurement),
    /// Stop admitting this measurement and evict its enclaves: they leave
    /// the registry, a committee candidate with one of them is dropped, and
    /// the committee in office records its members of it as evicted (it
    /// takes no new sealed order, deposit or epoch key until a committee
    /// without them takes office; it still reports the batches closed).
    RevokeMeasurement(Measurement),
    /// Seat the committee candidate with this group key (its members all
    /// voted for it): it takes office in place of the one in office, whose
    /// prepaid ledgers it must clear from.
    SeatCommittee(quartier_enclave_proto::committee::GroupPublicKey),
    /// Hand `authority` from `from` (its key when the proposal was made) to
    /// `key`, and lift a freeze of it: from the block whose vote passes it,
    /// the old key is refused for the role, and the old key's balance is
    /// the new key's (a leaked key keeps nothing). A proposal naming a key
    /// the role no longer has never applies (left-over votes can not hand
    /// the role back to a superseded key).
    RotateKey {
        /// The role.
        authority: Authority,
        /// Its key now.
        from: AccountId,
        /// Its new key: no role's, meter's, enclave's or validator's.
        key: AccountId,
    },
    /// Emergency: every transaction signed by `key`, `authority`'s key, is
    /// refused until a [`GovernanceChange::RotateKey`] of it passes. It
    /// passes with more than a third of the validators (at least one honest
    /// one when fewer than a third are Byzantine), so a leak is stopped
    /// before a two-thirds vote on the new key is in. Naming the key, it
    /// never freezes the one a rotation brought in.
    Freeze {
        /// The role.
        authority: Authority,
        /// Its key now.
        key: AccountId,
    },
    /// Replace the roles' limits.
    SetLimits(crate::Limits),
    /// Let the utility mint `amount` more than the cap (spent by its
    /// mints above the cap, in any later period).
    ApproveMint(Money),
    /// Let the DSO register `meter` with `pv_watts` above the bound (once).
    ApprovePv {
        /// The meter.
        meter: AccountId,
        /// Its PV capacity, watts peak.
        pv_watts: u32,
    },
}

/// A chain role held by one key, changed only by governance.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    BorshSerialize,
    BorshDeserialize,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Authority {
    /// The grid operator: registers meters, sets the local fee, receives
    /// fees.
    Dso,
    /// The utility: issues IOUs, sets tariffs, sells and buys the
    /// remainder.
    Utility,
}

impl Authority {
    /// The role a transaction needs when this authority must sign it.
    pub fn role(self) -> crate::Role {
        match self {
            Authority::Dso => crate::Role::Dso,
            Authority::Utility => crate::Role::Utility,
        }
    }
}

/// What a transaction does. The signer's role is checked before anything else.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxBody {
    /// DSO: allow `meter` to trade in `region`, with its PV capacity in watts peak.
    RegisterMeter {
        /// The meter's key.
        meter: AccountId,
        /// Its grid region.
        region: RegionId,
        /// Consumer or prosumer.
        role: MeterRole,
        /// PV capacity in Wp; 0 for a consumer.
        pv_watts: u32,
    },
    /// DSO: stop a meter from placing further orders. Its open orders still settle.
    RetireMeter {
        /// The meter's key.
        meter: AccountId,
    },
    /// DSO: the local fee per kWh for books opened from now on.
    SetLocalFee {
        /// The region.
        region: RegionId,
        /// The fee.
        fee: Price,
    },
    /// Utility: issue IOUs to `to` against a fiat top-up.
    Mint {
        /// The receiving account.
        to: AccountId,
        /// The amount issued.
        amount: Money,
    },
    /// Utility: the tariffs for books opened from now on.
    SetTariffs {
        /// The region.
        region: RegionId,
        /// What the utility sells at.
        grid: Price,
        /// What the utility buys at.
        feed_in: Price,
    },
    /// Any holder: move IOUs to another account.
    Transfer {
        /// The receiving account.
        to: AccountId,
        /// The amount.
        amount: Money,
    },
    /// Any holder: return IOUs to the utility for fiat; they leave the supply.
    Redeem {
        /// The amount.
        amount: Money,
    },
    /// Registered meter: an order for one slot. A buy escrows `energy × grid_tariff`.
    PlaceOrder {
        /// The meter's region.
        region: RegionId,
        /// The slot.
        slot: Slot,
        /// Buy or sell.
        side: Side,
        /// Limit price.
        limit: Price,
        /// Energy measured in the slot.
        energy: Energy,
    },
    /// Registered meter: withdraw its order before the gate; the escrow returns.
    CancelOrder {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
        /// The side of the order.
        side: Side,
    },
    /// Validator: propose a change to the validator set (counts as a yes vote).
    Propose {
        /// The change.
        change: GovernanceChange,
    },
    /// Validator: vote on an open proposal.
    Vote {
        /// The proposal's id.
        proposal: u64,
        /// Yes or no.
        approve: bool,
    },
    /// Mode B, an enclave's own account: admit the enclave. Its quote must
    /// verify against the chain's attestation root and an allowed measurement,
    /// and its report data must be `identity_key ‖ signer`.
    RegisterEnclave {
        /// The attestation quote.
        quote: Quote,
        /// The enclave's X25519 identity key (epoch secrets are sealed to it).
        #[serde(with = "quartier_types::hex")]
        identity_key: [u8; 32],
    },
    /// Mode B, a registered enclave: vote for the committee a DKG produced; it
    /// takes office once every member voted for the same members and key.
    ActivateCommittee {
        /// The members, registered enclaves, in ascending order.
        members: Vec<AccountId>,
        /// The FROST group key their DKG produced.
        group_key: GroupPublicKey,
        /// The group's signature over
        /// `committee_message(chain id, policy threshold, members)`: the
        /// committee's key needs exactly the threshold the chain records.
        #[serde(with = "quartier_types::hex")]
        signature: GroupSignature,
    },
    /// Mode B, a registered enclave: publish the next epoch key, signed by the committee.
    PublishEpochKey {
        /// The epoch; later than every published one.
        epoch: Epoch,
        /// The HPKE public key households seal to.
        #[serde(with = "quartier_types::hex")]
        public_key: [u8; 32],
        /// The committee's signature over `epoch_key_message(epoch, public_key)`.
        #[serde(with = "quartier_types::hex")]
        signature: GroupSignature,
    },
    /// Mode B, a registered meter: its sealed order for one slot (one per slot).
    SubmitSealedOrder {
        /// The sealed order.
        sealed: SealedOrder,
    },
    /// Mode B, a registered meter: move IOUs into the enclaves' custody,
    /// credited to its prepaid balance from the next slot whose gate closes.
    DepositToAuctioneer {
        /// The amount.
        amount: Money,
    },
    /// Mode B, a registered meter: ask the enclaves to pay prepaid IOUs back;
    /// paid when a report approves it.
    RequestWithdrawal {
        /// The amount.
        amount: Money,
    },
    /// Mode A, any holder: move IOUs into the shielded pool as one new output
    /// whose commitment opens to `amount` with `mask` (both revealed).
    Shield {
        /// The amount.
        amount: Money,
        /// The new stealth output.
        output: Output,
        /// Its commitment's mask.
        #[serde(with = "quartier_types::hex")]
        mask: [u8; 32],
    },
    /// Mode A, a one-time key with nonce 0: spend pool outputs into new ones.
    ShieldedTransfer {
        /// The transfer.
        transfer: ShieldedTransfer,
        /// A meter's allowance of the slot.
        allowance: crate::Allowance,
    },
    /// Mode A, a one-time key with nonce 0: spend pool outputs into new ones
    /// and `amount` paid to `to`.
    Unshield {
        /// The transfer.
        transfer: ShieldedTransfer,
        /// The receiving account.
        to: AccountId,
        /// The public amount.
        amount: Money,
        /// A meter's allowance of the slot.
        allowance: crate::Allowance,
    },
    /// Mode A, a one-time key with nonce 0: an order placed by an unnamed
    /// meter of the region, funded from the pool, paid to a stealth address.
    PlaceShieldedOrder {
        /// The order.
        order: crate::ShieldedOrder,
    },
    /// Mode B, a registered enclave: a slot's summary with the committee's signature.
    PostSettlementReport {
        /// The public summary.
        summary: SlotSummary,
        /// The committee's signature over `report_message(summary)`.
        #[serde(with = "quartier_types::hex")]
        signature: GroupSignature,
    },
    /// A validator voted in, signed by its own key: it runs and will sign.
    /// Only then does an epoch boundary seat it in consensus (a key voted
    /// in that never runs never signs, so keys that do not run can not
    /// take a quorum away); its node sends this by itself.
    JoinValidators,
}

/// An unsigned transaction.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Tx {
    /// The chain it is for.
    pub chain_id: ChainId,
    /// The signing account.
    pub signer: AccountId,
    /// The signer's next nonce: its count of accepted transactions.
    pub nonce: u64,
    /// What it does.
    pub body: TxBody,
}

/// A transaction with its Ed25519 signature.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SignedTx {
    /// The transaction.
    pub tx: Tx,
    /// The signature over [`Tx::signing_bytes`].
    pub signature: [u8; 64],
}

impl TxBody {
    /// Whether this body is signed by a one-time key that the ledger does
    /// not track (mode A spends: nonce 0, no account record; replays are
    /// refused by their key images).
    pub fn is_one_time(&self) -> bool {
        matches!(
            self,
            TxBody::ShieldedTransfer { .. }
                | TxBody::Unshield { .. }
                | TxBody::PlaceShieldedOrder { .. }
        )
    }
}

impl Tx {
    /// The bytes the signer signs: `QUARTIER_LEDGER_TX ‖ borsh(self)`.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut bytes = TAG_TX.to_vec();
        bytes.extend_from_slice(&canonical(self));
        bytes
    }

    /// The account of the one-time key of `secret`: what a mode A
    /// transaction's ring signatures bind before it is signed.
    pub fn one_time_signer(secret: &[u8; 32]) -> AccountId {
        AccountId(SigningKey::from_bytes(secret).verifying_key().to_bytes())
    }

    /// A mode A transaction ([`TxBody::is_one_time`]) signed by the one-time
    /// key of `secret` (fresh randomness, used once), nonce 0.
    pub fn one_time(chain_id: ChainId, body: TxBody, secret: &[u8; 32]) -> SignedTx {
        let key = SigningKey::from_bytes(secret);
        Tx {
            chain_id,
            signer: AccountId(key.verifying_key().to_bytes()),
            nonce: 0,
            body,
        }
        .sign(&key)
    }

    /// Signs with `key`, which must be the key of `self.signer`.
    pub fn sign(self, key: &SigningKey) -> SignedTx {
        let signature = key.sign(&self.signing_bytes()).to_bytes();
        SignedTx {
            tx: self,
            signature,
        }
    }
}

impl SignedTx {
    /// Decodes canonical bytes.
    ///
    /// # Errors
    /// [`TxError::Malformed`] for oversized, non-canonical or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, TxError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(TxError::Malformed);
        }
        borsh::from_slice(bytes).map_err(|_| TxError::Malformed)
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        canonical(self)
    }

    /// The transaction's hash: its id in the API and the mempool.
    pub fn hash(&self) -> Digest {
        hash::tagged(TAG_TX_HASH, &[&self.encode()])
    }

    /// Checks the signature alone (no state): `verify_strict` semantics, which
    /// rejects weak keys and non-canonical signatures.
    ///
    /// # Errors
    /// [`TxError::BadSignature`].
    pub fn verify(self) -> Result<VerifiedTx, TxError> {
        let key = VerifyingKey::from_bytes(&self.tx.signer.0).map_err(|_| TxError::BadSignature)?;
        let signature = Signature::from_bytes(&self.signature);
        key.verify_strict(&self.tx.signing_bytes(), &signature)
            .map_err(|_| TxError::BadSignature)?;
        Ok(VerifiedTx(self))
    }
}

/// A transaction whose signature has been checked. Only [`SignedTx::verify`],
/// [`verify_batch`] and [`crate::State::verify_tx`] make one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedTx(SignedTx);

impl VerifiedTx {
    /// The transaction.
    pub fn tx(&self) -> &Tx {
        &self.0.tx
    }

    /// The signed transaction.
    pub fn signed(&self) -> &SignedTx {
        &self.0
    }
}

/// Verifies the signatures of a block's transactions, each with
/// [`SignedTx::verify`] (`verify_strict`), so that a block is judged by the
/// rule the mempool admits by.
///
/// Not `ed25519_dalek::verify_batch`: its check is cofactorless over random
/// coefficients, so a signature whose commitment carries a component of
/// order two passes it for every even coefficient (about half the time, and a
/// proposer can grind the batch) while `verify_strict` refuses it: a proposer
/// could put in a block a transaction no mempool admits. The batch saved
/// about half of the signature time; the validators' mempools verify each
/// transaction on arrival anyway, and [`crate::State::verify_tx`], which
/// blocks are executed with, remembers what verified.
pub fn verify_batch(txs: Vec<SignedTx>) -> Vec<Result<VerifiedTx, TxError>> {
    txs.into_iter().map(SignedTx::verify).collect()
}

/// The signature checks behind [`crate::State::verify_tx`] and its kin,
/// through the state's memo of verified signatures: here, so that a
/// [`VerifiedTx`] is made in this module only.
impl SignedTx {
    /// Verifies the signature unless `memo` holds it, and remembers it.
    pub(crate) fn verify_remembering(self, memo: &ProofMemo) -> Result<VerifiedTx, TxError> {
        let signing = self.tx.signing_bytes();
        let statement = signature_statement(&self, &signing);
        memo.check(statement, || {
            let key =
                VerifyingKey::from_bytes(&self.tx.signer.0).map_err(|_| TxError::BadSignature)?;
            key.verify_strict(&signing, &Signature::from_bytes(&self.signature))
                .map_err(|_| TxError::BadSignature)
        })?;
        Ok(VerifiedTx(self))
    }

    /// Verifies the signature unless `memo` holds it, remembering nothing.
    pub(crate) fn verify_unless_remembered(self, memo: &ProofMemo) -> Result<VerifiedTx, TxError> {
        let signing = self.tx.signing_bytes();
        if memo.knows(&signature_statement(&self, &signing)) {
            return Ok(VerifiedTx(self));
        }
        self.verify()
    }
}

impl VerifiedTx {
    /// Puts this (verified) signature in `memo`.
    pub(crate) fn remember_in(&self, memo: &ProofMemo) {
        let signing = self.0.tx.signing_bytes();
        let statement = signature_statement(&self.0, &signing);
        let _ = memo.check(statement, || Ok::<(), TxError>(()));
    }
}

/// What the signature memo holds for a transaction's signature: its
/// signer, signature and signed bytes.
fn signature_statement(tx: &SignedTx, signing: &[u8]) -> crate::verified::Statement {
    crate::verified::statement(
        b"QUARTIER_TX_SIGNATURE",
        &[&tx.tx.signer.0, &tx.signature, signing],
    )
}
