//! A model's entity baselines: fitting them beside the forest, scoring and explaining records
//! against their entities.

use chrono::{DateTime, Utc};

use super::{
    EntityInput, EntityPart, FitError, FitInput, InsufficientData, Model, ThresholdSource,
};
use crate::detector::Matrix;
use crate::detector::baseline::{
    Baseline, EntityBaselines, Judged, Seasonality, Test, Tuning, activity_feature,
};
use crate::detector::explain::{BandContext, Direction, FeatureContribution, summary_line};

impl Model {
    /// [`Model::fit_watched`] with entity baselines: the forest and statistics as for a global
    /// model, plus every entity's bands (`entities[i]`, `times[i]` of row `i`); records are then
    /// scored by the baselines ([`Model::score_entities`]) and the threshold is the baselines'
    /// calibrated 0.5 unless `fixed_threshold` says otherwise. Returns the training scores.
    pub fn fit_entity(
        input: FitInput<'_>,
        entity: EntityInput<'_>,
    ) -> Result<(Model, Vec<f64>), FitError> {
        let started = std::time::Instant::now();
        let (x, fixed_threshold) = (input.x, input.fixed_threshold);
        let EntityInput {
            field,
            entities,
            times,
            seasonality,
        } = entity;
        let activity = activity_feature(&input.features);
        let (mut model, _) = Self::fit_watched(input)?;
        let baselines = EntityBaselines::fit(
            x,
            entities,
            times,
            seasonality,
            activity,
            &Tuning::default(),
        );
        if baselines.n_entities() == 0 {
            return Err(FitError::Insufficient(InsufficientData::NoEntityHistory {
                min: crate::detector::baseline::MIN_ENTITY_RECORDS,
            }));
        }
        let (scores, _) = baselines.score(x, entities, times);
        let threshold = fixed_threshold.unwrap_or(0.5);
        let flagged = scores.iter().filter(|&&s| s > threshold).count();
        model.meta.threshold = threshold;
        model.meta.threshold_source = if fixed_threshold.is_some() {
            ThresholdSource::Fixed
        } else {
            ThresholdSource::Auto
        };
        model.meta.training_anomaly_rate = flagged as f64 / x.n_rows().max(1) as f64;
        model.meta.baseline = Baseline::Entity;
        model.meta.seasonality = seasonality;
        model.meta.entity_field = Some(field.to_owned());
        model.entity = Some(EntityPart {
            field: field.to_owned(),
            baselines,
        });
        model.meta.fit_seconds += started.elapsed().as_secs_f64();
        Ok((model, scores))
    }

    /// The entity part, for a model fitted with `baseline=entity`.
    pub fn entity(&self) -> Option<&EntityPart> {
        self.entity.as_ref()
    }

    /// Scores raw records against their entities' baselines (`entities[i]`, `times[i]` of row
    /// `i`), and says for each whether its own baseline judged it or the global fallback; a
    /// model without entity baselines scores them with the forest, all `Own`.
    pub fn score_entities(
        &self,
        x: &Matrix,
        entities: &[&str],
        times: &[DateTime<Utc>],
    ) -> (Vec<f64>, Vec<Judged>) {
        match &self.entity {
            Some(e) => e.baselines.score(x, entities, times),
            None => (self.score(x), vec![Judged::Own; x.n_rows()]),
        }
    }

    /// [`explain`](Self::explain) in the entity's terms: each feature's share of the record's
    /// deviation from its entity's bands at `t`, its `normal_range` the entity's usual band
    /// there (median ± 2 scales, [`EntityBaselines::expected`]) and its direction relative to
    /// that band. Falls back to [`explain`](Self::explain) without entity baselines.
    pub fn explain_entity(
        &self,
        row: &[f64],
        entity: &str,
        t: DateTime<Utc>,
        top_k: usize,
    ) -> Vec<FeatureContribution> {
        let Some(e) = &self.entity else {
            return self.explain(row, top_k);
        };
        let b = &e.baselines;
        let (weights, judged, test) = b.explain(row, entity, t);
        let mut out = self.contributions(row, &weights, top_k);
        let ctx = BandContext {
            entity: (judged == Judged::Own).then_some(entity),
            when: match b.seasonality() {
                Seasonality::None => None,
                Seasonality::Daily => Some(t.format("%H:00").to_string()),
                Seasonality::Weekly => Some(t.format("%a %H:00").to_string()),
            },
        };
        for c in &mut out {
            let j = self
                .meta
                .features
                .iter()
                .position(|f| *f == c.feature)
                .expect("an explained feature is one of the model's");
            let (expected, band) = b.expected(entity, t, j);
            c.direction = if c.value > band[1] {
                Direction::Above
            } else if c.value < band[0] {
                Direction::Below
            } else {
                Direction::Within
            };
            c.normal_range = band;
            c.expected = Some(expected);
            c.band = Some(band);
            c.summary = Some(summary_line(&c.feature, c.value, band, &ctx));
        }
        // When the matched test decided the score, the activity feature's line says so (the
        // first line's, if the activity feature is not explained).
        if test == Test::ActivityAlone {
            let activity = b.matched_feature().map(|j| self.meta.features[j].as_str());
            let at = out
                .iter()
                .position(|c| Some(c.feature.as_str()) == activity)
                .unwrap_or(0);
            if let (Some(c), Some(activity)) = (out.get_mut(at), activity) {
                let line = c.summary.get_or_insert_with(String::new);
                line.push_str(&alone_line(activity, &self.meta.features));
            }
        }
        out
    }
}

/// What the matched test found, in words, after the activity feature's line: `; the matched
/// test decided: more connections than usual with less bytes_sent, bytes_received,
/// active_sessions per connection (the signature of check-ins such as beaconing)`.
fn alone_line(activity: &str, features: &[String]) -> String {
    let others: Vec<&str> = features
        .iter()
        .map(String::as_str)
        .filter(|f| *f != activity)
        .collect();
    format!(
        "; the matched test decided: more {activity} than usual with less {} per {} \
         (the signature of check-ins such as beaconing)",
        others.join(", "),
        activity.strip_suffix('s').unwrap_or(activity)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detector::generator::network::HostKind;
    use crate::detector::generator::{GeneratorConfig, SEED_FEATURES, generate};
    use crate::detector::params::ForestParams;
    use chrono::{TimeDelta, Timelike};

    /// An entity model fitted on three days of the network profile (20 hosts), and the fourth
    /// day's records.
    fn fitted() -> (Model, Vec<crate::detector::generator::SampleRecord>) {
        let cfg = GeneratorConfig::network(20, 4, 0.0, 3);
        let records = generate(&cfg).unwrap();
        let split = cfg.start + TimeDelta::days(3);
        let (train, test): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|r| r.timestamp < split);
        let rows: Vec<[f64; 4]> = train.iter().map(|r| r.features()).collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let entities: Vec<&str> = train.iter().map(|r| r.src_ip.as_deref().unwrap()).collect();
        let times: Vec<_> = train.iter().map(|r| r.timestamp).collect();
        let names = SEED_FEATURES.iter().map(|s| s.to_string()).collect();
        let (model, scores) = Model::fit_entity(
            FitInput {
                x: &x,
                features: names,
                params: &ForestParams::default(),
                fixed_threshold: None,
                trained_at: Utc::now(),
                watch: &crate::detector::forest::Unwatched,
            },
            EntityInput {
                field: "src_ip",
                entities: &entities,
                times: &times,
                seasonality: Seasonality::Daily,
            },
        )
        .unwrap();
        assert_eq!(scores.len(), x.n_rows());
        (model, test)
    }

    #[test]
    fn an_entity_model_is_format_5_and_round_trips_and_a_global_one_stays_format_1() {
        let (model, test) = fitted();
        assert_eq!(model.meta().baseline, Baseline::Entity);
        assert_eq!(model.meta().entity_field.as_deref(), Some("src_ip"));
        assert_eq!(model.threshold(), 0.5);
        assert!(model.meta().training_anomaly_rate <= 0.01);
        let bytes = model.to_bytes();
        assert_eq!(bytes[8..12], 5u32.to_le_bytes());
        assert!(model.entity().unwrap().baselines.has_activity_classes());
        assert!(model.entity().unwrap().baselines.has_matched_test());
        let back = Model::from_bytes(&bytes).unwrap();
        assert_eq!(back, model);
        let rows: Vec<[f64; 4]> = test.iter().take(500).map(|r| r.features()).collect();
        let x = Matrix::from_rows(&rows).unwrap();
        let e: Vec<&str> = test
            .iter()
            .take(500)
            .map(|r| r.src_ip.as_deref().unwrap())
            .collect();
        let t: Vec<_> = test.iter().take(500).map(|r| r.timestamp).collect();
        assert_eq!(
            back.score_entities(&x, &e, &t),
            model.score_entities(&x, &e, &t)
        );
        // A global model's file is the format every earlier build reads, and its meta JSON
        // carries no baseline fields.
        let global = Model::fit(
            &x,
            model.features().to_vec(),
            &ForestParams::default(),
            Utc::now(),
        )
        .unwrap();
        let bytes = global.to_bytes();
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        let meta = serde_json::to_string(global.meta()).unwrap();
        assert!(
            !meta.contains("baseline") && !meta.contains("entity_field"),
            "{meta}"
        );
        assert_eq!(Model::from_bytes(&bytes).unwrap(), global);
    }

    #[test]
    fn an_unseen_entity_falls_back_to_the_population_and_says_so() {
        let (model, test) = fitted();
        let r = &test[0];
        let x = Matrix::from_rows(&[r.features(), r.features()]).unwrap();
        let t = [r.timestamp, r.timestamp];
        let (scores, judged) =
            model.score_entities(&x, &[r.src_ip.as_deref().unwrap(), "10.9.9.9"], &t);
        assert_eq!(judged, [Judged::Own, Judged::GlobalFallback]);
        assert!(scores.iter().all(|s| (0.0..1.0).contains(s)));
    }

    #[test]
    fn night_activity_of_a_day_host_is_flagged_and_explained_against_its_hours_band() {
        let (model, test) = fitted();
        let hosts = crate::detector::generator::network::hosts(20, 3);
        let ws = hosts
            .iter()
            .find(|h| h.kind == HostKind::Workstation)
            .unwrap();
        let of_ws = |hour: u32| {
            test.iter()
                .find(|r| r.src_ip.as_deref() == Some(&ws.ip) && r.timestamp.hour() == hour)
                .unwrap()
        };
        let (noon, night) = (of_ws(13), of_ws(3));
        // The noon window's values, at 03:00.
        let x = Matrix::from_rows(&[noon.features(), noon.features()]).unwrap();
        let (scores, _) = model.score_entities(
            &x,
            &[ws.ip.as_str(), ws.ip.as_str()],
            &[noon.timestamp, night.timestamp],
        );
        assert!(scores[0] < 0.5, "its day peak is usual: {scores:?}");
        assert!(scores[1] > 0.6, "the same at night is not: {scores:?}");
        let explained = model.explain_entity(&noon.features(), &ws.ip, night.timestamp, 4);
        assert!(!explained.is_empty());
        for c in &explained {
            // The band is the workstation's at 03:00, far below the noon value.
            assert_eq!(c.direction, Direction::Above, "{c:?}");
            assert!(c.normal_range[1] < c.value, "{c:?}");
        }
        let day = model.explain_entity(&noon.features(), &ws.ip, noon.timestamp, 4);
        let sent = day.iter().find(|c| c.feature == "bytes_sent");
        if let Some(c) = sent {
            assert!(
                c.normal_range[0] < c.value && c.value < c.normal_range[1] * 2.0,
                "{c:?}"
            );
        }
    }

    #[test]
    fn a_check_in_on_a_quiet_night_is_found_by_the_matched_test_and_explained_as_such() {
        let (model, test) = fitted();
        let b = &model.entity().unwrap().baselines;
        let hosts = crate::detector::generator::network::hosts(20, 3);
        let ws = hosts
            .iter()
            .find(|h| h.kind == HostKind::Workstation)
            .unwrap();
        let night = test
            .iter()
            .find(|r| r.src_ip.as_deref() == Some(&ws.ip) && r.timestamp.hour() == 3)
            .unwrap();
        let score = |row: &[f64]| {
            let mut z = vec![0.0; b.n_signals()];
            b.score_test_into(row, &ws.ip, night.timestamp, &mut z)
        };
        let quiet = night.features();
        let (s, _, test_of) = score(&quiet);
        assert!(s < 0.5, "an ordinary night window: {s}");
        assert_eq!(test_of, Test::Omnibus);
        // Five 1.5 kB check-ins (3 kB back) and a session, as the generator's beaconing adds.
        let beacon = [
            quiet[0] + 7.5e3,
            quiet[1] + 1.5e4,
            quiet[2] + 5.0,
            quiet[3] + 1.0,
        ];
        let (s, judged, test_of) = score(&beacon);
        assert!(s > 0.5, "five check-ins on a quiet night: {s}");
        assert_eq!((judged, test_of), (Judged::Own, Test::ActivityAlone));
        // The score is the one `score_entities` gives.
        let x = Matrix::from_rows(&[beacon]).unwrap();
        let (scores, _) = model.score_entities(&x, &[ws.ip.as_str()], &[night.timestamp]);
        assert_eq!(scores[0], s);
        let explained = model.explain_entity(&beacon, &ws.ip, night.timestamp, 4);
        let conns = explained
            .iter()
            .find(|c| c.feature == "connections")
            .expect("connections explain the check-ins");
        let line = conns.summary.as_deref().unwrap();
        assert!(
            line.starts_with("connections ")
                && line.contains(&format!("; usual for {} at 03:00 is ", ws.ip)),
            "{line}"
        );
        assert!(
            line.ends_with(
                "; the matched test decided: more connections than usual with less bytes_sent, \
                 bytes_received, active_sessions per connection (the signature of check-ins \
                 such as beaconing)"
            ),
            "{line}"
        );
        assert_eq!(conns.direction, Direction::Above, "{conns:?}");
        // A volume spike is the omnibus's, explained as before.
        let exfil = [quiet[0] + 5e7, quiet[1], quiet[2] + 2.0, quiet[3]];
        let (s, _, test_of) = score(&exfil);
        assert!(s > 0.5, "{s}");
        assert_eq!(test_of, Test::Omnibus);
        let explained = model.explain_entity(&exfil, &ws.ip, night.timestamp, 4);
        assert_eq!(explained[0].feature, "bytes_sent", "{explained:?}");
        assert!(
            explained
                .iter()
                .all(|c| !c.summary.as_deref().unwrap().contains("matched test")),
            "{explained:?}"
        );
    }
}
