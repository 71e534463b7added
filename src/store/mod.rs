//! STUB
pub mod alerts;
pub mod model_files;
#[derive(Debug, thiserror::Error)]
#[error("store")]
pub enum StoreError {
    BadCursor(String),
    Other(String),
}
