//! Agreement: validators finalize the same blocks and reach the same roots.

use crate::harness::*;
use commonware_runtime::{Clock as _, Runner as _, deterministic};
use quartier_ledger::StateKey;
use std::time::Duration;

/// Runs `n` validators until every one has finalized `target` heights; returns
/// each validator's finalized roots.
fn run(
    seed: u64,
    n: u64,
    target: u64,
) -> Vec<std::collections::BTreeMap<u64, quartier_types::hash::Digest>> {
    let config = seeded(seed);
    deterministic::Runner::new(config).start(|context| async move {
        let keys = validator_keys(n);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<_> = (0..n).map(|_| app(&genesis)).collect();
        // Every validator learns the same transactions (gossip comes later).
        let txs = apps[0].with_state(|s| registrations(s, 12));
        submit_to_all(&apps, &txs);
        start_all(&context, &oracle, &keys, &apps).await;
        let all: Vec<usize> = (0..apps.len()).collect();
        wait_for_height(&context, &apps, &all, target).await;
        for t in &txs {
            assert!(matches!(
                apps[1].tx_status(&t.hash()),
                quartier_node::TxStatus::Finalized { .. }
            ));
        }
        for a in &apps {
            for i in 0..12 {
                let meter = id(&key(&format!("meter-{i}")));
                assert!(
                    a.with_state(|s| s.meter(&meter).is_some()),
                    "meter {i} not registered"
                );
            }
            assert_eq!(a.view().mempool, 0);
            // Every tx was valid: none may have been refused, even by a
            // proposer building on a block that already held it.
            assert_eq!(a.metrics().rejected_txs, 0, "a valid tx was rejected");
            a.with_state(|s| s.prove(StateKey::Meta).unwrap().verify(s.root()).unwrap());
        }
        apps.iter().map(|a| a.finalized_roots()).collect()
    })
}

#[test]
fn n4_finalize_50_blocks_with_identical_roots() {
    let roots = run(7, 4, 50);
    for r in &roots {
        assert!(r.len() >= 51, "only {} heights", r.len());
        // The registrations changed the state: the root moved after genesis.
        let distinct: std::collections::BTreeSet<_> = r.values().collect();
        assert!(distinct.len() >= 2, "root never changed");
        eprintln!(
            "finalized heights: {}, distinct roots: {}",
            r.len(),
            distinct.len()
        );
    }
    for other in &roots[1..] {
        for (h, root) in other {
            if let Some(first) = roots[0].get(h) {
                assert_eq!(first, root, "roots differ at height {h}");
            }
        }
    }
}

#[test]
fn same_seed_same_run() {
    assert_eq!(run(11, 4, 20), run(11, 4, 20));
}

#[test]
fn an_idle_chain_makes_heartbeat_blocks_only_and_wakes_for_a_tx() {
    let config = seeded(17);
    deterministic::Runner::new(config).start(|context| async move {
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<_> = (0..4)
            .map(|_| app(&genesis).with_idle_block_interval(Duration::from_secs(10)))
            .collect();
        start_all(&context, &oracle, &keys, &apps).await;
        // 60 s of idle virtual time: about one heartbeat block per 10 s.
        context.sleep(Duration::from_secs(60)).await;
        let idle = apps[0].view().height;
        assert!(
            (3..=8).contains(&idle),
            "idle chain made {idle} blocks in 60 s"
        );
        // A transaction is included within a few views, not a heartbeat.
        let tx = apps[0].with_state(|s| registrations(s, 1)).remove(0);
        for a in &apps {
            a.submit(tx.clone()).unwrap();
        }
        let start = context.current();
        while apps.iter().any(|a| a.view().mempool > 0) {
            context.sleep(Duration::from_millis(50)).await;
        }
        let waited = context.current().duration_since(start).unwrap();
        assert!(waited < Duration::from_secs(5), "tx waited {waited:?}");
    });
}

#[test]
fn finalized_blocks_are_streamed_in_height_order() {
    let config = seeded(5);
    deterministic::Runner::new(config).start(|context| async move {
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<_> = (0..4).map(|_| app(&genesis)).collect();
        let mut events = apps[0].subscribe();
        start_all(&context, &oracle, &keys, &apps).await;
        while apps[0].view().height < 10 {
            context.sleep(Duration::from_millis(50)).await;
        }
        let roots = apps[0].finalized_roots();
        for expected in 1..=10u64 {
            match events.try_recv().unwrap() {
                quartier_node::StreamEvent::Block { height, root, .. } => {
                    assert_eq!(height, expected);
                    assert_eq!(root, roots[&height].to_string());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
}

/// Transactions that trickle in while blocks are being built: a proposer that
/// builds on a not yet finalized block holding a tx must not reject that tx as
/// a replay (its clients would give up an order that is in fact on chain).
#[test]
fn a_tx_in_an_unfinalized_parent_is_not_rejected() {
    let config = seeded(23);
    deterministic::Runner::new(config).start(|context| async move {
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<_> = (0..4).map(|_| app(&genesis)).collect();
        start_all(&context, &oracle, &keys, &apps).await;
        let txs = apps[0].with_state(|s| registrations(s, 40));
        for t in &txs {
            submit_to_all(&apps, std::slice::from_ref(t));
            context.sleep(Duration::from_millis(15)).await;
        }
        while apps.iter().any(|a| {
            txs.iter().any(|t| {
                !matches!(
                    a.tx_status(&t.hash()),
                    quartier_node::TxStatus::Finalized { .. }
                )
            })
        }) {
            context.sleep(Duration::from_millis(50)).await;
        }
        for (i, a) in apps.iter().enumerate() {
            assert_eq!(
                a.metrics().rejected_txs,
                0,
                "validator {i} rejected a valid tx"
            );
            assert_eq!(a.view().mempool, 0);
        }
    });
}

/// Mode A's one-time transactions have no nonce: a proposer building on a
/// not yet finalized block that already holds one finds its key image used
/// and must not reject it for good (its meter would give up an order that
/// is on chain, release the inputs and then spend them twice).
#[test]
fn a_one_time_tx_in_an_unfinalized_parent_is_not_rejected() {
    use quartier_ledger::TxBody;
    use quartier_types::{RegionId, Side};
    use rand_core::SeedableRng as _;
    let config = seeded(29);
    deterministic::Runner::new(config).start(|context| async move {
        let apps = start_shielded(&context, |_| {}).await;
        let meters: Vec<_> = (0..16).map(|i| key(&format!("meter-{i}"))).collect();
        let registrations: Vec<_> = apps[0].with_state(|s| {
            meters
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let body = TxBody::RegisterMeter {
                        meter: id(m),
                        region: RegionId(1),
                        role: quartier_ledger::MeterRole::Prosumer,
                        pv_watts: 10_000,
                    };
                    tx(s, &key("dso"), i as u64, body)
                })
                .collect()
        });
        submit_to_all(&apps, &registrations);
        while !registrations
            .iter()
            .all(|t| apps.iter().all(|a| is_final(a, t)))
        {
            context.sleep(Duration::from_millis(50)).await;
        }
        // (Every validator knows the meters: a mempool checks rings against
        // its own finalized registry.) Every meter's cover orders (zero energy, no funds) for the next
        // slot, each from a fresh one-time key.
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([5; 32]);
        let orders: Vec<_> = apps[0].with_state(|s| {
            let mut orders = Vec::new();
            for (i, m) in meters.iter().enumerate() {
                for side in [Side::Buy, Side::Sell] {
                    let secret = [i as u8 + 1 + 100 * u8::from(side == Side::Sell); 32];
                    orders.push(cover_order(s, m, side, 10_000, &secret, &mut rng));
                }
            }
            orders
        });
        for t in &orders {
            submit_to_all(&apps, std::slice::from_ref(t));
            context.sleep(Duration::from_millis(15)).await;
        }
        while apps.iter().any(|a| orders.iter().any(|t| !is_final(a, t))) {
            for (i, a) in apps.iter().enumerate() {
                let rejected: Vec<_> = orders
                    .iter()
                    .map(|t| a.tx_status(&t.hash()))
                    .filter(|s| matches!(s, quartier_node::TxStatus::Rejected { .. }))
                    .collect();
                assert!(
                    rejected.is_empty() && a.metrics().rejected_txs == 0,
                    "validator {i} rejected valid one-time txs: {rejected:?}"
                );
            }
            context.sleep(Duration::from_millis(50)).await;
        }
        for a in &apps {
            assert_eq!(a.view().mempool, 0);
        }
    });
}

/// The keep-pending rule for one-time transactions must not keep junk: a
/// transfer from a fresh key whose inputs repeat one key image (refused
/// before any signature is checked) and whose allowance is garbage is
/// refused for good — by every mempool on arrival, so no proposal ever
/// verifies it — and honest transactions sent meanwhile finalize.
#[test]
fn junk_one_time_txs_that_fail_on_a_key_image_are_refused_for_good() {
    use quartier_ledger::{Allowance, ShieldedInput, ShieldedTransfer, Tx, TxBody};
    use quartier_shielded::authorise::Authorisation;
    use quartier_types::{RegionId, Slot};
    let config = seeded(31);
    deterministic::Runner::new(config).start(|context| async move {
        let apps = start_shielded(&context, |g| {
            g.allocations = vec![(id(&key("utility")), quartier_types::Money::new(4_000))];
        })
        .await;
        let chain_id = apps[0].with_state(|s| s.chain_id());
        // A pool of 4 outputs, so the junk's rings resolve and it fails on its
        // repeated key image.
        let mut rng = {
            use rand_core::SeedableRng as _;
            rand_chacha::ChaCha20Rng::from_seed([6; 32])
        };
        let to = quartier_shielded::keys::WalletKeys::from_seed(&[9; 32]).address();
        let shields: Vec<_> = apps[0].with_state(|s| {
            (0..4u64)
                .map(|n| {
                    let (output, received) =
                        quartier_shielded::output::create(&to, 1_000, &mut rng).unwrap();
                    let body = TxBody::Shield {
                        amount: quartier_types::Money::new(1_000),
                        output,
                        mask: *received.mask,
                    };
                    tx(s, &key("utility"), n, body)
                })
                .collect()
        });
        submit_to_all(&apps, &shields);
        while apps[0].with_state(|s| s.pool().len()) < 4 {
            context.sleep(Duration::from_millis(50)).await;
        }
        let junk: Vec<_> = (0..64u8)
            .map(|i| {
                let input = ShieldedInput {
                    ring: vec![0, 1, 2, 3],
                    key_image: [i; 32],
                    pseudo_out: [0; 32],
                    signature: vec![0; 32],
                };
                let transfer = ShieldedTransfer {
                    inputs: vec![input.clone(), input],
                    outputs: Vec::new(),
                    range_proof: Vec::new(),
                };
                let allowance = Allowance {
                    region: RegionId(1),
                    slot: Slot(0),
                    authorisation: Authorisation {
                        key_image: [i.wrapping_add(100); 32],
                        pseudo_out: [0; 32],
                        signature: vec![1; 64],
                    },
                };
                Tx::one_time(
                    chain_id,
                    TxBody::ShieldedTransfer {
                        transfer,
                        allowance,
                    },
                    &[i.wrapping_add(1); 32],
                )
            })
            .collect();
        for a in &apps {
            for t in &junk {
                let refused = a.submit(t.clone());
                assert!(
                    matches!(
                        &refused,
                        Err(quartier_node::MempoolError::Invalid(e)) if e.to_string().contains("key image")
                    ),
                    "{refused:?}"
                );
            }
        }
        let honest = apps[0].with_state(|s| registrations(s, 4));
        submit_to_all(&apps, &honest);
        let all: Vec<usize> = (0..apps.len()).collect();
        while honest.iter().any(|t| {
            !matches!(
                apps[0].tx_status(&t.hash()),
                quartier_node::TxStatus::Finalized { .. }
            )
        }) {
            context.sleep(Duration::from_millis(50)).await;
        }
        let height = apps[0].view().height;
        wait_for_height(&context, &apps, &all, height + 3).await;
        for (i, a) in apps.iter().enumerate() {
            let kept = junk
                .iter()
                .filter(|t| matches!(a.tx_status(&t.hash()), quartier_node::TxStatus::Pending))
                .count();
            assert_eq!(
                kept,
                0,
                "validator {i} keeps junk pending: {:?}",
                a.tx_status(&junk[0].hash())
            );
        }
    });
}

/// A registered meter floods the mempool with one-time transactions past
/// the bound: 64 valid orders of its own for one slot and side (one key
/// image: the ledger applies at most one), and an attacker sends 63 false
/// orders carrying the other meters' key images ahead of their honest
/// orders. Every mempool admits one order and refuses the other 63 (the
/// key image is pending) and every false one (its ring signature fails);
/// the honest orders, sent after the false ones, are admitted and
/// finalize; once the one order is final, another under its key image is
/// refused on arrival too.
#[test]
fn a_flood_of_one_time_txs_past_the_bound_is_refused_by_the_mempool() {
    use quartier_ledger::{ShieldedPolicy, Tx, TxBody};
    use quartier_node::MempoolError;
    use quartier_types::{Price, Side};
    use rand_core::SeedableRng as _;
    let config = seeded(37);
    deterministic::Runner::new(config).start(|context| async move {
        let keys = validator_keys(4);
        let mut genesis = genesis(&keys);
        genesis.shielded = Some(ShieldedPolicy { ring_size: 4 });
        let oracle = network(&context, &keys).await;
        // Validator 0 keeps its blocks (read back below).
        let dir = fresh_dir("one-time-flood");
        let logged = quartier_node::LedgerApp::open(
            quartier_ledger::State::from_genesis(genesis.clone()).unwrap(),
            quartier_node::Mempool::new(quartier_node::MempoolConfig::default()),
            quartier_node::storage::BlockLog::open(&dir.join("validator-0.redb")).unwrap(),
        )
        .unwrap();
        let apps: Vec<_> = std::iter::once(logged)
            .chain((1..4).map(|_| app(&genesis)))
            .collect();
        start_all(&context, &oracle, &keys, &apps).await;
        // Meters `meter-0` … `meter-7`, households without PV.
        let meters: Vec<_> = (0..8).map(|i| key(&format!("meter-{i}"))).collect();
        let registrations = apps[0].with_state(|s| registrations(s, meters.len()));
        submit_to_all(&apps, &registrations);
        while !registrations
            .iter()
            .all(|t| apps.iter().all(|a| is_final(a, t)))
        {
            context.sleep(Duration::from_millis(50)).await;
        }
        // Cover buys of the next slot signed by meter `m` (zero energy, no
        // funds), each from a fresh one-time key.
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
        let mut next_secret = 0u32;
        let mut orders_of = |m: usize, n: usize| -> Vec<quartier_ledger::SignedTx> {
            apps[0].with_state(|s| {
                (0..n)
                    .map(|k| {
                        next_secret += 1;
                        let mut secret = [0xf1; 32];
                        secret[..4].copy_from_slice(&next_secret.to_le_bytes());
                        cover_order(
                            s,
                            &meters[m],
                            Side::Buy,
                            10_000 + k as u64,
                            &secret,
                            &mut rng,
                        )
                    })
                    .collect()
            })
        };
        let flood = orders_of(0, 64);
        // Meters 1–7's honest orders, and false ones sent first that carry
        // the honest orders' key images (a valid point, a signature of the
        // right length) under a limit the ring signature does not cover:
        // they must neither enter nor block the honest ones.
        let honest: Vec<_> = (1..8).flat_map(|m| orders_of(m, 1)).collect();
        let false_orders: Vec<_> = honest
            .iter()
            .flat_map(|h| {
                (1..=9u64).map(move |k| {
                    let mut t = h.clone();
                    let TxBody::PlaceShieldedOrder { order } = &mut t.tx.body else {
                        unreachable!()
                    };
                    order.limit = Price::new(order.limit.get() + k);
                    let secret = [0xe0 + k as u8; 32];
                    Tx::one_time(t.tx.chain_id, t.tx.body, &secret)
                })
            })
            .collect();
        for (i, a) in apps.iter().enumerate() {
            let admitted = flood
                .iter()
                .filter(|t| a.submit((*t).clone()).is_ok())
                .count();
            assert_eq!(
                admitted, 1,
                "validator {i} admitted {admitted} orders under one key image"
            );
            for t in flood.iter().skip(1) {
                assert_eq!(a.submit(t.clone()), Err(MempoolError::KeyImagePending));
            }
            for t in &false_orders {
                assert_eq!(
                    a.submit(t.clone()),
                    Err(MempoolError::Invalid(
                        quartier_ledger::TxError::InvalidRingSignature
                    ))
                );
            }
            for t in &honest {
                a.submit(t.clone()).unwrap();
            }
            assert_eq!(a.view().mempool, 1 + honest.len(), "validator {i}");
        }
        while !honest
            .iter()
            .chain(&flood[..1])
            .all(|t| is_final(&apps[0], t))
        {
            context.sleep(Duration::from_millis(50)).await;
        }
        // The blocks do not tell the orders' arrival order (flood[0], then
        // meters 1–7 in turn): the shielded orders of a block are in the
        // order of their hashes.
        let mut shielded_in_blocks = 0;
        for height in 1..=apps[0].view().height {
            let Some(block) = apps[0].finalized_block(height) else {
                continue;
            };
            let hashes: Vec<_> = block
                .txs()
                .iter()
                .filter(|t| t.tx.body.is_one_time())
                .map(|t| t.hash())
                .collect();
            shielded_in_blocks += hashes.len();
            assert!(hashes.is_sorted(), "block {height}: arrival order shows");
        }
        assert_eq!(shielded_in_blocks, 1 + honest.len());
        // Its key image is used: another order under it is refused on
        // arrival, by every validator that finalized it.
        let all: Vec<usize> = (0..apps.len()).collect();
        let height = apps[0].view().height;
        wait_for_height(&context, &apps, &all, height).await;
        for a in &apps {
            assert_eq!(
                a.submit(flood[1].clone()),
                Err(MempoolError::Invalid(
                    quartier_ledger::TxError::DuplicateOrder
                ))
            );
            assert_eq!(a.view().mempool, 0);
        }
    });
}
