//! Per-class precision, recall, F1 and support, and the confusion matrix with its most
//! confused pairs.
//!
//! Classes are the true names of the scored split. A predicted name that is no true name
//! (a name the model learnt that the test set does not have) is an *outside* name: its
//! predictions are all wrong, and it gets its own column in the confusion matrix.

use super::interval::{wilson, Estimate};
use serde::Serialize;

/// One class's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassRow {
    pub name: String,
    /// Images of this class.
    pub support: usize,
    /// Images predicted as this class.
    pub predicted: usize,
    /// Images of this class predicted as it.
    pub correct: usize,
    /// correct / predicted with its Wilson interval; None when nothing was predicted as it.
    pub precision: Option<Estimate>,
    /// correct / support with its Wilson interval; None for an outside name (support 0).
    pub recall: Option<Estimate>,
    /// 2 correct / (support + predicted): the harmonic mean of precision and recall, 0 when
    /// either is 0 or undefined.
    pub f1: f64,
}

/// Per-class rows, worst first (lowest F1, then lowest recall, then most images). `truth`
/// and `pred` index `classes` (true names first, outside names after them); `n_true` is
/// the number of true names.
pub fn per_class(
    truth: &[usize],
    pred: &[usize],
    classes: &[String],
    n_true: usize,
) -> Vec<ClassRow> {
    let k = classes.len();
    let (mut support, mut predicted, mut correct) = (vec![0; k], vec![0; k], vec![0; k]);
    for (&t, &p) in truth.iter().zip(pred) {
        support[t] += 1;
        predicted[p] += 1;
        correct[t] += usize::from(t == p);
    }
    let mut rows: Vec<ClassRow> = (0..k)
        .filter(|&c| c < n_true || predicted[c] > 0)
        .map(|c| ClassRow {
            name: classes[c].clone(),
            support: support[c],
            predicted: predicted[c],
            correct: correct[c],
            precision: wilson(correct[c], predicted[c]),
            recall: wilson(correct[c], support[c]),
            f1: if support[c] + predicted[c] == 0 {
                0.0
            } else {
                2.0 * correct[c] as f64 / (support[c] + predicted[c]) as f64
            },
        })
        .collect();
    rows.sort_by(|a, b| {
        a.f1.total_cmp(&b.f1)
            .then(recall_of(a).total_cmp(&recall_of(b)))
            .then(b.support.cmp(&a.support))
            .then(a.name.cmp(&b.name))
    });
    rows
}

fn recall_of(r: &ClassRow) -> f64 {
    r.recall.map_or(0.0, |e| e.value)
}

/// The confusion matrix: `counts[t][p]` images of true class `t` predicted as `p`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confusion {
    /// Row names (true classes).
    pub rows: Vec<String>,
    /// Column names: the true classes in the same order, then the outside names predicted.
    pub columns: Vec<String>,
    pub counts: Vec<Vec<usize>>,
}

/// One off-diagonal cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    pub truth: String,
    pub predicted: String,
    pub count: usize,
    /// count / the true class's support.
    pub share: f64,
    /// Images of the pair (indices into the scored images), most confident first.
    pub examples: Vec<usize>,
}

/// Builds the matrix; columns past `n_true` are kept only when predicted.
pub fn confusion(truth: &[usize], pred: &[usize], classes: &[String], n_true: usize) -> Confusion {
    let k = classes.len();
    let mut full = vec![vec![0usize; k]; n_true];
    for (&t, &p) in truth.iter().zip(pred) {
        full[t][p] += 1;
    }
    let keep: Vec<usize> = (0..k)
        .filter(|&c| c < n_true || full.iter().any(|r| r[c] > 0))
        .collect();
    Confusion {
        rows: classes[..n_true].to_vec(),
        columns: keep.iter().map(|&c| classes[c].clone()).collect(),
        counts: full
            .iter()
            .map(|r| keep.iter().map(|&c| r[c]).collect())
            .collect(),
    }
}

/// The `top` most frequent confusions (ties: by name), each with up to `examples` images,
/// the highest `score` first.
pub fn confused_pairs(
    truth: &[usize],
    pred: &[usize],
    score: &[f32],
    classes: &[String],
    top: usize,
    examples: usize,
) -> Vec<Pair> {
    let mut cells: std::collections::BTreeMap<(usize, usize), Vec<usize>> = Default::default();
    for (i, (&t, &p)) in truth.iter().zip(pred).enumerate() {
        if t != p {
            cells.entry((t, p)).or_default().push(i);
        }
    }
    let mut support = vec![0usize; classes.len()];
    for &t in truth {
        support[t] += 1;
    }
    let mut pairs: Vec<Pair> = cells
        .into_iter()
        .map(|((t, p), mut imgs)| {
            imgs.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b)));
            Pair {
                truth: classes[t].clone(),
                predicted: classes[p].clone(),
                count: imgs.len(),
                share: imgs.len() as f64 / support[t].max(1) as f64,
                examples: imgs.into_iter().take(examples).collect(),
            }
        })
        .collect();
    pairs.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then(a.truth.cmp(&b.truth))
            .then(a.predicted.cmp(&b.predicted))
    });
    pairs.truncate(top);
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn per_class_by_hand() {
        // classes a, b (true) and x (outside). truth/pred:
        // a->a, a->a, a->b, b->b, b->x, b->a
        let classes = names(&["a", "b", "x"]);
        let truth = [0, 0, 0, 1, 1, 1];
        let pred = [0, 0, 1, 1, 2, 0];
        let rows = per_class(&truth, &pred, &classes, 2);
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap();
        // a: support 3, predicted 3, correct 2: P = R = 2/3, F1 = 4/6
        let a = get("a");
        assert_eq!((a.support, a.predicted, a.correct), (3, 3, 2));
        assert!((a.precision.unwrap().value - 2.0 / 3.0).abs() < 1e-12);
        assert!((a.f1 - 4.0 / 6.0).abs() < 1e-12);
        // b: support 3, predicted 2, correct 1: P 1/2, R 1/3, F1 = 2/5
        let b = get("b");
        assert_eq!((b.support, b.predicted, b.correct), (3, 2, 1));
        assert!((b.recall.unwrap().value - 1.0 / 3.0).abs() < 1e-12);
        assert!((b.f1 - 0.4).abs() < 1e-12);
        // x: an outside name, predicted once, never right
        let x = get("x");
        assert_eq!((x.support, x.predicted, x.f1), (0, 1, 0.0));
        assert!(x.recall.is_none() && x.precision.unwrap().value == 0.0);
        // worst first: x (F1 0), b (0.4), a (0.67)
        let order: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["x", "b", "a"]);
    }

    #[test]
    fn confusion_by_hand() {
        let classes = names(&["a", "b", "x", "y"]);
        let truth = [0, 0, 0, 1, 1, 1];
        let pred = [0, 0, 1, 1, 2, 0];
        let c = confusion(&truth, &pred, &classes, 2);
        // y is never predicted: no column
        assert_eq!(c.columns, names(&["a", "b", "x"]));
        assert_eq!(c.counts, vec![vec![2, 1, 0], vec![1, 1, 1]]);
        let score = [0.9, 0.8, 0.7, 0.6, 0.5, 0.95];
        let p = confused_pairs(&truth, &pred, &score, &classes, 10, 2);
        let got: Vec<(&str, &str, usize)> = p
            .iter()
            .map(|p| (p.truth.as_str(), p.predicted.as_str(), p.count))
            .collect();
        assert_eq!(got, [("a", "b", 1), ("b", "a", 1), ("b", "x", 1)]);
        assert_eq!(p[1].examples, vec![5]);
        assert!((p[0].share - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn pairs_are_ranked_by_count_and_examples_by_score() {
        let classes = names(&["a", "b"]);
        let truth = [0, 0, 0, 1];
        let pred = [1, 1, 1, 0];
        let score = [0.5, 0.9, 0.7, 0.99];
        let p = confused_pairs(&truth, &pred, &score, &classes, 1, 2);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].count, p[0].examples.clone()), (3, vec![1, 2]));
    }
}
