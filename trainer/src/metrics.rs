//! Accuracy measures for vocabulary-free classification.
//!
//! - cACC (clustering accuracy): predicted names and true classes are matched one-to-one
//!   by the Hungarian algorithm on the contingency matrix (padded to square), and the
//!   share of images on matched pairs is the accuracy. It scores a model whose names
//!   differ from the dataset's but whose grouping is right.
//! - top-1 exact: the canonical predicted name equals the canonical true name.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// cACC of integer predictions against integer truths.
/// Returns the accuracy in [0, 1] and, for each predicted id, the true class it was matched
/// to (None when it was matched to padding).
pub fn cluster_accuracy(pred: &[usize], truth: &[usize]) -> (f64, Vec<Option<usize>>) {
    assert_eq!(pred.len(), truth.len(), "one prediction per truth");
    if pred.is_empty() {
        return (0.0, vec![]);
    }
    let n_pred = pred.iter().max().map_or(0, |m| m + 1);
    let n_true = truth.iter().max().map_or(0, |m| m + 1);
    let n = n_pred.max(n_true);
    let mut m = Matrix::new(n, n, 0i64);
    for (&p, &t) in pred.iter().zip(truth) {
        m[(p, t)] += 1;
    }
    let (total, assign) = kuhn_munkres(&m);
    let mapping = (0..n_pred).map(|p| (assign[p] < n_true).then_some(assign[p])).collect();
    (total as f64 / pred.len() as f64, mapping)
}

/// A name's canonical form for exact comparison: lower case, ASCII letters and digits
/// only, words separated by one space (`"Anna's  Hummingbird."` -> `"annas hummingbird"`).
pub fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut space = false;
    for ch in name.chars() {
        if ch == '\'' || ch == '\u{2019}' {
            continue;
        }
        if ch.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.extend(ch.to_lowercase());
        } else {
            space = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cacc_is_permutation_invariant() {
        let truth = [0, 0, 1, 1, 2, 2];
        // names permuted: 0->2, 1->0, 2->1, all right
        let pred = [2, 2, 0, 0, 1, 1];
        assert_eq!(cluster_accuracy(&pred, &truth).0, 1.0);
        // one mistake
        let pred = [2, 2, 0, 1, 1, 1];
        assert!((cluster_accuracy(&pred, &truth).0 - 5.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn cacc_is_one_to_one() {
        // everything predicted as one name: only one class can be matched to it
        let truth = [0, 0, 1, 1, 2, 2];
        let pred = [0; 6];
        assert!((cluster_accuracy(&pred, &truth).0 - 2.0 / 6.0).abs() < 1e-12);
        // more predicted names than classes: the extra ones match padding
        let pred = [0, 3, 1, 4, 2, 5];
        let (acc, map) = cluster_accuracy(&pred, &truth);
        assert!((acc - 3.0 / 6.0).abs() < 1e-12);
        assert_eq!(map.iter().filter(|m| m.is_some()).count(), 3);
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("Anna's  Hummingbird."), "annas hummingbird");
        assert_eq!(canonical("Pied-billed Grebe"), "pied billed grebe");
        assert_eq!(canonical("  WESTERN grebe "), "western grebe");
    }
}
