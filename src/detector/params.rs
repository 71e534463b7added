//! Isolation Forest parameters with scikit-learn's meaning, checked before any fitting.

use serde::{Deserialize, Serialize};

/// How many rows each tree is grown on (scikit-learn's `max_samples`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxSamples {
    /// `"auto"`: min(256, n).
    Auto(AutoTag),
    /// An absolute count of rows (capped at n, as scikit-learn does with a warning).
    Count(u64),
    /// A fraction of n in (0, 1].
    Fraction(f64),
}

/// Share of anomalies expected in the training data; decides the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Contamination {
    /// `"auto"`: threshold 0.5 on the score, as in the original paper.
    Auto(AutoTag),
    /// A fraction in (0, 0.5]: the threshold is that quantile of the training scores.
    Fraction(f64),
}

/// How many features each tree may split on (scikit-learn's `max_features`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MaxFeatures {
    Count(u64),
    Fraction(f64),
}

/// The literal string `"auto"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoTag {
    Auto,
}

/// Parameters as a user gives them; [`ForestParams::check`] validates them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForestParams {
    /// Number of trees (default 100).
    pub n_estimators: u64,
    /// `"auto"` (= min(256, n)), a row count, or a fraction of n.
    pub max_samples: MaxSamples,
    /// `"auto"` (threshold 0.5) or a fraction in (0, 0.5].
    pub contamination: Contamination,
    /// A fraction in (0, 1] or a count of features (default 1.0: all).
    pub max_features: MaxFeatures,
    /// Draw each tree's rows with replacement (default false).
    pub bootstrap: bool,
    /// Seed of every random choice; same seed, same model.
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> Self {
        Self {
            n_estimators: 100,
            max_samples: MaxSamples::Auto(AutoTag::Auto),
            contamination: Contamination::Auto(AutoTag::Auto),
            max_features: MaxFeatures::Fraction(1.0),
            bootstrap: false,
            seed: 42,
        }
    }
}

/// Largest forest we agree to build: beyond this the model file and scoring time explode.
pub const MAX_ESTIMATORS: u64 = 10_000;

/// Largest fit we agree to run, as trees × rows per tree: growth time and the model's size (about
/// two nodes per row of each tree) grow with it. The default (100 trees of 256 rows) is 25,600;
/// this allows e.g. 100 trees of 41,943 rows or 1,000 of 4,194, a model of about 130 MB.
pub const MAX_TREE_SAMPLES: u64 = 4_194_304;

/// A parameter that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamError {
    #[error("n_estimators must be between 1 and {MAX_ESTIMATORS}, got {0}")]
    NEstimators(u64),
    #[error(
        "max_samples must be \"auto\", a count of at least 1, or a fraction in (0, 1]; got {0}"
    )]
    MaxSamples(String),
    #[error(
        "n_estimators × max_samples is {trees} × {samples} = {}, over the ceiling of {MAX_TREE_SAMPLES}; use fewer trees or fewer rows per tree",
        *trees as u64 * *samples as u64
    )]
    FitCost { trees: usize, samples: usize },
    #[error("contamination must be \"auto\" or a fraction in (0, 0.5]; got {0}")]
    Contamination(String),
    #[error(
        "max_features must be a count between 1 and the number of features ({n_features}), or a fraction in (0, 1]; got {value}"
    )]
    MaxFeatures { value: String, n_features: usize },
    #[error("at least one feature is needed")]
    NoFeatures,
    #[error("feature {0:?} is named twice")]
    DuplicateFeature(String),
    #[error("feature names must be non-empty")]
    EmptyFeatureName,
    #[error("at least 1 training row is needed")]
    NoRows,
}

impl ParamError {
    /// The name of the parameter at fault, as a client spells it.
    pub fn parameter(&self) -> &'static str {
        match self {
            ParamError::NEstimators(_) => "n_estimators",
            ParamError::MaxSamples(_) | ParamError::FitCost { .. } => "max_samples",
            ParamError::Contamination(_) => "contamination",
            ParamError::MaxFeatures { .. } => "max_features",
            ParamError::NoFeatures
            | ParamError::DuplicateFeature(_)
            | ParamError::EmptyFeatureName => "features",
            ParamError::NoRows => "records",
        }
    }
}

/// Parameters resolved against a training set of `n_rows` rows and `n_features` features.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedParams {
    pub n_estimators: usize,
    /// ψ: rows per tree.
    pub max_samples: usize,
    /// `None` for `"auto"`.
    pub contamination: Option<f64>,
    /// Features each tree may use.
    pub max_features: usize,
    pub bootstrap: bool,
    pub seed: u64,
}

impl ForestParams {
    /// Checks the values that do not depend on the data (usable before any data is read).
    pub fn check_static(&self) -> Result<(), ParamError> {
        if self.n_estimators == 0 || self.n_estimators > MAX_ESTIMATORS {
            return Err(ParamError::NEstimators(self.n_estimators));
        }
        match self.max_samples {
            MaxSamples::Auto(_) => {}
            MaxSamples::Count(c) if c >= 1 => {}
            MaxSamples::Fraction(f) if f.is_finite() && f > 0.0 && f <= 1.0 => {}
            MaxSamples::Count(c) => return Err(ParamError::MaxSamples(c.to_string())),
            MaxSamples::Fraction(f) => return Err(ParamError::MaxSamples(f.to_string())),
        }
        match self.contamination {
            Contamination::Auto(_) => {}
            Contamination::Fraction(f) if f.is_finite() && f > 0.0 && f <= 0.5 => {}
            Contamination::Fraction(f) => return Err(ParamError::Contamination(f.to_string())),
        }
        match self.max_features {
            MaxFeatures::Count(c) if c >= 1 => {}
            MaxFeatures::Fraction(f) if f.is_finite() && f > 0.0 && f <= 1.0 => {}
            MaxFeatures::Count(c) => {
                return Err(ParamError::MaxFeatures {
                    value: c.to_string(),
                    n_features: 0,
                });
            }
            MaxFeatures::Fraction(f) => {
                return Err(ParamError::MaxFeatures {
                    value: f.to_string(),
                    n_features: 0,
                });
            }
        }
        Ok(())
    }

    /// Resolves the parameters for `n_rows` x `n_features` training data, as scikit-learn does.
    pub fn check(&self, n_rows: usize, n_features: usize) -> Result<CheckedParams, ParamError> {
        self.check_static()?;
        if n_features == 0 {
            return Err(ParamError::NoFeatures);
        }
        if n_rows == 0 {
            return Err(ParamError::NoRows);
        }
        let max_samples = match self.max_samples {
            MaxSamples::Auto(_) => n_rows.min(256),
            // scikit-learn warns and uses n when the count exceeds it.
            MaxSamples::Count(c) => (c.min(n_rows as u64)) as usize,
            MaxSamples::Fraction(f) => ((f * n_rows as f64) as usize).max(1),
        };
        if self.n_estimators * max_samples as u64 > MAX_TREE_SAMPLES {
            return Err(ParamError::FitCost {
                trees: self.n_estimators as usize,
                samples: max_samples,
            });
        }
        let max_features = match self.max_features {
            MaxFeatures::Count(c) => {
                if c as usize > n_features {
                    return Err(ParamError::MaxFeatures {
                        value: c.to_string(),
                        n_features,
                    });
                }
                c as usize
            }
            MaxFeatures::Fraction(f) => ((f * n_features as f64) as usize).max(1),
        };
        Ok(CheckedParams {
            n_estimators: self.n_estimators as usize,
            max_samples,
            contamination: match self.contamination {
                Contamination::Auto(_) => None,
                Contamination::Fraction(f) => Some(f),
            },
            max_features,
            bootstrap: self.bootstrap,
            seed: self.seed,
        })
    }
}

/// Checks a list of feature names: non-empty, no blanks, no duplicates.
pub fn check_feature_names(names: &[String]) -> Result<(), ParamError> {
    if names.is_empty() {
        return Err(ParamError::NoFeatures);
    }
    let mut seen = std::collections::HashSet::new();
    for n in names {
        if n.trim().is_empty() {
            return Err(ParamError::EmptyFeatureName);
        }
        if !seen.insert(n.as_str()) {
            return Err(ParamError::DuplicateFeature(n.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_like_scikit_learn() {
        let p = ForestParams::default().check(720, 4).unwrap();
        assert_eq!(p.n_estimators, 100);
        assert_eq!(p.max_samples, 256);
        assert_eq!(p.max_features, 4);
        assert_eq!(p.contamination, None);
        assert_eq!(
            ForestParams::default().check(100, 4).unwrap().max_samples,
            100
        );
    }

    #[test]
    fn fractions_and_counts_resolve() {
        let fractions = ForestParams {
            max_samples: MaxSamples::Fraction(0.5),
            max_features: MaxFeatures::Fraction(0.5),
            contamination: Contamination::Fraction(0.1),
            ..Default::default()
        };
        // Counts beyond the data are capped at it.
        let counts = ForestParams {
            max_samples: MaxSamples::Count(5000),
            max_features: MaxFeatures::Count(3),
            ..Default::default()
        };
        for (p, resolved) in [(fractions, (500, 2, Some(0.1))), (counts, (1000, 3, None))] {
            let c = p.check(1000, 5).unwrap();
            assert_eq!((c.max_samples, c.max_features, c.contamination), resolved);
        }
    }

    #[test]
    fn bad_values_name_the_parameter() {
        // Each case changes one field of the defaults to a value out of its range.
        type Change = fn(&mut ForestParams);
        let cases: [(Change, &str); 8] = [
            (|p| p.n_estimators = 0, "n_estimators"),
            (|p| p.max_samples = MaxSamples::Fraction(1.5), "max_samples"),
            (|p| p.max_samples = MaxSamples::Count(0), "max_samples"),
            (
                |p| p.contamination = Contamination::Fraction(0.6),
                "contamination",
            ),
            (
                |p| p.contamination = Contamination::Fraction(0.0),
                "contamination",
            ),
            (
                |p| p.contamination = Contamination::Fraction(f64::NAN),
                "contamination",
            ),
            (|p| p.max_features = MaxFeatures::Count(9), "max_features"),
            (
                |p| p.max_features = MaxFeatures::Fraction(0.0),
                "max_features",
            ),
        ];
        for (set, name) in cases {
            let mut p = ForestParams::default();
            set(&mut p);
            let err = p.check(100, 4).unwrap_err();
            assert_eq!(err.parameter(), name, "{err}");
        }
    }

    #[test]
    fn json_forms_parse() {
        let p: ForestParams =
            serde_json::from_str(r#"{"max_samples":"auto","contamination":0.05,"max_features":2}"#)
                .unwrap();
        assert_eq!(p.contamination, Contamination::Fraction(0.05));
        assert_eq!(p.max_features, MaxFeatures::Count(2));
        let p: ForestParams = serde_json::from_str(r#"{"max_samples":0.5}"#).unwrap();
        assert_eq!(p.max_samples, MaxSamples::Fraction(0.5));
        assert!(serde_json::from_str::<ForestParams>(r#"{"n_trees":5}"#).is_err());
        assert!(serde_json::from_str::<ForestParams>(r#"{"contamination":"most"}"#).is_err());
    }

    #[test]
    fn fits_past_the_cost_ceiling_are_refused_before_any_work() {
        let p = ForestParams {
            n_estimators: 10_000,
            max_samples: MaxSamples::Count(1_000_000),
            ..Default::default()
        };
        // The ceiling applies to the rows a tree really gets: a small data set caps them.
        assert!(p.check(400, 4).is_ok());
        let err = p.check(2_000_000, 4).unwrap_err();
        assert_eq!(err.parameter(), "max_samples");
        assert_eq!(
            err,
            ParamError::FitCost {
                trees: 10_000,
                samples: 1_000_000
            }
        );
        assert!(err.to_string().contains("10000000000"), "{err}");
        let at_ceiling = ForestParams {
            n_estimators: 1024,
            max_samples: MaxSamples::Count(4096),
            ..Default::default()
        };
        assert!(at_ceiling.check(1_000_000, 4).is_ok());
        let over = ForestParams {
            n_estimators: 1025,
            ..at_ceiling
        };
        assert!(over.check(1_000_000, 4).is_err());
    }
}
