//! Settlement: clearing a book once its gate passed and moving the money
//! (to accounts, the utility and the shielded pool), conserving it exactly.

use crate::accounts::set_balance;
use crate::context::{BlockContext, Event};
use crate::state::{Book, Settlement, StateKey};
use crate::tx::Authority;
use crate::{State, shielded_pool};
use quartier_auction::clear;
use quartier_types::{AccountId, Money, Order, RegionId, Side, Slot, Timestamp};
use std::collections::BTreeMap;

/// Drops the settlements and mode B reports of slots more than
/// `genesis.history_slots` before the slot of `time` (none if it is 0): the
/// state holds a bounded window of order-level history.
pub(crate) fn forget_old_slots(state: &mut State, time: Timestamp) {
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

pub(crate) fn settle(
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
