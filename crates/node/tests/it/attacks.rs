//! Attacks on a validator through the ways in: its API's mempool, and blocks
//! a Byzantine leader proposes. Each is run as the attacker would, on the
//! deterministic runtime, and honest transactions sent during the attack
//! must finalize within a stated bound.

use crate::harness::*;
use commonware_runtime::{Clock as _, Runner as _, deterministic};
use quartier_ledger::{SignedTx, TxBody};
use quartier_node::LedgerApp;
use std::time::Duration;

/// Honest transactions sent during an attack are final within this many
/// finalized blocks of being sent.
const HONEST_WITHIN_BLOCKS: u64 = 10;

/// Waits until every one of `txs` is final at `apps[0]`, failing if the
/// chain finalizes more than [`HONEST_WITHIN_BLOCKS`] blocks first.
async fn final_within_bound(
    context: &deterministic::Context,
    apps: &[LedgerApp],
    txs: &[SignedTx],
) {
    let sent_at = apps[0].view().height;
    while !txs.iter().all(|t| is_final(&apps[0], t)) {
        let height = apps[0].view().height;
        assert!(
            height <= sent_at + HONEST_WITHIN_BLOCKS,
            "{} of {} honest txs final after {} blocks",
            txs.iter().filter(|t| is_final(&apps[0], t)).count(),
            txs.len(),
            height - sent_at
        );
        context.sleep(Duration::from_millis(50)).await;
    }
}

/// `keys` × `per_key` transfers of 1 µRp to the sender itself, the nonces of
/// each key from `first_nonce`.
fn junk(apps: &[LedgerApp], keys: usize, per_key: u64, first_nonce: u64) -> Vec<SignedTx> {
    apps[0].with_state(|s| {
        (0..keys)
            .flat_map(|k| {
                let signer = key(&format!("attacker-{k}"));
                let to = id(&signer);
                (0..per_key)
                    .map(|j| {
                        let body = TxBody::Transfer {
                            to,
                            amount: quartier_types::Money::new(1),
                        };
                        tx(s, &signer, first_nonce + j, body)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    })
}

/// 64 fresh keys each send 64 transactions with nonces from 10⁶ (4 096 in
/// all, a full block's worth), then 64 with nonces just ahead of their next
/// (a gap never filled), then 64 that can apply in order but fail (no
/// balance). Before, every one was admitted and kept, and the 4 096 oldest
/// were every proposal's candidates: no honest transaction was proposed
/// again. Now the far-future ones are refused, the gapped ones are never
/// proposed, the failing ones leave with their first failure, and the
/// accounts take turns: the DSO's registrations sent after the flood are
/// final within [`HONEST_WITHIN_BLOCKS`] blocks.
#[test]
fn future_nonce_and_junk_floods_do_not_keep_honest_txs_out() {
    deterministic::Runner::new(seeded(41)).start(|context| async move {
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<_> = (0..4).map(|_| app(&genesis)).collect();
        start_all(&context, &oracle, &keys, &apps).await;
        wait_for_height(&context, &apps, &[0, 1, 2, 3], 2).await;
        let future = junk(&apps, 64, 64, 1_000_000);
        let gapped = junk(&apps, 64, 64, 1);
        let failing = junk(&apps, 64, 64, 0);
        let mut admitted = 0;
        for a in &apps {
            for t in future.iter().chain(&gapped).chain(&failing) {
                admitted += usize::from(a.submit(t.clone()).is_ok());
            }
        }
        eprintln!("admitted {admitted} of {} junk txs", 4 * 3 * 4_096);
        let honest = apps[0].with_state(|s| registrations(s, 12));
        submit_to_all(&apps, &honest);
        final_within_bound(&context, &apps, &honest).await;
        // None of the junk applied, and the far-future and gapped ones were
        // never proposed: no validator rejected one of them.
        for a in &apps {
            for t in future.iter().chain(&gapped) {
                assert!(
                    !matches!(
                        a.tx_status(&t.hash()),
                        quartier_node::TxStatus::Finalized { .. }
                    ),
                    "junk finalized"
                );
            }
        }
    });
}
