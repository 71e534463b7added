//! Model versions: persisting a new model and making it active, rolling back, and loading at start.
//!
//! Order matters for crash safety: the model file is written (fsynced, renamed) before the
//! ACTIVE pointer moves, and the pointer moves before the in-memory slot is swapped, so after a
//! crash the service starts with either the old or the new model, never a torn one.

use std::sync::Arc;

use crate::detector::model::Model;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::model_files::ModelFiles;

/// Stores a freshly fitted model as the next version and activates it.
pub async fn publish(state: &AppState, mut model: Model) -> Result<Arc<Model>, ApiError> {
    let _guard = state.model_change_lock().lock().await;
    let st = state.clone();
    let model = tokio::task::spawn_blocking(move || -> Result<Arc<Model>, ApiError> {
        let files = st.models();
        let version = files.next_version()?;
        model.set_version(version);
        files.save(version, &model.to_bytes())?;
        files.set_active(version)?;
        Ok(Arc::new(model))
    })
    .await??;
    state.install_model(model.clone());
    tracing::info!(version = model.version(), "model activated");
    Ok(model)
}

/// Makes a kept version the active one again.
pub async fn activate(state: &AppState, version: u64) -> Result<Arc<Model>, ApiError> {
    let _guard = state.model_change_lock().lock().await;
    let st = state.clone();
    let model = tokio::task::spawn_blocking(move || -> Result<Arc<Model>, ApiError> {
        let files = st.models();
        if !files.versions()?.contains(&version) {
            return Err(ApiError::not_found(
                "no-such-version",
                format!("model version {version} is not kept; GET /v1/model/versions lists those that are"),
            ));
        }
        let model = Model::from_bytes(&files.read(version)?).map_err(|e| {
            ApiError::conflict(
                "corrupt-model",
                format!("model version {version} cannot be loaded: {e}"),
            )
        })?;
        files.set_active(version)?;
        Ok(Arc::new(model))
    })
    .await??;
    state.install_model(model.clone());
    tracing::info!(version, "model rolled back");
    Ok(model)
}

/// What loading at start found: the model to serve, and problems to report on /readyz and in logs.
pub struct Loaded {
    pub model: Option<Model>,
    pub problem: Option<String>,
}

/// Loads the active version; a corrupt file is set aside and the newest valid version is used instead.
pub fn load_at_start(files: &ModelFiles) -> Loaded {
    let mut problems = Vec::new();
    let active = match files.active() {
        Ok(a) => a,
        Err(e) => {
            problems.push(format!("the active-model pointer is unreadable ({e})"));
            None
        }
    };
    let mut candidates = match files.versions() {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("model files could not be listed ({e})"));
            Vec::new()
        }
    };
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    if let Some(a) = active {
        candidates.retain(|&v| v != a);
        candidates.insert(0, a);
    }
    for version in candidates {
        let decoded = files
            .read(version)
            .map_err(|e| e.to_string())
            .and_then(|bytes| Model::from_bytes(&bytes).map_err(|e| e.to_string()));
        match decoded {
            Ok(model) => {
                if Some(version) != active {
                    if let Err(e) = files.set_active(version) {
                        problems.push(format!(
                            "could not repoint ACTIVE to version {version}: {e}"
                        ));
                    }
                }
                for p in &problems {
                    tracing::warn!("{p}");
                }
                tracing::info!(version, "model loaded");
                return Loaded {
                    model: Some(model),
                    problem: None,
                };
            }
            Err(e) => {
                let msg = format!("model version {version} is corrupt ({e}) and was set aside");
                tracing::error!("{msg}");
                if let Err(q) = files.quarantine(version) {
                    tracing::error!(version, "could not set the corrupt model aside: {q}");
                }
                problems.push(msg);
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
