//! Models and alerts survive a restart; rolling back to a kept version sticks, across restarts too.

use crate::support::app::spawn_app;
use crate::support::data::scores;
use crate::support::responses::{assert_problem, json_ok};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn the_model_and_alerts_survive_a_restart() {
    let app = spawn_app().await;
    let meta = app.fit_small(5).await;
    let records = app.seed_records().await;
    let before = app.score(&records).await;
    let alert_id = before["alert"]["id"]
        .as_str()
        .expect("the seed bursts raise an alert")
        .to_string();
    let alert_before = json_ok(app.get(&format!("/v1/alerts/{alert_id}")).await).await;

    let app = app.restart().await;

    let model = json_ok(app.get("/v1/model").await).await;
    assert_eq!(
        model, meta,
        "the active model's metadata is unchanged by a restart"
    );
    let ready = json_ok(app.get("/readyz").await).await;
    assert_eq!(ready["model_version"], 1);

    let after = app.score(&records).await;
    assert_eq!(after["model_version"], 1);
    assert_eq!(
        scores(&after),
        scores(&before),
        "identical scores after a restart"
    );
    assert_eq!(after["summary"], before["summary"]);

    let listed = app.alerts("").await;
    let ids: Vec<&str> = listed.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [after["alert"]["id"].as_str().unwrap(), alert_id.as_str()],
        "the alert raised before the restart is still listed, behind the new one"
    );
    let alert_after = json_ok(app.get(&format!("/v1/alerts/{alert_id}")).await).await;
    assert_eq!(alert_after, alert_before);

    // Acknowledgement is stored too.
    json_ok(app.post_empty(&format!("/v1/alerts/{alert_id}/ack")).await).await;
    let app = app.restart().await;
    let alert = json_ok(app.get(&format!("/v1/alerts/{alert_id}")).await).await;
    assert_eq!(alert["status"], "acknowledged");
}

#[tokio::test]
async fn a_rollback_serves_the_old_model_and_sticks_across_restarts() {
    let app = spawn_app().await;
    let records = app.seed_records().await;

    let v1 = app.fit_small(1).await;
    assert_eq!(v1["version"], 1);
    let scores_v1 = scores(&app.score(&records).await);
    let v2 = app.fit_small(2).await;
    assert_eq!(v2["version"], 2);
    let scored_v2 = app.score(&records).await;
    assert_eq!(scored_v2["model_version"], 2);
    let scores_v2 = scores(&scored_v2);
    assert!(
        scores_v1 != scores_v2,
        "different seeds grow different forests, so a rollback is visible in the scores"
    );

    let listed = json_ok(app.get("/v1/model/versions").await).await;
    assert_eq!(listed["active"], 2);
    let versions = listed["versions"].as_array().unwrap();
    let numbers: Vec<u64> = versions
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1], "both versions kept, newest first");
    assert_eq!(versions[0]["active"], true);
    assert_eq!(versions[1]["active"], false);
    assert_eq!(versions[1]["meta"], v1);

    let activated = json_ok(app.post_empty("/v1/model/versions/1/activate").await).await;
    assert_eq!(activated, v1);
    assert_eq!(app.active_version().await, Some(1));
    let rolled_back = app.score(&records).await;
    assert_eq!(rolled_back["model_version"], 1);
    assert_eq!(
        scores(&rolled_back),
        scores_v1,
        "v1 scores exactly as it did"
    );

    let app = app.restart().await;
    assert_eq!(
        app.active_version().await,
        Some(1),
        "the rollback survives a restart"
    );
    let after = app.score(&records).await;
    assert_eq!(after["model_version"], 1);
    assert_eq!(scores(&after), scores_v1);
    let listed = json_ok(app.get("/v1/model/versions").await).await;
    assert_eq!(listed["active"], 1);

    // Rolling forward works too, and a new fit takes the next number, not a reused one.
    let forward = json_ok(app.post_empty("/v1/model/versions/2/activate").await).await;
    assert_eq!(forward["version"], 2);
    assert_eq!(scores(&app.score(&records).await), scores_v2);
    let v3 = app.fit_small(3).await;
    assert_eq!(v3["version"], 3);
}

#[tokio::test]
async fn activating_a_version_that_is_not_kept_is_refused() {
    let app = spawn_app().await;
    assert_problem(
        app.post_empty("/v1/model/versions/1/activate").await,
        StatusCode::NOT_FOUND,
        "no-such-version",
    )
    .await;

    app.fit_small(1).await;
    assert_problem(
        app.post_empty("/v1/model/versions/7/activate").await,
        StatusCode::NOT_FOUND,
        "no-such-version",
    )
    .await;
    let problem = assert_problem(
        app.post_empty("/v1/model/versions/latest/activate").await,
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
    )
    .await;
    assert_eq!(problem["field"], "version");
    assert_problem(
        app.post_empty("/v1/model/versions/-1/activate").await,
        StatusCode::BAD_REQUEST,
        "invalid-parameter",
    )
    .await;
    assert_eq!(
        app.active_version().await,
        Some(1),
        "a refused rollback changes nothing"
    );
    let listed = json_ok(app.get("/v1/model/versions").await).await;
    assert_eq!(listed["versions"].as_array().unwrap().len(), 1);
    assert_eq!(listed["active"], json!(1));
}
