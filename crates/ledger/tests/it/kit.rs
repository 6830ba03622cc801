//! Deterministic keys, a genesis and a chain driver for tests.

use ed25519_dalek::SigningKey;
use quartier_ledger::{
    BlockContext, BlockOutcome, Genesis, MeterRole, SignedTx, State, Tx, TxBody, execute_block,
};
pub use quartier_testkit::{id, key};
use quartier_types::{AccountId, Height, Money, Price, RegionId, RegionParams, Timestamp};
use std::collections::BTreeMap;

pub const SLOT_MS: u64 = 900_000;
pub const GATE_MS: u64 = 60_000;
pub const R1: RegionId = RegionId(1);
pub const R2: RegionId = RegionId(2);

pub fn chf(francs: u64) -> Money {
    Money::new(francs * 100_000_000)
}

pub fn r1_params() -> RegionParams {
    RegionParams::new(Price::new(20_750), Price::new(4_000), Price::ZERO).unwrap()
}

pub fn r2_params() -> RegionParams {
    RegionParams::new(Price::new(27_000), Price::new(9_000), Price::new(500)).unwrap()
}

pub fn genesis() -> Genesis {
    Genesis {
        regions: vec![(R1, r1_params()), (R2, r2_params())],
        slot_ms: SLOT_MS,
        gate_ms: GATE_MS,
        allocations: vec![(id(&key("utility")), chf(1_000))],
        epoch_blocks: 8,
        ..Genesis::new(
            "quartier-test",
            id(&key("dso")),
            id(&key("utility")),
            (0..4)
                .map(|i| id(&key(&format!("validator-{i}"))))
                .collect(),
        )
    }
}

/// A chain under test: state plus the next block's height and time.
pub struct Chain {
    pub state: State,
    pub height: u64,
    pub time: u64,
    pending: BTreeMap<AccountId, u64>,
    queued: Vec<SignedTx>,
}

impl Chain {
    pub fn new() -> Chain {
        Self::from_genesis(genesis())
    }

    pub fn from_genesis(g: Genesis) -> Chain {
        Chain {
            state: State::from_genesis(g).unwrap(),
            height: 1,
            time: 0,
            pending: BTreeMap::new(),
            queued: Vec::new(),
        }
    }

    /// The context of the next block.
    pub fn ctx(&self) -> BlockContext {
        BlockContext {
            height: Height(self.height),
            time: Timestamp(self.time),
        }
    }

    /// A transaction signed by `signer` with its next nonce (counting queued ones).
    pub fn tx(&self, signer: &SigningKey, body: TxBody) -> SignedTx {
        let who = id(signer);
        let nonce = self.state.account(&who).nonce + self.pending.get(&who).copied().unwrap_or(0);
        Tx {
            chain_id: self.state.chain_id(),
            signer: who,
            nonce,
            body,
        }
        .sign(signer)
    }

    /// Queues a transaction for the next block.
    pub fn queue(&mut self, signer: &SigningKey, body: TxBody) {
        let tx = self.tx(signer, body);
        *self.pending.entry(id(signer)).or_default() += 1;
        self.queued.push(tx);
    }

    /// Queues the DSO's registration of `meter` in `region` and, unless
    /// `funds` is zero, the utility's top-up of it.
    pub fn enrol(
        &mut self,
        meter: &SigningKey,
        region: RegionId,
        role: MeterRole,
        pv_watts: u32,
        funds: Money,
    ) {
        self.queue(
            &key("dso"),
            TxBody::RegisterMeter {
                meter: id(meter),
                region,
                role,
                pv_watts,
            },
        );
        if !funds.is_zero() {
            self.queue(
                &key("utility"),
                TxBody::Mint {
                    to: id(meter),
                    amount: funds,
                },
            );
        }
    }

    /// Queues a transaction signed elsewhere (e.g. by a one-time key).
    pub fn queue_signed(&mut self, tx: SignedTx) {
        self.queued.push(tx);
    }

    /// Executes the queued transactions as a block at `time` and advances.
    pub fn block_at(&mut self, time: u64) -> BlockOutcome {
        self.time = time;
        let txs = std::mem::take(&mut self.queued);
        self.pending.clear();
        let ctx = self.ctx();
        let outcome = execute_block(&mut self.state, &ctx, txs).unwrap();
        self.height += 1;
        outcome
    }

    /// Executes the queued transactions and asserts each was accepted.
    pub fn block_ok(&mut self, time: u64) -> BlockOutcome {
        let outcome = self.block_at(time);
        for (i, r) in outcome.results.iter().enumerate() {
            assert!(r.is_ok(), "tx {i} rejected: {r:?}");
        }
        outcome
    }
}
