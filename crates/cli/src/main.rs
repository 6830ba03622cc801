//! `quartier`: the command line of the quartier market.
//!
//! Argument parsing and exit codes only; the work is done by library crates.

mod cmd;

use clap::Parser;
use std::process::ExitCode;

/// A privacy-preserving peer-to-peer market for neighbourhood solar power.
#[derive(Parser)]
#[command(name = "quartier", version, about)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = cmd::run(cli.command);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(cmd::Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(cmd::Failure::Internal(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
