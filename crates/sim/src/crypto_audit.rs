//! The auditor's cryptographic adversary (mode A): beside the statistical
//! attacks of [`crate::audit`], it tries every known linking attack on the
//! bytes a mode A chain publishes, and is scored against the answer key.
//!
//! Attacks, each on its own:
//! 1. **Signer-revealing components.** For every authorisation and every
//!    funds input, the CLSAG's `D/8` against `z·Hp(P_j)/8` for every ring
//!    member and every mask difference an observer can name
//!    ([`quartier_shielded::linking::signer_by_known_masks`]: commitments
//!    of constants, public amounts with small masks).
//! 2. **Key-image reuse.** The same key image in two authorisations or two
//!    inputs links them.
//! 3. **One-time key and payee reuse.** The same one-time signer or payee
//!    address in two orders links them.
//! 4. **Decoy age.** The newest, or the oldest, ring member guessed as the
//!    real input; and, knowing that households spend last slot's change,
//!    a guess among the members with a hidden amount created in the latest
//!    slot before the order's (the expected top-1 of a uniform guess among
//!    them, 0 when the real input is not among them).
//! 5. **Public amounts and chain reaction.** Members the public amounts rule
//!    out ([`quartier_shielded::linking::amount_consistent`]), then members
//!    known to be spent under another key image (a ring left with one
//!    candidate names its output, which leaves every other ring); what
//!    remains is the effective ring size.
//! 6. **Timing.** An order's position in its slot's book (its arrival)
//!    guessed to be the same household's as the order at that position in
//!    the previous slot.

use quartier_ledger::{PoolOutput, ShieldedOrder};
use quartier_shielded::authorise::{self, Scope};
use quartier_shielded::linking::{amount_consistent, signer_by_known_masks, small_mask};
use quartier_shielded::spend::RingMember;
use quartier_types::{AccountId, Money};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// The largest mask the adversary tries for a commitment of a known amount.
const MASKS_TRIED: u8 = 64;

/// One shielded order as the chain published it, with its public context.
#[derive(Clone, Debug)]
pub struct PublishedOrder {
    /// Slot of the run (0 is the first).
    pub slot: u64,
    /// Position in its slot's book (arrival order).
    pub position: u32,
    /// The one-time key that signed its transaction.
    pub signer: AccountId,
    /// The order, as published.
    pub order: ShieldedOrder,
    /// The meter keys its authorisation is a ring over, in ring order.
    pub ring: Vec<[u8; 32]>,
    /// The authorisation's scope.
    pub scope: Scope,
    /// The escrow it locked (public).
    pub escrow: Money,
}

/// What only the devnet's operator knows: who placed each order and which
/// ring member each funds input really spent.
#[derive(Clone, Debug, Default)]
pub struct CryptoTruth {
    /// The meter key of each order's household, by order.
    pub meters: Vec<[u8; 32]>,
    /// For each order, the real pool index of each funds input (in input
    /// order; empty when unfunded or unknown).
    pub real_inputs: Vec<Vec<u64>>,
}

/// What each attack found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CryptoReport {
    /// Shielded orders attacked.
    pub orders: usize,
    /// Attack 1: authorisations whose signer was named.
    pub authorisations_named: usize,
    /// Attack 1: of those, named rightly.
    pub authorisations_named_right: usize,
    /// Funds inputs attacked.
    pub inputs: usize,
    /// Attack 1: inputs whose real member was named.
    pub inputs_named: usize,
    /// Attack 2: key images seen more than once (authorisations and inputs).
    pub key_image_repeats: usize,
    /// Attack 3: one-time signers seen more than once.
    pub signer_repeats: usize,
    /// Attack 3: payee addresses seen more than once.
    pub payee_repeats: usize,
    /// Mean members of a funds ring.
    pub ring_size: f64,
    /// Attack 4: the newest member was the real input.
    pub newest_member_top1: f64,
    /// Attack 4: the oldest member was the real input.
    pub oldest_member_top1: f64,
    /// Attack 4: a uniform guess among the hidden-amount members of the
    /// latest slot before the order's.
    pub recent_hidden_top1: f64,
    /// Attack 4: a uniform guess among the members that are settlement
    /// payments (proceeds, refunds: public amounts tied to an order of the
    /// book) of the latest settled slot before the order's — a wallet that
    /// spends what the last settlement paid it spends one of them.
    pub recent_settlement_top1: f64,
    /// Attack 4's chance level: mean 1 / ring size.
    pub ring_chance: f64,
    /// Attack 5: mean members left by the public amounts.
    pub effective_ring_after_amounts: f64,
    /// Attack 5: mean members left after the chain reaction as well.
    pub effective_ring: f64,
    /// Attack 5: rings left with a single member (their input named).
    pub rings_collapsed: usize,
    /// Attack 5: inputs whose real member was ruled out (must be 0: the
    /// attack is sound).
    pub real_ruled_out: usize,
    /// Attack 6: the previous slot's order at the same book position was
    /// the same household's.
    pub position_linking_top1: f64,
    /// Attack 6's chance level: mean 1 / orders in the previous slot.
    pub position_linking_chance: f64,
}

/// Runs every attack on `orders` over the pool `pool`, scored by `truth`.
pub fn crypto_audit(
    orders: &[PublishedOrder],
    pool: &[PoolOutput],
    truth: &CryptoTruth,
) -> CryptoReport {
    let member = |i: u64| {
        pool.get(usize::try_from(i).ok()?).map(|o| RingMember {
            key: o.output.key,
            commitment: o.output.commitment,
        })
    };
    let public = |i: u64| {
        pool.get(usize::try_from(i).ok()?)
            .and_then(|o| o.public_amount.map(Money::get))
    };
    let mut r = CryptoReport {
        orders: orders.len(),
        authorisations_named: 0,
        authorisations_named_right: 0,
        inputs: 0,
        inputs_named: 0,
        key_image_repeats: 0,
        signer_repeats: 0,
        payee_repeats: 0,
        ring_size: 0.0,
        newest_member_top1: 0.0,
        oldest_member_top1: 0.0,
        ring_chance: 0.0,
        recent_hidden_top1: 0.0,
        recent_settlement_top1: 0.0,
        effective_ring_after_amounts: 0.0,
        effective_ring: 0.0,
        rings_collapsed: 0,
        real_ruled_out: 0,
        position_linking_top1: 0.0,
        position_linking_chance: 0.0,
    };
    // Attack 1 on authorisations: every member's commitment is `G`, a
    // known opening; the pseudo-output is tried against small masks too.
    for (k, o) in orders.iter().enumerate() {
        let a = &o.order.authorisation;
        let Ok(members) = authorise::ring(&o.ring, &o.scope) else {
            continue;
        };
        let known = |c: &[u8; 32]| small_mask(c, 0, MASKS_TRIED);
        if let Some(j) = signer_by_known_masks(&a.signature, &members, &a.pseudo_out, known) {
            r.authorisations_named += 1;
            if truth.meters.get(k) == o.ring.get(j) {
                r.authorisations_named_right += 1;
            }
        }
    }
    // Attacks 1, 4 on funds inputs.
    let (mut newest, mut oldest, mut chance, mut sized) = (0usize, 0usize, 0.0, 0.0);
    let mut recent = 0.0;
    let mut recent_paid = 0.0;
    let settles_of = |i: u64| pool.get(usize::try_from(i).ok()?).and_then(|o| o.settles);
    let slot_of = |i: u64| pool.get(usize::try_from(i).ok()?).map(|o| o.slot);
    let mut scored = 0usize;
    for (k, o) in orders.iter().enumerate() {
        let Some(funds) = &o.order.funds else {
            continue;
        };
        for (n, input) in funds.inputs.iter().enumerate() {
            r.inputs += 1;
            sized += input.ring.len() as f64;
            let members: Option<Vec<RingMember>> = input.ring.iter().map(|&i| member(i)).collect();
            let Some(members) = members else {
                continue;
            };
            let amounts: Vec<u64> = input.ring.iter().filter_map(|&i| public(i)).collect();
            let known = |c: &[u8; 32]| {
                let at = input
                    .ring
                    .iter()
                    .position(|&i| member(i).is_some_and(|m| m.commitment == *c));
                match at {
                    Some(p) => small_mask(c, public(input.ring[p])?, MASKS_TRIED),
                    None => amounts.iter().find_map(|a| small_mask(c, *a, MASKS_TRIED)),
                }
            };
            if signer_by_known_masks(&input.signature, &members, &input.pseudo_out, known).is_some()
            {
                r.inputs_named += 1;
            }
            let Some(real) = truth.real_inputs.get(k).and_then(|v| v.get(n)) else {
                continue;
            };
            scored += 1;
            chance += 1.0 / input.ring.len().max(1) as f64;
            if input.ring.iter().max() == Some(real) {
                newest += 1;
            }
            if input.ring.iter().min() == Some(real) {
                oldest += 1;
            }
            let latest = input
                .ring
                .iter()
                .filter_map(|&i| slot_of(i))
                .filter(|s| *s < o.order.slot)
                .max();
            let suspects: Vec<u64> = input
                .ring
                .iter()
                .copied()
                .filter(|&i| public(i).is_none() && latest.is_some() && slot_of(i) == latest)
                .collect();
            if suspects.contains(real) {
                recent += 1.0 / suspects.len() as f64;
            }
            let last_paid = input
                .ring
                .iter()
                .filter_map(|&i| settles_of(i))
                .filter(|s| *s < o.order.slot)
                .max();
            let paid: Vec<u64> = input
                .ring
                .iter()
                .copied()
                .filter(|&i| last_paid.is_some() && settles_of(i) == last_paid)
                .collect();
            if paid.contains(real) {
                recent_paid += 1.0 / paid.len() as f64;
            }
        }
    }
    if r.inputs > 0 {
        r.ring_size = sized / r.inputs as f64;
    }
    if scored > 0 {
        r.newest_member_top1 = newest as f64 / scored as f64;
        r.oldest_member_top1 = oldest as f64 / scored as f64;
        r.ring_chance = chance / scored as f64;
        r.recent_hidden_top1 = recent / scored as f64;
        r.recent_settlement_top1 = recent_paid / scored as f64;
    }
    // Attack 5: public amounts, then the chain reaction.
    let mut candidates: Vec<([u8; 32], BTreeSet<u64>, Option<u64>)> = Vec::new();
    for (k, o) in orders.iter().enumerate() {
        let Some(funds) = &o.order.funds else {
            continue;
        };
        let rings: Vec<Vec<Option<u64>>> = funds
            .inputs
            .iter()
            .map(|i| i.ring.iter().map(|&m| public(m)).collect())
            .collect();
        let kept = amount_consistent(&rings, o.escrow.get());
        for (n, (input, keep)) in funds.inputs.iter().zip(kept).enumerate() {
            let set: BTreeSet<u64> = input
                .ring
                .iter()
                .zip(keep)
                .filter(|(_, k)| *k)
                .map(|(m, _)| *m)
                .collect();
            let real = truth.real_inputs.get(k).and_then(|v| v.get(n)).copied();
            candidates.push((input.key_image, set, real));
        }
    }
    if !candidates.is_empty() {
        let total = candidates.len() as f64;
        r.effective_ring_after_amounts =
            candidates.iter().map(|c| c.1.len() as f64).sum::<f64>() / total;
        chain_reaction(&mut candidates);
        r.effective_ring = candidates.iter().map(|c| c.1.len() as f64).sum::<f64>() / total;
        r.rings_collapsed = candidates.iter().filter(|c| c.1.len() == 1).count();
        r.real_ruled_out = candidates
            .iter()
            .filter(|c| c.2.is_some_and(|real| !c.1.contains(&real)))
            .count();
    }
    // Attacks 2 and 3: reuse.
    let repeats = |items: Vec<Vec<u8>>| {
        let mut seen = BTreeMap::<Vec<u8>, usize>::new();
        for i in items {
            *seen.entry(i).or_default() += 1;
        }
        seen.values().filter(|n| **n > 1).count()
    };
    let mut images: Vec<Vec<u8>> = orders
        .iter()
        .map(|o| o.order.authorisation.key_image.to_vec())
        .collect();
    for o in orders {
        if let Some(f) = &o.order.funds {
            images.extend(f.inputs.iter().map(|i| i.key_image.to_vec()));
        }
    }
    r.key_image_repeats = repeats(images);
    r.signer_repeats = repeats(orders.iter().map(|o| o.signer.0.to_vec()).collect());
    r.payee_repeats = repeats(
        orders
            .iter()
            .map(|o| [o.order.payee.view, o.order.payee.spend].concat())
            .collect(),
    );
    // Attack 6: the same position in the previous slot's book.
    let by_slot: BTreeMap<(u64, u32), usize> = orders
        .iter()
        .enumerate()
        .map(|(k, o)| ((o.slot, o.position), k))
        .collect();
    let per_slot = |s: u64| orders.iter().filter(|o| o.slot == s).count();
    let (mut linked, mut right, mut chance) = (0usize, 0usize, 0.0);
    for (k, o) in orders.iter().enumerate() {
        let Some(prev) = o.slot.checked_sub(1) else {
            continue;
        };
        let earlier = per_slot(prev);
        if earlier == 0 {
            continue;
        }
        linked += 1;
        chance += 1.0 / earlier as f64;
        let guess = by_slot.get(&(prev, o.position));
        if guess.is_some_and(|&g| {
            truth.meters.get(g).is_some() && truth.meters.get(g) == truth.meters.get(k)
        }) {
            right += 1;
        }
    }
    if linked > 0 {
        r.position_linking_top1 = right as f64 / linked as f64;
        r.position_linking_chance = chance / linked as f64;
    }
    r
}

/// Removes from every ring the members a ring of one candidate names as
/// spent under another key image, until nothing changes.
fn chain_reaction(candidates: &mut [([u8; 32], BTreeSet<u64>, Option<u64>)]) {
    loop {
        let named: BTreeMap<u64, [u8; 32]> = candidates
            .iter()
            .filter(|c| c.1.len() == 1)
            .filter_map(|c| c.1.first().map(|m| (*m, c.0)))
            .collect();
        let mut changed = false;
        for c in candidates.iter_mut() {
            let before = c.1.len();
            c.1.retain(|m| named.get(m).is_none_or(|image| *image == c.0));
            changed |= c.1.len() != before;
        }
        if !changed {
            return;
        }
    }
}

fn percent(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// The report as a text table, one line per attack.
pub fn table(r: &CryptoReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cryptographic attacks on {} shielded orders, {} funds inputs",
        r.orders, r.inputs
    );
    let rows = [
        (
            "1 signer-revealing D (authorisations)",
            format!(
                "{} named ({} rightly)",
                r.authorisations_named, r.authorisations_named_right
            ),
        ),
        (
            "1 signer-revealing D (funds inputs)",
            format!("{} named", r.inputs_named),
        ),
        (
            "2 key-image reuse",
            format!("{} repeated", r.key_image_repeats),
        ),
        (
            "3 one-time key / payee reuse",
            format!("{} / {} repeated", r.signer_repeats, r.payee_repeats),
        ),
        (
            "4 decoy age: newest / oldest member",
            format!(
                "{} / {} (chance {}, ring {:.1})",
                percent(r.newest_member_top1),
                percent(r.oldest_member_top1),
                percent(r.ring_chance),
                r.ring_size
            ),
        ),
        (
            "4 decoy age: a hidden member of the last slot",
            percent(r.recent_hidden_top1),
        ),
        (
            "4 provenance: a payment of the last settled slot",
            percent(r.recent_settlement_top1),
        ),
        (
            "5 public amounts, chain reaction",
            format!(
                "effective ring {:.1} then {:.1}, {} collapsed, {} real ruled out",
                r.effective_ring_after_amounts,
                r.effective_ring,
                r.rings_collapsed,
                r.real_ruled_out
            ),
        ),
        (
            "6 timing: same book position",
            format!(
                "{} (chance {})",
                percent(r.position_linking_top1),
                percent(r.position_linking_chance)
            ),
        ),
    ];
    for (attack, found) in rows {
        let _ = writeln!(out, "  {attack:<40} {found}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_reaction_names_what_a_collapsed_ring_spent() {
        let mut c = vec![
            ([1; 32], BTreeSet::from([5]), Some(5)),
            ([2; 32], BTreeSet::from([5, 6]), Some(6)),
            ([3; 32], BTreeSet::from([6, 7, 8]), Some(8)),
        ];
        chain_reaction(&mut c);
        assert_eq!(c[1].1, BTreeSet::from([6]));
        assert_eq!(c[2].1, BTreeSet::from([7, 8]));
    }
}
