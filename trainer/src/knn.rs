//! Cosine k-nearest neighbours of L2-normalized embeddings, computed in row blocks so
//! that 10k x 10k similarities never sit in memory at once.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};

/// Rows compared at once against all rows: 512 x N similarities per block.
const BLOCK: usize = 512;

/// One neighbour: its row and the cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Neighbour {
    pub index: usize,
    pub similarity: f32,
}

/// For each row of `x` (`n` rows of `dim` values, each L2-normalized), its `k` most
/// similar other rows, most similar first (ties: lower index first). A row is never its
/// own neighbour; with `n - 1 < k` every row gets `n - 1`.
pub fn cosine_knn(x: &[f32], n: usize, dim: usize, k: usize) -> Result<Vec<Vec<Neighbour>>> {
    ensure!(
        x.len() == n * dim,
        "{} values for {n} rows of {dim}",
        x.len()
    );
    let k = k.min(n.saturating_sub(1));
    if n == 0 {
        return Ok(Vec::new());
    }
    let device = Device::Cpu;
    let all = Tensor::from_slice(x, (n, dim), &device)?;
    let all_t = all.t()?.contiguous()?;
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let rows = BLOCK.min(n - start);
        let sims = all
            .narrow(0, start, rows)?
            .matmul(&all_t)?
            .to_vec2::<f32>()?;
        for (r, row) in sims.into_iter().enumerate() {
            out.push(top_k(&row, start + r, k));
        }
        start += rows;
    }
    Ok(out)
}

/// The `k` largest entries of `row` except `skip`, largest first.
fn top_k(row: &[f32], skip: usize, k: usize) -> Vec<Neighbour> {
    let mut idx: Vec<usize> = (0..row.len()).filter(|&j| j != skip).collect();
    let cmp = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter()
        .map(|j| Neighbour {
            index: j,
            similarity: row[j],
        })
        .collect()
}

/// L2-normalizes each row of `x` in place (rows of zero length stay zero).
pub fn normalize_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > crate::head::NORM_EPS {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_brute_force_across_blocks() {
        // 1,100 rows span three blocks.
        let (n, dim, k) = (1100, 8, 5);
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
        let mut x: Vec<f32> = (0..n * dim)
            .map(|_| rand::Rng::random::<f32>(&mut rng) - 0.5)
            .collect();
        normalize_rows(&mut x, dim);
        let got = cosine_knn(&x, n, dim, k).unwrap();
        for i in [0, 511, 512, 1023, 1099] {
            let mut all: Vec<(f32, usize)> = (0..n)
                .filter(|&j| j != i)
                .map(|j| {
                    let s: f32 = (0..dim).map(|d| x[i * dim + d] * x[j * dim + d]).sum();
                    (s, j)
                })
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            // Same similarities in the same order (the block matmul sums in another order
            // than this loop, so exact ties may swap indices, values may not differ).
            assert_eq!(got[i].len(), k);
            for (nb, want) in got[i].iter().zip(&all[..k]) {
                assert!(
                    (nb.similarity - want.0).abs() < 1e-5,
                    "row {i}: {nb:?} vs {want:?}"
                );
                let s: f32 = (0..dim)
                    .map(|d| x[i * dim + d] * x[nb.index * dim + d])
                    .sum();
                assert!((s - nb.similarity).abs() < 1e-5, "row {i}");
            }
        }
    }

    #[test]
    fn small_sets_and_self_exclusion() {
        let x = [1.0, 0.0, 0.0, 1.0];
        let got = cosine_knn(&x, 2, 2, 10).unwrap();
        assert_eq!(got[0].len(), 1);
        assert_eq!(got[0][0].index, 1);
        assert!(cosine_knn(&[], 0, 4, 3).unwrap().is_empty());
        assert!(cosine_knn(&[1.0], 2, 4, 3).is_err());
    }
}
