//! Drawing: the caption, the grid, and each panel's axes, line, anomaly markers and legend.

use std::collections::HashSet;
use std::ops::Range;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::line::line_runs;
use super::plan::{Plan, XKind, min_max, y_range};
use super::theme::{
    ANOMALY_COLOUR, AXIS_COLOUR, GRID_COLOUR, LINE_COLOUR, MUTED_TEXT_COLOUR, TEXT_COLOUR,
    fitting_size, font, widest_text,
};
use super::ticks::{
    Axis, TickFormatter, TimeStep, time_formatter, time_ticks, value_formatter, value_ticks,
};
use super::{ChartError, ChartSeries, draw_err};

/// The caption, then one panel per series in a grid of one, two (stacked) or four cells.
/// `stop` is asked before each panel: the drawing ends with [`ChartError::Stopped`] when it
/// says so.
pub(super) fn draw_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plan: &Plan,
    stop: &dyn Fn() -> bool,
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
        if stop() {
            return Err(ChartError::Stopped);
        }
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
    let widest_label = widest_text(area, y_ticks.iter().map(&y_format), &tick_font)?;
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
    let text_w = widest_text(area, &legend_labels, &legend_font)?;
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
