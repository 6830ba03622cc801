//! One signature rule for a transaction, alone or in a block's batch.

use ed25519_dalek::SigningKey;
use quartier_ledger::{Tx, TxBody, verify_batch};
use quartier_testkit::sign_with_torsion;
use quartier_types::{AccountId, Money};

/// A proposer may put in a block a transaction whose signature only the
/// batch check accepts (no mempool admits it): with a commitment off the
/// prime-order subgroup, about every second such signature passed
/// `verify_batch`. Every validator must judge it as `verify_strict` does.
#[test]
fn a_signature_verify_strict_refuses_is_refused_in_a_batch_too() {
    let key = SigningKey::from_bytes(&[42; 32]);
    let state = quartier_ledger::State::from_genesis(crate::kit::genesis()).unwrap();
    let mut passed_batch = 0;
    for nonce in 0..16 {
        let tx = Tx {
            chain_id: state.chain_id(),
            signer: AccountId(key.verifying_key().to_bytes()),
            nonce,
            body: TxBody::Transfer {
                to: AccountId([9; 32]),
                amount: Money::new(1),
            },
        };
        let forged = sign_with_torsion(tx, &key);
        assert!(forged.clone().verify().is_err(), "verify_strict took it");
        // How blocks are executed, remembering what verified.
        assert!(state.verify_tx(forged.clone()).is_err());
        assert!(
            state.verify_tx(forged.clone()).is_err(),
            "a failure remembered"
        );
        if verify_batch(vec![forged]).into_iter().all(|r| r.is_ok()) {
            passed_batch += 1;
        }
    }
    assert_eq!(
        passed_batch, 0,
        "{passed_batch} of 16 passed the batch check"
    );
}

/// A Byzantine leader's block of false one-time transactions and of
/// transfers from fresh keys with nothing to transfer, each validly signed:
/// every validator executing it remembered each signature before the body
/// failed, so a few such proposals pushed the honest signatures out of the
/// memo (found by review; red before). A signature is remembered only once
/// its transaction applied.
#[test]
fn a_block_of_false_one_time_txs_leaves_no_signature_remembered() {
    let mut chain = crate::kit::Chain::new();
    let before = chain.state.remembered_signatures();
    for i in 0..200u32 {
        let mut secret = [0x5a; 32];
        secret[..4].copy_from_slice(&i.to_le_bytes());
        let body = TxBody::ShieldedTransfer {
            transfer: quartier_ledger::ShieldedTransfer {
                inputs: Vec::new(),
                outputs: Vec::new(),
                range_proof: Vec::new(),
            },
            allowance: quartier_ledger::Allowance {
                region: quartier_types::RegionId(1),
                slot: quartier_types::Slot(0),
                authorisation: quartier_shielded::authorise::Authorisation {
                    key_image: [1; 32],
                    pseudo_out: [0; 32],
                    signature: vec![1; 64],
                },
            },
        };
        chain.queue_signed(Tx::one_time(chain.state.chain_id(), body, &secret));
    }
    for i in 0..200u32 {
        let mut seed = [0x6b; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        let fresh = SigningKey::from_bytes(&seed);
        let body = TxBody::Transfer {
            to: AccountId([9; 32]),
            amount: Money::new(1),
        };
        chain.queue(&fresh, body);
    }
    let outcome = chain.block_at(1_000);
    assert_eq!(outcome.results.len(), 400);
    assert!(outcome.results.iter().all(Result::is_err));
    assert_eq!(chain.state.remembered_signatures(), before);
    // An account's transaction that verified is remembered.
    chain.queue(
        &crate::kit::key("utility"),
        TxBody::Mint {
            to: AccountId([9; 32]),
            amount: Money::new(1),
        },
    );
    chain.block_ok(2_000);
    assert_eq!(chain.state.remembered_signatures(), before + 1);
}
