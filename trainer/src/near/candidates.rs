//! Weighted candidate sets: image i's candidates are its own names (the MLLM's answers,
//! by frequency) and the names of its k nearest neighbours, each weighted by its cosine
//! similarity to i raised to a power. Weights are normalized to sum to 1; the vote is the
//! heaviest candidate.

use crate::knn::Neighbour;
use serde::{Deserialize, Serialize};

/// How candidate sets are built.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CandidateSettings {
    /// Neighbours per image.
    pub k: usize,
    /// Weight of the image's own names (split over its answers by frequency), against
    /// neighbours weighted by similarity (at most 1 each).
    pub self_weight: f32,
    /// Neighbour weight = max(similarity, 0) ^ power.
    pub power: f32,
}

impl CandidateSettings {
    /// Checks the numbers against their ranges, naming each `{prefix}{key}`.
    pub fn validate(&self, prefix: &str) -> Result<(), crate::bounds::BoundError> {
        use crate::bounds::{Bound, Checker};
        Checker::new(prefix)
            .check("k", self.k, Bound::AT_LEAST_ONE)
            .check("self_weight", self.self_weight, Bound::NON_NEGATIVE)
            .check("power", self.power, Bound::NON_NEGATIVE)
            .finish()
    }
}

impl Default for CandidateSettings {
    fn default() -> Self {
        CandidateSettings {
            k: 10,
            self_weight: 1.0,
            power: 1.0,
        }
    }
}

/// One image's own classes: (class, share of its answers), shares summing to at most 1
/// (answers that are not classes are left out).
pub type Own = Vec<(usize, f32)>;

/// Candidate set of every image: `(class, weight)` sorted by weight (heaviest first),
/// weights summing to 1; empty when neither the image nor any neighbour has a class.
pub fn candidate_sets(
    own: &[Own],
    neighbours: &[Vec<Neighbour>],
    s: &CandidateSettings,
) -> Vec<Vec<(usize, f32)>> {
    own.iter()
        .zip(neighbours)
        .map(|(mine, nbs)| {
            let mut w: Vec<(usize, f32)> = Vec::new();
            let mut add = |c: usize, x: f32| {
                if x <= 0.0 {
                    return;
                }
                match w.iter_mut().find(|e| e.0 == c) {
                    Some(e) => e.1 += x,
                    None => w.push((c, x)),
                }
            };
            for &(c, share) in mine {
                add(c, s.self_weight * share);
            }
            for nb in nbs.iter().take(s.k) {
                let sim = nb.similarity.max(0.0).powf(s.power);
                for &(c, share) in &own[nb.index] {
                    add(c, sim * share);
                }
            }
            let total: f32 = w.iter().map(|e| e.1).sum();
            if total > 0.0 {
                w.iter_mut().for_each(|e| e.1 /= total);
            }
            w.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            w
        })
        .collect()
}

/// The heaviest candidate of each set (None for an empty set).
pub fn vote(sets: &[Vec<(usize, f32)>]) -> Vec<Option<usize>> {
    sets.iter().map(|s| s.first().map(|e| e.0)).collect()
}

/// Drops classes that win the vote on fewer than `min_images` images, re-votes, and
/// repeats until every class left wins at least that many. Returns the kept classes (old
/// indices, in order) and the own-class lists remapped to the kept classes.
pub fn prune_by_vote(
    own: &[Own],
    neighbours: &[Vec<Neighbour>],
    classes: usize,
    min_images: usize,
    s: &CandidateSettings,
) -> (Vec<usize>, Vec<Own>) {
    let mut kept: Vec<usize> = (0..classes).collect();
    let mut own: Vec<Own> = own.to_vec();
    loop {
        let sets = candidate_sets(&own, neighbours, s);
        let mut wins = vec![0usize; kept.len()];
        for t in vote(&sets).into_iter().flatten() {
            wins[t] += 1;
        }
        // Drop the weakest class below the bar, one at a time: its images' votes move.
        let weakest = (0..kept.len())
            .filter(|&c| wins[c] < min_images)
            .min_by_key(|&c| (wins[c], c));
        let Some(drop) = weakest else {
            return (kept, own);
        };
        kept.remove(drop);
        for mine in &mut own {
            mine.retain(|e| e.0 != drop);
            for e in mine.iter_mut() {
                if e.0 > drop {
                    e.0 -= 1;
                }
            }
        }
        if kept.is_empty() {
            return (kept, own);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nb(index: usize, similarity: f32) -> Neighbour {
        Neighbour { index, similarity }
    }

    #[test]
    fn neighbours_outvote_a_lone_wrong_name() {
        // Image 0 is called class 1, its three close neighbours class 0.
        let own = vec![
            vec![(1, 1.0)],
            vec![(0, 1.0)],
            vec![(0, 1.0)],
            vec![(0, 1.0)],
        ];
        let nbs = vec![
            vec![nb(1, 0.9), nb(2, 0.8), nb(3, 0.7)],
            vec![nb(2, 0.9)],
            vec![nb(1, 0.9)],
            vec![nb(1, 0.5)],
        ];
        let sets = candidate_sets(&own, &nbs, &CandidateSettings::default());
        assert_eq!(sets[0][0].0, 0);
        assert!((sets[0][0].1 - 2.4 / 3.4).abs() < 1e-6);
        assert!((sets[0].iter().map(|e| e.1).sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(vote(&sets), vec![Some(0); 4]);
    }

    #[test]
    fn unnamed_images_get_neighbour_names_and_empty_sets_stay_empty() {
        let own = vec![vec![], vec![(2, 1.0)], vec![]];
        let nbs = vec![vec![nb(1, 0.5)], vec![nb(0, 0.5)], vec![nb(0, -0.2)]];
        let sets = candidate_sets(&own, &nbs, &CandidateSettings::default());
        assert_eq!(sets[0], vec![(2, 1.0)]);
        assert!(sets[2].is_empty());
    }

    #[test]
    fn pruning_moves_a_tiny_class_into_its_neighbours() {
        // Class 1 names one image whose neighbours are class 0.
        let own = vec![
            vec![(0, 1.0)],
            vec![(0, 1.0)],
            vec![(1, 1.0)],
            vec![(0, 1.0)],
        ];
        let nbs = vec![
            vec![nb(1, 0.9)],
            vec![nb(0, 0.9)],
            vec![nb(0, 0.3), nb(1, 0.3), nb(3, 0.3)],
            vec![nb(0, 0.9)],
        ];
        let s = CandidateSettings {
            self_weight: 2.0,
            ..CandidateSettings::default()
        };
        let (kept, own2) = prune_by_vote(&own, &nbs, 2, 2, &s);
        assert_eq!(kept, vec![0]);
        assert!(own2[2].is_empty());
        assert_eq!(own2[0], vec![(0, 1.0)]);
    }
}
