//! Mode B costs per order: sealing by a household, opening by an enclave,
//! and a 1 000-order slot through the auctioneer (intake of sealed orders,
//! clearing, receipts).

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use quartier_enclave::attestation::{Measurement, SimulatedAttestationService};
use quartier_enclave::auctioneer::Auctioneer;
use quartier_enclave::auctioneer::Batch;
use quartier_enclave::sealed::{Epoch, EpochKeyPair, OrderPayload, SealedOrder, SignedOrder, seal};
use quartier_enclave::service::{
    EnclaveService, Purpose, SimulatedMemoryCounter, SimulatedPlatform,
};
use quartier_types::{AccountId, Energy, Money, Price, RegionId, RegionParams, Side, Slot};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::BTreeMap;
use std::hint::black_box;

/// The chain the benchmark's committee serves.
const CHAIN: [u8; 32] = [0xc4; 32];

fn signed(i: u32, key: &SigningKey) -> SignedOrder {
    SignedOrder::sign(
        OrderPayload {
            chain: CHAIN,
            wallet: AccountId(key.verifying_key().to_bytes()),
            region: RegionId(1),
            slot: Slot(9),
            epoch: Epoch(1),
            side: if i.is_multiple_of(2) {
                Side::Buy
            } else {
                Side::Sell
            },
            limit: Price::new(4_000 + u64::from(i * 7_919) % 16_751),
            energy: Energy::new(100 + u64::from(i * 104_729) % 2_000),
            receipt_key: key.verifying_key().to_montgomery().to_bytes(),
        },
        key,
    )
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let key = EpochKeyPair::generate(Epoch(1), &mut rng);
    let wallet = SigningKey::from_bytes(&[2; 32]);
    let order = signed(0, &wallet);
    let sealed = seal(&key.public_key(), &order, &mut rng).expect("valid key");
    let mut group = c.benchmark_group("enclave");
    group.bench_function("sealed::seal/order", |b| {
        b.iter(|| seal(&key.public_key(), black_box(&order), &mut rng))
    });
    group.bench_function("sealed::open/order", |b| {
        b.iter(|| key.open(black_box(&sealed)))
    });

    let wallets: Vec<SigningKey> = (0..1_000u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            SigningKey::from_bytes(&seed)
        })
        .collect();
    let book: Vec<SealedOrder> = (0u32..)
        .zip(&wallets)
        .map(|(i, w)| seal(&key.public_key(), &signed(i, w), &mut rng).expect("valid key"))
        .collect();
    let params = RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO)
        .expect("valid tariffs");
    // Every wallet a meter of the slot, each able to sell what it offers.
    let mut traders: Vec<(AccountId, Energy)> = wallets
        .iter()
        .map(|w| {
            (
                AccountId(w.verifying_key().to_bytes()),
                Energy::new(u64::from(u32::MAX)),
            )
        })
        .collect();
    traders.sort();
    group.sample_size(10);
    group.bench_function("auctioneer::slot/orders/1000", |b| {
        b.iter(|| {
            let mut auctioneer = Auctioneer::new(
                CHAIN,
                RegionId(1),
                params,
                EpochKeyPair::generate(Epoch(1), &mut ChaCha20Rng::from_seed([1; 32])),
            );
            for w in &wallets {
                let _ = auctioneer.deposit(
                    AccountId(w.verifying_key().to_bytes()),
                    Money::new(100_000_000),
                );
            }
            auctioneer.set_traders(&traders);
            for s in &book {
                let _ = auctioneer.submit(s);
            }
            auctioneer.settle(Slot(9), &mut ChaCha20Rng::from_seed([3; 32]))
        })
    });
    for n in [3u16, 7, 15] {
        let t = n / 2 + 1;
        group.bench_function(format!("committee::dkg/n={n}"), |b| {
            b.iter(|| quartier_enclave::committee::generate(n, t, &mut rng))
        });
    }
    let (members, group_key) =
        quartier_enclave::committee::generate(3, 2, &mut rng).expect("valid sizes");
    let signers: Vec<_> = members.iter().take(2).collect();
    group.bench_function("committee::sign/report/t=2", |b| {
        b.iter(|| quartier_enclave::committee::sign(&signers, &group_key, b"report", &mut rng))
    });

    // Gate to signed report inside the committee: three enclaves each clear
    // the same 1 000-order batch (serially here; in parallel on three hosts)
    // and two of them sign its summary through the byte-level service API.
    let deposits: Vec<(AccountId, Money)> = wallets
        .iter()
        .map(|w| {
            (
                AccountId(w.verifying_key().to_bytes()),
                Money::new(100_000_000),
            )
        })
        .collect();
    // The committee is made once and copied for each run through its sealed
    // state (outside the measurement).
    let vendor = SimulatedAttestationService::new([8; 32]);
    let platform = SimulatedPlatform::new([9; 32], Measurement([1; 32]), vendor.root());
    let (members, committee_key) = committee_with_key(&platform, &vendor);
    // Each member on its own platform: a platform's monotonic counter opens
    // only the state it sealed last.
    let platforms: Vec<SimulatedPlatform> = members
        .iter()
        .map(|_| SimulatedPlatform::new([9; 32], Measurement([1; 32]), vendor.root()))
        .collect();
    let sealed_members: Vec<Vec<u8>> = members
        .into_iter()
        .zip(&platforms)
        .map(|(mut m, p)| m.seal(p).expect("seals"))
        .collect();
    let book: Vec<SealedOrder> = (0u32..)
        .zip(&wallets)
        .map(|(i, w)| seal(&committee_key, &signed(i, w), &mut rng).expect("valid key"))
        .collect();
    group.bench_function("service::clear_and_sign/orders/1000/enclaves/3", |b| {
        b.iter_batched(
            || {
                sealed_members
                    .iter()
                    .map(|s| {
                        // Each run restores the same sealed state: a platform
                        // whose counter is where that seal left it.
                        let p =
                            SimulatedPlatform::new([9; 32], Measurement([1; 32]), vendor.root())
                                .with_counter(Box::new(SimulatedMemoryCounter::at(1)));
                        EnclaveService::unseal(s, &p).expect("unseals")
                    })
                    .collect::<Vec<_>>()
            },
            |mut members| {
                let batch = Batch {
                    slot: Slot(9),
                    params,
                    epoch: Epoch(1),
                    deposits: &deposits,
                    orders: &book,
                    withdrawals: &[],
                    traders: &traders,
                    expired: false,
                };
                for m in &mut members {
                    m.clear_unverified(RegionId(1), &batch).expect("clears");
                }
                let purpose = Purpose::Report {
                    region: RegionId(1),
                    slot: Slot(9),
                };
                let what = borsh::to_vec(&purpose).expect("encodes");
                let requests: Vec<(u16, [u8; 64])> = (0..2)
                    .map(|to| members[0].authorise(7, to, &what).expect("a member"))
                    .collect();
                let mut commitments = BTreeMap::new();
                for (m, (by, signature)) in members.iter_mut().zip(&requests) {
                    let (i, c) = m.sign_commit(7, &purpose, *by, signature).expect("commits");
                    commitments.insert(i, c);
                }
                let package = members[0]
                    .signing_package(&purpose, &commitments)
                    .expect("package");
                let requests: Vec<(u16, [u8; 64])> = (0..2)
                    .map(|to| members[0].authorise(7, to, &package).expect("a member"))
                    .collect();
                let mut shares = BTreeMap::new();
                for (i, (m, (by, signature))) in members.iter_mut().zip(&requests).enumerate() {
                    shares.insert(
                        u16::try_from(i).expect("small"),
                        m.sign_share(7, &package, *by, signature).expect("share"),
                    );
                }
                members[0].aggregate(&package, &shares).expect("signature")
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Three members after the DKG, all holding the key of epoch 1 that member
/// 0 created and sealed to the others; returns them and its public key.
fn committee_with_key(
    platform: &SimulatedPlatform,
    vendor: &SimulatedAttestationService,
) -> (Vec<EnclaveService>, [u8; 32]) {
    let mut members: Vec<EnclaveService> = (0..3)
        .map(|_| EnclaveService::new(platform).expect("platform randomness"))
        .collect();
    members.sort_by_key(EnclaveService::account);
    let quotes: Vec<_> = members
        .iter()
        .map(|m| vendor.quote(platform.measurement, m.report_data()))
        .collect();
    for e in members.iter_mut() {
        e.trust_registry_unverified(CHAIN, &quotes);
    }
    let outcome = quartier_enclave::dkg::run_in_process(&mut members, CHAIN, 2, 1, quotes);
    assert!(
        matches!(outcome, quartier_enclave::dkg::DkgOutcome::Formed(_)),
        "the DKG: {outcome:?}"
    );
    let (public, shares) = members[0].create_epoch_key(Epoch(1)).expect("a committee");
    for (m, share) in members.iter_mut().skip(1).zip(&shares) {
        m.receive_epoch_key(share, &public).expect("share opens");
    }
    for m in &mut members {
        m.settle_epoch_key(Epoch(1), &public);
    }
    (members, public)
}

criterion_group!(benches, bench);
criterion_main!(benches);
