//! Accounts and their IOUs: the only writer of balances and nonces, and the
//! transactions that move public IOUs (mint, transfer, redeem).

use crate::context::{BlockContext, Event};
use crate::error::require;
use crate::state::{Account, StateKey};
use crate::tx::Authority;
use crate::{Role, State, TxError};
use quartier_types::{AccountId, Money};

pub(crate) fn positive(amount: Money) -> Result<(), TxError> {
    if amount.is_zero() {
        Err(TxError::ZeroAmount)
    } else {
        Ok(())
    }
}

/// Sets the nonce of account `id` (the dispatcher, once a transaction
/// applied).
pub(crate) fn set_nonce(state: &mut State, id: AccountId, nonce: u64) {
    state.records.accounts.entry(id).or_default().nonce = nonce;
    state.touch(StateKey::Account(id));
}

/// Sets the balance of account `id`: with [`set_nonce`], the only write of an
/// account (genesis aside).
pub(crate) fn set_balance(state: &mut State, id: AccountId, balance: Money) {
    state.records.accounts.entry(id).or_default().balance = balance;
    state.touch(StateKey::Account(id));
}

pub(crate) fn mint(
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
    let balance = credit(state.account(&to), amount)?;
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
pub(crate) fn rolled(state: &State, ctx: &BlockContext) -> crate::Issuance {
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

pub(crate) fn transfer(
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
    let to_balance = credit(state.account(&to), amount)?;
    set_balance(state, signer, from_balance);
    set_balance(state, to, to_balance);
    Ok(Vec::new())
}

pub(crate) fn redeem(
    state: &mut State,
    signer: AccountId,
    amount: Money,
) -> Result<Vec<Event>, TxError> {
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

/// The balance of `account` after `amount` is credited.
///
/// # Errors
/// [`TxError::Overflow`] past the largest amount.
pub(crate) fn credit(account: Account, amount: Money) -> Result<Money, TxError> {
    account.balance.checked_add(amount).ok_or(TxError::Overflow)
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
