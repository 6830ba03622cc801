//! One concrete bad transaction per `TxError` variant; each is rejected with
//! exactly that error and leaves the state (and so its root) unchanged.

use crate::kit::*;
use quartier_ledger::{
    GovernanceChange, MAX_TX_BYTES, MeterRole, Role, SignedTx, Tx, TxBody, TxError, apply,
};
use quartier_types::{Energy, Money, Price, RegionId, Side, Slot};
use std::collections::BTreeSet;

/// Every variant's name. The match is exhaustive: a new variant fails to
/// compile here until it gets a case below.
fn name(e: &TxError) -> &'static str {
    match e {
        TxError::Malformed => "Malformed",
        TxError::BadSignature => "BadSignature",
        TxError::WrongChain => "WrongChain",
        TxError::BadNonce { .. } => "BadNonce",
        TxError::NotAuthorised { .. } => "NotAuthorised",
        TxError::Frozen => "Frozen",
        TxError::MintCap { .. } => "MintCap",
        TxError::PvAboveBound { .. } => "PvAboveBound",
        TxError::TariffAboveBound { .. } => "TariffAboveBound",
        TxError::NewPvCap { .. } => "NewPvCap",
        TxError::UnknownMeter => "UnknownMeter",
        TxError::MeterRetired => "MeterRetired",
        TxError::AlreadyRegistered => "AlreadyRegistered",
        TxError::CapacityMismatch => "CapacityMismatch",
        TxError::UnknownRegion(_) => "UnknownRegion",
        TxError::WrongRegion => "WrongRegion",
        TxError::SlotClosed { .. } => "SlotClosed",
        TxError::SlotNotOpen { .. } => "SlotNotOpen",
        TxError::DuplicateOrder => "DuplicateOrder",
        TxError::NoSuchOrder => "NoSuchOrder",
        TxError::LimitOutOfRange { .. } => "LimitOutOfRange",
        TxError::ExceedsCapacity { .. } => "ExceedsCapacity",
        TxError::InsufficientFunds { .. } => "InsufficientFunds",
        TxError::ZeroAmount => "ZeroAmount",
        TxError::SelfTransfer => "SelfTransfer",
        TxError::InvalidTariffs(_) => "InvalidTariffs",
        TxError::UnknownProposal => "UnknownProposal",
        TxError::AlreadyVoted => "AlreadyVoted",
        TxError::AlreadyJoined => "AlreadyJoined",
        TxError::InvalidProposal => "InvalidProposal",
        TxError::Overflow => "Overflow",
        // Mode B: every one is produced in `sealed_market.rs`.
        TxError::NoSealedMarket => "NoSealedMarket",
        TxError::Attestation(_) => "Attestation",
        TxError::QuoteBinding => "QuoteBinding",
        TxError::EnclaveRegistered => "EnclaveRegistered",
        TxError::InvalidCommittee => "InvalidCommittee",
        TxError::VendorPolicy => "VendorPolicy",
        TxError::NoCommittee => "NoCommittee",
        TxError::CommitteeEvicting => "CommitteeEvicting",
        TxError::CandidatesFull => "CandidatesFull",
        TxError::FormerCommitteeEpoch(_) => "FormerCommitteeEpoch",
        TxError::StaleEpoch(_) => "StaleEpoch",
        TxError::EpochTooFar(_) => "EpochTooFar",
        TxError::UnknownEpoch(_) => "UnknownEpoch",
        TxError::SealedOrderSize => "SealedOrderSize",
        TxError::InvalidGroupSignature => "InvalidGroupSignature",
        TxError::NoSuchBatch => "NoSuchBatch",
        TxError::ReportOutOfOrder => "ReportOutOfOrder",
        TxError::ReportMismatch => "ReportMismatch",
        // Mode A: every one is produced in `shielded_pool.rs`.
        TxError::NoShieldedPool => "NoShieldedPool",
        TxError::InvalidShieldedOutput => "InvalidShieldedOutput",
        TxError::InvalidShieldedTransfer => "InvalidShieldedTransfer",
        TxError::KeyImageSpent => "KeyImageSpent",
        TxError::InvalidRingSignature => "InvalidRingSignature",
        TxError::InvalidRangeProof => "InvalidRangeProof",
        TxError::Unbalanced => "Unbalanced",
        TxError::DuplicateOutputKey => "DuplicateOutputKey",
        TxError::AllowanceExpired { .. } => "AllowanceExpired",
        TxError::AllowanceUsed => "AllowanceUsed",
        TxError::ShieldedOrdersOnly => "ShieldedOrdersOnly",
        TxError::InvalidMeterKey => "InvalidMeterKey",
    }
}

/// The variants of the open market, all produced here.
const ALL: usize = 31;

/// A chain at slot 10 with meters p1 (R1, 5 kWp), c1 (R1, consumer),
/// c2 (R1, consumer, retired), p2 (R2, 4 kWp); c1 and p1 hold 100 CHF.
fn setup() -> Chain {
    let mut c = Chain::new();
    let (dso, utility) = (key("dso"), key("utility"));
    for (name, region, role, pv) in [
        ("p1", R1, MeterRole::Prosumer, 5_000),
        ("c1", R1, MeterRole::Consumer, 0),
        ("c2", R1, MeterRole::Consumer, 0),
        ("p2", R2, MeterRole::Prosumer, 4_000),
    ] {
        c.queue(
            &dso,
            TxBody::RegisterMeter {
                meter: id(&key(name)),
                region,
                role,
                pv_watts: pv,
            },
        );
    }
    c.queue(
        &dso,
        TxBody::RetireMeter {
            meter: id(&key("c2")),
        },
    );
    for name in ["p1", "c1"] {
        c.queue(
            &utility,
            TxBody::Mint {
                to: id(&key(name)),
                amount: chf(100),
            },
        );
    }
    c.queue(
        &key("c1"),
        TxBody::PlaceOrder {
            region: R1,
            slot: Slot(10),
            side: Side::Buy,
            limit: Price::new(15_000),
            energy: Energy::new(500),
        },
    );
    c.block_ok(10 * SLOT_MS + 1_000);
    c
}

fn order(slot: u64, side: Side, limit: u64, energy: u64) -> TxBody {
    TxBody::PlaceOrder {
        region: R1,
        slot: Slot(slot),
        side,
        limit: Price::new(limit),
        energy: Energy::new(energy),
    }
}

/// Applies `tx` and checks it is rejected with `expected`, changing nothing.
fn rejects(c: &Chain, tx: &SignedTx, expected: TxError) -> &'static str {
    let mut state = c.state.clone();
    let root = state.clone().commit().unwrap();
    let err = apply(&mut state, tx, &c.ctx()).unwrap_err();
    assert_eq!(err, expected);
    assert_eq!(state, c.state, "state changed by rejected {expected:?}");
    assert_eq!(
        state.commit().unwrap(),
        root,
        "root changed by rejected {expected:?}"
    );
    name(&err)
}

#[test]
fn every_tx_error_variant_from_a_concrete_bad_transaction() {
    let mut c = setup();
    let mut seen = BTreeSet::new();
    let (dso, utility, p1, c1, c2) = (key("dso"), key("utility"), key("p1"), key("c1"), key("c2"));
    macro_rules! check {
        ($c:expr, $tx:expr, $e:expr $(,)?) => {
            seen.insert(rejects($c, &$tx, $e))
        };
    }

    // Envelope.
    let good = c.tx(&c1, TxBody::Redeem { amount: chf(1) });
    for bad in [
        vec![0u8; 3],
        vec![0u8; MAX_TX_BYTES + 1],
        [good.encode(), vec![0]].concat(),
    ] {
        assert_eq!(SignedTx::decode(&bad).unwrap_err(), TxError::Malformed);
    }
    assert_eq!(SignedTx::decode(&good.encode()).unwrap(), good);
    seen.insert("Malformed");
    let mut tampered = good.clone();
    tampered.tx.body = TxBody::Redeem { amount: chf(2) };
    check!(&c, tampered, TxError::BadSignature);
    let mut forged = good.clone();
    forged.signature = Tx { ..good.tx.clone() }.sign(&p1).signature;
    check!(&c, forged, TxError::BadSignature);
    let mut other_genesis = genesis();
    other_genesis.chain_name = "another-chain".into();
    let wrong_chain = Tx {
        chain_id: other_genesis.chain_id(),
        ..good.tx.clone()
    }
    .sign(&c1);
    check!(&c, wrong_chain, TxError::WrongChain);
    let ahead = Tx {
        nonce: good.tx.nonce + 1,
        ..good.tx.clone()
    }
    .sign(&c1);
    check!(
        &c,
        ahead,
        TxError::BadNonce {
            expected: 1,
            got: 2,
        },
    );

    // A role governance froze (more than a third of the validators).
    let mut frozen = Chain::new();
    frozen.queue(
        &key("validator-0"),
        TxBody::Propose {
            change: GovernanceChange::Freeze {
                authority: quartier_ledger::Authority::Utility,
                key: id(&utility),
            },
        },
    );
    frozen.queue(
        &key("validator-1"),
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    frozen.block_ok(1);
    let tx = frozen.tx(
        &utility,
        TxBody::Mint {
            to: id(&c1),
            amount: chf(1),
        },
    );
    check!(&frozen, tx, TxError::Frozen);

    // The roles' limits: a mint above the period's cap, PV above the bound.
    let limited = {
        let mut g = genesis();
        g.limits = quartier_ledger::Limits {
            mint_per_period: Some(chf(10)),
            period_slots: 4,
            max_pv_watts: Some(20_000),
            new_pv_watts_per_period: Some(15_000),
            max_grid_tariff: Some(Price::new(30_000)),
        };
        Chain::from_genesis(g)
    };
    let tx = limited.tx(
        &utility,
        TxBody::SetTariffs {
            region: R1,
            grid: Price::new(30_001),
            feed_in: Price::new(1),
        },
    );
    check!(
        &limited,
        tx,
        TxError::TariffAboveBound {
            bound: Price::new(30_000)
        }
    );
    let tx = limited.tx(
        &dso,
        TxBody::RegisterMeter {
            meter: id(&key("mid-pv")),
            region: R1,
            role: MeterRole::Prosumer,
            pv_watts: 15_001,
        },
    );
    check!(&limited, tx, TxError::NewPvCap { cap: 15_000 });
    let tx = limited.tx(
        &utility,
        TxBody::Mint {
            to: id(&c1),
            amount: chf(11),
        },
    );
    check!(
        &limited,
        tx,
        TxError::MintCap {
            cap: chf(10),
            minted: Money::ZERO
        }
    );
    let tx = limited.tx(
        &dso,
        TxBody::RegisterMeter {
            meter: id(&key("big-pv")),
            region: R1,
            role: MeterRole::Prosumer,
            pv_watts: 20_001,
        },
    );
    check!(&limited, tx, TxError::PvAboveBound { bound: 20_000 });

    // Authority.
    let body = TxBody::RegisterMeter {
        meter: id(&key("new")),
        region: R1,
        role: MeterRole::Consumer,
        pv_watts: 0,
    };
    let tx = c.tx(&utility, body);
    check!(&c, tx, TxError::NotAuthorised { role: Role::Dso });
    let tx = c.tx(
        &dso,
        TxBody::Mint {
            to: id(&c1),
            amount: chf(1),
        },
    );
    check!(
        &c,
        tx,
        TxError::NotAuthorised {
            role: Role::Utility
        }
    );
    let tx = c.tx(&key("stranger"), order(10, Side::Buy, 10_000, 1));
    check!(&c, tx, TxError::NotAuthorised { role: Role::Meter });
    let tx = c.tx(&c1, order(10, Side::Sell, 10_000, 1));
    check!(
        &c,
        tx,
        TxError::NotAuthorised {
            role: Role::Prosumer
        }
    );
    let tx = c.tx(
        &p1,
        TxBody::Propose {
            change: GovernanceChange::Add(id(&p1)),
        },
    );
    check!(
        &c,
        tx,
        TxError::NotAuthorised {
            role: Role::Validator
        }
    );

    // Registry.
    let tx = c.tx(
        &dso,
        TxBody::RetireMeter {
            meter: id(&key("nobody")),
        },
    );
    check!(&c, tx, TxError::UnknownMeter);
    let tx = c.tx(&c2, order(10, Side::Buy, 10_000, 1));
    check!(&c, tx, TxError::MeterRetired);
    let tx = c.tx(&dso, TxBody::RetireMeter { meter: id(&c2) });
    check!(&c, tx, TxError::MeterRetired);
    let body = TxBody::RegisterMeter {
        meter: id(&p1),
        region: R1,
        role: MeterRole::Prosumer,
        pv_watts: 5_000,
    };
    let tx = c.tx(&dso, body);
    check!(&c, tx, TxError::AlreadyRegistered);
    for (role, pv) in [(MeterRole::Prosumer, 0), (MeterRole::Consumer, 1_000)] {
        let body = TxBody::RegisterMeter {
            meter: id(&key("new")),
            region: R1,
            role,
            pv_watts: pv,
        };
        let tx = c.tx(&dso, body);
        check!(&c, tx, TxError::CapacityMismatch);
    }
    let body = TxBody::RegisterMeter {
        meter: id(&key("new")),
        region: RegionId(9),
        role: MeterRole::Consumer,
        pv_watts: 0,
    };
    let tx = c.tx(&dso, body);
    check!(&c, tx, TxError::UnknownRegion(RegionId(9)));

    // Orders.
    let tx = c.tx(
        &p1,
        TxBody::PlaceOrder {
            region: R2,
            slot: Slot(10),
            side: Side::Buy,
            limit: Price::new(10_000),
            energy: Energy::new(1),
        },
    );
    check!(&c, tx, TxError::WrongRegion);
    let tx = c.tx(&p1, order(8, Side::Buy, 10_000, 1));
    check!(&c, tx, TxError::SlotClosed { slot: Slot(8) });
    let tx = c.tx(&p1, order(12, Side::Buy, 10_000, 1));
    check!(&c, tx, TxError::SlotNotOpen { slot: Slot(12) });
    let tx = c.tx(&c1, order(10, Side::Buy, 10_000, 1));
    check!(&c, tx, TxError::DuplicateOrder);
    let tx = c.tx(
        &p1,
        TxBody::CancelOrder {
            region: R1,
            slot: Slot(10),
            side: Side::Sell,
        },
    );
    check!(&c, tx, TxError::NoSuchOrder);
    let tx = c.tx(&p1, order(10, Side::Sell, 30_000, 1));
    check!(
        &c,
        tx,
        TxError::LimitOutOfRange {
            limit: Price::new(30_000),
            min: Price::new(4_000),
            max: Price::new(20_750),
        },
    );
    // 5 kWp for 15 minutes: at most 1 250 Wh.
    let tx = c.tx(&p1, order(10, Side::Sell, 10_000, 1_251));
    check!(
        &c,
        tx,
        TxError::ExceedsCapacity {
            energy: Energy::new(1_251),
            max: Energy::new(1_250),
        },
    );
    let ok = c.tx(&p1, order(10, Side::Sell, 10_000, 1_250));
    assert!(apply(&mut c.state.clone(), &ok, &c.ctx()).is_ok());
    // 100 CHF buys at most 100e8 / 20 750 ≈ 481 927 Wh at the grid tariff.
    let tx = c.tx(&p1, order(10, Side::Buy, 10_000, 1_000_000));
    check!(
        &c,
        tx,
        TxError::InsufficientFunds {
            needed: Money::new(20_750_000_000),
            available: chf(100),
        },
    );

    // Money.
    let tx = c.tx(
        &utility,
        TxBody::Mint {
            to: id(&c1),
            amount: Money::ZERO,
        },
    );
    check!(&c, tx, TxError::ZeroAmount);
    let tx = c.tx(
        &c1,
        TxBody::Transfer {
            to: id(&c1),
            amount: chf(1),
        },
    );
    check!(&c, tx, TxError::SelfTransfer);
    let body = TxBody::SetTariffs {
        region: R1,
        grid: Price::new(1_000),
        feed_in: Price::new(2_000),
    };
    let tx = c.tx(&utility, body);
    check!(
        &c,
        tx,
        TxError::InvalidTariffs(quartier_types::ParamsError::FeedInAboveGrid {
            feed_in: Price::new(2_000),
            grid: Price::new(1_000),
        }),
    );
    let tx = c.tx(
        &utility,
        TxBody::Mint {
            to: id(&c1),
            amount: Money::MAX,
        },
    );
    check!(&c, tx, TxError::Overflow);

    // Governance.
    let v0 = key("validator-0");
    let tx = c.tx(
        &v0,
        TxBody::Vote {
            proposal: 99,
            approve: true,
        },
    );
    check!(&c, tx, TxError::UnknownProposal);
    let tx = c.tx(
        &v0,
        TxBody::Propose {
            change: GovernanceChange::Add(id(&key("validator-1"))),
        },
    );
    check!(&c, tx, TxError::InvalidProposal);
    c.queue(
        &v0,
        TxBody::Propose {
            change: GovernanceChange::Add(id(&p1)),
        },
    );
    c.block_ok(c.time + 1);
    let tx = c.tx(
        &v0,
        TxBody::Vote {
            proposal: 0,
            approve: true,
        },
    );
    check!(&c, tx, TxError::AlreadyVoted);
    // A validator signing the current epoch has nothing to join.
    let tx = c.tx(&v0, TxBody::JoinValidators);
    check!(&c, tx, TxError::AlreadyJoined);

    // A replay of an accepted transaction is a nonce error too.
    let accepted = c.tx(&c1, TxBody::Redeem { amount: chf(1) });
    let ctx = c.ctx();
    apply(&mut c.state, &accepted, &ctx).unwrap();
    check!(
        &c,
        accepted,
        TxError::BadNonce {
            expected: 2,
            got: 1
        }
    );

    assert_eq!(seen.len(), ALL, "variants covered: {seen:?}");
}
