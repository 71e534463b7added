//! Model versions: persisting a new model and making it active, rolling back, listing the kept
//! versions, and loading at start.
//!
//! Order matters for crash safety: the model is stored durably (a fsynced, renamed file, or a
//! committed PostgreSQL row) before the active pointer moves, and the pointer moves before the
//! in-memory slot is swapped, so after a crash the service starts with either the old or the
//! new model, never a torn one. With a shared store, other replicas follow the pointer
//! (`model_sync`).

use std::sync::Arc;

use super::idempotency::{AnswerOf, KeyedRun};
use super::{ServiceError, blocking, to_completion};
use crate::detector::model::{Model, ModelMeta};
use crate::state::DetectorState;
use crate::store::models::ModelStore;

/// Stores a freshly fitted model as the detector's next version and activates it.
///
/// The commit is one step that runs to its end even if the request is dropped (timeout, client
/// gone): file, active pointer and in-memory swap happen together, so disk and memory agree
/// whatever the client was answered. An idempotency `key` is kept right after, in the same
/// step, with the answer it renders from the new model: the model store is not the alert
/// database, so the two are not one transaction, and a crash between them leaves the new
/// version active with its key not kept (a retry fits once more).
pub async fn publish(
    det: &Arc<DetectorState>,
    mut model: Model,
    key: Option<(KeyedRun, AnswerOf<Model>)>,
) -> Result<Arc<Model>, ServiceError> {
    let det = det.clone();
    to_completion(async move {
        let _guard = det.model_change_lock().lock().await;
        let files = det.model_store();
        let model = blocking(move || {
            let version = files.next_version()?;
            model.set_version(version);
            let bytes = model.to_bytes();
            // Never store what would not load again after a restart.
            Model::from_bytes(&bytes).map_err(|e| ServiceError::CorruptModel {
                version,
                reason: e.to_string(),
            })?;
            files.save(version, &bytes)?;
            files.set_active(version)?;
            Ok(Arc::new(model))
        })
        .await?;
        det.install_model(model.clone());
        crate::monitoring::model_fitted(model.meta().fit_seconds);
        if det.is_default() {
            crate::monitoring::model_active(model.version());
        }
        tracing::info!(
            detector = det.name(),
            version = model.version(),
            "model activated"
        );
        if let Some((run, answer)) = key {
            let a = answer(&model);
            let record = run.record(a.status, &a.content_type, a.headers, Some(&a.body));
            // The model is active whatever happens here: its client is answered with it.
            if let Err(e) = run.keep(record).await {
                tracing::error!(detector = det.name(), version = model.version(), error = %e,
                    "the fit's Idempotency-Key could not be kept; a retry with it fits again");
            }
        }
        Ok(model)
    })
    .await
}

/// Makes a kept version of the detector the active one again; like [`publish`], on disk and in
/// memory together.
pub async fn activate(det: &Arc<DetectorState>, version: u64) -> Result<Arc<Model>, ServiceError> {
    let det = det.clone();
    to_completion(async move {
        let _guard = det.model_change_lock().lock().await;
        let files = det.model_store();
        let model = blocking(move || {
            if !files.versions()?.contains(&version) {
                return Err(ServiceError::NoSuchVersion(version));
            }
            let model = Model::from_bytes(&files.read(version)?).map_err(|e| {
                ServiceError::CorruptModel {
                    version,
                    reason: e.to_string(),
                }
            })?;
            files.set_active(version)?;
            Ok(Arc::new(model))
        })
        .await?;
        det.install_model(model.clone());
        if det.is_default() {
            crate::monitoring::model_active(version);
        }
        tracing::info!(detector = det.name(), version, "model rolled back");
        Ok(model)
    })
    .await
}

/// One kept version: its metadata, or why its stored model does not decode.
pub struct KeptVersion {
    pub version: u64,
    pub meta: Result<ModelMeta, String>,
}

/// The detector's kept versions, newest first.
pub async fn versions(det: &DetectorState) -> Result<Vec<KeptVersion>, ServiceError> {
    let files = det.model_store();
    blocking(move || {
        let mut versions = files.versions()?;
        versions.reverse();
        Ok(versions
            .into_iter()
            .map(|version| KeptVersion {
                version,
                meta: files
                    .read(version)
                    .map_err(|e| e.without_paths())
                    .and_then(|b| Model::from_bytes(&b).map_err(|e| e.to_string()))
                    .map(|m| m.meta().clone()),
            })
            .collect())
    })
    .await
}

/// What loading at start found: the model to serve, and problems to report on /readyz and in logs.
pub struct Loaded {
    pub model: Option<Model>,
    pub problem: Option<String>,
}

/// Loads the active version; a corrupt file is set aside and the newest valid version is used instead.
///
/// Problems are logged in full (paths included) and reported on `/readyz` without paths, since
/// the probe is open to anyone who can reach the service.
pub fn load_at_start(files: &dyn ModelStore) -> Loaded {
    let shared = files.shared();
    let mut problems = Vec::new();
    let active = match files.active() {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!("the active-model pointer is unreadable ({e})");
            problems.push(format!(
                "the active-model pointer is unreadable ({})",
                e.without_paths()
            ));
            None
        }
    };
    let mut candidates = match files.versions() {
        Ok(v) => v,
        Err(e) => {
            tracing::error!("model files could not be listed ({e})");
            problems.push(format!(
                "model files could not be listed ({})",
                e.without_paths()
            ));
            Vec::new()
        }
    };
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    if let Some(a) = active {
        candidates.retain(|&v| v != a);
        candidates.insert(0, a);
    }
    for version in candidates {
        // (for the log, for clients)
        let decoded = files
            .read(version)
            .map_err(|e| (e.to_string(), e.without_paths()))
            .and_then(|bytes| {
                Model::from_bytes(&bytes).map_err(|e| (e.to_string(), e.to_string()))
            });
        match decoded {
            Ok(model) => {
                // A shared store's pointer belongs to every replica: one that cannot decode the
                // active version (an older build during an upgrade, say) serves the newest it
                // can, but leaves the pointer and the rows alone.
                if Some(version) != active && !shared {
                    if let Err(e) = files.set_active(version) {
                        tracing::warn!("could not repoint ACTIVE to version {version}: {e}");
                    }
                }
                tracing::info!(version, "model loaded");
                return Loaded {
                    model: Some(model),
                    problem: None,
                };
            }
            Err((logged, public)) => {
                if shared {
                    tracing::error!(
                        "model version {version} does not load ({logged}); left in the shared store"
                    );
                    problems.push(format!("model version {version} does not load ({public})"));
                    continue;
                }
                tracing::error!("model version {version} is corrupt ({logged}) and was set aside");
                if let Err(q) = files.quarantine(version) {
                    tracing::error!(version, "could not set the corrupt model aside: {q}");
                }
                problems.push(format!(
                    "model version {version} is corrupt ({public}) and was set aside"
                ));
            }
        }
    }
    let problem = if problems.is_empty() {
        None
    } else {
        Some(format!(
            "{}; fit a new model with POST /v1/model/fit",
            problems.join("; ")
        ))
    };
    Loaded {
        model: None,
        problem,
    }
}
