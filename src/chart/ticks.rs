//! Axes: our own tick placement, so time axes get round hours/days/months and labels that fit.

use std::ops::Range;

use chrono::{DateTime, Datelike, NaiveDate};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};

/// Turns a tick position into its label.
pub(super) type TickFormatter = dyn Fn(&f64) -> String;

/// A linear axis over `[lo, hi]` whose tick positions were chosen up front.
#[derive(Clone, Debug)]
pub(super) struct Axis {
    pub(super) lo: f64,
    pub(super) hi: f64,
    pub(super) ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let frac = (value - self.lo) / (self.hi - self.lo);
        let px = f64::from(limit.0) + f64::from(limit.1 - limit.0) * frac;
        // Keep far-off coordinates representable: plotters does integer arithmetic on them.
        if px.is_finite() {
            px.round().clamp(-1e6, 1e6) as i32
        } else {
            limit.0
        }
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let max = hint.max_num_points();
        if max == 0 {
            return Vec::new();
        }
        // Thin evenly if plotters asks for fewer than we planned (it does not by default).
        let stride = self.ticks.len().div_ceil(max).max(1);
        self.ticks.iter().copied().step_by(stride).collect()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Ticks at multiples of a 1-2-5 step, at most `max_ticks` of them.
/// With `integer`, the step is at least 1 (record indices).
pub(super) fn value_ticks(lo: f64, hi: f64, max_ticks: usize, integer: bool) -> (Vec<f64>, f64) {
    let span = hi - lo;
    let max_ticks = max_ticks.max(2);
    if !(span.is_finite() && span > 0.0) {
        return (Vec::new(), 0.0);
    }
    let raw = span / max_ticks as f64;
    let mut exp = raw.log10().floor();
    let mut step = f64::NAN;
    'search: for _ in 0..3 {
        for m in [1.0, 2.0, 5.0, 10.0] {
            let candidate = m * 10f64.powf(exp);
            if candidate >= raw && (!integer || candidate >= 1.0) {
                step = candidate;
                break 'search;
            }
        }
        exp += 1.0;
    }
    if !(step.is_finite() && step > 0.0) {
        return (Vec::new(), 0.0);
    }
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    if !(first.is_finite() && last.is_finite()) || last - first > 1000.0 {
        return (Vec::new(), step);
    }
    let count = (last - first + 1.0).max(0.0) as i64;
    let ticks = (0..count)
        .map(|k| (first + k as f64) * step)
        .filter(|t| *t >= lo && *t <= hi)
        .collect();
    (ticks, step)
}

/// Compact y tick labels: "1.5M", "250k", "0.25"; the decimals follow the tick step.
pub(super) fn value_formatter(lo: f64, hi: f64, step: f64) -> impl Fn(&f64) -> String {
    let magnitude = lo.abs().max(hi.abs());
    let (divisor, suffix) = match magnitude {
        m if m >= 1e15 => (1.0, "e"),
        m if m >= 1e12 => (1e12, "T"),
        m if m >= 1e9 => (1e9, "G"),
        m if m >= 1e6 => (1e6, "M"),
        m if m >= 1e4 => (1e3, "k"),
        m if m > 0.0 && m < 1e-4 => (1.0, "e"),
        _ => (1.0, ""),
    };
    let scaled_step = step / divisor;
    let decimals = if scaled_step > 0.0 && scaled_step < 1.0 {
        (-scaled_step.log10().floor()).clamp(0.0, 8.0) as usize
    } else {
        0
    };
    move |v: &f64| {
        // Snap values that are zero up to rounding error, so no "-0" label appears.
        let v = if step > 0.0 && v.abs() < step * 1e-9 {
            0.0
        } else {
            *v
        };
        if suffix == "e" {
            format!("{v:.1e}")
        } else {
            format!("{:.*}{suffix}", decimals, v / divisor)
        }
    }
}

/// A time tick spacing: a fixed number of seconds or calendar months.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum TimeStep {
    Seconds(i64),
    Months(i64),
}

impl TimeStep {
    /// chrono format for labels at this spacing: precise enough to tell ticks apart.
    fn format(self) -> &'static str {
        match self {
            TimeStep::Seconds(s) if s < 60 => "%H:%M:%S",
            TimeStep::Seconds(s) if s < 86_400 => "%m-%d %H:%M",
            TimeStep::Seconds(_) => "%Y-%m-%d",
            TimeStep::Months(m) if m < 12 => "%Y-%m",
            TimeStep::Months(_) => "%Y",
        }
    }
}

const SECOND_STEPS: [i64; 21] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    172_800, 604_800, 1_209_600,
];
const MONTH_STEPS: [i64; 9] = [1, 2, 3, 6, 12, 24, 60, 120, 1200];

/// Round time ticks over `[lo, hi]` (epoch seconds), as dense as fits in `width_px`:
/// neighbouring ticks must be at least `label_px(step)` plus a gap apart.
pub(super) fn time_ticks(
    lo: f64,
    hi: f64,
    width_px: f64,
    label_px: impl Fn(TimeStep) -> f64,
) -> (Vec<f64>, TimeStep) {
    let px_per_second = width_px / (hi - lo);
    let fits = |seconds: f64, step: TimeStep| seconds * px_per_second >= label_px(step) * 1.3;
    for s in SECOND_STEPS {
        let step = TimeStep::Seconds(s);
        // Weekly ticks fall on Mondays (the epoch was a Thursday), the rest on multiples.
        let offset = if s % 604_800 == 0 {
            4.0 * 86_400.0
        } else {
            0.0
        };
        let first = ((lo - offset) / s as f64).ceil();
        let last = ((hi - offset) / s as f64).floor();
        let count = (last - first + 1.0).max(0.0);
        if count <= 200.0 && fits(s as f64, step) {
            let ticks = (first as i64..=last as i64)
                .map(|k| (k * s) as f64 + offset)
                .collect();
            return (ticks, step);
        }
    }
    for m in MONTH_STEPS {
        let step = TimeStep::Months(m);
        if fits(m as f64 * 30.44 * 86_400.0, step) {
            return (month_ticks(lo, hi, m), step);
        }
    }
    // Spans of millennia: one label at each end is the best we can do.
    (vec![lo, hi], TimeStep::Months(1200))
}

/// First-of-month instants in `[lo, hi]` whose month number is a multiple of `every`.
fn month_ticks(lo: f64, hi: f64, every: i64) -> Vec<f64> {
    let to_month = |secs: f64| {
        DateTime::from_timestamp(secs.floor() as i64, 0)
            .map(|t| i64::from(t.year()) * 12 + i64::from(t.month0()))
    };
    let (Some(first), Some(last)) = (to_month(lo), to_month(hi)) else {
        return Vec::new();
    };
    if (last - first) / every > 200 {
        return Vec::new();
    }
    (first..=last)
        .filter(|m| m.rem_euclid(every) == 0)
        .filter_map(|m| {
            let date = NaiveDate::from_ymd_opt(
                i32::try_from(m.div_euclid(12)).ok()?,
                u32::try_from(m.rem_euclid(12) + 1).ok()?,
                1,
            )?;
            Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp() as f64)
        })
        .filter(|t| *t >= lo && *t <= hi)
        .collect()
}

pub(super) fn time_formatter(step: TimeStep) -> impl Fn(&f64) -> String {
    let format = step.format();
    move |secs: &f64| {
        let whole = secs.floor();
        let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
        DateTime::from_timestamp(whole as i64, nanos)
            .map(|t| t.format(format).to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn time_ticks_are_round_and_fit() {
        let start = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp() as f64;
        let label_px = |step: TimeStep| step.format().len() as f64 * 8.0;
        let (ticks, step) = time_ticks(start, start + 30.0 * 86_400.0, 500.0, label_px);
        assert_eq!(step, TimeStep::Seconds(604_800));
        assert!((2..=6).contains(&ticks.len()));
        assert_eq!(
            time_formatter(step)(&ticks[1]),
            "2024-01-08",
            "weeks start on Monday"
        );
        let (ticks, step) = time_ticks(start, start + 6.0 * 3600.0, 500.0, label_px);
        assert!(matches!(step, TimeStep::Seconds(s) if s < 86_400));
        assert_eq!(time_formatter(step)(&ticks[0]), "01-01 00:00");
    }

    #[test]
    fn value_labels_are_compact() {
        let (ticks, step) = value_ticks(0.0, 6.3e6, 6, false);
        assert_eq!(step, 2e6);
        let f = value_formatter(0.0, 6.3e6, step);
        assert_eq!(
            ticks.iter().map(f).collect::<Vec<_>>(),
            ["0M", "2M", "4M", "6M"]
        );
        let (_, step) = value_ticks(0.0, 1.0, 5, false);
        assert_eq!(value_formatter(0.0, 1.0, step)(&0.4), "0.4");
        assert_eq!(value_formatter(-1.0, 1.0, 0.5)(&-1e-17), "0.0");
    }
}
