//! `quartier sim`: a neighbourhood trading offline (no chain).

use super::{Failure, peak_memory, write_json};
use std::io::Write as _;
use std::path::PathBuf;

// `quartier sim`'s arguments (no doc comment: clap would take it for the command's about).
#[derive(clap::Args)]
pub(crate) struct SimArgs {
    /// Households in the neighbourhood.
    #[arg(long, default_value_t = 37)]
    pub(crate) households: u32,
    /// How many of them have PV.
    #[arg(long, default_value_t = 27)]
    pub(crate) prosumers: u32,
    /// Days to simulate.
    #[arg(long, default_value_t = 365)]
    pub(crate) days: u32,
    /// Day of the year the run starts on (1 is 1 January).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=365))]
    pub(crate) start_day: u32,
    /// Seed of every random draw: the same seed gives the same report.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Bidding strategy: fixed, random, time-of-day, adaptive or mixed.
    #[arg(long, default_value = "mixed")]
    pub(crate) strategy: quartier_meter::StrategyKind,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write `slots.csv` and `households.csv` into this folder.
    #[arg(long)]
    pub(crate) csv_out: Option<PathBuf>,
    /// How orders reach the chain in the written run (`--write-run`).
    #[arg(long, default_value = "transparent")]
    pub(crate) privacy: quartier_sim::PrivacyMode,
    /// Write the run for `quartier audit`: `public.json` (what the chain
    /// shows) and `truth.json` (which household placed which order).
    #[arg(long)]
    pub(crate) write_run: Option<PathBuf>,
    /// Order in whole lots of this many Wh, carrying the rounding to
    /// later slots (0: every reading exactly).
    #[arg(long, default_value_t = 0)]
    pub(crate) lot_wh: u64,
    /// Which flows a household orders: `net` (one order of what it draws
    /// or feeds in) or `gross` (a buy of its consumption and a sell of
    /// its production: mode A's rule).
    #[arg(long, default_value = "net")]
    pub(crate) metering: MeteringArg,
}

impl SimArgs {
    /// Runs the simulation the arguments describe.
    pub(crate) fn run(self) -> Result<(), Failure> {
        let plan = quartier_sim::SimPlan {
            households: self.households,
            prosumers: self.prosumers,
            days: self.days,
            start_day: self.start_day,
            seed: self.seed,
            strategy: self.strategy,
            params: quartier_sim::default_params(),
            lot_wh: self.lot_wh,
            metering: self.metering.into(),
        };
        let write_run = self.write_run.map(|dir| (dir, self.privacy));
        sim(&plan, self.json, self.csv_out, write_run)
    }
}

/// Which flows a simulated household orders (`quartier_meter::metering`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MeteringArg {
    /// One order of the net flow.
    Net,
    /// A buy of the consumption and a sell of the production.
    Gross,
}

impl From<MeteringArg> for quartier_meter::metering::Metering {
    fn from(m: MeteringArg) -> Self {
        match m {
            MeteringArg::Net => quartier_meter::metering::Metering::Net,
            MeteringArg::Gross => quartier_meter::metering::Metering::Gross,
        }
    }
}

/// Runs the offline simulator and prints its report; the run's time and peak
/// memory go to stderr so stdout stays byte-identical for a seed.
#[allow(clippy::disallowed_methods)]
pub(crate) fn sim(
    plan: &quartier_sim::SimPlan,
    json: bool,
    csv_out: Option<PathBuf>,
    write_run: Option<(PathBuf, quartier_sim::PrivacyMode)>,
) -> Result<(), Failure> {
    use anyhow::Context as _;
    let started = std::time::Instant::now();
    let profiles = quartier_sim::Profiles::embedded().map_err(|e| Failure::Internal(e.into()))?;
    let bar = indicatif::ProgressBar::new(u64::from(plan.days) * 96).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} slots {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut observer = SimObserver {
        bar: &bar,
        recorder: write_run
            .as_ref()
            .map(|(_, mode)| quartier_sim::RunRecorder::new(plan, *mode)),
    };
    let (report, series) =
        quartier_sim::run_observed(plan, profiles, &mut observer).map_err(|e| match e {
            quartier_sim::SimError::Plan(_) => Failure::BadInput(e.into()),
            other => Failure::Internal(other.into()),
        })?;
    bar.finish_and_clear();
    if let (Some((dir, _)), Some(recorder)) = (&write_run, observer.recorder) {
        let (view, truth) = recorder.finish();
        write_json(&dir.join("public.json"), &view)
            .and_then(|()| write_json(&dir.join("truth.json"), &truth))
            .map_err(Failure::Internal)?;
    }
    let out = if json {
        let mut text =
            serde_json::to_string_pretty(&report).map_err(|e| Failure::Internal(e.into()))?;
        text.push('\n');
        text
    } else {
        report.table()
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing stdout")))?;
    if let Some(dir) = csv_out {
        let write = |name: &str, text: String| -> anyhow::Result<()> {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating {}", dir.display()))
            .and_then(|()| write("slots.csv", quartier_sim::report::slots_csv(&series)))
            .and_then(|()| write("households.csv", report.households_csv()))
            .map_err(Failure::Internal)?;
    }
    eprintln!(
        "sim: {} households x {} slots in {:.2} s, peak memory {}",
        plan.households,
        series.len(),
        started.elapsed().as_secs_f64(),
        peak_memory()
    );
    Ok(())
}

/// Shows the run's progress and records it when asked to.
pub(crate) struct SimObserver<'a> {
    pub(crate) bar: &'a indicatif::ProgressBar,
    pub(crate) recorder: Option<quartier_sim::RunRecorder>,
}

impl quartier_sim::RunObserver for SimObserver<'_> {
    fn households(&mut self, households: &[quartier_sim::Household]) {
        if let Some(r) = &mut self.recorder {
            r.households(households);
        }
    }

    fn slot(
        &mut self,
        slot: u64,
        readings: &[quartier_sim::Reading],
        book: &[(u32, quartier_types::Order)],
    ) {
        if let Some(r) = &mut self.recorder {
            r.slot(slot, readings, book);
        }
    }

    fn progress(&mut self, done: u64, _total: u64) {
        self.bar.set_position(done);
    }
}
