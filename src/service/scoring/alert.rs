//! Deciding a scored batch's alert: the rule, which records and entities it keeps, and the
//! alert built from them.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::Utc;
use rayon::prelude::*;

use super::{EXPLAIN_CHUNK, ScoredBatch, explain_rows};
use crate::detector::explain::FeatureContribution;
use crate::detector::model::{BatchSummary, Model};
use crate::records::{Batch, EchoFields};
use crate::store::alerts::{Alert, AlertRecord, Omitted};

/// When a batch raises an alert, and how the alert joins its entity's incident.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// Alert when the anomaly rate exceeds this.
    pub rate: f64,
    /// Alert when any record's severity reaches this.
    pub severity: u8,
    /// Records kept in the alert.
    pub top_records: usize,
    pub explain_top_k: usize,
    /// The echoed field naming a record's entity (records with one are incidents' updates).
    pub entity_field: String,
    /// Most entities one alert turns into incidents (`--max-alert-entities`): the others, of
    /// lower scores, are left out and counted in the alert's `omitted`.
    pub max_entities: usize,
    pub incidents: crate::store::alerts::IncidentPolicy,
}

impl AlertRule {
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self {
            rate: settings.alert_rate,
            severity: settings.alert_severity,
            top_records: settings.alert_top_records as usize,
            explain_top_k: settings.explain_top_k as usize,
            entity_field: "entity".to_owned(),
            max_entities: usize::try_from(settings.max_alert_entities).unwrap_or(usize::MAX),
            incidents: crate::store::alerts::IncidentPolicy {
                close_after: std::time::Duration::from_secs(settings.incident_close_after_secs),
                top_records: settings.alert_top_records as usize,
                ..Default::default()
            },
        }
    }

    /// The service's rule with the detector's own `alerting.min_severity`, if it has one.
    pub fn for_detector(
        settings: &crate::config::Settings,
        spec: &crate::service::detectors::DetectorSpec,
    ) -> Self {
        Self {
            severity: spec.alert_severity(settings.alert_severity),
            entity_field: spec.entity_field().to_owned(),
            incidents: spec.incident_policy(
                settings.incident_close_after_secs,
                settings.alert_top_records as usize,
            ),
            ..Self::from_settings(settings)
        }
    }
}

/// The alert this batch raises, if any: its most anomalous records, explained.
/// Most echoed fields an alert keeps for one of its records (each at most
/// [`crate::records::MAX_ECHO_BYTES`] long); past it, the first fields by name are kept and
/// [`FIELDS_LEFT_OUT`] says how many were left out.
pub const MAX_ALERT_RECORD_FIELDS: usize = 32;
/// The field that counts an alert record's echoed fields left out past [`MAX_ALERT_RECORD_FIELDS`].
pub const FIELDS_LEFT_OUT: &str = "netsentinel.fields_left_out";

fn alert_fields(echo: &EchoFields, i: usize) -> BTreeMap<String, String> {
    let all = echo.fields(i);
    let total = all.len();
    let mut kept: BTreeMap<String, String> = all
        .into_iter()
        .take(MAX_ALERT_RECORD_FIELDS)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if total > MAX_ALERT_RECORD_FIELDS {
        kept.insert(
            FIELDS_LEFT_OUT.to_string(),
            (total - MAX_ALERT_RECORD_FIELDS).to_string(),
        );
    }
    kept
}

pub fn alert_for(
    model: &Model,
    batch: &Batch,
    scored: &ScoredBatch,
    rule: &AlertRule,
) -> Option<Alert> {
    plan_alert(model, batch, scored, rule).map(|plan| plan.build(model, batch, scored))
}

/// Whether a batch raises an alert and which records it keeps, decided before any of them is
/// built, so the memory they will take can be charged first ([`AlertPlan::bytes`]).
pub struct AlertPlan<'r> {
    rule: &'r AlertRule,
    summary: BatchSummary,
    reasons: Vec<String>,
    /// The records kept, most anomalous first, with the entity each is about (all `None` for a
    /// batch alert).
    candidates: Vec<usize>,
    entities: Vec<Option<String>>,
    /// The entities (and their records) left out past [`AlertRule::max_entities`].
    omitted: Option<Omitted>,
}

/// The alert `rule` raises for a scored batch, if any, as an [`AlertPlan`].
pub fn plan_alert<'r>(
    model: &Model,
    batch: &Batch,
    scored: &ScoredBatch,
    rule: &'r AlertRule,
) -> Option<AlertPlan<'r>> {
    // Suppressed records do not count: the decision is the one the batch without them gets.
    let kept_summary;
    let s = if scored.suppressed.is_empty() {
        &scored.summary
    } else {
        let kept: Vec<f64> = (0..batch.len())
            .filter(|&i| scored.suppressed.of(i).is_none())
            .map(|i| scored.scores[i])
            .collect();
        kept_summary = model.summarize(&kept);
        &kept_summary
    };
    let by_rate = s.anomaly_rate > rule.rate;
    let by_severity = s.max_severity >= rule.severity;
    if !by_rate && !by_severity {
        return None;
    }
    let mut reasons = Vec::new();
    if by_rate {
        reasons.push(format!(
            "anomaly rate {:.2}% exceeds {:.2}%",
            s.anomaly_rate * 100.0,
            rule.rate * 100.0
        ));
    }
    if by_severity {
        reasons.push(format!(
            "a record reached severity {} (alert at {})",
            s.max_severity, rule.severity
        ));
    }
    let mut candidates: Vec<usize> = (0..batch.len())
        .filter(|&i| {
            (scored.is_anomaly(i)
                || crate::detector::severity::severity(scored.scores[i]) >= rule.severity)
                && scored.suppressed.of(i).is_none()
        })
        .collect();
    candidates.sort_by(|&a, &b| {
        scored.scores[b]
            .total_cmp(&scored.scores[a])
            .then(a.cmp(&b))
    });
    // The entity each candidate is about: when every one names one, the alert is those
    // entities' incident updates, and each entity keeps its own most anomalous records.
    let entities: Vec<Option<&str>> = candidates
        .iter()
        .map(|&i| batch.echo.field(i, &rule.entity_field))
        .map(|e| e.filter(|e| !e.is_empty()))
        .collect();
    let per_entity = !candidates.is_empty() && entities.iter().all(Option::is_some);
    let (candidates, entities, omitted) = if per_entity {
        let (kept, omitted) = per_entity_records(&candidates, &entities, rule);
        let (candidates, entities) = kept
            .into_iter()
            .map(|(i, e)| (i, Some(e.to_owned())))
            .unzip();
        (candidates, entities, omitted)
    } else {
        let n = candidates.len().min(rule.top_records);
        (candidates[..n].to_vec(), vec![None; n], None)
    };
    if let Some(o) = &omitted {
        reasons.push(format!(
            "{} more anomalous entities ({} records) left out past --max-alert-entities {}",
            o.entities, o.records, rule.max_entities
        ));
    }
    Some(AlertPlan {
        rule,
        summary: s.clone(),
        reasons,
        candidates,
        entities,
        omitted,
    })
}

/// The records an alert of entities keeps: each entity's most anomalous (at most
/// `--alert-top-records`) of the first [`AlertRule::max_entities`] entities by their most
/// anomalous record (`candidates` come most anomalous first, ties by index, so the choice is
/// deterministic); and what was left out of the others, if any.
fn per_entity_records<'b>(
    candidates: &[usize],
    entities: &[Option<&'b str>],
    rule: &AlertRule,
) -> (Vec<(usize, &'b str)>, Option<Omitted>) {
    let mut kept: HashMap<&str, usize> = HashMap::new();
    let mut left_out: HashSet<&str> = HashSet::new();
    let mut omitted = Omitted::default();
    let mut records = Vec::new();
    for (&i, e) in candidates.iter().zip(entities) {
        let e = e.unwrap_or_default();
        if kept.len() >= rule.max_entities && !kept.contains_key(e) {
            omitted.entities += u64::from(left_out.insert(e));
            omitted.records += 1;
            continue;
        }
        let n = kept.entry(e).or_default();
        *n += 1;
        if *n <= rule.top_records {
            records.push((i, e));
        }
    }
    (records, (omitted.entities > 0).then_some(omitted))
}

impl AlertPlan<'_> {
    /// What the alert will hold in memory until it is stored, held against the memory budget
    /// before any of it is built: its records (at most `--alert-top-records` per entity) with
    /// their values, fields and explanations, and each entity's incident update split from it.
    /// Measured: a Zeek log of 100,000 new hosts, one window each, peaked at 10.5-12.8 KiB per
    /// entity (BENCHMARKS.md, "Zeek state charged to the memory budget"); 8 + 8 KiB leaves a
    /// margin over that.
    pub fn bytes(&self) -> u64 {
        const PER_RECORD: u64 = 8 << 10;
        const PER_ENTITY: u64 = 8 << 10;
        let entities: std::collections::HashSet<Option<&str>> =
            self.entities.iter().map(Option::as_deref).collect();
        self.candidates.len() as u64 * PER_RECORD + entities.len() as u64 * PER_ENTITY
    }

    /// The alert, its records explained (those the batch's answer did not explain are
    /// explained here, together).
    pub fn build(self, model: &Model, batch: &Batch, scored: &ScoredBatch) -> Alert {
        let AlertPlan {
            rule,
            summary: s,
            reasons,
            candidates,
            entities,
            omitted,
        } = self;
        let unexplained: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&i| scored.explanation(i).is_none())
            .collect();
        // Explained together in chunks on the rayon pool, as `scored_batch` explains (a CSV
        // answer explains nothing, so a large alert explains all of its records here).
        let extra: Vec<Vec<FeatureContribution>> = if unexplained.len() <= EXPLAIN_CHUNK {
            explain_rows(model, batch, &unexplained, rule.explain_top_k)
        } else {
            unexplained
                .par_chunks(EXPLAIN_CHUNK)
                .flat_map_iter(|rows| explain_rows(model, batch, rows, rule.explain_top_k))
                .collect()
        };
        let mut extra = extra.into_iter();
        let explanations: Vec<Vec<FeatureContribution>> = candidates
            .iter()
            .map(|&i| match scored.explanation(i) {
                Some(e) => e.clone(),
                None => extra
                    .next()
                    .expect("one explanation per unexplained record"),
            })
            .collect();
        let record = |((&i, entity), explanation): ((&usize, Option<String>), _)| AlertRecord {
            index: i,
            timestamp: batch.timestamps.owned(i),
            score: scored.scores[i],
            severity: crate::detector::severity::severity(scored.scores[i]),
            values: batch
                .features
                .iter()
                .cloned()
                .zip(batch.matrix.row(i).iter().copied())
                .collect(),
            fields: alert_fields(&batch.echo, i),
            explanation,
            entity,
        };
        let records: Vec<AlertRecord> = if candidates.len() <= EXPLAIN_CHUNK {
            candidates
                .iter()
                .zip(entities)
                .zip(explanations)
                .map(record)
                .collect()
        } else {
            candidates
                .par_iter()
                .zip(entities)
                .zip(explanations)
                .map(record)
                .collect()
        };
        let now = Utc::now();
        let mut alert = Alert::new(
            now,
            model.version(),
            s.max_severity,
            reasons.join("; "),
            s,
            records,
        );
        alert.policy = Some(rule.incidents);
        alert.omitted = omitted;
        alert
    }

    /// What the alert will leave out past `--max-alert-entities`, if anything.
    pub fn omitted(&self) -> Option<Omitted> {
        self.omitted
    }

    /// Logs (once per request or call) and counts what the alert of `detector` leaves out.
    pub fn note_omitted(&self, detector: &str) {
        if let Some(o) = self.omitted {
            tracing::warn!(
                detector,
                entities_omitted = o.entities,
                records_omitted = o.records,
                max_alert_entities = self.rule.max_entities,
                "an alert named more anomalous entities than --max-alert-entities: the others were left out of it and of the store (still scored and answered)"
            );
            crate::monitoring::alert_entities_omitted(detector, o.entities, o.records);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_keeps_the_first_entities_by_their_best_record_and_counts_the_rest() {
        let rule = AlertRule {
            top_records: 2,
            max_entities: 2,
            ..AlertRule::from_settings(&crate::config::Settings::default())
        };
        // Candidates come most anomalous first (ties by index): b's best record outranks c's.
        let candidates = [4, 1, 7, 2, 9, 3, 5];
        let entities = ["a", "b", "a", "c", "a", "b", "d"].map(Some);
        let (kept, omitted) = per_entity_records(&candidates, &entities, &rule);
        assert_eq!(kept, vec![(4, "a"), (1, "b"), (7, "a"), (3, "b")]);
        assert_eq!(
            omitted,
            Some(Omitted {
                entities: 2,
                records: 2
            })
        );
        let rule = AlertRule {
            max_entities: 4,
            ..rule
        };
        assert_eq!(per_entity_records(&candidates, &entities, &rule).1, None);
    }
}
