//! The model file format (all integers little-endian):
//!
//! ```text
//! "NSMODEL\0" | format u32 | meta_len u64 | meta (JSON) | body_len u64 | body (postcard: scaler, forest) | sha256 of all before (32 bytes)
//! ```
//!
//! Format 1 is every `baseline=global` model (as before entity baselines); a model with entity
//! baselines is format 5, whose body is (scaler, forest, [`EntityPart`]). Format 2 (entity
//! baselines whose weekly bands were one bucket per hour of the week, before day profiles),
//! format 3 (day profiles, before activity classes: every deviation the root of the sum of
//! squares) and format 4 (activity classes, before the matched test of the activity rising
//! alone) still load and score as they did. All five load.
//!
//! The metadata is JSON so an operator can read it with `strings`; the trees are binary for size.
//! Any truncation or altered byte fails the checksum and is a typed [`ModelFileError`].

use sha2::{Digest, Sha256};

use super::{EntityPart, Model, ModelMeta};
use crate::detector::baseline::{
    BaselinesFormat2, BaselinesFormat3, BaselinesFormat4, EntityBaselines,
};
use crate::detector::forest::IsolationForest;
use crate::detector::scaler::Scaler;

impl Model {
    /// Encodes the model in the versioned, checksummed file format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&self.meta).expect("model metadata always serialises");
        let (format, body) = match &self.entity {
            None => (
                FORMAT_VERSION_GLOBAL,
                postcard::to_stdvec(&(&self.scaler, &self.forest)),
            ),
            Some(e) => (
                FORMAT_VERSION,
                postcard::to_stdvec(&(&self.scaler, &self.forest, e)),
            ),
        };
        let body = body.expect("scaler, forest and baselines always serialise");
        let mut out = Vec::with_capacity(8 + 4 + 16 + meta.len() + body.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&format.to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Decodes a model file; any damage is an error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelFileError> {
        if bytes.len() < MAGIC.len() + 4 + 8 + 8 + 32 {
            return Err(ModelFileError::Truncated);
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(ModelFileError::NotAModel);
        }
        let (content, digest) = bytes.split_at(bytes.len() - 32);
        let mut cursor = Cursor {
            bytes: content,
            pos: MAGIC.len(),
        };
        let format = u32::from_le_bytes(cursor.take_array()?);
        if ![
            FORMAT_VERSION,
            FORMAT_VERSION_GLOBAL,
            FORMAT_VERSION_HOURS_OF_WEEK,
            FORMAT_VERSION_DAY_PROFILES,
            FORMAT_VERSION_ACTIVITY_CLASSES,
        ]
        .contains(&format)
        {
            return Err(ModelFileError::UnsupportedFormat(format));
        }
        if Sha256::digest(content).as_slice() != digest {
            return Err(ModelFileError::Checksum);
        }
        let meta_len = u64::from_le_bytes(cursor.take_array()?);
        let meta: ModelMeta = serde_json::from_slice(cursor.take(meta_len)?)
            .map_err(|e| ModelFileError::Decode(format!("metadata: {e}")))?;
        let body_len = u64::from_le_bytes(cursor.take_array()?);
        let body = cursor.take(body_len)?;
        let decode = |e: postcard::Error| ModelFileError::Decode(format!("trees: {e}"));
        let (scaler, forest, entity) = if format == FORMAT_VERSION_GLOBAL {
            let (scaler, forest): (Scaler, IsolationForest) =
                postcard::from_bytes(body).map_err(decode)?;
            (scaler, forest, None)
        } else if format == FORMAT_VERSION_HOURS_OF_WEEK {
            earlier_entity_body::<BaselinesFormat2>(body).map_err(decode)?
        } else if format == FORMAT_VERSION_DAY_PROFILES {
            earlier_entity_body::<BaselinesFormat3>(body).map_err(decode)?
        } else if format == FORMAT_VERSION_ACTIVITY_CLASSES {
            earlier_entity_body::<BaselinesFormat4>(body).map_err(decode)?
        } else {
            let (scaler, forest, entity): (Scaler, IsolationForest, EntityPart) =
                postcard::from_bytes(body).map_err(decode)?;
            (scaler, forest, Some(entity))
        };
        if cursor.pos != content.len() {
            return Err(ModelFileError::Decode(
                "trailing bytes after the trees".into(),
            ));
        }
        let d = meta.features.len();
        if scaler.n_features() != d
            || forest.n_features() != d
            || meta.feature_stats.len() != d
            || entity
                .as_ref()
                .is_some_and(|e| e.baselines.n_features() != d)
        {
            return Err(ModelFileError::Decode(
                "feature count differs between metadata, scaler and trees".into(),
            ));
        }
        Ok(Model {
            meta,
            scaler,
            forest,
            entity,
        })
    }
}

/// The body of an entity model of an earlier format, whose baselines read as `B`, converted.
fn earlier_entity_body<B>(
    body: &[u8],
) -> Result<(Scaler, IsolationForest, Option<EntityPart>), postcard::Error>
where
    B: serde::de::DeserializeOwned + Into<EntityBaselines>,
{
    let (scaler, forest, (field, old)): (Scaler, IsolationForest, (String, B)) =
        postcard::from_bytes(body)?;
    let baselines = old.into();
    Ok((scaler, forest, Some(EntityPart { field, baselines })))
}

const MAGIC: &[u8; 8] = b"NSMODEL\0";
/// Bumped whenever the layout or the meaning of a field changes: the format of a model with
/// entity baselines (format 5: beside the activity classes, the matched test of the activity
/// rising alone, its weights and calibration).
pub const FORMAT_VERSION: u32 = 5;
/// The format of a model with entity baselines before the matched test (the signals' second
/// moments per activity class; every score the omnibus deviation's): read, never written.
pub const FORMAT_VERSION_ACTIVITY_CLASSES: u32 = 4;
/// The format of a model with entity baselines before activity classes (weekly bands as day
/// profiles, every deviation the root of the sum of squares): read, never written.
pub const FORMAT_VERSION_DAY_PROFILES: u32 = 3;
/// The format of a model with entity baselines before day profiles (one weekly bucket per hour
/// of the week): read, never written.
pub const FORMAT_VERSION_HOURS_OF_WEEK: u32 = 2;
/// The format of a model without entity baselines (unchanged since format 1, which every build
/// since reads and writes for them).
pub const FORMAT_VERSION_GLOBAL: u32 = 1;

/// Why a model file could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelFileError {
    #[error("the file is truncated")]
    Truncated,
    #[error("not a netsentinel model file (bad magic bytes)")]
    NotAModel,
    #[error(
        "model file format {0} is not supported by this build (expects {FORMAT_VERSION_GLOBAL} to {FORMAT_VERSION})"
    )]
    UnsupportedFormat(u32),
    #[error("checksum mismatch: the file was altered or partly written")]
    Checksum,
    #[error("the file passed its checksum but could not be decoded: {0}")]
    Decode(String),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: u64) -> Result<&'a [u8], ModelFileError> {
        let len = usize::try_from(len).map_err(|_| ModelFileError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(ModelFileError::Truncated)?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(ModelFileError::Truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ModelFileError> {
        let slice = self.take(N as u64)?;
        slice.try_into().map_err(|_| ModelFileError::Truncated)
    }
}
