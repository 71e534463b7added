//! Suppression rules: analysts' "this is expected" for a detector, an entity or a network,
//! feature conditions and hours of the day. A record a rule matches is still scored and
//! answered (with `suppressed: <rule id>`), but raises nothing, does not count toward its
//! batch's alert decision and is left out of fits.
//!
//! Rules live in the store (`store::suppressions`), so every replica reads the same ones: the
//! scoring path reads the rules in force once per batch ([`active`], one indexed statement),
//! and [`mark`] marks the records they match. Expired rules stop matching at once; they stay
//! listed (with `expired: true`) until deleted.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{ServiceError, blocking};
use crate::records::Batch;
use crate::state::AppState;
use crate::store::alerts::{Alert, Cover};
use crate::store::suppressions::StoredSuppression;

/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 1_000;
/// Longest `entity`, in bytes.
pub const MAX_ENTITY_BYTES: usize = 256;
/// Most conditions in one rule.
pub const MAX_CONDITIONS: usize = 32;
/// Longest feature name in a condition, in bytes.
pub const MAX_FEATURE_BYTES: usize = 128;
/// Longest `expires_in`: ten years.
pub const MAX_EXPIRES_SECS: u64 = 10 * 366 * 86_400;

/// A comparison of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    fn holds(self, x: f64, value: f64) -> bool {
        match self {
            Op::Lt => x < value,
            Op::Le => x <= value,
            Op::Gt => x > value,
            Op::Ge => x >= value,
            Op::Eq => x == value,
            Op::Ne => x != value,
        }
    }
}

/// `feature op value`, e.g. `bytes_sent < 5e9`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub feature: String,
    pub op: Op,
    pub value: f64,
}

/// A rule as posted.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// The detector it applies to; `None`: every detector.
    #[serde(default)]
    pub detector: Option<String>,
    /// The entity it applies to, exactly.
    #[serde(default)]
    pub entity: Option<String>,
    /// The network it applies to (entities that parse as an IP address inside it).
    #[serde(default)]
    pub cidr: Option<String>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// UTC hours of day (0–23) of the record's timestamp.
    #[serde(default)]
    pub hours: Option<Vec<u8>>,
    /// How long the rule lasts, e.g. `1h`, `7d`; `None`: until deleted.
    #[serde(default)]
    pub expires_in: Option<String>,
    /// Required (an empty one is refused by [`NewRule::check`], naming the field).
    #[serde(default)]
    pub reason: String,
}

/// A stored rule, as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub detector: Option<String>,
    pub entity: Option<String>,
    pub cidr: Option<String>,
    pub conditions: Vec<Condition>,
    pub hours: Option<Vec<u8>>,
    pub reason: String,
    /// The API key's name (its client id) that created it; `None` without API keys.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Rule {
    /// True once the rule no longer matches.
    pub fn expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

fn invalid(field: &str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Suppression {
        detail: detail.into(),
        field: Some(field.to_owned()),
    }
}

impl NewRule {
    /// Checks the rule and makes it a stored rule created `now` by `created_by`.
    pub fn check(
        self,
        created_by: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Rule, ServiceError> {
        if let Some(d) = &self.detector {
            super::detectors::check_name(d).map_err(|e| invalid("detector", e.detail))?;
        }
        if self.entity.is_some() && self.cidr.is_some() {
            return Err(invalid(
                "cidr",
                "give entity (one entity, exactly) or cidr (a network), not both",
            ));
        }
        if let Some(e) = &self.entity
            && (e.is_empty() || e.len() > MAX_ENTITY_BYTES)
        {
            return Err(invalid(
                "entity",
                format!("entity must be 1 to {MAX_ENTITY_BYTES} bytes long"),
            ));
        }
        let cidr = match &self.cidr {
            Some(c) => Some(
                c.trim()
                    .parse::<IpNet>()
                    .map_err(|_| {
                        invalid(
                            "cidr",
                            format!("{c:?} is not a network; write e.g. 10.0.0.0/8 or fd00::/8"),
                        )
                    })?
                    .trunc()
                    .to_string(),
            ),
            None => None,
        };
        if self.conditions.len() > MAX_CONDITIONS {
            return Err(invalid(
                "conditions",
                format!("at most {MAX_CONDITIONS} conditions"),
            ));
        }
        for (k, c) in self.conditions.iter().enumerate() {
            if c.feature.is_empty() || c.feature.len() > MAX_FEATURE_BYTES {
                return Err(invalid(
                    &format!("conditions[{k}].feature"),
                    format!("a feature name must be 1 to {MAX_FEATURE_BYTES} bytes long"),
                ));
            }
            if !c.value.is_finite() {
                return Err(invalid(
                    &format!("conditions[{k}].value"),
                    "the value must be a finite number",
                ));
            }
        }
        let hours = match self.hours {
            Some(mut h) => {
                if h.is_empty() {
                    return Err(invalid(
                        "hours",
                        "hours must list at least one hour (0-23); leave it out for every hour",
                    ));
                }
                if let Some(bad) = h.iter().find(|&&x| x > 23) {
                    return Err(invalid(
                        "hours",
                        format!("{bad} is not an hour of the day (0-23, UTC)"),
                    ));
                }
                h.sort_unstable();
                h.dedup();
                Some(h)
            }
            None => None,
        };
        let expires_at = match &self.expires_in {
            Some(text) => {
                let secs = super::detectors::duration_secs("expires_in", text)
                    .map_err(|e| invalid("expires_in", e.detail))?;
                if secs == 0 || secs > MAX_EXPIRES_SECS {
                    return Err(invalid(
                        "expires_in",
                        "expires_in must be from 1s to 3660d; leave it out for a rule that lasts until deleted",
                    ));
                }
                Some(now + chrono::Duration::seconds(secs as i64))
            }
            None => None,
        };
        let reason = self.reason.trim().to_owned();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(
                "reason",
                format!("reason must say why, in 1 to {MAX_REASON_CHARS} characters"),
            ));
        }
        Ok(Rule {
            id: uuid::Uuid::new_v4().to_string(),
            detector: self.detector,
            entity: self.entity,
            cidr,
            conditions: self.conditions,
            hours,
            reason,
            created_by,
            created_at: now,
            expires_at,
        })
    }
}

/// A rule ready to match records: its network parsed and its hours as a bit mask.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub id: Arc<str>,
    detector: Option<String>,
    entity: Option<String>,
    net: Option<IpNet>,
    conditions: Vec<Condition>,
    /// Bit h set: hour h (UTC) matches; `None`: every hour, timestamp or not.
    hours: Option<u32>,
}

impl Matcher {
    pub fn new(rule: &Rule) -> Self {
        Self {
            id: Arc::from(rule.id.as_str()),
            detector: rule.detector.clone(),
            entity: rule.entity.clone(),
            net: rule.cidr.as_deref().and_then(|c| c.parse().ok()),
            conditions: rule.conditions.clone(),
            hours: rule
                .hours
                .as_ref()
                .map(|h| h.iter().fold(0u32, |m, &x| m | 1 << x)),
        }
    }

    /// Whether the rule covers `detector` at all.
    pub fn applies_to(&self, detector: &str) -> bool {
        self.detector.as_deref().is_none_or(|d| d == detector)
    }

    fn needs_entity(&self) -> bool {
        self.entity.is_some() || self.net.is_some()
    }

    /// Whether the rule matches a record of `entity`, at `time`, with `value(feature)`.
    pub fn matches(
        &self,
        entity: Option<&str>,
        time: Option<DateTime<Utc>>,
        value: impl Fn(&str) -> Option<f64>,
    ) -> bool {
        if let Some(mask) = self.hours {
            match time {
                Some(t) if mask & (1 << t.hour()) != 0 => {}
                _ => return false,
            }
        }
        let conditions_hold = self
            .conditions
            .iter()
            .all(|c| value(&c.feature).is_some_and(|x| c.op.holds(x, c.value)));
        if !conditions_hold {
            return false;
        }
        if let Some(e) = &self.entity {
            return entity == Some(e.as_str());
        }
        if let Some(net) = &self.net {
            return entity
                .and_then(|e| e.trim().parse::<IpAddr>().ok())
                .is_some_and(|ip| net.contains(&ip));
        }
        true
    }
}

impl Matcher {
    /// Whether the rule covers an unresolved incident, so that creating it resolves the
    /// incident: of the rule's detector (or any, without one), its entity the rule's or inside
    /// its network, and, when the rule has conditions or hours, every record stored on the
    /// incident (its most anomalous ones) matching them. Batch alerts are never covered.
    pub fn covers(&self, incident: &Alert) -> bool {
        let Some(entity) = incident.entity.as_deref() else {
            return false;
        };
        if !self.applies_to(&incident.detector) {
            return false;
        }
        if incident.records.is_empty() {
            return self.conditions.is_empty()
                && self.hours.is_none()
                && self.matches(Some(entity), None, |_| None);
        }
        incident.records.iter().all(|r| {
            let time = r
                .timestamp
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            self.matches(Some(entity), time, |f| r.values.get(f).copied())
        })
    }
}

/// The rules in force now, read from the store (one indexed read; every replica reads the
/// same rows). A row that does not decode is logged and skipped.
pub async fn active(state: &AppState) -> Result<Vec<Matcher>, ServiceError> {
    let state = state.clone();
    blocking(move || active_now(&state)).await
}

/// [`active`] for callers already off the runtime (ingest's commit).
pub fn active_now(state: &AppState) -> Result<Vec<Matcher>, ServiceError> {
    let rows = state
        .stores()
        .suppressions
        .active_suppressions(Utc::now())?;
    Ok(rows
        .iter()
        .filter_map(decoded)
        .map(|r| Matcher::new(&r))
        .collect())
}

fn decoded(row: &StoredSuppression) -> Option<Rule> {
    match serde_json::from_str::<Rule>(&row.body) {
        Ok(rule) => Some(rule),
        Err(e) => {
            tracing::error!(rule = %row.id, error = %e, "a stored suppression rule does not decode; it is ignored");
            None
        }
    }
}

/// Which records of a batch a rule matched: (record index, rule id), by index.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks(pub Vec<(usize, Arc<str>)>);

impl Marks {
    /// The rule that suppressed record `i`, if any.
    pub fn of(&self, i: usize) -> Option<&str> {
        self.0
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .map(|k| &*self.0[k].1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Counts the marks per rule in /metrics, and logs them.
    pub fn count(&self, detector: &str) {
        let mut per_rule: std::collections::BTreeMap<&str, usize> = Default::default();
        for (_, id) in &self.0 {
            *per_rule.entry(id).or_default() += 1;
        }
        for (rule, n) in per_rule {
            crate::monitoring::suppressed(rule, n);
            tracing::info!(detector, rule, records = n, "suppressed records");
        }
    }
}

/// Marks the records of `batch` the rules for `detector` match (the first matching rule, in
/// creation order, is named). `entity_field` names the echoed field holding the entity.
/// Nothing is done per record when no rule covers the detector.
pub fn mark(rules: &[Matcher], detector: &str, entity_field: &str, batch: &Batch) -> Marks {
    let rules: Vec<&Matcher> = rules.iter().filter(|r| r.applies_to(detector)).collect();
    if rules.is_empty() || batch.is_empty() {
        return Marks::default();
    }
    let needs_entity = rules.iter().any(|r| r.needs_entity());
    let needs_time = rules.iter().any(|r| r.hours.is_some());
    let mut marks = Vec::new();
    for i in 0..batch.len() {
        let entity = needs_entity
            .then(|| batch.echo.field(i, entity_field))
            .flatten();
        let time = if needs_time {
            batch
                .timestamps
                .get(i)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        } else {
            None
        };
        let row = batch.matrix.row(i);
        let value = |f: &str| batch.features.iter().position(|n| n == f).map(|j| row[j]);
        if let Some(rule) = rules.iter().find(|r| r.matches(entity, time, value)) {
            marks.push((i, rule.id.clone()));
        }
    }
    Marks(marks)
}

/// Every stored rule, oldest first.
pub async fn list(state: &AppState) -> Result<Vec<Rule>, ServiceError> {
    let store = state.stores().suppressions.clone();
    blocking(move || Ok(store.suppressions()?.iter().filter_map(decoded).collect())).await
}

/// A rule as created, and the unresolved incidents it covered, now resolved.
#[derive(Debug, Clone)]
pub struct Created {
    pub rule: Rule,
    pub resolved: Vec<Alert>,
}

/// Checks and stores a new rule (in force on every replica once this returns) and resolves the
/// unresolved incidents it covers ([`keep`]).
pub async fn create(
    state: &AppState,
    rule: NewRule,
    created_by: Option<String>,
) -> Result<Created, ServiceError> {
    let rule = rule.check(created_by, Utc::now())?;
    keep(state, rule).await
}

/// Stores a checked rule, then resolves every unresolved incident it covers
/// ([`Matcher::covers`]), each with its `resolved` delivery through the outbox.
pub(super) async fn keep(state: &AppState, rule: Rule) -> Result<Created, ServiceError> {
    let (store, alerts) = (state.stores().suppressions.clone(), state.alerts());
    let sinks = state.webhooks().sink_names().to_vec();
    let stored = StoredSuppression {
        id: rule.id.clone(),
        body: serde_json::to_string(&rule).expect("a rule always serialises"),
        created_at: rule.created_at,
        expires_at: rule.expires_at,
    };
    let created = blocking(move || {
        store.insert_suppression(&stored)?;
        let matcher = Matcher::new(&rule);
        let scope = Cover {
            detector: rule.detector.as_deref(),
            entity: rule.entity.as_deref(),
        };
        let covers = |a: &Alert| matcher.covers(a);
        let resolved = alerts.resolve_covered(scope, &covers, Utc::now(), &sinks)?;
        Ok(Created { rule, resolved })
    })
    .await?;
    let rule = &created.rule;
    tracing::info!(rule = %rule.id, detector = ?rule.detector, entity = ?rule.entity, cidr = ?rule.cidr, reason = %rule.reason, resolved = created.resolved.len(), "suppression rule created");
    if !created.resolved.is_empty() {
        state.webhooks().alert_stored();
        metrics::counter!("netsentinel_incidents_resolved_total")
            .increment(created.resolved.len() as u64);
    }
    Ok(created)
}

/// Deletes a rule; false when there was none.
pub async fn delete(state: &AppState, id: &str) -> Result<bool, ServiceError> {
    let store = state.stores().suppressions.clone();
    let id = id.to_owned();
    blocking(move || Ok(store.delete_suppression(&id)?)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::scoring::tests::json_batch;
    use chrono::TimeZone;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> Result<Rule, ServiceError> {
        let r: NewRule = serde_json::from_value(v).unwrap();
        r.check(None, Utc::now())
    }

    fn field_of(e: ServiceError) -> String {
        match e {
            ServiceError::Suppression { field, .. } => field.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_rules_name_their_field() {
        for (body, field) in [
            (json!({"reason": " "}), "reason"),
            (json!({"reason": "x".repeat(1001)}), "reason"),
            (
                json!({"reason": "r", "entity": "a", "cidr": "10.0.0.0/8"}),
                "cidr",
            ),
            (json!({"reason": "r", "cidr": "10.0.0.300/8"}), "cidr"),
            (json!({"reason": "r", "entity": ""}), "entity"),
            (json!({"reason": "r", "hours": [24]}), "hours"),
            (json!({"reason": "r", "hours": []}), "hours"),
            (json!({"reason": "r", "expires_in": "soon"}), "expires_in"),
            (json!({"reason": "r", "expires_in": "0s"}), "expires_in"),
            (json!({"reason": "r", "detector": "Bad Name"}), "detector"),
            (
                json!({"reason": "r", "conditions": [{"feature": "", "op": "<", "value": 1}]}),
                "conditions[0].feature",
            ),
        ] {
            assert_eq!(field_of(rule(body.clone()).unwrap_err()), field, "{body}");
        }
        let r: NewRule = serde_json::from_value(json!({"reason": "r", "conditions": [
            {"feature": "a", "op": "<", "value": 1}, {"feature": "b", "op": ">", "value": 1}]}))
        .unwrap();
        let mut r2 = r.clone();
        r2.conditions[1].value = f64::INFINITY;
        assert_eq!(
            field_of(r2.check(None, Utc::now()).unwrap_err()),
            "conditions[1].value"
        );
        assert!(r.check(None, Utc::now()).is_ok());
    }

    #[test]
    fn a_good_rule_keeps_its_scope_and_expiry() {
        let now = Utc::now();
        let r: NewRule = serde_json::from_value(json!({"detector": "default",
            "cidr": "10.1.2.3/16", "hours": [3, 1, 3], "expires_in": "2h", "reason": " backup "}))
        .unwrap();
        let r = r.check(Some("k1".into()), now).unwrap();
        assert_eq!(r.cidr.as_deref(), Some("10.1.0.0/16"));
        assert_eq!(r.hours, Some(vec![1, 3]));
        assert_eq!(r.expires_at, Some(now + chrono::Duration::hours(2)));
        assert_eq!(r.reason, "backup");
        assert_eq!(r.created_by.as_deref(), Some("k1"));
        assert!(!r.expired_at(now));
        assert!(r.expired_at(now + chrono::Duration::hours(2)));
        let back: Rule = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    fn matcher(v: serde_json::Value) -> Matcher {
        Matcher::new(&rule(v).unwrap())
    }

    #[test]
    fn cidr_matches_addresses_inside_the_network_only() {
        let m = matcher(json!({"reason": "r", "cidr": "10.0.0.0/24"}));
        let none = |_: &str| None;
        assert!(m.matches(Some("10.0.0.66"), None, none));
        assert!(m.matches(Some("10.0.0.255"), None, none));
        assert!(!m.matches(Some("10.0.1.1"), None, none));
        assert!(!m.matches(Some("host-a"), None, none));
        assert!(!m.matches(None, None, none));
        let v6 = matcher(json!({"reason": "r", "cidr": "fd00::/8"}));
        assert!(v6.matches(Some("fd12::1"), None, none));
        assert!(!v6.matches(Some("fe80::1"), None, none));
        assert!(!v6.matches(Some("10.0.0.1"), None, none));
        let exact = matcher(json!({"reason": "r", "entity": "10.0.0.66"}));
        assert!(exact.matches(Some("10.0.0.66"), None, none));
        assert!(!exact.matches(Some("10.0.0.67"), None, none));
    }

    #[test]
    fn hours_match_the_utc_hour_and_never_a_record_without_time() {
        let m = matcher(json!({"reason": "r", "hours": [1, 2, 23]}));
        let at = |h| Some(Utc.with_ymd_and_hms(2026, 3, 1, h, 59, 59).unwrap());
        let none = |_: &str| None;
        for h in 0..24 {
            assert_eq!(m.matches(None, at(h), none), [1, 2, 23].contains(&h), "{h}");
        }
        assert!(!m.matches(None, None, none));
        let any_hour = matcher(json!({"reason": "r"}));
        assert!(any_hour.matches(None, None, none));
    }

    #[test]
    fn every_condition_must_hold_and_unknown_features_never_do() {
        let m = matcher(json!({"reason": "r", "conditions": [
            {"feature": "bytes_sent", "op": "<", "value": 5e9},
            {"feature": "connections", "op": ">=", "value": 10}]}));
        let vals = |bs: f64, c: f64| {
            move |f: &str| match f {
                "bytes_sent" => Some(bs),
                "connections" => Some(c),
                _ => None,
            }
        };
        assert!(m.matches(None, None, vals(1e9, 10.0)));
        assert!(!m.matches(None, None, vals(5e9, 10.0)));
        assert!(!m.matches(None, None, vals(1e9, 9.0)));
        let other = matcher(json!({"reason": "r", "conditions": [
            {"feature": "nope", "op": "!=", "value": 0}]}));
        assert!(!other.matches(None, None, vals(1.0, 1.0)));
        for (op, x, want) in [
            ("<=", 2.0, true),
            ("==", 2.0, true),
            ("!=", 2.0, false),
            (">", 2.0, false),
        ] {
            let m = matcher(
                json!({"reason": "r", "conditions": [{"feature": "a", "op": op, "value": 2}]}),
            );
            assert_eq!(m.matches(None, None, |_| Some(x)), want, "{op}");
        }
    }

    #[test]
    fn a_rule_covers_an_incident_only_when_every_stored_record_matches() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap();
        let mut incident = crate::store::alerts::tests::alert(at, 80);
        incident.entity = Some("10.0.0.66".into());
        let record = |bytes: f64, hour: u32| crate::store::alerts::AlertRecord {
            timestamp: Some(format!("2026-03-01T{hour:02}:10:00Z")),
            values: [("bytes_sent".to_owned(), bytes)].into(),
            entity: Some("10.0.0.66".into()),
            ..incident.records[0].clone()
        };
        incident.records = vec![record(1e6, 2), record(2e6, 3)];
        let covers = |v: serde_json::Value| matcher(v).covers(&incident);
        assert!(covers(json!({"reason": "r", "entity": "10.0.0.66"})));
        assert!(covers(
            json!({"reason": "r", "cidr": "10.0.0.0/24", "detector": "default"})
        ));
        assert!(covers(json!({"reason": "r"})), "no scope: every incident");
        assert!(!covers(json!({"reason": "r", "entity": "10.0.0.67"})));
        assert!(!covers(json!({"reason": "r", "cidr": "10.0.1.0/24"})));
        assert!(!covers(json!({"reason": "r", "detector": "other"})));
        let small = json!({"reason": "r", "conditions": [{"feature": "bytes_sent", "op": "<", "value": 1.5e6}]});
        assert!(!covers(small), "one record is over");
        let both = json!({"reason": "r", "conditions": [{"feature": "bytes_sent", "op": "<", "value": 5e6}]});
        assert!(covers(both));
        assert!(covers(json!({"reason": "r", "hours": [2, 3]})));
        assert!(
            !covers(json!({"reason": "r", "hours": [2]})),
            "a record at 03:10"
        );
        let mut batch_alert = incident.clone();
        batch_alert.entity = None;
        assert!(
            !matcher(json!({"reason": "r"})).covers(&batch_alert),
            "a batch alert is never covered"
        );
    }

    #[test]
    fn mark_names_the_first_matching_rule_per_record_of_its_detector() {
        let batch = json_batch(vec![
            json!({"timestamp": "2026-03-01T02:10:00Z", "src_ip": "10.0.0.66", "a": 1.0}),
            json!({"timestamp": "2026-03-01T05:10:00Z", "src_ip": "10.0.0.66", "a": 9.0}),
            json!({"timestamp": "2026-03-01T02:10:00Z", "src_ip": "10.0.9.1", "a": 1.0}),
            json!({"src_ip": "10.0.0.66", "a": 1.0}),
        ]);
        let night = rule(
            json!({"reason": "r", "detector": "default", "cidr": "10.0.0.0/24", "hours": [2]}),
        )
        .unwrap();
        let small = rule(json!({"reason": "r", "entity": "10.0.0.66",
            "conditions": [{"feature": "a", "op": "<", "value": 5}]}))
        .unwrap();
        let elsewhere = rule(json!({"reason": "r", "detector": "other"})).unwrap();
        let rules: Vec<Matcher> = [&elsewhere, &night, &small]
            .into_iter()
            .map(Matcher::new)
            .collect();
        let marks = mark(&rules, "default", "src_ip", &batch);
        assert_eq!(marks.of(0), Some(night.id.as_str()));
        assert_eq!(marks.of(1), None);
        assert_eq!(marks.of(2), None);
        assert_eq!(marks.of(3), Some(small.id.as_str()));
        assert_eq!(marks.len(), 2);
        let other = mark(&rules, "other", "src_ip", &batch);
        assert_eq!(
            other.len(),
            4,
            "a rule with no scope covers its detector's every record"
        );
        assert!(mark(&rules[1..2], "other", "src_ip", &batch).is_empty());
        // The rule without a detector covers every detector.
        assert_eq!(mark(&rules[2..], "other", "src_ip", &batch).len(), 2);
    }
}
