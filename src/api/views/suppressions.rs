//! Suppression rules as the API reads and shows them (views: the service's `Rule` is stored
//! as JSON of its own, so the answer is converted here).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::suppression::{Created, Rule};

/// `feature op value`: all of a rule's conditions must hold.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = SuppressionCondition)]
pub struct ConditionView {
    /// A feature of the detector's model (an unknown name never holds).
    #[schema(example = "bytes_sent")]
    pub feature: String,
    /// `<`, `<=`, `>`, `>=`, `==` or `!=`.
    #[schema(example = "<")]
    pub op: String,
    /// A finite number.
    #[schema(example = 5e9)]
    pub value: f64,
}

/// A suppression rule as posted.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(as = NewSuppression)]
pub struct NewSuppressionView {
    /// The detector it applies to; absent: every detector.
    #[schema(example = "default")]
    pub detector: Option<String>,
    /// One entity, matched exactly (a Zeek window's `group_by` key, or a records detector's
    /// `group_by` field, else a record's `entity` field). Not with `cidr`.
    #[schema(example = "10.0.0.66")]
    pub entity: Option<String>,
    /// A network (IPv4 or IPv6): entities that parse as an address inside it. Not with `entity`.
    #[schema(example = "10.0.0.0/24")]
    pub cidr: Option<String>,
    /// All must hold.
    pub conditions: Option<Vec<ConditionView>>,
    /// UTC hours of day (0–23) of the record's timestamp; a record without one never matches.
    #[schema(example = json!([1, 2, 3]))]
    pub hours: Option<Vec<u8>>,
    /// How long the rule lasts (`30s`, `15m`, `1h`, `7d`); absent: until deleted.
    #[schema(example = "1h")]
    pub expires_in: Option<String>,
    /// Why (required, at most 1000 characters).
    #[schema(example = "nightly backup")]
    pub reason: String,
}

/// A stored suppression rule.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = Suppression)]
pub struct SuppressionView {
    pub id: String,
    pub detector: Option<String>,
    pub entity: Option<String>,
    /// The network, normalised (`10.0.0.66/24` reads as `10.0.0.0/24`).
    pub cidr: Option<String>,
    pub conditions: Vec<ConditionView>,
    pub hours: Option<Vec<u8>>,
    pub reason: String,
    /// The API key's client id that created it; null without API keys.
    pub created_by: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Null: until deleted.
    pub expires_at: Option<DateTime<Utc>>,
    /// Past `expires_at`: the rule no longer matches (it stays listed until deleted).
    pub expired: bool,
}

/// A rule as created, with the incidents its creation resolved.
#[derive(Serialize, ToSchema)]
#[schema(as = CreatedSuppression)]
pub struct CreatedSuppressionView {
    #[serde(flatten)]
    pub rule: SuppressionView,
    /// Ids of the unresolved incidents the rule covered: resolved now, each with its
    /// `resolved` delivery.
    pub resolved_alerts: Vec<String>,
}

impl CreatedSuppressionView {
    pub fn of(created: Created, now: DateTime<Utc>) -> Self {
        Self {
            resolved_alerts: created.resolved.into_iter().map(|a| a.id).collect(),
            rule: SuppressionView::of(created.rule, now),
        }
    }
}

impl SuppressionView {
    pub fn of(rule: Rule, now: DateTime<Utc>) -> Self {
        Self {
            expired: rule.expired_at(now),
            conditions: rule
                .conditions
                .into_iter()
                .map(|c| ConditionView {
                    op: serde_json::to_value(c.op)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    feature: c.feature,
                    value: c.value,
                })
                .collect(),
            id: rule.id,
            detector: rule.detector,
            entity: rule.entity,
            cidr: rule.cidr,
            hours: rule.hours,
            reason: rule.reason,
            created_by: rule.created_by,
            created_at: rule.created_at,
            expires_at: rule.expires_at,
        }
    }
}

/// Every suppression rule, oldest first.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(as = SuppressionList)]
pub struct SuppressionListView {
    pub suppressions: Vec<SuppressionView>,
}
