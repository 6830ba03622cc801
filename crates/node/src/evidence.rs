//! The evidence of a validator-set change, as a node stores it and serves it
//! in sync bundles and `GET /api/v1/epochs`.

use serde::{Deserialize, Serialize};

/// The evidence of one validator-set change (see
/// [`quartier_light::EpochChange`]): the last block of the epoch before it,
/// that block's finalization, and the proof of the `ValidatorSets` record
/// under its root; each hex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochEvidence {
    /// The block's canonical encoding.
    pub block: String,
    /// Its finalization (empty until this node has read it from consensus).
    pub finalization: String,
    /// The borsh bytes of the record's [`quartier_ledger::StateProof`].
    pub proof: String,
}

impl EpochEvidence {
    /// As the light client takes it.
    ///
    /// # Errors
    /// [`MalformedEvidence`] if a part does not decode.
    pub fn decode(&self) -> Result<quartier_light::EpochChange, MalformedEvidence> {
        let bad = |_| MalformedEvidence;
        let proof = hex::decode(&self.proof).map_err(bad)?;
        Ok(quartier_light::EpochChange {
            block: hex::decode(&self.block).map_err(bad)?,
            finalization: hex::decode(&self.finalization).map_err(bad)?,
            proof: borsh::from_slice(&proof).map_err(|_| MalformedEvidence)?,
        })
    }
}

/// A part of an [`EpochEvidence`] does not decode.
#[derive(Debug, thiserror::Error)]
#[error("epoch change: a part does not decode")]
pub struct MalformedEvidence;
