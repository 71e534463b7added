//! Entity baselines as model files of formats 2 to 4 hold them, read and converted to today's.

use serde::Deserialize;

use super::classes::ActivityClasses;
use super::profile::{Band, Profile};
use super::{EntityBaselines, Fitted, Seasonality};

/// Entity baselines of format 2 (before weekly day profiles).
pub type BaselinesFormat2 = Fitted<ProfileFormat2>;
/// Entity baselines of format 3 (day profiles, before activity classes).
pub type BaselinesFormat3 = Fitted<Profile>;

/// A profile as an earlier format holds it, into today's.
pub trait UpgradeProfile {
    fn upgrade(self, seasonality: Seasonality) -> Profile;
}

impl UpgradeProfile for Profile {
    fn upgrade(self, _: Seasonality) -> Profile {
        self
    }
}

/// A profile of format 2.
#[derive(Deserialize)]
pub struct ProfileFormat2 {
    n_records: u32,
    bands: Box<[Band]>,
}

impl UpgradeProfile for ProfileFormat2 {
    /// The same bands: weekly ones as seven day profiles, one per day of the week.
    fn upgrade(self, seasonality: Seasonality) -> Profile {
        let days = match seasonality {
            Seasonality::Weekly => [0, 1, 2, 3, 4, 5, 6],
            _ => [0; 7],
        };
        Profile {
            n_records: self.n_records,
            days,
            bands: self.bands,
        }
    }
}

/// Baselines of formats 2 and 3, read and converted (never written): every deviation the root
/// of the sum of squares.
impl<P: UpgradeProfile> From<Fitted<P>> for EntityBaselines {
    fn from(old: Fitted<P>) -> Self {
        let s = old.seasonality;
        Self {
            fitted: Fitted {
                population: old.population.upgrade(s),
                entities: old
                    .entities
                    .into_iter()
                    .map(|(e, p)| (e, p.upgrade(s)))
                    .collect(),
                seasonality: s,
                n_features: old.n_features,
                pairs: old.pairs,
                counts: old.counts,
                below_weight: old.below_weight,
                max: old.max,
                smooth: old.smooth,
                k: old.k,
            },
            classes: None,
            matched: None,
        }
    }
}

/// Entity baselines as model files of format 4 hold them: activity classes, before the matched
/// test (every record's score the omnibus deviation's). Read and converted, never written.
#[derive(Deserialize)]
pub struct BaselinesFormat4 {
    fitted: Fitted<Profile>,
    classes: Option<ActivityClasses>,
}

impl From<BaselinesFormat4> for EntityBaselines {
    fn from(old: BaselinesFormat4) -> Self {
        Self {
            fitted: old.fitted,
            classes: old.classes,
            matched: None,
        }
    }
}
