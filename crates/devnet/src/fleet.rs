//! Meter agents against a running chain: one [`MeterAgent`] per simulated
//! household, each with its own key, registered by the DSO and topped up by
//! the utility, placing its signed order every slot through a node's API.
//!
//! This is the host of the agents' state machines: it reads the simulated
//! meters, paces slots by the wall clock (the chain's clock follows it),
//! carries out the agents' effects over HTTP, moves to another node when one
//! is down, and feeds settled slots back to the strategies. It reads the clock
//! (a tool, not consensus code).
//!
//! Slot `first_slot + k` carries the metered quarter hour `start_interval + k`
//! of the simulated year, so the orders of a run can be recomputed offline
//! from the [`FleetManifest`] alone.
use crate::loadgen::{BenchError, account, body, nonce, submit_window};
use ed25519_dalek::SigningKey;
use quartier_client::wallet::ring_policy;
use quartier_client::{ClientError, NodeClient};
use quartier_ledger::{ChainId, Genesis, MeterRole, SignedTx, TxBody};
use quartier_meter::metering::Metering;
use quartier_meter::wallet::{ShieldedWallet, payee_address};
use quartier_meter::{AgentEffect, AgentInput, MeterAgent, StrategyKind, TxProgress};
use quartier_sim::crypto_audit::{CryptoTruth, PublishedOrder};
use quartier_sim::sealed_audit::{SealedSlot, SealedSubmission, SealedView};
use quartier_sim::view::{PublicOrder, RegistryEntry};
use quartier_sim::{GroundTruth, Neighbourhood, PrivacyMode, Profiles, PublicView, SimPlan};
use quartier_types::{
    AccountId, Energy, Money, RegionId, RegionParams, Side, Slot, Timestamp, hash,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The region the simulated households trade in.
pub const FLEET_REGION: RegionId = RegionId(1);

/// What the fleet simulates.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    /// Households.
    pub households: u32,
    /// How many of them have PV.
    pub prosumers: u32,
    /// Seed of the households and their keys.
    pub seed: u64,
    /// How they bid.
    pub strategy: StrategyKind,
    /// The simulated quarter hour of the first slot (0 is 1 January 00:00).
    pub start_interval: u64,
    /// Each meter's top-up from the utility.
    pub top_up: Money,
}

/// Which account is which household: everything needed to recompute a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetManifest {
    /// Households.
    pub households: u32,
    /// Prosumers (the first ones).
    pub prosumers: u32,
    /// The seed.
    pub seed: u64,
    /// The strategy.
    pub strategy: StrategyKind,
    /// The simulated quarter hour of `first_slot`.
    pub start_interval: u64,
    /// The first chain slot with orders.
    pub first_slot: u64,
    /// The meters' accounts, by household index.
    pub meters: Vec<AccountId>,
}

impl FleetManifest {
    /// The simulator plan that reproduces this fleet's households offline.
    pub fn sim_plan(&self, params: RegionParams, days: u32) -> SimPlan {
        SimPlan {
            households: self.households,
            prosumers: self.prosumers,
            days,
            start_day: 1,
            seed: self.seed,
            strategy: self.strategy,
            params,
            lot_wh: 0,
            metering: Metering::Net,
        }
    }

    /// The household of `account`, if it is one of the fleet's meters.
    pub fn household_of(&self, account: &AccountId) -> Option<u32> {
        (0u32..)
            .zip(&self.meters)
            .find_map(|(i, m)| (m == account).then_some(i))
    }
}

/// Something that happened, for the host to print.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetEvent {
    /// Orders for a slot were placed and finalized.
    Placed {
        /// The slot.
        slot: Slot,
        /// Orders final on chain.
        orders: usize,
        /// Orders given up.
        abandoned: usize,
        /// Orders not yet final when the slot ended (they stay queued).
        pending: usize,
    },
    /// A slot was settled on chain.
    Settled {
        /// The slot.
        slot: Slot,
        /// Orders in the book.
        orders: usize,
        /// Buys among them, where the book shows sides (not in mode B).
        buys: Option<usize>,
        /// Energy traded locally.
        local: Energy,
        /// Energy-weighted mean trade price.
        price: Option<quartier_types::Price>,
    },
    /// An order was given up (the chain will never include it).
    Abandoned {
        /// Its slot.
        slot: Slot,
        /// The household.
        household: usize,
        /// Why.
        reason: String,
    },
    /// Mode B: the households opened their receipts of a settled slot, after
    /// checking the enclave's receipts against the root on chain.
    Receipts {
        /// The slot.
        slot: Slot,
        /// Households whose receipt opened.
        verified: usize,
        /// Households that had a sealed order in the slot.
        expected: usize,
    },
}

/// Why the fleet stopped.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Enrolment failed.
    #[error(transparent)]
    Enrol(#[from] BenchError),
    /// No node answered.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The plan can not be simulated.
    #[error(transparent)]
    Sim(#[from] quartier_sim::SimError),
    /// The embedded profiles are broken.
    #[error(transparent)]
    Profiles(#[from] quartier_sim::ProfileError),
    /// The chain has no region for the fleet.
    #[error("the genesis has no region {0}")]
    NoRegion(RegionId),
    /// A node's answer could not be read.
    #[error("unexpected answer from the node: {0}")]
    Unexpected(String),
}

/// What the chain shows of a fleet's run, and its ground truth: the orders
/// of the run's slots `from..from + slots` (0 is the manifest's first; up to
/// the first slot not settled), the region's registry, and, from the simulator, which household
/// placed each order and every household's true net series.
///
/// # Errors
/// [`FleetError`] if the node can not be read. Orders of other participants
/// (no household of the run) are left out — there is no answer to score —
/// and counted (the third value): a household order that pays an address
/// its wallet does not derive is counted there too, so a run of households
/// only must count none.
pub fn chain_run(
    api: &NodeClient,
    manifest: &FleetManifest,
    from: u64,
    slots: u64,
) -> Result<(PublicView, GroundTruth, usize), FleetError> {
    let unexpected = |what: &str| FleetError::Unexpected(what.to_string());
    let registry = fleet_registry(api)?;
    // Mode A: orders name no meter. The answer key comes from the devnet
    // households' wallet seeds: each order's payee is derived from its
    // household's seed, slot and side.
    let (_, status) = api.get("/api/v1/status")?;
    let shielded = status["shielded"].is_object();
    let chain = quartier_client::chain_id(&status).ok_or_else(|| unexpected("a chain id"))?;
    let wallets: Vec<[u8; 32]> = (0..manifest.households)
        .filter(|_| shielded)
        .map(|i| wallet_seed(chain, manifest.seed, i))
        .collect();
    let mut params = None;
    let mut orders = Vec::new();
    let mut order_households = Vec::new();
    let mut settled = 0;
    let mut foreign = 0;
    for (k, settlement) in (0..).zip(settled_slots(api, manifest, from, slots)?) {
        let slot = manifest.first_slot + from + k;
        params.get_or_insert(settlement.params);
        let payees = payee_households(&wallets, Slot(slot));
        for (position, o) in (0u32..).zip(&settlement.orders) {
            // An order of no household of the run (another participant's)
            // has no answer to score: it is left out.
            let (household, originator) = match &o.shielded {
                // A cover order carries nothing; an adversary skips it.
                Some(_) if o.order.energy.get() == 0 => continue,
                Some(s) => match payees.get(&(s.payee.view, s.payee.spend)) {
                    Some(&h) => (h, None),
                    None => {
                        foreign += 1;
                        continue;
                    }
                },
                None => match manifest.household_of(&o.meter) {
                    Some(h) => (h, Some(o.meter)),
                    None => {
                        foreign += 1;
                        continue;
                    }
                },
            };
            orders.push(PublicOrder {
                slot: k,
                position,
                originator,
                side: o.order.side,
                limit: o.order.limit,
                energy: o.order.energy,
            });
            order_households.push(household);
        }
        settled = k + 1;
    }
    let params = params.ok_or_else(|| unexpected("no settled slot"))?;
    let start_interval = manifest.start_interval + from;
    let net_wh = fleet_net(manifest, params, start_interval, settled)?;
    let view = PublicView {
        mode: if shielded {
            PrivacyMode::Shielded
        } else {
            PrivacyMode::Transparent
        },
        params,
        start_interval,
        slots: settled,
        metering: fleet_metering(shielded),
        registry,
        orders,
    };
    let truth = GroundTruth {
        meters: manifest.meters.clone(),
        order_households,
        net_wh,
    };
    Ok((view, truth, foreign))
}

/// The truth the simulator knows: every household's net in the `slots`
/// quarter hours from `start_interval`, read exactly as the fleet read it.
fn fleet_net(
    manifest: &FleetManifest,
    params: RegionParams,
    start_interval: u64,
    slots: u64,
) -> Result<Vec<Vec<i64>>, FleetError> {
    let mut hood = Neighbourhood::new(&manifest.sim_plan(params, 1), Profiles::embedded()?)?;
    for interval in 0..start_interval {
        hood.read(interval);
    }
    let mut net_wh = vec![Vec::new(); manifest.meters.len()];
    for k in 0..slots {
        for (series, r) in net_wh.iter_mut().zip(hood.read(start_interval + k)) {
            series.push(r.net_wh());
        }
    }
    Ok(net_wh)
}

/// The households of a fleet the mode B auditor runs itself (by index): the
/// first prosumer, the first household without PV and the last household.
pub fn sealed_insiders(manifest: &FleetManifest) -> Vec<usize> {
    let n = manifest.meters.len();
    let mut insiders = vec![0, manifest.prosumers as usize, n.saturating_sub(1)];
    insiders.retain(|h| *h < n);
    insiders.dedup();
    insiders
}

/// Mode B: what the chain shows of a fleet's run slots `from..from + slots`
/// (every reported slot among them) — each report with its batch's
/// submitters and custody flows, and the sizes of the receipts the first of
/// `enclaves` that serves the slot publishes (none if no enclave answers) —
/// and its ground truth (each household's true net series; the chain names
/// each sealed order's meter). `None` on a chain without a sealed market.
///
/// # Errors
/// [`FleetError`] if the node can not be read.
pub fn chain_sealed_run(
    api: &NodeClient,
    enclaves: &[NodeClient],
    manifest: &FleetManifest,
    from: u64,
    slots: u64,
) -> Result<Option<(SealedView, GroundTruth)>, FleetError> {
    let unexpected = |what: &str| FleetError::Unexpected(what.to_string());
    let (_, status) = api.get("/api/v1/status")?;
    if status["privacy"] != "enclave" {
        return Ok(None);
    }
    let params: RegionParams = status["regions"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["region"] == FLEET_REGION.0))
        .and_then(|r| serde_json::from_value(r["params"].clone()).ok())
        .ok_or_else(|| unexpected("the fleet region's parameters"))?;
    let registry = fleet_registry(api)?;
    let first = manifest.first_slot + from;
    // Which slots have a report: the summaries' list, then each whole.
    let path = format!("/api/v1/regions/{}/reports?last=2976", FLEET_REGION.0);
    let (_, body) = api.get(&path)?;
    let reported: Vec<u64> = body["reports"]
        .as_array()
        .ok_or_else(|| unexpected("no report list"))?
        .iter()
        .filter_map(|r| r["summary"]["slot"].as_u64())
        .filter(|s| (first..first.saturating_add(slots)).contains(s))
        .collect();
    let mut sealed_slots = Vec::with_capacity(reported.len());
    for slot in reported {
        let path = format!("/api/v1/regions/{}/reports/{slot}", FLEET_REGION.0);
        let (_, body) = api.get(&path)?;
        let r: quartier_ledger::PostedReport = serde_json::from_value(body["report"].clone())
            .map_err(|e| FleetError::Unexpected(format!("report {slot}: {e}")))?;
        let receipts = published_receipts(enclaves, &r.summary);
        let t = r.summary.aggregates.totals;
        let total = |grid: Energy| {
            t.local_energy
                .checked_add(grid)
                .ok_or_else(|| unexpected("a report's energy totals overflow"))
        };
        sealed_slots.push(SealedSlot {
            slot: slot - first,
            submissions: r
                .submissions
                .iter()
                .enumerate()
                .map(|(i, &(meter, bytes))| SealedSubmission {
                    meter,
                    bytes,
                    receipt: receipts.as_ref().and_then(|r| r.get(i).copied()),
                })
                .collect(),
            deposits: r.flows.deposits,
            withdrawals: r.flows.withdrawals,
            payouts: r.summary.payouts,
            bought: total(t.grid_import)?,
            sold: total(t.grid_export)?,
        });
    }
    let settled = sealed_slots.last().map_or(0, |s| s.slot + 1);
    let start_interval = manifest.start_interval + from;
    let view = SealedView {
        start_interval,
        registry,
        slots: sealed_slots,
    };
    let truth = GroundTruth {
        meters: manifest.meters.clone(),
        order_households: Vec::new(),
        net_wh: fleet_net(manifest, params, start_interval, settled)?,
    };
    Ok(Some((view, truth)))
}

/// The sizes in bytes of a slot's published receipts, in submission order,
/// from the first enclave whose receipts match the signed root.
fn published_receipts(
    enclaves: &[NodeClient],
    summary: &quartier_enclave::auctioneer::SlotSummary,
) -> Option<Vec<u32>> {
    let request = quartier_enclave::rpc::Request::Report {
        region: summary.region,
        slot: summary.slot,
    };
    enclaves
        .iter()
        .find_map(|e| match quartier_client::enclave::call(e, &request) {
            Some(quartier_enclave::rpc::Response::Report(Some(r)))
                if r.summary == *summary
                    && quartier_enclave::auctioneer::receipts_root(&r.receipts)
                        == summary.receipts_root =>
            {
                r.receipts
                    .iter()
                    .map(|p| {
                        borsh::to_vec(p)
                            .ok()
                            .and_then(|b| u32::try_from(b.len()).ok())
                    })
                    .collect()
            }
            _ => None,
        })
}

/// The fleet region's meter registry, as the chain shows it.
fn fleet_registry(api: &NodeClient) -> Result<Vec<RegistryEntry>, FleetError> {
    let unexpected = |what: &str| FleetError::Unexpected(what.to_string());
    let (_, body) = api.get(&format!("/api/v1/regions/{}/meters", FLEET_REGION.0))?;
    body["meters"]
        .as_array()
        .ok_or_else(|| unexpected("no meter list"))?
        .iter()
        .map(|m| {
            Ok(RegistryEntry {
                meter: m["meter"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| unexpected("a meter id"))?,
                prosumer: m["role"] == "prosumer",
                pv_watts: m["pv_watts"]
                    .as_u64()
                    .and_then(|w| u32::try_from(w).ok())
                    .ok_or_else(|| unexpected("a PV size"))?,
            })
        })
        .collect()
}

/// Which flows the fleet's meters order: gross in mode A (its buys must not
/// tell households with PV from those without, `quartier_meter::metering`),
/// net otherwise (mode B hides amounts; the open market names the meter).
pub fn fleet_metering(shielded: bool) -> Metering {
    if shielded {
        Metering::Gross
    } else {
        Metering::Net
    }
}

/// The order in which `n` households send their orders of `slot`: a
/// permutation drawn afresh each slot (Fisher–Yates over a stream seeded by
/// the run's seed and the slot).
fn arrival_order(seed: u64, slot: Slot, n: usize) -> Vec<usize> {
    use rand_core::{Rng as _, SeedableRng as _};
    let key = hash::tagged(
        "QUARTIER_NODE_FLEET_ARRIVAL",
        &[&seed.to_le_bytes(), &slot.0.to_le_bytes()],
    );
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(key.0);
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // A bias below 2^-50 for fleets of fewer than 2^14 households.
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The settlements of the run's slots `from..from + slots` in region
/// [`FLEET_REGION`], up to the first slot not settled.
fn settled_slots(
    api: &NodeClient,
    manifest: &FleetManifest,
    from: u64,
    slots: u64,
) -> Result<Vec<quartier_ledger::Settlement>, FleetError> {
    let mut settled = Vec::new();
    for k in 0..slots {
        let slot = manifest.first_slot + from + k;
        let path = format!("/api/v1/regions/{}/slots/{slot}", FLEET_REGION.0);
        let (_, v) = api.get(&path)?;
        match serde_json::from_value::<quartier_ledger::Settlement>(v["settlement"].clone()) {
            Ok(s) => settled.push(s),
            Err(_) => break,
        }
    }
    Ok(settled)
}

/// Mode A: the household (by index in `wallets`, their seeds) of every
/// payee address an order of `slot` can name.
fn payee_households(wallets: &[[u8; 32]], slot: Slot) -> BTreeMap<([u8; 32], [u8; 32]), u32> {
    (0u32..)
        .zip(wallets)
        .flat_map(|(h, seed)| {
            [Side::Buy, Side::Sell].map(|side| {
                let a = payee_address(seed, slot, side);
                ((a.view, a.spend), h)
            })
        })
        .collect()
}

/// Mode A: a fleet's chain as the cryptographic adversary reads it, with the
/// answer key ([`chain_crypto`]).
#[derive(Clone, Debug)]
pub struct CryptoRun {
    /// Every shielded order of the run's slots, as published.
    pub orders: Vec<PublishedOrder>,
    /// The pool.
    pub pool: Vec<quartier_ledger::PoolOutput>,
    /// Who placed each order and what each input really spent.
    pub truth: CryptoTruth,
}

/// Mode A: what the cryptographic adversary attacks on a fleet's chain —
/// every shielded order of the run's slots `from..from + slots` as its block
/// published it, with its ring and scope, and the pool — and the answer key
/// the devnet's wallet seeds give: each order's meter and each funds
/// input's real member. `None` on a chain without mode A.
///
/// # Errors
/// [`FleetError`] if the node can not be read. Orders of other
/// participants are left out.
pub fn chain_crypto(
    api: &NodeClient,
    manifest: &FleetManifest,
    from: u64,
    slots: u64,
) -> Result<Option<CryptoRun>, FleetError> {
    let unexpected = |what: &str| FleetError::Unexpected(what.to_string());
    let (_, status) = api.get("/api/v1/status")?;
    let Some(policy) =
        serde_json::from_value::<quartier_ledger::ShieldedPolicy>(status["shielded"].clone()).ok()
    else {
        return Ok(None);
    };
    let chain = quartier_client::chain_id(&status).ok_or_else(|| unexpected("a chain id"))?;
    let wallets: Vec<[u8; 32]> = (0..manifest.households)
        .map(|i| wallet_seed(chain, manifest.seed, i))
        .collect();
    // Settled books: each order's run slot, position and household, by the
    // key image of its authorisation.
    let mut placed = BTreeMap::new();
    let mut params = None;
    let mut last = None;
    for (k, settlement) in (0..).zip(settled_slots(api, manifest, from, slots)?) {
        let slot = manifest.first_slot + from + k;
        params.get_or_insert(settlement.params);
        last = Some(settlement.height);
        let payees = payee_households(&wallets, Slot(slot));
        for (position, o) in (0u32..).zip(&settlement.orders) {
            // Another participant's order has no answer key: left out.
            if let Some(s) = &o.shielded
                && let Some(&household) = payees.get(&(s.payee.view, s.payee.spend))
            {
                placed.insert(s.key_image, (k, position, household));
            }
        }
    }
    let (Some(params), Some(last)) = (params, last) else {
        return Err(unexpected("no settled slot"));
    };
    let rings = quartier_client::meter_rings(api, FLEET_REGION)?;
    // The window's orders are in blocks after the settlement of a slot whose
    // book closed before theirs opened; earlier blocks are not read.
    let gate_slots = status["gate_ms"]
        .as_u64()
        .unwrap_or(0)
        .div_ceil(status["slot_ms"].as_u64().filter(|&ms| ms > 0).unwrap_or(1));
    let margin = status["lead_slots"].as_u64().unwrap_or(0) + gate_slots + 2;
    let first_height = match from.checked_sub(margin) {
        Some(before) => settled_slots(api, manifest, before, 1)?
            .first()
            .map_or(1, |s| s.height.0),
        None => 1,
    };
    let mut orders = Vec::new();
    let mut meters = Vec::new();
    for height in first_height..=last.0 {
        let (_, block) = api.get(&format!("/api/v1/blocks/{height}?full=true"))?;
        for tx in block["txs"].as_array().into_iter().flatten() {
            let Some(bytes) = tx["tx"].as_str().and_then(|h| hex::decode(h).ok()) else {
                return Err(unexpected("a block's transaction"));
            };
            let signed = SignedTx::decode(&bytes).map_err(|e| unexpected(&e.to_string()))?;
            let TxBody::PlaceShieldedOrder { order } = signed.tx.body else {
                continue;
            };
            let Some(&(slot, position, household)) = placed.get(&order.authorisation.key_image)
            else {
                continue;
            };
            let ring = match order.side {
                Side::Buy => rings.buy.clone(),
                Side::Sell => rings
                    .sell
                    .iter()
                    .filter(|(_, capacity)| *capacity >= order.energy)
                    .map(|(key, _)| *key)
                    .collect(),
            };
            let escrow = match order.side {
                Side::Buy => order
                    .energy
                    .value_at(params.grid_tariff())
                    .ok_or_else(|| unexpected("an escrow"))?,
                Side::Sell => Money::ZERO,
            };
            let scope = quartier_ledger::scope(
                chain,
                order.region,
                order.slot,
                quartier_ledger::side_byte(order.side),
            );
            let meter = manifest
                .meters
                .get(household as usize)
                .ok_or_else(|| unexpected("a household's meter"))?;
            meters.push(meter.0);
            orders.push(PublishedOrder {
                slot,
                position,
                signer: signed.tx.signer,
                order,
                ring,
                scope,
                escrow,
            });
        }
    }
    // The answer key of the funds: every household wallet, restored from its
    // seed, knows the key images of its outputs.
    let pool = quartier_client::pool_outputs(api, 0)?;
    let mut owner = BTreeMap::new();
    for seed in &wallets {
        let mut w = ShieldedWallet::from_seed(*seed, ring_policy(policy));
        w.scan(0, &pool);
        owner.extend(w.history().into_iter().map(|h| (h.key_image, h.index)));
    }
    let real_inputs = orders
        .iter()
        .map(|o| {
            // All of an order's inputs, or none if one is not a household's.
            o.order
                .funds
                .iter()
                .flat_map(|f| &f.inputs)
                .map(|i| owner.get(&i.key_image).copied())
                .collect::<Option<Vec<u64>>>()
                .unwrap_or_default()
        })
        .collect();
    Ok(Some(CryptoRun {
        orders,
        pool,
        truth: CryptoTruth {
            meters,
            real_inputs,
        },
    }))
}

fn enrol_error(e: &dyn std::fmt::Display) -> FleetError {
    FleetError::Enrol(BenchError::Refused(e.to_string()))
}

fn random_seed() -> Result<[u8; 32], FleetError> {
    crate::layout::random_seed().map_err(|e| enrol_error(&format!("randomness: {e}")))
}

/// The devnet key of household `index`: derived from the chain and the seed so
/// a run can be repeated. Only for simulated meters; a real meter's key comes
/// from its own entropy (`quartier keygen`).
pub fn meter_key(genesis: &Genesis, seed: u64, index: u32) -> SigningKey {
    let chain = genesis.chain_id();
    SigningKey::from_bytes(
        &hash::tagged(
            "QUARTIER_NODE_SIM_METER",
            &[&chain.0.0, &seed.to_le_bytes(), &index.to_le_bytes()],
        )
        .0,
    )
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The meter agents of a neighbourhood, enrolled on a chain.
pub struct Fleet {
    apis: Vec<NodeClient>,
    genesis: Genesis,
    hood: Neighbourhood,
    agents: Vec<MeterAgent>,
    /// The node each agent talks to now.
    node_of: Vec<usize>,
    manifest: FleetManifest,
    /// The next simulated quarter hour to read.
    next_interval: u64,
    /// Slots with orders, not yet seen settled.
    unsettled: Vec<Slot>,
    /// The latest chain time seen.
    chain_time: Timestamp,
    /// Household index of each meter account.
    households: BTreeMap<AccountId, usize>,
    /// Mode B: the enclaves that serve receipts.
    enclaves: Vec<NodeClient>,
    /// Mode B: the epoch keys fed to the agents so far.
    epoch_keys: BTreeMap<quartier_enclave::sealed::Epoch, [u8; 32]>,
    /// Mode A: the household of each order's payee address.
    payees: BTreeMap<([u8; 32], [u8; 32]), usize>,
    /// Mode A: the pool outputs fed to the agents so far.
    pool_fed: u64,
}

/// The devnet wallet seed of household `index` (mode A): like
/// [`meter_key`], only for simulated households.
pub fn wallet_seed(chain: ChainId, seed: u64, index: u32) -> [u8; 32] {
    hash::tagged(
        "QUARTIER_NODE_SIM_WALLET",
        &[&chain.0.0, &seed.to_le_bytes(), &index.to_le_bytes()],
    )
    .0
}

/// How much of its top-up a household prepays to the enclaves in mode B.
pub const PREPAID_SHARE_PERCENT: u64 = 75;

impl Fleet {
    /// Registers (DSO) and tops up (utility) one meter per household of
    /// `plan`, waits until all of that is final, and returns the fleet ready
    /// for the next slot.
    ///
    /// # Errors
    /// [`FleetError`] if the plan is invalid, a node refuses a transaction or
    /// enrolment is not final within `deadline`.
    pub fn enrol(
        apis: Vec<NodeClient>,
        genesis: Genesis,
        dso: &SigningKey,
        utility: &SigningKey,
        plan: &FleetPlan,
        deadline: Duration,
    ) -> Result<Fleet, FleetError> {
        let deadline = Instant::now() + deadline;
        let params = genesis
            .regions
            .iter()
            .find(|(r, _)| *r == FLEET_REGION)
            .map(|(_, p)| *p)
            .ok_or(FleetError::NoRegion(FLEET_REGION))?;
        let sim = SimPlan {
            households: plan.households,
            prosumers: plan.prosumers,
            days: 1,
            start_day: 1,
            seed: plan.seed,
            strategy: plan.strategy,
            params,
            lot_wh: 0,
            metering: Metering::Net,
        };
        let hood = Neighbourhood::new(&sim, Profiles::embedded()?)?;
        let keys: Vec<SigningKey> = (0..plan.households)
            .map(|i| meter_key(&genesis, plan.seed, i))
            .collect();
        let chain_id = genesis.chain_id();
        let api = &apis[0];
        let (dso_nonce, utility_nonce) =
            (nonce(api, &account(dso))?, nonce(api, &account(utility))?);
        let mut registrations = Vec::new();
        let mut mints = Vec::new();
        for ((n, key), household) in (0u64..).zip(&keys).zip(hood.households()) {
            let spec = household.spec();
            let role = if spec.is_prosumer() {
                MeterRole::Prosumer
            } else {
                MeterRole::Consumer
            };
            let register = TxBody::RegisterMeter {
                meter: account(key),
                region: FLEET_REGION,
                role,
                pv_watts: spec.pv_watts(),
            };
            registrations.push(body(chain_id, dso, dso_nonce + n, register));
            if genesis.shielded.is_none() {
                let mint = TxBody::Mint {
                    to: account(key),
                    amount: plan.top_up,
                };
                mints.push(body(chain_id, utility, utility_nonce + n, mint));
            }
        }
        let wallets: Vec<[u8; 32]> = (0..plan.households)
            .map(|i| wallet_seed(genesis.chain_id(), plan.seed, i))
            .collect();
        if let Some(policy) = genesis.shielded {
            // Mode A: the utility issues each top-up and shields it straight
            // into the household's wallet; the meter key never appears.
            let mut rng =
                <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(random_seed()?);
            let window = ring_policy(policy);
            for (n, seed) in (0u64..).zip(&wallets) {
                let address = ShieldedWallet::from_seed(*seed, window).address();
                let (output, received) =
                    quartier_shielded::output::create(&address, plan.top_up.get(), &mut rng)
                        .map_err(|e| enrol_error(&e))?;
                let mint = TxBody::Mint {
                    to: account(utility),
                    amount: plan.top_up,
                };
                let shield = TxBody::Shield {
                    amount: plan.top_up,
                    output,
                    mask: *received.mask,
                };
                mints.push(body(chain_id, utility, utility_nonce + 2 * n, mint));
                mints.push(body(chain_id, utility, utility_nonce + 2 * n + 1, shield));
            }
        }
        submit_window(&apis, &account(dso), dso_nonce, &registrations, deadline)?;
        submit_window(&apis, &account(utility), utility_nonce, &mints, deadline)?;
        if genesis.sealed_market.is_some() {
            // Deposits need a committee in office; its first epoch key says so.
            crate::loadgen::wait_for_epoch_key(api, deadline)?;
            let amount = Money::new(plan.top_up.get() / 100 * PREPAID_SHARE_PERCENT);
            for key in &keys {
                let deposit = TxBody::DepositToAuctioneer { amount };
                let start = nonce(api, &account(key))?;
                let tx = body(chain_id, key, start, deposit);
                submit_window(&apis, &account(key), start, &[tx], deadline)?;
            }
        }
        let mut agents = Vec::new();
        for ((key, household), wallet) in keys.into_iter().zip(hood.households()).zip(&wallets) {
            let start = nonce(api, &account(&key))?;
            let strategy = household.strategy(plan.strategy, plan.seed);
            let agent =
                MeterAgent::new(key, genesis.clone(), FLEET_REGION, params, strategy, start);
            agents.push(match (&genesis.sealed_market, genesis.shielded) {
                (Some(policy), _) => agent.sealed(policy.epoch_slots, random_seed()?),
                (None, Some(policy)) => {
                    let wallet = ShieldedWallet::from_seed(*wallet, ring_policy(policy));
                    agent
                        .shielded(wallet, random_seed()?)
                        .metering(fleet_metering(true))
                }
                (None, None) => agent,
            });
        }
        let first_slot = wall_ms() / genesis.slot_ms.max(1) + 1;
        let manifest = FleetManifest {
            households: plan.households,
            prosumers: plan.prosumers,
            seed: plan.seed,
            strategy: plan.strategy,
            start_interval: plan.start_interval,
            first_slot,
            meters: agents.iter().map(MeterAgent::account).collect(),
        };
        let n = apis.len().max(1);
        let households = manifest.meters.iter().copied().zip(0..).collect();
        Ok(Fleet {
            node_of: (0..agents.len()).map(|i| i % n).collect(),
            apis,
            genesis,
            hood,
            agents,
            manifest,
            next_interval: 0,
            unsettled: Vec::new(),
            chain_time: Timestamp(0),
            households,
            enclaves: Vec::new(),
            epoch_keys: BTreeMap::new(),
            payees: BTreeMap::new(),
            pool_fed: 0,
        })
    }

    /// Mode A: after a refused order, and while a given-up order's inputs
    /// wait to be settled, tells every wallet which key images the chain has
    /// spent, so none retries an output spent elsewhere (a household may
    /// also spend with `quartier wallet`) and none keeps an input pending
    /// that the chain never spent. All of them, paged:
    /// asking about its own would tell the node which are whose.
    fn sync_key_images(&mut self) {
        if self.genesis.shielded.is_none() {
            return;
        }
        if let Some(images) = self.first_answer(quartier_client::key_images) {
            self.tell_all(&AgentInput::KeyImages(images));
        }
    }

    /// The first node's answer to `ask`, if any node gives one.
    fn first_answer<T>(&self, ask: impl Fn(&NodeClient) -> Result<T, ClientError>) -> Option<T> {
        self.apis.iter().find_map(|a| ask(a).ok())
    }

    /// Hands every agent the same input, one that only updates what it
    /// knows (keys, outputs, rings): whatever it unblocks is carried out by
    /// the slot's polling.
    fn tell_all(&mut self, input: &AgentInput) {
        let now = self.chain_time;
        for agent in &mut self.agents {
            let _ = agent.handle(now, input.clone());
        }
    }

    /// Mode A: feeds the pool's new outputs and the meter rings to every
    /// agent (each wallet scans them itself, as a light client would).
    fn refresh_pool(&mut self) {
        if self.genesis.shielded.is_none() {
            return;
        }
        if let Some(rings) = self.first_answer(|a| quartier_client::meter_rings(a, FLEET_REGION)) {
            self.tell_all(&AgentInput::MeterRings {
                buy: rings.buy,
                sell: rings.sell,
            });
        }
        let from = self.pool_fed;
        if let Some(outputs) = self
            .first_answer(|a| quartier_client::pool_outputs(a, from))
            .filter(|o| !o.is_empty())
        {
            self.pool_fed += outputs.len() as u64;
            self.tell_all(&AgentInput::PoolOutputs { from, outputs });
        }
    }

    /// Mode B: the enclaves' API URLs, where households fetch their receipts.
    ///
    /// # Errors
    /// [`FleetError::Client`] for a URL that is not `http://host:port`.
    pub fn with_enclaves(mut self, urls: &[String]) -> Result<Fleet, FleetError> {
        self.enclaves = urls
            .iter()
            .map(|u| NodeClient::new(u))
            .collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Mode B: hands every agent the epoch keys it may seal to now, when
    /// they changed (none while the committee evicts members, none of a
    /// former committee's).
    fn refresh_epoch_keys(&mut self) {
        if self.genesis.sealed_market.is_none() {
            return;
        }
        let Some(sealed) = self
            .apis
            .iter()
            .find_map(|a| match a.get("/api/v1/sealed") {
                Ok((200, v)) => Some(v),
                _ => None,
            })
        else {
            return;
        };
        let sealable: BTreeMap<_, _> = quartier_client::sealable_epoch_keys(&sealed)
            .into_iter()
            .collect();
        if sealable == self.epoch_keys {
            return;
        }
        self.epoch_keys = sealable;
        let keys = self.epoch_keys.iter().map(|(e, k)| (*e, *k)).collect();
        self.tell_all(&AgentInput::EpochKeys(keys));
    }

    /// Which account is which household, and when the run started.
    pub fn manifest(&self) -> &FleetManifest {
        &self.manifest
    }

    /// Trades `slots` slots (forever if `None`), reporting each placed and
    /// settled slot to `on_event`.
    ///
    /// # Errors
    /// [`FleetError::Client`] if no node answers for a whole slot.
    pub fn run(
        &mut self,
        slots: Option<u64>,
        mut on_event: impl FnMut(FleetEvent),
    ) -> Result<(), FleetError> {
        let first = self.manifest.first_slot;
        let end = slots.map(|n| first + n);
        let mut slot = first;
        while end.is_none_or(|e| slot < e) {
            let starts = slot.saturating_mul(self.genesis.slot_ms);
            while wall_ms() < starts {
                self.poll_settlements(&mut on_event)?;
                std::thread::sleep(Duration::from_millis(50));
            }
            // A host that fell behind skips slots but still reads every
            // interval, so the households stay what an offline run makes.
            let current = wall_ms() / self.genesis.slot_ms.max(1);
            if current > slot {
                slot = current;
                continue;
            }
            self.place(Slot(slot), &mut on_event)?;
            slot += 1;
        }
        // Wait for the last settlements.
        let last = Slot(slot.saturating_sub(1));
        let deadline = self.genesis.close_of(last).0 + 30_000;
        while !self.unsettled.is_empty() && wall_ms() < deadline {
            self.poll_settlements(&mut on_event)?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Reads the meters for `slot`, places the orders and sees them final.
    fn place(
        &mut self,
        slot: Slot,
        on_event: &mut impl FnMut(FleetEvent),
    ) -> Result<(), FleetError> {
        let interval = self.manifest.start_interval + (slot.0 - self.manifest.first_slot);
        let mut readings = Vec::new();
        while self.next_interval <= interval {
            readings = self.hood.read(self.next_interval);
            self.next_interval += 1;
        }
        let now = self.chain_now();
        self.refresh_epoch_keys();
        self.refresh_pool();
        let covered = self.genesis.sealed_market.is_some() || self.genesis.shielded.is_some();
        let metering = fleet_metering(self.genesis.shielded.is_some());
        let slot_of_day = (interval % 96) as u32;
        let mut placed = 0usize;
        let mut abandoned = Vec::new();
        // Real meters send at moments of their own; here the households
        // take turns in a fresh order each slot, so an order's place in the
        // book (its arrival) says nothing about whose it is.
        for i in arrival_order(self.manifest.seed, slot, readings.len()) {
            let Some(reading) = readings.get(i) else {
                continue;
            };
            let net_wh = reading.net_wh();
            // In modes A and B every meter sends an order every slot (cover
            // orders); mode A's gross-metered prosumers a buy and a sell.
            let flows = metering
                .orders(reading.consumed.get(), reading.produced.get())
                .len();
            placed += if flows == 0 && covered { 1 } else { flows };
            let effects = self.agents[i].handle(
                now,
                AgentInput::Measured {
                    slot,
                    slot_of_day,
                    net_wh,
                    produced_wh: reading.produced.get(),
                },
            );
            abandoned.extend(self.carry_out(i, now, effects)?);
        }
        // Poll until every order is final or abandoned, or the slot is over
        // (an order still in flight then waits in its agent's queue).
        let give_up = self.genesis.close_of(slot).0;
        while self.agents.iter().any(|a| !a.is_idle()) && wall_ms() < give_up {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.chain_now();
            self.refresh_epoch_keys();
            for i in 0..self.agents.len() {
                let hashes: Vec<_> = self.agents[i].in_flight().map(SignedTx::hash).collect();
                let inputs: Vec<_> = if hashes.is_empty() {
                    if self.agents[i].is_idle() {
                        continue;
                    }
                    vec![AgentInput::Tick]
                } else {
                    hashes
                        .into_iter()
                        .map(|hash| AgentInput::Status {
                            hash,
                            status: self.status(i, &hash),
                        })
                        .collect()
                };
                for input in inputs {
                    let effects = self.agents[i].handle(now, input);
                    abandoned.extend(self.carry_out(i, now, effects)?);
                }
            }
        }
        let pending = self.agents.iter().filter(|a| !a.is_idle()).count();
        if !abandoned.is_empty() || self.agents.iter().any(|a| a.awaits_key_images(now)) {
            self.sync_key_images();
        }
        self.unsettled.push(slot);
        on_event(FleetEvent::Placed {
            slot,
            orders: placed.saturating_sub(abandoned.len() + pending),
            abandoned: abandoned.len(),
            pending,
        });
        abandoned.into_iter().for_each(&mut *on_event);
        self.poll_settlements(on_event)
    }

    /// Carries out an agent's effects; returns the orders it abandoned.
    fn carry_out(
        &mut self,
        i: usize,
        now: Timestamp,
        effects: Vec<AgentEffect>,
    ) -> Result<Vec<FleetEvent>, FleetError> {
        let mut queue = effects;
        let mut abandoned = Vec::new();
        let mut attempts = 0;
        while let Some(effect) = queue.pop() {
            let input = match effect {
                AgentEffect::Submit(tx) => {
                    if let TxBody::PlaceShieldedOrder { order } = &tx.tx.body {
                        self.payees.insert((order.payee.view, order.payee.spend), i);
                    }
                    attempts += 1;
                    if attempts > 2 * self.apis.len() {
                        // Every node is down: leave it in flight, polling retries.
                        continue;
                    }
                    let hash = tx.hash();
                    let status = self.submit(i, &tx);
                    AgentInput::Status { hash, status }
                }
                AgentEffect::FetchNonce => {
                    let api = &self.apis[self.node_of[i]];
                    AgentInput::Nonce(nonce(api, &self.agents[i].account()).map_err(
                        |e| match e {
                            BenchError::Client(c) => FleetError::Client(c),
                            other => FleetError::Enrol(other),
                        },
                    )?)
                }
                AgentEffect::Abandoned { slot, reason } => {
                    abandoned.push(FleetEvent::Abandoned {
                        slot,
                        household: i,
                        reason,
                    });
                    continue;
                }
            };
            queue.extend(self.agents[i].handle(now, input));
        }
        Ok(abandoned)
    }

    fn submit(&mut self, i: usize, tx: &SignedTx) -> TxProgress {
        let body = quartier_client::tx::submit_body(tx);
        match self.apis[self.node_of[i]].post("/api/v1/txs", &body) {
            // Accepted, or the node already has it.
            Ok((202 | 409, _)) => TxProgress::Pending,
            // A full mempool: ask again later.
            Ok((429, _)) => TxProgress::Pending,
            Ok((_, reply)) => TxProgress::Rejected(quartier_client::error_of(&reply)),
            Err(_) => {
                self.node_of[i] = (self.node_of[i] + 1) % self.apis.len();
                TxProgress::Unreachable
            }
        }
    }

    fn status(&mut self, i: usize, hash: &quartier_types::hash::Digest) -> TxProgress {
        use quartier_types::api::TxStatus;
        match self.apis[self.node_of[i]].tx_status(hash) {
            Ok(TxStatus::Finalized { .. }) => TxProgress::Finalized,
            Ok(TxStatus::Pending) => TxProgress::Pending,
            Ok(TxStatus::Rejected { reason }) => TxProgress::Rejected(reason),
            Ok(TxStatus::Unknown) => TxProgress::Unknown,
            Err(_) => {
                self.node_of[i] = (self.node_of[i] + 1) % self.apis.len();
                TxProgress::Unreachable
            }
        }
    }

    /// The chain's time from the first node that answers (the last time
    /// seen if none does: a chain that is down does not move on).
    fn chain_now(&mut self) -> Timestamp {
        for api in &self.apis {
            if let Ok((200, v)) = api.get("/api/v1/status")
                && let Some(t) = v["time_ms"].as_u64()
            {
                self.chain_time = self.chain_time.max(Timestamp(t));
                break;
            }
        }
        self.chain_time
    }

    /// Feeds settled slots back to the agents' strategies.
    fn poll_settlements(
        &mut self,
        on_event: &mut impl FnMut(FleetEvent),
    ) -> Result<(), FleetError> {
        let now = wall_ms();
        let mut still = Vec::new();
        for slot in std::mem::take(&mut self.unsettled) {
            if now < self.genesis.close_of(slot).0 {
                still.push(slot);
                continue;
            }
            if self.genesis.sealed_market.is_some() {
                if !self.settle_sealed(slot, now, on_event) {
                    still.push(slot);
                }
                continue;
            }
            let path = format!("/api/v1/regions/{}/slots/{}", FLEET_REGION.0, slot.0);
            let settlement = self
                .apis
                .iter()
                .find_map(|api| api.get(&path).ok())
                .map(|(_, v)| v["settlement"].clone())
                .filter(|s| !s.is_null())
                .and_then(|s| serde_json::from_value::<quartier_ledger::Settlement>(s).ok());
            let Some(settlement) = settlement else {
                still.push(slot);
                continue;
            };
            let price = settlement.clearing.mean_price();
            for (order, result) in settlement.orders.iter().zip(&settlement.clearing.orders) {
                let household = match &order.shielded {
                    Some(s) => self.payees.remove(&(s.payee.view, s.payee.spend)),
                    None => self.households.get(&order.meter).copied(),
                };
                if let Some(h) = household {
                    let input = AgentInput::Settled {
                        slot,
                        side: Some(order.order.side),
                        matched: result.matched,
                        market_price: price,
                    };
                    // Settled inputs produce no effects of their own.
                    let _ = self.agents[h].handle(Timestamp(now), input);
                }
            }
            on_event(FleetEvent::Settled {
                slot,
                orders: settlement.orders.len(),
                buys: Some(
                    settlement
                        .orders
                        .iter()
                        .filter(|o| o.order.side == Side::Buy)
                        .count(),
                ),
                local: settlement.clearing.totals.local_energy,
                price,
            });
        }
        self.unsettled = still;
        Ok(())
    }

    /// Mode B: once the slot's report is on chain, fetches its receipts from
    /// an enclave, checks them against the report's root and lets each
    /// household open its own. Returns whether the slot is done.
    fn settle_sealed(
        &mut self,
        slot: Slot,
        now: u64,
        on_event: &mut impl FnMut(FleetEvent),
    ) -> bool {
        let path = format!("/api/v1/regions/{}/reports?last=64", FLEET_REGION.0);
        let summary = self
            .apis
            .iter()
            .find_map(|api| match api.get(&path) {
                Ok((200, v)) => Some(v),
                _ => None,
            })
            .and_then(|v| {
                v["reports"].as_array()?.iter().find_map(|r| {
                    serde_json::from_value::<quartier_ledger::PostedReport>(r.clone())
                        .ok()
                        .filter(|p| p.summary.slot == slot)
                })
            })
            .map(|p| p.summary);
        let Some(summary) = summary else {
            return false;
        };
        let request = quartier_enclave::rpc::Request::Report {
            region: FLEET_REGION,
            slot,
        };
        let report =
            self.enclaves
                .iter()
                .find_map(|e| match quartier_client::enclave::call(e, &request) {
                    Some(quartier_enclave::rpc::Response::Report(Some(r)))
                        if r.summary == summary
                            && quartier_enclave::auctioneer::receipts_root(&r.receipts)
                                == summary.receipts_root =>
                    {
                        Some(r)
                    }
                    _ => None,
                });
        let t = summary.aggregates.totals;
        let price = summary.aggregates.prices.map(|p| p.mean);
        let mut verified = 0;
        let mut expected = 0;
        for agent in &mut self.agents {
            if !agent.awaited_receipts().contains(&slot) {
                continue;
            }
            expected += 1;
            let Some(receipt) = report
                .as_ref()
                .and_then(|r| agent.open_receipt(slot, &r.receipts))
            else {
                continue;
            };
            verified += 1;
            if let quartier_enclave::auctioneer::Outcome::Cleared { matched, .. } = receipt.outcome
            {
                let input = AgentInput::Settled {
                    slot,
                    side: None,
                    matched,
                    market_price: price,
                };
                let _ = agent.handle(Timestamp(now), input);
            }
        }
        on_event(FleetEvent::Settled {
            slot,
            orders: summary.aggregates.sealed as usize,
            buys: None,
            local: t.local_energy,
            price,
        });
        on_event(FleetEvent::Receipts {
            slot,
            verified,
            expected,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::arrival_order;
    use quartier_types::Slot;

    #[test]
    fn households_arrive_in_a_fresh_order_each_slot() {
        let first = arrival_order(1, Slot(10), 37);
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..37).collect::<Vec<_>>(), "a permutation");
        assert_ne!(first, (0..37).collect::<Vec<_>>());
        assert_ne!(first, arrival_order(1, Slot(11), 37));
        assert_eq!(first, arrival_order(1, Slot(10), 37), "repeatable per run");
    }
}
