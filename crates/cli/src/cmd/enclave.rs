//! `quartier enclave`: run a mode B enclave host (simulated TEE), measure the enclave binary.

use super::Failure;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub(crate) enum EnclaveCommand {
    /// Run one auctioneer enclave (simulated TEE) and its host.
    Run {
        /// The enclave's config file (`enclave.toml`, written by `quartier devnet`).
        #[arg(long)]
        config: PathBuf,
        /// Stop when standard input closes (see `quartier node`).
        #[arg(long)]
        exit_on_stdin_close: bool,
    },
    /// Print the measurement (SHA-256, hex) of the enclave binary: this
    /// executable, or the file given. Build reproducibly first (docs/src/mode-b.md,
    /// "Reproducing the enclave measurement").
    Measure {
        /// The binary to measure (default: this executable).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// Runs one enclave host until stopped.
pub(crate) fn enclave_run(config: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let exe = std::env::current_exe().context("locating this executable")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("measuring {}", exe.display()))?;
    let measurement = quartier_enclave::attestation::Measurement::of_binary(&bytes);
    let config = quartier_enclave_host::EnclaveConfigFile::load(config, measurement)?;
    quartier_enclave_host::run(&config)?;
    Ok(())
}

/// Prints the SHA-256 of the enclave binary.
pub(crate) fn measure(binary: Option<PathBuf>) -> Result<(), Failure> {
    use anyhow::Context as _;
    let path = match binary {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this executable")
            .map_err(Failure::Internal)?,
    };
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::BadInput)?;
    println!(
        "{}",
        quartier_enclave::attestation::Measurement::of_binary(&bytes)
    );
    Ok(())
}
