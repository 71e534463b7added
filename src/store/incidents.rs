//! Incidents: an entity's anomalies folded into one alert per (detector, entity), and the events
//! (`opened`, `escalated`, `renotified`, `resolved`) that owe a delivery.
//!
//! A raised alert whose records all name an entity stands for one incident update per entity
//! ([`split`]). In the store's transaction, each update either joins the entity's unresolved
//! incident ([`merge`]), or, when there is none or the one there was quiet longer than
//! `close_after` (it is [`resolve`]d first), opens a new one. A raised alert whose records name
//! no entity (or not all of them one) stays a batch alert, as before incidents.
//!
//! The pure rules live here; `alerts.rs` (SQLite) and `postgres.rs` run them inside their
//! transactions. One unresolved incident per (detector, entity) is also what a unique partial
//! index on both backends enforces.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::StoreError;
use super::alerts::{Alert, AlertRecord, AlertStatus, AlertStore, IncidentPolicy};

/// An alert's row as [`IncidentTx::insert`] writes it (made by [`Change::write`]) and [`IncidentTx::update`] rewrites it
/// (`update` writes `severity`, `status`, `body`, `resolve_at_ns` and `resolved_at_ns`).
pub struct IncidentRow<'a> {
    pub id: &'a str,
    pub created_at_ns: i64,
    pub severity: i16,
    pub status: &'static str,
    pub model_version: i64,
    pub body: &'a str,
    pub detector: &'a str,
    pub entity: Option<&'a str>,
    /// When an incident resolves if nothing else arrives (nanoseconds).
    pub resolve_at_ns: Option<i64>,
    pub resolved_at_ns: Option<i64>,
}

/// What [`raise`] needs of a backend's open transaction.
pub trait IncidentTx {
    /// The unresolved incident of (`detector`, `entity`) as stored (its id and body, decoded by
    /// the caller), locked for this transaction.
    fn open_incident_row(
        &mut self,
        detector: &str,
        entity: &str,
    ) -> Result<Option<(String, String)>, StoreError>;
    /// The unresolved incidents of `detector` and `entity` (`None`: any), locked for this
    /// transaction.
    fn unresolved(
        &mut self,
        detector: Option<&str>,
        entity: Option<&str>,
    ) -> Result<Vec<Alert>, StoreError>;
    /// Inserts a new alert ([`StoreError::DuplicateAlert`] when its id is taken).
    fn insert(&mut self, row: &IncidentRow<'_>) -> Result<(), StoreError>;
    /// Writes an existing alert's new state.
    fn update(&mut self, row: &IncidentRow<'_>) -> Result<(), StoreError>;
    /// The alert's next event number (0 for its first).
    fn next_seq(&mut self, alert_id: &str) -> Result<i64, StoreError>;
    /// Writes one pending outbox row per sink for the event.
    fn insert_deliveries(
        &mut self,
        e: &super::outbox::NewEvent<'_>,
        sinks: &[String],
    ) -> Result<(), StoreError>;
    /// Queues a delivery of `event` to each of `sinks`, carrying the alert as it is now (an
    /// incident's body is kept with the event; a batch alert never changes, so its row is read).
    fn deliver(
        &mut self,
        alert: &Alert,
        event: AlertEvent,
        sinks: &[String],
    ) -> Result<(), StoreError> {
        if sinks.is_empty() {
            return Ok(());
        }
        let body = match alert.is_incident() {
            true => Some(super::alerts::AlertRow::from_alert(alert)?.body),
            false => None,
        };
        self.deliver_body(alert, event, sinks, body.as_deref())
    }

    /// [`deliver`](Self::deliver) with the body an incident's event carries already encoded
    /// (`None` for a batch alert, whose row is read when sent).
    fn deliver_body(
        &mut self,
        alert: &Alert,
        event: AlertEvent,
        sinks: &[String],
        body: Option<&str>,
    ) -> Result<(), StoreError> {
        if sinks.is_empty() {
            return Ok(());
        }
        let e = super::outbox::NewEvent {
            alert_id: &alert.id,
            seq: self.next_seq(&alert.id)?,
            event,
            due_ms: super::alerts::event_due(alert).timestamp_millis(),
            body,
        };
        self.insert_deliveries(&e, sinks)
    }
}

/// What a raised alert did to the store: each alert it created or changed, and the event
/// delivered for it (none for an update that notified no one).
pub type Raised = Vec<(Alert, Option<AlertEvent>)>;

/// Stores a raised alert, as its [`split`] `parts`, inside a backend's transaction: a batch
/// alert as a new alert, each entity's update into its incident (resolving a stale one first),
/// with the deliveries owed.
///
/// In three phases, so the costly middle runs on every core: the unresolved incidents of the
/// parts' entities are read (and locked) in order; each part is decoded, folded and encoded on
/// the rayon pool ([`plan`]); then the rows and deliveries are written in the parts' order.
/// Parts of one (detector, entity) see each other as they would one after the other: the
/// parts are taken in runs in which no entity repeats ([`split`] never repeats one).
pub(super) fn raise(
    tx: &mut (impl IncidentTx + ?Sized),
    parts: Vec<Alert>,
    sinks: &[String],
) -> Result<Raised, StoreError> {
    let mut out = Vec::with_capacity(parts.len());
    let mut parts = parts.into_iter().peekable();
    while parts.peek().is_some() {
        let mut seen = std::collections::HashSet::new();
        let mut run = Vec::new();
        while let Some(part) = parts.next_if(|p| match &p.entity {
            Some(e) => seen.insert((p.detector.clone(), e.clone())),
            None => true,
        }) {
            run.push(part);
        }
        let found = run
            .iter()
            .map(|part| match &part.entity {
                Some(entity) => tx.open_incident_row(&part.detector, entity),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // A few parts are planned here: handing them to the pool would only queue this
        // transaction (and its lock) behind whatever the pool is doing.
        let steps = if run.len() < PARALLEL_PARTS {
            let planned = run.into_iter().zip(found).map(|(p, f)| plan(p, f));
            planned.collect::<Result<Vec<_>, _>>()?
        } else {
            use rayon::prelude::*;
            let planned = run.into_par_iter().zip(found).map(|(p, f)| plan(p, f));
            planned.collect::<Result<Vec<_>, _>>()?
        };
        for step in steps {
            for change in step {
                change.write(tx, sinks)?;
                out.push((change.alert, change.event));
            }
        }
    }
    Ok(out)
}

/// From how many parts on [`raise`] plans them on the rayon pool.
const PARALLEL_PARTS: usize = 64;

/// One row a raised part changes, encoded: the alert as it will be, the event it owes (if
/// any), and how its row is written.
struct Change {
    alert: Alert,
    event: Option<AlertEvent>,
    row: super::alerts::AlertRow,
    /// A new row (or an update of an existing one), resolving at `resolve_at`.
    insert: bool,
    resolve_at: Option<DateTime<Utc>>,
}

impl Change {
    /// Encodes `alert`'s row (checked as every stored alert is).
    fn of(
        alert: Alert,
        event: Option<AlertEvent>,
        insert: bool,
        resolve_at: Option<DateTime<Utc>>,
    ) -> Result<Self, StoreError> {
        let row = super::alerts::AlertRow::from_alert(&alert)?;
        Ok(Self {
            alert,
            event,
            row,
            insert,
            resolve_at,
        })
    }

    /// Writes the row and queues the event's deliveries (an incident's carry its body).
    fn write(
        &self,
        tx: &mut (impl IncidentTx + ?Sized),
        sinks: &[String],
    ) -> Result<(), StoreError> {
        let a = &self.alert;
        let row = IncidentRow {
            id: &a.id,
            created_at_ns: self.row.created_at_ns,
            severity: i16::from(a.severity),
            status: super::alerts::column_status(a),
            model_version: self.row.model_version,
            body: &self.row.body,
            detector: &a.detector,
            entity: a.entity.as_deref(),
            resolve_at_ns: self.resolve_at.map(super::alerts::nanos_clamped),
            resolved_at_ns: a.resolved_at.map(super::alerts::nanos_clamped),
        };
        match self.insert {
            true => tx.insert(&row)?,
            false => tx.update(&row)?,
        }
        if let Some(event) = self.event {
            let body = a.is_incident().then_some(self.row.body.as_str());
            tx.deliver_body(a, event, sinks, body)?;
        }
        Ok(())
    }
}

/// What one part does, given its entity's unresolved incident as stored (`found`): a batch
/// alert opens; an update joins the incident, or resolves a stale one and opens anew, or opens.
fn plan(part: Alert, found: Option<(String, String)>) -> Result<Vec<Change>, StoreError> {
    let policy = part.policy.unwrap_or_default();
    if part.entity.is_none() {
        return Ok(vec![Change::of(
            part,
            Some(AlertEvent::Opened),
            true,
            None,
        )?]);
    }
    let mut changes = Vec::with_capacity(2);
    if let Some((id, body)) = found {
        let mut open = super::alerts::decode(&id, &body)?;
        let due = resolves_at(open.last_seen, &policy);
        if part.last_seen <= due {
            let event = merge(&mut open, part, &policy, policy.top_records);
            let resolve_at = resolves_at(open.last_seen, &policy);
            return Ok(vec![Change::of(open, event, false, Some(resolve_at))?]);
        }
        resolve(&mut open, due);
        changes.push(Change::of(open, Some(AlertEvent::Resolved), false, None)?);
    }
    let new = opened(part);
    let resolve_at = resolves_at(new.last_seen, &policy);
    changes.push(Change::of(
        new,
        Some(AlertEvent::Opened),
        true,
        Some(resolve_at),
    )?);
    Ok(changes)
}

/// Why a delivery of an alert is owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A new alert (a batch alert, or the first anomaly of an incident).
    Opened,
    /// The incident's `max_severity` rose by at least `renotify_severity_step` since the last
    /// delivery.
    Escalated,
    /// The incident was updated `renotify_after` or longer after its last delivery.
    Renotified,
    /// The incident's entity was quiet longer than `close_after`.
    Resolved,
}

impl AlertEvent {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Escalated => "escalated",
            Self::Renotified => "renotified",
            Self::Resolved => "resolved",
        }
    }

    /// The event spelled `s`; unknown spellings (none are written) read as `opened`.
    pub fn parse(s: &str) -> Self {
        match s {
            "escalated" => Self::Escalated,
            "renotified" => Self::Renotified,
            "resolved" => Self::Resolved,
            _ => Self::Opened,
        }
    }
}

/// The updates a raised alert stands for: one per entity, in the order their first record
/// appears, when every record names an entity; otherwise the alert itself, unchanged (a batch
/// alert). The first update keeps the alert's id.
///
/// An owned alert's records move into its updates; a borrowed one's are copied.
pub fn split(raised: Cow<'_, Alert>) -> Vec<Alert> {
    let entities: Option<Vec<String>> = raised.records.iter().map(|r| r.entity.clone()).collect();
    let Some(entities) = entities.filter(|e| !e.is_empty()) else {
        return vec![raised.into_owned()];
    };
    let mut order: Vec<&str> = Vec::new();
    let mut by_entity: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, e) in entities.iter().enumerate() {
        let slot = by_entity.entry(e).or_default();
        if slot.is_empty() {
            order.push(e);
        }
        slot.push(i);
    }
    // Every update shares the alert's other fields: copied from a shell without its records
    // (cloning the whole alert per entity copied every entity's records for each one).
    let shell = raised.without_records();
    let mut records: Vec<Option<AlertRecord>> = match raised {
        Cow::Owned(a) => a.records.into_iter().map(Some).collect(),
        Cow::Borrowed(a) => a.records.iter().cloned().map(Some).collect(),
    };
    order
        .iter()
        .enumerate()
        .map(|(n, entity)| {
            let records: Vec<_> = by_entity[entity]
                .iter()
                .map(|&i| records[i].take().expect("each record is in one update"))
                .collect();
            let severity = records.iter().map(|r| r.severity).max().unwrap_or(0);
            Alert {
                id: if n == 0 {
                    shell.id.clone()
                } else {
                    Uuid::now_v7().to_string()
                },
                entity: Some((*entity).to_owned()),
                severity,
                max_severity: severity,
                records,
                ..shell.without_records()
            }
        })
        .collect()
}

/// Resolves an incident at `at` (found quiet past its `close_after`, or covered by a new
/// suppression rule), with its `resolved` delivery; answers it resolved.
pub(super) fn close(
    tx: &mut (impl IncidentTx + ?Sized),
    mut open: Alert,
    at: DateTime<Utc>,
    sinks: &[String],
) -> Result<Alert, StoreError> {
    resolve(&mut open, at);
    let change = Change::of(open, Some(AlertEvent::Resolved), false, None)?;
    change.write(tx, sinks)?;
    Ok(change.alert)
}

/// The unresolved incidents a new suppression rule may cover: of its detector and its entity,
/// when it names them (`None`: any); the rest of the rule is the caller's `covers`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cover<'a> {
    pub detector: Option<&'a str>,
    pub entity: Option<&'a str>,
}

/// Resolves, at `now`, every unresolved incident in `scope` that `covers`, each with its
/// `resolved` delivery to `sinks`, inside a backend's transaction; returns them. An incident
/// resolved meanwhile (by another replica, or the quiet round) is not in the locked read, so
/// each is resolved, and delivered, once.
pub(super) fn resolve_covered(
    tx: &mut (impl IncidentTx + ?Sized),
    scope: Cover<'_>,
    covers: &dyn Fn(&Alert) -> bool,
    now: DateTime<Utc>,
    sinks: &[String],
) -> Result<Vec<Alert>, StoreError> {
    let mut resolved = Vec::new();
    for incident in tx.unresolved(scope.detector, scope.entity)? {
        if covers(&incident) {
            let at = now.max(incident.last_seen);
            resolved.push(close(tx, incident, at, sinks)?);
        }
    }
    Ok(resolved)
}

/// What a raised alert will look like once stored, for the answer that reports it: when it is
/// one entity's update, that entity's unresolved incident with the update folded in (or the
/// new incident it opens); else the alert itself. Read before the commit, so a concurrent
/// update of the same entity can make the shown count or records differ by that update (the
/// id is the incident's either way, unless the incident resolves or opens in between); a store
/// that cannot be read shows the alert as raised.
pub fn preview(store: &dyn AlertStore, raised: &Alert) -> Alert {
    // One update only when every record names the same entity: anything else is shown as
    // raised, without splitting (which copies every record) to find out.
    let mut entities = raised.records.iter().map(|r| r.entity.as_deref());
    let one_entity = match entities.next() {
        Some(Some(first)) => entities.all(|e| e == Some(first)),
        _ => false,
    };
    if !one_entity {
        return raised.clone();
    }
    let mut parts = split(Cow::Borrowed(raised));
    let (Some(part), true) = (parts.pop(), parts.is_empty()) else {
        return raised.clone();
    };
    let Some(entity) = &part.entity else {
        return raised.clone();
    };
    let policy = raised.policy.unwrap_or_default();
    match store.open_incident(&part.detector, entity) {
        Ok(Some(mut open)) if part.last_seen <= resolves_at(open.last_seen, &policy) => {
            merge(&mut open, part, &policy, policy.top_records);
            open
        }
        _ => part,
    }
}

/// When an unresolved incident last seen at `last_seen` resolves under `policy`.
pub fn resolves_at(last_seen: DateTime<Utc>, policy: &IncidentPolicy) -> DateTime<Utc> {
    let gap = TimeDelta::from_std(policy.close_after).unwrap_or(TimeDelta::MAX);
    last_seen
        .checked_add_signed(gap)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A new incident (or batch alert) as stored: what was delivered is its opening.
pub fn opened(mut alert: Alert) -> Alert {
    alert.notified = Some((alert.max_severity, alert.created_at));
    alert
}

/// Folds `update` into the unresolved incident `open` (same detector and entity); returns the
/// event this update owes a delivery, if any. Records keep the `top` most anomalous of both.
pub fn merge(
    open: &mut Alert,
    update: Alert,
    policy: &IncidentPolicy,
    top: usize,
) -> Option<AlertEvent> {
    open.count = open.count.saturating_add(update.count.max(1));
    open.last_seen = open.last_seen.max(update.last_seen);
    open.reason = update.reason;
    open.summary = update.summary;
    open.model_version = update.model_version;
    // What the raising alert left out is told of its latest update, as its reason and summary.
    open.omitted = update.omitted;
    let mut records = std::mem::take(&mut open.records);
    records.extend(update.records);
    // Stable: of equal scores, the older record stays first.
    records.sort_by(|a, b| b.score.total_cmp(&a.score));
    records.truncate(top);
    open.records = records;
    open.max_severity = open.max_severity.max(update.max_severity);
    open.severity = open.max_severity;
    let (told_severity, told_at) = open
        .notified
        .unwrap_or((open.max_severity, open.first_seen));
    let step = policy.renotify_severity_step.max(1);
    let event = if open.max_severity >= told_severity.saturating_add(step) {
        Some(AlertEvent::Escalated)
    } else {
        policy
            .renotify_after
            .and_then(|d| TimeDelta::from_std(d).ok())
            .filter(|d| update.last_seen - told_at >= *d)
            .map(|_| AlertEvent::Renotified)
    };
    if event.is_some() {
        open.notified = Some((open.max_severity, update.last_seen));
    }
    event
}

/// Resolves an incident at `at` (its last anomaly plus `close_after`).
pub fn resolve(open: &mut Alert, at: DateTime<Utc>) {
    open.status = AlertStatus::Resolved;
    open.resolved_at = Some(at);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::detector::model::BatchSummary;
    use crate::store::alerts::AlertRecord;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn record(entity: Option<&str>, score: f64, severity: u8) -> AlertRecord {
        AlertRecord {
            index: 0,
            timestamp: None,
            score,
            severity,
            values: BTreeMap::new(),
            fields: BTreeMap::new(),
            explanation: Vec::new(),
            entity: entity.map(str::to_owned),
        }
    }

    fn raised(at: i64, records: Vec<AlertRecord>) -> Alert {
        let severity = records.iter().map(|r| r.severity).max().unwrap_or(0);
        let summary = BatchSummary {
            n_records: 10,
            n_anomalies: records.len(),
            anomaly_rate: 0.1,
            threshold: 0.6,
            max_severity: severity,
        };
        Alert::new(t(at), 1, severity, "r".into(), summary, records)
    }

    #[test]
    fn records_of_one_entity_make_one_update_and_of_none_a_batch_alert() {
        let one = raised(
            0,
            vec![record(Some("h"), 0.8, 60), record(Some("h"), 0.7, 40)],
        );
        let parts = split(Cow::Borrowed(&one));
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].id, one.id);
        assert_eq!(parts[0].entity.as_deref(), Some("h"));

        let mixed = raised(0, vec![record(Some("h"), 0.8, 60), record(None, 0.7, 40)]);
        let parts = split(Cow::Borrowed(&mixed));
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].entity, None,
            "a record without entity: batch alert"
        );

        let two = raised(
            0,
            vec![
                record(Some("b"), 0.9, 80),
                record(Some("a"), 0.8, 60),
                record(Some("b"), 0.7, 40),
            ],
        );
        let parts = split(Cow::Borrowed(&two));
        let shape: Vec<_> = parts
            .iter()
            .map(|p| (p.entity.clone().unwrap(), p.records.len(), p.max_severity))
            .collect();
        assert_eq!(shape, [("b".to_string(), 2, 80), ("a".to_string(), 1, 60)]);
        assert_ne!(parts[0].id, parts[1].id);
    }

    #[test]
    fn escalation_needs_the_step_and_renotify_the_time() {
        let policy = IncidentPolicy {
            renotify_after: Some(Duration::from_secs(600)),
            ..IncidentPolicy::default()
        };
        let mut open =
            opened(split(Cow::Owned(raised(0, vec![record(Some("h"), 0.55, 50)]))).remove(0));
        let update = |at, sev| {
            split(Cow::Owned(raised(
                at,
                vec![record(Some("h"), 0.5 + f64::from(sev) / 1000.0, sev)],
            )))
            .remove(0)
        };
        // (time, severity) of each update, the event it owes, and why.
        let steps = [
            ((60, 59), None, "up 9 < 10"),
            ((120, 60), Some(AlertEvent::Escalated), "up 10"),
            ((180, 69), None, "9 over the last told"),
            ((719, 40), None, "599 s after"),
            ((720, 40), Some(AlertEvent::Renotified), "600 s after"),
        ];
        for ((at, sev), event, why) in steps {
            assert_eq!(
                merge(&mut open, update(at, sev), &policy, 10),
                event,
                "{why}"
            );
        }
        assert_eq!(open.count, 6);
        assert_eq!((open.first_seen, open.last_seen), (t(0), t(720)));
        assert_eq!((open.max_severity, open.severity), (69, 69));
        assert_eq!(open.records.len(), 6);
        assert_eq!(open.records[0].severity, 69, "most anomalous first");
        assert_eq!(merge(&mut open, update(721, 40), &policy, 3), None);
        assert_eq!(open.records.len(), 3, "bounded by top");
        // What the raising alert left out is that of the latest update.
        let omitted = crate::store::alerts::Omitted {
            entities: 7,
            records: 9,
        };
        let mut capped = update(722, 40);
        capped.omitted = Some(omitted);
        merge(&mut open, capped, &policy, 3);
        assert_eq!(open.omitted, Some(omitted));
        merge(&mut open, update(723, 40), &policy, 3);
        assert_eq!(open.omitted, None);
    }

    fn host(at: i64, entity: &str, severity: u8) -> Alert {
        let score = 0.5 + f64::from(severity) / 1000.0;
        let mut a = raised(at, vec![record(Some(entity), score, severity)]);
        a.policy = Some(IncidentPolicy::default());
        a
    }

    fn events(store: &crate::store::alerts::SqliteAlertStore, id: &str) -> Vec<(u32, AlertEvent)> {
        use crate::store::outbox::Outbox;
        store
            .deliveries(id)
            .unwrap()
            .iter()
            .map(|d| (d.seq, d.event))
            .collect()
    }

    fn listed(
        store: &crate::store::alerts::SqliteAlertStore,
        q: crate::store::alerts::AlertQuery,
    ) -> Vec<Alert> {
        use crate::store::alerts::AlertStore;
        let q = crate::store::alerts::AlertQuery { limit: 100, ..q };
        store.list(&q).unwrap().alerts
    }

    #[test]
    fn an_entitys_anomalies_update_one_incident_that_a_quiet_gap_resolves() {
        use crate::store::alerts::{AlertQuery, AlertStore, SqliteAlertStore};
        use crate::store::outbox::Outbox;
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let sinks = vec!["siem".to_string()];
        // 15 anomalous batches of one host, a minute apart; severity 50 then up by 3 each time.
        let first = host(0, "10.0.0.66", 50);
        store.insert_with_outbox(&first, &sinks).unwrap();
        for i in 1..15 {
            let sev = if i < 10 { 50 } else { 50 + 3 * (i as u8 - 9) };
            store
                .insert_with_outbox(&host(60 * i, "10.0.0.66", sev), &sinks)
                .unwrap();
        }
        // Another host and a batch alert on the side.
        store
            .insert_with_outbox(&host(30, "10.0.0.9", 40), &sinks)
            .unwrap();
        let batch = raised(40, vec![record(None, 0.7, 70)]);
        store.insert_with_outbox(&batch, &sinks).unwrap();
        assert_eq!(store.count().unwrap(), 3);

        let incident = store.get(&first.id).unwrap().unwrap();
        assert_eq!(incident.count, 15);
        assert_eq!(incident.status, AlertStatus::Open);
        assert_eq!((incident.first_seen, incident.last_seen), (t(0), t(840)));
        assert_eq!((incident.max_severity, incident.severity), (65, 65));
        assert_eq!(
            incident.records.len(),
            10,
            "the top records across the incident"
        );
        assert_eq!(incident.records[0].severity, 65);
        // Opened once; escalated at 62 (50 + 12 >= 10 over 50), not again at 65 (3 over 62).
        assert_eq!(
            events(&store, &first.id),
            [(0, AlertEvent::Opened), (1, AlertEvent::Escalated)]
        );
        let escalated = store
            .claim_due("siem", t(10_000), 100, Duration::from_secs(60))
            .unwrap();
        let of_first: Vec<_> = escalated
            .iter()
            .filter(|d| d.alert.id == first.id)
            .collect();
        assert_eq!(of_first.len(), 2);
        assert_eq!(
            of_first[1].alert.max_severity, 62,
            "the alert as its event left it"
        );
        assert_eq!(of_first[1].idempotency_key(), format!("{}/1", first.id));

        // Quiet for longer than close_after (30 min): the next anomaly resolves it, opens anew.
        let later = host(840 + 1801, "10.0.0.66", 55);
        store.insert_with_outbox(&later, &sinks).unwrap();
        let old = store.get(&first.id).unwrap().unwrap();
        assert_eq!(old.status, AlertStatus::Resolved);
        assert_eq!(old.resolved_at, Some(t(840 + 1800)));
        assert_eq!(
            events(&store, &first.id).last(),
            Some(&(2, AlertEvent::Resolved))
        );
        let new = store.get(&later.id).unwrap().unwrap();
        assert_eq!((new.count, new.status), (1, AlertStatus::Open));

        // Filters: by entity, by status.
        let of_host = listed(
            &store,
            AlertQuery {
                entity: Some("10.0.0.66".into()),
                ..Default::default()
            },
        );
        assert_eq!(of_host.len(), 2);
        let with_status = |status| {
            let q = AlertQuery {
                status: Some(status),
                ..Default::default()
            };
            listed(&store, q)
        };
        let resolved = with_status(AlertStatus::Resolved);
        assert_eq!(
            resolved.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
            [first.id.as_str()]
        );
        let open = with_status(AlertStatus::Open);
        assert_eq!(
            open.len(),
            3,
            "the new incident, the other host, the batch alert"
        );

        // Without traffic, the background round resolves what went quiet, once.
        let resolved_ids = |at| -> Vec<String> {
            let quiet = store.resolve_quiet(t(at), &sinks, 10).unwrap();
            quiet.into_iter().map(|a| a.id).collect()
        };
        assert!(resolved_ids(30 + 1799).is_empty());
        assert_eq!(resolved_ids(30 + 1800), [first_other(&store)]);
        assert!(resolved_ids(2641 + 1799).is_empty());
        assert_eq!(resolved_ids(2641 + 1800), std::slice::from_ref(&later.id));
        assert!(
            store
                .resolve_quiet(t(99_999), &sinks, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            events(&store, &later.id),
            [(0, AlertEvent::Opened), (1, AlertEvent::Resolved)]
        );
        let batch_now = store.get(&batch.id).unwrap().unwrap();
        assert_eq!(
            batch_now.status,
            AlertStatus::Open,
            "batch alerts never resolve"
        );
    }

    /// The id of the incident of host 10.0.0.9.
    fn first_other(store: &crate::store::alerts::SqliteAlertStore) -> String {
        let q = crate::store::alerts::AlertQuery {
            entity: Some("10.0.0.9".into()),
            ..Default::default()
        };
        listed(store, q)[0].id.clone()
    }

    #[test]
    fn a_new_rule_resolves_the_unresolved_incidents_it_covers_once() {
        use crate::store::alerts::{AlertStore, SqliteAlertStore};
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let sinks = vec!["siem".to_string()];
        let (a, b, c) = (host(0, "a", 50), host(0, "b", 50), host(0, "c", 50));
        for x in [&a, &b, &c] {
            store.insert_with_outbox(x, &sinks).unwrap();
        }
        store.acknowledge(&b.id, t(10)).unwrap();
        let batch = raised(0, vec![record(None, 0.7, 70)]);
        store.insert_with_outbox(&batch, &sinks).unwrap();
        let not_c = |x: &Alert| x.entity.as_deref() != Some("c");
        let resolved = store
            .resolve_covered(Cover::default(), &not_c, t(100), &sinks)
            .unwrap();
        let ids: Vec<_> = resolved.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, [a.id.as_str(), b.id.as_str()], "open and acknowledged");
        for id in [&a.id, &b.id] {
            let now = store.get(id).unwrap().unwrap();
            assert_eq!(
                (now.status, now.resolved_at),
                (AlertStatus::Resolved, Some(t(100)))
            );
            assert_eq!(
                events(&store, id),
                [(0, AlertEvent::Opened), (1, AlertEvent::Resolved)]
            );
        }
        assert_eq!(store.get(&c.id).unwrap().unwrap().status, AlertStatus::Open);
        assert_eq!(
            store.get(&batch.id).unwrap().unwrap().status,
            AlertStatus::Open
        );
        // Resolved once: a second rule finds them resolved already.
        let again = store
            .resolve_covered(Cover::default(), &|_| true, t(200), &sinks)
            .unwrap();
        let ids: Vec<_> = again.iter().map(|x| x.id.as_str()).collect();
        assert_eq!(ids, [c.id.as_str()]);
        // The scope narrows what is read.
        let d = host(300, "d", 50);
        store.insert_with_outbox(&d, &sinks).unwrap();
        let scope = Cover {
            detector: Some("other"),
            entity: None,
        };
        assert!(
            store
                .resolve_covered(scope, &|_| true, t(400), &sinks)
                .unwrap()
                .is_empty()
        );
        let scope = Cover {
            detector: Some("default"),
            entity: Some("d"),
        };
        let d_only = store
            .resolve_covered(scope, &|_| true, t(400), &sinks)
            .unwrap();
        assert_eq!(d_only.len(), 1);
        assert_eq!(d_only[0].resolved_at, Some(t(400)));
    }

    #[test]
    fn a_raised_alert_of_several_entities_updates_each_ones_incident() {
        use crate::store::alerts::{AlertStore, SqliteAlertStore};
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let both = |at| {
            let mut a = raised(
                at,
                vec![record(Some("a"), 0.7, 70), record(Some("b"), 0.6, 60)],
            );
            a.policy = Some(IncidentPolicy::default());
            a
        };
        let first = both(0);
        store.insert_with_outbox(&first, &[]).unwrap();
        store.insert_with_outbox(&both(60), &[]).unwrap();
        assert_eq!(store.count().unwrap(), 2);
        let a = store.get(&first.id).unwrap().unwrap();
        assert_eq!(
            (a.entity.as_deref(), a.count, a.records.len()),
            (Some("a"), 2, 2)
        );
    }

    /// Each entity's incidents in `store` (resolved too): entity, count, max severity, whether
    /// resolved, and the events delivered, newest incident last.
    type Seen = (String, u64, u8, bool, Vec<(u32, AlertEvent)>);

    fn by_entity(store: &crate::store::alerts::SqliteAlertStore) -> Vec<Seen> {
        use crate::store::alerts::{AlertQuery, AlertStore};
        let q = AlertQuery {
            limit: 1000,
            ..Default::default()
        };
        let mut all: Vec<Seen> = (store.list(&q).unwrap().alerts.into_iter())
            .map(|a| {
                let ev = events(store, &a.id);
                let resolved = a.status == AlertStatus::Resolved;
                (a.entity.unwrap(), a.count, a.max_severity, resolved, ev)
            })
            .collect();
        all.sort_by(|a, b| (&a.0, !a.3).cmp(&(&b.0, !b.3)));
        all
    }

    #[test]
    fn many_entities_planned_on_the_pool_end_as_raised_one_by_one() {
        use crate::store::alerts::{AlertStore, SqliteAlertStore};
        let n = 2 * PARALLEL_PARTS;
        let name = |i: usize| format!("10.0.{}.{}", i / 200, i % 200);
        // Three rounds over `n` hosts: all open; all update (half escalate); every tenth comes
        // back past `close_after` (its incident resolves and a new one opens).
        let rounds: Vec<(i64, Vec<(usize, u8)>)> = vec![
            (0, (0..n).map(|i| (i, 40)).collect()),
            (
                60,
                (0..n)
                    .map(|i| (i, if i % 2 == 0 { 90 } else { 40 }))
                    .collect(),
            ),
            (60 + 3 * 3600, (0..n).step_by(10).map(|i| (i, 50)).collect()),
        ];
        let sinks = ["siem".to_owned()];
        let together = SqliteAlertStore::open_in_memory().unwrap();
        let one_by_one = SqliteAlertStore::open_in_memory().unwrap();
        for (at, hosts) in &rounds {
            let records = hosts
                .iter()
                .map(|&(i, sev)| record(Some(&name(i)), 0.5 + f64::from(sev) / 1000.0, sev))
                .collect();
            let mut all = raised(*at, records);
            all.policy = Some(IncidentPolicy::default());
            together.insert_with_outbox(&all, &sinks).unwrap();
            for &(i, sev) in hosts {
                one_by_one
                    .insert_with_outbox(&host(*at, &name(i), sev), &sinks)
                    .unwrap();
            }
        }
        let (a, b) = (by_entity(&together), by_entity(&one_by_one));
        assert_eq!(a.len(), n + rounds[2].1.len());
        assert_eq!(a, b);
        let first = &a[0];
        assert_eq!(first.0, name(0));
        assert_eq!(
            (first.1, first.2, first.3),
            (2, 90, true),
            "escalated, then resolved"
        );
        use AlertEvent::*;
        let seqs: Vec<AlertEvent> = first.4.iter().map(|e| e.1).collect();
        assert_eq!(seqs, vec![Opened, Escalated, Resolved]);
    }

    #[test]
    fn parts_of_one_entity_in_one_raise_see_each_other() {
        use crate::store::alerts::{AlertStore, SqliteAlertStore};
        let store = SqliteAlertStore::open_in_memory().unwrap();
        let parts = [host(0, "h", 40), host(60, "h", 90), host(7200, "h", 30)]
            .into_iter()
            .flat_map(|a| split(Cow::Owned(a)))
            .collect();
        let raised = {
            let mut conn = store.lock().unwrap();
            let tx = conn.transaction().unwrap();
            let out = raise(&mut crate::store::sqlite_tx::SqliteTx(&tx), parts, &[]).unwrap();
            tx.commit().unwrap();
            out
        };
        let events: Vec<_> = raised.iter().map(|(a, e)| (a.count, *e)).collect();
        use AlertEvent::*;
        assert_eq!(
            events,
            vec![
                (1, Some(Opened)),
                (2, Some(Escalated)),
                (2, Some(Resolved)),
                (1, Some(Opened))
            ]
        );
        assert_eq!(store.count().unwrap(), 2);
    }
}
