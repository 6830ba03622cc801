//! `quartier audit`: the adversary's attacks on a run, scored against its truth.

use super::{Failure, read_json};
use std::io::Write as _;
use std::path::PathBuf;

// `quartier audit`'s arguments (no doc comment: clap would take it for the command's about).
#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    /// A folder written by `quartier sim --write-run`.
    #[arg(long, required_unless_present = "node", conflicts_with = "node")]
    pub(crate) run: Option<PathBuf>,
    /// Or a devnet node's API, e.g. http://127.0.0.1:7401 (with `--truth`
    /// naming the devnet's `meters.json`).
    #[arg(long, requires = "truth")]
    pub(crate) node: Option<String>,
    /// The ground truth: RUN/truth.json by default; with `--node`, the
    /// devnet's `meters.json`.
    #[arg(long)]
    pub(crate) truth: Option<PathBuf>,
    /// With `--node`: at most this many slots from the manifest's first.
    #[arg(long, default_value_t = 96)]
    pub(crate) slots: u64,
    /// With `--node` on a mode B chain: enclave APIs (comma-separated)
    /// whose published receipts the insider also reads.
    #[arg(long, value_delimiter = ',', requires = "node")]
    pub(crate) enclave: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write the results as an SVG chart.
    #[arg(long)]
    pub(crate) svg: Option<PathBuf>,
}

impl AuditArgs {
    /// Runs the audit the arguments describe.
    pub(crate) fn run(self) -> Result<(), Failure> {
        let source = match (self.run, self.node, self.truth) {
            (Some(run), _, truth) => AuditSource::Run { run, truth },
            (None, Some(node), Some(manifest)) => AuditSource::Node {
                node,
                enclaves: self.enclave,
                manifest,
                slots: self.slots,
            },
            _ => {
                return Err(Failure::BadInput(anyhow::anyhow!(
                    "give --run, or --node with --truth"
                )));
            }
        };
        audit(source, self.json, self.svg)
    }
}

/// Where `quartier audit` finds a run.
pub(crate) enum AuditSource {
    /// Files written by `quartier sim --write-run`.
    Run {
        run: PathBuf,
        truth: Option<PathBuf>,
    },
    /// A devnet's chain and its `meters.json`.
    Node {
        node: String,
        enclaves: Vec<String>,
        manifest: PathBuf,
        slots: u64,
    },
}

/// Attacks the public view of a run, as published and with its originators
/// removed, and prints the scores.
pub(crate) fn audit(source: AuditSource, json: bool, svg: Option<PathBuf>) -> Result<(), Failure> {
    let ChainAudit {
        reports,
        crypto,
        foreign,
        sealed,
    } = match source {
        AuditSource::Run { run, truth } => {
            let view = read_json(&run.join("public.json")).map_err(Failure::BadInput)?;
            let truth_path = truth.unwrap_or_else(|| run.join("truth.json"));
            let truth = read_json(&truth_path).map_err(Failure::BadInput)?;
            // A simulator run publishes no signatures: no cryptographic audit.
            ChainAudit {
                reports: audit_views(&view, &truth)?,
                crypto: None,
                foreign: 0,
                sealed: None,
            }
        }
        AuditSource::Node {
            node,
            enclaves,
            manifest,
            slots,
        } => {
            let manifest: quartier_devnet::fleet::FleetManifest =
                read_json(&manifest).map_err(Failure::BadInput)?;
            let api =
                quartier_client::NodeClient::new(&node).map_err(|e| Failure::BadInput(e.into()))?;
            let enclaves = enclaves
                .iter()
                .map(|u| quartier_client::NodeClient::new(u))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Failure::BadInput(e.into()))?;
            audit_chain(&api, &enclaves, &manifest, 0, slots)?
        }
    };
    let out = if json {
        let both = serde_json::json!({
            "reports": reports,
            "cryptographic": crypto,
            "foreign_orders": foreign,
            "sealed": sealed,
        });
        let mut text =
            serde_json::to_string_pretty(&both).map_err(|e| Failure::Internal(e.into()))?;
        text.push('\n');
        text
    } else {
        let mut text = if reports.is_empty() {
            String::new()
        } else {
            quartier_sim::audit::table(&reports)
        };
        if let Some(r) = &sealed {
            text.push_str(&quartier_sim::sealed_audit::table(r));
        }
        if let Some(c) = &crypto {
            text.push('\n');
            text.push_str(&quartier_sim::crypto_audit::table(c));
        }
        if foreign > 0 {
            text.push_str(&format!(
                "\n{foreign} orders of other participants (no household of the run) left out\n"
            ));
        }
        text
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing stdout")))?;
    if let Some(path) = svg {
        if reports.is_empty() {
            return Err(Failure::BadInput(anyhow::anyhow!(
                "--svg draws the statistical reports, and a mode B chain has none (its table is above)"
            )));
        }
        std::fs::write(&path, quartier_sim::audit::svg(&reports))
            .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing the SVG")))?;
    }
    Ok(())
}

/// The statistical adversary's reports on `view`: as published, and with
/// its originators removed (amounts and prices only).
pub(crate) fn audit_views(
    view: &quartier_sim::PublicView,
    truth: &quartier_sim::GroundTruth,
) -> Result<Vec<quartier_sim::AuditReport>, Failure> {
    let profiles = quartier_sim::Profiles::embedded().map_err(|e| Failure::Internal(e.into()))?;
    let hidden = view.without_originators();
    [
        (view, format!("{} (as published)", view.mode.name())),
        (&hidden, "amounts and prices only".to_string()),
    ]
    .into_iter()
    .map(|(v, label)| quartier_sim::audit(v, truth, &profiles, &label))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| Failure::BadInput(e.into()))
}

/// What the attacks on a run found.
pub(crate) struct ChainAudit {
    /// The statistical adversary's reports on the open or mode A book.
    pub(crate) reports: Vec<quartier_sim::AuditReport>,
    /// Mode A: the cryptographic adversary's findings.
    pub(crate) crypto: Option<quartier_sim::crypto_audit::CryptoReport>,
    /// Non-cover orders of no household of the run (left out).
    pub(crate) foreign: usize,
    /// Mode B: the insider's findings on the sealed orders.
    pub(crate) sealed: Option<quartier_sim::sealed_audit::SealedAuditReport>,
}

/// Every attack on a devnet fleet's run slots `from..from + slots`: on a
/// mode B chain the insider's attack on the sealed orders; otherwise the
/// statistical reports, on a mode A chain the cryptographic adversary's
/// findings on the published bytes, and how many non-cover orders were no
/// household's (left out of both).
pub(crate) fn audit_chain(
    api: &quartier_client::NodeClient,
    enclaves: &[quartier_client::NodeClient],
    manifest: &quartier_devnet::fleet::FleetManifest,
    from: u64,
    slots: u64,
) -> Result<ChainAudit, Failure> {
    if let Some((view, truth)) =
        quartier_devnet::fleet::chain_sealed_run(api, enclaves, manifest, from, slots)
            .map_err(|e| Failure::Internal(e.into()))?
    {
        let profiles =
            quartier_sim::Profiles::embedded().map_err(|e| Failure::Internal(e.into()))?;
        let insiders = quartier_devnet::fleet::sealed_insiders(manifest);
        let label = "enclave (as published)";
        let report =
            quartier_sim::sealed_audit::sealed_audit(&view, &truth, &profiles, &insiders, label)
                .map_err(|e| Failure::BadInput(e.into()))?;
        return Ok(ChainAudit {
            reports: Vec::new(),
            crypto: None,
            foreign: 0,
            sealed: Some(report),
        });
    }
    let crypto = quartier_devnet::fleet::chain_crypto(api, manifest, from, slots)
        .map_err(|e| Failure::Internal(e.into()))?
        .map(|r| quartier_sim::crypto_audit::crypto_audit(&r.orders, &r.pool, &r.truth));
    let (view, truth, foreign) = quartier_devnet::fleet::chain_run(api, manifest, from, slots)
        .map_err(|e| Failure::Internal(e.into()))?;
    Ok(ChainAudit {
        reports: audit_views(&view, &truth)?,
        crypto,
        foreign,
        sealed: None,
    })
}
