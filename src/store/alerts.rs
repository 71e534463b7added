//! STUB
use super::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use utoipa::ToSchema;
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
}
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, ToSchema)]
pub struct Alert {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub model_version: u64,
    pub severity: u8,
    pub status: AlertStatus,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub reason: String,
    pub summary: crate::detector::model::BatchSummary,
    pub records: Vec<AlertRecord>,
}
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, ToSchema)]
pub struct AlertRecord {
    pub index: usize,
    pub timestamp: Option<String>,
    pub score: f64,
    pub severity: u8,
    pub values: BTreeMap<String, f64>,
    pub fields: BTreeMap<String, String>,
    pub explanation: Vec<crate::detector::explain::FeatureContribution>,
}
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub min_severity: Option<u8>,
    pub status: Option<AlertStatus>,
    pub limit: usize,
    pub cursor: Option<String>,
}
#[derive(Debug, Clone)]
pub struct AlertPage {
    pub alerts: Vec<Alert>,
    pub next_cursor: Option<String>,
}
pub trait AlertStore: Send + Sync + 'static {
    fn insert(&self, alert: &Alert) -> Result<(), StoreError>;
    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError>;
    fn list(&self, q: &AlertQuery) -> Result<AlertPage, StoreError>;
    fn acknowledge(&self, id: &str, at: DateTime<Utc>) -> Result<Option<Alert>, StoreError>;
    fn count(&self) -> Result<u64, StoreError>;
}
pub struct SqliteAlertStore;
impl SqliteAlertStore {
    pub fn open(_p: &Path) -> Result<Self, StoreError> {
        Ok(Self)
    }
}
impl AlertStore for SqliteAlertStore {
    fn insert(&self, _a: &Alert) -> Result<(), StoreError> {
        Ok(())
    }
    fn get(&self, _id: &str) -> Result<Option<Alert>, StoreError> {
        Ok(None)
    }
    fn list(&self, _q: &AlertQuery) -> Result<AlertPage, StoreError> {
        Ok(AlertPage {
            alerts: vec![],
            next_cursor: None,
        })
    }
    fn acknowledge(&self, _id: &str, _at: DateTime<Utc>) -> Result<Option<Alert>, StoreError> {
        Ok(None)
    }
    fn count(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}
