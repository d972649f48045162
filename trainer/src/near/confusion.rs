//! The MLLM's habits: which class it names as which, estimated from every image's answers,
//! its neighbours and a few expert-verified images; and every image's candidate weights
//! corrected for them.
//!
//! The model is Dawid and Skene's (1979) one annotator with a confusion matrix; the
//! backbone's neighbourhoods are the witness that does not share the MLLM's habits:
//!
//! - `T[i][j]` = P(MLLM names class j | true class i), with a last column for answers that
//!   name no class (generic, outside, other); `prior[i]` = share of class i;
//! - estimate: `T` and `prior` from every image's current class (the heaviest of its
//!   candidates: hard EM, because the soft weights carry the correction's own spread back
//!   into `T` and feed on it) and its answers, verified images counted `anchor_weight`
//!   times with their verified class, plus a diagonal Dirichlet prior of `prior_strength`
//!   answers per class;
//! - correct (backward): each answer j becomes the classes that produce it,
//!   `P(i | j) ∝ T[i][j]` (uniform over classes); a verified image's answers become its
//!   class. The
//!   candidate sets are rebuilt from these corrected names and the neighbours as before
//!   (`candidates::candidate_sets`), and are the next round's class weights.
//!
//! Starting from the plain neighbour vote, a habit (class A named B on a share of A's
//! images) shows up as `T[A][B]`: an answer B then carries part of its weight to A, so an
//! image named B among A's neighbours goes to A more surely, while an image named B among
//! B's neighbours stays B. Verified images pin their class and lend it to their neighbours.

use crate::knn::Neighbour;
use crate::near::candidates::{candidate_sets, CandidateSettings, Own};
use serde::{Deserialize, Serialize};

/// How the confusion matrix is estimated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfusionSettings {
    /// Rounds of estimate + correction. One by default: on cub26 (accuracy 0.6, habits
    /// 0.5, seed 1) the vote's accuracy after 1 / 3 / 10 rounds was 68.4 / 63.7 / 61.6 %
    /// against 68.7 % before correction: further rounds drift classes into each other.
    /// (Measured with `refine --correct-confusion` on the levers-table seed-1 labels and
    /// this default changed; `[refine.confusion] iterations` in a pipeline config sets it.)
    pub iterations: usize,
    /// A verified image counts this many times in the estimate of `T`.
    pub anchor_weight: f32,
    /// Pseudo-answers per class of the Dirichlet prior on each row of `T`.
    pub prior_strength: f32,
    /// Share of the prior's pseudo-answers on the diagonal (the rest spread evenly).
    pub prior_accuracy: f32,
    /// Habit pairs are reported from this rate `T[i][j]` on.
    pub report_rate: f32,
}

impl ConfusionSettings {
    /// Checks the numbers against their ranges, naming each `{prefix}{key}`.
    pub fn validate(&self, prefix: &str) -> Result<(), crate::bounds::BoundError> {
        use crate::bounds::{Bound, Checker};
        Checker::new(prefix)
            .check("iterations", self.iterations, Bound::AT_LEAST_ONE)
            .check("anchor_weight", self.anchor_weight, Bound::POSITIVE)
            .check("prior_strength", self.prior_strength, Bound::POSITIVE)
            .check("prior_accuracy", self.prior_accuracy, Bound::UNIT)
            .check("report_rate", self.report_rate, Bound::UNIT)
            .finish()
    }
}

impl Default for ConfusionSettings {
    fn default() -> Self {
        ConfusionSettings {
            iterations: 1,
            anchor_weight: 3.0,
            prior_strength: 2.0,
            prior_accuracy: 0.6,
            report_rate: 0.1,
        }
    }
}

/// One estimated habit: images of `true_class` named `named`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Habit {
    pub true_class: usize,
    pub named: usize,
    pub true_name: String,
    pub named_name: String,
    /// Estimated `T[true][named]`.
    pub rate: f32,
    /// Answers of this kind on images whose corrected class is `true_class`.
    pub answers: f32,
    /// Verified images of `true_class` among whose answers `named` appears.
    pub verified_seen: usize,
}

/// The estimate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confusion {
    pub settings: ConfusionSettings,
    pub classes: usize,
    /// Row-major `classes x (classes + 1)`; the last column: answers naming no class.
    pub rates: Vec<f32>,
    pub prior: Vec<f32>,
    /// Estimated accuracy of the MLLM on the images (prior-weighted diagonal).
    pub accuracy: f32,
    /// Off-diagonal pairs at or above `report_rate`, highest first.
    pub habits: Vec<Habit>,
}

/// Estimates `T` and returns it with every image's corrected candidate set.
///
/// `own[x]` = image x's classes with their share of its answers, `answers[x]` = how many
/// answers it has, `start[x]` = its starting class weights (the neighbour vote's candidate
/// set), `verified` = (image, class) pairs.
#[allow(clippy::too_many_arguments)]
pub fn estimate(
    own: &[Own],
    answers: &[usize],
    neighbours: &[Vec<Neighbour>],
    start: &[Vec<(usize, f32)>],
    verified: &[(usize, usize)],
    names: &[String],
    candidates: &CandidateSettings,
    s: &ConfusionSettings,
) -> (Confusion, Vec<Vec<(usize, f32)>>) {
    let n = own.len();
    let k = names.len();
    let kc = k + 1;
    // Answer counts per image over classes + "no class".
    let counts: Vec<Vec<(usize, f32)>> = own
        .iter()
        .zip(answers)
        .map(|(o, &m)| {
            let m = m as f32;
            let mut c: Vec<(usize, f32)> = o.iter().map(|&(j, sh)| (j, sh * m)).collect();
            let named: f32 = c.iter().map(|e| e.1).sum();
            if m - named > 1e-4 {
                c.push((k, m - named));
            }
            c
        })
        .collect();
    let mut is_verified = vec![None; n];
    for &(x, c) in verified {
        if x < n && c < k {
            is_verified[x] = Some(c);
        }
    }
    let clamp = |sets: &mut Vec<Vec<(usize, f32)>>| {
        for (x, v) in is_verified.iter().enumerate() {
            if let Some(c) = v {
                sets[x] = vec![(*c, 1.0)];
            }
        }
    };
    let mut sets: Vec<Vec<(usize, f32)>> = start.to_vec();
    clamp(&mut sets);
    let mut rates = vec![0f32; k * kc];
    let mut prior = vec![1.0 / k.max(1) as f32; k];
    for _ in 0..s.iterations.max(1) {
        // Estimate T and the prior from the current class weights.
        let off = s.prior_strength * (1.0 - s.prior_accuracy) / k.max(1) as f32;
        for i in 0..k {
            for j in 0..kc {
                rates[i * kc + j] = if i == j {
                    s.prior_strength * s.prior_accuracy
                } else {
                    off
                };
            }
        }
        let mut mass = vec![1.0f32; k];
        for x in 0..n {
            let w = if is_verified[x].is_some() {
                s.anchor_weight
            } else {
                1.0
            };
            let Some(&(i, _)) = sets[x].first().filter(|e| e.0 < k) else {
                continue;
            };
            mass[i] += w;
            for &(j, c) in &counts[x] {
                rates[i * kc + j] += w * c;
            }
        }
        for i in 0..k {
            let row = &mut rates[i * kc..(i + 1) * kc];
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= sum);
        }
        let total: f32 = mass.iter().sum();
        prior = mass.iter().map(|m| m / total).collect();
        // Backward correction of every answer, then the candidate sets again.
        let back: Vec<Vec<(usize, f32)>> = (0..k)
            .map(|j| {
                // Uniform over classes, not `prior`: with the estimated shares a class
                // that loses images loses weight in every answer and the estimate
                // collapses onto a few classes (seen on cub26).
                let col: Vec<f32> = (0..k).map(|i| rates[i * kc + j]).collect();
                let sum: f32 = col.iter().sum();
                col.iter()
                    .enumerate()
                    .filter(|e| *e.1 > 0.0)
                    .map(|(i, &v)| (i, v / sum))
                    .collect()
            })
            .collect();
        let corrected: Vec<Own> = (0..n)
            .map(|x| match is_verified[x] {
                Some(c) => vec![(c, 1.0)],
                None => {
                    let mut row = vec![0f32; k];
                    for &(j, share) in &own[x] {
                        for &(i, b) in &back[j] {
                            row[i] += share * b;
                        }
                    }
                    row.into_iter().enumerate().filter(|e| e.1 > 1e-4).collect()
                }
            })
            .collect();
        sets = candidate_sets(&corrected, neighbours, candidates);
        clamp(&mut sets);
    }
    let mut habits = Vec::new();
    for i in 0..k {
        for j in 0..k {
            let rate = rates[i * kc + j];
            if i == j || rate < s.report_rate {
                continue;
            }
            let answers_ij: f32 = (0..n)
                .filter(|&x| sets[x].first().is_some_and(|e| e.0 == i))
                .map(|x| counts[x].iter().find(|e| e.0 == j).map_or(0.0, |e| e.1))
                .sum();
            let verified_seen = verified
                .iter()
                .filter(|&&(x, c)| c == i && x < n && own[x].iter().any(|e| e.0 == j))
                .count();
            habits.push(Habit {
                true_class: i,
                named: j,
                true_name: names[i].clone(),
                named_name: names[j].clone(),
                rate,
                answers: answers_ij,
                verified_seen,
            });
        }
    }
    habits.sort_by(|a, b| b.rate.total_cmp(&a.rate));
    let accuracy = (0..k).map(|i| prior[i] * rates[i * kc + i]).sum();
    (
        Confusion {
            settings: s.clone(),
            classes: k,
            rates,
            prior,
            accuracy,
            habits,
        },
        sets,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::near::candidates::vote;

    /// Two clusters of 20 images, A (0..20) and B (20..40), each image's neighbours its
    /// own cluster. The MLLM names `habit` in 5 of the A images B (a habit) and B images B.
    fn habit_world(habit: usize) -> (Vec<Own>, Vec<Vec<Neighbour>>) {
        let n = 40;
        let own: Vec<Own> = (0..n)
            .map(|x| {
                if x < 20 && x % 5 < habit {
                    vec![(1, 1.0)]
                } else if x < 20 {
                    vec![(0, 1.0)]
                } else {
                    vec![(1, 1.0)]
                }
            })
            .collect();
        let neighbours = (0..n)
            .map(|x| {
                let base = if x < 20 { 0 } else { 20 };
                (0..20)
                    .map(|d| base + (x - base + 1 + d) % 20)
                    .filter(|&y| y != x)
                    .take(8)
                    .map(|y| Neighbour {
                        index: y,
                        similarity: 0.8,
                    })
                    .collect()
            })
            .collect();
        (own, neighbours)
    }

    #[test]
    fn a_habit_is_estimated_and_its_images_go_back_to_their_class() {
        let (own, nbs) = habit_world(2);
        let start = candidate_sets(&own, &nbs, &CandidateSettings::default());
        let names = vec!["A".to_string(), "B".to_string()];
        let answers = vec![1; own.len()];
        let verified = [(0, 0), (20, 1)];
        let (c, sets) = estimate(
            &own,
            &answers,
            &nbs,
            &start,
            &verified,
            &names,
            &CandidateSettings::default(),
            &ConfusionSettings::default(),
        );
        let t_ab = c.rates[1];
        assert!(
            (0.25..0.5).contains(&t_ab),
            "T[A][B] = {t_ab}, 8 of 20 A images named B"
        );
        assert!(c.rates[3 + 1] > 0.85, "B is named B");
        assert_eq!(c.habits.len(), 1);
        assert_eq!((c.habits[0].true_class, c.habits[0].named), (0, 1));
        let corrected = vote(&sets);
        for (x, v) in corrected.iter().enumerate() {
            assert_eq!(*v, Some(usize::from(x >= 20)), "image {x}");
        }
    }

    #[test]
    fn without_habits_nothing_is_reported_and_verified_images_keep_their_class() {
        let (own, nbs) = habit_world(0);
        let start = candidate_sets(&own, &nbs, &CandidateSettings::default());
        let names = vec!["A".to_string(), "B".to_string()];
        let (cs, s) = (CandidateSettings::default(), ConfusionSettings::default());
        let (c, _) = estimate(&own, &vec![1; 40], &nbs, &start, &[], &names, &cs, &s);
        assert!(c.habits.is_empty(), "{:?}", c.habits);
        assert!(c.accuracy > 0.9, "{}", c.accuracy);
        // An expert says image 5 is B although it sits among A and was named A.
        let (c, sets) = estimate(&own, &vec![1; 40], &nbs, &start, &[(5, 1)], &names, &cs, &s);
        assert_eq!(sets[5], vec![(1, 1.0)]);
        assert_eq!(c.habits.len(), 1);
        assert_eq!((c.habits[0].true_class, c.habits[0].verified_seen), (1, 1));
    }
}
