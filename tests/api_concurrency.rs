//! Scoring while models are being fitted never mixes models: every response's scores are exactly
//! those of the one model version it names.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{json_ok, score_until, scores, spawn_app};
use serde_json::json;

const SCORERS: usize = 4;
/// Each scorer keeps going until the fits are done, and makes at least this many requests.
const MIN_REQUESTS_PER_SCORER: usize = 5;
const FIT_SEEDS: [u64; 3] = [2, 3, 4];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_during_fits_never_mixes_models() {
    let app = Arc::new(spawn_app().await);
    let batch = Arc::new(app.seed_records().await);
    app.fit(json!({"generate": {}, "params": {"n_estimators": 50, "seed": 1}}))
        .await;

    let done = Arc::new(AtomicBool::new(false));
    let scorers: Vec<_> = (0..SCORERS)
        .map(|_| {
            tokio::spawn(score_until(
                app.clone(),
                batch.clone(),
                done.clone(),
                MIN_REQUESTS_PER_SCORER,
            ))
        })
        .collect();
    let fitter = {
        let app = app.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut versions = Vec::new();
            for seed in FIT_SEEDS {
                let meta = app
                    .fit(json!({"generate": {}, "params": {"n_estimators": 50, "seed": seed}}))
                    .await;
                versions.push(meta["version"].as_u64().unwrap());
            }
            done.store(true, Ordering::Release);
            versions
        })
    };
    let fitted = fitter.await.expect("the fitter did not panic");
    assert_eq!(fitted, [2, 3, 4], "fits get consecutive versions");
    let mut observations = Vec::new();
    for scorer in scorers {
        let seen = scorer.await.expect("a scorer did not panic");
        // Each scorer's requests are sequential and fits only move forward, so the version a
        // scorer sees never goes back.
        let versions: Vec<u64> = seen.iter().map(|(v, _)| *v).collect();
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "versions seen by one scorer went backwards: {versions:?}"
        );
        observations.extend(seen);
    }

    let mut per_version = std::collections::BTreeMap::new();
    for (v, _) in &observations {
        *per_version.entry(*v).or_insert(0usize) += 1;
    }
    eprintln!("responses per model version: {per_version:?}");

    // Reference scores of each version, with nothing else going on.
    let mut reference = std::collections::BTreeMap::new();
    for version in 1..=4u64 {
        let activated = json_ok(
            app.post_empty(&format!("/v1/model/versions/{version}/activate"))
                .await,
        )
        .await;
        assert_eq!(activated["version"], version);
        let scored = app.score(&batch).await;
        assert_eq!(scored["model_version"], version);
        reference.insert(version, scores(&scored));
    }
    let distinct: std::collections::BTreeSet<String> =
        reference.values().map(|s| format!("{s:?}")).collect();
    assert_eq!(
        distinct.len(),
        4,
        "each seed gives its own scores, so a mix would show"
    );

    for (i, (version, got)) in observations.iter().enumerate() {
        let expected = reference
            .get(version)
            .unwrap_or_else(|| panic!("response {i} names version {version}, never fitted"));
        assert!(
            got == expected,
            "response {i} names version {version} but its scores are not that model's"
        );
    }
    assert!(observations.len() >= SCORERS * MIN_REQUESTS_PER_SCORER);
}
