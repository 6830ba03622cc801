//! Mode A: what one shielded order costs on chain, for rings of 8 / 16 /
//! 37 / 64 (funds ring = `ring_size`, and a region of as many meters, so
//! the authorisation ring is as large): the household's wallet building and
//! proving a buy (`prove`), a validator applying it — signature, both
//! CLSAGs, the range proof, balance and escrow (`verify`) — and a zero-energy
//! cover order's and a sell's verification, each on a node that has not seen
//! its proofs, and the buy again on one that verified them before
//! (`verify/buy-remembered`). Transaction sizes are printed to stderr.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use quartier_ledger::{
    BlockContext, Genesis, MeterRole, ShieldedPolicy, SignedTx, State, Tx, TxBody, apply,
    meter_ring,
};
use quartier_meter::wallet::{MeterRing, OrderRequest, RingPolicy, ShieldedWallet};
use quartier_shielded::keys::WalletKeys;
use quartier_shielded::output::create;
use quartier_types::hash;
use quartier_types::{
    AccountId, Energy, Height, Money, Price, RegionId, RegionParams, Side, Slot, Timestamp,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const REGION: RegionId = RegionId(1);
const CHF: u64 = 100_000_000;

fn key(label: &str, i: usize) -> SigningKey {
    SigningKey::from_bytes(
        &hash::tagged("QUARTIER_BENCH_KEY", &[label.as_bytes(), &i.to_le_bytes()]).0,
    )
}

fn id(k: &SigningKey) -> AccountId {
    AccountId(k.verifying_key().to_bytes())
}

fn params() -> RegionParams {
    RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).expect("valid tariffs")
}

fn ctx(height: u64, time: u64) -> BlockContext {
    BlockContext {
        height: Height(height),
        time: Timestamp(time),
    }
}

fn signed(state: &State, k: &SigningKey, body: TxBody) -> SignedTx {
    Tx {
        chain_id: state.chain_id(),
        signer: id(k),
        nonce: state.account(&id(k)).nonce,
        body,
    }
    .sign(k)
}

fn one_time(state: &State, body: TxBody, i: usize) -> SignedTx {
    Tx::one_time(state.chain_id(), body, &key("one-time", i).to_bytes())
}

/// The one-time signer of [`one_time`]`(_, _, i)`.
fn signer(i: usize) -> AccountId {
    Tx::one_time_signer(&key("one-time", i).to_bytes())
}

/// A chain in mode A with `k` meters and a pool of `2k` outputs, one of
/// them the wallet's.
fn chain(k: usize, rng: &mut ChaCha20Rng) -> (State, Vec<SigningKey>, ShieldedWallet) {
    let (dso, utility) = (key("dso", 0), key("utility", 0));
    let genesis = Genesis {
        regions: vec![(REGION, params())],
        allocations: vec![(id(&utility), Money::new(10_000 * CHF))],
        shielded: Some(ShieldedPolicy {
            ring_size: u16::try_from(k).expect("small ring"),
        }),
        ..Genesis::new(
            "bench-shielded",
            id(&dso),
            id(&utility),
            vec![id(&key("validator", 0))],
        )
    };
    let mut state = State::from_genesis(genesis).expect("valid genesis");
    let meters: Vec<SigningKey> = (0..k).map(|i| key("meter", i)).collect();
    let at = ctx(1, 1);
    for m in &meters {
        let register = TxBody::RegisterMeter {
            meter: id(m),
            region: REGION,
            // Every meter a prosumer: the sell ring is as large as the buy ring.
            role: MeterRole::Prosumer,
            pv_watts: 10_000,
        };
        let tx = signed(&state, &dso, register);
        apply(&mut state, &tx, &at).expect("registers");
    }
    let mut wallet = ShieldedWallet::from_seed([9; 32], RingPolicy { ring_size: k });
    let decoy = WalletKeys::from_seed(&[8; 32]);
    for i in 0..2 * k {
        let to = if i == k {
            wallet.address()
        } else {
            decoy.address()
        };
        let (output, received) = create(&to, 10 * CHF, rng).expect("valid address");
        let shield = TxBody::Shield {
            amount: Money::new(10 * CHF),
            output,
            mask: *received.mask,
        };
        let tx = signed(&state, &utility, shield);
        apply(&mut state, &tx, &at).expect("shields");
    }
    wallet.scan(0, state.pool());
    (state, meters, wallet)
}

fn bench(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    // For comparison: the same buy as an open order, signed by its meter.
    let (state, meters, _) = chain(8, &mut rng);
    let open = TxBody::PlaceOrder {
        region: REGION,
        slot: Slot(1),
        side: Side::Buy,
        limit: Price::new(12_000),
        energy: Energy::new(500),
    };
    eprintln!(
        "shielded_order: an open (transparent) order is {} bytes",
        signed(&state, &meters[0], open).encode().len()
    );
    let mut group = c.benchmark_group("shielded_order");
    group.sample_size(20);
    for k in [8usize, 16, 37, 64] {
        let (state, meters, mut wallet) = chain(k, &mut rng);
        let ring = |side, energy| -> Vec<[u8; 32]> {
            meter_ring(&state, REGION, side, Energy::new(energy))
                .iter()
                .map(|(a, _)| a.0)
                .collect()
        };
        let (buy_ring, sell_ring) = (ring(Side::Buy, 0), ring(Side::Sell, 800));
        let buyer = &meters[k - 1];
        let request = |side, energy| OrderRequest {
            region: REGION,
            params: params(),
            slot: Slot(1),
            side,
            limit: Price::new(12_000),
            energy: Energy::new(energy),
        };
        let meter = MeterRing {
            scalar: buyer.to_scalar().to_bytes(),
            key: id(buyer).0,
            ring: &buy_ring,
        };
        let chain_id = state.chain_id();
        group.bench_function(format!("prove/buy/ring/{k}"), |b| {
            b.iter(|| {
                let order = wallet.order(
                    (chain_id, signer(0)),
                    &request(Side::Buy, 500),
                    &meter,
                    &mut rng,
                );
                wallet.release(Slot(1), Side::Buy);
                order
            })
        });
        let buy = wallet
            .order(
                (chain_id, signer(0)),
                &request(Side::Buy, 500),
                &meter,
                &mut rng,
            )
            .expect("builds");
        let buy = one_time(&state, TxBody::PlaceShieldedOrder { order: buy }, 0);
        let seller = MeterRing {
            scalar: meters[0].to_scalar().to_bytes(),
            key: id(&meters[0]).0,
            ring: &sell_ring,
        };
        let mut sell_wallet = ShieldedWallet::from_seed([10; 32], RingPolicy { ring_size: k });
        let cover = sell_wallet
            .order(
                (chain_id, signer(1)),
                &request(Side::Buy, 0),
                &meter,
                &mut rng,
            )
            .expect("builds");
        let cover = one_time(&state, TxBody::PlaceShieldedOrder { order: cover }, 1);
        let sell = sell_wallet
            .order(
                (chain_id, signer(2)),
                &request(Side::Sell, 800),
                &seller,
                &mut rng,
            )
            .expect("builds");
        let sell = one_time(&state, TxBody::PlaceShieldedOrder { order: sell }, 2);
        eprintln!(
            "shielded_order: rings of {k}: buy {} bytes, cover order {} bytes, sell (ring of {} prosumers) {} bytes",
            buy.encode().len(),
            cover.encode().len(),
            sell_ring.len(),
            sell.encode().len()
        );
        let at = ctx(2, 900_000 + 1);
        for (name, tx) in [("buy", &buy), ("cover", &cover), ("sell", &sell)] {
            group.bench_function(format!("verify/{name}/ring/{k}"), |b| {
                b.iter_batched(
                    || {
                        let mut s = state.clone();
                        s.forget_verified_proofs();
                        s
                    },
                    |mut s| apply(&mut s, tx, &at).expect("accepted"),
                    BatchSize::LargeInput,
                )
            });
        }
        // The same buy again on a node that verified it (at admission, or in
        // a proposal): its proofs are remembered.
        let mut warm = state.clone();
        apply(&mut warm, &buy, &at).expect("accepted");
        group.bench_function(format!("verify/buy-remembered/ring/{k}"), |b| {
            b.iter_batched(
                || state.clone(),
                |mut s| apply(&mut s, &buy, &at).expect("accepted"),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
