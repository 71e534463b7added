//! Model files with entity baselines written before weekly bands became day profiles (format
//! 2, one bucket per hour of the week) still load and score exactly as they did.
//!
//! `tests/fixtures/baselines/{daily,weekly}-format2.model` were written by main at 5cec3a2:
//! `Model::fit_entity` on `GeneratorConfig::network(4, 9, 0.02, 3)`'s first eight days
//! (`src_ip` the entity; 3 trees of 16 samples, trained at 2026-11-30T16:00:00Z), and
//! `*.scores.json` holds that build's `score_entities` of the ninth day.

use std::path::PathBuf;

use chrono::TimeDelta;
use netsentinel::detector::Matrix;
use netsentinel::detector::baseline::Seasonality;
use netsentinel::detector::generator::{GeneratorConfig, generate};
use netsentinel::detector::model::{FORMAT_VERSION, FORMAT_VERSION_HOURS_OF_WEEK, Model};

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

fn scores_of(model: &Model) -> Vec<f64> {
    let cfg = GeneratorConfig::network(4, 9, 0.02, 3);
    let split = cfg.start + TimeDelta::days(8);
    let records: Vec<_> = generate(&cfg)
        .unwrap()
        .into_iter()
        .filter(|r| r.timestamp >= split)
        .collect();
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
fn entity_models_of_format_2_load_and_score_as_they_did() {
    for (name, seasonality) in [
        ("daily", Seasonality::Daily),
        ("weekly", Seasonality::Weekly),
    ] {
        let bytes = fixture(&format!("{name}-format2.model"));
        assert_eq!(format_of(&bytes), FORMAT_VERSION_HOURS_OF_WEEK);
        let expected: Vec<f64> =
            serde_json::from_slice(&fixture(&format!("{name}-format2.scores.json"))).unwrap();
        let model = Model::from_bytes(&bytes).unwrap();
        let e = model.entity().expect("an entity model");
        assert_eq!(e.baselines.seasonality(), seasonality);
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
