//! Validator-set changes need yes votes from 2/3 of the current validators.

use crate::kit::*;
use quartier_ledger::{Event, GovernanceChange, TxBody};

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
