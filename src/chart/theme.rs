//! Sizes, colours and fonts, scaled with the image.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{ChartError, DEFAULT_HEIGHT, DEFAULT_WIDTH, draw_err};

/// Pixel sizes, chosen to match matplotlib's defaults at 1200×800 and scaled with the image.
#[derive(Clone, Copy, Debug)]
pub(super) struct Theme {
    pub(super) tick_px: f64,
    pub(super) axis_px: f64,
    pub(super) title_px: f64,
    pub(super) caption_px: f64,
    pub(super) legend_px: f64,
    pub(super) marker_radius: i32,
    pub(super) margin: i32,
}

impl Theme {
    pub(super) fn for_size(width: u32, height: u32) -> Self {
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
pub(super) const LINE_COLOUR: RGBColor = RGBColor(98, 160, 202);
/// matplotlib's `color='red'`.
pub(super) const ANOMALY_COLOUR: RGBColor = RGBColor(255, 0, 0);
pub(super) const GRID_COLOUR: RGBColor = RGBColor(230, 230, 230);
pub(super) const AXIS_COLOUR: RGBColor = RGBColor(60, 60, 60);
pub(super) const TEXT_COLOUR: RGBColor = RGBColor(30, 30, 30);
pub(super) const MUTED_TEXT_COLOUR: RGBColor = RGBColor(120, 120, 120);

pub(super) fn font(px: f64) -> TextStyle<'static> {
    ("sans-serif", px).into_font().color(&TEXT_COLOUR)
}

/// The font size at most `px` at which `text` fits in 95% of the width of `area`, so long
/// titles shrink instead of running into the neighbouring panel.
pub(super) fn fitting_size<DB: DrawingBackend>(
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

/// The width in pixels of the widest of `texts` in `style`; 0 for none.
pub(super) fn widest_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    texts: impl IntoIterator<Item = impl AsRef<str>>,
    style: &TextStyle,
) -> Result<f64, ChartError> {
    let mut widest = 0.0f64;
    for text in texts {
        let (w, _) = area
            .estimate_text_size(text.as_ref(), style)
            .map_err(draw_err)?;
        widest = widest.max(f64::from(w));
    }
    Ok(widest)
}
