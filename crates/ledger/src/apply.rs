//! The transition function: transactions, then settlement at the end of a block.
//!
//! Every handler validates completely before its first write, so a rejected
//! transaction changes nothing. The order of checks is: chain id, nonce, the
//! signer's role, then the body against the state.

use crate::state::{Account, AuthorityKey, Book, BookOrder, Meter, Proposal, Settlement, StateKey};
use crate::tx::{Authority, GovernanceChange, MeterRole, SignedTx, TxBody, VerifiedTx};
use crate::{Role, State, TxError, sealed_market, shielded_pool};
use quartier_auction::clear;
use quartier_types::hash::Digest;
use quartier_types::{
    AccountId, Energy, Height, Money, Order, Price, RegionId, RegionParams, Side, Slot, Timestamp,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the block being executed says about itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockContext {
    /// The block's height.
    pub height: Height,
    /// The block's time.
    pub time: Timestamp,
}

/// Something that happened in a block that is not a transaction's direct effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A book cleared and settled.
    SlotSettled {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
        /// Orders in the book.
        orders: u32,
        /// Energy traded locally.
        local_energy: Energy,
    },
    /// A book could not be cleared (an invariant failed); every escrow was refunded.
    SlotVoided {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
    },
    /// The utility's balance could not pay feed-in; this much was issued to it.
    UtilityCovered {
        /// The amount issued.
        amount: Money,
    },
    /// A governance change passed.
    GovernanceChanged {
        /// The change.
        change: GovernanceChange,
    },
    /// Mode B: an enclave registered.
    EnclaveRegistered {
        /// Its account.
        enclave: AccountId,
    },
    /// Mode B: a committee's members all voted for it; it waits for the
    /// validators to seat it.
    CommitteeCandidate {
        /// Its group key.
        group_key: quartier_enclave_proto::committee::GroupPublicKey,
    },
    /// Mode B: a committee took office.
    CommitteeActivated {
        /// Its group key.
        group_key: quartier_enclave_proto::committee::GroupPublicKey,
    },
    /// Mode B: a slot's report was accepted and its money moved.
    SealedSlotSettled {
        /// The region.
        region: RegionId,
        /// The slot.
        slot: Slot,
        /// Sealed orders in the batch.
        orders: u32,
        /// Energy traded locally.
        local_energy: Energy,
    },
}

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
    let entry = state.records.accounts.entry(signer).or_default();
    entry.nonce = next_nonce;
    state.touch(StateKey::Account(signer));
    Ok(Receipt {
        tx: tx.signed().hash(),
        events,
    })
}

pub(crate) fn require(ok: bool, role: Role) -> Result<(), TxError> {
    if ok {
        Ok(())
    } else {
        Err(TxError::NotAuthorised { role })
    }
}

pub(crate) fn positive(amount: Money) -> Result<(), TxError> {
    if amount.is_zero() {
        Err(TxError::ZeroAmount)
    } else {
        Ok(())
    }
}

pub(crate) fn set_balance(state: &mut State, id: AccountId, balance: Money) {
    state.records.accounts.entry(id).or_default().balance = balance;
    state.touch(StateKey::Account(id));
}

fn register_meter(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    meter: AccountId,
    (region, role, pv_watts): (RegionId, MeterRole, u32),
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Dso), Role::Dso)?;
    if state.region(region).is_none() {
        return Err(TxError::UnknownRegion(region));
    }
    if !quartier_shielded::keys::is_prime_order_point(&meter.0) {
        return Err(TxError::InvalidMeterKey);
    }
    // A role's key is not a meter: its flows are written apart.
    if state.meter(&meter).is_some() || state.holds_role(&meter) {
        return Err(TxError::AlreadyRegistered);
    }
    if (role == MeterRole::Prosumer) != (pv_watts > 0) {
        return Err(TxError::CapacityMismatch);
    }
    // A capacity a vote approved for this meter is taken as it is (once);
    // otherwise it must be within the bound per meter and, with the
    // period's other registrations, within the cap per period.
    let mut issuance = rolled(state, ctx);
    if issuance.pv_approved.get(&meter) == Some(&pv_watts) {
        issuance.pv_approved.remove(&meter);
    } else {
        if let Some(bound) = issuance.limits.max_pv_watts
            && pv_watts > bound
        {
            return Err(TxError::PvAboveBound { bound });
        }
        let registered = issuance
            .pv_registered
            .checked_add(u64::from(pv_watts))
            .ok_or(TxError::Overflow)?;
        if let Some(cap) = issuance.limits.new_pv_watts_per_period
            && registered > cap
        {
            return Err(TxError::NewPvCap { cap });
        }
        issuance.pv_registered = registered;
    }
    state.records.issuance = issuance;
    state.touch(StateKey::Issuance);
    state.records.meters.insert(
        meter,
        Meter {
            region,
            role,
            pv_watts,
            retired: false,
        },
    );
    state.touch(StateKey::Meter(meter));
    Ok(Vec::new())
}

fn retire_meter(
    state: &mut State,
    signer: AccountId,
    meter: AccountId,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Dso), Role::Dso)?;
    let record = state
        .records
        .meters
        .get_mut(&meter)
        .ok_or(TxError::UnknownMeter)?;
    if record.retired {
        return Err(TxError::MeterRetired);
    }
    record.retired = true;
    state.touch(StateKey::Meter(meter));
    Ok(Vec::new())
}

fn set_local_fee(
    state: &mut State,
    signer: AccountId,
    region: RegionId,
    fee: Price,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Dso), Role::Dso)?;
    update_region(state, region, |p| {
        RegionParams::new(p.grid_tariff(), p.feed_in_tariff(), fee)
    })
}

fn set_tariffs(
    state: &mut State,
    signer: AccountId,
    region: RegionId,
    grid: Price,
    feed_in: Price,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Utility), Role::Utility)?;
    if let Some(bound) = state.issuance().limits.max_grid_tariff
        && grid > bound
    {
        return Err(TxError::TariffAboveBound { bound });
    }
    update_region(state, region, |p| {
        RegionParams::new(grid, feed_in, p.local_fee())
    })
}

/// Replaces a region's parameters with `change` of the current ones; books
/// already open keep theirs.
fn update_region(
    state: &mut State,
    region: RegionId,
    change: impl FnOnce(&RegionParams) -> Result<RegionParams, quartier_types::ParamsError>,
) -> Result<Vec<Event>, TxError> {
    let current = state.region(region).ok_or(TxError::UnknownRegion(region))?;
    let params = change(current).map_err(TxError::InvalidTariffs)?;
    state.records.regions.insert(region, params);
    state.touch(StateKey::Region(region));
    Ok(Vec::new())
}

fn mint(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    to: AccountId,
    amount: Money,
) -> Result<Vec<Event>, TxError> {
    require(signer == state.authority(Authority::Utility), Role::Utility)?;
    positive(amount)?;
    let issuance = charge_mint(state, ctx, amount)?;
    let meta = *state.meta();
    let supply = meta.supply.checked_add(amount).ok_or(TxError::Overflow)?;
    let issued = meta.issued.checked_add(amount).ok_or(TxError::Overflow)?;
    // balance ≤ supply, so this can not overflow once supply did not.
    let balance = state
        .account(&to)
        .balance
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    set_balance(state, to, balance);
    state.records.meta.supply = supply;
    state.records.meta.issued = issued;
    state.touch(StateKey::Meta);
    state.records.issuance = issuance;
    state.touch(StateKey::Issuance);
    Ok(Vec::new())
}

/// The issuance record as of the block of `ctx`: in a new period, what
/// was minted, registered and approved in the last one counts no more.
fn rolled(state: &State, ctx: &BlockContext) -> crate::Issuance {
    let mut issuance = state.issuance().clone();
    let period = state.genesis().slot_at(ctx.time).0 / issuance.limits.period_slots.max(1);
    if period != issuance.period {
        issuance.period = period;
        issuance.minted = Money::ZERO;
        issuance.allowance = Money::ZERO;
        issuance.pv_registered = 0;
    }
    issuance
}

/// The issuance record after the utility mints `amount` in the block of
/// `ctx`: counted in the period; what goes above the cap is taken from the
/// votes' allowance, and refused if that does not cover it.
fn charge_mint(
    state: &State,
    ctx: &BlockContext,
    amount: Money,
) -> Result<crate::Issuance, TxError> {
    let mut issuance = rolled(state, ctx);
    let Some(cap) = issuance.limits.mint_per_period else {
        return Ok(issuance);
    };
    let minted = issuance
        .minted
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    // What this mint puts above the cap (the part of the period's total
    // above it, less what was above it before). The part above the cap is
    // max(0, total − cap): a floor at zero by definition, not a loss.
    let above = |m: Money| m.get().saturating_sub(cap.get());
    let needed = above(minted)
        .checked_sub(above(issuance.minted))
        .map(Money::new)
        .ok_or(TxError::Overflow)?;
    issuance.allowance = issuance
        .allowance
        .checked_sub(needed)
        .ok_or(TxError::MintCap {
            cap,
            minted: issuance.minted,
        })?;
    issuance.minted = minted;
    Ok(issuance)
}

fn transfer(
    state: &mut State,
    signer: AccountId,
    to: AccountId,
    amount: Money,
) -> Result<Vec<Event>, TxError> {
    positive(amount)?;
    if to == signer {
        return Err(TxError::SelfTransfer);
    }
    let from_balance = debit(state.account(&signer), amount)?;
    let to_balance = state
        .account(&to)
        .balance
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    set_balance(state, signer, from_balance);
    set_balance(state, to, to_balance);
    Ok(Vec::new())
}

fn redeem(state: &mut State, signer: AccountId, amount: Money) -> Result<Vec<Event>, TxError> {
    positive(amount)?;
    let balance = debit(state.account(&signer), amount)?;
    let meta = *state.meta();
    let supply = meta.supply.checked_sub(amount).ok_or(TxError::Overflow)?;
    let redeemed = meta.redeemed.checked_add(amount).ok_or(TxError::Overflow)?;
    set_balance(state, signer, balance);
    state.records.meta.supply = supply;
    state.records.meta.redeemed = redeemed;
    state.touch(StateKey::Meta);
    Ok(Vec::new())
}

/// Moves `amount` from `signer`'s balance into a chain-wide bucket of
/// [`crate::Meta`] (escrow, custody), both checked before either is written.
///
/// # Errors
/// [`TxError::InsufficientFunds`] or [`TxError::Overflow`]; nothing changes then.
pub(crate) fn lock(
    state: &mut State,
    signer: AccountId,
    amount: Money,
    bucket: impl Fn(&mut crate::Meta) -> &mut Money,
) -> Result<(), TxError> {
    let balance = debit(state.account(&signer), amount)?;
    let mut meta = *state.meta();
    let total = bucket(&mut meta)
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    set_balance(state, signer, balance);
    *bucket(&mut state.records.meta) = total;
    state.touch(StateKey::Meta);
    Ok(())
}

pub(crate) fn debit(account: Account, amount: Money) -> Result<Money, TxError> {
    account
        .balance
        .checked_sub(amount)
        .ok_or(TxError::InsufficientFunds {
            needed: amount,
            available: account.balance,
        })
}

/// The signer's active meter registration.
pub(crate) fn active_meter(state: &State, signer: &AccountId) -> Result<Meter, TxError> {
    let meter = *state
        .meter(signer)
        .ok_or(TxError::NotAuthorised { role: Role::Meter })?;
    if meter.retired {
        return Err(TxError::MeterRetired);
    }
    Ok(meter)
}

/// Whether orders for `slot` may be placed or cancelled at `now`.
pub(crate) fn check_slot_open(state: &State, slot: Slot, now: Timestamp) -> Result<(), TxError> {
    let genesis = state.genesis();
    if now >= genesis.close_of(slot) {
        return Err(TxError::SlotClosed { slot });
    }
    let horizon = genesis.slot_at(now).0.saturating_add(genesis.lead_slots);
    if slot.0 > horizon {
        return Err(TxError::SlotNotOpen { slot });
    }
    Ok(())
}

/// Appends `order` to the book of (`region`, `slot`), opening it with
/// `params` if it is the first, and marks the book changed.
pub(crate) fn push_order(
    state: &mut State,
    region: RegionId,
    slot: Slot,
    params: RegionParams,
    order: BookOrder,
) {
    state
        .records
        .books
        .entry((slot, region))
        .or_insert_with(|| Book {
            params,
            orders: Vec::new(),
        })
        .orders
        .push(order);
    state.touch(StateKey::Book(region, slot));
}

fn place_order(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    region: RegionId,
    slot: Slot,
    order: Order,
) -> Result<Vec<Event>, TxError> {
    let meter = active_meter(state, &signer)?;
    if state.genesis().shielded.is_some() {
        return Err(TxError::ShieldedOrdersOnly);
    }
    if order.side == Side::Sell && meter.role != MeterRole::Prosumer {
        return Err(TxError::NotAuthorised {
            role: Role::Prosumer,
        });
    }
    if meter.region != region {
        return Err(TxError::WrongRegion);
    }
    check_slot_open(state, slot, ctx.time)?;
    let book = state.book(region, slot);
    let params = match book {
        Some(b) => b.params,
        None => *state.region(region).ok_or(TxError::UnknownRegion(region))?,
    };
    if book.is_some_and(|b| {
        b.orders
            .iter()
            .any(|o| o.meter == signer && o.order.side == order.side)
    }) {
        return Err(TxError::DuplicateOrder);
    }
    if !params.admits(order.limit) {
        return Err(TxError::LimitOutOfRange {
            limit: order.limit,
            min: params.feed_in_tariff(),
            max: params.grid_tariff(),
        });
    }
    let escrow = match order.side {
        Side::Sell => {
            let max = state.capacity_per_slot(&meter);
            if order.energy > max {
                return Err(TxError::ExceedsCapacity {
                    energy: order.energy,
                    max,
                });
            }
            Money::ZERO
        }
        Side::Buy => order
            .energy
            .value_at(params.grid_tariff())
            .ok_or(TxError::Overflow)?,
    };
    lock(state, signer, escrow, |m| &mut m.escrow)?;
    push_order(
        state,
        region,
        slot,
        params,
        BookOrder {
            meter: signer,
            order,
            escrow,
            shielded: None,
        },
    );
    Ok(Vec::new())
}

fn cancel_order(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    region: RegionId,
    slot: Slot,
    side: Side,
) -> Result<Vec<Event>, TxError> {
    active_meter(state, &signer)?;
    check_slot_open(state, slot, ctx.time)?;
    let book = state.book(region, slot).ok_or(TxError::NoSuchOrder)?;
    let index = book
        .orders
        .iter()
        .position(|o| o.meter == signer && o.order.side == side)
        .ok_or(TxError::NoSuchOrder)?;
    let escrow = book.orders[index].escrow;
    let balance = state
        .account(&signer)
        .balance
        .checked_add(escrow)
        .ok_or(TxError::Overflow)?;
    let total_escrow = state
        .meta()
        .escrow
        .checked_sub(escrow)
        .ok_or(TxError::Overflow)?;
    set_balance(state, signer, balance);
    state.records.meta.escrow = total_escrow;
    state.touch(StateKey::Meta);
    if let Some(book) = state.records.books.get_mut(&(slot, region)) {
        book.orders.remove(index);
        if book.orders.is_empty() {
            state.records.books.remove(&(slot, region));
        }
    }
    state.touch(StateKey::Book(region, slot));
    Ok(Vec::new())
}

fn propose(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    change: GovernanceChange,
) -> Result<Vec<Event>, TxError> {
    require(state.validators().contains(&signer), Role::Validator)?;
    applicable(state, change)?;
    let id = state.meta().next_proposal;
    let next = id.checked_add(1).ok_or(TxError::Overflow)?;
    state.records.meta.next_proposal = next;
    state.touch(StateKey::Meta);
    state.records.proposals.insert(
        id,
        Proposal {
            change,
            opened: ctx.time,
            yes: BTreeSet::from([signer]),
            no: BTreeSet::new(),
        },
    );
    state.touch(StateKey::Proposal(id));
    Ok(decide(state, id))
}

/// A validator voted in says, with its own key, that it runs: the next
/// boundary seats it.
fn join_validators(state: &mut State, signer: AccountId) -> Result<Vec<Event>, TxError> {
    require(state.validators().contains(&signer), Role::Validator)?;
    let epoch = state.consensus_epoch_of(Height(state.meta().height.0.saturating_add(1)));
    if state.joining().contains(&signer)
        || state
            .validator_set(epoch)
            .is_some_and(|s| s.contains(&signer))
    {
        return Err(TxError::AlreadyJoined);
    }
    state.records.joining.insert(signer);
    state.touch(StateKey::Joining);
    Ok(Vec::new())
}

fn vote(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    id: u64,
    approve: bool,
) -> Result<Vec<Event>, TxError> {
    require(state.validators().contains(&signer), Role::Validator)?;
    let proposal = state
        .proposal(id)
        .filter(|p| !lapsed(state, p, ctx.time))
        .ok_or(TxError::UnknownProposal)?;
    if proposal.yes.contains(&signer) || proposal.no.contains(&signer) {
        return Err(TxError::AlreadyVoted);
    }
    if let Some(p) = state.records.proposals.get_mut(&id) {
        if approve {
            p.yes.insert(signer);
        } else {
            p.no.insert(signer);
        }
    }
    state.touch(StateKey::Proposal(id));
    Ok(decide(state, id))
}

/// Whether `proposal` lapsed by `time` ([`Proposal::LIFETIME_SLOTS`]).
fn lapsed(state: &State, proposal: &Proposal, time: Timestamp) -> bool {
    let lifetime = state
        .genesis()
        .slot_ms
        .saturating_mul(Proposal::LIFETIME_SLOTS);
    time.0 >= proposal.opened.0.saturating_add(lifetime)
}

/// Drops the proposals that lapsed by the block's time.
fn drop_lapsed_proposals(state: &mut State, time: Timestamp) {
    let lapsed: Vec<u64> = state
        .proposals()
        .filter(|(_, p)| lapsed(state, p, time))
        .map(|(id, _)| id)
        .collect();
    for id in lapsed {
        state.records.proposals.remove(&id);
        state.touch(StateKey::Proposal(id));
    }
}

/// Whether `change` can apply to the state: never add a validator twice,
/// never remove a non-member or the last validator; measurement changes only
/// on a chain with a sealed market, and only if they change something.
fn applicable(state: &State, change: GovernanceChange) -> Result<(), TxError> {
    let validators = state.validators();
    let sealed = state.genesis().sealed_market.is_some();
    let measurements = state.measurements();
    let ok = match change {
        // Only a key consensus can verify with: a key that is no Ed25519
        // point, or a weak one, would leave an epoch without a scheme. (On
        // a chain of one epoch a change moves the votes only.)
        GovernanceChange::Add(v) => {
            !validators.contains(&v)
                && !state.holds_role(&v)
                && ed25519_dalek::VerifyingKey::from_bytes(&v.0).is_ok_and(|k| !k.is_weak())
                && keeps_a_quorum(state, validators.iter().copied().chain([v]).collect())
        }
        GovernanceChange::Remove(v) => {
            validators.contains(&v)
                && validators.len() > 1
                && keeps_a_quorum(
                    state,
                    validators.iter().copied().filter(|x| *x != v).collect(),
                )
        }
        GovernanceChange::AllowMeasurement(m) => sealed && !measurements.contains(&m),
        GovernanceChange::RevokeMeasurement(m) => sealed && measurements.contains(&m),
        // The candidate recorded now, not the committee in office.
        GovernanceChange::SeatCommittee(group_key) => {
            state.committee_candidates().contains_key(&group_key)
                && state.committee().is_none_or(|c| c.group_key != group_key)
        }
        // From the role's key now to a key that holds nothing else: no
        // role (the DSO and the utility stay two accounts, as genesis
        // requires), no meter, enclave or validator (a role's flows are
        // written apart from a meter's).
        GovernanceChange::RotateKey {
            authority,
            from,
            key,
        } => {
            state.authority(authority) == from
                && !state.holds_role(&key)
                && state.meter(&key).is_none()
                && !state.enclaves().contains_key(&key)
                && !validators.contains(&key)
        }
        GovernanceChange::Freeze { authority, key } => {
            let now = state.authority_key(authority);
            now.key == key && !now.frozen
        }
        GovernanceChange::SetLimits(limits) => limits.valid() && limits != state.issuance().limits,
        GovernanceChange::ApproveMint(amount) => {
            !amount.is_zero() && state.issuance().allowance.checked_add(amount).is_some()
        }
        GovernanceChange::ApprovePv { meter, pv_watts } => {
            pv_watts > 0 && state.meter(&meter).is_none()
        }
    };
    if ok {
        Ok(())
    } else {
        Err(TxError::InvalidProposal)
    }
}

/// Whether `next`, as the next epoch's validator set, keeps a quorum of it
/// (`n − f`, `f = ⌊(n−1)/3⌋`) among the validators signing the current
/// epoch: at most `f` of the next set are new. Keys voted in that never
/// run (a typo, a candidate that does not start) then leave the next
/// epoch with a quorum while the current set's members are up: without
/// it, two of them in one epoch halted a set of four for good (the vote
/// that would remove them needs blocks). More changes take more epochs.
/// On a chain of one epoch a change moves the votes only: no bound.
fn keeps_a_quorum(state: &State, next: BTreeSet<AccountId>) -> bool {
    if state.epoch_blocks() == 0 || next.is_empty() {
        return state.epoch_blocks() == 0;
    }
    let epoch = state.consensus_epoch_of(Height(state.meta().height.0.saturating_add(1)));
    let Some(signing) = state.validator_set(epoch) else {
        return false;
    };
    let n = next.len();
    next.intersection(signing).count() >= n - (n - 1) / 3
}

/// Executes a proposal with yes votes from at least 2/3 of the current
/// validators; drops it once that is out of reach or it no longer applies.
fn decide(state: &mut State, id: u64) -> Vec<Event> {
    let Some(p) = state.proposal(id) else {
        return Vec::new();
    };
    let validators = state.validators();
    let n = validators.len();
    let yes = p.yes.intersection(validators).count();
    let no = p.no.intersection(validators).count();
    let change = p.change;
    // 3·yes ≥ 2·n, and the same bound for what is still possible; a
    // freeze needs more than a third (3·yes > n).
    let (passed, hopeless) = match change {
        GovernanceChange::Freeze { .. } => (3 * yes > n, 3 * (n - no) <= n),
        _ => (3 * yes >= 2 * n, 3 * (n - no) < 2 * n),
    };
    let still_applicable = applicable(state, change).is_ok();
    // A committee is seated only when no batch waits for a report: its
    // predecessor's members hand over a state at exactly the chain's
    // reports (one that cleared a waiting batch ahead holds a ledger nobody
    // signed). Passed meanwhile, it is seated at the end of the first block
    // without one (see `end_block`).
    let deferred =
        matches!(change, GovernanceChange::SeatCommittee(_)) && !state.records.batches.is_empty();
    let passed = passed && !deferred;
    let mut events = Vec::new();
    if passed && still_applicable {
        let key = match change {
            GovernanceChange::Add(v) => {
                state.records.validators.insert(v);
                StateKey::Validators
            }
            GovernanceChange::Remove(v) => {
                state.records.validators.remove(&v);
                StateKey::Validators
            }
            GovernanceChange::AllowMeasurement(m) => {
                state.records.measurements.insert(m);
                StateKey::Measurements
            }
            GovernanceChange::RevokeMeasurement(m) => {
                state.records.measurements.remove(&m);
                sealed_market::evict(state, m);
                StateKey::Measurements
            }
            GovernanceChange::SeatCommittee(key) => {
                if let Some(candidate) = state.records.committee_candidates.get(&key).cloned() {
                    events.extend(sealed_market::seat(
                        state,
                        Height(state.meta().height.0.saturating_add(1)),
                        candidate,
                    ));
                }
                StateKey::Committee
            }
            GovernanceChange::RotateKey { authority, key, .. } => {
                rotate_key(state, authority, key);
                StateKey::Authorities
            }
            GovernanceChange::Freeze { authority, .. } => {
                if let Some(a) = state.records.authorities.get_mut(&authority) {
                    a.frozen = true;
                }
                StateKey::Authorities
            }
            GovernanceChange::SetLimits(limits) => {
                state.records.issuance.limits = limits;
                StateKey::Issuance
            }
            GovernanceChange::ApproveMint(amount) => {
                let i = &mut state.records.issuance;
                // Applicable, so it fits.
                i.allowance = i.allowance.checked_add(amount).unwrap_or(i.allowance);
                StateKey::Issuance
            }
            GovernanceChange::ApprovePv { meter, pv_watts } => {
                state.records.issuance.pv_approved.insert(meter, pv_watts);
                StateKey::Issuance
            }
        };
        state.touch(key);
        events.push(Event::GovernanceChanged { change });
    }
    if passed || hopeless || !still_applicable {
        state.records.proposals.remove(&id);
        state.touch(StateKey::Proposal(id));
    }
    events
}

/// Hands `authority` to `key` from this block on, unfrozen, and moves the
/// old key's balance to it (balances sum to at most the supply, so the sum
/// fits). The old key is an ordinary account from here: refused for the
/// role, holding nothing it held before.
fn rotate_key(state: &mut State, authority: Authority, key: AccountId) {
    let old = state.authority(authority);
    let since = Height(state.meta().height.0.saturating_add(1));
    state.records.authorities.insert(
        authority,
        AuthorityKey {
            key,
            frozen: false,
            since,
        },
    );
    let moved = state.account(&old).balance;
    if old != key
        && !moved.is_zero()
        && let Some(balance) = state.account(&key).balance.checked_add(moved)
    {
        set_balance(state, old, Money::ZERO);
        set_balance(state, key, balance);
    }
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

/// At the last block of a consensus epoch, the validator set governance
/// left becomes the next epoch's (recorded only where it changed): those
/// that sign the ending epoch and those voted in that joined
/// (`JoinValidators`); one voted in that has not joined waits for a later
/// boundary. `keeps_a_quorum` held for governance's set, so it holds for
/// this subset (and it is never empty).
fn hand_over_validators(state: &mut State, height: Height) {
    let blocks = state.epoch_blocks();
    if blocks == 0 || !height.0.saturating_add(1).is_multiple_of(blocks) {
        return;
    }
    let next = height.0.saturating_add(1) / blocks;
    let signing = state
        .validator_set(state.consensus_epoch_of(height))
        .cloned()
        .unwrap_or_default();
    let validators: BTreeSet<AccountId> = state
        .records
        .validators
        .iter()
        .filter(|v| signing.contains(*v) || state.records.joining.contains(*v))
        .copied()
        .collect();
    let joining: BTreeSet<AccountId> = state
        .records
        .joining
        .iter()
        .filter(|v| state.records.validators.contains(*v) && !validators.contains(*v))
        .copied()
        .collect();
    if joining != state.records.joining {
        state.records.joining = joining;
        state.touch(StateKey::Joining);
    }
    if validators.is_empty()
        || state
            .records
            .validator_sets
            .last()
            .is_some_and(|s| s.validators == validators)
    {
        return;
    }
    state.records.validator_sets.push(crate::ValidatorSet {
        from_epoch: next,
        validators,
    });
    state.touch(StateKey::ValidatorSets);
}

/// Drops the settlements and mode B reports of slots more than
/// `genesis.history_slots` before the slot of `time` (none if it is 0): the
/// state holds a bounded window of order-level history.
fn forget_old_slots(state: &mut State, time: Timestamp) {
    let keep = state.genesis().history_slots;
    let first_kept = match state.genesis().slot_at(time).0.checked_sub(keep) {
        Some(first) if keep > 0 => first,
        _ => return,
    };
    // Per region, the old ones are a prefix of its range: no full scan.
    let regions: Vec<RegionId> = state.records.regions.keys().copied().collect();
    for region in regions {
        let old = (region, Slot(0))..(region, Slot(first_kept));
        let settlements: Vec<_> = state
            .records
            .settlements
            .range(old.clone())
            .map(|(k, _)| *k)
            .collect();
        for key in settlements {
            state.records.settlements.remove(&key);
            state.touch(StateKey::Settlement(key.0, key.1));
        }
        let reports: Vec<_> = state.records.reports.range(old).map(|(k, _)| *k).collect();
        for key in reports {
            state.records.reports.remove(&key);
            state.touch(StateKey::SealedReport(key.0, key.1));
        }
    }
}

/// The balance changes of one settlement, computed and checked before any is
/// written.
struct Flows {
    /// New balances of every account the settlement touches.
    balances: BTreeMap<AccountId, Money>,
    /// IOUs issued to the utility to pay feed-in it could not pay.
    utility_cover: Money,
    /// Mode A: payments into the shielded pool.
    pool: PoolPayments,
    /// The chain's totals after the flows, computed (checked) with them.
    totals: Totals,
}

/// The chain's money totals after a settlement's flows.
struct Totals {
    shielded: Money,
    escrow: Money,
    supply: Money,
    issued: Money,
}

impl Totals {
    /// The totals of `state` after releasing `escrow_released`, paying
    /// `shielded_in` into the pool and issuing `cover`; `None` if one would
    /// leave 64 bits or the escrow go negative (the caller then voids the
    /// slot: nothing is written).
    fn after(
        state: &State,
        escrow_released: Money,
        shielded_in: Money,
        cover: Money,
    ) -> Option<Totals> {
        let meta = state.meta();
        Some(Totals {
            shielded: meta.shielded.checked_add(shielded_in)?,
            escrow: meta.escrow.checked_sub(escrow_released)?,
            supply: meta.supply.checked_add(cover)?,
            issued: meta.issued.checked_add(cover)?,
        })
    }
}

fn settle(
    state: &mut State,
    ctx: &BlockContext,
    region: RegionId,
    slot: Slot,
    book: Book,
) -> Vec<Event> {
    let orders: Vec<Order> = book.orders.iter().map(|o| o.order).collect();
    let cleared = clear(&book.params, &orders)
        .ok()
        .and_then(|c| market_flows(state, &book, &c).map(|f| (c, f)));
    let Some((clearing, flows)) = cleared else {
        // Unreachable while the ledger's invariants hold (limits and escrow are
        // checked at placement; the supply, the issued total, the escrow and
        // the shielded total stay within 64 bits): refunding every escrow is
        // the safe, deterministic way out if they ever do not.
        if let Some(refunds) = refund_flows(state, &book) {
            write_flows(state, ctx, slot, refunds);
        }
        return vec![Event::SlotVoided { region, slot }];
    };
    let local_energy = clearing.totals.local_energy;
    let cover = flows.utility_cover;
    write_flows(state, ctx, slot, flows);
    let count = u32::try_from(book.orders.len()).unwrap_or(u32::MAX);
    state.records.settlements.insert(
        (region, slot),
        Settlement {
            region,
            slot,
            height: ctx.height,
            params: book.params,
            orders: book.orders,
            clearing,
            utility_cover: cover,
        },
    );
    state.touch(StateKey::Settlement(region, slot));
    let mut events = vec![Event::SlotSettled {
        region,
        slot,
        orders: count,
        local_energy,
    }];
    if !cover.is_zero() {
        events.push(Event::UtilityCovered { amount: cover });
    }
    events
}

/// Signed balance changes, summed in `i128` (no overflow for any u64 inputs).
#[derive(Default)]
struct Deltas(BTreeMap<AccountId, i128>);

impl Deltas {
    fn add(&mut self, id: AccountId, amount: Money) {
        *self.0.entry(id).or_default() += i128::from(amount.get());
    }

    fn sub(&mut self, id: AccountId, amount: Money) {
        *self.0.entry(id).or_default() -= i128::from(amount.get());
    }

    /// New balances, or `None` if one would be negative or exceed 64 bits.
    fn balances(self, state: &State) -> Option<BTreeMap<AccountId, Money>> {
        self.0
            .into_iter()
            .map(|(id, d)| {
                let new = i128::from(state.account(&id).balance.get()) + d;
                u64::try_from(new).ok().map(|b| (id, Money::new(b)))
            })
            .collect()
    }
}

fn market_flows(
    state: &State,
    book: &Book,
    clearing: &quartier_auction::Clearing,
) -> Option<Flows> {
    let mut deltas = Deltas::default();
    let mut escrow_released = Money::ZERO;
    let mut pool = PoolPayments::default();
    for (position, (o, r)) in book.orders.iter().zip(&clearing.orders).enumerate() {
        escrow_released = escrow_released.checked_add(o.escrow)?;
        let due = match o.order.side {
            // pays ≤ energy × grid_tariff = escrow, so the refund is never negative.
            Side::Buy => o.escrow.checked_sub(r.pays)?,
            Side::Sell => r.receives,
        };
        match &o.shielded {
            None => deltas.add(o.meter, due),
            Some(s) => pool.pay(state, position, s, due)?,
        }
    }
    let t = &clearing.totals;
    // The roles' flows go to the keys holding them now.
    let (dso, utility) = (
        state.authority(Authority::Dso),
        state.authority(Authority::Utility),
    );
    deltas.add(dso, t.dso_fees);
    deltas.add(utility, t.utility_sells);
    deltas.sub(utility, t.utility_buys);
    // The utility issues the IOUs, so feed-in it can not pay from its balance is
    // issued to it: the cover, recorded in the settlement and counted as issued.
    let utility_after = i128::from(state.account(&utility).balance.get())
        + deltas.0.get(&utility).copied().unwrap_or(0);
    let utility_cover = Money::new(u64::try_from((-utility_after).max(0)).ok()?);
    deltas.add(utility, utility_cover);
    Some(Flows {
        balances: deltas.balances(state)?,
        utility_cover,
        totals: Totals::after(state, escrow_released, pool.total, utility_cover)?,
        pool,
    })
}

fn refund_flows(state: &State, book: &Book) -> Option<Flows> {
    let mut deltas = Deltas::default();
    let mut escrow_released = Money::ZERO;
    let mut pool = PoolPayments::default();
    for (position, o) in book.orders.iter().enumerate() {
        escrow_released = escrow_released.checked_add(o.escrow)?;
        match &o.shielded {
            None => deltas.add(o.meter, o.escrow),
            Some(s) => pool.pay(state, position, s, o.escrow)?,
        }
    }
    Some(Flows {
        balances: deltas.balances(state)?,
        utility_cover: Money::ZERO,
        totals: Totals::after(state, escrow_released, pool.total, Money::ZERO)?,
        pool,
    })
}

/// Mode A: a settlement's payments to the stealth addresses shielded orders
/// named, as new pool outputs (their amounts are public in mode A anyway).
#[derive(Default)]
struct PoolPayments {
    /// The outputs with their (public) amounts.
    outputs: Vec<(quartier_shielded::output::Output, Option<Money>)>,
    total: Money,
}

impl PoolPayments {
    /// Pays `amount` (if any) to the order at `position` of its book.
    fn pay(
        &mut self,
        state: &State,
        position: usize,
        payee: &crate::state::ShieldedPayee,
        amount: Money,
    ) -> Option<()> {
        if amount.is_zero() {
            return Some(());
        }
        // A seed every validator derives alike and no two payments share
        // (a key image is unique per meter, slot and side). It is public, so
        // anyone can predict the output's one-time key and shield an output
        // with it first: then the next counter is tried, until the key is
        // new to the pool and to this settlement (the payee's view key finds
        // the output whatever its `r`).
        let output = (0u64..).find_map(|attempt| {
            let seed = quartier_types::hash::tagged(
                "QUARTIER_LEDGER_SETTLEMENT_OUTPUT",
                &[
                    &state.chain_id().0.0,
                    &payee.key_image,
                    &(position as u64).to_le_bytes(),
                    &attempt.to_le_bytes(),
                ],
            );
            let (output, _) =
                quartier_shielded::output::create_public(&payee.payee, amount.get(), &seed.0)
                    .ok()?;
            let taken = state.pool_has_key(&output.key)
                || self.outputs.iter().any(|o| o.0.key == output.key);
            (!taken).then_some(output)
        })?;
        self.outputs.push((output, Some(amount)));
        self.total = self.total.checked_add(amount)?;
        Some(())
    }
}

/// Writes checked flows: `market_flows`/`refund_flows` computed every new
/// balance and total with checked arithmetic against the same state, so
/// nothing here can overflow (no value is clamped).
fn write_flows(state: &mut State, ctx: &BlockContext, slot: Slot, flows: Flows) {
    shielded_pool::append_at(state, ctx, Some(slot), &flows.pool.outputs);
    for (id, balance) in flows.balances {
        set_balance(state, id, balance);
    }
    let Totals {
        shielded,
        escrow,
        supply,
        issued,
    } = flows.totals;
    let meta = &mut state.records.meta;
    meta.shielded = shielded;
    meta.escrow = escrow;
    meta.supply = supply;
    meta.issued = issued;
    state.touch(StateKey::Meta);
}
