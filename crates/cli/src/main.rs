//! `quartier`: the command line of the quartier market.
//!
//! Argument parsing and exit codes only; the work is done by library crates.

use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// A privacy-preserving peer-to-peer market for neighbourhood solar power.
#[derive(Parser)]
#[command(name = "quartier", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Clear one slot's book: JSON request in, JSON clearing out.
    ///
    /// Exit code 2 on bad input, with one line on stderr naming the field or
    /// order at fault and nothing on stdout.
    Clear {
        /// The request file; `-` or nothing reads standard input.
        file: Option<PathBuf>,
        /// Pretty-print the JSON output.
        #[arg(long)]
        pretty: bool,
    },
}

/// A failure with the exit code it maps to.
enum Failure {
    /// The input was bad: exit code 2.
    BadInput(anyhow::Error),
    /// Something else failed (e.g. writing the output): exit code 1.
    Internal(anyhow::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Clear { file, pretty } => clear(file, pretty),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Internal(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn clear(file: Option<PathBuf>, pretty: bool) -> Result<(), Failure> {
    let input = read_input(file).map_err(Failure::BadInput)?;
    let response = quartier_auction::json::clear_json(&input)
        .map_err(|e| Failure::BadInput(anyhow::Error::new(e)))?;
    let mut out = if pretty {
        serde_json::to_vec_pretty(&response)
    } else {
        serde_json::to_vec(&response)
    }
    .map_err(|e| Failure::Internal(e.into()))?;
    out.push(b'\n');
    std::io::stdout()
        .lock()
        .write_all(&out)
        .map_err(|e| Failure::Internal(anyhow::Error::new(e).context("writing stdout")))
}

fn read_input(file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context as _;
    let mut input = Vec::new();
    match file {
        Some(path) if path.as_os_str() != "-" => {
            input = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        }
        _ => {
            std::io::stdin()
                .lock()
                .read_to_end(&mut input)
                .context("reading standard input")?;
        }
    }
    Ok(input)
}
