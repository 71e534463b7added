//! Shared application state: the active model slot, the stores, the settings and the last batches drawn.

use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::detector::Matrix;
use crate::detector::model::Model;
use crate::store::alerts::AlertStore;
use crate::store::models::ModelStore;
use crate::store::outbox::Outbox;
use crate::webhooks::Webhooks;

/// Cheap to clone; every handler gets one.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// The active model. Readers clone the inner `Arc` and drop the lock at once.
    model: RwLock<Option<Arc<Model>>>,
    /// Model versions and the active pointer: files, or PostgreSQL shared with other replicas.
    models: Arc<dyn ModelStore>,
    alerts: Arc<dyn AlertStore>,
    /// The webhook delivery queue; the same database as `alerts`.
    outbox: Arc<dyn Outbox>,
    webhooks: Arc<Webhooks>,
    /// One fit, rollback or follow-the-store reload at a time in this process, so versions are
    /// activated in order here (across replicas the store decides; see `model_sync`).
    model_change: tokio::sync::Mutex<()>,
    /// Why no model is loaded (for /readyz), or problems met loading one.
    load_problem: RwLock<Option<String>>,
    last_batch: RwLock<Option<Arc<ChartData>>>,
    training_batch: RwLock<Option<Arc<ChartData>>>,
}

/// What the chart needs of a batch: up to four feature series, timestamps and anomaly flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartData {
    pub model_version: u64,
    pub features: Vec<String>,
    /// Row-major values whose first `features.len()` columns are the series to draw: the
    /// scored batch's own matrix when it has at most four features (shared, not copied),
    /// else a copy of its first four columns.
    pub values: Arc<Matrix>,
    /// Present when every record had a parseable timestamp.
    pub timestamps: Option<Vec<DateTime<Utc>>>,
    pub anomalies: Vec<bool>,
}

impl ChartData {
    /// One series per feature in `features`, copied out of `values` for drawing.
    pub fn series(&self) -> Vec<Vec<f64>> {
        (0..self.features.len())
            .map(|j| self.values.column(j).collect())
            .collect()
    }
}

impl AppState {
    pub fn new(
        settings: Settings,
        models: Arc<dyn ModelStore>,
        alerts: Arc<dyn AlertStore>,
        outbox: Arc<dyn Outbox>,
        webhooks: Webhooks,
        model: Option<Model>,
        load_problem: Option<String>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                model: RwLock::new(model.map(Arc::new)),
                models,
                alerts,
                outbox,
                webhooks: Arc::new(webhooks),
                model_change: tokio::sync::Mutex::new(()),
                load_problem: RwLock::new(load_problem),
                last_batch: RwLock::new(None),
                training_batch: RwLock::new(None),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn models(&self) -> &dyn ModelStore {
        self.inner.models.as_ref()
    }

    pub fn alerts(&self) -> Arc<dyn AlertStore> {
        self.inner.alerts.clone()
    }

    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.inner.outbox.clone()
    }

    /// The configured webhook sinks.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The active model, if any. The lock is held only for the clone.
    pub fn model(&self) -> Option<Arc<Model>> {
        read(&self.inner.model).clone()
    }

    /// Makes `model` the active one (a short write lock) and clears any load problem.
    pub fn install_model(&self, model: Arc<Model>) {
        *write(&self.inner.model) = Some(model);
        *write(&self.inner.load_problem) = None;
    }

    pub fn load_problem(&self) -> Option<String> {
        read(&self.inner.load_problem).clone()
    }

    /// Serialises fits and rollbacks.
    pub fn model_change_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.model_change
    }

    pub fn last_batch(&self) -> Option<Arc<ChartData>> {
        read(&self.inner.last_batch).clone()
    }

    pub fn set_last_batch(&self, data: ChartData) {
        *write(&self.inner.last_batch) = Some(Arc::new(data));
    }

    pub fn training_batch(&self) -> Option<Arc<ChartData>> {
        read(&self.inner.training_batch).clone()
    }

    pub fn set_training_batch(&self, data: ChartData) {
        *write(&self.inner.training_batch) = Some(Arc::new(data));
    }
}

/// A poisoned lock only means another thread panicked mid-assignment of an `Option<Arc<_>>`,
/// which cannot leave it torn, so the value is still sound to use.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
