//! `quartier wallet`: a household's view of its own account (mode A wallet, mode B receipts).

use super::Failure;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum WalletCommand {
    /// Mode A: scan the whole shielded pool locally for this wallet's
    /// outputs (the node never sees the wallet's keys) and print its balance.
    Balance {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
    },
    /// Mode A: every output this wallet received (top-ups, change, an
    /// order's proceeds or refund) and whether it is spent.
    History {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
    },
    /// Mode A: move transparent IOUs of an account into a new output of
    /// this wallet (the account and the amount are public).
    Shield {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
        /// The paying account's key file.
        #[arg(long)]
        from: PathBuf,
        /// The amount in Rappen (1 CHF = 100).
        #[arg(long)]
        rappen: u64,
    },
    /// Mode A: pay out of this wallet to a transparent account, from a
    /// one-time signer (change returns to the wallet). The household's meter
    /// authorises it anonymously among its region's meters, once a slot.
    Unshield {
        #[command(flatten)]
        wallet: ShieldedWalletArgs,
        /// The household's meter key file (a devnet writes
        /// `meters/household-N.key`).
        #[arg(long)]
        meter: PathBuf,
        /// The meter's region.
        #[arg(long, default_value_t = 1)]
        region: u32,
        /// The receiving account (hex public key).
        #[arg(long)]
        to: quartier_types::AccountId,
        /// The amount in Rappen (1 CHF = 100).
        #[arg(long)]
        rappen: u64,
    },
    /// Mode B: fetch the receipts of the last reported slots from an
    /// enclave, check each slot's receipts against the root the committee
    /// signed on chain, and open this wallet's own (its receipt keys are
    /// derived from the wallet key). Exit code 1 if a root does not match.
    Receipts {
        /// The wallet's (meter's) key file.
        #[arg(long)]
        key: PathBuf,
        /// A node's API, e.g. http://127.0.0.1:7401.
        #[arg(long)]
        node: String,
        /// Enclave APIs to ask (the first that has the slot answers).
        #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
        enclave: Vec<String>,
        /// The region.
        #[arg(long, default_value_t = 1)]
        region: u32,
        /// How many of the latest reported slots to check.
        #[arg(long, default_value_t = 96)]
        last: usize,
    },
}

/// A mode A wallet and the node it reads.
#[derive(clap::Args)]
pub(crate) struct ShieldedWalletArgs {
    /// The wallet's seed file (32 secret bytes, hex: `quartier keygen`
    /// writes one; a devnet writes `wallets/household-N.key`).
    #[arg(long)]
    pub(crate) seed: PathBuf,
    /// A node's API, e.g. http://127.0.0.1:7401.
    #[arg(long)]
    pub(crate) node: String,
}

/// What to do with a mode A wallet.
pub(crate) enum WalletAction {
    Balance,
    History,
    Shield {
        from: PathBuf,
        rappen: u64,
    },
    Unshield {
        meter: PathBuf,
        region: u32,
        to: quartier_types::AccountId,
        rappen: u64,
    },
}

/// Money (µRp) from whole Rappen (1 Rp = 10^6 µRp).
pub(crate) fn from_rappen(rappen: u64) -> Result<quartier_types::Money, Failure> {
    rappen
        .checked_mul(1_000_000)
        .map(quartier_types::Money::new)
        .ok_or_else(|| Failure::BadInput(anyhow::anyhow!("amount too large")))
}

/// Runs a mode A wallet command against a node.
pub(crate) fn shielded_wallet(
    args: &ShieldedWalletArgs,
    action: WalletAction,
) -> Result<(), Failure> {
    use quartier_client::wallet::{self as sc, ShieldedClientError};
    use quartier_meter::wallet::{Payee, Spending};
    let bad = |e: anyhow::Error| Failure::BadInput(e);
    let api = quartier_client::NodeClient::new(&args.node).map_err(|e| bad(e.into()))?;
    let seed = quartier_node::config::read_key(&args.seed).map_err(|e| bad(e.into()))?;
    let failed = |e: ShieldedClientError| match e {
        ShieldedClientError::NoPool | ShieldedClientError::Wallet(_) => Failure::BadInput(e.into()),
        other => Failure::Internal(other.into()),
    };
    let timeout = std::time::Duration::from_secs(60);
    let chf = |m: quartier_types::Money| format!("{:.2} CHF", m.get() as f64 / 1e8);
    match action {
        WalletAction::Balance => {
            let w = sc::restore(&api, seed).map_err(failed)?;
            let unspent = w
                .history()
                .iter()
                .filter(|h| h.state == Spending::Unspent)
                .count();
            println!(
                "{} in {unspent} unspent outputs (pool scanned to index {})",
                chf(w.balance()),
                w.scanned()
            );
        }
        WalletAction::History => {
            let w = sc::restore(&api, seed).map_err(failed)?;
            for h in w.history() {
                let payee = match h.payee {
                    Payee::Main => "to the wallet's address".to_string(),
                    Payee::Order { slot, side } => {
                        format!("{side:?} order of slot {}", slot.0).to_lowercase()
                    }
                };
                let state = match h.state {
                    Spending::Unspent => "unspent",
                    Spending::Pending(..) => "pending",
                    Spending::Spent => "spent",
                };
                println!(
                    "output {:>7}  {:>14}  {state:<8} {payee}",
                    h.index,
                    chf(h.amount)
                );
            }
            println!("balance {}", chf(w.balance()));
        }
        WalletAction::Shield { from, rappen } => {
            let key = ed25519_dalek::SigningKey::from_bytes(
                &quartier_node::config::read_key(&from).map_err(|e| bad(e.into()))?,
            );
            let amount = from_rappen(rappen)?;
            sc::shield(&api, &key, seed, amount, timeout).map_err(failed)?;
            println!("shielded {} into the wallet", chf(amount));
        }
        WalletAction::Unshield {
            meter,
            region,
            to,
            rappen,
        } => {
            let amount = from_rappen(rappen)?;
            let meter = ed25519_dalek::SigningKey::from_bytes(
                &quartier_node::config::read_key(&meter).map_err(|e| bad(e.into()))?,
            );
            let region = quartier_types::RegionId(region);
            sc::unshield(&api, (&seed, &meter), (region, to, amount), timeout).map_err(failed)?;
            println!("paid {} out of the wallet to {to}", chf(amount));
        }
    }
    Ok(())
}

/// Checks and opens a wallet's mode B receipts.
pub(crate) fn wallet_receipts(
    key: &std::path::Path,
    node: &str,
    enclaves: &[String],
    region: u32,
    last: usize,
) -> Result<(), Failure> {
    use quartier_client::NodeClient;
    use quartier_enclave::auctioneer::{Outcome, receipts_root};
    use quartier_enclave::rpc::{Request, Response};
    use quartier_enclave::sealed::HpkeKeyPair;
    let bad = |e: &dyn std::fmt::Display| Failure::BadInput(anyhow::anyhow!("{e}"));
    let wallet = ed25519_dalek::SigningKey::from_bytes(
        &quartier_node::config::read_key(key).map_err(|e| bad(&e))?,
    );
    let account = quartier_types::AccountId(wallet.verifying_key().to_bytes());
    let node = NodeClient::new(node).map_err(|e| bad(&e))?;
    let enclaves: Vec<NodeClient> = enclaves
        .iter()
        .map(|u| NodeClient::new(u))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&e))?;
    let region = quartier_types::RegionId(region);
    let path = format!(
        "/api/v1/regions/{}/reports?last={}",
        region.0,
        last.clamp(1, 2976)
    );
    let (_, v) = node
        .get(&path)
        .map_err(|e| Failure::Internal(anyhow::anyhow!("{e}")))?;
    let reports: Vec<quartier_ledger::PostedReport> =
        serde_json::from_value(v["reports"].clone()).map_err(|e| bad(&e))?;
    println!("receipts of {account} in region {}", region.0);
    let (mut mine, mut mismatched) = (0, 0);
    for posted in &reports {
        let slot = posted.summary.slot;
        let request = Request::Report { region, slot };
        let report =
            enclaves
                .iter()
                .find_map(|e| match quartier_client::enclave::call(e, &request) {
                    Some(Response::Report(Some(r))) => Some(r),
                    _ => None,
                });
        let Some(report) = report else {
            println!("slot {}: no enclave has its receipts any more", slot.0);
            continue;
        };
        if report.summary != posted.summary
            || receipts_root(&report.receipts) != posted.summary.receipts_root
        {
            mismatched += 1;
            println!(
                "slot {}: MISMATCH: the enclave's receipts are not what the committee signed",
                slot.0
            );
            continue;
        }
        let key = HpkeKeyPair::receipt_key(&wallet, region, slot);
        let own = report
            .receipts
            .iter()
            .filter_map(|r| r.open(&key))
            .find(|r| r.wallet == Some(account));
        let kwh = |e: quartier_types::Energy| e.get() as f64 / 1_000.0;
        let rp = |m: quartier_types::Money| m.get() as f64 / 1_000_000.0;
        match own.map(|r| r.outcome) {
            Some(Outcome::Cleared {
                order,
                matched,
                pays,
                receives,
            }) => {
                mine += 1;
                println!(
                    "slot {}: verified; {:?} {:.3} kWh at limit {:.2} Rp/kWh, {:.3} kWh matched locally, paid {:.2} Rp, received {:.2} Rp",
                    slot.0,
                    order.side,
                    kwh(order.energy),
                    order.limit.get() as f64 / 1_000.0,
                    kwh(matched),
                    rp(pays),
                    rp(receives)
                );
            }
            Some(Outcome::Refused(reason)) => {
                mine += 1;
                println!("slot {}: verified; refused: {reason}", slot.0);
            }
            None => println!("slot {}: verified; no order of this wallet", slot.0),
        }
    }
    println!(
        "{mine} receipts of this wallet opened in {} reported slots",
        reports.len()
    );
    if mismatched > 0 {
        return Err(Failure::Internal(anyhow::anyhow!(
            "{mismatched} slots' receipts do not match the signed root"
        )));
    }
    Ok(())
}
