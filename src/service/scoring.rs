//! Scoring a batch: read it (scoring chunks while the rest arrives), score and explain it, decide
//! its alert, store the alert with its deliveries, notify, count, and keep the chart data.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use futures_util::Stream;

use super::ServiceError;
use super::idempotency::KeyedRun;
use super::suppression::{self, Marks};
use crate::detector::baseline::Judged;
use crate::detector::explain::FeatureContribution;
use crate::detector::model::{BatchSummary, Model};
use crate::detector::{Matrix, SEQUENTIAL_RECORDS};
use crate::records::read::BodyChunk;
use crate::records::zeek::Rejects;
use crate::records::{
    Batch, BodyFormat, ChunkSink, Parsed, ReadSpec, RecordError, RecordErrorKind, ZeekOptions,
    read_stream,
};
use crate::state::{AppState, ChartData, DetectorState};
use crate::store::alerts::{Alert, NewAlert};
use crate::store::idempotency::KeyRecord;

mod alert;

pub use alert::{
    AlertPlan, AlertRule, FIELDS_LEFT_OUT, MAX_ALERT_RECORD_FIELDS, alert_for, plan_alert,
};

/// Which records get an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExplainMode {
    /// Only records flagged anomalous (the default; explanations cost a tree walk per record).
    #[default]
    #[serde(alias = "true")]
    Anomalies,
    /// Every record.
    All,
    /// None.
    #[serde(alias = "false")]
    None,
}

/// A batch after scoring.
#[derive(Debug, Clone)]
pub struct ScoredBatch {
    pub scores: Vec<f64>,
    pub summary: BatchSummary,
    /// (record index, explanation) for the records explained, by index: a batch scored
    /// without explanations costs nothing per record here.
    pub explanations: Vec<(usize, Vec<FeatureContribution>)>,
    /// With entity baselines: for each record, whether it was judged against the global
    /// baseline because its entity was unseen in training or had too little history (empty
    /// for a model without entity baselines).
    pub global_fallback: Vec<bool>,
    /// The records a suppression rule matched (empty until [`super::suppression::mark`] ran):
    /// still scored and answered, they raise nothing.
    pub suppressed: Marks,
}

impl ScoredBatch {
    pub fn is_anomaly(&self, i: usize) -> bool {
        self.scores[i] > self.summary.threshold
    }

    /// Whether record `i` was judged against the global baseline in place of its entity's.
    pub fn is_global_fallback(&self, i: usize) -> bool {
        self.global_fallback.get(i).copied().unwrap_or(false)
    }

    /// Record `i`'s explanation, when it was explained.
    pub fn explanation(&self, i: usize) -> Option<&Vec<FeatureContribution>> {
        self.explanations
            .binary_search_by_key(&i, |(j, _)| *j)
            .ok()
            .map(|k| &self.explanations[k].1)
    }
}

/// Records explained together (one task of the rayon pool) in larger batches.
const EXPLAIN_CHUNK: usize = 512;

/// Scores every record and explains those `mode` asks for.
pub fn score_batch(model: &Model, batch: &Batch, mode: ExplainMode, top_k: usize) -> ScoredBatch {
    // A model with entity baselines scores inside `scored_batch`: the forest's would be dropped.
    let scores = match model.entity() {
        Some(_) => Vec::new(),
        None => model.score(&batch.matrix),
    };
    scored_batch(model, batch, scores, mode, top_k)
}

/// Each record's entity (the model's entity field; `""` when the record has none) and time
/// (the Unix epoch when the batch has no timestamp on every record).
pub(super) fn entities_and_times(batch: &Batch, field: &str) -> (Vec<String>, Vec<DateTime<Utc>>) {
    let entities = (0..batch.len())
        .map(|i| {
            batch
                .echo
                .field(i, field)
                .map_or_else(String::new, str::to_owned)
        })
        .collect();
    let times = batch
        .parsed_times
        .clone()
        .unwrap_or_else(|| vec![DateTime::<Utc>::UNIX_EPOCH; batch.len()]);
    (entities, times)
}

/// A model with seasonal entity baselines judges each record at its hour: a batch where some
/// record has no timestamp is refused (422 `invalid-records`, field `timestamp`) rather than
/// judged at a made-up hour.
fn check_times(model: &Model, batch: &Batch) -> Result<(), ServiceError> {
    let seasonal = model
        .entity()
        .map(|p| p.baselines.seasonality())
        .filter(|s| *s != crate::detector::baseline::Seasonality::None);
    match seasonal {
        Some(s) if batch.parsed_times.is_none() => Err(ServiceError::Records(RecordError {
            field: Some("timestamp".into()),
            ..RecordError::new(
                RecordErrorKind::InvalidRecords,
                format!(
                    "the model's entity baselines are seasonal ({}): every record needs a \
                     timestamp (RFC 3339) to be judged against its entity's usual traffic at \
                     that hour",
                    serde_json::json!(s).as_str().unwrap_or("seasonal")
                ),
            )
        })),
        _ => Ok(()),
    }
}

/// Explains the records of `batch` at `rows`: in their entity's terms with entity baselines.
fn explain_rows(
    model: &Model,
    batch: &Batch,
    rows: &[usize],
    top_k: usize,
) -> Vec<Vec<FeatureContribution>> {
    match model.entity() {
        None => model.explain_rows(&batch.matrix, rows, top_k),
        Some(part) => {
            let (entities, times) = entities_and_times(batch, &part.field);
            rows.iter()
                .map(|&i| model.explain_entity(batch.matrix.row(i), &entities[i], times[i], top_k))
                .collect()
        }
    }
}

/// [`score_batch`] with the records' scores already computed (while the body was parsed); a
/// model with entity baselines scores the batch here (its records' entities and times), and
/// `scores` is not read.
pub fn scored_batch(
    model: &Model,
    batch: &Batch,
    scores: Vec<f64>,
    mode: ExplainMode,
    top_k: usize,
) -> ScoredBatch {
    let (scores, global_fallback) = match model.entity() {
        None => (scores, Vec::new()),
        Some(part) => {
            let (entities, times) = entities_and_times(batch, &part.field);
            let keys: Vec<&str> = entities.iter().map(String::as_str).collect();
            let (scores, judged) = model.score_entities(&batch.matrix, &keys, &times);
            let fallback = judged
                .into_iter()
                .map(|j| j == Judged::GlobalFallback)
                .collect();
            (scores, fallback)
        }
    };
    debug_assert_eq!(scores.len(), batch.len());
    let summary = model.summarize(&scores);
    let wanted: Vec<usize> = match mode {
        ExplainMode::None => Vec::new(),
        ExplainMode::All => (0..batch.len()).collect(),
        ExplainMode::Anomalies => (0..batch.len())
            .filter(|&i| model.is_anomaly(scores[i]))
            .collect(),
    };
    let explain = |rows: &[usize]| {
        let explained = explain_rows(model, batch, rows, top_k);
        rows.iter().copied().zip(explained).collect::<Vec<_>>()
    };
    let explanations = if batch.len() <= SEQUENTIAL_RECORDS {
        explain(&wanted)
    } else {
        wanted
            .par_chunks(EXPLAIN_CHUNK)
            .flat_map_iter(explain)
            .collect()
    };
    ScoredBatch {
        scores,
        summary,
        explanations,
        global_fallback,
        suppressed: Marks::default(),
    }
}

/// What to score: the body's format and how to read and explain it.
#[derive(Debug, Clone, Copy)]
pub struct ScoreCommand {
    pub format: BodyFormat,
    pub zeek: ZeekOptions,
    pub explain: ExplainMode,
    /// The answer's media type, as an idempotency key's record keeps it.
    pub answer_type: &'static str,
    /// Whether the answer shows the alert (a CSV answer does not): when not, the alert is
    /// stored without previewing its incident for the answer.
    pub shows_alert: bool,
}

/// A scored batch with what it raised, and what the caller rendered of it while it was hot.
pub struct ScoreOutcome<R> {
    pub model_version: u64,
    pub batch: Batch,
    pub scored: ScoredBatch,
    /// The alert the batch raised, as the answer shows it: the entity's incident with this
    /// batch folded in (or the new one it opens), or a batch alert. Already stored. `None` too
    /// when the answer does not show it ([`ScoreCommand::shows_alert`]).
    pub alert: Option<Alert>,
    /// The alert as raised, before it joined its incident: what the store folds in (moved
    /// to the store by [`score`], so `None` once it returns).
    pub raised: Option<Alert>,
    pub rendered: R,
    /// The Zeek lines skipped (only with `on_invalid: skip`).
    pub rejects: Rejects,
}

/// Scores a body with the detector's active model. `render` runs on the parser's blocking thread right
/// after scoring (one trip off the async runtime per request), before the alert is stored; it
/// gives the whole answer, or `None` when the answer will stream.
///
/// With an idempotency `key`, the key's record (the rendered answer) commits with the alert and
/// its deliveries, or on its own when the batch raised none; a key kept meanwhile fails with
/// `StoreError::KeyTaken` and nothing of this request is kept.
pub async fn score<S, F>(
    state: &AppState,
    det: &DetectorState,
    command: ScoreCommand,
    body: S,
    key: Option<KeyedRun>,
    render: F,
) -> Result<ScoreOutcome<Option<Vec<u8>>>, ServiceError>
where
    S: Stream<Item = BodyChunk> + Unpin,
    F: FnOnce(&Batch, &ScoredBatch, Option<&Alert>, u64, &Rejects) -> Option<Vec<u8>>
        + Send
        + 'static,
{
    let model = det.model().ok_or(ServiceError::NoModel)?;
    let started = std::time::Instant::now();
    let settings = state.settings();
    let mut rule = AlertRule::for_detector(settings, &det.spec());
    // A model with entity baselines knows which field names a record's entity (its fit's
    // `group_by`): incidents and suppression rules go by it too.
    if let Some(entity) = model.entity() {
        rule.entity_field = entity.field.clone();
    }
    let detector = det.name().to_owned();
    let rules = suppression::active(state).await?;
    let spec = ReadSpec {
        zeek: command.zeek,
        ..ReadSpec::new(
            command.format,
            Some(model.features().to_vec()),
            settings.max_records,
        )
    };
    // A model with entity baselines scores the whole batch at the end (it needs each record's
    // entity and time); the forest's chunk scores would be thrown away.
    let entity = model.entity().is_some();
    let (sink, chunks) = ChunkScores::new(&model);
    let alerts = state.alerts();
    let sink = (!entity).then_some(sink);
    let version = model.version();
    let (outcome, chart) = read_stream(body, settings.max_body_bytes, spec, sink, move |parsed| {
        let Parsed {
            mut batch,
            sunk,
            rejects,
        } = parsed;
        let mut phases = Phases::new(started);
        let scores = if entity {
            Vec::new()
        } else {
            let Some(scores) = chunks.finish(&batch, sunk) else {
                return Err(ServiceError::Cancelled);
            };
            scores
        };
        phases.mark("score");
        check_times(&model, &batch)?;
        let mut scored = scored_batch(&model, &batch, scores, command.explain, rule.explain_top_k);
        phases.mark("explain");
        scored.suppressed = suppression::mark(&rules, &detector, &rule.entity_field, &batch);
        // The alert's memory is charged before its records are built.
        let plan = plan_alert(&model, &batch, &scored, &rule);
        if let Some(plan) = &plan {
            crate::work::reserve(plan.bytes())?;
            plan.note_omitted(&detector);
        }
        phases.mark("alert plan");
        let raised = plan.map(|p| Alert {
            detector,
            ..p.build(&model, &batch, &scored)
        });
        phases.mark("alert");
        let alert = raised
            .as_ref()
            .filter(|_| command.shows_alert)
            .map(|a| crate::store::incidents::preview(alerts.as_ref(), a));
        phases.mark("incident preview");
        let rendered = render(&batch, &scored, alert.as_ref(), version, &rejects);
        phases.mark("render");
        let anomalies = (0..batch.len()).map(|i| scored.is_anomaly(i)).collect();
        let chart = chart_data(version, &mut batch, anomalies);
        phases.log(batch.len());
        let outcome = ScoreOutcome {
            model_version: version,
            batch,
            scored,
            alert,
            raised,
            rendered,
            rejects,
        };
        Ok((outcome, chart))
    })
    .await??;
    let mut outcome = outcome;
    let record = key.as_ref().map(|k| {
        let body = outcome.rendered.as_deref();
        k.record(200, command.answer_type, Vec::new(), body)
    });
    // The alert as raised goes to the store as it is (a million-line Zeek body raises one
    // with thousands of explained records: copying it cost more than storing it).
    let storing = std::time::Instant::now();
    let alerted = outcome.raised.is_some();
    match (outcome.raised.take(), record, &key) {
        (Some(alert), record, _) => raise(state, alert, record).await?,
        (None, Some(record), Some(key)) => key.keep(record).await?,
        _ => {}
    }
    tracing::debug!(
        store_ms = storing.elapsed().as_millis() as u64,
        "batch's alert and key stored"
    );
    outcome.scored.suppressed.count(det.name());
    crate::monitoring::batch_scored(
        outcome.scored.summary.n_records,
        outcome.scored.summary.n_anomalies,
        alerted,
    );
    det.set_last_batch(chart);
    Ok(outcome)
}

/// When each step of a scored request ended, for the debug log: where a long request's time
/// went (reading ends when the records are built; the first step is the body read).
struct Phases {
    started: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, u64)>,
}

impl Phases {
    fn new(started: std::time::Instant) -> Self {
        let now = std::time::Instant::now();
        Self {
            started,
            last: now,
            steps: vec![("read", (now - started).as_millis() as u64)],
        }
    }

    fn mark(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.steps
            .push((step, (now - self.last).as_millis() as u64));
        self.last = now;
    }

    fn log(&self, records: usize) {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(s, ms)| format!("{s} {ms}"))
            .collect();
        tracing::debug!(
            records,
            total_ms = self.started.elapsed().as_millis() as u64,
            steps_ms = %steps.join(", "),
            "batch scored"
        );
    }
}

/// Stores an alert and the deliveries it owes (and the request's idempotency key) in one commit, then wakes the deliverers: an
/// alert a client has seen is always pushed too.
async fn raise(state: &AppState, alert: Alert, key: Option<KeyRecord>) -> Result<(), ServiceError> {
    let store = state.alerts();
    let sinks = state.webhooks().sink_names().to_vec();
    let (id, severity, reason) = (alert.id.clone(), alert.severity, alert.reason.clone());
    // Moved, not copied, to the blocking thread, where it is also dropped.
    super::blocking(move || {
        Ok(store.insert_keyed(NewAlert {
            alert: std::borrow::Cow::Owned(alert),
            sinks: &sinks,
            key: key.as_ref(),
        })?)
    })
    .await?;
    state.webhooks().alert_stored();
    tracing::warn!(alert = %id, severity, reason = %reason, "alert raised");
    Ok(())
}

/// Scores of chunks scored on the rayon pool while the rest of the body is still read.
struct ChunkScores {
    model: Arc<Model>,
    rx: std::sync::mpsc::Receiver<(usize, Vec<f64>)>,
}

impl ChunkScores {
    /// A sink that scores each chunk it gets, and what gathers the chunks' scores.
    fn new(model: &Arc<Model>) -> (ChunkSink, ChunkScores) {
        let (tx, rx) = std::sync::mpsc::channel();
        let m = model.clone();
        let d = model.features().len();
        // The request's work, held by each chunk's task on the rayon pool (where it cannot be
        // found): the task counts against the request's slot until it ends, and stops when
        // the request is cancelled.
        let work = crate::work::current();
        let sink: ChunkSink = Box::new(move |first, rows| {
            let (m, tx, rows, work) = (m.clone(), tx.clone(), rows.to_vec(), work.clone());
            rayon::spawn(move || {
                let mut out = vec![0.0; rows.len() / d];
                let stop = || work.as_ref().is_some_and(crate::work::Work::is_cancelled);
                if m.score_watched(&rows, &mut out, &stop) {
                    let _ = tx.send((first, out));
                } else if let Some(w) = &work {
                    w.note_stopped();
                }
            });
        });
        (
            sink,
            ChunkScores {
                model: model.clone(),
                rx,
            },
        )
    }

    /// Scores the records after the first `sunk` and gathers the chunks' scores; `None` when
    /// the request was cancelled meanwhile (the scoring stopped at its next block).
    fn finish(self, batch: &Batch, sunk: usize) -> Option<Vec<f64>> {
        let d = batch.matrix.n_cols();
        let mut scores = vec![0.0; batch.len()];
        let rest = &batch.matrix.as_slice()[sunk * d..];
        if !self
            .model
            .score_watched(rest, &mut scores[sunk..], &crate::work::cancelled)
        {
            return None;
        }
        // Every sender is gone once the builder is and the spawned chunks are done (a chunk
        // that stopped sends nothing).
        let mut gathered = 0;
        for (first, chunk) in self.rx.iter() {
            scores[first..first + chunk.len()].copy_from_slice(&chunk);
            gathered += chunk.len();
        }
        (gathered == sunk).then_some(scores)
    }
}

/// The first four features of a batch, with its anomalies, for the chart.
///
/// The batch's parsed timestamps move into the chart data (a million records: 12 MB not copied),
/// so call this last: afterwards the batch has none.
pub fn chart_data(model_version: u64, batch: &mut Batch, anomalies: Vec<bool>) -> ChartData {
    let d = batch.features.len().min(4);
    let values = if d == batch.matrix.n_cols() {
        Arc::clone(&batch.matrix)
    } else {
        let m = &batch.matrix;
        let kept = m.rows().flat_map(|r| r[..d].iter().copied()).collect();
        Arc::new(Matrix::new(m.n_rows(), d, kept).expect("the first d columns of a valid matrix"))
    };
    ChartData {
        model_version,
        features: batch.features[..d].to_vec(),
        values,
        timestamps: batch.parsed_times.take(),
        anomalies,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::detector::model::Model;
    use crate::detector::params::ForestParams;
    use crate::records::{BodyFormat, ReadSpec, read_slice};

    /// Records as a batch, the default features chosen.
    pub(crate) fn json_batch(records: Vec<serde_json::Value>) -> Batch {
        let body = serde_json::to_vec(&records).unwrap();
        let spec = ReadSpec::new(BodyFormat::Json, None, records.len().max(1));
        read_slice(&body, &spec, None).unwrap().batch
    }

    /// A model with the default parameters fitted on `batch`.
    pub(crate) fn fitted(batch: &Batch) -> Model {
        let now = chrono::Utc::now();
        Model::fit(
            &batch.matrix,
            batch.features.clone(),
            &ForestParams::default(),
            now,
        )
        .unwrap()
    }

    fn batch(n_features: usize) -> Batch {
        let records: Vec<serde_json::Value> = (0..10)
            .map(|i| {
                let mut r = serde_json::Map::new();
                for j in 0..n_features {
                    r.insert(format!("f{j}"), serde_json::json!(i * 10 + j));
                }
                serde_json::Value::Object(r)
            })
            .collect();
        json_batch(records)
    }

    #[test]
    fn chart_data_shares_a_narrow_batch_and_copies_four_columns_of_a_wide_one() {
        let mut narrow = batch(3);
        let chart = chart_data(1, &mut narrow, vec![false; 10]);
        assert!(Arc::ptr_eq(&chart.values, &narrow.matrix), "no copy");
        assert_eq!(
            chart.series()[2],
            narrow.matrix.column(2).collect::<Vec<_>>()
        );

        let mut wide = batch(6);
        let chart = chart_data(1, &mut wide, vec![false; 10]);
        assert_eq!(chart.features, wide.features[..4].to_vec());
        assert_eq!(chart.values.n_cols(), 4);
        let series = chart.series();
        assert_eq!(series.len(), 4);
        for (j, s) in series.iter().enumerate() {
            assert_eq!(*s, wide.matrix.column(j).collect::<Vec<_>>(), "column {j}");
        }
    }

    #[test]
    fn explanations_together_equal_one_at_a_time() {
        // More records than SEQUENTIAL_RECORDS, so the rayon path is taken too.
        let make = |n: usize| {
            let records: Vec<serde_json::Value> = (0..n)
                .map(|i| {
                    let spike = if i % 97 == 0 { 50.0 } else { 1.0 };
                    serde_json::json!({
                        "a": (i * 31 % 101) as f64 * spike,
                        "b": (i * 17 % 53) as f64,
                        "c": (i % 7) as f64,
                    })
                })
                .collect();
            json_batch(records)
        };
        let big = make(SEQUENTIAL_RECORDS + 904);
        let small = make(300);
        let model = fitted(&big);
        for (batch, mode) in [
            (&big, ExplainMode::Anomalies),
            (&big, ExplainMode::All),
            (&small, ExplainMode::All),
        ] {
            let scored = score_batch(&model, batch, mode, 2);
            let expected: Vec<usize> = (0..batch.matrix.n_rows())
                .filter(|&i| mode == ExplainMode::All || scored.is_anomaly(i))
                .collect();
            let got: Vec<usize> = scored.explanations.iter().map(|(i, _)| *i).collect();
            assert_eq!(got, expected);
            assert!(!expected.is_empty());
            for (i, e) in &scored.explanations {
                assert_eq!(*e, model.explain(batch.matrix.row(*i), 2), "record {i}");
            }
        }
    }
}
