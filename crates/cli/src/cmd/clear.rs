//! `quartier clear`: one slot's book in, its clearing out (JSON).

use super::Failure;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;

pub(crate) fn clear(file: Option<PathBuf>, pretty: bool) -> Result<(), Failure> {
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

pub(crate) fn read_input(file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
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
