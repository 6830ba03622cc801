//! The two 15-minute profiles of `data/`: BDEW H0 household load scaled to
//! 1 000 kWh/a, and a 1 kWp PV system, one year (2019, CET) each.
//!
//! Both CSV files are embedded at compile time, so no run reads the disk.

/// Quarter hours in the profile year.
pub const INTERVALS_PER_YEAR: usize = 35_040;

/// The H0 load profile, `timestamp,kwh`.
const LOAD_CSV: &str = include_str!("../../../data/households_h0_2019.csv");
/// The 1 kWp PV profile, `timestamp,kwh`.
const PV_CSV: &str = include_str!("../../../data/pv_1kwp_2019.csv");

/// Why a profile could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    /// The first line is not `timestamp,kwh`.
    #[error("{file}: expected the header `timestamp,kwh`")]
    Header {
        /// The profile.
        file: &'static str,
    },
    /// A row is not `timestamp,kwh` with a finite, non-negative kWh value.
    #[error("{file} line {line}: expected `timestamp,kwh` with kwh ≥ 0")]
    Row {
        /// The profile.
        file: &'static str,
        /// One-based line number.
        line: usize,
    },
    /// The profile does not have one value per quarter hour of the year.
    #[error("{file}: {rows} rows, expected {INTERVALS_PER_YEAR}")]
    Length {
        /// The profile.
        file: &'static str,
        /// Rows found.
        rows: usize,
    },
}

/// One year of quarter-hour energies, in kWh.
#[derive(Clone, Debug, PartialEq)]
pub struct Profiles {
    /// Household load per quarter hour for 1 000 kWh/a.
    pub load: Vec<f64>,
    /// PV yield per quarter hour of 1 kWp.
    pub pv: Vec<f64>,
}

impl Profiles {
    /// The profiles shipped in `data/`.
    ///
    /// # Errors
    /// [`ProfileError`] if an embedded file is malformed (a build with a
    /// changed data file).
    pub fn embedded() -> Result<Profiles, ProfileError> {
        Ok(Profiles {
            load: parse("households_h0_2019.csv", LOAD_CSV)?,
            pv: parse("pv_1kwp_2019.csv", PV_CSV)?,
        })
    }
}

/// Parses a `timestamp,kwh` CSV of one year of quarter hours.
///
/// # Errors
/// [`ProfileError`] naming the file and line at fault.
pub fn parse(file: &'static str, text: &str) -> Result<Vec<f64>, ProfileError> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some("timestamp,kwh") {
        return Err(ProfileError::Header { file });
    }
    let mut values = Vec::with_capacity(INTERVALS_PER_YEAR);
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = line
            .split_once(',')
            .and_then(|(_, kwh)| kwh.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or(ProfileError::Row { file, line: i + 2 })?;
        values.push(value);
    }
    if values.len() != INTERVALS_PER_YEAR {
        return Err(ProfileError::Length {
            file,
            rows: values.len(),
        });
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_profiles_have_their_documented_sums() {
        let p = Profiles::embedded().unwrap();
        let load: f64 = p.load.iter().sum();
        let pv: f64 = p.pv.iter().sum();
        // data/README.md: 1 000.0 kWh and 1 003.7 kWh.
        assert!((load - 1_000.0).abs() < 0.05, "{load}");
        assert!((pv - 1_003.7).abs() < 0.05, "{pv}");
        // PV is zero at midnight and peaks around noon in June.
        assert_eq!(p.pv[0], 0.0);
        assert!(p.pv.iter().cloned().fold(0.0, f64::max) < 0.25);
    }

    #[test]
    fn malformed_profiles_are_named() {
        assert_eq!(
            parse("x", "time,kwh\n"),
            Err(ProfileError::Header { file: "x" })
        );
        assert_eq!(
            parse("x", "timestamp,kwh\n2019-01-01,0.1\n2019-01-01,-1\n"),
            Err(ProfileError::Row { file: "x", line: 3 })
        );
        assert_eq!(
            parse("x", "timestamp,kwh\n2019-01-01,0.1\n"),
            Err(ProfileError::Length { file: "x", rows: 1 })
        );
    }
}
