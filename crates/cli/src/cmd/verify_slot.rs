//! `quartier verify-slot`: re-run a settled slot's clearing from a node's public data.

use super::Failure;

pub(crate) fn verify_slot(node: &str, region: u32, slot: u64) -> Result<(), Failure> {
    let client = quartier_client::NodeClient::new(node).map_err(|e| Failure::BadInput(e.into()))?;
    let (code, body) = client
        .get(&format!("/api/v1/regions/{region}/slots/{slot}"))
        .map_err(|e| Failure::Internal(e.into()))?;
    if code != 200 {
        return Err(Failure::BadInput(anyhow::anyhow!(
            "node answered {code}: {body}"
        )));
    }
    if body["settlement"].is_null() {
        return Err(Failure::BadInput(anyhow::anyhow!(
            "region {region} slot {slot} is not settled on this node"
        )));
    }
    let settlement: quartier_ledger::Settlement =
        serde_json::from_value(body["settlement"].clone())
            .map_err(|e| Failure::Internal(anyhow::anyhow!("settlement from the node: {e}")))?;
    let orders: Vec<_> = settlement.orders.iter().map(|o| o.order).collect();
    let recomputed = quartier_auction::clear(&settlement.params, &orders)
        .map_err(|e| Failure::Internal(anyhow::anyhow!("re-running the clearing: {e}")))?;
    match first_difference(&settlement.clearing, &recomputed) {
        None => {
            println!(
                "MATCH region {region} slot {slot}: {} orders, {} trades, {} locally",
                orders.len(),
                recomputed.trades.len(),
                recomputed.totals.local_energy
            );
            Ok(())
        }
        Some(diff) => {
            println!("MISMATCH region {region} slot {slot}: {diff}");
            Err(Failure::Internal(anyhow::anyhow!(
                "settlement differs from the re-run clearing"
            )))
        }
    }
}

/// The first place where the stored clearing and the re-run differ.
pub(crate) fn first_difference(
    stored: &quartier_auction::Clearing,
    rerun: &quartier_auction::Clearing,
) -> Option<String> {
    if stored.trades.len() != rerun.trades.len() {
        return Some(format!(
            "{} trades stored, {} re-run",
            stored.trades.len(),
            rerun.trades.len()
        ));
    }
    for (i, (a, b)) in stored.trades.iter().zip(&rerun.trades).enumerate() {
        if a != b {
            return Some(format!("trade {i}: stored {a:?}, re-run {b:?}"));
        }
    }
    for (i, (a, b)) in stored.orders.iter().zip(&rerun.orders).enumerate() {
        if a != b {
            return Some(format!("order {i}: stored {a:?}, re-run {b:?}"));
        }
    }
    if stored.grid != rerun.grid {
        return Some("grid flows differ".to_string());
    }
    if stored.totals != rerun.totals {
        return Some(format!(
            "totals: stored {:?}, re-run {:?}",
            stored.totals, rerun.totals
        ));
    }
    None
}
