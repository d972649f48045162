//! From logits to a decision: softmax, top-k, and the manifest's reject rule.
//!
//! A frame is rejected (`label = "reject"`) when its top-1 score is below the class's
//! threshold (per-class or global `min_score`) or when top-1 minus top-2 is below
//! `min_margin`. Nothing here allocates: top-k lives in a fixed-capacity heapless vector.

use linesight_shared::manifest::DecisionRule;

/// Most top-k entries a decision carries.
pub const MAX_TOPK: usize = 8;
/// The label reported for a rejected frame.
pub const REJECT: &str = "reject";

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Index of the accepted class; `None` when the reject rule fired.
    pub class: Option<usize>,
    /// The top-1 class, whether accepted or not.
    pub top1: usize,
    /// Softmax score of the top-1 class.
    pub score: f32,
    /// Top-1 minus top-2 score.
    pub margin: f32,
    /// (class, score), best first.
    pub topk: heapless::Vec<(usize, f32), MAX_TOPK>,
}

/// In-place numerically stable softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        for v in x.iter_mut() {
            *v /= sum;
        }
    }
}

/// Applies the rule to softmax `scores`; `k` is clamped to `1..=MAX_TOPK`.
pub fn decide(scores: &[f32], rule: &DecisionRule, k: usize) -> Decision {
    let k = k.clamp(1, MAX_TOPK).min(scores.len().max(1));
    let mut topk: heapless::Vec<(usize, f32), MAX_TOPK> = heapless::Vec::new();
    for (i, &s) in scores.iter().enumerate() {
        let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
        let pos = topk.iter().position(|&(_, t)| s > t).unwrap_or(topk.len());
        if pos < k {
            if topk.len() == k {
                topk.pop();
            }
            // cannot fail: len < k <= capacity after the pop
            let _ = topk.insert(pos, (i, s));
        }
    }
    let (top1, score) = topk.first().copied().unwrap_or((0, 0.0));
    let second = if scores.len() > 1 {
        scores
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != top1)
            .map(|(_, &s)| s)
            .fold(f32::NEG_INFINITY, f32::max)
    } else {
        0.0
    };
    let margin = score - second;
    let threshold = rule
        .per_class_min_score
        .get(top1)
        .copied()
        .unwrap_or(rule.min_score);
    let accepted = score >= threshold && margin >= rule.min_margin && score.is_finite();
    Decision {
        class: accepted.then_some(top1),
        top1,
        score,
        margin,
        topk,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(min_score: f32, min_margin: f32, per: Vec<f32>) -> DecisionRule {
        DecisionRule {
            min_score,
            min_margin,
            per_class_min_score: per,
        }
    }

    #[test]
    fn softmax_sums_to_one_and_is_stable() {
        let mut x = [1000.0, 1001.0, 999.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn decisions() {
        // (scores, rule, expected class, expected top1)
        let cases: Vec<(Vec<f32>, DecisionRule, Option<usize>, usize)> = vec![
            (vec![0.1, 0.7, 0.2], rule(0.0, 0.0, vec![]), Some(1), 1),
            (vec![0.1, 0.7, 0.2], rule(0.8, 0.0, vec![]), None, 1),
            (vec![0.45, 0.55, 0.0], rule(0.0, 0.2, vec![]), None, 1),
            (vec![0.45, 0.55, 0.0], rule(0.0, 0.1, vec![]), Some(1), 1),
            (
                vec![0.1, 0.7, 0.2],
                rule(0.0, 0.0, vec![0.0, 0.9, 0.0]),
                None,
                1,
            ),
            (
                vec![0.8, 0.1, 0.1],
                rule(0.99, 0.0, vec![0.5, 0.9, 0.9]),
                Some(0),
                0,
            ),
            (vec![1.0], rule(0.5, 0.5, vec![]), Some(0), 0),
        ];
        for (i, (scores, r, class, top1)) in cases.into_iter().enumerate() {
            let d = decide(&scores, &r, 3);
            assert_eq!(d.class, class, "case {i}");
            assert_eq!(d.top1, top1, "case {i}");
        }
    }

    #[test]
    fn topk_is_sorted_and_bounded() {
        let scores: Vec<f32> = (0..20).map(|i| ((i * 7) % 20) as f32 / 20.0).collect();
        let d = decide(&scores, &DecisionRule::default(), 100);
        assert_eq!(d.topk.len(), MAX_TOPK);
        assert!(d.topk.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(d.topk[0].1, 0.95);
        let d = decide(&scores, &DecisionRule::default(), 3);
        assert_eq!(d.topk.len(), 3);
    }
}
