//! Governance: proposals, votes and the changes they decide (the validator
//! set, the authorities' keys, limits, the enclave committee).

use crate::accounts::set_balance;
use crate::context::{BlockContext, Event};
use crate::error::require;
use crate::state::{AuthorityKey, Proposal, StateKey};
use crate::tx::{Authority, GovernanceChange};
use crate::{Role, State, TxError, sealed_market};
use quartier_types::{AccountId, Height, Money, Timestamp};
use std::collections::BTreeSet;

pub(crate) fn propose(
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
pub(crate) fn join_validators(state: &mut State, signer: AccountId) -> Result<Vec<Event>, TxError> {
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

pub(crate) fn vote(
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
pub(crate) fn drop_lapsed_proposals(state: &mut State, time: Timestamp) {
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
pub(crate) fn decide(state: &mut State, id: u64) -> Vec<Event> {
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

/// At the last block of a consensus epoch, the validator set governance
/// left becomes the next epoch's (recorded only where it changed): those
/// that sign the ending epoch and those voted in that joined
/// (`JoinValidators`); one voted in that has not joined waits for a later
/// boundary. `keeps_a_quorum` held for governance's set, so it holds for
/// this subset (and it is never empty).
pub(crate) fn hand_over_validators(state: &mut State, height: Height) {
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
