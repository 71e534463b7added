//! Per-record explanations: which features drove a score, in the units the user sent.

use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// Whether a value sits above or below what training called normal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Above,
    Below,
    Within,
}

/// One feature's part in a record's score.
#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureContribution {
    /// Feature name.
    pub feature: String,
    /// The record's value, in original units.
    pub value: f64,
    /// Where the value sits relative to the normal range.
    pub direction: Direction,
    /// Share of the record's isolation attributed to this feature, in [0, 1]; the list sums to 1.
    pub contribution: f64,
    /// Normal range seen in training: the 5th and 95th percentiles, in original units (with
    /// entity baselines the entity's band, as `band`).
    pub normal_range: [f64; 2],
    /// Entity baselines only: the entity's usual value of this feature at the record's hour
    /// (its band's median), in original units.
    #[serde(default)]
    pub expected: Option<f64>,
    /// Entity baselines only: the entity's usual band `[lo, hi]` at the record's hour.
    #[serde(default)]
    pub band: Option<[f64; 2]>,
    /// Entity baselines only: the same in words, such as `bytes_sent 8.1 MB; usual for
    /// 10.1.2.3 at 03:00 is 0.2–0.9 MB`.
    #[serde(default)]
    pub summary: Option<String>,
}

/// Whose band a record was judged against and when, for [`summary_line`].
pub struct BandContext<'a> {
    /// The entity, or `None` when it was judged against the whole population's band.
    pub entity: Option<&'a str>,
    /// The hour (`03:00`) or hour of week (`Mon 03:00`) of a seasonal band.
    pub when: Option<String>,
}

/// `value` and the usual band in words: `bytes_sent 8.1 MB; usual for 10.1.2.3 at 03:00 is
/// 0.2–0.9 MB`. A feature whose name holds `bytes` is shown in B, kB, MB, GB (powers of 1000).
pub fn summary_line(feature: &str, value: f64, band: [f64; 2], ctx: &BandContext<'_>) -> String {
    let bytes = feature.contains("bytes");
    // The band in the value's unit while both its ends read in it (0.2–0.9 MB), else in the
    // unit of its upper end (26–187 kB, not 0.0–0.2 MB).
    let (div, unit) = match (bytes, unit_of(value.max(band[1]))) {
        (false, _) => (1.0, ""),
        (true, (d, _)) if band[1] / d < 0.1 || (band[0] > 0.0 && band[0] / d < 0.1) => {
            unit_of(band[1])
        }
        (true, u) => u,
    };
    let (vdiv, vunit) = if bytes { unit_of(value) } else { (1.0, "") };
    let who = match ctx.entity {
        Some(e) => format!("for {e}"),
        None => "across all entities".to_owned(),
    };
    let when = ctx
        .when
        .as_deref()
        .map_or_else(String::new, |w| format!(" at {w}"));
    format!(
        "{feature} {}{}; usual {who}{when} is {}–{}{}",
        number(value / vdiv),
        spaced(vunit),
        number(band[0] / div),
        number(band[1] / div),
        spaced(unit),
    )
}

fn spaced(unit: &str) -> String {
    if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    }
}

/// The divisor and name of the byte unit that shows `v` with one to three digits.
fn unit_of(v: f64) -> (f64, &'static str) {
    const UNITS: [(f64, &str); 5] = [
        (1e12, "TB"),
        (1e9, "GB"),
        (1e6, "MB"),
        (1e3, "kB"),
        (1.0, "B"),
    ];
    UNITS
        .into_iter()
        .find(|&(d, _)| v.abs() >= d)
        .unwrap_or((1.0, "B"))
}

/// One decimal under 10 (a whole number without it), none from 10 on.
fn number(v: f64) -> String {
    if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_reads_in_the_entitys_terms_and_units() {
        let ctx = BandContext {
            entity: Some("10.1.2.3"),
            when: Some("03:00".into()),
        };
        assert_eq!(
            summary_line("bytes_sent", 8.1e6, [2e5, 9e5], &ctx),
            "bytes_sent 8.1 MB; usual for 10.1.2.3 at 03:00 is 0.2–0.9 MB"
        );
        let population = BandContext {
            entity: None,
            when: None,
        };
        assert_eq!(
            summary_line("connections", 45.0, [2.26, 8.0], &population),
            "connections 45; usual across all entities is 2.3–8"
        );
        assert_eq!(
            summary_line("bytes_sent", 6.54e6, [2.58e4, 1.87e5], &ctx),
            "bytes_sent 6.5 MB; usual for 10.1.2.3 at 03:00 is 26–187 kB"
        );
        assert_eq!(
            summary_line("bytes_received", 512.0, [0.0, 3.5e4], &population),
            "bytes_received 512 B; usual across all entities is 0–35 kB"
        );
    }
}
