//! Ledger throughput: order transactions applied (single and batch signature
//! verification), slot settlement, and the state commit of a block.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use quartier_ledger::{
    BlockContext, Genesis, MeterRole, SignedTx, State, Tx, TxBody, apply, apply_verified, end_block,
};
use quartier_types::hash;
use quartier_types::{
    AccountId, Energy, Height, Money, Price, RegionId, RegionParams, Side, Slot, Timestamp,
};
use std::hint::black_box;

const SLOT_MS: u64 = 900_000;
const REGION: RegionId = RegionId(1);

fn key(label: &str, i: usize) -> SigningKey {
    SigningKey::from_bytes(
        &hash::tagged("QUARTIER_BENCH_KEY", &[label.as_bytes(), &i.to_le_bytes()]).0,
    )
}

fn id(k: &SigningKey) -> AccountId {
    AccountId(k.verifying_key().to_bytes())
}

fn sign(state: &State, k: &SigningKey, nonce: u64, body: TxBody) -> SignedTx {
    Tx {
        chain_id: state.chain_id(),
        signer: id(k),
        nonce,
        body,
    }
    .sign(k)
}

/// A chain with `n` funded meters (half prosumers) in one region.
fn market(n: usize) -> (State, Vec<SigningKey>) {
    let (dso, utility) = (key("dso", 0), key("utility", 0));
    let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500))
        .expect("valid tariffs");
    let mut state = State::from_genesis(Genesis {
        regions: vec![(REGION, params)],
        slot_ms: SLOT_MS,
        ..Genesis::new(
            "bench",
            id(&dso),
            id(&utility),
            vec![id(&key("validator", 0))],
        )
    })
    .expect("valid genesis");
    let meters: Vec<SigningKey> = (0..n).map(|i| key("meter", i)).collect();
    let ctx = BlockContext {
        height: Height(1),
        time: Timestamp(0),
    };
    for (i, m) in meters.iter().enumerate() {
        let prosumer = i % 2 == 0;
        let register = TxBody::RegisterMeter {
            meter: id(m),
            region: REGION,
            role: if prosumer {
                MeterRole::Prosumer
            } else {
                MeterRole::Consumer
            },
            pv_watts: if prosumer { 10_000 } else { 0 },
        };
        let mint = TxBody::Mint {
            to: id(m),
            amount: Money::new(100_000_000_000),
        };
        let register = sign(&state, &dso, i as u64, register);
        apply(&mut state, &register, &ctx).expect("register");
        let mint = sign(&state, &utility, i as u64, mint);
        apply(&mut state, &mint, &ctx).expect("mint");
    }
    state.commit().expect("commit");
    (state, meters)
}

/// One order per meter for slot 0: prosumers sell, consumers buy.
fn orders(state: &State, meters: &[SigningKey]) -> Vec<SignedTx> {
    meters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let side = if i % 2 == 0 { Side::Sell } else { Side::Buy };
            let body = TxBody::PlaceOrder {
                region: REGION,
                slot: Slot(0),
                side,
                limit: Price::new(4_000 + (i as u64 * 7_919) % 16_750),
                energy: Energy::new(1 + (i as u64 * 104_729) % 2_000),
            };
            sign(state, m, 0, body)
        })
        .collect()
}

fn in_gate() -> BlockContext {
    BlockContext {
        height: Height(2),
        time: Timestamp(SLOT_MS + 1_000),
    }
}

fn bench_apply(c: &mut Criterion) {
    let n = 1_000;
    let (state, meters) = market(n);
    let txs = orders(&state, &meters);
    let ctx = in_gate();
    let mut group = c.benchmark_group("ledger::apply");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("place_order/verify=single", n), |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                for tx in &txs {
                    apply(&mut s, tx, &ctx).expect("valid order");
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    // As a validator executes a block of transactions its mempool admitted:
    // each signature verified once (the memo is shared by the state's
    // copies, so only the first iteration verifies).
    group.bench_function(BenchmarkId::new("place_order/verify=remembered", n), |b| {
        b.iter_batched(
            || (state.clone(), txs.clone()),
            |(mut s, txs)| {
                for tx in txs {
                    let tx = s.verify_tx(tx).expect("valid signature");
                    apply_verified(&mut s, &tx, &ctx).expect("valid order");
                }
                s
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_settle(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger::settle");
    group.sample_size(20);
    for n in [1_000usize, 10_000] {
        let (mut state, meters) = market(n);
        let ctx = in_gate();
        for tx in orders(&state, &meters) {
            apply(&mut state, &tx, &ctx).expect("valid order");
        }
        state.commit().expect("commit");
        let close = BlockContext {
            height: Height(3),
            time: Timestamp(2 * SLOT_MS),
        };
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("orders", n), |b| {
            b.iter_batched(
                || state.clone(),
                |mut s| {
                    let events = end_block(&mut s, &close);
                    assert_eq!(events.len(), 1);
                    black_box(s)
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn bench_commit(c: &mut Criterion) {
    let n = 1_000;
    let (mut state, meters) = market(n);
    let ctx = in_gate();
    for tx in orders(&state, &meters) {
        apply(&mut state, &tx, &ctx).expect("valid order");
    }
    let mut group = c.benchmark_group("ledger::commit");
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("block/txs", n), |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| s.commit().expect("commit"),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_apply, bench_settle, bench_commit);
criterion_main!(benches);
