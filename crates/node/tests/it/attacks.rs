//! Attacks on a validator through the ways in: its API's mempool, and blocks
//! a Byzantine leader proposes. Each is run as the attacker would, on the
//! deterministic runtime, and honest transactions sent during the attack
//! must finalize within a stated bound.

use crate::harness::*;
use commonware_consensus::Application;
use commonware_consensus::marshal::ancestry::Ancestry;
use commonware_consensus::simplex::types::Context;
use commonware_cryptography::{Digested, Digestible as _, ed25519};
use commonware_runtime::{Clock as _, Runner as _, Supervisor as _, deterministic};
use futures::StreamExt as _;
use quartier_ledger::{SignedTx, TxBody};
use quartier_node::{Block, BlockDigest, LedgerApp, Scheme};
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
/// again. Now the far-future and gapped ones are refused (a key the chain
/// does not know must send its nonces in order), the failing ones, 1 024 at
/// most, leave with their first failure, and the accounts take turns: the
/// DSO's registrations sent after the flood are final within
/// [`HONEST_WITHIN_BLOCKS`] blocks, and so is a newcomer's first
/// transaction sent after the flood (the newcomers' places were not held).
#[test]
fn future_nonce_and_junk_floods_do_not_keep_honest_txs_out() {
    use quartier_node::MempoolError;
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
        let remembered = apps[0].with_state(|s| s.remembered_signatures());
        for a in &apps {
            for t in &future {
                assert!(matches!(
                    a.submit(t.clone()),
                    Err(MempoolError::TooFarAhead { .. })
                ));
            }
            for t in &gapped {
                assert!(matches!(
                    a.submit(t.clone()),
                    Err(MempoolError::Gap { .. } | MempoolError::TooFarAhead { .. })
                ));
            }
            let admitted = failing
                .iter()
                .filter(|t| a.submit((*t).clone()).is_ok())
                .count();
            assert_eq!(admitted, 1_024, "the newcomers' share");
        }
        // Fresh keys' signatures are not remembered (they cost nothing to
        // make and fill the memo; found by review).
        assert_eq!(
            apps[0].with_state(|s| s.remembered_signatures()),
            remembered
        );
        let honest = apps[0].with_state(|s| registrations(s, 12));
        submit_to_all(&apps, &honest);
        final_within_bound(&context, &apps, &honest).await;
        // The failing ones were proposed, refused and gone, and a new key's
        // first transaction is admitted (that it would fail in the ledger,
        // a vote of a non-validator, does not matter to admission).
        let all: Vec<usize> = (0..apps.len()).collect();
        let height = apps[0].view().height + 2;
        wait_for_height(&context, &apps, &all, height).await;
        for a in &apps {
            assert_eq!(a.view().mempool, 0, "junk left pending");
        }
        let newcomer = apps[0].with_state(|s| {
            let body = TxBody::Vote {
                proposal: 0,
                approve: true,
            };
            tx(s, &key("newcomer"), 0, body)
        });
        for a in &apps {
            a.submit(newcomer.clone()).unwrap();
        }
        // None of the junk applied.
        for a in &apps {
            for t in future.iter().chain(&gapped).chain(&failing) {
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

/// How a Byzantine leader dates its blocks.
#[derive(Clone, Copy, Debug)]
enum Stamp {
    /// By its clock, as an honest leader does.
    Clock,
    /// Its parent's time (back-dated as far as an idle chain allows).
    Parent,
    /// An hour ahead of its clock.
    HourAhead,
}

/// What a Byzantine leader slips into each block it proposes.
#[derive(Clone, Copy, Debug)]
enum Poison {
    /// A transaction larger than any mempool admits (a committee vote
    /// naming 300 members).
    Oversized,
    /// The DSO's registration of a meter, signed with a commitment `R`
    /// that has a component of order two: `verify_strict` refuses it, a
    /// batch check took about every second such signature.
    SmallOrderR,
}

impl Poison {
    /// The poisoned transaction against `state`.
    fn tx(self, state: &quartier_ledger::State) -> SignedTx {
        let dso = key("dso");
        let nonce = state.account(&id(&dso)).nonce;
        match self {
            Poison::Oversized => {
                let body = TxBody::ActivateCommittee {
                    members: (0..300u16)
                        .map(|i| {
                            let mut a = [0u8; 32];
                            a[..2].copy_from_slice(&i.to_le_bytes());
                            quartier_types::AccountId(a)
                        })
                        .collect(),
                    group_key: quartier_enclave_proto::committee::GroupPublicKey([0; 32]),
                    signature: [0; 64],
                };
                tx(state, &dso, nonce, body)
            }
            Poison::SmallOrderR => {
                let body = TxBody::RegisterMeter {
                    meter: id(&key("smuggled-meter")),
                    region: quartier_types::RegionId(1),
                    role: quartier_ledger::MeterRole::Consumer,
                    pv_watts: 0,
                };
                let unsigned = quartier_ledger::Tx {
                    chain_id: state.chain_id(),
                    signer: id(&dso),
                    nonce,
                    body,
                };
                sign_with_torsion(unsigned, &dso)
            }
        }
    }
}

/// A Byzantine leader: it builds on the finalized tip (enough on an idle
/// chain), dates its blocks as `stamp` says and puts `poison` in each; it
/// keeps the poisoned transactions it proposed.
#[derive(Clone)]
struct Byzantine {
    app: LedgerApp,
    stamp: Stamp,
    poison: Option<Poison>,
    poisoned: std::sync::Arc<std::sync::Mutex<Vec<SignedTx>>>,
}

impl Byzantine {
    fn new(app: &LedgerApp, stamp: Stamp, poison: Option<Poison>) -> Byzantine {
        Byzantine {
            app: app.clone(),
            stamp,
            poison,
            poisoned: std::sync::Arc::default(),
        }
    }
}

impl Application<deterministic::Context> for Byzantine {
    type SigningScheme = Scheme;
    type Context = Context<BlockDigest, ed25519::PublicKey>;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        (runtime, _): (deterministic::Context, Self::Context),
        mut ancestry: impl Ancestry<Self::Block>,
        _: (),
    ) -> Option<Digested<Self::Block>> {
        let parent = ancestry.next().await?;
        let mut state = quartier_ledger::State::clone(&self.app.finalized_state());
        if state.root() != parent.inner().state_root() {
            return None;
        }
        let now = runtime
            .current()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        let now = u64::try_from(now.as_millis()).ok()?;
        let time_ms = match self.stamp {
            Stamp::Clock => now.max(parent.inner().time_ms()),
            Stamp::Parent => parent.inner().time_ms(),
            Stamp::HourAhead => now + 3_600_000,
        };
        let height = parent.inner().height().next();
        let context = quartier_ledger::BlockContext {
            height: quartier_types::Height(height.get()),
            time: quartier_types::Timestamp(time_ms),
        };
        let txs: Vec<SignedTx> = self.poison.map(|p| p.tx(&state)).into_iter().collect();
        let outcome = quartier_ledger::execute_block(&mut state, &context, txs.clone()).ok()?;
        let block = Block::new(parent.digest(), height, time_ms, outcome.root, txs);
        self.poisoned
            .lock()
            .unwrap()
            .extend(block.txs().iter().cloned());
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        context: (deterministic::Context, Self::Context),
        ancestry: impl Ancestry<Self::Block>,
    ) -> bool {
        self.app.verify(context, ancestry).await
    }
}

/// Runs 4 validators with 30-second heartbeats, validator 2 a [`Byzantine`]
/// leader dating its blocks by its parent (or an hour ahead), and a DSO
/// registration sent at 45 s; returns how far behind the finalizing clock
/// each finalized block's time was (in ms), and whether the registration
/// was final within the bound.
fn run_with_stamping_leader(ahead: bool) -> Vec<u64> {
    deterministic::Runner::new(seeded(43)).start(|context| async move {
        let keys = validator_keys(4);
        let genesis = genesis(&keys);
        let oracle = network(&context, &keys).await;
        let apps: Vec<LedgerApp> = (0..4)
            .map(|_| app(&genesis).with_idle_block_interval(Duration::from_secs(30)))
            .collect();
        for (i, a) in apps.iter().enumerate() {
            let child = context.child("validator").with_attribute("index", i);
            if i == 2 {
                let stamp = if ahead {
                    Stamp::HourAhead
                } else {
                    Stamp::Parent
                };
                let leader = Byzantine::new(a, stamp, None);
                start_validator_with(child, &oracle, &keys, i, a.clone(), leader, None).await;
            } else {
                start_validator(child, &oracle, &keys, i, a.clone()).await;
            }
        }
        let mut finalized = apps[0].subscribe();
        let start = context.current();
        let mut lags = Vec::new();
        let mut sent = None;
        while context.current().duration_since(start).unwrap() < Duration::from_secs(180) {
            let now_ms = context
                .current()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            while let Ok(event) = finalized.try_recv() {
                if let quartier_node::StreamEvent::Block {
                    height, time_ms, ..
                } = event
                {
                    lags.push(now_ms.saturating_sub(time_ms));
                    // Never an hour ahead of the finalizing clock either.
                    assert!(time_ms <= now_ms + 2_000, "block {height} from the future");
                }
            }
            if sent.is_none()
                && context.current().duration_since(start).unwrap() > Duration::from_secs(45)
            {
                let honest = apps[0].with_state(|s| registrations(s, 1));
                submit_to_all(&apps, &honest);
                sent = Some(honest);
            }
            context.sleep(Duration::from_millis(50)).await;
        }
        let honest = sent.unwrap();
        final_within_bound(&context, &apps, &honest).await;
        lags
    })
}

/// Back-dating: on a chain idle for up to 30 s, the Byzantine leader stamps
/// its parent's time. Before, its blocks were finalized up to 30 s behind
/// every honest clock (a leader could take orders for a slot whose gate had
/// passed); now every finalized block's time is within `MAX_BLOCK_LAG` (and
/// a second of finality) of the clock that finalized it.
#[test]
fn a_leader_that_back_dates_its_blocks_is_outvoted() {
    let lags = run_with_stamping_leader(false);
    let bound = quartier_node::MAX_BLOCK_LAG.as_millis() as u64 + 1_000;
    let worst = lags.iter().max().copied().unwrap_or(0);
    assert!(lags.len() >= 5, "{} blocks", lags.len());
    assert!(
        worst <= bound,
        "a block {worst} ms behind was finalized ({lags:?})"
    );
}

/// The other way: a leader stamping its blocks an hour ahead. Before, each
/// verifier waited in `verify` for its clock to catch up (the view timed out
/// meanwhile, so this test passed then too: what changed is that the
/// verifier refuses at once instead of holding the task for an hour). The
/// chain stays live, no block from the future is finalized, and the honest
/// registration is final within the bound.
#[test]
fn a_leader_that_dates_its_blocks_ahead_is_outvoted() {
    let lags = run_with_stamping_leader(true);
    assert!(lags.len() >= 5, "{} blocks", lags.len());
}

/// 50 000 false shielded orders, each from a fresh one-time key (so no
/// per-account quota applies) with a valid signature and a ring signature
/// that does not verify (a real meter's authorisation, under another
/// signer), sent to validator 0 in bursts while the chain runs, with honest
/// transactions sent during the flood: the DSO's registrations and three
/// meters' shielded orders. Each false order costs its ring verification
/// at admission, outside the chain's lock, and is refused; none enters a
/// mempool, so no proposal verifies one; the honest transactions are final
/// within [`HONEST_WITHIN_BLOCKS`] blocks. And the false orders' valid
/// signatures are not remembered (before, each took a place in the
/// signature memo, pushing out the honest transactions' signatures that
/// proposals and blocks would then verify again).
#[test]
fn fifty_thousand_false_shielded_orders_do_not_keep_honest_txs_out() {
    use quartier_ledger::TxError;
    use quartier_node::MempoolError;
    use rand_core::SeedableRng as _;
    const FALSE_ORDERS: usize = 50_000;
    const BURST: usize = 2_500;
    deterministic::Runner::new(seeded(43)).start(|context| async move {
        let apps = start_shielded(&context, |_| {}).await;
        let meters: Vec<_> = (0..4).map(|i| key(&format!("meter-{i}"))).collect();
        let registered = apps[0].with_state(|s| registrations(s, meters.len()));
        submit_to_all(&apps, &registered);
        final_within_bound(&context, &apps, &registered).await;
        while !registered
            .iter()
            .all(|t| apps.iter().all(|a| is_final(a, t)))
        {
            context.sleep(Duration::from_millis(50)).await;
        }
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([43; 32]);
        // Meter 0's genuine order, re-signed by fresh one-time keys: the
        // ring signature binds the signer, so each copy is false.
        let template = apps[0].with_state(|s| {
            cover_order(
                s,
                &meters[0],
                quartier_types::Side::Buy,
                9_000,
                &[0xa0; 32],
                &mut rng,
            )
        });
        let false_order = |i: usize| {
            let mut secret = [0xa1; 32];
            secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
            quartier_ledger::Tx::one_time(template.tx.chain_id, template.tx.body.clone(), &secret)
        };
        let honest_orders: Vec<_> = apps[0].with_state(|s| {
            (1..4)
                .map(|m| {
                    cover_order(
                        s,
                        &meters[m],
                        quartier_types::Side::Buy,
                        9_000,
                        &[0xb0 + m as u8; 32],
                        &mut rng,
                    )
                })
                .collect()
        });
        let more_meters: Vec<_> = apps[0].with_state(|s| {
            (4..12)
                .map(|i| {
                    let body = TxBody::RegisterMeter {
                        meter: id(&key(&format!("meter-{i}"))),
                        region: quartier_types::RegionId(1),
                        role: quartier_ledger::MeterRole::Consumer,
                        pv_watts: 0,
                    };
                    tx(s, &key("dso"), i as u64, body)
                })
                .collect()
        });
        let honest: Vec<_> = honest_orders.iter().chain(&more_meters).cloned().collect();
        let remembered_before = apps[0].with_state(|s| s.remembered_signatures());
        let mut sent = 0;
        while sent < FALSE_ORDERS {
            for i in sent..sent + BURST {
                assert_eq!(
                    apps[0].submit(false_order(i)),
                    Err(MempoolError::Invalid(TxError::InvalidRingSignature)),
                    "false order {i}"
                );
            }
            sent += BURST;
            if sent == BURST {
                // The honest ones, during the flood.
                submit_to_all(&apps, &honest);
            }
            assert!(
                apps[0].view().mempool <= honest.len(),
                "a false order admitted"
            );
            // Between bursts the chain runs (the attacker's pace, not a
            // wait for anything).
            context.sleep(Duration::from_millis(100)).await;
        }
        final_within_bound(&context, &apps, &honest).await;
        let remembered = apps[0].with_state(|s| s.remembered_signatures()) - remembered_before;
        assert!(
            remembered <= honest.len(),
            "{remembered} signatures remembered for {} honest transactions",
            honest.len()
        );
        // None is pending or final anywhere.
        for i in (0..FALSE_ORDERS).step_by(97) {
            let hash = false_order(i).hash();
            for a in &apps {
                assert!(matches!(
                    a.tx_status(&hash),
                    quartier_node::TxStatus::Unknown
                ));
            }
        }
    });
}

/// Validator 2 leads its views with a poisoned block: a transaction over
/// `MAX_TX_BYTES` (the block does not decode at the others; that vote would
/// fail in the ledger too, so what this case shows is that the chain goes
/// on: the decoding rule itself is `block.rs`'s unit test, as no valid
/// transaction is that large), or a signature only a batch check takes (the
/// others verify it strictly and refuse the block). The chain goes on without its blocks, the DSO's registrations
/// sent meanwhile are final within [`HONEST_WITHIN_BLOCKS`] blocks, and
/// neither poison is ever final (no smuggled meter, no 300-member vote).
#[test]
fn a_leader_poisoning_its_blocks_is_outvoted() {
    for (seed, poison) in [(47, Poison::Oversized), (53, Poison::SmallOrderR)] {
        deterministic::Runner::new(seeded(seed)).start(|context| async move {
            let keys = validator_keys(4);
            let genesis = genesis(&keys);
            let oracle = network(&context, &keys).await;
            let apps: Vec<LedgerApp> = (0..4).map(|_| app(&genesis)).collect();
            let leader = Byzantine::new(&apps[2], Stamp::Clock, Some(poison));
            let poisoned = leader.poisoned.clone();
            for (i, a) in apps.iter().enumerate() {
                let child = context.child("validator").with_attribute("index", i);
                if i == 2 {
                    start_validator_with(child, &oracle, &keys, i, a.clone(), leader.clone(), None)
                        .await;
                } else {
                    start_validator(child, &oracle, &keys, i, a.clone()).await;
                }
            }
            wait_for_height(&context, &apps, &[0, 1, 3], 2).await;
            let honest = apps[0].with_state(|s| registrations(s, 8));
            submit_to_all(&apps, &honest);
            final_within_bound(&context, &apps, &honest).await;
            let height = apps[0].view().height + 4;
            wait_for_height(&context, &apps, &[0, 1, 3], height).await;
            // Validator 2 proposed poisoned blocks, and none of its
            // transactions is final anywhere.
            let poisoned = poisoned.lock().unwrap().clone();
            assert!(!poisoned.is_empty(), "{poison:?}: validator 2 never led");
            for t in &poisoned {
                for a in [&apps[0], &apps[1], &apps[3]] {
                    assert!(
                        !is_final(a, t),
                        "{poison:?}: a poisoned transaction is final"
                    );
                }
            }
            for a in [&apps[0], &apps[1], &apps[3]] {
                a.with_state(|s| {
                    assert!(
                        s.meter(&id(&key("smuggled-meter"))).is_none(),
                        "{poison:?}: the smuggled meter is registered"
                    );
                    assert!(
                        s.committee().is_none(),
                        "{poison:?}: a committee took office"
                    );
                });
            }
        });
    }
}
