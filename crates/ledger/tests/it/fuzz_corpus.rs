//! Replays the transaction decoder's fuzz corpus and past crashes on stable.
//! With `QUARTIER_WRITE_FUZZ_SEEDS=1` it first writes one valid transaction of
//! every kind as seeds.

use crate::kit::*;
use quartier_auction::Totals;
use quartier_enclave::attestation::{Measurement, SimulatedAttestationService};
use quartier_enclave::auctioneer::{Aggregates, SlotSummary};
use quartier_enclave::sealed::{CIPHERTEXT_LEN, Epoch, SealedOrder};
use quartier_ledger::{GovernanceChange, MeterRole, SignedTx, TxBody};
use quartier_types::{Energy, Money, Price, Side, Slot};
use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn seeds() -> Vec<(&'static str, TxBody)> {
    let who = id(&key("someone"));
    vec![
        (
            "register",
            TxBody::RegisterMeter {
                meter: who,
                region: R1,
                role: MeterRole::Prosumer,
                pv_watts: 8_000,
            },
        ),
        ("retire", TxBody::RetireMeter { meter: who }),
        (
            "fee",
            TxBody::SetLocalFee {
                region: R1,
                fee: Price::new(500),
            },
        ),
        (
            "mint",
            TxBody::Mint {
                to: who,
                amount: Money::new(1_000),
            },
        ),
        (
            "tariffs",
            TxBody::SetTariffs {
                region: R1,
                grid: Price::new(20_000),
                feed_in: Price::new(5_000),
            },
        ),
        (
            "transfer",
            TxBody::Transfer {
                to: who,
                amount: Money::new(7),
            },
        ),
        (
            "redeem",
            TxBody::Redeem {
                amount: Money::new(7),
            },
        ),
        (
            "order",
            TxBody::PlaceOrder {
                region: R1,
                slot: Slot(3),
                side: Side::Sell,
                limit: Price::new(9_000),
                energy: Energy::new(700),
            },
        ),
        (
            "cancel",
            TxBody::CancelOrder {
                region: R1,
                slot: Slot(3),
                side: Side::Buy,
            },
        ),
        (
            "propose",
            TxBody::Propose {
                change: GovernanceChange::Remove(who),
            },
        ),
        (
            "vote",
            TxBody::Vote {
                proposal: 0,
                approve: true,
            },
        ),
        (
            "register_enclave",
            TxBody::RegisterEnclave {
                quote: SimulatedAttestationService::new([1; 32])
                    .quote(Measurement([2; 32]), [3; 64]),
                identity_key: [4; 32],
            },
        ),
        (
            "activate_committee",
            TxBody::ActivateCommittee {
                members: vec![who],
                group_key: quartier_enclave::committee::GroupPublicKey([11; 32]),
                signature: [12; 64],
            },
        ),
        (
            "epoch_key",
            TxBody::PublishEpochKey {
                epoch: Epoch(2),
                public_key: [5; 32],
                signature: [6; 64],
            },
        ),
        (
            "sealed_order",
            TxBody::SubmitSealedOrder {
                sealed: SealedOrder {
                    region: R1,
                    slot: Slot(3),
                    epoch: Epoch(0),
                    encapped_key: [7; 32],
                    ciphertext: vec![8; CIPHERTEXT_LEN],
                },
            },
        ),
        (
            "deposit",
            TxBody::DepositToAuctioneer {
                amount: Money::new(9),
            },
        ),
        (
            "withdraw",
            TxBody::RequestWithdrawal {
                amount: Money::new(9),
            },
        ),
        (
            "report",
            TxBody::PostSettlementReport {
                summary: SlotSummary {
                    region: R1,
                    slot: Slot(3),
                    receipts_root: quartier_types::hash::tagged("X", &[]),
                    aggregates: Aggregates {
                        sealed: 2,
                        cleared: 1,
                        totals: Totals::default(),
                        prices: None,
                    },
                    payouts: vec![(who, Money::new(1))],
                    ledger: quartier_types::hash::tagged("L", &[]),
                    ledger_before: quartier_types::hash::tagged("B", &[]),
                },
                signature: [10; 64],
            },
        ),
    ]
}

#[test]
fn signed_tx_corpus_decodes_canonically_without_panic() {
    let chain = Chain::new();
    if std::env::var_os("QUARTIER_WRITE_FUZZ_SEEDS").is_some() {
        for (name, body) in seeds() {
            let tx = chain.tx(&key("someone"), body);
            std::fs::write(fuzz_dir().join("corpus/signed_tx").join(name), tx.encode()).unwrap();
        }
    }
    let mut replayed = 0;
    for dir in ["corpus/signed_tx", "regressions/signed_tx"] {
        for entry in std::fs::read_dir(fuzz_dir().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if let Ok(tx) = SignedTx::decode(&bytes) {
                assert_eq!(tx.encode(), bytes, "{}", path.display());
                let _ = tx.verify();
            }
            replayed += 1;
        }
    }
    assert!(
        replayed >= seeds().len(),
        "corpus missing: {replayed} inputs"
    );
}
