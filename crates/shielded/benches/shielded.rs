//! Mode A costs of a shielded order's cryptography: a CLSAG over rings of
//! 8 / 16 / 37 / 64 members (signing and verifying), a Bulletproof+ for one
//! output (proving and verifying), and a light client's scan per output.
//! Sizes are printed once to stderr.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use curve25519_dalek::Scalar;
use quartier_shielded::keys::WalletKeys;
use quartier_shielded::output::{Output, create};
use quartier_shielded::range;
use quartier_shielded::spend::{Input, RingMember, sign, verify};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;

fn member(o: &Output) -> RingMember {
    RingMember {
        key: o.key,
        commitment: o.commitment,
    }
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let me = WalletKeys::from_seed(&[1; 32]);
    let other = WalletKeys::from_seed(&[2; 32]);
    let decoys: Vec<Output> = (0..64)
        .map(|i| {
            create(&other.address(), i, &mut rng)
                .expect("valid address")
                .0
        })
        .collect();
    let (mine, _) = create(&me.address(), 5_000, &mut rng).expect("valid address");
    let received = me.view_key().scan(&mine).expect("mine");
    let mut group = c.benchmark_group("shielded");
    for k in [8usize, 16, 37, 64] {
        let mut ring: Vec<RingMember> = decoys.iter().take(k - 1).map(member).collect();
        ring.push(member(&mine));
        let input = || Input {
            secret: me.one_time_secret(&mine).expect("mine"),
            opening: received.opening(),
            ring: ring.clone(),
            real: u8::try_from(k - 1).expect("small ring"),
        };
        let spend = sign(vec![input()], &Scalar::ZERO, [7; 32], &mut rng).expect("signs");
        eprintln!(
            "shielded: CLSAG ring {k}: {} bytes of signature + {} of ring + 64 of key image and pseudo-out",
            spend[0].signature.len(),
            64 * k
        );
        group.bench_function(format!("clsag::sign/ring/{k}"), |b| {
            b.iter_batched(
                || vec![input()],
                |inputs| sign(inputs, &Scalar::ZERO, [7; 32], &mut rng),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("clsag::verify/ring/{k}"), |b| {
            b.iter(|| verify(black_box(&spend[0]), &[7; 32]))
        });
    }
    let (out, secret) = create(&me.address(), 1_234, &mut rng).expect("valid address");
    let proof = range::prove(vec![secret.opening()], &mut rng).expect("proves");
    eprintln!(
        "shielded: Bulletproof+ for one output: {} bytes",
        proof.len()
    );
    group.bench_function("range::prove/outputs/1", |b| {
        b.iter(|| range::prove(vec![secret.opening()], &mut rng))
    });
    group.bench_function("range::verify/outputs/1", |b| {
        b.iter(|| range::verify(&[out.commitment], black_box(&proof), &mut rng))
    });
    let view = me.view_key();
    group.bench_function("output::scan/foreign", |b| {
        b.iter(|| view.scan(black_box(&decoys[0])))
    });
    // A light client's work per slot: a region of n households adds about
    // 2n outputs (each order's change, each settlement payment).
    for n in [37usize, 1_000] {
        let slot: Vec<Output> = (0..2 * n)
            .map(|i| {
                create(&other.address(), i as u64, &mut rng)
                    .expect("valid address")
                    .0
            })
            .collect();
        let bytes: usize = slot
            .iter()
            .map(|o| borsh::to_vec(o).map_or(0, |b| b.len()))
            .sum();
        eprintln!(
            "shielded: a slot of {n} households: {} outputs, {bytes} bytes to download",
            slot.len()
        );
        group.bench_function(format!("output::scan/slot/households/{n}"), |b| {
            b.iter(|| slot.iter().filter(|o| view.scan(o).is_some()).count())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
