//! `quartier gov`: the validators' governance from the command line — what
//! is open and when it takes effect (`status`), proposing a change
//! (`propose`) and voting (`vote`), each a transaction signed with the
//! validator's key file and waited for until final.

use anyhow::{Context as _, anyhow, bail};
use clap::Subcommand;
use quartier_client::NodeClient;
use quartier_ledger::{GovernanceChange, Tx, TxBody};
use quartier_types::AccountId;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub(crate) enum GovCommand {
    /// The validator set, the role keys, the limits and every open
    /// proposal with its tally and the votes it still needs.
    Status {
        /// A node's API, e.g. http://127.0.0.1:7401.
        #[arg(long)]
        node: String,
    },
    /// Propose a change as a validator; prints the proposal's id.
    Propose {
        /// A node's API.
        #[arg(long)]
        node: String,
        /// The validator's key file.
        #[arg(long)]
        key: PathBuf,
        /// The change as JSON, e.g. '{"add":"<hex key>"}',
        /// '{"rotate_key":{"authority":"utility","from":"<hex>","key":"<hex>"}}',
        /// '{"freeze":{"authority":"utility","key":"<hex>"}}',
        /// '{"approve_mint":100000000}'.
        #[arg(long)]
        change: String,
    },
    /// Vote on a proposal as a validator (yes unless `--no`).
    Vote {
        /// A node's API.
        #[arg(long)]
        node: String,
        /// The validator's key file.
        #[arg(long)]
        key: PathBuf,
        /// The proposal's id.
        #[arg(long)]
        proposal: u64,
        /// Vote no.
        #[arg(long)]
        no: bool,
    },
}

/// Prints the validator set, the role keys, the limits and every open
/// proposal with its tally and how many votes it still needs.
///
/// # Errors
/// If the node can not be read.
pub fn status(node: &str) -> anyhow::Result<()> {
    let api = NodeClient::new(node)?;
    let (code, g) = api.get("/api/v1/governance")?;
    if code != 200 {
        bail!("the node answered {code}: {g}");
    }
    let validators = g["validators"].as_array().map_or(0, Vec::len);
    println!("height {}", g["height"]);
    println!("validators ({validators}, voting now):");
    for v in g["validators"].as_array().into_iter().flatten() {
        println!("  {}", v.as_str().unwrap_or("?"));
    }
    let c = &g["consensus"];
    match c["next_boundary"].as_u64() {
        Some(next) => println!(
            "consensus epoch {} ({} blocks each), signed by {} validators; a change voted now signs from height {next}",
            c["epoch"],
            c["epoch_blocks"],
            c["signing"].as_array().map_or(0, Vec::len)
        ),
        None => println!("consensus: one epoch, the genesis validators sign for good"),
    }
    for set in c["validator_sets"].as_array().into_iter().flatten() {
        println!(
            "  from epoch {} (height {}): {} validators",
            set["from_epoch"],
            set["from_height"],
            set["validators"].as_array().map_or(0, Vec::len)
        );
    }
    for role in ["dso", "utility"] {
        let a = &g["authorities"][role];
        println!(
            "{role:<8} {}{} (since block {})",
            a["key"].as_str().unwrap_or("?"),
            if a["frozen"].as_bool() == Some(true) {
                "  FROZEN"
            } else {
                ""
            },
            a["since"]
        );
    }
    let limits = &g["issuance"]["limits"];
    println!(
        "limits   mint {} per {} slots (minted {} this period, {} approved beyond), PV up to {} W",
        money(&limits["mint_per_period"]),
        limits["period_slots"],
        money(&g["issuance"]["minted"]),
        money(&g["issuance"]["allowance"]),
        limits["max_pv_watts"]
    );
    enclave_committee(&api)?;
    let (two_thirds, third) = thresholds(validators);
    let proposals = g["proposals"].as_array().cloned().unwrap_or_default();
    if proposals.is_empty() {
        println!("no open proposals");
    }
    let open = g["open"].as_u64().unwrap_or(0);
    if open > proposals.len() as u64 {
        println!(
            "{open} open proposals, the {} oldest shown",
            proposals.len()
        );
    }
    for p in proposals {
        let yes = p["yes_count"].as_u64().unwrap_or(0);
        let no = p["no_count"].as_u64().unwrap_or(0);
        let needed = if p["change"].get("freeze").is_some() {
            third
        } else {
            two_thirds
        };
        let effect = if p["change"].get("add").is_some() || p["change"].get("remove").is_some() {
            "votes from the block that passes it, signs from the epoch boundary after"
        } else {
            "takes effect in the block whose vote passes it"
        };
        println!(
            "proposal {}: {}  yes {yes}/{needed} needed, no {no}; {effect}",
            p["id"], p["change"]
        );
    }
    Ok(())
}

/// Prints mode B's enclave committee in office (with the members a
/// revocation evicted) and the candidates waiting to be seated, on a chain
/// with a sealed market.
fn enclave_committee(api: &NodeClient) -> anyhow::Result<()> {
    let (code, s) = api.get("/api/v1/sealed")?;
    if code != 200 || s["policy"].is_null() {
        return Ok(());
    }
    let members = |c: &serde_json::Value| c["members"].as_array().map_or(0, Vec::len);
    let c = &s["committee"];
    if c.is_null() {
        println!("enclave committee: none in office");
    } else {
        println!(
            "enclave committee {} ({} members, {} sign) since block {}, keys epochs from {}",
            c["group_key"].as_str().unwrap_or("?"),
            members(c),
            c["threshold"],
            c["since"],
            c["first_epoch"]
        );
        for e in c["evicted"].as_array().into_iter().flatten() {
            println!(
                "  EVICTED {} (its measurement was revoked): no sealed order, deposit or epoch key until a committee without it takes office",
                e.as_str().unwrap_or("?")
            );
        }
    }
    for k in s["committee_candidates"].as_array().into_iter().flatten() {
        let key = k["group_key"].as_str().unwrap_or("?");
        println!(
            "enclave committee candidate {key} ({} members) since block {}: seat it with gov propose '{{\"seat_committee\":\"{key}\"}}'",
            members(k),
            k["voted"]
        );
    }
    Ok(())
}

/// Yes votes a change needs among `n` validators: two thirds, and more
/// than a third for a freeze.
pub fn thresholds(n: usize) -> (usize, usize) {
    ((2 * n).div_ceil(3), n / 3 + 1)
}

fn money(v: &serde_json::Value) -> String {
    v.as_u64()
        .map_or_else(|| "no cap".into(), |m| format!("{:.2} CHF", m as f64 / 1e8))
}

/// Proposes `change` (JSON, e.g. `{"add":"<hex key>"}`) as the validator of
/// `key`; prints the proposal's id.
///
/// # Errors
/// Bad JSON or key; the chain's refusal.
pub fn propose(node: &str, key: &Path, change: &str) -> anyhow::Result<u64> {
    let change: GovernanceChange = serde_json::from_str(change).with_context(|| {
        "a change is JSON such as {\"add\":\"<hex>\"}, {\"remove\":\"<hex>\"}, \
         {\"rotate_key\":{\"authority\":\"utility\",\"from\":\"<hex>\",\"key\":\"<hex>\"}}, \
         {\"freeze\":{\"authority\":\"dso\",\"key\":\"<hex>\"}}, {\"approve_mint\":<µRp>}, \
         {\"approve_pv\":{\"meter\":\"<hex>\",\"pv_watts\":<W>}} or {\"set_limits\":{…}}"
    })?;
    let api = NodeClient::new(node)?;
    let signer = submit(&api, key, TxBody::Propose { change })?;
    // The id the chain gave it: the newest open proposal of this change
    // with this validator's vote (not the id read before: another
    // proposal may have taken it first).
    let wanted = serde_json::to_value(change)?;
    let (_, g) = api.get("/api/v1/governance")?;
    let me = signer.to_string();
    let id = g["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["change"] == wanted)
        .filter(|p| {
            p["yes"]
                .as_array()
                .is_some_and(|y| y.iter().any(|v| v.as_str() == Some(me.as_str())))
        })
        .filter_map(|p| p["id"].as_u64())
        .max();
    match id {
        Some(id) => println!("proposal {id} open: {wanted}"),
        // It passed (or lapsed) in the block that took it.
        None => println!("proposal decided at once: {wanted}"),
    }
    Ok(id.unwrap_or(u64::MAX))
}

/// Votes on proposal `id` as the validator of `key`, saying what the
/// proposal changes.
///
/// # Errors
/// Bad key; no such open proposal; the chain's refusal.
pub fn vote(node: &str, key: &Path, id: u64, approve: bool) -> anyhow::Result<()> {
    let api = NodeClient::new(node)?;
    let (_, g) = api.get("/api/v1/governance")?;
    let change = g["proposals"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["id"].as_u64() == Some(id))
        .map(|p| p["change"].clone())
        .ok_or_else(|| anyhow!("no open proposal {id}"))?;
    println!("proposal {id}: {change}");
    submit(
        &api,
        key,
        TxBody::Vote {
            proposal: id,
            approve,
        },
    )?;
    println!(
        "voted {} on proposal {id}",
        if approve { "yes" } else { "no" }
    );
    Ok(())
}

/// Signs `body` with the key in `key` and waits until it is final; the
/// signer.
fn submit(api: &NodeClient, key: &Path, body: TxBody) -> anyhow::Result<AccountId> {
    let key = ed25519_dalek::SigningKey::from_bytes(&quartier_node::config::read_key(key)?);
    let signer = AccountId(key.verifying_key().to_bytes());
    let (_, status) = api.get("/api/v1/status")?;
    let chain_id = status["chain_id"]
        .as_str()
        .and_then(|h| quartier_types::hex::decode(h).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .map(|b| quartier_ledger::ChainId(quartier_types::hash::Digest(b)))
        .ok_or_else(|| anyhow!("the node did not say its chain id"))?;
    let (_, account) = api.get(&format!("/api/v1/accounts/{signer}"))?;
    let nonce = account["nonce"].as_u64().unwrap_or(0);
    let tx = Tx {
        chain_id,
        signer,
        nonce,
        body,
    }
    .sign(&key);
    quartier_client::wallet::submit_final(api, &tx, Duration::from_secs(60))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(signer)
}
