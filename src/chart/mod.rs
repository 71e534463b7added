//! The analysis chart: records in, PNG or SVG bytes out (a pure function, no I/O).
//!
//! This is the tutorial's `visualize_results` figure as a product: a grid of up to four
//! panels (2×2 for the seed's four features), each a line of one feature over time with the
//! anomalous records drawn as red filled points on top.
//!
//! Decisions worth knowing as a caller:
//!
//! - **Non-finite values** (NaN, ±inf) are skipped, never an error: the line breaks at them and
//!   an anomaly whose value is non-finite has no point to draw. Scoring already rejects such
//!   records, so here they can only come from stored or derived data, and a chart with a gap
//!   is more useful than no chart.
//! - **Layout:** one series fills the image, two are stacked, three or four use the 2×2 grid.
//!   Series past the fourth are ignored entirely (not drawn, not validated).
//! - **Large batches:** when a series has more than four points per pixel column of its plot,
//!   the line is reduced to the first, minimum, maximum and last point of each column (M4
//!   decimation). That draws the same pixels as the full line (gaps narrower than a pixel
//!   excepted) while bounding the work to a few thousand points per panel. Anomaly points are
//!   never decimated; only exact duplicates of an already drawn marker position (same
//!   pixel) are skipped, so every anomaly stays visible.
//!   Measured (release, 1200×800, 2 shared cores, `examples/chart_demo.rs`): 720 records
//!   6–21 ms PNG (~330 kB) and under 1 ms SVG (~46 kB); 200k records 45–70 ms PNG (~350 kB)
//!   and 19–36 ms SVG (~780 kB).
//! - **Timestamps** need not be sorted; the line is drawn in time order. Without timestamps
//!   the x axis is the record index.
//! - **Text** uses DejaVu Sans compiled into the binary, so PNGs render identically on a
//!   machine without system fonts. SVG text names `sans-serif` and is rendered by the viewer.

use std::collections::HashSet;
use std::fmt::Display;
use std::ops::Range;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Smallest accepted width or height in pixels; below this the panels have no room for text.
pub const MIN_SIDE: u32 = 200;
/// Largest accepted width or height in pixels; bounds the bitmap buffer at 48 MB.
pub const MAX_SIDE: u32 = 4000;
/// Default width: the tutorial's `figsize=(12, 8)` at 100 dpi.
pub const DEFAULT_WIDTH: u32 = 1200;
/// Default height: the tutorial's `figsize=(12, 8)` at 100 dpi.
pub const DEFAULT_HEIGHT: u32 = 800;

/// Panels drawn at most; further series are ignored.
const MAX_PANELS: usize = 4;

/// One feature to plot, in one panel.
#[derive(Clone, Copy, Debug)]
pub struct ChartSeries<'a> {
    /// Feature name: picks the panel title and labels the y axis.
    pub name: &'a str,
    /// One value per record.
    pub values: &'a [f64],
}

/// What to draw. Every slice holds one entry per record, in the same order.
#[derive(Clone, Debug)]
pub struct ChartInput<'a> {
    /// The x axis; `None` plots against the record index.
    pub timestamps: Option<&'a [DateTime<Utc>]>,
    /// One panel per series, in order; only the first four are drawn.
    pub series: Vec<ChartSeries<'a>>,
    /// Which records are anomalous (drawn as red points).
    pub anomalies: &'a [bool],
    /// Optional caption above the grid, e.g. "Last scored batch — model v3".
    pub title: Option<&'a str>,
}

/// Output image format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartFormat {
    Png,
    Svg,
}

impl ChartFormat {
    /// The media type to send with the bytes.
    pub fn content_type(self) -> &'static str {
        match self {
            ChartFormat::Png => "image/png",
            ChartFormat::Svg => "image/svg+xml",
        }
    }
}

/// Why a chart could not be drawn. Every variant but `Draw` is the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("nothing to draw: the chart needs at least one record")]
    Empty,
    #[error("nothing to draw: the chart needs at least one series")]
    NoSeries,
    #[error(
        "chart size {width}x{height} is out of range: width and height must each be between {MIN_SIDE} and {MAX_SIDE} pixels"
    )]
    Size { width: u32, height: u32 },
    #[error("`{name}` has {actual} entries but the chart has {expected} records")]
    LengthMismatch {
        name: String,
        expected: usize,
        actual: usize,
    },
    #[error("drawing the chart failed: {0}")]
    Draw(String),
}

/// Draws the chart of `input` as `format`, `width`×`height` pixels.
pub fn render(
    input: &ChartInput,
    format: ChartFormat,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, ChartError> {
    let plan = Plan::new(input, width, height)?;
    ensure_fonts()?;
    match format {
        ChartFormat::Png => {
            let mut rgb = vec![0u8; width as usize * height as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
                draw_chart(&root, &plan)?;
                root.present().map_err(draw_err)?;
            }
            encode_png(&rgb, width, height)
        }
        ChartFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
                draw_chart(&root, &plan)?;
                root.present().map_err(draw_err)?;
            }
            Ok(svg.into_bytes())
        }
    }
}

/// The tutorial's panel titles for the seed features, anything else generically.
fn panel_title(name: &str) -> String {
    match name {
        "bytes_sent" => "Bytes Sent Over Time".to_owned(),
        "bytes_received" => "Bytes Received Over Time".to_owned(),
        "connections" => "Network Connections Over Time".to_owned(),
        "active_sessions" => "Active Sessions Over Time".to_owned(),
        other => format!("{other} over time"),
    }
}

fn draw_err(e: impl Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Plotters' text needs a registered font; registering is global, so do it once per process.
fn ensure_fonts() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let fonts = [
                (FontStyle::Normal, dejavu::sans::regular()),
                (FontStyle::Bold, dejavu::sans::bold()),
            ];
            for (style, bytes) in fonts {
                plotters::style::register_font("sans-serif", style, bytes)
                    .map_err(|_| "the embedded DejaVu Sans font could not be loaded".to_owned())?;
            }
            Ok(())
        })
        .clone()
        .map_err(ChartError::Draw)
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header().map_err(draw_err)?;
    writer.write_image_data(rgb).map_err(draw_err)?;
    writer.finish().map_err(draw_err)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Input checking and the data-side plan (everything that does not depend on the backend).

/// Which kind of x axis the chart has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum XKind {
    /// Seconds since the Unix epoch, UTC.
    Time,
    /// Record index.
    Index,
}

struct Plan<'a> {
    xs: Vec<f64>,
    /// Record indices in x order, when the records are not already sorted by x.
    order: Option<Vec<usize>>,
    x_kind: XKind,
    x_range: (f64, f64),
    series: &'a [ChartSeries<'a>],
    anomalies: &'a [bool],
    anomaly_count: usize,
    title: Option<&'a str>,
    theme: Theme,
}

impl<'a> Plan<'a> {
    fn new(input: &'a ChartInput<'a>, width: u32, height: u32) -> Result<Self, ChartError> {
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
    fn ordered(&self) -> impl Iterator<Item = usize> + '_ {
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

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
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
fn y_range(lo: f64, hi: f64) -> (f64, f64) {
    let flat = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
    let (a, b) = pad_range(lo, hi, 0.08, flat, 0.0);
    if a < b { (a, b) } else { (a - 1.0, b + 1.0) }
}

// ---------------------------------------------------------------------------------------------
// Sizes and colours.

/// Pixel sizes, chosen to match matplotlib's defaults at 1200×800 and scaled with the image.
#[derive(Clone, Copy, Debug)]
struct Theme {
    tick_px: f64,
    axis_px: f64,
    title_px: f64,
    caption_px: f64,
    legend_px: f64,
    marker_radius: i32,
    margin: i32,
}

impl Theme {
    fn for_size(width: u32, height: u32) -> Self {
        let scale = (f64::from(width) / f64::from(DEFAULT_WIDTH))
            .min(f64::from(height) / f64::from(DEFAULT_HEIGHT))
            // Below 0.75 tick labels would drop under 10 px and stop being legible.
            .clamp(0.75, 3.0);
        Self {
            tick_px: 13.0 * scale,
            axis_px: 14.0 * scale,
            title_px: 17.0 * scale,
            caption_px: 20.0 * scale,
            legend_px: 13.0 * scale,
            // matplotlib's s=50 is a ~7 pt marker: about 10 px across at 100 dpi.
            marker_radius: (5.0 * scale).round().max(2.0) as i32,
            margin: (12.0 * scale).round() as i32,
        }
    }
}

/// matplotlib's default blue (tab:blue) at alpha 0.7, composited on white in advance: the
/// same look as the tutorial without overlapping segments of a dense line darkening each
/// other. Its red channel (98) can never pass a "clearly red" test.
const LINE_COLOUR: RGBColor = RGBColor(98, 160, 202);
/// matplotlib's `color='red'`.
const ANOMALY_COLOUR: RGBColor = RGBColor(255, 0, 0);
const GRID_COLOUR: RGBColor = RGBColor(230, 230, 230);
const AXIS_COLOUR: RGBColor = RGBColor(60, 60, 60);
const TEXT_COLOUR: RGBColor = RGBColor(30, 30, 30);
const MUTED_TEXT_COLOUR: RGBColor = RGBColor(120, 120, 120);

fn font(px: f64) -> TextStyle<'static> {
    ("sans-serif", px).into_font().color(&TEXT_COLOUR)
}

// ---------------------------------------------------------------------------------------------
// Axes: our own tick placement, so time axes get round hours/days/months and labels that fit.

/// Turns a tick position into its label.
type TickFormatter = dyn Fn(&f64) -> String;

/// A linear axis over `[lo, hi]` whose tick positions were chosen up front.
#[derive(Clone, Debug)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
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
fn value_ticks(lo: f64, hi: f64, max_ticks: usize, integer: bool) -> (Vec<f64>, f64) {
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
fn value_formatter(lo: f64, hi: f64, step: f64) -> impl Fn(&f64) -> String {
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
enum TimeStep {
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
fn time_ticks(
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

fn time_formatter(step: TimeStep) -> impl Fn(&f64) -> String {
    let format = step.format();
    move |secs: &f64| {
        let whole = secs.floor();
        let nanos = ((secs - whole) * 1e9).round().clamp(0.0, 999_999_999.0) as u32;
        DateTime::from_timestamp(whole as i64, nanos)
            .map(|t| t.format(format).to_string())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------------
// Line decimation.

/// The first, lowest, highest and last point of one pixel column, in record order.
struct Column {
    key: usize,
    first: (usize, f64, f64),
    low: (usize, f64, f64),
    high: (usize, f64, f64),
    last: (usize, f64, f64),
}

impl Column {
    fn new(key: usize, point: (usize, f64, f64)) -> Self {
        Self {
            key,
            first: point,
            low: point,
            high: point,
            last: point,
        }
    }

    fn add(&mut self, point: (usize, f64, f64)) {
        if point.2 < self.low.2 {
            self.low = point;
        }
        if point.2 > self.high.2 {
            self.high = point;
        }
        self.last = point;
    }

    fn flush(&self, out: &mut Vec<(f64, f64)>) {
        let mut points = [self.first, self.low, self.high, self.last];
        points.sort_by_key(|p| p.0);
        let mut previous = None;
        for (pos, x, y) in points {
            if previous != Some(pos) {
                out.push((x, y));
                previous = Some(pos);
            }
        }
    }
}

/// The line of one series as runs of finite points in x order. With `columns`, points are
/// reduced per pixel column (see the module docs); a run breaks wherever a non-finite value
/// lies between two columns, gaps inside one column being narrower than a pixel.
fn line_runs(
    points: impl Iterator<Item = (f64, f64)>,
    x_range: (f64, f64),
    columns: Option<usize>,
) -> Vec<Vec<(f64, f64)>> {
    let (x_lo, x_hi) = x_range;
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut column: Option<Column> = None;
    let mut gap = false;
    for (pos, (x, y)) in points.enumerate() {
        if !y.is_finite() {
            gap = true;
            continue;
        }
        let key = match columns {
            Some(cols) => {
                let frac = (x - x_lo) / (x_hi - x_lo);
                ((frac * cols as f64).floor().max(0.0) as usize).min(cols.saturating_sub(1))
            }
            None => pos,
        };
        match column.as_mut() {
            Some(c) if c.key == key => c.add((pos, x, y)),
            _ => {
                if let Some(done) = column.take() {
                    done.flush(&mut run);
                }
                if gap && !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                column = Some(Column::new(key, (pos, x, y)));
            }
        }
        gap = false;
    }
    if let Some(done) = column {
        done.flush(&mut run);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

// ---------------------------------------------------------------------------------------------
// Drawing.

fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plan: &Plan,
) -> Result<(), ChartError> {
    let theme = plan.theme;
    root.fill(&WHITE).map_err(draw_err)?;
    let mut grid_area = root.margin(theme.margin / 2, 0, 0, 0);
    if let Some(title) = plan.title {
        let px = fitting_size(&grid_area, title, theme.caption_px, FontStyle::Bold)?;
        let style = ("sans-serif", px, FontStyle::Bold)
            .into_font()
            .color(&TEXT_COLOUR);
        grid_area = grid_area.titled(title, style).map_err(draw_err)?;
    }
    let shape = match plan.series.len() {
        1 => (1, 1),
        2 => (2, 1),
        _ => (2, 2),
    };
    let cells = grid_area.split_evenly(shape);
    for (cell, series) in cells.iter().zip(plan.series) {
        draw_panel(cell, plan, series)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    plan: &Plan,
    series: &ChartSeries,
) -> Result<(), ChartError> {
    let theme = plan.theme;
    let (area_w, area_h) = area.dim_in_pixel();
    let (area_w, area_h) = (f64::from(area_w), f64::from(area_h));
    let margin = f64::from(theme.margin);
    let tick_font = font(theme.tick_px);
    let axis_font = font(theme.axis_px);

    // Vertical layout first: the plot height decides how many y ticks fit, their labels decide
    // the width of the y label area, and that decides how many x ticks fit.
    let x_label_area = (theme.tick_px * 1.3 + theme.axis_px * 1.6 + 6.0).min(area_h / 3.0);
    let plot_h = area_h - 2.0 * margin - theme.title_px * 1.6 - x_label_area;
    let (y_lo, y_hi) = min_max(series.values.iter().copied())
        .map(|(lo, hi)| y_range(lo, hi))
        .unwrap_or((0.0, 1.0));
    let y_max_ticks = (plot_h / (theme.tick_px * 3.0)).clamp(2.0, 10.0) as usize;
    let (y_ticks, y_step) = value_ticks(y_lo, y_hi, y_max_ticks, false);
    let y_format = value_formatter(y_lo, y_hi, y_step);
    let mut widest_label = 0.0f64;
    for t in &y_ticks {
        let (w, _) = area
            .estimate_text_size(&y_format(t), &tick_font)
            .map_err(draw_err)?;
        widest_label = widest_label.max(f64::from(w));
    }
    let y_label_area = (widest_label + theme.axis_px * 1.8 + 10.0).min(area_w / 2.0);

    let plot_w = (area_w - 2.0 * margin - y_label_area).max(1.0);
    let (x_lo, x_hi) = plan.x_range;
    let char_px = theme.tick_px * 0.62;
    let (x_ticks, x_format): (Vec<f64>, Box<TickFormatter>) = match plan.x_kind {
        XKind::Time => {
            // Digits are the widest characters in these labels and all equally wide.
            let label_px = |step: TimeStep| {
                let sample = time_formatter(step)(&1.2e9);
                area.estimate_text_size(&sample, &tick_font)
                    .map_or(sample.len() as f64 * char_px, |(w, _)| f64::from(w))
            };
            let (ticks, step) = time_ticks(x_lo, x_hi, plot_w, label_px);
            (ticks, Box::new(time_formatter(step)))
        }
        XKind::Index => {
            let digits = format!("{}", x_hi.abs().round() as u64).len() as f64;
            let max = (plot_w / (digits.max(3.0) * char_px * 2.5)).clamp(2.0, 12.0) as usize;
            let (ticks, _) = value_ticks(x_lo, x_hi, max, true);
            (ticks, Box::new(|v: &f64| format!("{v:.0}")))
        }
    };
    let x_tick_count = x_ticks.len();
    let y_tick_count = y_ticks.len();
    let x_axis = Axis {
        lo: x_lo,
        hi: x_hi,
        ticks: x_ticks,
    };
    let y_axis = Axis {
        lo: y_lo,
        hi: y_hi,
        ticks: y_ticks,
    };

    let title = panel_title(series.name);
    let title_px = fitting_size(area, &title, theme.title_px, FontStyle::Normal)?;
    let mut chart = ChartBuilder::on(area)
        .margin(theme.margin)
        .caption(&title, font(title_px))
        .x_label_area_size(x_label_area as u32)
        .y_label_area_size(y_label_area as u32)
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_labels(x_tick_count)
        .y_labels(y_tick_count)
        .max_light_lines(0)
        .bold_line_style(GRID_COLOUR)
        .axis_style(AXIS_COLOUR)
        .label_style(tick_font.clone())
        .axis_desc_style(axis_font)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .x_desc(match plan.x_kind {
            XKind::Time => "Time (UTC)",
            XKind::Index => "Record",
        })
        .y_desc(series.name)
        .draw()
        .map_err(draw_err)?;

    let (px_x, px_y) = chart.plotting_area().get_pixel_range();
    let columns = usize::try_from(px_x.end - px_x.start).unwrap_or(1).max(1);
    let decimate = (plan.xs.len() > 4 * columns).then_some(columns);
    let points = plan.ordered().map(|i| (plan.xs[i], series.values[i]));
    let runs = line_runs(points, plan.x_range, decimate);

    let line_style = ShapeStyle::from(&LINE_COLOUR).stroke_width(1);
    let anomaly_style = ShapeStyle::from(&ANOMALY_COLOUR).filled();
    let radius = theme.marker_radius;
    // Drawn pixels the legend should avoid covering, with a weight each.
    let mut occupied: Vec<((i32, i32), usize)> = Vec::new();
    for run in &runs {
        occupied.extend(run.iter().map(|p| (chart.backend_coord(p), 1)));
        if let [only] = run.as_slice() {
            // A lone point between gaps (or a one-record chart) has no line to draw: mark it.
            chart
                .draw_series(std::iter::once(Circle::new(
                    *only,
                    (radius / 2).max(2),
                    LINE_COLOUR.filled(),
                )))
                .map_err(draw_err)?;
        } else {
            chart
                .draw_series(std::iter::once(PathElement::new(run.clone(), line_style)))
                .map_err(draw_err)?;
        }
    }

    // Every anomaly is drawn; markers that would land on exactly the same pixel add nothing.
    let mut seen = HashSet::new();
    let mut markers = Vec::new();
    for (i, _) in plan.anomalies.iter().enumerate().filter(|(_, a)| **a) {
        let point = (plan.xs[i], series.values[i]);
        if point.1.is_finite() && seen.insert(chart.backend_coord(&point)) {
            markers.push(point);
        }
    }
    // Hiding an anomaly is far worse than hiding a stretch of ordinary line.
    occupied.extend(seen.iter().map(|&p| (p, 100)));
    chart
        .draw_series(
            markers
                .iter()
                .map(|p| Circle::new(*p, radius, anomaly_style)),
        )
        .map_err(draw_err)?;

    if runs.is_empty() {
        let note = font(theme.axis_px)
            .color(&MUTED_TEXT_COLOUR)
            .pos(Pos::new(HPos::Center, VPos::Center));
        let centre = ((x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0);
        chart
            .draw_series(std::iter::once(Text::new("no finite values", centre, note)))
            .map_err(draw_err)?;
    }

    // Legend entries come from empty series, so they exist whatever the data looks like.
    let legend_line = line_style.stroke_width(2);
    let swatch = (theme.legend_px * 1.5) as i32;
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(draw_err)?
        .label(series.name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + swatch, y)], legend_line));
    let mut legend_labels = vec![series.name.to_owned()];
    if plan.anomaly_count > 0 {
        // Only with anomalies: a red legend dot on a clean batch would claim otherwise.
        let label = format!("Anomalies ({})", plan.anomaly_count);
        legend_labels.push(label.clone());
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(draw_err)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x + swatch / 2, y), radius, anomaly_style));
    }

    let legend_font = font(theme.legend_px);
    let mut text_w = 0.0f64;
    for label in &legend_labels {
        let (w, _) = area
            .estimate_text_size(label, &legend_font)
            .map_err(draw_err)?;
        text_w = text_w.max(f64::from(w));
    }
    let legend_size = (
        (text_w + f64::from(swatch) + theme.legend_px * 3.0) as i32,
        (legend_labels.len() as f64 * theme.legend_px * 1.6 + theme.legend_px) as i32,
    );
    let plot_size = (px_x.end - px_x.start, px_y.end - px_y.start);
    if legend_size.0 * 2 > plot_size.0 || legend_size.1 * 3 > plot_size.1 {
        // In a thumbnail the legend would hide the data it explains; the title still names it.
        return Ok(());
    }
    let position = legend_corner(&occupied, (px_x, px_y), legend_size);
    chart
        .configure_series_labels()
        .position(position)
        .legend_area_size(swatch + swatch / 2)
        .label_font(legend_font)
        .background_style(WHITE.mix(0.85))
        .border_style(GRID_COLOUR)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// The font size at most `px` at which `text` fits in 95% of the width of `area`, so long
/// titles shrink instead of running into the neighbouring panel.
fn fitting_size<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    px: f64,
    style: FontStyle,
) -> Result<f64, ChartError> {
    let (width, _) = area.dim_in_pixel();
    let (text_w, _) = area
        .estimate_text_size(text, &("sans-serif", px, style).into_text_style(area))
        .map_err(draw_err)?;
    let room = f64::from(width) * 0.95;
    Ok(if f64::from(text_w) > room {
        (px * room / f64::from(text_w)).max(6.0)
    } else {
        px
    })
}

/// matplotlib's `loc="best"`, roughly: the plot corner whose legend-sized box covers the
/// least weight of drawn points, preferring the upper right on ties.
fn legend_corner(
    points: &[((i32, i32), usize)],
    plot: (Range<i32>, Range<i32>),
    size: (i32, i32),
) -> SeriesLabelPosition {
    let (xs, ys) = plot;
    let (w, h) = (size.0 + 10, size.1 + 10);
    let candidates = [
        (
            SeriesLabelPosition::UpperRight,
            xs.end - w..xs.end,
            ys.start..ys.start + h,
        ),
        (
            SeriesLabelPosition::UpperLeft,
            xs.start..xs.start + w,
            ys.start..ys.start + h,
        ),
        (
            SeriesLabelPosition::LowerRight,
            xs.end - w..xs.end,
            ys.end - h..ys.end,
        ),
        (
            SeriesLabelPosition::LowerLeft,
            xs.start..xs.start + w,
            ys.end - h..ys.end,
        ),
    ];
    let mut best = SeriesLabelPosition::UpperRight;
    let mut best_count = usize::MAX;
    for (position, bx, by) in candidates {
        let count: usize = points
            .iter()
            .filter(|((x, y), _)| bx.contains(x) && by.contains(y))
            .map(|(_, weight)| weight)
            .sum();
        if count < best_count {
            best = position;
            best_count = count;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    /// Seed-like traffic: `n` hourly records, a burst (and the only anomaly) every 100th hour.
    struct Traffic {
        timestamps: Vec<DateTime<Utc>>,
        sent: Vec<f64>,
        received: Vec<f64>,
        connections: Vec<f64>,
        sessions: Vec<f64>,
        anomalies: Vec<bool>,
    }

    impl Traffic {
        fn new(n: usize) -> Self {
            let noise = |i: usize, salt: f64| {
                let v = ((i as f64 + salt) * 12.9898).sin() * 43_758.545_3;
                (v - v.floor()) * 2.0 - 1.0
            };
            let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
            let anomalies: Vec<bool> = (0..n).map(|i| i % 100 == 0).collect();
            let level = |i: usize, normal: f64, peak: f64| if anomalies[i] { peak } else { normal };
            Self {
                timestamps: (0..n).map(|i| start + Duration::hours(i as i64)).collect(),
                sent: (0..n)
                    .map(|i| level(i, 1.0e6, 5.0e6) + 3.0e5 * noise(i, 1.0))
                    .collect(),
                received: (0..n)
                    .map(|i| level(i, 1.2e6, 6.0e6) + 3.5e5 * noise(i, 2.0))
                    .collect(),
                connections: (0..n)
                    .map(|i| (50.0 + 12.0 * noise(i, 3.0)).round())
                    .collect(),
                sessions: (0..n)
                    .map(|i| (25.0 + 8.0 * noise(i, 4.0)).round())
                    .collect(),
                anomalies,
            }
        }

        fn input(&self) -> ChartInput<'_> {
            ChartInput {
                timestamps: Some(&self.timestamps),
                series: vec![
                    ChartSeries {
                        name: "bytes_sent",
                        values: &self.sent,
                    },
                    ChartSeries {
                        name: "bytes_received",
                        values: &self.received,
                    },
                    ChartSeries {
                        name: "connections",
                        values: &self.connections,
                    },
                    ChartSeries {
                        name: "active_sessions",
                        values: &self.sessions,
                    },
                ],
                anomalies: &self.anomalies,
                title: None,
            }
        }
    }

    /// Decodes a PNG into (width, height, RGB bytes), failing the test if it is not one.
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut decoder = png::Decoder::new(bytes);
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("PNG image data");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    /// Whether the SVG has a text element reading exactly `label` (plotters puts the text
    /// on its own line).
    fn has_text(svg: &str, label: &str) -> bool {
        svg.contains(&format!("\n{label}\n</text>"))
    }

    fn red_pixels(rgb: &[u8]) -> usize {
        rgb.chunks_exact(3)
            .filter(|p| p[0] > 200 && p[1] < 60 && p[2] < 60)
            .count()
    }

    fn png(input: &ChartInput, width: u32, height: u32) -> (u32, u32, Vec<u8>) {
        decode(&render(input, ChartFormat::Png, width, height).expect("renders"))
    }

    fn svg(input: &ChartInput, width: u32, height: u32) -> String {
        let bytes = render(input, ChartFormat::Svg, width, height).expect("renders");
        String::from_utf8(bytes).expect("SVG is UTF-8")
    }

    #[test]
    fn png_has_the_requested_size_and_red_anomaly_points() {
        let traffic = Traffic::new(720);
        let (w, h, rgb) = png(&traffic.input(), DEFAULT_WIDTH, DEFAULT_HEIGHT);
        assert_eq!((w, h), (DEFAULT_WIDTH, DEFAULT_HEIGHT));
        // 8 bursts × 4 panels of ~80-pixel markers, plus 4 legend markers.
        assert!(
            red_pixels(&rgb) > 8 * 4 * 40,
            "red pixels: {}",
            red_pixels(&rgb)
        );
        // A white background, mostly.
        let white = rgb
            .chunks_exact(3)
            .filter(|p| p == &[255, 255, 255])
            .count();
        assert!(white > (w * h) as usize / 2);
    }

    #[test]
    fn png_without_anomalies_has_no_red_at_all() {
        let mut traffic = Traffic::new(720);
        traffic.anomalies.iter_mut().for_each(|a| *a = false);
        let (_, _, rgb) = png(&traffic.input(), 900, 700);
        assert_eq!(red_pixels(&rgb), 0);
    }

    #[test]
    fn png_size_follows_the_request_at_the_extremes() {
        let traffic = Traffic::new(720);
        for (w, h) in [
            (MIN_SIDE, MIN_SIDE),
            (MIN_SIDE, MAX_SIDE),
            (MAX_SIDE, MIN_SIDE),
            (640, 480),
        ] {
            let (got_w, got_h, _) = png(&traffic.input(), w, h);
            assert_eq!((got_w, got_h), (w, h));
        }
    }

    #[test]
    fn svg_has_the_size_and_the_tutorial_panel_titles() {
        let traffic = Traffic::new(720);
        let mut input = traffic.input();
        input.title = Some("Last scored batch — model v3 <&>");
        let text = svg(&input, 1000, 700);
        assert!(text.trim_start().starts_with("<svg"), "{}", &text[..80]);
        assert!(text.trim_end().ends_with("</svg>"));
        assert!(text.contains(r#"width="1000""#) && text.contains(r#"height="700""#));
        for title in [
            "Bytes Sent Over Time",
            "Bytes Received Over Time",
            "Network Connections Over Time",
            "Active Sessions Over Time",
            "Time (UTC)",
            "Anomalies (8)",
        ] {
            assert!(text.contains(title), "missing {title:?}");
        }
        // The caption is escaped, so the document stays well-formed.
        assert!(text.contains("model v3 &lt;&amp;&gt;"));
        assert!(
            text.matches("<circle").count() >= 8 * 4,
            "a marker per anomaly per panel"
        );
    }

    #[test]
    fn other_features_get_a_generic_title_and_an_index_axis() {
        let values = [3.0, 1.0, 4.0, 1.0, 5.0];
        let input = ChartInput {
            timestamps: None,
            series: vec![ChartSeries {
                name: "dns_queries",
                values: &values,
            }],
            anomalies: &[false, false, false, false, true],
            title: None,
        };
        let text = svg(&input, 800, 400);
        assert!(text.contains("dns_queries over time"));
        assert!(has_text(&text, "Record"));
    }

    #[test]
    fn rejects_sizes_out_of_range() {
        let traffic = Traffic::new(10);
        for (w, h) in [
            (MIN_SIDE - 1, 800),
            (800, MIN_SIDE - 1),
            (MAX_SIDE + 1, 800),
            (0, 0),
            (800, u32::MAX),
        ] {
            let err = render(&traffic.input(), ChartFormat::Png, w, h).unwrap_err();
            assert!(
                matches!(err, ChartError::Size { width, height } if (width, height) == (w, h)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn rejects_empty_input() {
        let input = ChartInput {
            timestamps: Some(&[]),
            series: vec![ChartSeries {
                name: "bytes_sent",
                values: &[],
            }],
            anomalies: &[],
            title: None,
        };
        assert!(matches!(
            render(&input, ChartFormat::Png, 800, 600),
            Err(ChartError::Empty)
        ));
        let no_series = ChartInput {
            series: Vec::new(),
            ..input
        };
        assert!(matches!(
            render(&no_series, ChartFormat::Svg, 800, 600),
            Err(ChartError::NoSeries)
        ));
    }

    #[test]
    fn rejects_mismatched_lengths_and_names_the_culprit() {
        let traffic = Traffic::new(50);
        let mut input = traffic.input();
        input.series[2].values = &traffic.connections[..49];
        match render(&input, ChartFormat::Png, 800, 600) {
            Err(ChartError::LengthMismatch {
                name,
                expected,
                actual,
            }) => {
                assert_eq!((name.as_str(), expected, actual), ("connections", 50, 49));
            }
            other => panic!("expected a length mismatch, got {other:?}"),
        }
        let mut input = traffic.input();
        input.anomalies = &traffic.anomalies[..10];
        assert!(matches!(
            render(&input, ChartFormat::Svg, 800, 600),
            Err(ChartError::LengthMismatch { ref name, .. }) if name == "anomalies"
        ));
        let mut input = traffic.input();
        input.timestamps = Some(&traffic.timestamps[..1]);
        assert!(matches!(
            render(&input, ChartFormat::Png, 800, 600),
            Err(ChartError::LengthMismatch { ref name, .. }) if name == "timestamps"
        ));
    }

    #[test]
    fn one_record_renders_with_its_anomaly() {
        let traffic = Traffic::new(1);
        let (_, _, rgb) = png(&traffic.input(), 800, 600);
        assert!(
            red_pixels(&rgb) > 4 * 40,
            "the single anomalous record is drawn"
        );
        let mut quiet = Traffic::new(1);
        quiet.anomalies[0] = false;
        let (_, _, rgb) = png(&quiet.input(), 800, 600);
        assert_eq!(red_pixels(&rgb), 0);
        svg(&traffic.input(), 800, 600);
    }

    #[test]
    fn non_finite_values_are_skipped_not_fatal() {
        let mut traffic = Traffic::new(300);
        traffic.sent[0] = f64::NAN; // an anomaly with no value: no marker in that panel
        traffic.sent[5] = f64::INFINITY;
        traffic.received.iter_mut().for_each(|v| *v = f64::NAN);
        traffic.connections[7] = f64::NEG_INFINITY;
        traffic.sessions = [f64::MAX, -f64::MAX].repeat(150);
        let text = svg(&traffic.input(), 900, 600);
        assert!(text.contains("no finite values"));
        let (_, _, rgb) = png(&traffic.input(), 900, 600);
        assert!(red_pixels(&rgb) > 0);
    }

    #[test]
    fn constant_series_and_odd_ranges_render() {
        let n = 40;
        let zeros = vec![0.0; n];
        let big = vec![7.5e12; n];
        let tiny: Vec<f64> = (0..n).map(|i| 1e-9 * i as f64).collect();
        let negative: Vec<f64> = (0..n).map(|i| -1000.0 - i as f64).collect();
        let same_time = vec![Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(); n];
        let anomalies = vec![false; n];
        let input = ChartInput {
            timestamps: Some(&same_time),
            series: vec![
                ChartSeries {
                    name: "zeros",
                    values: &zeros,
                },
                ChartSeries {
                    name: "big",
                    values: &big,
                },
                ChartSeries {
                    name: "tiny",
                    values: &tiny,
                },
                ChartSeries {
                    name: "negative",
                    values: &negative,
                },
            ],
            anomalies: &anomalies,
            title: Some("odd ranges"),
        };
        png(&input, 800, 600);
        let text = svg(&input, 800, 600);
        assert!(has_text(&text, "8.0T"), "compact labels for large values");
    }

    #[test]
    fn unsorted_timestamps_and_long_spans_render() {
        let mut traffic = Traffic::new(500);
        traffic.timestamps.reverse();
        // Spread over decades, so the axis uses yearly ticks.
        for (i, t) in traffic.timestamps.iter_mut().enumerate() {
            *t += Duration::days(30 * i as i64);
        }
        png(&traffic.input(), 1200, 800);
        let text = svg(&traffic.input(), 1200, 800);
        assert!(has_text(&text, "2030"), "yearly ticks");
    }

    #[test]
    fn more_than_four_series_draws_the_first_four() {
        let traffic = Traffic::new(100);
        let mut input = traffic.input();
        input.series.push(ChartSeries {
            name: "ignored_feature",
            values: &[],
        });
        let text = svg(&input, 800, 600);
        assert!(!text.contains("ignored_feature"));
        // Two and three panels use the stacked and 2×2 layouts.
        input.series.truncate(2);
        png(&input, 800, 600);
        input.series.push(ChartSeries {
            name: "connections",
            values: &traffic.connections,
        });
        png(&input, 800, 600);
    }

    #[test]
    fn large_batches_render() {
        let traffic = Traffic::new(200_000);
        let (w, h, rgb) = png(&traffic.input(), DEFAULT_WIDTH, DEFAULT_HEIGHT);
        assert_eq!((w, h), (DEFAULT_WIDTH, DEFAULT_HEIGHT));
        assert!(red_pixels(&rgb) > 0);
        svg(&traffic.input(), DEFAULT_WIDTH, DEFAULT_HEIGHT);
    }

    #[test]
    fn decimation_keeps_extremes_order_and_gaps() {
        let points: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64, if i == 500 { f64::NAN } else { (i % 7) as f64 }))
            .chain([(1000.0, 100.0)])
            .collect();
        let runs = line_runs(points.iter().copied(), (0.0, 1000.0), Some(10));
        let total: usize = runs.iter().map(Vec::len).sum();
        assert!(
            total <= 4 * 10,
            "at most four points per column, got {total}"
        );
        assert!(
            runs.iter().flatten().any(|p| p.1 == 100.0),
            "the peak survives"
        );
        assert!(
            runs.iter().flatten().any(|p| p.1 == 6.0) && runs.iter().flatten().any(|p| p.1 == 0.0)
        );
        for run in &runs {
            assert!(run.windows(2).all(|w| w[0].0 <= w[1].0), "x order kept");
        }
        // Without decimation a NaN splits the line.
        let runs = line_runs(points.iter().copied(), (0.0, 1000.0), None);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), 1000);
    }

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

    /// The bytes rendered for fixed inputs, pinned: a refactor of the drawing code must not
    /// move a single pixel or SVG attribute. A deliberate change to the look updates these.
    #[test]
    fn rendered_bytes_are_pinned() {
        use sha2::{Digest, Sha256};
        let sha = |bytes: &[u8]| hex::encode(Sha256::digest(bytes));
        let traffic = Traffic::new(720);
        let mut timed = traffic.input();
        timed.title = Some("Last scored batch — model v3");
        let mut indexed = traffic.input();
        indexed.timestamps = None;
        indexed.series.truncate(3);
        let cases = [
            (
                "timed png",
                &timed,
                ChartFormat::Png,
                "4ef2c0bb11a73259a8a6f394d84ce4f2cd52009d072ceb84815f7d9f8de36dac",
            ),
            (
                "timed svg",
                &timed,
                ChartFormat::Svg,
                "e0420ffa9fa9d86a60c012e3e0217b44e595db46944204ce499ff40f9250e8c9",
            ),
            (
                "indexed png",
                &indexed,
                ChartFormat::Png,
                "cfa5d08415a950f6e760205b4276e7c2b5b67aca2a8ae8d8ab5e827c20704165",
            ),
            (
                "indexed svg",
                &indexed,
                ChartFormat::Svg,
                "86ea55fb455cf5b0531cd95ae41585b47ff34ea28fe29b3c99a608ffaef43a2a",
            ),
        ];
        let mut got = Vec::new();
        for (case, input, format, _) in &cases {
            let bytes = render(input, *format, DEFAULT_WIDTH, DEFAULT_HEIGHT).expect("renders");
            got.push((case, sha(&bytes)));
        }
        let expected: Vec<_> = cases
            .iter()
            .map(|(case, _, _, hash)| (case, hash.to_string()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn content_types() {
        assert_eq!(ChartFormat::Png.content_type(), "image/png");
        assert_eq!(ChartFormat::Svg.content_type(), "image/svg+xml");
    }
}
