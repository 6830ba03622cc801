//! The transition function: transactions, then settlement at the end of a block.
//!
//! Every handler validates completely before its first write, so a rejected
//! transaction changes nothing. The order of checks is: chain id, nonce, the
//! signer's role, then the body against the state.

use crate::accounts::set_nonce;
use crate::accounts::{mint, redeem, transfer};
use crate::books::{cancel_order, place_order};
use crate::context::{BlockContext, Event};
use crate::governance::{
    decide, drop_lapsed_proposals, hand_over_validators, join_validators, propose, vote,
};
use crate::registry::{register_meter, retire_meter, set_local_fee, set_tariffs};
use crate::settlement::{forget_old_slots, settle};
use crate::state::StateKey;
use crate::tx::{GovernanceChange, SignedTx, TxBody, VerifiedTx};
use crate::{State, TxError, sealed_market, shielded_pool};
use quartier_types::hash::Digest;
use quartier_types::{Height, Order, RegionId, Slot};
use serde::{Deserialize, Serialize};

/// The effect of an accepted transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The transaction's hash.
    pub tx: Digest,
    /// Events the transaction caused.
    pub events: Vec<Event>,
}

/// Why a block can not be executed on this state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The height is not the next one.
    #[error("expected height {expected}, got {got}")]
    WrongHeight {
        /// The next height.
        expected: Height,
        /// The block's height.
        got: Height,
    },
    /// The block's time is before its parent's.
    #[error("block time goes backwards")]
    TimeWentBackwards,
    /// The Merkle tree is inconsistent (fatal).
    #[error(transparent)]
    Store(#[from] crate::merkle::MerkleStoreCorrupt),
}

/// The result of executing a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockOutcome {
    /// One result per transaction, in block order.
    pub results: Vec<Result<Receipt, TxError>>,
    /// Settlement events at the end of the block.
    pub events: Vec<Event>,
    /// The state root after the block.
    pub root: Digest,
}

/// Executes a block: batch-verifies signatures, applies each transaction in
/// order (a rejected one is skipped), settles every book whose gate the block's
/// time has passed, and commits.
///
/// # Errors
/// [`BlockError`] if the block does not follow the state; nothing changes then.
pub fn execute_block(
    state: &mut State,
    ctx: &BlockContext,
    txs: Vec<SignedTx>,
) -> Result<BlockOutcome, BlockError> {
    let meta = state.meta();
    let expected = Height(meta.height.0.saturating_add(1));
    if ctx.height != expected {
        return Err(BlockError::WrongHeight {
            expected,
            got: ctx.height,
        });
    }
    if ctx.time < meta.time {
        return Err(BlockError::TimeWentBackwards);
    }
    // A signature is remembered only once its transaction applied: a
    // leader's block of transactions from fresh keys whose bodies fail (or
    // false orders) does not push honest signatures out of the memo.
    let results = txs
        .into_iter()
        .map(|tx| state.verify_tx_unremembered(tx))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|v| {
            v.and_then(|tx| {
                let receipt = apply_verified(state, &tx, ctx)?;
                state.remember_signature(&tx);
                Ok(receipt)
            })
        })
        .collect();
    let events = end_block(state, ctx);
    let root = state.commit()?;
    Ok(BlockOutcome {
        results,
        events,
        root,
    })
}

/// Verifies the signature and applies one transaction.
///
/// # Errors
/// The reason it was rejected; the state is unchanged then.
pub fn apply(state: &mut State, tx: &SignedTx, ctx: &BlockContext) -> Result<Receipt, TxError> {
    let verified = tx.clone().verify()?;
    apply_verified(state, &verified, ctx)
}

/// Applies one transaction whose signature was already verified.
///
/// # Errors
/// The reason it was rejected; the state is unchanged then.
pub fn apply_verified(
    state: &mut State,
    tx: &VerifiedTx,
    ctx: &BlockContext,
) -> Result<Receipt, TxError> {
    let t = tx.tx();
    if t.chain_id != state.chain_id() {
        return Err(TxError::WrongChain);
    }
    let signer = t.signer;
    if t.body.is_one_time() {
        if t.nonce != 0 {
            return Err(TxError::InvalidShieldedTransfer);
        }
        let hash = tx.signed().hash();
        let one_time = shielded_pool::OneTime {
            signer,
            hash,
            exact_time: true,
        };
        let events = match &t.body {
            TxBody::ShieldedTransfer {
                transfer,
                allowance,
            } => shielded_pool::transfer(state, ctx, (transfer, allowance), one_time)?,
            TxBody::PlaceShieldedOrder { order } => {
                shielded_pool::place_order(state, ctx, order, one_time)?
            }
            TxBody::Unshield {
                transfer,
                to,
                amount,
                allowance,
            } => shielded_pool::unshield(
                state,
                ctx,
                (transfer, allowance),
                (*to, *amount),
                one_time,
            )?,
            _ => return Err(TxError::InvalidShieldedTransfer),
        };
        return Ok(Receipt { tx: hash, events });
    }
    if state.is_frozen(&signer) {
        return Err(TxError::Frozen);
    }
    let account = state.account(&signer);
    if t.nonce != account.nonce {
        return Err(TxError::BadNonce {
            expected: account.nonce,
            got: t.nonce,
        });
    }
    let next_nonce = account.nonce.checked_add(1).ok_or(TxError::Overflow)?;
    let events = match &t.body {
        TxBody::RegisterMeter {
            meter,
            region,
            role,
            pv_watts,
        } => register_meter(state, ctx, signer, *meter, (*region, *role, *pv_watts))?,
        TxBody::RetireMeter { meter } => retire_meter(state, signer, *meter)?,
        TxBody::SetLocalFee { region, fee } => set_local_fee(state, signer, *region, *fee)?,
        TxBody::Mint { to, amount } => mint(state, ctx, signer, *to, *amount)?,
        TxBody::SetTariffs {
            region,
            grid,
            feed_in,
        } => set_tariffs(state, signer, *region, *grid, *feed_in)?,
        TxBody::Transfer { to, amount } => transfer(state, signer, *to, *amount)?,
        TxBody::Redeem { amount } => redeem(state, signer, *amount)?,
        TxBody::PlaceOrder {
            region,
            slot,
            side,
            limit,
            energy,
        } => {
            let order = Order {
                side: *side,
                limit: *limit,
                energy: *energy,
            };
            place_order(state, ctx, signer, *region, *slot, order)?
        }
        TxBody::CancelOrder { region, slot, side } => {
            cancel_order(state, ctx, signer, *region, *slot, *side)?
        }
        TxBody::Propose { change } => propose(state, ctx, signer, *change)?,
        TxBody::Vote { proposal, approve } => vote(state, ctx, signer, *proposal, *approve)?,
        TxBody::JoinValidators => join_validators(state, signer)?,
        TxBody::RegisterEnclave {
            quote,
            identity_key,
        } => sealed_market::register_enclave(state, ctx, signer, quote, *identity_key)?,
        TxBody::ActivateCommittee {
            members,
            group_key,
            signature,
        } => {
            sealed_market::activate_committee(state, ctx, signer, members, (*group_key, signature))?
        }
        TxBody::PublishEpochKey {
            epoch,
            public_key,
            signature,
        } => {
            sealed_market::publish_epoch_key(state, (ctx, signer), *epoch, *public_key, signature)?
        }
        TxBody::SubmitSealedOrder { sealed } => {
            sealed_market::submit_sealed_order(state, ctx, signer, sealed)?
        }
        TxBody::DepositToAuctioneer { amount } => sealed_market::deposit(state, signer, *amount)?,
        TxBody::RequestWithdrawal { amount } => {
            sealed_market::request_withdrawal(state, signer, *amount)?
        }
        TxBody::PostSettlementReport { summary, signature } => {
            sealed_market::post_settlement_report(state, ctx, signer, summary, signature)?
        }
        TxBody::Shield {
            amount,
            output,
            mask,
        } => shielded_pool::shield(state, ctx, signer, *amount, output, mask)?,
        // Handled above, before the nonce.
        TxBody::ShieldedTransfer { .. }
        | TxBody::Unshield { .. }
        | TxBody::PlaceShieldedOrder { .. } => {
            return Err(TxError::InvalidShieldedTransfer);
        }
    };
    // Every handler has written by now; the nonce bump can not fail.
    set_nonce(state, signer, next_nonce);
    Ok(Receipt {
        tx: tx.signed().hash(),
        events,
    })
}

/// Settles every open book whose gate has closed by the block's time.
///
/// For each: clear the book with the parameters it opened with; pay each
/// buyer's bill out of its escrow and refund the rest; credit sellers, the DSO
/// (fees) and the utility (grid sales); debit the utility for feed-in, issuing
/// the shortfall to it if its balance can not pay (recorded as
/// `utility_cover`). The settlement is stored under (region, slot).
pub fn end_block(state: &mut State, ctx: &BlockContext) -> Vec<Event> {
    let due: Vec<(Slot, RegionId)> = state
        .records
        .books
        .keys()
        .take_while(|(slot, _)| state.genesis().close_of(*slot) <= ctx.time)
        .copied()
        .collect();
    let mut events = Vec::new();
    for (slot, region) in due {
        if let Some(book) = state.records.books.remove(&(slot, region)) {
            state.touch(StateKey::Book(region, slot));
            events.extend(settle(state, ctx, region, slot, book));
        }
    }
    // A committee seat voted while batches waited: now, before new ones close.
    let seats: Vec<u64> = state
        .proposals()
        .filter(|(_, p)| matches!(p.change, GovernanceChange::SeatCommittee(_)))
        .map(|(id, _)| id)
        .collect();
    for id in seats {
        events.extend(decide(state, id));
    }
    sealed_market::close_sealed_books(state, ctx);
    sealed_market::open_books_for_withdrawals(state, ctx);
    forget_old_slots(state, ctx.time);
    drop_lapsed_proposals(state, ctx.time);
    hand_over_validators(state, ctx.height);
    state.records.meta.height = ctx.height;
    state.records.meta.time = ctx.time;
    state.touch(StateKey::Meta);
    events
}
