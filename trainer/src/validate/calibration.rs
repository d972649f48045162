//! How far the model's scores can be trusted: the reliability diagram and expected
//! calibration error, accuracy against coverage as the reject threshold rises, and the
//! lowest thresholds (global and per class) that reach a target precision.
//!
//! A score is the softmax probability of the top-1 class, the value the edge's reject rule
//! compares with its thresholds (`linesight_edge::decide`). An image is *accepted* at
//! threshold `t` when its score is at least `t` (the edge's own comparison).

use serde::Serialize;

/// One image as the confidence figures see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Top-1 softmax score.
    pub score: f32,
    /// Whether the top-1 name is the true name.
    pub correct: bool,
}

/// One bin of the reliability diagram: images whose score falls in `[low, high)` (the
/// last bin includes 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    pub low: f64,
    pub high: f64,
    pub count: usize,
    /// Mean score of the bin's images (0 when empty).
    pub confidence: f64,
    /// Share of the bin's images that are right (0 when empty).
    pub accuracy: f64,
}

/// The reliability diagram over `bins` equal-width score bins, and the expected
/// calibration error: sum over bins of (bin share of images) x |accuracy - confidence|.
pub fn reliability(items: &[Scored], bins: usize) -> (Vec<Bin>, f64) {
    let bins = bins.max(1);
    let mut count = vec![0usize; bins];
    let mut conf = vec![0f64; bins];
    let mut right = vec![0usize; bins];
    for it in items {
        let s = f64::from(it.score).clamp(0.0, 1.0);
        let b = ((s * bins as f64).floor() as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += s;
        right[b] += usize::from(it.correct);
    }
    let n = items.len().max(1) as f64;
    let mut ece = 0.0;
    let out = (0..bins)
        .map(|b| {
            let (c, k) = (count[b], count[b].max(1) as f64);
            let (confidence, accuracy) = (conf[b] / k, right[b] as f64 / k);
            ece += c as f64 / n * (accuracy - confidence).abs();
            Bin {
                low: b as f64 / bins as f64,
                high: (b + 1) as f64 / bins as f64,
                count: c,
                confidence,
                accuracy,
            }
        })
        .collect();
    (out, ece)
}

/// One point of the accuracy-vs-coverage curve: at `threshold`, `accepted` images of the
/// total are kept, and `correct` of those are right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CoveragePoint {
    pub threshold: f32,
    pub accepted: usize,
    pub correct: usize,
    /// accepted / all images.
    pub coverage: f64,
    /// correct / accepted: the precision of what is kept.
    pub accuracy: f64,
}

/// Sorted by score, highest first, with ties kept together: one point per distinct score
/// (the threshold equal to that score), from the highest threshold (least coverage) to
/// the lowest (every image accepted).
pub fn coverage_curve(items: &[Scored]) -> Vec<CoveragePoint> {
    let mut sorted: Vec<Scored> = items.to_vec();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let n = items.len().max(1) as f64;
    let mut out = Vec::new();
    let (mut accepted, mut correct) = (0, 0);
    let mut i = 0;
    while i < sorted.len() {
        let t = sorted[i].score;
        while i < sorted.len() && sorted[i].score == t {
            accepted += 1;
            correct += usize::from(sorted[i].correct);
            i += 1;
        }
        out.push(CoveragePoint {
            threshold: t,
            accepted,
            correct,
            coverage: accepted as f64 / n,
            accuracy: correct as f64 / accepted as f64,
        });
    }
    out
}

/// A threshold that never accepts: softmax scores are at most 1.
pub const NEVER: f32 = 1.01;

/// The lowest threshold at which the accepted images reach `target` precision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Choice {
    /// [`NEVER`] when no threshold reaches the target (nothing is accepted then).
    pub threshold: f32,
    pub accepted: usize,
    pub correct: usize,
    /// Images the choice was made on.
    pub total: usize,
    pub reached: bool,
}

/// The lowest threshold (one of the scores) whose accepted images are right at least a
/// `target` share of the time: the most coverage the target allows. Precision need not
/// rise with the threshold, so every distinct score is tried.
pub fn lowest_threshold(items: &[Scored], target: f64) -> Choice {
    let mut best = Choice {
        threshold: NEVER,
        accepted: 0,
        correct: 0,
        total: items.len(),
        reached: false,
    };
    for p in coverage_curve(items) {
        // written as a product: correct / accepted >= target without rounding the ratio
        if p.correct as f64 >= target * p.accepted as f64 - 1e-9 {
            best = Choice {
                threshold: p.threshold,
                accepted: p.accepted,
                correct: p.correct,
                total: items.len(),
                reached: true,
            };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(score: f32, correct: bool) -> Scored {
        Scored { score, correct }
    }

    #[test]
    fn ece_by_hand() {
        // 2 bins. Bin [0, 0.5): scores 0.2, 0.4, one right -> confidence 0.3, accuracy
        // 0.5. Bin [0.5, 1]: 0.6, 0.8, 1.0, all right -> confidence 0.8, accuracy 1.
        // ECE = 2/5 * |0.5 - 0.3| + 3/5 * |1 - 0.8| = 0.08 + 0.12 = 0.2.
        let items = [
            s(0.2, true),
            s(0.4, false),
            s(0.6, true),
            s(0.8, true),
            s(1.0, true),
        ];
        let (bins, ece) = reliability(&items, 2);
        assert!((ece - 0.2).abs() < 1e-6, "{ece}");
        assert_eq!(bins[0].count, 2);
        assert!((bins[0].confidence - 0.3).abs() < 1e-6 && bins[0].accuracy == 0.5);
        assert_eq!(bins[1].count, 3);
        assert!((bins[1].confidence - 0.8).abs() < 1e-6 && bins[1].accuracy == 1.0);
        // a perfectly calibrated set: ECE 0
        let (_, ece) = reliability(&[s(0.5, true), s(0.5, false)], 10);
        assert!(ece.abs() < 1e-9);
        // empty bins count for nothing
        let (bins, ece) = reliability(&[], 10);
        assert_eq!((bins.len(), ece), (10, 0.0));
    }

    /// Sorted: 0.9 R, 0.8 W, 0.8 R (tie), 0.5 R, 0.3 W.
    fn sample() -> [Scored; 5] {
        [
            s(0.8, false),
            s(0.3, false),
            s(0.9, true),
            s(0.5, true),
            s(0.8, true),
        ]
    }

    #[test]
    fn coverage_by_hand() {
        let c = coverage_curve(&sample());
        let got: Vec<(f32, usize, usize)> = c
            .iter()
            .map(|p| (p.threshold, p.accepted, p.correct))
            .collect();
        assert_eq!(
            got,
            vec![(0.9, 1, 1), (0.8, 3, 2), (0.5, 4, 3), (0.3, 5, 3)]
        );
        assert_eq!(c[1].coverage, 0.6);
        assert!((c[1].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c[3].coverage, 1.0);
    }

    #[test]
    fn thresholds_by_hand() {
        let items = sample();
        // precision at 0.9: 1/1, 0.8: 2/3, 0.5: 3/4, 0.3: 3/5
        let c = lowest_threshold(&items, 0.75);
        assert_eq!(
            (c.threshold, c.accepted, c.correct, c.reached),
            (0.5, 4, 3, true)
        );
        // not monotone: 0.7 is reached at 0.5 (3/4) though not at 0.8 (2/3)
        assert_eq!(lowest_threshold(&items, 0.7).threshold, 0.5);
        assert_eq!(lowest_threshold(&items, 0.8).threshold, 0.9);
        assert_eq!(lowest_threshold(&items, 0.6).threshold, 0.3);
        // the best image is wrong: no threshold reaches 1.0
        let c = lowest_threshold(&[s(0.9, false), s(0.5, true)], 1.0);
        assert_eq!((c.threshold, c.accepted, c.reached), (NEVER, 0, false));
        let c = lowest_threshold(&[], 0.9);
        assert!(!c.reached);
    }
}
