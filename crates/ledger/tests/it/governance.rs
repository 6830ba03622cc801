//! Validator-set changes need yes votes from 2/3 of the current validators.

use crate::kit::*;
use quartier_ledger::{Authority, Event, Genesis, GovernanceChange, Role, TxBody, TxError};

#[test]
fn a_validator_joins_with_two_thirds_and_not_before() {
    let mut c = Chain::new();
    let newcomer = id(&key("newcomer"));
    let v = |i: usize| key(&format!("validator-{i}"));
    c.queue(
        &v(0),
        TxBody::Propose {
            change: GovernanceChange::Add(newcomer),
        },
    );
    c.block_ok(1);
    c.queue(
        &v(1),
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    c.block_ok(2);
    // 2 of 4 is below 2/3.
    assert!(!c.state.validators().contains(&newcomer));
    c.queue(
        &v(2),
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    let out = c.block_ok(3);
    assert!(c.state.validators().contains(&newcomer));
    assert_eq!(c.state.validators().len(), 5);
    let receipt = out.results[0].as_ref().unwrap();
    assert_eq!(
        receipt.events,
        vec![Event::GovernanceChanged {
            change: GovernanceChange::Add(newcomer)
        }]
    );
    assert!(
        c.state.proposal(0).is_none(),
        "decided proposals are removed"
    );
}

#[test]
fn two_no_votes_of_four_sink_a_proposal() {
    let mut c = Chain::new();
    let v = |i: usize| key(&format!("validator-{i}"));
    let target = id(&v(3));
    c.queue(
        &v(0),
        TxBody::Propose {
            change: GovernanceChange::Remove(target),
        },
    );
    c.queue(
        &v(1),
        TxBody::Vote {
            proposal: 0,
            approve: false,
        },
    );
    c.block_ok(1);
    assert!(c.state.proposal(0).is_some());
    c.queue(
        &v(2),
        TxBody::Vote {
            proposal: 0,
            approve: false,
        },
    );
    c.block_ok(2);
    assert!(c.state.proposal(0).is_none());
    assert!(c.state.validators().contains(&target));
}

fn v(i: usize) -> ed25519_dalek::SigningKey {
    key(&format!("validator-{i}"))
}

/// Validators `voters` vote `change` through (the first proposes) in the
/// block at `time`; the results of that block.
fn vote_through(
    c: &mut Chain,
    change: GovernanceChange,
    voters: &[usize],
    time: u64,
) -> quartier_ledger::BlockOutcome {
    let id = c.state.meta().next_proposal;
    c.queue(&v(voters[0]), TxBody::Propose { change });
    for i in &voters[1..] {
        c.queue(
            &v(*i),
            TxBody::Vote {
                proposal: id,
                approve: true,
            },
        );
    }
    c.block_ok(time)
}

/// A leaked utility key: more than a third of the validators freeze the
/// role at once (one validator alone can not), and the leaked key can do
/// nothing from that block on, not even move the utility's balance out;
/// two thirds then vote a new key in, which takes the role and the balance;
/// the old key stays refused for the role. The DSO's key rotates the same
/// way.
#[test]
fn a_leaked_role_key_is_frozen_then_rotated_and_refused_after_activation() {
    let mut c = Chain::new();
    let (leaked, fresh) = (key("utility"), key("utility-2"));
    let thief = id(&key("thief"));
    let mint = |to| TxBody::Mint { to, amount: chf(5) };
    c.queue(&leaked, mint(thief));
    c.block_ok(1);
    assert_eq!(c.state.account(&thief).balance, chf(5));
    // One validator of four is not more than a third.
    vote_through(
        &mut c,
        GovernanceChange::Freeze {
            authority: Authority::Utility,
            key: id(&leaked),
        },
        &[0],
        2,
    );
    assert!(!c.state.authority_key(Authority::Utility).frozen);
    vote_through(
        &mut c,
        GovernanceChange::Freeze {
            authority: Authority::Utility,
            key: id(&leaked),
        },
        &[1, 2],
        3,
    );
    assert!(c.state.authority_key(Authority::Utility).frozen);
    let frozen_balance = c.state.account(&id(&leaked)).balance;
    assert!(!frozen_balance.is_zero());
    for body in [
        mint(thief),
        TxBody::Transfer {
            to: thief,
            amount: chf(1),
        },
        TxBody::SetTariffs {
            region: R1,
            grid: quartier_types::Price::new(1),
            feed_in: quartier_types::Price::new(1),
        },
    ] {
        c.queue(&leaked, body);
        let out = c.block_at(4);
        assert_eq!(out.results[0], Err(TxError::Frozen));
    }
    assert_eq!(c.state.account(&thief).balance, chf(5));
    // The new key: two thirds (three of four), activated by the vote's block.
    let out = vote_through(
        &mut c,
        GovernanceChange::RotateKey {
            authority: Authority::Utility,
            from: id(&leaked),
            key: id(&fresh),
        },
        &[0, 1, 2],
        5,
    );
    assert_eq!(
        out.results[2].as_ref().unwrap().events,
        vec![Event::GovernanceChanged {
            change: GovernanceChange::RotateKey {
                authority: Authority::Utility,
                from: id(&leaked),
                key: id(&fresh)
            }
        }]
    );
    let now = c.state.authority_key(Authority::Utility);
    assert_eq!((now.key, now.frozen), (id(&fresh), false));
    assert_eq!(now.since, c.state.meta().height);
    assert_eq!(c.state.account(&id(&fresh)).balance, frozen_balance);
    assert!(c.state.account(&id(&leaked)).balance.is_zero());
    // The old key is refused for the role; the new one is the role.
    c.queue(&leaked, mint(thief));
    assert_eq!(
        c.block_at(6).results[0],
        Err(TxError::NotAuthorised {
            role: Role::Utility
        })
    );
    c.queue(&fresh, mint(id(&key("household"))));
    c.block_ok(7);
    assert_eq!(c.state.account(&id(&key("household"))).balance, chf(5));
    // The DSO's key: the old one can not register a meter after the vote.
    let new_dso = key("dso-2");
    vote_through(
        &mut c,
        GovernanceChange::RotateKey {
            authority: Authority::Dso,
            from: id(&key("dso")),
            key: id(&new_dso),
        },
        &[1, 2, 3],
        8,
    );
    let meter = key("meter-after-rotation");
    let register = TxBody::RegisterMeter {
        meter: id(&meter),
        region: R1,
        role: quartier_ledger::MeterRole::Consumer,
        pv_watts: 0,
    };
    c.queue(&key("dso"), register.clone());
    assert_eq!(
        c.block_at(9).results[0],
        Err(TxError::NotAuthorised { role: Role::Dso })
    );
    c.queue(&new_dso, register);
    c.block_ok(10);
    assert!(c.state.meter(&id(&meter)).is_some());
}

/// A role's key can not be handed to a key that holds anything else (the
/// other role, a meter, a validator) nor taken from a key the role no
/// longer has; a freeze names the key it freezes. Left-over votes on
/// proposals made for an earlier key never apply: a rotation to a
/// superseded key and a freeze of the old key stay dead once the role has
/// moved on (found by review: one Byzantine validator's vote passed them).
#[test]
fn role_key_proposals_for_another_key_or_onto_a_busy_key_are_refused() {
    let mut c = Chain::new();
    let utility = id(&key("utility"));
    let meter = key("a-meter");
    c.queue(
        &key("dso"),
        TxBody::RegisterMeter {
            meter: id(&meter),
            region: R1,
            role: quartier_ledger::MeterRole::Consumer,
            pv_watts: 0,
        },
    );
    c.block_ok(1);
    let rotate = |from, key| GovernanceChange::RotateKey {
        authority: Authority::Utility,
        from,
        key,
    };
    for change in [
        rotate(utility, id(&key("dso"))),
        rotate(utility, utility),
        rotate(utility, id(&meter)),
        rotate(utility, id(&v(3))),
        rotate(id(&key("not-the-utility")), id(&key("k"))),
    ] {
        c.queue(&v(0), TxBody::Propose { change });
        assert_eq!(c.block_at(2).results[0], Err(TxError::InvalidProposal));
    }
    // Two proposals with honest votes left over: a rotation to K1 and a
    // freeze of today's key. The role moves to K2 instead.
    let (k1, k2) = (id(&key("k1")), id(&key("k2")));
    vote_through(&mut c, rotate(utility, k1), &[0, 1], 3);
    let freeze_old = GovernanceChange::Freeze {
        authority: Authority::Utility,
        key: utility,
    };
    vote_through(&mut c, freeze_old, &[0], 3);
    vote_through(&mut c, rotate(utility, k2), &[0, 1, 2], 4);
    assert_eq!(c.state.authority(Authority::Utility), k2);
    // A later vote on either changes nothing (and ends them).
    for proposal in [0, 1] {
        c.queue(
            &v(3),
            TxBody::Vote {
                proposal,
                approve: true,
            },
        );
        c.block_ok(5);
    }
    let now = c.state.authority_key(Authority::Utility);
    assert_eq!((now.key, now.frozen), (k2, false));
    assert!(c.state.proposal(0).is_none() && c.state.proposal(1).is_none());
    // The DSO can not register a role's key as a meter.
    c.queue(
        &key("dso"),
        TxBody::RegisterMeter {
            meter: k2,
            region: R1,
            role: quartier_ledger::MeterRole::Consumer,
            pv_watts: 0,
        },
    );
    assert!(c.block_at(6).results[0].is_err());
}

/// The utility mints up to the cap per period without a vote; above it
/// only what a vote approved; the next period starts from zero. The DSO
/// registers PV above the bound only for the meter and capacity a vote
/// approved, once. A vote changes the limits.
#[test]
fn minting_above_the_cap_and_pv_above_the_bound_need_a_vote() {
    let mut g = genesis();
    g.limits = quartier_ledger::Limits {
        mint_per_period: Some(chf(10)),
        period_slots: 4,
        max_pv_watts: Some(20_000),
        ..Default::default()
    };
    let mut c = Chain::from_genesis(g);
    let utility = key("utility");
    let to = id(&key("household"));
    let mint = |c: &mut Chain, francs: u64, time: u64| {
        c.queue(
            &utility,
            TxBody::Mint {
                to,
                amount: chf(francs),
            },
        );
        c.block_at(time).results[0].clone().map(|_| ())
    };
    assert_eq!(mint(&mut c, 6, 1), Ok(()));
    assert_eq!(
        mint(&mut c, 5, 2),
        Err(TxError::MintCap {
            cap: chf(10),
            minted: chf(6)
        })
    );
    assert_eq!(mint(&mut c, 4, 3), Ok(()));
    // Two thirds approve 5 more: spent by the mints above the cap.
    vote_through(&mut c, GovernanceChange::ApproveMint(chf(5)), &[0, 1, 2], 4);
    assert_eq!(mint(&mut c, 3, 5), Ok(()));
    assert_eq!(mint(&mut c, 2, 6), Ok(()));
    assert!(mint(&mut c, 1, 7).is_err());
    assert_eq!(c.state.account(&to).balance, chf(15));
    // The next period (slots 4 to 7) starts from zero.
    let next = 4 * SLOT_MS + 1;
    assert_eq!(mint(&mut c, 10, next), Ok(()));
    assert!(mint(&mut c, 1, next).is_err());
    // A vote raises the cap.
    vote_through(
        &mut c,
        GovernanceChange::SetLimits(quartier_ledger::Limits {
            mint_per_period: Some(chf(20)),
            period_slots: 4,
            max_pv_watts: Some(20_000),
            ..Default::default()
        }),
        &[1, 2, 3],
        next,
    );
    assert_eq!(mint(&mut c, 10, next), Ok(()));
    let supply_check = c
        .state
        .accounts()
        .map(|(_, a)| a.balance.get())
        .sum::<u64>();
    assert_eq!(c.state.meta().supply.get(), supply_check);

    // PV above the bound.
    let dso = key("dso");
    let register = |c: &mut Chain, meter: &str, pv_watts: u32, time: u64| {
        c.queue(
            &dso,
            TxBody::RegisterMeter {
                meter: id(&key(meter)),
                region: R1,
                role: quartier_ledger::MeterRole::Prosumer,
                pv_watts,
            },
        );
        c.block_at(time).results[0].clone().map(|_| ())
    };
    assert_eq!(
        register(&mut c, "farm", 25_000, next),
        Err(TxError::PvAboveBound { bound: 20_000 })
    );
    vote_through(
        &mut c,
        GovernanceChange::ApprovePv {
            meter: id(&key("farm")),
            pv_watts: 25_000,
        },
        &[0, 2, 3],
        next,
    );
    // Not another capacity, not another meter; then the approved one, once.
    assert!(register(&mut c, "farm", 30_000, next).is_err());
    assert!(register(&mut c, "barn", 25_000, next).is_err());
    assert_eq!(register(&mut c, "farm", 25_000, next), Ok(()));
    assert!(c.state.issuance().pv_approved.is_empty());
    assert_eq!(register(&mut c, "house", 20_000, next), Ok(()));
}

/// Found by review: a leaked utility key minted through feed-in cover by
/// setting a huge tariff, and a leaked DSO key registered many meters at
/// the bound each. Now the grid tariff is bounded, and so is the PV
/// registered per period in all; an approval beyond the mint cap lapses
/// with its period, a proposal a day after it was made, and a role's key
/// can not be voted in as a validator.
#[test]
fn tariffs_pv_per_period_approvals_and_proposals_are_bounded() {
    let mut g = genesis();
    g.limits = quartier_ledger::Limits {
        mint_per_period: Some(chf(10)),
        period_slots: 4,
        max_pv_watts: Some(20_000),
        new_pv_watts_per_period: Some(30_000),
        max_grid_tariff: Some(quartier_types::Price::new(40_000)),
    };
    let mut c = Chain::from_genesis(g);
    let tariffs = |grid| TxBody::SetTariffs {
        region: R1,
        grid: quartier_types::Price::new(grid),
        feed_in: quartier_types::Price::new(1_000),
    };
    c.queue(&key("utility"), tariffs(40_001));
    assert_eq!(
        c.block_at(1).results[0],
        Err(TxError::TariffAboveBound {
            bound: quartier_types::Price::new(40_000)
        })
    );
    c.queue(&key("utility"), tariffs(40_000));
    c.block_ok(2);
    // 20 + 10 kWp fit the period's 30; the next meter does not, until the
    // next period.
    let register = |c: &mut Chain, meter: &str, time: u64| {
        c.queue(
            &key("dso"),
            TxBody::RegisterMeter {
                meter: id(&key(meter)),
                region: R1,
                role: quartier_ledger::MeterRole::Prosumer,
                pv_watts: if meter == "a" { 20_000 } else { 10_000 },
            },
        );
        c.block_at(time).results[0].clone().map(|_| ())
    };
    assert_eq!(register(&mut c, "a", 3), Ok(()));
    assert_eq!(register(&mut c, "b", 4), Ok(()));
    assert_eq!(
        register(&mut c, "c", 5),
        Err(TxError::NewPvCap { cap: 30_000 })
    );
    let next = 4 * SLOT_MS + 1;
    assert_eq!(register(&mut c, "c", next), Ok(()));
    // An approval beyond the mint cap lapses with its period.
    vote_through(
        &mut c,
        GovernanceChange::ApproveMint(chf(5)),
        &[0, 1, 2],
        next,
    );
    assert_eq!(c.state.issuance().allowance, chf(5));
    c.queue(
        &key("utility"),
        TxBody::Mint {
            to: id(&key("h")),
            amount: chf(15),
        },
    );
    let later = 8 * SLOT_MS + 1;
    assert!(matches!(
        c.block_at(later).results[0],
        Err(TxError::MintCap { .. })
    ));
    // A proposal lapses a day (96 slots) after it was made: a vote then
    // is refused, and the block drops it.
    let change = GovernanceChange::ApproveMint(chf(1));
    c.queue(&v(0), TxBody::Propose { change });
    c.block_ok(later);
    let id_of = c.state.meta().next_proposal - 1;
    let day = 96 * SLOT_MS;
    c.queue(
        &v(1),
        TxBody::Vote {
            proposal: id_of,
            approve: true,
        },
    );
    assert_eq!(
        c.block_at(later + day).results[0],
        Err(TxError::UnknownProposal)
    );
    assert!(c.state.proposal(id_of).is_none());
    // A role's key is not a validator.
    c.queue(
        &v(0),
        TxBody::Propose {
            change: GovernanceChange::Add(id(&key("utility"))),
        },
    );
    assert_eq!(
        c.block_at(later + day).results[0],
        Err(TxError::InvalidProposal)
    );
}

/// Queues yes votes on `change` from validators `0..voters` (validator 0
/// proposes) for the next block.
fn pass(c: &mut Chain, change: GovernanceChange, voters: usize) {
    let id = c.state.meta().next_proposal;
    c.queue(&key("validator-0"), TxBody::Propose { change });
    for i in 1..voters {
        c.queue(
            &key(&format!("validator-{i}")),
            TxBody::Vote {
                proposal: id,
                approve: true,
            },
        );
    }
}

#[test]
fn a_validator_set_change_signs_from_the_next_epoch_boundary_on() {
    // Epochs of 8 blocks: epoch 0 is heights 0..8, its last block 7.
    let mut c = Chain::new();
    let genesis_set = c.state.validators().clone();
    let newcomer = id(&key("newcomer"));
    assert_eq!(c.state.validator_set(0), Some(&genesis_set));
    assert_eq!(c.state.validator_set(1), None, "epoch 1 is not decided yet");
    pass(&mut c, GovernanceChange::Add(newcomer), 3);
    c.block_ok(1);
    assert!(
        c.state.validators().contains(&newcomer),
        "votes from now on"
    );
    c.queue(&key("newcomer"), TxBody::JoinValidators);
    c.block_ok(2);
    for t in 3..7 {
        c.block_ok(t);
        assert_eq!(c.state.validator_set(1), None);
        assert_eq!(c.state.validator_set(0), Some(&genesis_set));
    }
    c.block_ok(7); // height 7: the last of epoch 0
    assert_eq!(c.state.known_consensus_epoch(), 1);
    let with_newcomer = c.state.validator_set(1).unwrap().clone();
    assert!(with_newcomer.contains(&newcomer));
    assert_eq!(with_newcomer.len(), 5);
    assert_eq!(
        c.state.validator_set(0),
        Some(&genesis_set),
        "history stays"
    );
    assert_eq!(c.state.consensus_epoch_of(quartier_types::Height(8)), 1);

    // Out again in epoch 1 (4 of the 5 vote): still signing epoch 1, gone
    // from epoch 2.
    pass(&mut c, GovernanceChange::Remove(newcomer), 4);
    c.block_ok(8);
    for t in 9..15 {
        c.block_ok(t);
    }
    assert_eq!(c.state.validator_set(2), None);
    c.block_ok(15);
    assert_eq!(c.state.validator_set(2), Some(&genesis_set));
    assert_eq!(c.state.validator_set(1), Some(&with_newcomer));
    // An epoch without change adds no entry.
    for t in 16..24 {
        c.block_ok(t);
    }
    assert_eq!(c.state.validator_set(3), Some(&genesis_set));
    assert_eq!(c.state.validator_sets().len(), 3);
}

#[test]
fn a_key_consensus_can_not_verify_with_is_never_voted_in() {
    let mut c = Chain::new();
    // Not a curve point (y = 2 has no x), and a point of small order.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    for bad in [not_a_point, identity] {
        let tx = c.tx(
            &key("validator-0"),
            TxBody::Propose {
                change: GovernanceChange::Add(quartier_types::AccountId(bad)),
            },
        );
        c.queue_signed(tx);
        let out = c.block_at(1);
        assert_eq!(out.results[0], Err(TxError::InvalidProposal));
    }
}

#[test]
fn on_a_chain_of_one_epoch_a_change_moves_the_votes_only() {
    let mut c = Chain::from_genesis(Genesis {
        epoch_blocks: 0,
        ..genesis()
    });
    let genesis_set = c.state.validators().clone();
    let out = id(&key("validator-3"));
    pass(&mut c, GovernanceChange::Remove(out), 3);
    c.block_ok(1);
    assert!(!c.state.validators().contains(&out), "it votes no more");
    for t in 2..40 {
        c.block_ok(t);
    }
    assert_eq!(c.state.known_consensus_epoch(), 0);
    assert_eq!(c.state.validator_set(0), Some(&genesis_set), "it signs on");
    assert_eq!(c.state.validator_set(1), None);
    assert_eq!(c.state.validator_sets().len(), 1);
    for short in 1..quartier_ledger::MIN_EPOCH_BLOCKS {
        let g = Genesis {
            epoch_blocks: short,
            ..genesis()
        };
        assert_eq!(
            quartier_ledger::State::from_genesis(g).err(),
            Some(quartier_ledger::GenesisError::EpochBlocks)
        );
    }
}

/// Two keys voted in that never run (a typo, a candidate that does not
/// start) would make a set of four six, with a quorum of five and four up:
/// the chain halted for good, as the vote to remove them needs blocks. A
/// key voted in signs only once it joined with its own key
/// (`JoinValidators`), and at most f of the next set may be new: a second
/// newcomer in the same epoch is refused, and so is one an epoch later
/// while the first has not joined (a review found that bypass, with only
/// the f bound); once it joined and signs, the next may come.
#[test]
fn keys_voted_in_sign_only_once_they_joined_and_at_most_f_are_new() {
    let mut c = Chain::new();
    let [ka, kb] = [key("newcomer-a"), key("newcomer-b")];
    let [a, b] = [id(&ka), id(&kb)];
    let propose = |c: &mut Chain, at: u64, change| {
        let tx = c.tx(&key("validator-0"), TxBody::Propose { change });
        c.queue_signed(tx);
        c.block_at(at).results[0].clone()
    };
    pass(&mut c, GovernanceChange::Add(a), 3);
    c.block_ok(1);
    assert!(c.state.validators().contains(&a));
    // 4 + 2: six, quorum five, four from the set signing now.
    assert_eq!(
        propose(&mut c, 2, GovernanceChange::Add(b)),
        Err(TxError::InvalidProposal)
    );
    // Replacing one old validator keeps a quorum (three of four).
    pass(&mut c, GovernanceChange::Remove(id(&key("validator-3"))), 4);
    c.block_ok(3);
    for t in 4..8 {
        c.block_ok(t);
    }
    // `a` never joined: epoch 1 is signed by the three left.
    let three: std::collections::BTreeSet<_> = (0..3)
        .map(|i| id(&key(&format!("validator-{i}"))))
        .collect();
    assert_eq!(c.state.validator_set(1), Some(&three));
    assert!(c.state.validators().contains(&a), "still voted in");
    // So `b` is refused in epoch 1 too (five, quorum four, three signing).
    assert_eq!(
        propose(&mut c, 8, GovernanceChange::Add(b)),
        Err(TxError::InvalidProposal)
    );
    // `a` joins (a key not voted in can not): it signs from epoch 2.
    c.queue(&kb, TxBody::JoinValidators);
    assert!(c.block_at(9).results[0].is_err());
    c.queue(&ka, TxBody::JoinValidators);
    c.block_ok(10);
    assert!(c.state.joining().contains(&a));
    for t in 11..16 {
        c.block_ok(t);
    }
    assert!(c.state.validator_set(2).unwrap().contains(&a));
    assert!(c.state.joining().is_empty());
    pass(&mut c, GovernanceChange::Add(b), 3);
    c.block_ok(16);
    assert!(c.state.validators().contains(&b));
}
