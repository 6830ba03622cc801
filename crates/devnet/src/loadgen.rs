//! `quartier bench chain`: a bounded load generator against a running devnet.
//!
//! It registers and funds `meters` meters, then for `slots` consecutive slots
//! every meter places one order (consumers buy, prosumers sell), and measures
//! what the chain did with them from its public API and its data folders.
//! It measures wall-clock time, so it reads the clock (a tool, not consensus code).
use ed25519_dalek::SigningKey;
use quartier_client::tx::{sign, submit_body};
use quartier_client::{ClientError, NodeClient};
use quartier_enclave::sealed::{Epoch, HpkeKeyPair, OrderPayload, SignedOrder, seal};
use quartier_ledger::{ChainId, Genesis, MeterRole, TxBody};
use quartier_types::{AccountId, Energy, Money, Price, RegionId, Side, Slot, hash};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to load the chain with.
#[derive(Clone, Debug)]
pub struct ChainBenchPlan {
    /// Meters to register (half prosumers).
    pub meters: usize,
    /// Slots in which every meter places an order.
    pub slots: u64,
    /// Give up after this long.
    pub deadline: Duration,
}

/// What was measured.
#[derive(Clone, Debug, Default)]
pub struct ChainBenchReport {
    /// Registration and minting transactions.
    pub setup_txs: usize,
    /// Seconds until all of them were finalized.
    pub setup_seconds: f64,
    /// Order transactions submitted.
    pub order_txs: usize,
    /// Orders that made it into a settled book.
    pub orders_settled: usize,
    /// Order submission rate during a slot's burst (the client's, over HTTP), best slot.
    pub submitted_per_second: f64,
    /// Orders finalized per second during a burst: from its first submission
    /// until every validator's mempool is empty again, best slot.
    pub finalized_per_second: f64,
    /// Block interval percentiles in milliseconds, over the run.
    pub block_interval_ms: (u64, u64),
    /// Gate close to settlement block, per slot, in milliseconds.
    pub settlement_latency_ms: Vec<i64>,
    /// Bytes in the validators' data folders, summed.
    pub disk_bytes: u64,
    /// Bytes in a validator's data folder (mean) after each slot's orders
    /// were final: flat once the history and block windows are full.
    pub disk_per_validator: Vec<u64>,
    /// Blocks finalized during the run.
    pub blocks: u64,
    /// Bytes each validator sent to its peers per second (consensus, block
    /// dissemination, transaction gossip), from the orders' first burst to
    /// the last settlement, mean over validators.
    pub p2p_bytes_per_validator_second: f64,
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A node could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A node refused a transaction it should accept.
    #[error("node refused a transaction: {0}")]
    Refused(String),
    /// The chain did not get there in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
}

/// Client threads submitting orders.
const CLIENT_THREADS: usize = 8;

fn meter_key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&hash::tagged("QUARTIER_BENCH_METER", &[&(i as u64).to_le_bytes()]).0)
}

pub(crate) use quartier_client::tx::account;

/// The `POST /api/v1/txs` body of `b` signed by `k` with `nonce`.
pub(crate) fn body(chain_id: ChainId, k: &SigningKey, nonce: u64, b: TxBody) -> String {
    submit_body(&sign(chain_id, k, nonce, b))
}

pub(crate) fn nonce(api: &NodeClient, who: &AccountId) -> Result<u64, BenchError> {
    Ok(quartier_client::tx::nonce(api, who)?)
}

/// Submits one account's transactions, the first with nonce `first_nonce` and
/// each next one the next nonce, keeping at most 48 in flight (the mempool's
/// per-account bound is 64), until all are final.
pub(crate) fn submit_window(
    apis: &[NodeClient],
    who: &AccountId,
    first_nonce: u64,
    txs: &[String],
    deadline: Instant,
) -> Result<(), BenchError> {
    let mut sent = 0usize;
    loop {
        let done = nonce(&apis[0], who)?.saturating_sub(first_nonce) as usize;
        if done >= txs.len() {
            return Ok(());
        }
        while sent < txs.len() && sent < done + 48 {
            let (code, reply) = apis[sent % apis.len()].post("/api/v1/txs", &txs[sent])?;
            if code != 202 && code != 409 {
                return Err(BenchError::Refused(reply.to_string()));
            }
            sent += 1;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("setup transactions"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Submits transactions from several client threads: one HTTP request per
/// connection is the client's bottleneck, not the chain's.
fn burst(apis: &[NodeClient], txs: &[(usize, String)]) -> Result<(), BenchError> {
    let results: Vec<Result<(), BenchError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = txs
            .chunks(txs.len().div_ceil(CLIENT_THREADS).max(1))
            .map(|chunk| {
                scope.spawn(move || -> Result<(), BenchError> {
                    for (i, tx) in chunk {
                        let (code, reply) = apis[i % apis.len()].post("/api/v1/txs", tx)?;
                        if code != 202 {
                            return Err(BenchError::Refused(reply.to_string()));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(Err(BenchError::Timeout("client thread")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Waits until every validator's mempool is empty.
fn drain(apis: &[NodeClient], deadline: Instant) -> Result<(), BenchError> {
    loop {
        let mut pending = 0;
        for api in apis {
            pending += api.get("/api/v1/status")?.1["mempool"]
                .as_u64()
                .unwrap_or(0);
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("mempools to drain"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Mode B: waits until the committee published an epoch key.
///
/// # Errors
/// [`BenchError::Timeout`] after `deadline`.
pub(crate) fn wait_for_epoch_key(api: &NodeClient, deadline: Instant) -> Result<(), BenchError> {
    loop {
        if let Ok((200, v)) = api.get("/api/v1/sealed")
            && !quartier_client::sealable_epoch_keys(&v).is_empty()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout(
                "the enclave committee's first epoch key",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mode B: the published key of `epoch`, waiting briefly for it.
fn epoch_key(apis: &[NodeClient], epoch: Epoch) -> Option<[u8; 32]> {
    for _ in 0..100 {
        let (_, v) = apis[0].get("/api/v1/sealed").ok()?;
        let key = quartier_client::sealable_epoch_keys(&v)
            .into_iter()
            .find_map(|(e, k)| (e == epoch).then_some(k));
        if key.is_some() {
            return key;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Records the slots of `unsettled` that have settled (mode B: been
/// reported) by now, and keeps the others.
fn collect_settlements(
    apis: &[NodeClient],
    genesis: &Genesis,
    unsettled: &mut Vec<u64>,
    report: &mut ChainBenchReport,
) -> Result<(), BenchError> {
    let reports = if genesis.sealed_market.is_some() {
        apis[0].get("/api/v1/regions/1/reports?last=64")?.1["reports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut still = Vec::new();
    for &slot in unsettled.iter() {
        let found = if genesis.sealed_market.is_some() {
            reports.iter().find_map(|r| {
                (r["summary"]["slot"].as_u64()? == slot).then(|| {
                    (
                        r["summary"]["aggregates"]["sealed"].as_u64().unwrap_or(0) as usize,
                        r["height"].as_u64().unwrap_or(0),
                    )
                })
            })
        } else {
            let (_, v) = apis[0].get(&format!("/api/v1/regions/1/slots/{slot}"))?;
            let settlement = &v["settlement"];
            (!settlement.is_null()).then(|| {
                (
                    settlement["orders"].as_array().map_or(0, Vec::len),
                    settlement["height"].as_u64().unwrap_or(0),
                )
            })
        };
        let Some((orders, height)) = found else {
            still.push(slot);
            continue;
        };
        report.orders_settled += orders;
        let (_, block) = apis[0].get(&format!("/api/v1/blocks/{height}"))?;
        let settled_at = block["time_ms"].as_u64().unwrap_or(0) as i64;
        let close = genesis.close_of(Slot(slot)).0 as i64;
        report.settlement_latency_ms.push(settled_at - close);
    }
    *unsettled = still;
    Ok(())
}

pub(crate) fn chain_time(api: &NodeClient) -> Result<(u64, u64), BenchError> {
    let height = api.get("/api/v1/status")?.1["height"].as_u64().unwrap_or(0);
    let time = api.get(&format!("/api/v1/blocks/{height}"))?.1["time_ms"]
        .as_u64()
        .unwrap_or(0);
    Ok((height, time))
}

/// Bytes all validators have sent to peers so far: the runtime's metered
/// network counters (`*outbound_bandwidth*`) on each `/metrics`.
fn p2p_bytes_sent(apis: &[NodeClient]) -> Result<u64, BenchError> {
    let mut total = 0u64;
    for api in apis {
        let (_, text) = api.get_text("/metrics")?;
        total += text
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("outbound_bandwidth"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum::<u64>();
    }
    Ok(total)
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the benchmark against the devnet whose APIs are `apis`.
///
/// # Errors
/// [`BenchError`] if a node is unreachable, refuses a valid transaction, or
/// the plan does not complete before its deadline.
#[allow(clippy::too_many_arguments)]
pub fn run(
    apis: &[NodeClient],
    genesis: &Genesis,
    dso: &SigningKey,
    utility: &SigningKey,
    data_dirs: &[PathBuf],
    plan: &ChainBenchPlan,
    mut progress: impl FnMut(&str),
) -> Result<ChainBenchReport, BenchError> {
    let deadline = Instant::now() + plan.deadline;
    let chain_id = genesis.chain_id();
    let region = RegionId(1);
    let meters: Vec<SigningKey> = (0..plan.meters).map(meter_key).collect();
    let prosumer = |i: usize| i.is_multiple_of(2);
    let mut report = ChainBenchReport::default();
    let (start_height, _) = chain_time(&apis[0])?;

    progress("registering and funding meters");
    let setup_start = Instant::now();
    let registrations: Vec<String> = meters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (role, pv_watts) = if prosumer(i) {
                (MeterRole::Prosumer, 10_000)
            } else {
                (MeterRole::Consumer, 0)
            };
            body(
                chain_id,
                dso,
                i as u64,
                TxBody::RegisterMeter {
                    meter: account(m),
                    region,
                    role,
                    pv_watts,
                },
            )
        })
        .collect();
    let mints: Vec<String> = meters
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let amount = Money::new(10 * 100_000_000);
            body(
                chain_id,
                utility,
                i as u64,
                TxBody::Mint {
                    to: account(m),
                    amount,
                },
            )
        })
        .collect();
    submit_window(apis, &account(dso), 0, &registrations, deadline)?;
    submit_window(apis, &account(utility), 0, &mints, deadline)?;
    report.setup_txs = registrations.len() + mints.len();
    // Mode B: every meter prepays to the enclaves, then orders are sealed.
    let sealed = genesis.sealed_market.clone();
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(
        hash::tagged("QUARTIER_BENCH_SEALING", &[]).0,
    );
    if sealed.is_some() {
        // Deposits need a committee in office; its first epoch key says so.
        wait_for_epoch_key(&apis[0], deadline)?;
        progress("prepaying to the enclaves");
        let deposits: Vec<(usize, String)> = meters
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let amount = Money::new(8 * 100_000_000);
                (
                    i,
                    body(chain_id, m, 0, TxBody::DepositToAuctioneer { amount }),
                )
            })
            .collect();
        burst(apis, &deposits)?;
        drain(apis, deadline)?;
        report.setup_txs += deposits.len();
    }
    let nonce_offset = u64::from(sealed.is_some());
    report.setup_seconds = setup_start.elapsed().as_secs_f64();

    let (_, now) = chain_time(&apis[0])?;
    let first = now / genesis.slot_ms + 1;
    let sent_before = p2p_bytes_sent(apis)?;
    let orders_start = Instant::now();
    let slots: Vec<u64> = (first..first + plan.slots).collect();
    let mut unsettled: Vec<u64> = Vec::new();
    for (k, &slot) in slots.iter().enumerate() {
        // Orders for `slot` open once slot − lead has begun.
        loop {
            let (_, t) = chain_time(&apis[0])?;
            if t / genesis.slot_ms + genesis.lead_slots >= slot {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout("slot to open"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        progress(&format!("slot {slot}: {} orders", meters.len()));
        let slot_key = sealed
            .as_ref()
            .and_then(|p| epoch_key(apis, p.epoch_of(Slot(slot))));
        let orders: Vec<(usize, String)> = meters
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let v = (i as u64 * 7_919 + slot * 104_729) % 1_000;
                let (side, limit, energy) = if prosumer(i) {
                    (Side::Sell, 5_000 + v * 7, 100 + v * 2)
                } else {
                    (Side::Buy, 14_000 + v * 6, 100 + v / 2)
                };
                let order = match &sealed {
                    None => TxBody::PlaceOrder {
                        region,
                        slot: Slot(slot),
                        side,
                        limit: Price::new(limit),
                        energy: Energy::new(energy),
                    },
                    Some(policy) => {
                        let epoch = policy.epoch_of(Slot(slot));
                        let key = slot_key.unwrap_or([9; 32]);
                        let payload = OrderPayload {
                            chain: chain_id.0.0,
                            wallet: account(m),
                            region,
                            slot: Slot(slot),
                            epoch,
                            side,
                            limit: Price::new(limit),
                            energy: Energy::new(energy),
                            receipt_key: HpkeKeyPair::generate(&mut rng).public_key(),
                        };
                        let signed = SignedOrder::sign(payload, m);
                        match seal(&key, &signed, &mut rng) {
                            Ok(sealed) => TxBody::SubmitSealedOrder { sealed },
                            Err(_) => return (i, String::new()),
                        }
                    }
                };
                (i, body(chain_id, m, k as u64 + nonce_offset, order))
            })
            .collect();
        let started = Instant::now();
        burst(apis, &orders)?;
        let submitted = started.elapsed().as_secs_f64();
        drain(apis, deadline)?;
        let finalized = started.elapsed().as_secs_f64();
        let n = orders.len() as f64;
        report.submitted_per_second = report.submitted_per_second.max(n / submitted);
        report.finalized_per_second = report.finalized_per_second.max(n / finalized);
        report.order_txs += orders.len();
        // Settlements are collected as they come: an old one may leave the
        // state (genesis.history_slots) before the run ends.
        unsettled.push(slot);
        collect_settlements(apis, genesis, &mut unsettled, &mut report)?;
        report.disk_per_validator.push(
            data_dirs.iter().map(|d| dir_bytes(d)).sum::<u64>() / data_dirs.len().max(1) as u64,
        );
    }

    progress("waiting for the settlements");
    while !unsettled.is_empty() {
        collect_settlements(apis, genesis, &mut unsettled, &mut report)?;
        if unsettled.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout("settlement"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let sent = p2p_bytes_sent(apis)?.saturating_sub(sent_before);
    report.p2p_bytes_per_validator_second =
        sent as f64 / apis.len().max(1) as f64 / orders_start.elapsed().as_secs_f64();
    let (end_height, _) = chain_time(&apis[0])?;
    let mut times = Vec::new();
    for h in start_height..=end_height {
        if let Some(t) = apis[0].get(&format!("/api/v1/blocks/{h}"))?.1["time_ms"].as_u64() {
            times.push(t);
        }
    }
    let mut gaps: Vec<u64> = times
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .collect();
    gaps.sort_unstable();
    let pct = |p: usize| {
        gaps.get((gaps.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    report.block_interval_ms = (pct(50), pct(99));
    report.blocks = end_height - start_height;
    report.disk_bytes = data_dirs.iter().map(|d| dir_bytes(d)).sum();
    Ok(report)
}
