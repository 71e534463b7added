//! STUB
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfusionMatrix {
    pub tp: u64,
    pub fp: u64,
    pub tn: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1_score: f64,
    pub support: u64,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassificationReport {
    pub normal: ClassMetrics,
    pub anomaly: ClassMetrics,
    pub accuracy: f64,
    pub macro_avg: ClassMetrics,
    pub weighted_avg: ClassMetrics,
}
impl std::fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "report")
    }
}
pub fn confusion_matrix(_a: &[bool], _b: &[bool]) -> ConfusionMatrix {
    ConfusionMatrix {
        tp: 0,
        fp: 0,
        tn: 0,
        fn_: 0,
    }
}
pub fn classification_report(_a: &[bool], _b: &[bool]) -> ClassificationReport {
    let c = ClassMetrics {
        precision: 0.0,
        recall: 0.0,
        f1_score: 0.0,
        support: 0,
    };
    ClassificationReport {
        normal: c.clone(),
        anomaly: c.clone(),
        accuracy: 0.0,
        macro_avg: c.clone(),
        weighted_avg: c,
    }
}
pub fn roc_auc(_a: &[bool], _s: &[f64]) -> Option<f64> {
    None
}
pub fn average_precision(_a: &[bool], _s: &[f64]) -> Option<f64> {
    None
}
