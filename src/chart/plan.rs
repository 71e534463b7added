//! The data-side plan: input checks, x values and their order, and the axis ranges.

use chrono::{DateTime, Utc};

use super::theme::Theme;
use super::{ChartError, ChartInput, ChartSeries, MAX_PANELS, MAX_SIDE, MIN_SIDE};

/// Which kind of x axis the chart has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum XKind {
    /// Seconds since the Unix epoch, UTC.
    Time,
    /// Record index.
    Index,
}

/// Everything about a chart that does not depend on the backend, checked and derived once.
pub(super) struct Plan<'a> {
    pub(super) xs: Vec<f64>,
    /// Record indices in x order, when the records are not already sorted by x.
    pub(super) order: Option<Vec<usize>>,
    pub(super) x_kind: XKind,
    pub(super) x_range: (f64, f64),
    pub(super) series: &'a [ChartSeries<'a>],
    pub(super) anomalies: &'a [bool],
    pub(super) anomaly_count: usize,
    pub(super) title: Option<&'a str>,
    pub(super) theme: Theme,
}

impl<'a> Plan<'a> {
    pub(super) fn new(
        input: &'a ChartInput<'a>,
        width: u32,
        height: u32,
    ) -> Result<Self, ChartError> {
        let side = MIN_SIDE..=MAX_SIDE;
        if !side.contains(&width) || !side.contains(&height) {
            return Err(ChartError::Size { width, height });
        }
        let series = &input.series[..input.series.len().min(MAX_PANELS)];
        let first = series.first().ok_or(ChartError::NoSeries)?;
        let n = first.values.len();
        let mismatch = |name: &str, actual: usize| ChartError::LengthMismatch {
            name: name.to_owned(),
            expected: n,
            actual,
        };
        for s in series {
            if s.values.len() != n {
                return Err(mismatch(s.name, s.values.len()));
            }
        }
        if input.anomalies.len() != n {
            return Err(mismatch("anomalies", input.anomalies.len()));
        }
        if let Some(ts) = input.timestamps
            && ts.len() != n
        {
            return Err(mismatch("timestamps", ts.len()));
        }
        if n == 0 {
            return Err(ChartError::Empty);
        }

        let (xs, x_kind) = match input.timestamps {
            Some(ts) => (
                ts.iter().map(epoch_seconds).collect::<Vec<_>>(),
                XKind::Time,
            ),
            None => ((0..n).map(|i| i as f64).collect(), XKind::Index),
        };
        let sorted = xs.windows(2).all(|w| w[0] <= w[1]);
        let order = (!sorted).then(|| {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
            order
        });
        let (lo, hi) = min_max(xs.iter().copied()).unwrap_or((0.0, 0.0));
        let x_range = match x_kind {
            XKind::Time => pad_range(lo, hi, 0.02, 3600.0, 60.0),
            XKind::Index => pad_range(lo, hi, 0.02, 0.5, 1.0),
        };
        Ok(Self {
            xs,
            order,
            x_kind,
            x_range,
            series,
            anomalies: input.anomalies,
            anomaly_count: input.anomalies.iter().filter(|&&a| a).count(),
            title: input.title.filter(|t| !t.trim().is_empty()),
            theme: Theme::for_size(width, height),
        })
    }

    /// Record indices in x order.
    pub(super) fn ordered(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.xs.len();
        let (sorted, unsorted) = match &self.order {
            Some(order) => (None, Some(order.iter().copied())),
            None => (Some(0..n), None),
        };
        sorted
            .into_iter()
            .flatten()
            .chain(unsorted.into_iter().flatten())
    }
}

fn epoch_seconds(t: &DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) * 1e-9
}

pub(super) fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// Widens `[lo, hi]` by `frac` of its span on each side; a degenerate range becomes
/// `±half_width_if_flat` around the value, and any range is at least `min_span` wide.
fn pad_range(lo: f64, hi: f64, frac: f64, half_width_if_flat: f64, min_span: f64) -> (f64, f64) {
    let span = hi - lo;
    if !span.is_finite() {
        // Values near ±f64::MAX: padding would overflow, and the data already fills the axis.
        return (lo, hi);
    }
    if span == 0.0 {
        return (lo - half_width_if_flat, hi + half_width_if_flat);
    }
    let pad = (span * frac).max((min_span - span) / 2.0);
    let (a, b) = (lo - pad, hi + pad);
    if a.is_finite() && b.is_finite() {
        (a, b)
    } else {
        (lo, hi)
    }
}

/// Padding for a y axis: 8% of the span, or a sensible width around a constant series.
pub(super) fn y_range(lo: f64, hi: f64) -> (f64, f64) {
    let flat = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
    let (a, b) = pad_range(lo, hi, 0.08, flat, 0.0);
    if a < b { (a, b) } else { (a - 1.0, b + 1.0) }
}
