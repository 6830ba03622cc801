//! Clearing time for random books of 100, 10 000 and 1 000 000 orders.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quartier_auction::clear;
use quartier_types::{Energy, Order, Price, RegionParams, Side};
use std::hint::black_box;

/// A deterministic book: a small linear congruential generator, so the bench
/// needs no RNG crate and every run clears the same orders.
fn book(n: usize) -> Vec<Order> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    (0..n)
        .map(|_| Order {
            side: if next() % 2 == 0 {
                Side::Buy
            } else {
                Side::Sell
            },
            limit: Price::new(4_000 + next() % 16_751),
            energy: Energy::new(next() % 3_000),
        })
        .collect()
}

fn bench_clear(c: &mut Criterion) {
    let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::new(500))
        .expect("valid tariffs");
    let mut group = c.benchmark_group("auction::clear");
    for n in [100usize, 10_000, 1_000_000] {
        if n >= 1_000_000 {
            group.sample_size(10);
        }
        let orders = book(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("orders", n), &orders, |b, orders| {
            b.iter(|| clear(black_box(&params), black_box(orders)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_clear);
criterion_main!(benches);
