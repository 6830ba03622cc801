//! Decoders of the node's answers that the privacy modes need.

use crate::{ClientError, NodeClient};

/// Mode B: the epoch keys in a `GET /api/v1/sealed` answer, oldest first
/// (entries that do not decode are left out).
pub fn epoch_keys(
    sealed: &serde_json::Value,
) -> Vec<(quartier_enclave_proto::sealed::Epoch, [u8; 32])> {
    sealed["epochs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let key = hex::decode(e["public_key"].as_str()?).ok()?;
            Some((
                quartier_enclave_proto::sealed::Epoch(e["epoch"].as_u64()?),
                key.try_into().ok()?,
            ))
        })
        .collect()
}

/// Mode B: the epoch keys in a `GET /api/v1/sealed` answer a household may
/// seal to now: those the committee in office made (from its
/// `first_epoch`), none while it evicts members (they could open them).
pub fn sealable_epoch_keys(
    sealed: &serde_json::Value,
) -> Vec<(quartier_enclave_proto::sealed::Epoch, [u8; 32])> {
    let committee = &sealed["committee"];
    let evicting = committee["evicted"]
        .as_array()
        .is_some_and(|e| !e.is_empty());
    let Some(first) = committee["first_epoch"].as_u64().filter(|_| !evicting) else {
        return Vec::new();
    };
    epoch_keys(sealed)
        .into_iter()
        .filter(|(epoch, _)| epoch.0 >= first)
        .collect()
}

/// Mode A: pool outputs from index `from` to the end, page by page.
///
/// # Errors
/// [`ClientError`] if the node is unreachable or a page does not decode.
pub fn pool_outputs(
    api: &NodeClient,
    from: u64,
) -> Result<Vec<quartier_ledger::PoolOutput>, ClientError> {
    let mut outputs = Vec::new();
    loop {
        let at = from + outputs.len() as u64;
        let (status, page) = api.get(&format!("/api/v1/pool/outputs?from={at}&limit=4096"))?;
        let entries = page["outputs"].as_array().filter(|_| status == 200);
        let entries = entries.ok_or(ClientError::Malformed)?;
        for e in entries {
            outputs.push(serde_json::from_value(e.clone()).map_err(|_| ClientError::Malformed)?);
        }
        let total = page["total"].as_u64().ok_or(ClientError::Malformed)?;
        if entries.is_empty() || from + outputs.len() as u64 >= total {
            return Ok(outputs);
        }
    }
}

/// Mode A: every spent key image on chain, page by page.
///
/// # Errors
/// [`ClientError`] if the node is unreachable or a page does not decode.
pub fn key_images(api: &NodeClient) -> Result<std::collections::BTreeSet<[u8; 32]>, ClientError> {
    let mut images = std::collections::BTreeSet::new();
    let mut after = String::new();
    loop {
        let (status, page) = api.get(&format!("/api/v1/pool/key_images?limit=4096{after}"))?;
        let entries = page["key_images"].as_array().filter(|_| status == 200);
        for e in entries.ok_or(ClientError::Malformed)? {
            let image = e
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or(ClientError::Malformed)?;
            images.insert(image);
            after = format!("&after={}", hex::encode(image));
        }
        if page["more"] != true {
            return Ok(images);
        }
    }
}

/// Mode A: a ring of meter keys, in the order the ledger verifies it.
pub type MeterRing = Vec<[u8; 32]>;

/// Mode A: a region's prosumers with the energy each can produce in a slot,
/// in the ledger's order (a sell of `E` is signed over those that reach `E`).
pub type Sellers = Vec<([u8; 32], quartier_types::Energy)>;

/// Mode A: a region's rings, as `GET /api/v1/regions/{r}/rings` serves them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeterRings {
    /// Every active meter: a buy's ring.
    pub buy: MeterRing,
    /// The active prosumers with their energy per slot.
    pub sell: Sellers,
    /// Every meter ever registered: an allowance's ring.
    pub allowance: MeterRing,
}

/// Mode A: a region's meter rings.
///
/// # Errors
/// [`ClientError`] if the node is unreachable or the answer does not decode.
pub fn meter_rings(
    api: &NodeClient,
    region: quartier_types::RegionId,
) -> Result<MeterRings, ClientError> {
    let (status, v) = api.get(&format!("/api/v1/regions/{}/rings", region.0))?;
    let key = |k: &serde_json::Value| {
        k.as_str()
            .and_then(|a| a.parse::<quartier_types::AccountId>().ok())
            .map(|a| a.0)
            .ok_or(ClientError::Malformed)
    };
    let list = |side: &str| {
        v[side]
            .as_array()
            .filter(|_| status == 200)
            .ok_or(ClientError::Malformed)
    };
    let buy = list("buy")?.iter().map(key).collect::<Result<_, _>>()?;
    let allowance: MeterRing = list("allowance")?
        .iter()
        .map(key)
        .collect::<Result<_, _>>()?;
    let sell = list("sell")?
        .iter()
        .map(|s| {
            let energy = s["energy_per_slot"]
                .as_u64()
                .ok_or(ClientError::Malformed)?;
            Ok((key(&s["meter"])?, quartier_types::Energy::new(energy)))
        })
        .collect::<Result<_, ClientError>>()?;
    Ok(MeterRings {
        buy,
        sell,
        allowance,
    })
}

/// The chain id in a `GET /api/v1/status` answer.
pub fn chain_id(status: &serde_json::Value) -> Option<quartier_ledger::ChainId> {
    let bytes = hex::decode(status["chain_id"].as_str()?).ok()?;
    Some(quartier_ledger::ChainId(quartier_types::hash::Digest(
        bytes.try_into().ok()?,
    )))
}
