//! Accuracy measures for vocabulary-free classification.
//!
//! - cACC (clustering accuracy): predicted names and true classes are matched one-to-one
//!   by the Hungarian algorithm on the contingency matrix (padded to square), and the
//!   share of images on matched pairs is the accuracy. It scores a model whose names
//!   differ from the dataset's but whose grouping is right.
//! - top-1 exact: the canonical predicted name equals the canonical true name.
//! - sACC (semantic accuracy): the mean cosine between the sentence embeddings
//!   (all-MiniLM-L6-v2, [`crate::sentence`]) of each predicted name and its true name. It
//!   gives partial credit to near misses ("cardinal" for "Northern Cardinal").

use crate::sentence::{cosine, SentenceEncoder};
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
    let mapping = (0..n_pred)
        .map(|p| (assign[p] < n_true).then_some(assign[p]))
        .collect();
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

/// sACC: the mean over pairs of the cosine between the sentence embeddings of
/// `predicted[i]` and `truth[i]`. Each distinct name is embedded once. 0 for no pairs.
///
/// Fails when the two lists differ in length or the encoder fails.
pub fn semantic_accuracy(
    encoder: &SentenceEncoder,
    predicted: &[String],
    truth: &[String],
) -> anyhow::Result<f64> {
    mean_pair_cosine(|names| encoder.encode(names), predicted, truth)
}

/// The cosine between the sentence embeddings of `predicted[i]` and `truth[i]`, per pair
/// (sACC is their mean). Each distinct name is embedded once.
///
/// Fails when the two lists differ in length or the encoder fails.
pub fn pair_cosines(
    encoder: &SentenceEncoder,
    predicted: &[String],
    truth: &[String],
) -> anyhow::Result<Vec<f64>> {
    pair_cosines_with(|names| encoder.encode(names), predicted, truth)
}

/// [`semantic_accuracy`] over any embedding function (one vector per name, in order).
fn mean_pair_cosine(
    embed: impl FnOnce(&[&str]) -> anyhow::Result<Vec<Vec<f32>>>,
    predicted: &[String],
    truth: &[String],
) -> anyhow::Result<f64> {
    let c = pair_cosines_with(embed, predicted, truth)?;
    Ok(if c.is_empty() {
        0.0
    } else {
        c.iter().sum::<f64>() / c.len() as f64
    })
}

/// [`pair_cosines`] over any embedding function.
fn pair_cosines_with(
    embed: impl FnOnce(&[&str]) -> anyhow::Result<Vec<Vec<f32>>>,
    predicted: &[String],
    truth: &[String],
) -> anyhow::Result<Vec<f64>> {
    anyhow::ensure!(
        predicted.len() == truth.len(),
        "sACC needs one prediction per truth ({} predictions, {} truths)",
        predicted.len(),
        truth.len()
    );
    if predicted.is_empty() {
        return Ok(Vec::new());
    }
    let mut index = std::collections::BTreeMap::<&str, usize>::new();
    for name in predicted.iter().chain(truth) {
        let next = index.len();
        index.entry(name.as_str()).or_insert(next);
    }
    let mut names = vec![""; index.len()];
    for (&name, &i) in &index {
        names[i] = name;
    }
    let vectors = embed(&names)?;
    anyhow::ensure!(
        vectors.len() == names.len(),
        "the encoder returned {} vectors for {} names",
        vectors.len(),
        names.len()
    );
    Ok(predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| cosine(&vectors[index[p.as_str()]], &vectors[index[t.as_str()]]) as f64)
        .collect())
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

    #[test]
    fn sacc_embeds_each_name_once_and_averages() {
        // a fake encoder: names -> fixed 2-d vectors
        let table = |n: &str| match n {
            "a" => vec![1.0, 0.0],
            "b" => vec![0.0, 1.0],
            _ => vec![1.0, 1.0],
        };
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut calls = 0;
        let mut embed = |names: &[&str]| -> anyhow::Result<Vec<Vec<f32>>> {
            calls += 1;
            let mut sorted = names.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), names.len(), "a name was embedded twice");
            Ok(names.iter().map(|n| table(n)).collect())
        };
        let acc = mean_pair_cosine(
            &mut embed,
            &s(&["a", "a", "b", "c"]),
            &s(&["a", "b", "b", "a"]),
        )
        .unwrap();
        // pairs (a,a) (a,b) (b,b) (c,a): cosines 1, 0, 1, 1/sqrt(2)
        assert!((acc - (2.0 + 0.5f64.sqrt()) / 4.0).abs() < 1e-6, "{acc}");
        assert_eq!(calls, 1);
        assert_eq!(mean_pair_cosine(|_| unreachable!(), &[], &[]).unwrap(), 0.0);
        assert!(mean_pair_cosine(|_| unreachable!(), &s(&["a"]), &[]).is_err());
    }
}

/// The name-level scores every evaluation reports.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NameScores {
    /// Hungarian one-to-one matching of predicted names to true classes.
    pub cacc: f64,
    /// Share of canonical predicted names equal to the canonical true name.
    pub top1_exact: f64,
    /// Mean sentence-embedding cosine of predicted and true names (None without the model).
    pub sacc: Option<f64>,
    pub n: usize,
    pub classes_predicted: usize,
}

/// Scores predicted names against true names (one each per image).
pub fn score_names(
    predicted: &[String],
    truth: &[String],
    sentence: Option<&SentenceEncoder>,
) -> anyhow::Result<NameScores> {
    anyhow::ensure!(predicted.len() == truth.len(), "one prediction per truth");
    // Scores of nothing would be NaN (0 / 0), written into reports and checkpoints.
    anyhow::ensure!(
        !predicted.is_empty(),
        "nothing to score: none of the images could be read"
    );
    let index = |names: &[String]| -> Vec<usize> {
        let mut distinct: Vec<&String> = names.iter().collect();
        distinct.sort();
        distinct.dedup();
        names
            .iter()
            .map(|n| distinct.binary_search(&n).unwrap_or(0))
            .collect()
    };
    let (p, t) = (index(predicted), index(truth));
    let n = predicted.len();
    let (cacc, _) = if n == 0 {
        (0.0, Vec::new())
    } else {
        cluster_accuracy(&p, &t)
    };
    let exact = predicted
        .iter()
        .zip(truth)
        .filter(|(a, b)| canonical(a) == canonical(b))
        .count();
    let sacc = match sentence {
        Some(enc) => Some(semantic_accuracy(enc, predicted, truth)?),
        None => None,
    };
    let mut distinct = p.clone();
    distinct.sort_unstable();
    distinct.dedup();
    Ok(NameScores {
        cacc,
        top1_exact: exact as f64 / n.max(1) as f64,
        sacc,
        n,
        classes_predicted: distinct.len(),
    })
}
