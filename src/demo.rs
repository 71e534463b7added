//! `netsentinel demo`: the tutorial end to end, offline — generate, fit, report, alert, chart.

use std::path::Path;

use chrono::Utc;

use crate::chart::{ChartFormat, ChartInput, ChartSeries, render};
use crate::detector::Matrix;
use crate::detector::generator::{GeneratorConfig, SEED_FEATURES, SampleRecord, generate};
use crate::detector::metrics::{average_precision, classification_report, roc_auc};
use crate::detector::model::Model;
use crate::detector::params::{Contamination, ForestParams};
use crate::detector::threshold::threshold_for_fpr_budget;

/// Runs the tutorial's pipeline twice (its contamination 0.1, then our recommended setting) and writes the chart.
pub fn run(data_dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let records = generate(&GeneratorConfig::default())?;
    println!(
        "Sample data generated: {} hourly records, {} injected bursts",
        records.len(),
        records.iter().filter(|r| r.label == 1).count()
    );
    let rows: Vec<[f64; 4]> = records.iter().map(|r| r.features()).collect();
    let x = Matrix::from_rows(&rows)?;
    let labels: Vec<bool> = records.iter().map(|r| r.label == 1).collect();
    let features: Vec<String> = SEED_FEATURES.iter().map(|s| s.to_string()).collect();

    println!("\n== The tutorial's setting: contamination = 0.1");
    let tutorial = ForestParams {
        contamination: Contamination::Fraction(0.1),
        ..ForestParams::default()
    };
    let (model, scores) =
        Model::fit_with_scores(&x, features.clone(), &tutorial, None, Utc::now())?;
    report(&model, &scores, &labels, &records, &x)?;

    // Our recommendation: measure on labeled traffic, then fix the threshold a false-alert
    // budget allows. The trees do not depend on the threshold, so the same seed gives the same
    // scores and the budget carries over exactly.
    let budget = threshold_for_fpr_budget(&labels, &scores, 0.01)?;
    println!(
        "\n== Recommended: the threshold a 1% false-alert budget allows on labeled traffic ({:.4}; \
         POST /v1/evaluate?max_false_positive_rate=0.01 reports it, fit with \"threshold\")",
        budget.threshold
    );
    let (model, scores) = Model::fit_with_scores(
        &x,
        features,
        &ForestParams::default(),
        Some(budget.threshold),
        Utc::now(),
    )?;
    let flagged_recommended = report(&model, &scores, &labels, &records, &x)?;

    std::fs::create_dir_all(data_dir)?;
    let timestamps: Vec<_> = records.iter().map(|r| r.timestamp).collect();
    let columns: Vec<Vec<f64>> = (0..4).map(|j| x.column(j).collect()).collect();
    let input = ChartInput {
        timestamps: Some(&timestamps),
        series: SEED_FEATURES
            .iter()
            .zip(&columns)
            .map(|(name, values)| ChartSeries { name, values })
            .collect(),
        anomalies: &flagged_recommended,
        title: Some("netsentinel demo — seed traffic, recommended threshold"),
    };
    let png = render(&input, ChartFormat::Png, 1200, 800)?;
    let path = data_dir.join("cybersecurity_analysis.png");
    std::fs::write(&path, png)?;
    println!("\nChart written to {}", path.display());
    println!("\n✅ Cybersecurity AI monitoring system completed");
    Ok(())
}

/// Prints the tutorial's report for one model; returns which records it flags.
fn report(
    model: &Model,
    scores: &[f64],
    labels: &[bool],
    records: &[SampleRecord],
    x: &Matrix,
) -> Result<Vec<bool>, Box<dyn std::error::Error>> {
    println!(
        "Model fitted successfully (threshold {:.4})",
        model.threshold()
    );
    let predicted: Vec<bool> = scores.iter().map(|&s| model.is_anomaly(s)).collect();
    println!("{}", classification_report(labels, &predicted)?);
    if let (Some(auc), Some(ap)) = (roc_auc(labels, scores), average_precision(labels, scores)) {
        println!("ROC AUC {auc:.4}   average precision {ap:.4}");
    }
    let flagged: Vec<usize> = (0..records.len()).filter(|&i| predicted[i]).collect();
    let rate = flagged.len() as f64 / predicted.len() as f64;
    println!(
        "{} records flagged for {} real anomalies",
        flagged.len(),
        labels.iter().filter(|&&l| l).count()
    );
    if rate > 0.1 {
        println!(
            "⚠️ SECURITY ALERT: High anomaly rate detected ({:.2}%)",
            rate * 100.0
        );
    } else {
        println!(
            "✅ Normal traffic pattern detected (anomaly rate: {:.2}%)",
            rate * 100.0
        );
    }
    let first: Vec<String> = flagged
        .iter()
        .take(5)
        .map(|&i| records[i].timestamp.to_rfc3339())
        .collect();
    println!("Anomalies detected at: {first:?}... (showing first 5)");
    if let Some(&i) = flagged.first() {
        let why: Vec<String> = model
            .explain(x.row(i), 2)
            .iter()
            .map(|c| {
                format!(
                    "{} = {:.0} ({} the normal {:.0}–{:.0})",
                    c.feature,
                    c.value,
                    format!("{:?}", c.direction).to_lowercase(),
                    c.normal_range[0],
                    c.normal_range[1]
                )
            })
            .collect();
        println!(
            "Why {} is anomalous: {}",
            records[i].timestamp.to_rfc3339(),
            why.join("; ")
        );
    }
    Ok(predicted)
}
