//! Suppression rules (`/v1/suppressions`): CRUD, validation and roles; a suppressed host's
//! records are scored and marked but raise nothing while another host still alerts; deleting or
//! expiring the rule restores alerts; a rule (also one given with a verdict) resolves the
//! incidents it covers; evaluating on verdicts; fits leave suppressed records out and say how
//! many; on PostgreSQL a rule created on one replica applies on the other and resolves the
//! incident another replica raised.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::app::{TestApp, oneshot_app, oneshot_app_with};
use crate::support::eventually;
use crate::support::postgres::{Replica, TestDb};
use crate::support::responses::{assert_problem, json_ok, json_with_status};
use crate::support::traffic::{client, get_json, post_json};

const SUPPRESSED: &str = "10.0.0.66";
const OTHER: &str = "10.0.0.77";

/// Seed records the fitted model scores as normal, each given a host of its own, then two
/// blown-up (severity 100) records of `SUPPRESSED` and one of `OTHER`.
async fn batch(app: &TestApp) -> Vec<Value> {
    let records = app.seed_records().await;
    let scored = app.score(&records).await;
    let mut out: Vec<Value> = records
        .iter()
        .zip(scored["results"].as_array().unwrap())
        .filter(|(_, r)| r["score"].as_f64().unwrap() < 0.45)
        .take(60)
        .enumerate()
        .map(|(k, (rec, _))| {
            let mut rec = rec.clone();
            rec["entity"] = json!(format!("10.0.1.{k}"));
            rec
        })
        .collect();
    assert_eq!(out.len(), 60);
    for (k, host) in [(0, SUPPRESSED), (1, SUPPRESSED), (2, OTHER)] {
        let mut rec = out[k].clone();
        for f in [
            "bytes_sent",
            "bytes_received",
            "connections",
            "active_sessions",
        ] {
            rec[f] = json!(rec[f].as_f64().unwrap() * 1000.0 + 1e9);
        }
        rec["entity"] = json!(host);
        out.push(rec);
    }
    out
}

fn only(records: &[Value], host: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r["entity"] == host || !r["entity"].as_str().unwrap().starts_with("10.0.0."))
        .cloned()
        .collect()
}

/// The hosts of an alert's records.
fn alert_hosts(scored: &Value) -> Vec<String> {
    scored["alert"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fields"]["entity"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(app: &TestApp, rule: Value) -> Value {
    json_with_status(
        app.post_json("/v1/suppressions", &rule).await,
        StatusCode::CREATED,
    )
    .await
}

#[tokio::test]
async fn a_suppressed_host_is_scored_and_marked_but_only_the_other_host_alerts() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = batch(&app).await;

    let before = app.score(&records).await;
    let results = before["results"].as_array().unwrap();
    assert!(before["alert"].is_object(), "{:?}", &results[60..]);
    let mut hosts = alert_hosts(&before);
    hosts.sort();
    assert_eq!(
        hosts,
        [SUPPRESSED, SUPPRESSED, OTHER],
        "{}",
        before["alert"]
    );

    let rule = create(
        &app,
        json!({"detector": "default", "entity": SUPPRESSED,
        "conditions": [{"feature": "bytes_sent", "op": ">", "value": 1e8}], "reason": "backup"}),
    )
    .await;
    let id = rule["id"].as_str().unwrap();
    assert_eq!(rule["created_by"], Value::Null, "no API keys, no creator");
    assert_eq!(rule["expires_at"], Value::Null);
    assert_eq!(rule["expired"], false);

    let after = app.score(&records).await;
    let results = after["results"].as_array().unwrap();
    for r in results {
        let mine = records[r["index"].as_u64().unwrap() as usize]["entity"] == SUPPRESSED;
        assert_eq!(r["suppressed"].as_str(), mine.then_some(id), "{r}");
        if mine {
            assert_eq!(r["is_anomaly"], true, "still scored as it is: {r}");
        }
    }
    // Only the other host raised: its alert joins that host's incident (opened by the first
    // batch), whose records are all the other host's.
    let hosts = alert_hosts(&after);
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h == OTHER),
        "{}",
        after["alert"]
    );
    assert_eq!(after["alert"]["entity"], OTHER, "{}", after["alert"]);
    assert_eq!(
        after["summary"], before["summary"],
        "the answer's summary is the batch's"
    );

    // The suppressed host alone raises nothing; the other host alone still alerts.
    let quiet = app.score(&only(&records, SUPPRESSED)).await;
    assert_eq!(quiet["alert"], Value::Null, "{}", quiet["alert"]);
    assert!(app.score(&only(&records, OTHER)).await["alert"].is_object());

    // Listed; counted in /metrics.
    let listed = json_ok(app.get("/v1/suppressions").await).await;
    assert_eq!(listed["suppressions"].as_array().unwrap().len(), 1);
    assert_eq!(listed["suppressions"][0]["id"], id);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let line = format!("netsentinel_suppressed_records_total{{rule=\"{id}\"}} 4");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");

    // Deleted: the host alerts again; a second delete is 404.
    let deleted = app
        .send(app.request(Method::DELETE, &format!("/v1/suppressions/{id}")))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let again = app.score(&only(&records, SUPPRESSED)).await;
    assert!(again["alert"].is_object(), "alerts are back: {again}");
    assert!(
        again["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("suppressed").is_none())
    );
    let gone = app
        .send(app.request(Method::DELETE, &format!("/v1/suppressions/{id}")))
        .await;
    assert_problem(gone, StatusCode::NOT_FOUND, "no-such-suppression").await;
}

#[tokio::test]
async fn an_expired_rule_stops_matching_and_is_listed_as_expired() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = only(&batch(&app).await, SUPPRESSED);
    let rule = create(
        &app,
        json!({"cidr": "10.0.0.0/24", "expires_in": "1s", "reason": "test"}),
    )
    .await;
    assert!(rule["expires_at"].is_string());
    let first = app.score(&records).await;
    // The rule may have expired already on a slow machine; then alerts are back at once.
    if first["alert"].is_null() {
        assert!(
            first["results"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["suppressed"] == rule["id"])
        );
    }
    let back = eventually(
        "the expired rule to stop matching",
        Duration::from_secs(30),
        || async {
            let scored = app.score(&records).await;
            scored["alert"].is_object().then_some(scored)
        },
    )
    .await;
    assert!(
        back["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("suppressed").is_none())
    );
    let listed = json_ok(app.get("/v1/suppressions").await).await;
    assert_eq!(listed["suppressions"][0]["expired"], true);
}

#[tokio::test]
async fn bad_rules_are_refused_naming_the_field() {
    let app = oneshot_app().await;
    for (body, status, code, field) in [
        (
            json!({"entity": "h"}),
            422,
            "invalid-suppression",
            Some("reason"),
        ),
        (
            json!({"reason": "r", "entity": "h", "cidr": "10.0.0.0/8"}),
            422,
            "invalid-suppression",
            Some("cidr"),
        ),
        (
            json!({"reason": "r", "cidr": "not-a-net"}),
            422,
            "invalid-suppression",
            Some("cidr"),
        ),
        (
            json!({"reason": "r", "hours": [25]}),
            422,
            "invalid-suppression",
            Some("hours"),
        ),
        (
            json!({"reason": "r", "expires_in": "7x"}),
            422,
            "invalid-suppression",
            Some("expires_in"),
        ),
        (
            json!({"reason": "r", "conditions": [{"feature": "a", "op": "~", "value": 1}]}),
            400,
            "malformed-body",
            None,
        ),
        (
            json!({"reason": "r", "conditions": [{"feature": "a", "op": "<", "value": "x"}]}),
            400,
            "malformed-body",
            None,
        ),
        (
            json!({"reason": "r", "colour": "red"}),
            400,
            "malformed-body",
            None,
        ),
    ] {
        let response = app.post_json("/v1/suppressions", &body).await;
        let problem = assert_problem(response, StatusCode::from_u16(status).unwrap(), code).await;
        if let Some(f) = field {
            assert_eq!(problem["field"], f, "{body}: {problem}");
        }
    }
    let value = app
        .post_raw(
            "/v1/suppressions",
            Some("application/json"),
            r#"{"reason": "r", "conditions": [{"feature": "a", "op": "<", "value": 1e999}]}"#,
        )
        .await;
    assert_eq!(
        value.status(),
        StatusCode::BAD_REQUEST,
        "a value out of range is not finite"
    );
    // An unknown feature name is fine: a detector's features can change.
    create(
        &app,
        json!({"reason": "r", "conditions": [{"feature": "later", "op": "==", "value": 0}]}),
    )
    .await;
    let listed = json_ok(app.get("/v1/suppressions").await).await;
    assert_eq!(
        listed["suppressions"].as_array().unwrap().len(),
        1,
        "nothing refused was kept"
    );
}

#[tokio::test]
async fn writes_need_the_admin_role_and_reads_the_read_role() {
    const READ: &str = "read-only-key-0123456789";
    const SCORE: &str = "score-only-key-0123456789";
    const ADMIN: &str = "admin-key-0123456789abcdef";
    let app = oneshot_app_with(|s| {
        let keys = format!("read:{READ},score:{SCORE},admin:{ADMIN}");
        s.api_keys = Some(netsentinel::auth::ApiKeys::parse(&keys).unwrap());
    })
    .await;
    let rule = json!({"entity": "h", "reason": "r"});
    let post = |key: &str| {
        app.request(Method::POST, "/v1/suppressions")
            .bearer_auth(key)
            .json(&rule)
    };
    assert_eq!(
        app.send(app.request(Method::GET, "/v1/suppressions"))
            .await
            .status(),
        401
    );
    for key in [READ, SCORE] {
        assert_problem(
            app.send(post(key)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
    }
    let created = json_with_status(app.send(post(ADMIN)).await, StatusCode::CREATED).await;
    let creator = created["created_by"].as_str().expect("the key's name");
    assert!(!creator.is_empty() && !creator.contains(ADMIN), "{creator}");
    let listed = app
        .send(
            app.request(Method::GET, "/v1/suppressions")
                .bearer_auth(READ),
        )
        .await;
    assert_eq!(
        json_ok(listed).await["suppressions"][0]["created_by"],
        creator
    );
    let path = format!("/v1/suppressions/{}", created["id"].as_str().unwrap());
    let delete = |key: &str| app.request(Method::DELETE, &path).bearer_auth(key);
    assert_problem(
        app.send(delete(READ)).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        app.send(delete(ADMIN)).await.status(),
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn a_fit_leaves_out_the_records_a_rule_matches() {
    let app = oneshot_app().await;
    let records: Vec<Value> = app
        .seed_records()
        .await
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            r["entity"] = json!(if i % 4 == 0 { "10.9.0.1" } else { "10.8.0.1" });
            r
        })
        .collect();
    let total = records.len();
    let suppressed = records.iter().filter(|r| r["entity"] == "10.9.0.1").count();
    assert!(suppressed > 100);
    create(&app, json!({"cidr": "10.9.0.0/16", "reason": "lab"})).await;
    let meta = app.fit(json!({"records": records})).await;
    assert_eq!(meta["n_training_records"], total - suppressed, "{meta}");
    assert_eq!(meta["suppressed_records"], suppressed, "{meta}");
    let shown = json_ok(app.get("/v1/model").await).await;
    assert_eq!(
        shown["suppressed_records"], suppressed,
        "kept with the model"
    );
    // Another detector's rule does not apply.
    create(
        &app,
        json!({"detector": "other", "entity": "10.8.0.1", "reason": "lab"}),
    )
    .await;
    let meta = app.fit(json!({"records": records})).await;
    assert_eq!(meta["n_training_records"], total - suppressed, "{meta}");
    assert_eq!(meta["suppressed_records"], suppressed, "{meta}");
    // A named detector's fit leaves out what the rules for it (every detector's) match.
    let put = app
        .send(
            app.request(Method::PUT, "/v1/detectors/lab")
                .json(&json!({"source": {"format": "records", "group_by": "entity"}})),
        )
        .await;
    assert!(put.status().is_success(), "{}", put.status());
    let fitted = json_with_status(
        app.post_json("/v1/detectors/lab/model/fit", &json!({"records": records}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(fitted["n_training_records"], total - suppressed, "{fitted}");
    assert_eq!(fitted["suppressed_records"], suppressed, "{fitted}");
}

/// The id of `host`'s open incident, if it has one.
async fn open_incident(app: &TestApp, host: &str) -> Option<String> {
    let path = format!("/v1/alerts?entity={host}&status=open");
    let listed = json_ok(app.get(&path).await).await;
    listed["alerts"][0]["id"].as_str().map(str::to_owned)
}

async fn feedback(app: &TestApp, alert: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/alerts/{alert}/feedback"), &body)
        .await
}

#[tokio::test]
async fn a_false_positive_with_a_suppression_silences_the_host_until_the_rule_goes() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = batch(&app).await;
    assert!(app.score(&records).await["alert"].is_object());
    let incident = open_incident(&app, SUPPRESSED).await.expect("an incident");
    let other = open_incident(&app, OTHER).await.expect("the other host's");

    let verdict = json!({"verdict": "false_positive", "note": "nightly backup",
        "suppress": {"expires_in": "1h"}});
    let judged = json_ok(feedback(&app, &incident, verdict).await).await;
    assert_eq!(judged["id"], incident.as_str());
    assert_eq!(judged["feedback"][0]["verdict"], "false_positive");
    assert_eq!(judged["status"], "resolved", "the rule covers it: {judged}");
    let rule = &judged["suppression"];
    let id = rule["id"].as_str().expect("the rule").to_owned();
    assert_eq!(rule["detector"], "default", "the alert's");
    assert_eq!(rule["entity"], SUPPRESSED, "the alert's");
    assert_eq!(rule["reason"], "nightly backup", "the note");
    assert!(rule["expires_at"].is_string());
    assert_eq!(rule["resolved_alerts"], json!([incident]));
    let listed = json_ok(app.get("/v1/suppressions").await).await;
    assert_eq!(listed["suppressions"][0]["id"], id.as_str());

    // The same batch again: the host's records are marked and raise nothing; the other host
    // still alerts, into its own incident.
    let again = app.score(&records).await;
    for r in again["results"].as_array().unwrap() {
        let mine = records[r["index"].as_u64().unwrap() as usize]["entity"] == SUPPRESSED;
        assert_eq!(r["suppressed"].as_str(), mine.then_some(id.as_str()), "{r}");
    }
    assert_eq!(again["alert"]["entity"], OTHER, "{}", again["alert"]);
    assert_eq!(again["alert"]["id"], other.as_str());
    assert_eq!(open_incident(&app, SUPPRESSED).await, None, "nothing new");
    let quiet = app.score(&only(&records, SUPPRESSED)).await;
    assert_eq!(quiet["alert"], Value::Null, "{}", quiet["alert"]);

    // Deleted: the host alerts again, in a new incident.
    let deleted = app
        .send(app.request(Method::DELETE, &format!("/v1/suppressions/{id}")))
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let back = app.score(&only(&records, SUPPRESSED)).await;
    assert_eq!(back["alert"]["entity"], SUPPRESSED, "{back}");
    let reopened = back["alert"]["id"].as_str().unwrap().to_owned();
    assert_ne!(reopened, incident);

    // A rule that expires: the host is silent, then alerts again once it has expired.
    let verdict = json!({"verdict": "benign",
        "suppress": {"expires_in": "2s", "reason": "maintenance"}});
    let judged = json_ok(feedback(&app, &reopened, verdict).await).await;
    assert_eq!(judged["status"], "resolved", "{judged}");
    assert_eq!(judged["suppression"]["reason"], "maintenance");
    let back = eventually(
        "the expired rule to let the host alert",
        Duration::from_secs(30),
        || async {
            let scored = app.score(&only(&records, SUPPRESSED)).await;
            scored["alert"].is_object().then_some(scored)
        },
    )
    .await;
    assert_eq!(back["alert"]["entity"], SUPPRESSED);
    assert_ne!(back["alert"]["id"], reopened.as_str());
}

#[tokio::test]
async fn feedback_with_a_bad_suppression_is_refused_and_keeps_nothing() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let records = batch(&app).await;
    app.score(&records).await;
    let incident = open_incident(&app, SUPPRESSED).await.expect("an incident");
    // A batch alert: the same anomalies without entities.
    let anonymous: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.as_object_mut().unwrap().remove("entity");
            r
        })
        .collect();
    let scored = app.score(&anonymous).await;
    assert_eq!(
        scored["alert"]["entity"],
        Value::Null,
        "{}",
        scored["alert"]
    );
    let batch_alert = scored["alert"]["id"].as_str().unwrap().to_owned();
    for (alert, suppress, status, code, field) in [
        (
            &batch_alert,
            json!({}),
            422,
            "invalid-suppression",
            Some("suppress.entity"),
        ),
        (
            &incident,
            json!({"hours": [25]}),
            422,
            "invalid-suppression",
            Some("suppress.hours"),
        ),
        (
            &incident,
            json!({"cidr": "nope"}),
            422,
            "invalid-suppression",
            Some("suppress.cidr"),
        ),
        (
            &incident,
            json!({"expires_in": "1h"}),
            422,
            "invalid-suppression",
            Some("suppress.reason"),
        ),
        (
            &incident,
            json!({"colour": "red"}),
            400,
            "malformed-body",
            None,
        ),
    ] {
        let body = json!({"verdict": "benign", "suppress": suppress});
        let response = feedback(&app, alert, body).await;
        let problem = assert_problem(response, StatusCode::from_u16(status).unwrap(), code).await;
        if let Some(f) = field {
            assert_eq!(problem["field"], f, "{suppress}: {problem}");
        }
    }
    for id in [&incident, &batch_alert] {
        let alert = json_ok(app.get(&format!("/v1/alerts/{id}")).await).await;
        assert_eq!(alert["feedback"], json!([]), "nothing kept: {alert}");
        assert_eq!(alert["status"], "open");
    }
    let listed = json_ok(app.get("/v1/suppressions").await).await;
    assert_eq!(listed["suppressions"], json!([]));
    // A batch alert takes a network instead; it resolves the incidents inside it.
    let body = json!({"verdict": "benign", "note": "lab", "suppress": {"cidr": "10.0.0.64/30"}});
    let judged = json_ok(feedback(&app, &batch_alert, body).await).await;
    assert_eq!(judged["status"], "open", "a batch alert is never resolved");
    assert_eq!(judged["suppression"]["cidr"], "10.0.0.64/30");
    assert_eq!(judged["suppression"]["entity"], Value::Null);
    assert_eq!(judged["suppression"]["resolved_alerts"], json!([incident]));
    let missing = feedback(
        &app,
        "no-such",
        json!({"verdict": "benign", "suppress": {"reason": "r"}}),
    )
    .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

/// Each judged alert's records as a labeled body: the latest verdict, true_positive 1.
async fn judged_records(app: &TestApp) -> Vec<Value> {
    let listed = json_ok(app.get("/v1/alerts?detector=default&limit=1000").await).await;
    let mut out = Vec::new();
    for alert in listed["alerts"].as_array().unwrap() {
        let Some(last) = alert["feedback"].as_array().unwrap().last() else {
            continue;
        };
        let label = u8::from(last["verdict"] == "true_positive");
        for r in alert["records"].as_array().unwrap() {
            let mut record = r["values"].clone();
            record["label"] = json!(label);
            out.push(record);
        }
    }
    out
}

#[tokio::test]
async fn evaluate_on_verdicts_answers_what_those_records_labeled_answer() {
    let app = oneshot_app().await;
    app.fit_seed().await;
    let none = app.post_empty("/v1/evaluate/verdicts").await;
    let problem = assert_problem(none, StatusCode::UNPROCESSABLE_ENTITY, "invalid-parameter").await;
    assert_eq!(problem["field"], "labels");

    // Incidents of several hosts, of different strengths: the blown-up batch, and milder
    // bursts of three more hosts.
    let records = batch(&app).await;
    app.score(&records).await;
    for (k, factor) in [(0, 3.0), (1, 8.0), (2, 30.0)] {
        let mut burst = records[10 + k].clone();
        for f in ["bytes_sent", "connections"] {
            burst[f] = json!(burst[f].as_f64().unwrap() * factor);
        }
        burst["entity"] = json!(format!("10.0.2.{k}"));
        app.score(&[burst]).await;
    }
    let incident = open_incident(&app, SUPPRESSED).await.unwrap();
    let verdict = |v: &str| json!({"verdict": v});
    json_ok(feedback(&app, &incident, verdict("true_positive")).await).await;
    let one_class = app.post_empty("/v1/evaluate/verdicts").await;
    let problem = assert_problem(
        one_class,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-parameter",
    )
    .await;
    assert_eq!(problem["field"], "labels");
    assert!(
        problem["detail"].as_str().unwrap().contains("both"),
        "{problem}"
    );

    let other = open_incident(&app, OTHER).await.unwrap();
    json_ok(feedback(&app, &other, verdict("false_positive")).await).await;
    let mut judged = 2;
    for (k, v) in [(0, "benign"), (1, "true_positive"), (2, "false_positive")] {
        if let Some(id) = open_incident(&app, &format!("10.0.2.{k}")).await {
            json_ok(feedback(&app, &id, verdict(v)).await).await;
            judged += 1;
        }
    }
    assert!(judged >= 2);
    // The latest verdict counts: the first incident judged again, the same.
    json_ok(feedback(&app, &incident, verdict("benign")).await).await;
    json_ok(feedback(&app, &incident, verdict("true_positive")).await).await;

    let labeled = judged_records(&app).await;
    assert!(labeled.len() >= 3, "{labeled:?}");
    let by_body = json_ok(
        app.post_json(
            "/v1/evaluate",
            &json!({"records": labeled, "max_false_positive_rate": 0.5}),
        )
        .await,
    )
    .await;
    let by_verdicts = json_ok(
        app.post_empty("/v1/evaluate/verdicts?max_false_positive_rate=0.5")
            .await,
    )
    .await;
    assert_eq!(by_verdicts, by_body);
    assert_eq!(by_verdicts["n_records"], labeled.len());
    assert!(by_verdicts["roc_auc"].is_number(), "{by_verdicts}");
    // The same on the detector's own path; a time range with no alerts has no verdicts.
    let named = json_ok(
        app.post_empty("/v1/detectors/default/evaluate/verdicts?max_false_positive_rate=0.5")
            .await,
    )
    .await;
    assert_eq!(named, by_body);
    let later = app
        .post_empty("/v1/evaluate/verdicts?since=2100-01-01T00:00:00Z")
        .await;
    assert_problem(later, StatusCode::UNPROCESSABLE_ENTITY, "invalid-parameter").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_created_on_one_replica_applies_on_the_other() {
    let Some(db) = TestDb::create("a_rule_created_on_one_replica_applies_on_the_other") else {
        return;
    };
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Replica::start("a", &db.url, dirs[0].path(), &[]);
    let b = Replica::start("b", &db.url, dirs[1].path(), &[]);
    let http = client();
    let (status, _) = post_json(&http, &a.url("/v1/model/fit"), &json!({"generate": {}})).await;
    assert_eq!(status, 201);
    let burst = json!([{"timestamp": "2026-01-01T00:00:00Z", "bytes_sent": 5e12,
        "bytes_received": 1e3, "connections": 3, "active_sessions": 1, "entity": SUPPRESSED}]);
    // b follows a's model, then alerts on the burst: the host's incident.
    let incident = eventually("b to serve a's model", Duration::from_secs(30), || async {
        let (s, body) = post_json(&http, &b.url("/v1/score"), &burst).await;
        (s == 200 && body["alert"].is_object()).then(|| body["alert"]["id"].clone())
    })
    .await;
    let (status, rule) = post_json(
        &http,
        &a.url("/v1/suppressions"),
        &json!({"entity": SUPPRESSED, "reason": "replicas"}),
    )
    .await;
    assert_eq!(status, 201, "{rule}");
    // Created on a, it resolved the incident b raised.
    assert_eq!(rule["resolved_alerts"], json!([incident]), "{rule}");
    let path = format!("/v1/alerts/{}", incident.as_str().unwrap());
    let (_, on_b) = get_json(&http, &b.url(&path)).await;
    assert_eq!(on_b["status"], "resolved", "{on_b}");
    // At once on b: no waiting.
    let (status, scored) = post_json(&http, &b.url("/v1/score"), &burst).await;
    assert_eq!(status, 200);
    assert_eq!(scored["alert"], Value::Null, "{scored}");
    assert_eq!(scored["results"][0]["suppressed"], rule["id"]);
    let (_, listed) = get_json(&http, &b.url("/v1/suppressions")).await;
    assert_eq!(listed["suppressions"][0]["id"], rule["id"]);
    let deleted = http
        .delete(b.url(&format!(
            "/v1/suppressions/{}",
            rule["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (_, scored) = post_json(&http, &a.url("/v1/score"), &burst).await;
    assert!(scored["alert"].is_object(), "{scored}");
}
