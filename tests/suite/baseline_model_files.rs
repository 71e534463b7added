//! Model files with entity baselines written by earlier builds still load and score exactly as
//! they did: format 2 (before weekly bands became day profiles, one bucket per hour of the
//! week), format 3 (day profiles, before activity classes: the root sum of squares) and format
//! 4 (activity classes, before the matched test of the activity rising alone).
//!
//! `tests/fixtures/baselines/{daily,weekly}-format2.model` were written by main at 5cec3a2,
//! `*-format3.model` by main at 4807a28, `*-format4.model` by main at eb1b6a3:
//! `Model::fit_entity` on
//! `GeneratorConfig::network(4, 9, 0.02, 3)`'s first eight days (`src_ip` the entity; features
//! bytes_sent, bytes_received, connections, active_sessions; 3 trees of 16 samples, trained
//! at 2026-11-30T16:00:00Z), and `*.scores.json` holds that build's `score_entities` of the
//! ninth day.

use std::path::PathBuf;

use chrono::{TimeDelta, TimeZone, Utc};
use netsentinel::detector::Matrix;
use netsentinel::detector::baseline::Seasonality;
use netsentinel::detector::forest::Unwatched;
use netsentinel::detector::generator::{GeneratorConfig, generate};
use netsentinel::detector::model::{
    EntityInput, FORMAT_VERSION, FORMAT_VERSION_ACTIVITY_CLASSES, FORMAT_VERSION_DAY_PROFILES,
    FORMAT_VERSION_HOURS_OF_WEEK, FitInput, Model,
};
use netsentinel::detector::params::{ForestParams, MaxSamples};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/baselines")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The file's format number (after the 8 magic bytes).
fn format_of(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[8..12].try_into().unwrap())
}

/// The fixtures' records: the first eight days (`true`) or the ninth.
fn records(training: bool) -> Vec<netsentinel::detector::generator::SampleRecord> {
    let cfg = GeneratorConfig::network(4, 9, 0.02, 3);
    let split = cfg.start + TimeDelta::days(8);
    generate(&cfg)
        .unwrap()
        .into_iter()
        .filter(|r| (r.timestamp < split) == training)
        .collect()
}

fn scores_of(model: &Model) -> Vec<f64> {
    let records = records(false);
    let rows: Vec<[f64; 4]> = records.iter().map(|r| r.features()).collect();
    let x = Matrix::from_rows(&rows).unwrap();
    let entities: Vec<&str> = records
        .iter()
        .map(|r| r.src_ip.as_deref().unwrap())
        .collect();
    let times: Vec<_> = records.iter().map(|r| r.timestamp).collect();
    model.score_entities(&x, &entities, &times).0
}

#[test]
fn entity_models_of_formats_2_3_and_4_load_and_score_as_they_did() {
    for (name, seasonality, format) in [
        ("daily", Seasonality::Daily, 2),
        ("weekly", Seasonality::Weekly, 2),
        ("daily", Seasonality::Daily, 3),
        ("weekly", Seasonality::Weekly, 3),
        ("daily", Seasonality::Daily, 4),
        ("weekly", Seasonality::Weekly, 4),
    ] {
        let name = &format!("{name}-format{format}");
        let bytes = fixture(&format!("{name}.model"));
        let expected_format = match format {
            2 => FORMAT_VERSION_HOURS_OF_WEEK,
            3 => FORMAT_VERSION_DAY_PROFILES,
            _ => FORMAT_VERSION_ACTIVITY_CLASSES,
        };
        assert_eq!(format_of(&bytes), expected_format);
        let expected: Vec<f64> =
            serde_json::from_slice(&fixture(&format!("{name}.scores.json"))).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        let e = model.entity().expect("an entity model");
        assert_eq!(e.baselines.seasonality(), seasonality);
        assert_eq!(e.baselines.has_activity_classes(), format == 4, "{name}");
        assert!(!e.baselines.has_matched_test(), "{name}");
        assert_eq!(e.baselines.n_entities(), 4);
        let scores = scores_of(&model);
        assert_eq!(scores.len(), 4 * 288);
        assert!(
            scores.iter().any(|&s| s > 0.5) && scores.iter().any(|&s| s < 0.2),
            "{name}: the ninth day holds attacks and ordinary windows"
        );
        assert_eq!(
            scores, expected,
            "{name}: scores as the build that wrote it"
        );
        // Saved again, it is written in today's format and still scores the same.
        let again = model.to_bytes();
        assert_eq!(format_of(&again), FORMAT_VERSION);
        assert_eq!(scores_of(&Model::from_bytes(&again).unwrap()), expected);
    }
}

/// A fit today (same data and settings as the fixtures) writes format 5 with activity classes
/// and the matched test, reads back scoring the same, and ranks records otherwise than the
/// format-3 and format-4 builds did.
#[test]
fn new_entity_models_are_format_5_with_the_matched_test() {
    let train = records(true);
    let rows: Vec<[f64; 4]> = train.iter().map(|r| r.features()).collect();
    let x = Matrix::from_rows(&rows).unwrap();
    let entities: Vec<&str> = train.iter().map(|r| r.src_ip.as_deref().unwrap()).collect();
    let times: Vec<_> = train.iter().map(|r| r.timestamp).collect();
    let params = ForestParams {
        n_estimators: 3,
        max_samples: MaxSamples::Count(16),
        ..ForestParams::default()
    };
    for (name, seasonality) in [
        ("daily", Seasonality::Daily),
        ("weekly", Seasonality::Weekly),
    ] {
        let (model, _) = Model::fit_entity(
            FitInput {
                x: &x,
                features: [
                    "bytes_sent",
                    "bytes_received",
                    "connections",
                    "active_sessions",
                ]
                .map(String::from)
                .to_vec(),
                params: &params,
                fixed_threshold: None,
                trained_at: Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap(),
                watch: &Unwatched,
            },
            EntityInput {
                field: "src_ip",
                entities: &entities,
                times: &times,
                seasonality,
            },
        )
        .unwrap();
        assert!(model.entity().unwrap().baselines.has_activity_classes());
        assert!(model.entity().unwrap().baselines.has_matched_test());
        let bytes = model.to_bytes();
        assert_eq!(format_of(&bytes), FORMAT_VERSION);
        assert_eq!(FORMAT_VERSION, 5);
        let scores = scores_of(&model);
        let again = Model::from_bytes(&bytes).unwrap();
        assert!(again.entity().unwrap().baselines.has_activity_classes());
        assert!(again.entity().unwrap().baselines.has_matched_test());
        assert_eq!(
            scores_of(&again),
            scores,
            "{name}: read back, scores the same"
        );
        let format3: Vec<f64> =
            serde_json::from_slice(&fixture(&format!("{name}-format3.scores.json"))).unwrap();
        let differ = scores
            .iter()
            .zip(&format3)
            .filter(|(a, b)| (*a - *b).abs() > 1e-3)
            .count();
        assert!(
            differ > scores.len() / 4,
            "{name}: activity classes change most scores ({differ} of {})",
            scores.len()
        );
        // Against format 4 (the same omnibus deviation): where the matched test decides, a
        // record's score rises relative to the others', so the order of the scores changes.
        let format4: Vec<f64> =
            serde_json::from_slice(&fixture(&format!("{name}-format4.scores.json"))).unwrap();
        let order = |v: &[f64]| {
            let mut idx: Vec<usize> = (0..v.len()).collect();
            idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]).then(a.cmp(&b)));
            idx
        };
        assert_ne!(
            order(&scores),
            order(&format4),
            "{name}: the matched test reorders some records"
        );
    }
}
