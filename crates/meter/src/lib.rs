//! The meter side of the market: how a household bids, and the agent that
//! turns each metered slot into a signed order and sees it to finality.
//!
//! Pure: no I/O, clock or entropy. The host (the simulator, or the node's
//! meter runner against a devnet) supplies readings, chain time and node
//! answers, and carries out the agent's effects.

pub mod agent;
pub mod decoys;
pub mod lots;
pub mod metering;
pub mod strategy;
pub mod wallet;

pub use agent::{AgentEffect, AgentInput, MeterAgent, TxProgress};
pub use strategy::{
    BidContext, BidOutcome, BiddingStrategy, Preferences, PriceRange, StrategyKind,
};
