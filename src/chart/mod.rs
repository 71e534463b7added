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

// `plan` checks the input and fixes what the data decides, once for every format; `panel`
// draws each cell with `ticks`' axes, `line`'s runs and `theme`'s sizes and colours.
mod line;
mod panel;
mod plan;
mod theme;
mod ticks;

use std::fmt::Display;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use plotters::prelude::*;

use panel::draw_chart;
use plan::Plan;

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
    /// The caller's stop check asked to stop (its request was cancelled).
    #[error("the chart was not finished: its drawing was asked to stop")]
    Stopped,
}

/// Draws the chart of `input` as `format`, `width`×`height` pixels.
pub fn render(
    input: &ChartInput,
    format: ChartFormat,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, ChartError> {
    render_watched(input, format, width, height, &|| false)
}

/// [`render`], asking `stop` before each panel and before the PNG is encoded, and ending with
/// [`ChartError::Stopped`] when it says so.
pub fn render_watched(
    input: &ChartInput,
    format: ChartFormat,
    width: u32,
    height: u32,
    stop: &dyn Fn() -> bool,
) -> Result<Vec<u8>, ChartError> {
    let plan = Plan::new(input, width, height)?;
    ensure_fonts()?;
    match format {
        ChartFormat::Png => {
            let mut rgb = vec![0u8; width as usize * height as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
                draw_chart(&root, &plan, stop)?;
                root.present().map_err(draw_err)?;
            }
            if stop() {
                return Err(ChartError::Stopped);
            }
            encode_png(&rgb, width, height)
        }
        ChartFormat::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
                draw_chart(&root, &plan, stop)?;
                root.present().map_err(draw_err)?;
            }
            Ok(svg.into_bytes())
        }
    }
}

/// A plotters or PNG encoder failure: the one error that is not the caller's input.
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
    fn drawing_asks_to_stop_before_each_panel_and_the_encoding() {
        let traffic = Traffic::new(1000);
        let input = traffic.input();
        for format in [ChartFormat::Png, ChartFormat::Svg] {
            // Never asked to stop: asked once per panel (four), and a PNG once more.
            let asked = std::cell::Cell::new(0);
            let never = || {
                asked.set(asked.get() + 1);
                false
            };
            let whole = render_watched(&input, format, 800, 600, &never).unwrap();
            assert_eq!(whole, render(&input, format, 800, 600).unwrap());
            let checks = if format == ChartFormat::Png { 5 } else { 4 };
            assert_eq!(asked.get(), checks, "{format:?}");
            // Asked to stop at each check in turn: it stops right there.
            for at in 1..=checks {
                let asked = std::cell::Cell::new(0);
                let stop = || {
                    asked.set(asked.get() + 1);
                    asked.get() == at
                };
                let got = render_watched(&input, format, 800, 600, &stop);
                assert!(matches!(got, Err(ChartError::Stopped)), "{format:?} {at}");
                assert_eq!(asked.get(), at);
            }
        }
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
