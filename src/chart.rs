//! STUB
pub struct ChartSeries<'a> {
    pub name: &'a str,
    pub values: &'a [f64],
}
pub struct ChartInput<'a> {
    pub timestamps: Option<&'a [chrono::DateTime<chrono::Utc>]>,
    pub series: Vec<ChartSeries<'a>>,
    pub anomalies: &'a [bool],
    pub title: Option<&'a str>,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartFormat {
    Png,
    Svg,
}
impl ChartFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Svg => "image/svg+xml",
        }
    }
}
pub const MIN_SIDE: u32 = 200;
pub const MAX_SIDE: u32 = 4000;
pub const DEFAULT_WIDTH: u32 = 1200;
pub const DEFAULT_HEIGHT: u32 = 800;
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("empty")]
    Empty,
    #[error("size")]
    Size { width: u32, height: u32 },
}
pub fn render(_i: &ChartInput, _f: ChartFormat, _w: u32, _h: u32) -> Result<Vec<u8>, ChartError> {
    Err(ChartError::Empty)
}
