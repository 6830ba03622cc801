//! The order books: what a slot takes while it is open (DESIGN §4).

use crate::accounts::{credit, lock, set_balance};
use crate::context::{BlockContext, Event};
use crate::registry::active_meter;
use crate::state::{Book, BookOrder, StateKey};
use crate::tx::MeterRole;
use crate::{Role, State, TxError};
use quartier_types::{AccountId, Money, Order, RegionId, RegionParams, Side, Slot, Timestamp};

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

pub(crate) fn place_order(
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

pub(crate) fn cancel_order(
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
    let balance = credit(state.account(&signer), escrow)?;
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
