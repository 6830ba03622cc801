//! Privacy mode A on chain (DESIGN §6), first part: the shielded pool.
//!
//! The pool is an append-only list of stealth outputs (one-time key, view
//! tag, committed and encrypted amount) and the set of key images spent.
//! `Shield` moves public IOUs into a new output (its amount and mask are
//! revealed, so anyone checks the commitment); `ShieldedTransfer` spends
//! outputs by CLSAG over rings of pool outputs into new range-proved
//! outputs; `Unshield` does the same and pays a public amount to an account.
//! Spends are signed by a one-time Ed25519 key with nonce 0 that the ledger
//! does not record: a replay is refused by its key images, and every ring
//! signature binds that one-time key, so nobody can re-wrap a spend.
//!
//! Outputs join the pool only well-formed (prime-order keys and commitment)
//! and with a one-time key no other output has. A one-time transaction
//! costs nothing, so each is tied to a registered meter: an order by its
//! authorisation (one per meter, slot and side), a transfer or unshield by
//! an [`Allowance`] (one per meter and slot), both key images of a ring
//! signature over the region's meters.
//!
//! # Invariant
//! The public pool total (`Meta::shielded`) = Σ shielded − Σ unshielded, and
//! supply = balances + escrow + custody + shielded. The commitments enforce
//! the same per transaction (`Σ pseudo-outs = Σ outputs + public·H`); the
//! total is checked too, as a second line.

use crate::ShieldedPolicy;
use crate::accounts::{credit, debit, positive, set_balance};
use crate::books::{check_slot_open, push_order};
use crate::context::Event;
use crate::shielded_tx::{
    Allowance, KIND_TRANSFER, KIND_UNSHIELD, MAX_SHIELDED_INPUTS, ShieldedOrder, ShieldedTransfer,
    scope, side_byte,
};
use crate::state::PoolOutput;
use crate::state::{BookOrder, Meter, ShieldedPayee, StateKey};
use crate::verified::statement;
use crate::{BlockContext, MeterRole, State, TxError};
use quartier_shielded::authorise::{self, PURPOSE_TRANSFER};
use quartier_shielded::output::{self as stealth, Output};
use quartier_shielded::range;
use quartier_shielded::spend::{self, RingMember, Spend};
use quartier_types::hash::Digest;
use quartier_types::{AccountId, Energy, Money, Order, RegionId, Side, Slot};

/// Checks what is cheap about an allowance: its slot is the block's or the
/// one before, and its key image was never used. Writes nothing.
fn check_allowance_fresh(
    state: &State,
    ctx: &BlockContext,
    allowance: &Allowance,
    tx: OneTime,
) -> Result<(), TxError> {
    let now = state.genesis().slot_at(ctx.time);
    // A mempool's time is the last finalized block's; the next may be a
    // slot later.
    let latest = now.0.saturating_add(u64::from(!tx.exact_time));
    if allowance.slot.0 > latest || allowance.slot.0.saturating_add(1) < now.0 {
        return Err(TxError::AllowanceExpired {
            slot: allowance.slot,
        });
    }
    if state
        .records
        .key_images
        .contains(&allowance.authorisation.key_image)
    {
        return Err(TxError::AllowanceUsed);
    }
    Ok(())
}

/// Checks an allowance's ring signature over the region's meters for a
/// transfer whose prefix is `message`.
fn check_allowance_signed(
    state: &State,
    allowance: &Allowance,
    message: &[u8; 32],
) -> Result<(), TxError> {
    let ring = allowance_ring(state, allowance.region)?;
    let scope = scope(
        state.chain_id(),
        allowance.region,
        allowance.slot,
        PURPOSE_TRANSFER,
    );
    verify_authorisation(state, &allowance.authorisation, &ring, &scope, message)
}

/// [`authorise::verify`], once per statement (see [`crate::verified`]).
fn verify_authorisation(
    state: &State,
    authorisation: &authorise::Authorisation,
    ring: &[[u8; 32]],
    scope: &authorise::Scope,
    message: &[u8; 32],
) -> Result<(), TxError> {
    let encoded = borsh::to_vec(authorisation).map_err(|_| TxError::InvalidRingSignature)?;
    let statement = statement(
        b"quartier/verified/authorisation",
        &[
            &encoded,
            ring.as_flattened(),
            &scope.chain_id,
            &scope.region.to_le_bytes(),
            &scope.slot.to_le_bytes(),
            &[scope.purpose],
            message,
        ],
    );
    state.verified.check(statement, || {
        authorise::verify(authorisation, ring, scope, message)
            .map_err(|_| TxError::InvalidRingSignature)
    })
}

/// The ring an allowance is signed over: every meter ever registered in
/// `region`, retired ones included (a household whose meter was retired can
/// still move its shielded funds), in account order.
///
/// # Errors
/// [`TxError::InvalidShieldedTransfer`] if it is empty or larger than a
/// CLSAG ring.
pub fn allowance_ring(state: &State, region: RegionId) -> Result<Vec<[u8; 32]>, TxError> {
    let ring: Vec<[u8; 32]> = state
        .meters()
        .filter(|(_, m)| m.region == region)
        .map(|(a, _)| a.0)
        .collect();
    if ring.is_empty() || ring.len() > quartier_shielded::spend::MAX_RING {
        return Err(TxError::InvalidShieldedTransfer);
    }
    Ok(ring)
}

/// The keys of [`meter_ring`], refused if empty or larger than a CLSAG ring.
fn ring_keys(
    state: &State,
    region: RegionId,
    side: Side,
    energy: Energy,
) -> Result<Vec<[u8; 32]>, TxError> {
    let ring = meter_ring(state, region, side, energy);
    if ring.is_empty() || ring.len() > quartier_shielded::spend::MAX_RING {
        return Err(TxError::InvalidShieldedTransfer);
    }
    Ok(ring.iter().map(|(a, _)| a.0).collect())
}

/// Checks outputs before they join the pool: prime-order keys and
/// commitment, one-time keys new to the pool and distinct. Writes nothing.
fn check_outputs(state: &State, outputs: &[Output]) -> Result<(), TxError> {
    let mut keys = std::collections::BTreeSet::new();
    for o in outputs {
        if !stealth::is_well_formed(o) {
            return Err(TxError::InvalidShieldedOutput);
        }
        if !keys.insert(o.key) || state.pool_has_key(&o.key) {
            return Err(TxError::DuplicateOutputKey);
        }
    }
    Ok(())
}

pub(crate) fn policy(state: &State) -> Result<ShieldedPolicy, TxError> {
    state.genesis().shielded.ok_or(TxError::NoShieldedPool)
}

pub(crate) fn shield(
    state: &mut State,
    ctx: &BlockContext,
    signer: AccountId,
    amount: Money,
    output: &Output,
    mask: &[u8; 32],
) -> Result<Vec<Event>, TxError> {
    policy(state)?;
    positive(amount)?;
    let balance = debit(state.account(&signer), amount)?;
    check_outputs(state, std::slice::from_ref(output))?;
    if !stealth::opens_to(output, amount.get(), mask) {
        return Err(TxError::InvalidShieldedOutput);
    }
    let total = state
        .meta()
        .shielded
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    set_balance(state, signer, balance);
    state.records.meta.shielded = total;
    state.touch(StateKey::Meta);
    append_at(state, ctx, None, &[(*output, Some(amount))]);
    Ok(Vec::new())
}

/// Checks a transfer against the pool: ring sizes and indices, fresh key
/// images and well-formed outputs first (cheap), then the allowance's
/// signature if it has one, its ring signatures, range proof and balance.
/// Writes nothing.
pub(crate) fn check(
    state: &State,
    (transfer, allowance): (&ShieldedTransfer, Option<&Allowance>),
    message: &[u8; 32],
    public: Money,
    seed: Digest,
) -> Result<(), TxError> {
    let policy = policy(state)?;
    if transfer.inputs.is_empty() || transfer.inputs.len() > MAX_SHIELDED_INPUTS {
        return Err(TxError::InvalidShieldedTransfer);
    }
    // More outputs than a range proof covers fail it: refused before the
    // per-output point checks, which would cost a stranger nothing.
    if transfer.outputs.len() > range::MAX_OUTPUTS {
        return Err(TxError::InvalidRangeProof);
    }
    let mut images = std::collections::BTreeSet::new();
    let mut spends = Vec::with_capacity(transfer.inputs.len());
    for input in &transfer.inputs {
        if !images.insert(input.key_image) || state.records.key_images.contains(&input.key_image) {
            return Err(TxError::KeyImageSpent);
        }
        let ascending = input.ring.windows(2).all(|w| w[0] < w[1]);
        if input.ring.len() != usize::from(policy.ring_size) || !ascending {
            return Err(TxError::InvalidShieldedTransfer);
        }
        let ring: Vec<RingMember> = input
            .ring
            .iter()
            .map(|i| {
                let o = state.records.pool.get(usize::try_from(*i).ok()?)?;
                Some(RingMember {
                    key: o.output.key,
                    commitment: o.output.commitment,
                })
            })
            .collect::<Option<_>>()
            .ok_or(TxError::InvalidShieldedTransfer)?;
        spends.push(Spend {
            ring,
            key_image: input.key_image,
            pseudo_out: input.pseudo_out,
            signature: input.signature.clone(),
        });
    }
    check_outputs(state, &transfer.outputs)?;
    if let Some(allowance) = allowance {
        check_allowance_signed(state, allowance, message)?;
    }
    for spend in &spends {
        let encoded = borsh::to_vec(spend).map_err(|_| TxError::InvalidRingSignature)?;
        let statement = statement(b"quartier/verified/spend", &[&encoded, message]);
        state.verified.check(statement, || {
            spend::verify(spend, message).map_err(|_| TxError::InvalidRingSignature)
        })?;
    }
    let commitments: Vec<[u8; 32]> = transfer.outputs.iter().map(|o| o.commitment).collect();
    // Randomised batch weights, seeded by the transaction: every validator
    // draws the same, and a forger can not choose them. A proof that
    // verified once verifies with any weights, so the memo leaves them out.
    let statement = statement(
        b"quartier/verified/range",
        &[commitments.as_flattened(), &transfer.range_proof],
    );
    state.verified.check(statement, || {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed.0);
        range::verify(&commitments, &transfer.range_proof, &mut rng)
            .map_err(|_| TxError::InvalidRangeProof)
    })?;
    if !spend::balanced(&spends, &commitments, public.get()) {
        return Err(TxError::Unbalanced);
    }
    Ok(())
}

fn append(state: &mut State, ctx: &BlockContext, outputs: &[Output]) {
    let hidden: Vec<(Output, Option<Money>)> = outputs.iter().map(|o| (*o, None)).collect();
    append_at(state, ctx, None, &hidden);
}

/// Appends `outputs`, each with its public amount if it has one, to the
/// pool as created in the block of `ctx` (by the settlement of slot
/// `settles`, if so).
pub(crate) fn append_at(
    state: &mut State,
    ctx: &BlockContext,
    settles: Option<Slot>,
    outputs: &[(Output, Option<Money>)],
) {
    let slot = state.genesis().slot_at(ctx.time);
    for (output, public_amount) in outputs {
        let index = state.records.pool.len() as u64;
        state.records.pool_keys.insert(output.key);
        state.records.pool.push(PoolOutput {
            output: *output,
            height: ctx.height,
            slot,
            public_amount: *public_amount,
            settles,
        });
        state.touch(StateKey::PoolOutput(index));
    }
}

fn spend_images(state: &mut State, transfer: &ShieldedTransfer) {
    for input in &transfer.inputs {
        spend_image(state, input.key_image);
    }
}

fn spend_image(state: &mut State, image: [u8; 32]) {
    state.records.key_images.insert(image);
    state.touch(StateKey::KeyImage(image));
}

/// Who signs a one-time transaction, its hash, and whether the time is a
/// block's (exact) or a mempool's guess of the next block's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OneTime {
    pub(crate) signer: AccountId,
    pub(crate) hash: Digest,
    pub(crate) exact_time: bool,
}

fn check_transfer(
    state: &State,
    ctx: &BlockContext,
    (transfer, allowance): (&ShieldedTransfer, &Allowance),
    tx: OneTime,
) -> Result<(), TxError> {
    let message = transfer.prefix_hash(
        (state.chain_id(), tx.signer),
        KIND_TRANSFER,
        Money::ZERO,
        None,
    );
    check_allowance_fresh(state, ctx, allowance, tx)?;
    check(
        state,
        (transfer, Some(allowance)),
        &message,
        Money::ZERO,
        tx.hash,
    )
}

pub(crate) fn transfer(
    state: &mut State,
    ctx: &BlockContext,
    (transfer, allowance): (&ShieldedTransfer, &Allowance),
    tx: OneTime,
) -> Result<Vec<Event>, TxError> {
    check_transfer(state, ctx, (transfer, allowance), tx)?;
    spend_image(state, allowance.authorisation.key_image);
    spend_images(state, transfer);
    append(state, ctx, &transfer.outputs);
    Ok(Vec::new())
}

/// Checks an unshield; the pool's new total and the recipient's new
/// balance.
fn check_unshield(
    state: &State,
    ctx: &BlockContext,
    (transfer, allowance): (&ShieldedTransfer, &Allowance),
    (to, amount): (AccountId, Money),
    tx: OneTime,
) -> Result<(Money, Money), TxError> {
    positive(amount)?;
    let message = transfer.prefix_hash(
        (state.chain_id(), tx.signer),
        KIND_UNSHIELD,
        amount,
        Some(to),
    );
    check_allowance_fresh(state, ctx, allowance, tx)?;
    check(
        state,
        (transfer, Some(allowance)),
        &message,
        amount,
        tx.hash,
    )?;
    let total = state
        .meta()
        .shielded
        .checked_sub(amount)
        .ok_or(TxError::Unbalanced)?;
    let balance = credit(state.account(&to), amount)?;
    Ok((total, balance))
}

pub(crate) fn unshield(
    state: &mut State,
    ctx: &BlockContext,
    (transfer, allowance): (&ShieldedTransfer, &Allowance),
    (to, amount): (AccountId, Money),
    tx: OneTime,
) -> Result<Vec<Event>, TxError> {
    let (total, balance) = check_unshield(state, ctx, (transfer, allowance), (to, amount), tx)?;
    spend_image(state, allowance.authorisation.key_image);
    spend_images(state, transfer);
    append(state, ctx, &transfer.outputs);
    set_balance(state, to, balance);
    state.records.meta.shielded = total;
    state.touch(StateKey::Meta);
    Ok(Vec::new())
}

/// The ring an order of `side` and `energy` in `region` is authorised
/// over, by account: every active meter of the region for a buy; for a
/// sell, the active prosumers whose registered PV can produce `energy` in
/// one slot — so whoever signed it can, and the anonymity set of a large
/// sell is the set of meters able to make it.
pub fn meter_ring(
    state: &State,
    region: RegionId,
    side: Side,
    energy: Energy,
) -> Vec<(AccountId, Meter)> {
    state
        .meters()
        .filter(|(_, m)| {
            m.region == region
                && !m.retired
                && match side {
                    Side::Buy => true,
                    Side::Sell => {
                        m.role == MeterRole::Prosumer && state.capacity_per_slot(m) >= energy
                    }
                }
        })
        .map(|(a, m)| (*a, *m))
        .collect()
}

/// What a checked shielded order writes.
struct CheckedOrder {
    params: quartier_types::RegionParams,
    escrow: Money,
    shielded: Money,
    total_escrow: Money,
}

fn check_order(
    state: &State,
    ctx: &BlockContext,
    order: &ShieldedOrder,
    tx: OneTime,
) -> Result<CheckedOrder, TxError> {
    policy(state)?;
    let (region, slot) = (order.region, order.slot);
    match check_slot_open(state, slot, ctx.time) {
        // A mempool's time is the last finalized block's, which lags the
        // next block's: a slot closed then stays closed, but one a slot
        // beyond the horizon may be open by the next block.
        Err(TxError::SlotNotOpen { .. })
            if !tx.exact_time
                && slot.0
                    <= state
                        .genesis()
                        .slot_at(ctx.time)
                        .0
                        .saturating_add(state.genesis().lead_slots)
                        .saturating_add(1) => {}
        other => other?,
    }
    let book = state.book(region, slot);
    let params = match book {
        Some(b) => b.params,
        None => *state.region(region).ok_or(TxError::UnknownRegion(region))?,
    };
    if !params.admits(order.limit) {
        return Err(TxError::LimitOutOfRange {
            limit: order.limit,
            min: params.feed_in_tariff(),
            max: params.grid_tariff(),
        });
    }
    if !order.payee.is_valid() {
        return Err(TxError::InvalidShieldedOutput);
    }
    if order.side == Side::Sell && meter_ring(state, region, Side::Sell, order.energy).is_empty() {
        // No prosumer of the region can produce it: nobody may sell it.
        let max = meter_ring(state, region, Side::Sell, Energy::ZERO)
            .iter()
            .map(|(_, m)| state.capacity_per_slot(m))
            .max()
            .unwrap_or(Energy::ZERO);
        return Err(TxError::ExceedsCapacity {
            energy: order.energy,
            max,
        });
    }
    let keys = ring_keys(state, region, order.side, order.energy)?;
    let escrow = match order.side {
        Side::Buy => order
            .energy
            .value_at(params.grid_tariff())
            .ok_or(TxError::Overflow)?,
        Side::Sell => Money::ZERO,
    };
    let image = order.authorisation.key_image;
    // Cheap before dear: a key image the book holds costs a scan, not a
    // ring verification.
    if book.is_some_and(|b| holds_authorisation(b, &image)) {
        return Err(TxError::DuplicateOrder);
    }
    let message = order.prefix_hash((state.chain_id(), tx.signer), escrow);
    verify_authorisation(
        state,
        &order.authorisation,
        &keys,
        &scope(state.chain_id(), region, slot, side_byte(order.side)),
        &message,
    )?;
    match (&order.funds, escrow.is_zero()) {
        (Some(funds), false) => check(state, (funds, None), &message, escrow, tx.hash)?,
        (None, true) => {}
        _ => return Err(TxError::InvalidShieldedTransfer),
    }
    let shielded = state
        .meta()
        .shielded
        .checked_sub(escrow)
        .ok_or(TxError::Unbalanced)?;
    let total_escrow = state
        .meta()
        .escrow
        .checked_add(escrow)
        .ok_or(TxError::Overflow)?;
    Ok(CheckedOrder {
        params,
        escrow,
        shielded,
        total_escrow,
    })
}

pub(crate) fn place_order(
    state: &mut State,
    ctx: &BlockContext,
    order: &ShieldedOrder,
    tx: OneTime,
) -> Result<Vec<Event>, TxError> {
    let CheckedOrder {
        params,
        escrow,
        shielded,
        total_escrow,
    } = check_order(state, ctx, order, tx)?;
    let (region, slot) = (order.region, order.slot);
    let image = order.authorisation.key_image;
    if let Some(funds) = &order.funds {
        spend_images(state, funds);
        append(state, ctx, &funds.outputs);
    }
    let meta = &mut state.records.meta;
    meta.shielded = shielded;
    meta.escrow = total_escrow;
    state.touch(StateKey::Meta);
    push_order(
        state,
        region,
        slot,
        params,
        BookOrder {
            // No meter is named: the order belongs to a ring of them.
            meter: AccountId::default(),
            order: Order {
                side: order.side,
                limit: order.limit,
                energy: order.energy,
            },
            escrow,
            shielded: Some(ShieldedPayee {
                payee: order.payee,
                key_image: image,
            }),
        },
    );
    Ok(Vec::new())
}

/// Whether `book` holds a shielded order authorised under key image `image`.
fn holds_authorisation(book: &crate::Book, image: &[u8; 32]) -> bool {
    book.orders
        .iter()
        .any(|o| o.shielded.is_some_and(|s| s.key_image == *image))
}

/// Whether `state` already holds a use of a key image `body` spends (a
/// mode A transaction's inputs', its allowance's, or its order
/// authorisation's in the order's book). A node that builds on blocks not
/// yet final asks it of its final state: a one-time transaction refused
/// only because such a block already applied it is still pending, not
/// refused (it has no nonce to tell a replay by). Any other body: `false`.
pub fn key_image_used(state: &State, body: &crate::TxBody) -> bool {
    let spent = |t: &ShieldedTransfer| {
        t.inputs
            .iter()
            .any(|i| state.records.key_images.contains(&i.key_image))
    };
    match body {
        crate::TxBody::ShieldedTransfer {
            transfer,
            allowance,
        }
        | crate::TxBody::Unshield {
            transfer,
            allowance,
            ..
        } => {
            spent(transfer)
                || state
                    .records
                    .key_images
                    .contains(&allowance.authorisation.key_image)
        }
        crate::TxBody::PlaceShieldedOrder { order } => {
            let image = order.authorisation.key_image;
            order.funds.as_ref().is_some_and(spent)
                || state
                    .book(order.region, order.slot)
                    .is_some_and(|b| holds_authorisation(b, &image))
        }
        _ => false,
    }
}

/// Every key image a mode A transaction carries: its inputs', its
/// allowance's or its order authorisation's, in that order (the latter two
/// are scoped to a slot). A mempool admits one pending transaction per key
/// image. Any other body: none.
pub fn key_images_of(body: &crate::TxBody) -> Vec<[u8; 32]> {
    let inputs = |t: &ShieldedTransfer| t.inputs.iter().map(|i| i.key_image).collect::<Vec<_>>();
    match body {
        crate::TxBody::ShieldedTransfer {
            transfer,
            allowance,
        }
        | crate::TxBody::Unshield {
            transfer,
            allowance,
            ..
        } => {
            let mut images = inputs(transfer);
            images.push(allowance.authorisation.key_image);
            images
        }
        crate::TxBody::PlaceShieldedOrder { order } => {
            let mut images = order.funds.as_ref().map(inputs).unwrap_or_default();
            images.push(order.authorisation.key_image);
            images
        }
        _ => Vec::new(),
    }
}

/// Checks a mode A transaction against the finalized `state` as the next
/// block would, writing nothing, with `ctx` the finalized block's height
/// and time: what a mempool runs before it admits one (a one-time
/// transaction has no nonce or balance that would bound what a stranger
/// sends). Time is judged loosely (the next block may come a slot later:
/// its gate is not checked, an allowance of the next slot passes); the
/// block judges it exactly. Any other transaction passes.
///
/// # Errors
/// The reason the ledger would reject it.
pub fn check_one_time(
    state: &State,
    tx: &crate::VerifiedTx,
    ctx: &BlockContext,
) -> Result<(), TxError> {
    let t = tx.tx();
    if !t.body.is_one_time() {
        return Ok(());
    }
    if t.chain_id != state.chain_id() {
        return Err(TxError::WrongChain);
    }
    if t.nonce != 0 {
        return Err(TxError::InvalidShieldedTransfer);
    }
    let one_time = OneTime {
        signer: t.signer,
        hash: tx.signed().hash(),
        exact_time: false,
    };
    match &t.body {
        crate::TxBody::ShieldedTransfer {
            transfer,
            allowance,
        } => check_transfer(state, ctx, (transfer, allowance), one_time),
        crate::TxBody::Unshield {
            transfer,
            to,
            amount,
            allowance,
        } => {
            check_unshield(state, ctx, (transfer, allowance), (*to, *amount), one_time).map(|_| ())
        }
        crate::TxBody::PlaceShieldedOrder { order } => {
            check_order(state, ctx, order, one_time).map(|_| ())
        }
        _ => Err(TxError::InvalidShieldedTransfer),
    }
}
