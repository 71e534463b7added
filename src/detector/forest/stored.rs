//! The stored form of a forest: what is serialised, and the checks that make loaded trees safe to score.

use serde::{Deserialize, Serialize};

use super::{IsolationForest, Tree};

/// The serialised form of [`IsolationForest`].
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct StoredForest {
    n_features: u64,
    max_samples: u64,
    pub(super) trees: Vec<Tree>,
}

impl From<IsolationForest> for StoredForest {
    fn from(f: IsolationForest) -> Self {
        StoredForest {
            n_features: f.n_features as u64,
            max_samples: f.max_samples as u64,
            trees: f.trees,
        }
    }
}

/// Why stored forest data cannot be turned into a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForestFormatError {
    #[error("a forest needs at least one feature, one tree and max_samples >= 1")]
    Empty,
    #[error("tree {0} is malformed: {1}")]
    Tree(usize, &'static str),
}

impl TryFrom<StoredForest> for IsolationForest {
    type Error = ForestFormatError;

    fn try_from(s: StoredForest) -> Result<Self, Self::Error> {
        let n_features = usize::try_from(s.n_features).map_err(|_| ForestFormatError::Empty)?;
        let max_samples = usize::try_from(s.max_samples).map_err(|_| ForestFormatError::Empty)?;
        if n_features == 0 || max_samples == 0 || s.trees.is_empty() {
            return Err(ForestFormatError::Empty);
        }
        for (t, tree) in s.trees.iter().enumerate() {
            validate_tree(tree, n_features).map_err(|why| ForestFormatError::Tree(t, why))?;
        }
        Ok(IsolationForest::from_trees(
            n_features,
            max_samples,
            s.trees,
        ))
    }
}

/// Checks what scoring relies on: equal lengths, a root, features in range, and children that
/// exist, come after their parent (so there are no cycles) and are claimed once.
fn validate_tree(tree: &Tree, n_features: usize) -> Result<(), &'static str> {
    let n = tree.feature.len();
    if n == 0 {
        return Err("no nodes");
    }
    if tree.threshold.len() != n || tree.left.len() != n || tree.n_samples.len() != n {
        return Err("node arrays differ in length");
    }
    if n > u32::MAX as usize {
        return Err("too many nodes");
    }
    let mut claimed = vec![false; n];
    claimed[0] = true;
    for i in 0..n {
        let l = tree.left[i] as usize;
        if l == 0 {
            continue;
        }
        if tree.feature[i] as usize >= n_features {
            return Err("split on a feature the forest does not have");
        }
        if l <= i || l + 1 >= n {
            return Err("child index out of order or out of range");
        }
        if claimed[l] || claimed[l + 1] {
            return Err("node has two parents");
        }
        claimed[l] = true;
        claimed[l + 1] = true;
    }
    if claimed.iter().any(|c| !c) {
        return Err("unreachable node");
    }
    Ok(())
}
