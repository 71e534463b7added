//! Properties the detector and the body parsers promise for every input, not just the examples:
//! scores in (0, 1], same seed same model, a model file that round-trips and rejects any damage,
//! severity monotonic in score, and parsers that answer Ok or a typed error to any bytes.
//!
//! Case counts are modest so the file runs in seconds; `PROPTEST_CASES` raises them for a soak.

use chrono::{TimeZone, Utc};
use netsentinel::detector::Matrix;
use netsentinel::detector::model::{MIN_TRAINING_RECORDS, Model, check_training_data};
use netsentinel::detector::params::{AutoTag, Contamination, ForestParams, MaxSamples};
use netsentinel::detector::severity::severity;
use netsentinel::error::ApiError;
// A field value as a parser may hand it to the batch builder.
use netsentinel::records::builder::{BatchBuilder, OwnedCell as Cell};
use netsentinel::records::{
    BodyFormat, Features, GroupBy, ReadSpec, RecordError, Window, ZeekOptions, read_settings,
    read_slice,
};
use proptest::prelude::*;

const MAX_RECORDS: usize = 10_000;

/// `default`, or `PROPTEST_CASES` when set (for a longer soak).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn features(d: usize) -> Vec<String> {
    (0..d).map(|j| format!("f{j}")).collect()
}

/// A training matrix of `MIN_TRAINING_RECORDS..=80` rows and `1..=4` columns, not every row the
/// same (a fit refuses those). Values range over many magnitudes, include repeats (constant
/// columns) and negatives, as traffic counters and deltas do.
fn matrix() -> impl Strategy<Value = Matrix> {
    let value = prop_oneof![
        4 => -1e6f64..1e6,
        2 => Just(0.0),
        1 => -1e12f64..1e12,
        1 => Just(42.0),
    ];
    (1usize..=4, MIN_TRAINING_RECORDS..=80)
        .prop_flat_map(move |(d, n)| {
            (
                Just(d),
                Just(n),
                prop::collection::vec(value.clone(), n * d..=n * d),
            )
        })
        .prop_map(|(d, n, data)| Matrix::new(n, d, data).expect("shape matches"))
        .prop_filter("a fit needs rows that differ", |x| {
            check_training_data(x).is_ok()
        })
}

fn params() -> impl Strategy<Value = ForestParams> {
    (
        1u64..=16,
        any::<u64>(),
        any::<bool>(),
        prop_oneof![
            Just(Contamination::Auto(AutoTag::Auto)),
            (0.01f64..=0.5).prop_map(Contamination::Fraction)
        ],
        prop_oneof![
            Just(MaxSamples::Auto(AutoTag::Auto)),
            (1u64..=64).prop_map(MaxSamples::Count)
        ],
    )
        .prop_map(
            |(n_estimators, seed, bootstrap, contamination, max_samples)| ForestParams {
                n_estimators,
                seed,
                bootstrap,
                contamination,
                max_samples,
                ..ForestParams::default()
            },
        )
}

fn fit(x: &Matrix, params: &ForestParams) -> Model {
    let trained_at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    Model::fit(x, features(x.n_cols()), params, trained_at).expect("valid data and params fit")
}

/// Rows to score with `d` columns: anywhere in f64's finite range, not only near the training data.
fn probe_rows(d: usize) -> impl Strategy<Value = Vec<f64>> {
    let value = prop_oneof![
        4 => -1e7f64..1e7,
        1 => prop::num::f64::NORMAL | prop::num::f64::ZERO | prop::num::f64::SUBNORMAL,
        1 => Just(f64::MAX),
        1 => Just(f64::MIN),
    ];
    prop::collection::vec(value, d..=8 * d).prop_map(move |mut v| {
        v.truncate(v.len() / d * d);
        v
    })
}

fn bits(scores: &[f64]) -> Vec<u64> {
    scores.iter().map(|s| s.to_bits()).collect()
}

/// A small real model and its file, built once per case from the seed generator.
fn seed_model(seed: u64, n_estimators: u64) -> Model {
    let cfg = netsentinel::detector::generator::GeneratorConfig {
        n_records: 200,
        seed,
        ..Default::default()
    };
    let rows: Vec<[f64; 4]> = netsentinel::detector::generator::generate(&cfg)
        .expect("default generator settings are valid")
        .iter()
        .map(|r| r.features())
        .collect();
    let x = Matrix::from_rows(&rows).expect("rectangular");
    fit(
        &x,
        &ForestParams {
            n_estimators,
            seed,
            ..ForestParams::default()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn scores_are_in_the_unit_interval(
        (x, probe) in matrix().prop_flat_map(|x| { let d = x.n_cols(); (Just(x), probe_rows(d)) }),
        params in params(),
    ) {
        let model = fit(&x, &params);
        let training = model.score(&x);
        let n = probe.len() / x.n_cols();
        let probe = Matrix::new(n, x.n_cols(), probe).unwrap();
        for s in training.iter().chain(model.score(&probe).iter()) {
            prop_assert!(*s > 0.0 && *s <= 1.0, "score {s} is outside (0, 1]");
        }
        prop_assert!(model.threshold() > 0.0 && model.threshold() <= 1.0);
    }

    #[test]
    fn the_same_seed_makes_the_same_model(x in matrix(), params in params()) {
        let a = fit(&x, &params);
        let b = fit(&x, &params);
        prop_assert_eq!(bits(&a.score(&x)), bits(&b.score(&x)));
        prop_assert_eq!(a.threshold().to_bits(), b.threshold().to_bits());
        // Everything but the measured fit time is identical, so the files differ only there.
        let mut meta_a = a.meta().clone();
        let mut meta_b = b.meta().clone();
        meta_a.fit_seconds = 0.0;
        meta_b.fit_seconds = 0.0;
        prop_assert_eq!(meta_a, meta_b);
    }

    #[test]
    fn a_model_file_round_trips_to_identical_scores(
        (x, probe) in matrix().prop_flat_map(|x| { let d = x.n_cols(); (Just(x), probe_rows(d)) }),
        params in params(),
        version in any::<u64>(),
    ) {
        let mut model = fit(&x, &params);
        model.set_version(version);
        let bytes = model.to_bytes();
        let back = Model::from_bytes(&bytes).expect("a file we wrote decodes");
        prop_assert_eq!(&back, &model);
        prop_assert_eq!(back.to_bytes(), bytes, "encoding is deterministic");
        let n = probe.len() / x.n_cols();
        let probe = Matrix::new(n, x.n_cols(), probe).unwrap();
        prop_assert_eq!(bits(&back.score(&x)), bits(&model.score(&x)));
        prop_assert_eq!(bits(&back.score(&probe)), bits(&model.score(&probe)));
    }

    #[test]
    fn severity_is_monotonic_in_score(a in any::<f64>(), b in any::<f64>()) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        if lo.is_finite() && hi.is_finite() {
            prop_assert!(severity(lo) <= severity(hi), "severity({lo}) > severity({hi})");
        }
        prop_assert!(severity(a) <= 100);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Any single altered byte and any truncation is an `Err`, never a panic and never a model.
    #[test]
    fn a_damaged_model_file_is_an_error(
        seed in 0u64..4,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = seed_file(seed);
        let mut flipped = bytes.clone();
        flipped[at.index(bytes.len())] ^= flip;
        prop_assert!(Model::from_bytes(&flipped).is_err());
        let truncated = &bytes[..cut.index(bytes.len())];
        prop_assert!(Model::from_bytes(truncated).is_err());
    }
}

/// The encoded seed models, made once: fitting per case would dominate the run time.
fn seed_file(seed: u64) -> Vec<u8> {
    use std::sync::OnceLock;
    static FILES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FILES.get_or_init(|| (0..4).map(|s| seed_model(s, 3).to_bytes()).collect())[seed as usize]
        .clone()
}

/// Bytes that look like a traffic body often enough to reach deep into each parser.
fn body_like() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // CSV-ish: headers, numbers in every notation, quotes, blank lines, ragged rows.
        "(timestamp|bytes_sent|label|x|\"a,b\"|[0-9eE.+-]{1,8}|NaN|inf|-inf|,|\n|\r\n|\"|;| ){0,80}"
            .prop_map(String::into_bytes),
        // JSON-ish: records with every kind of value, truncated or not.
        r#"(\[|\]|\{|\}|"records"|"bytes_sent"|"label"|"timestamp"|"2024-01-01T00:00:00Z"|:|,|[0-9eE.+-]{1,6}|null|true|\[1\]|\n){0,60}"#
            .prop_map(String::into_bytes),
    ]
}

/// Records of any shape: field names (duplicate or empty ones too) and rows of any cells,
/// shorter or longer than the names.
fn records() -> impl Strategy<Value = (Vec<String>, Vec<Vec<Cell>>)> {
    let name = prop_oneof![
        Just("timestamp".to_string()),
        Just("label".to_string()),
        Just("bytes_sent".to_string()),
        Just("bytes_received".to_string()),
        Just("connections".to_string()),
        Just("active_sessions".to_string()),
        Just(String::new()),
        "[a-z_]{1,6}",
    ];
    let cell = prop_oneof![
        Just(Cell::Missing),
        Just(Cell::Null),
        any::<f64>().prop_map(Cell::Num),
        (-1e6f64..1e6).prop_map(Cell::Num),
        Just(Cell::Num(0.0)),
        Just(Cell::Num(1.0)),
        "(2024-01-01T00:00:00Z|yesterday|[a-z]{0,4})".prop_map(Cell::Text),
        any::<bool>().prop_map(Cell::Bool),
        Just(Cell::Nested),
    ];
    (
        prop::collection::vec(name, 0..8),
        prop::collection::vec(prop::collection::vec(cell, 0..10), 0..12),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Every body reader answers Ok or a typed problem (4xx) to any bytes, with the features
    /// chosen from the records (as a fit reads) or given (as scoring reads).
    #[test]
    fn every_body_parser_answers_any_bytes(body in body_like(), max in 1usize..=MAX_RECORDS) {
        let client_error = |e: RecordError| ApiError::from(e).status.is_client_error();
        for format in [
            BodyFormat::Csv,
            BodyFormat::Ndjson,
            BodyFormat::Json,
            BodyFormat::ZeekTsv,
            BodyFormat::ZeekJson,
        ] {
            for features in [None, Some(vec!["bytes_sent".to_string(), "x".to_string()])] {
                if let Err(e) = read_slice(&body, &ReadSpec::new(format, features, max), None) {
                    prop_assert!(client_error(e.clone()), "{e}");
                }
            }
        }
        if let Err(e) = read_settings(&body) {
            prop_assert!(client_error(e.clone()), "{e}");
        }
    }

    #[test]
    fn zeek_parsers_answer_any_bytes_under_any_options(
        body in prop::collection::vec(any::<u8>(), 0..1024),
        window in 1u64..=604_800,
        group_by in prop_oneof![Just(GroupBy::None), Just(GroupBy::OrigHost), Just(GroupBy::RespHost)],
    ) {
        let zeek = ZeekOptions { window: Window::from_secs(window).unwrap(), group_by, ..ZeekOptions::default() };
        for format in [BodyFormat::ZeekTsv, BodyFormat::ZeekJson] {
            let spec = ReadSpec { zeek, ..ReadSpec::new(format, None, MAX_RECORDS) };
            if let Err(e) = read_slice(&body, &spec, None) {
                prop_assert!(ApiError::from(e.clone()).status.is_client_error(), "{e}");
            }
        }
    }

    /// Records of any shape (rows shorter or longer than the names, any cells, duplicate or
    /// empty names) become a batch or a client error in the batch builder.
    #[test]
    fn the_batch_builder_answers_any_records(
        (names, rows) in records(),
        given in prop::collection::vec("(bytes_sent|label|timestamp|[a-z]{0,3})", 0..5),
        use_given in any::<bool>(),
        require_labels in any::<bool>(),
    ) {
        let features = if use_given { Features::Given(&given) } else { Features::Default };
        let mut b = BatchBuilder::with_features(features, require_labels, MAX_RECORDS);
        let roles = b.header_roles(&names);
        for row in &rows {
            b.start_record();
            for (role, cell) in roles.iter().zip(row) {
                b.field(*role, cell.as_ref());
            }
            b.end_record();
        }
        match b.finish() {
            Ok(batch) => {
                prop_assert!(batch.matrix.as_slice().iter().all(|v| v.is_finite()));
                prop_assert_eq!(batch.timestamps.len(), batch.len());
                prop_assert_eq!(batch.echo.len(), batch.len());
            }
            Err(e) => prop_assert!(ApiError::from(e.clone()).status.is_client_error(), "{e}"),
        }
    }
}
