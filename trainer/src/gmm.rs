//! A two-component Gaussian mixture on one variable, fitted by EM: NeaR's split of
//! per-sample training losses into a low-loss (clean) and a high-loss (noisy) component.
//!
//! Written here rather than taken from a crate: the 1-D, two-component case is ~60 lines,
//! and the crates that fit mixtures (linfa-clustering) pull ndarray and a BLAS stack into
//! the trainer for it.

/// A fitted mixture; component 0 has the lower mean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gmm2 {
    pub weight: [f64; 2],
    pub mean: [f64; 2],
    pub var: [f64; 2],
}

/// Floor of a component's variance, so that a component collapsing onto identical
/// values does not give infinite densities.
const MIN_VAR: f64 = 1e-6;

impl Gmm2 {
    /// Fits the mixture to `x` by EM (at most `iters` steps, stops when the log-likelihood
    /// gains less than 1e-8 per sample). Starts from the lower and upper thirds of the
    /// data. Returns `None` for fewer than 2 values or values that are all equal.
    pub fn fit(x: &[f64], iters: usize) -> Option<Gmm2> {
        let n = x.len();
        if n < 2 {
            return None;
        }
        let mut sorted: Vec<f64> = x.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
        if sorted.len() < 2 || hi - lo < 1e-12 {
            return None;
        }
        let third = sorted.len() / 3;
        let mean_of = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
        let total_var = {
            let m = mean_of(&sorted);
            sorted.iter().map(|v| (v - m).powi(2)).sum::<f64>() / sorted.len() as f64
        };
        let mut g = Gmm2 {
            weight: [0.5, 0.5],
            mean: [
                mean_of(&sorted[..third.max(1)]),
                mean_of(&sorted[sorted.len() - third.max(1)..]),
            ],
            var: [total_var.max(MIN_VAR) / 4.0; 2],
        };
        let mut resp = vec![0.0f64; n];
        let mut last_ll = f64::NEG_INFINITY;
        for _ in 0..iters {
            // E step: responsibility of component 0.
            let mut ll = 0.0;
            for (r, &v) in resp.iter_mut().zip(x) {
                let (a, b) = (g.weighted_density(0, v), g.weighted_density(1, v));
                let s = a + b;
                *r = if s > 0.0 {
                    a / s
                } else {
                    f64::from(v < g.mean[1])
                };
                ll += s.max(f64::MIN_POSITIVE).ln();
            }
            // M step.
            let r0: f64 = resp.iter().sum();
            let r1 = n as f64 - r0;
            if r0 < 1e-9 || r1 < 1e-9 {
                break;
            }
            let m0 = resp.iter().zip(x).map(|(r, v)| r * v).sum::<f64>() / r0;
            let m1 = resp.iter().zip(x).map(|(r, v)| (1.0 - r) * v).sum::<f64>() / r1;
            let v0 = resp
                .iter()
                .zip(x)
                .map(|(r, v)| r * (v - m0).powi(2))
                .sum::<f64>()
                / r0;
            let v1 = resp
                .iter()
                .zip(x)
                .map(|(r, v)| (1.0 - r) * (v - m1).powi(2))
                .sum::<f64>()
                / r1;
            g = Gmm2 {
                weight: [r0 / n as f64, r1 / n as f64],
                mean: [m0, m1],
                var: [v0.max(MIN_VAR), v1.max(MIN_VAR)],
            };
            if (ll - last_ll).abs() < 1e-8 * n as f64 {
                break;
            }
            last_ll = ll;
        }
        if g.mean[0] > g.mean[1] {
            g.weight.swap(0, 1);
            g.mean.swap(0, 1);
            g.var.swap(0, 1);
        }
        Some(g)
    }

    fn weighted_density(&self, c: usize, v: f64) -> f64 {
        let var = self.var[c];
        self.weight[c] * (-(v - self.mean[c]).powi(2) / (2.0 * var)).exp()
            / (2.0 * std::f64::consts::PI * var).sqrt()
    }

    /// Posterior probability that `v` belongs to the low-mean (clean) component. Values
    /// below the clean mean count as clean whatever the densities say (the wider noisy
    /// component can otherwise claim the far low tail).
    pub fn p_low(&self, v: f64) -> f64 {
        if v <= self.mean[0] {
            return 1.0;
        }
        let (a, b) = (self.weighted_density(0, v), self.weighted_density(1, v));
        if a + b > 0.0 {
            a / (a + b)
        } else {
            f64::from(v < self.mean[1])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    /// Box-Muller normal draw.
    fn normal(rng: &mut StdRng, mean: f64, sd: f64) -> f64 {
        let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
        mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    #[test]
    fn recovers_two_separated_components() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut x: Vec<f64> = (0..700).map(|_| normal(&mut rng, 0.2, 0.05)).collect();
        x.extend((0..300).map(|_| normal(&mut rng, 1.5, 0.3)));
        let g = Gmm2::fit(&x, 100).expect("fits");
        assert!((g.mean[0] - 0.2).abs() < 0.02, "{g:?}");
        assert!((g.mean[1] - 1.5).abs() < 0.08, "{g:?}");
        assert!((g.weight[0] - 0.7).abs() < 0.03, "{g:?}");
        assert!(g.p_low(0.25) > 0.99 && g.p_low(1.4) < 0.01, "{g:?}");
        // Below the clean mean is always clean.
        assert_eq!(g.p_low(-1.0), 1.0);
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert!(Gmm2::fit(&[], 10).is_none());
        assert!(Gmm2::fit(&[1.0], 10).is_none());
        assert!(Gmm2::fit(&[0.5; 20], 10).is_none());
    }
}
