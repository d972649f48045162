//! 95 % confidence intervals for the report's figures.
//!
//! - [`wilson`]: Wilson's score interval for a proportion (top-1, a class's recall or
//!   precision). Unlike the normal approximation it stays inside [0, 1] and is sensible at
//!   0/n and n/n and for small n.
//! - [`paired_difference`]: Newcombe's hybrid score interval for the difference of two
//!   proportions measured on the same images (method 10 of Newcombe 1998, "Improved
//!   confidence intervals for the difference between binomial proportions based on paired
//!   data", Stat. Med. 17:2635): the deltas against the deployed model.
//! - [`bootstrap`]: percentile bootstrap over images, for figures that are not a plain
//!   proportion (cACC's Hungarian matching, sACC's mean cosine).
//!
//! Written here rather than taken from a statistics crate: the formulas are a few lines
//! each, the z value is a constant, and `statrs` (the well-kept candidate) has neither
//! interval.

use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;

/// The standard normal quantile for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A figure with its 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// A figure without uncertainty (its interval is the point).
    pub fn exact(value: f64) -> Self {
        Estimate {
            value,
            low: value,
            high: value,
        }
    }
}

/// Wilson's score interval of `k` successes in `n` trials; None when `n` is 0.
pub fn wilson(k: usize, n: usize) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let (k, n) = (k.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Estimate {
        value: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    })
}

/// The 2x2 table of two classifiers on the same images: `both` right, `only_a` right
/// (b wrong), `only_b` right (a wrong), `neither` right.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Paired {
    pub both: usize,
    pub only_a: usize,
    pub only_b: usize,
    pub neither: usize,
}

impl Paired {
    pub fn n(&self) -> usize {
        self.both + self.only_a + self.only_b + self.neither
    }

    /// Counts one image.
    pub fn add(&mut self, a_right: bool, b_right: bool) {
        match (a_right, b_right) {
            (true, true) => self.both += 1,
            (true, false) => self.only_a += 1,
            (false, true) => self.only_b += 1,
            (false, false) => self.neither += 1,
        }
    }
}

/// Accuracy of `a` minus accuracy of `b` on the same images, with Newcombe's method-10
/// interval (Wilson intervals of both marginal proportions, combined with the observed
/// correlation between the two). None for no images.
pub fn paired_difference(t: Paired) -> Option<Estimate> {
    let n = t.n();
    let p1 = wilson(t.both + t.only_a, n)?;
    let p2 = wilson(t.both + t.only_b, n)?;
    let diff = p1.value - p2.value;
    let (dl2, du2) = (p1.value - p1.low, p1.high - p1.value);
    let (dl3, du3) = (p2.value - p2.low, p2.high - p2.value);
    let (a, b, c, d) = (
        t.both as f64,
        t.only_a as f64,
        t.only_b as f64,
        t.neither as f64,
    );
    // phi: the correlation of the two outcomes; 0 when a margin is empty.
    let margins = (a + b) * (c + d) * (a + c) * (b + d);
    let phi = if margins > 0.0 {
        (a * d - b * c) / margins.sqrt()
    } else {
        0.0
    };
    let lower = (dl2 * dl2 - 2.0 * phi * dl2 * du3 + du3 * du3)
        .max(0.0)
        .sqrt();
    let upper = (du2 * du2 - 2.0 * phi * du2 * dl3 + dl3 * dl3)
        .max(0.0)
        .sqrt();
    Some(Estimate {
        value: diff,
        low: (diff - lower).max(-1.0),
        high: (diff + upper).min(1.0),
    })
}

/// Percentile bootstrap: `stat` is computed on `resamples` samples of `n` indices drawn
/// with replacement (seeded, so a report is reproducible), and the 2.5th and 97.5th
/// percentiles (nearest rank) bound the interval around `stat` of the identity sample.
/// None for `n` = 0.
pub fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> Option<Estimate> {
    if n == 0 {
        return None;
    }
    let identity: Vec<usize> = (0..n).collect();
    let value = stat(&identity);
    if resamples == 0 {
        return Some(Estimate::exact(value));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sample = vec![0usize; n];
    let mut stats = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for s in sample.iter_mut() {
            *s = rng.random_range(0..n);
        }
        stats.push(stat(&sample));
    }
    stats.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = (q * resamples as f64).ceil() as usize;
        stats[rank.clamp(1, resamples) - 1]
    };
    Some(Estimate {
        value,
        low: at(0.025),
        high: at(0.975),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 5e-6
    }

    #[test]
    fn wilson_by_hand() {
        // 8 of 10: p = 0.8, z^2 = 3.8414588, denominator 1 + z^2/10 = 1.3841459,
        // centre (0.8 + 0.1920729) / 1.3841459 = 0.7167402,
        // half z / 1.3841459 * sqrt(0.016 + 0.0096036) = 0.2265777.
        let e = wilson(8, 10).unwrap();
        assert_eq!(e.value, 0.8);
        assert!(close(e.low, 0.4901625) && close(e.high, 0.9433178), "{e:?}");
        // 0 of 5: centre = half = (z^2/10) / (1 + z^2/5) = 0.3841459 / 1.7682918.
        let e = wilson(0, 5).unwrap();
        assert_eq!(e.low, 0.0);
        assert!(close(e.high, 2.0 * 0.3841459 / 1.7682918), "{e:?}");
        // n of n mirrors 0 of n.
        let e = wilson(5, 5).unwrap();
        assert!(close(e.low, 1.0 - 2.0 * 0.3841459 / 1.7682918) && e.high == 1.0);
        assert!(wilson(0, 0).is_none());
    }

    #[test]
    fn paired_difference_by_hand() {
        // a right on 8 of 10 (both 7, only_a 1), b right on 7 of 10 (only_b 0), neither 2.
        // p1 = 0.8: Wilson (0.4901625, 0.9433178) -> dl2 = 0.3098375, du2 = 0.1433178.
        // p2 = 0.7: Wilson (0.3967781, 0.8922087) -> dl3 = 0.3032219, du3 = 0.1922087.
        // phi = (7*2 - 1*0) / sqrt(8 * 2 * 7 * 3) = 14 / sqrt(336) = 0.7637626.
        // lower = sqrt(dl2^2 - 2 phi dl2 du3 + du3^2) = sqrt(0.0959993 - 0.0909694
        //         + 0.0369442) = 0.2048757;
        // upper = sqrt(du2^2 - 2 phi du2 dl3 + dl3^2) = sqrt(0.0205400 - 0.0663818
        //         + 0.0919435) = 0.2147130.
        let t = Paired {
            both: 7,
            only_a: 1,
            only_b: 0,
            neither: 2,
        };
        let e = paired_difference(t).unwrap();
        assert!(close(e.value, 0.1), "{e:?}");
        assert!(close(e.low, 0.1 - 0.2048757), "{e:?}");
        assert!(close(e.high, 0.1 + 0.2147130), "{e:?}");
        // identical classifiers: difference 0, and the interval is not empty
        let same = paired_difference(Paired {
            both: 6,
            only_a: 0,
            only_b: 0,
            neither: 4,
        })
        .unwrap();
        assert_eq!(same.value, 0.0);
        assert!(same.low <= 0.0 && same.high >= 0.0);
        assert!(paired_difference(Paired::default()).is_none());
    }

    #[test]
    fn bootstrap_by_hand() {
        // Two values, 0 and 1: a resample's mean is 0 (p 1/4), 0.5 (1/2) or 1 (1/4), so
        // with 4000 resamples the 2.5th percentile is 0 and the 97.5th is 1.
        let v = [0.0, 1.0];
        let mean = |idx: &[usize]| idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64;
        let e = bootstrap(2, 4000, 7, mean).unwrap();
        assert_eq!((e.value, e.low, e.high), (0.5, 0.0, 1.0));
        // All equal: every resample gives the same figure.
        let e = bootstrap(5, 200, 1, |_| 0.75).unwrap();
        assert_eq!((e.low, e.high), (0.75, 0.75));
        // Seeded: the same call gives the same interval.
        let w = [0.1, 0.9, 0.4, 0.7, 0.3, 0.8];
        let m = |idx: &[usize]| idx.iter().map(|&i| w[i]).sum::<f64>() / idx.len() as f64;
        assert_eq!(bootstrap(6, 500, 3, m), bootstrap(6, 500, 3, m));
        assert!(bootstrap(0, 10, 0, |_| 0.0).is_none());
    }
}
