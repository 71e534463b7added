//! Shared application state: the settings, the stores, and each detector's settings, active
//! model slot and last batches drawn.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::detector::Matrix;
use crate::detector::model::Model;
use crate::service::detectors::DetectorSpec;
use crate::store::alerts::AlertStore;
use crate::store::detectors::{DEFAULT_DETECTOR, DetectorModels, DetectorStore};
use crate::store::idempotency::IdempotencyStore;
use crate::store::models::ModelStore;
use crate::store::outbox::Outbox;
use crate::store::streams::StreamStore;
use crate::store::suppressions::SuppressionStore;
use crate::stream::WindowBook;
use crate::webhooks::Webhooks;

/// Cheap to clone; every handler gets one.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    /// The detector the v1 paths serve; always there, so resolving it costs a clone.
    default: Arc<DetectorState>,
    /// Every other detector, by name. Readers clone the `Arc` they want and drop the lock.
    detectors: RwLock<BTreeMap<String, Arc<DetectorState>>>,
    stores: Stores,
    webhooks: Arc<Webhooks>,
    /// One change of the detector set (create, replace, delete, follow the store) at a time
    /// in this process.
    detector_change: tokio::sync::Mutex<()>,
    /// Idempotency keys whose requests run in this process now.
    in_flight: crate::service::idempotency::InFlight,
    /// The work slots and the memory budget every request takes from.
    limits: crate::work::Limits,
}

/// The stores every detector shares.
#[derive(Clone)]
pub struct Stores {
    pub alerts: Arc<dyn AlertStore>,
    /// The webhook delivery queue; the same database as `alerts`.
    pub outbox: Arc<dyn Outbox>,
    /// Detector settings; the same database as `alerts`.
    pub detectors: Arc<dyn DetectorStore>,
    /// Idempotency keys and their answers; the same database as `alerts`.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Each detector's model versions: files, or PostgreSQL shared with other replicas.
    pub models: Arc<dyn DetectorModels>,
    /// Continuous ingest's stream state and closed windows; the same database as `alerts`.
    pub streams: Arc<dyn StreamStore>,
    /// Suppression rules; the same database as `alerts`.
    pub suppressions: Arc<dyn SuppressionStore>,
}

/// One detector in memory: its settings, its active model and model store, and its charts.
pub struct DetectorState {
    name: String,
    spec: RwLock<Arc<DetectorSpec>>,
    /// The active model. Readers clone the inner `Arc` and drop the lock at once.
    model: RwLock<Option<Arc<Model>>>,
    /// Model versions and the active pointer: files, or PostgreSQL shared with other replicas.
    models: Arc<dyn ModelStore>,
    /// One fit, rollback or follow-the-store reload at a time in this process, so versions are
    /// activated in order here (across replicas the store decides; see `model_sync`).
    model_change: tokio::sync::Mutex<()>,
    /// Why no model is loaded (for /readyz), or problems met loading one.
    load_problem: RwLock<Option<String>>,
    last_batch: RwLock<Option<Arc<ChartData>>>,
    training_batch: RwLock<Option<Arc<ChartData>>>,
    /// Continuous ingest's open windows as last committed (`None`: load them from the store).
    /// Locked on a blocking thread for a whole ingest call, so calls into one detector take
    /// turns in this process; never held across an `.await`.
    stream: std::sync::Mutex<Option<LoadedStream>>,
}

/// A detector's stream in memory, at the store version it was loaded or committed at, with
/// the memory budget its open windows hold while they are kept.
pub struct LoadedStream {
    pub version: u64,
    pub book: WindowBook,
    pub resident: crate::work::Resident,
}

impl DetectorState {
    pub fn new(
        name: String,
        spec: DetectorSpec,
        models: Arc<dyn ModelStore>,
        model: Option<Model>,
        load_problem: Option<String>,
    ) -> Self {
        Self {
            name,
            spec: RwLock::new(Arc::new(spec)),
            model: RwLock::new(model.map(Arc::new)),
            models,
            model_change: tokio::sync::Mutex::new(()),
            load_problem: RwLock::new(load_problem),
            last_batch: RwLock::new(None),
            training_batch: RwLock::new(None),
            stream: std::sync::Mutex::new(None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_DETECTOR
    }

    /// The detector's settings. The lock is held only for the clone.
    pub fn spec(&self) -> Arc<DetectorSpec> {
        read(&self.spec).clone()
    }

    pub fn set_spec(&self, spec: Arc<DetectorSpec>) {
        *write(&self.spec) = spec;
    }

    pub fn models(&self) -> &dyn ModelStore {
        self.models.as_ref()
    }

    /// The model store, to move into a blocking task.
    pub fn model_store(&self) -> Arc<dyn ModelStore> {
        Arc::clone(&self.models)
    }

    /// The active model, if any. The lock is held only for the clone.
    pub fn model(&self) -> Option<Arc<Model>> {
        read(&self.model).clone()
    }

    /// Makes `model` the active one (a short write lock) and clears any load problem.
    pub fn install_model(&self, model: Arc<Model>) {
        *write(&self.model) = Some(model);
        *write(&self.load_problem) = None;
    }

    pub fn load_problem(&self) -> Option<String> {
        read(&self.load_problem).clone()
    }

    /// Serialises fits and rollbacks.
    pub fn model_change_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.model_change
    }

    pub fn last_batch(&self) -> Option<Arc<ChartData>> {
        read(&self.last_batch).clone()
    }

    pub fn set_last_batch(&self, data: ChartData) {
        *write(&self.last_batch) = Some(Arc::new(data));
    }

    /// The stream slot, locked (blocking: call it off the async runtime). A poisoned lock
    /// (a call panicked mid-fold) is taken with its state dropped, so it is reloaded.
    pub fn stream(&self) -> std::sync::MutexGuard<'_, Option<LoadedStream>> {
        self.stream.lock().unwrap_or_else(|e| {
            let mut guard = e.into_inner();
            *guard = None;
            guard
        })
    }

    pub fn training_batch(&self) -> Option<Arc<ChartData>> {
        read(&self.training_batch).clone()
    }

    pub fn set_training_batch(&self, data: ChartData) {
        *write(&self.training_batch) = Some(Arc::new(data));
    }
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
    /// `detectors` must hold `default`; the others are served under their names.
    pub fn new(
        settings: Settings,
        stores: Stores,
        webhooks: Webhooks,
        detectors: Vec<DetectorState>,
    ) -> Self {
        let mut map: BTreeMap<String, Arc<DetectorState>> = detectors
            .into_iter()
            .map(|d| (d.name.clone(), Arc::new(d)))
            .collect();
        let default = map.remove(DEFAULT_DETECTOR).unwrap_or_else(|| {
            panic!("the detector {DEFAULT_DETECTOR:?} is always built at start")
        });
        let limits = crate::work::Limits::new(
            settings.max_concurrency,
            settings.memory_budget_bytes(),
            settings.request_memory_budget_bytes(),
        );
        Self {
            inner: Arc::new(Inner {
                limits,
                settings,
                default,
                detectors: RwLock::new(map),
                stores,
                webhooks: Arc::new(webhooks),
                detector_change: tokio::sync::Mutex::new(()),
                in_flight: Default::default(),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Idempotency keys whose requests run in this process now.
    pub fn in_flight(&self) -> &crate::service::idempotency::InFlight {
        &self.inner.in_flight
    }

    /// The work slots and the memory budget.
    pub fn limits(&self) -> &crate::work::Limits {
        &self.inner.limits
    }

    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    pub fn alerts(&self) -> Arc<dyn AlertStore> {
        self.inner.stores.alerts.clone()
    }

    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.inner.stores.outbox.clone()
    }

    /// The configured webhook sinks.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The detector the v1 paths serve.
    pub fn default_detector(&self) -> &Arc<DetectorState> {
        &self.inner.default
    }

    /// The detector called `name`, if there is one.
    pub fn detector(&self, name: &str) -> Option<Arc<DetectorState>> {
        if name == DEFAULT_DETECTOR {
            return Some(self.inner.default.clone());
        }
        read(&self.inner.detectors).get(name).cloned()
    }

    /// Every detector, `default` first, then by name.
    pub fn detectors(&self) -> Vec<Arc<DetectorState>> {
        std::iter::once(self.inner.default.clone())
            .chain(read(&self.inner.detectors).values().cloned())
            .collect()
    }

    /// Serves `detector` under its name from now on (replacing one of that name).
    pub fn insert_detector(&self, detector: Arc<DetectorState>) {
        debug_assert!(!detector.is_default());
        write(&self.inner.detectors).insert(detector.name.clone(), detector);
    }

    /// Stops serving the detector called `name`.
    pub fn remove_detector(&self, name: &str) -> Option<Arc<DetectorState>> {
        write(&self.inner.detectors).remove(name)
    }

    /// Serialises changes of the detector set in this process.
    pub fn detector_change_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.detector_change
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
