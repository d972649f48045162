//! The int8 parity gate: what a sample of held-out images can certify.
//!
//! `k` of `n` held-out images keep their f32 top-1 class in int8. The point estimate `k / n`
//! says little on a small sample (7 of 7 is "100 %", and the same bundle agreed on 97.3 % of
//! 780 test photos), so the gate certifies a threshold only when the one-sided lower
//! confidence bound of the agreement (Wilson score interval, 95 % by default) reaches it.
//! The Wilson bound is closed-form and, unlike the normal approximation, stays inside [0, 1]
//! and behaves at `k = n`; with every image agreeing it is `n / (n + z^2)`, so certifying
//! 99 % at 95 % confidence takes at least 268 agreeing images.

use serde::Serialize;

/// One-sided z for a confidence level (0.90, 0.95, 0.975, 0.99, 0.995, 0.999), from the
/// normal quantile (Acklam's rational approximation, |error| < 1.2e-9: no crate in the
/// workspace offers the normal quantile, and this is the standard 20-line formula).
pub fn z_one_sided(confidence: f64) -> f64 {
    normal_quantile(confidence.clamp(0.5, 1.0 - 1e-12))
}

fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p_low = 0.02425;
    if p < p_low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - p_low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// The Wilson score lower bound of a proportion `k / n` for a one-sided `z`.
pub fn wilson_lower(k: usize, n: usize, z: f64) -> f64 {
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - spread) / (1.0 + z2 / n)).clamp(0.0, 1.0)
}

/// The fewest images whose lower bound reaches `threshold` when a fraction `rate` of them
/// agree (`rate` = 1: all). `None` when no sample size can (the rate is below the threshold).
pub fn images_needed(rate: f64, threshold: f64, z: f64) -> Option<usize> {
    if rate < threshold || threshold >= 1.0 {
        return None;
    }
    if threshold <= 0.0 {
        return Some(1);
    }
    // The bound grows with n at a fixed rate: double, then bisect.
    let ok = |n: usize| wilson_lower((rate * n as f64).floor() as usize, n, z) >= threshold;
    let mut hi = 1usize;
    while !ok(hi) {
        if hi > 1 << 40 {
            return None;
        }
        hi *= 2;
    }
    let mut lo = hi / 2;
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        if ok(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// What the gate decided, with the figures it decided on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GateVerdict {
    pub agreeing: usize,
    pub images: usize,
    /// `agreeing / images`.
    pub agreement: f64,
    /// The one-sided lower confidence bound of the agreement.
    pub lower_bound: f64,
    pub confidence: f64,
    pub threshold: f64,
    /// Held-out images that would certify `threshold` if they agreed at the rate measured
    /// here (`None`: the rate is below the threshold, no sample size would).
    pub images_needed_at_this_rate: Option<usize>,
    /// Held-out images that would certify `threshold` if every one of them agreed: the
    /// smallest sample that can certify it at all.
    pub images_needed_if_all_agree: Option<usize>,
    pub passed: bool,
}

impl GateVerdict {
    /// Judges `agreeing` of `images` against `threshold` at one-sided `confidence`.
    pub fn judge(agreeing: usize, images: usize, threshold: f64, confidence: f64) -> Self {
        let z = z_one_sided(confidence);
        let agreement = if images == 0 {
            0.0
        } else {
            agreeing as f64 / images as f64
        };
        let lower_bound = wilson_lower(agreeing, images, z);
        GateVerdict {
            agreeing,
            images,
            agreement,
            lower_bound,
            confidence,
            threshold,
            images_needed_at_this_rate: images_needed(agreement, threshold, z),
            images_needed_if_all_agree: images_needed(1.0, threshold, z),
            passed: images > 0 && lower_bound >= threshold,
        }
    }

    /// One sentence for a refusal: the figures, the bound, and what it would take.
    pub fn explain(&self) -> String {
        let mut s = format!(
            "top-1 agreement with the f32 model is {:.2} % ({} of {} held-out images); at {:.0} % confidence this sample supports at least {:.2} % (Wilson lower bound), below the gate of {:.2} %",
            self.agreement * 100.0,
            self.agreeing,
            self.images,
            self.confidence * 100.0,
            self.lower_bound * 100.0,
            self.threshold * 100.0
        );
        match (self.images_needed_at_this_rate, self.images_needed_if_all_agree) {
            (Some(n), _) if self.agreement >= self.threshold => s.push_str(&format!(
                "; the agreement measured is high enough, the sample is too small: certifying {:.2} % at this rate needs at least {n} held-out images",
                self.threshold * 100.0
            )),
            (_, Some(all)) => s.push_str(&format!(
                "; the agreement itself is below the gate (no sample size certifies it), and even with every image agreeing {:.2} % needs at least {all} held-out images",
                self.threshold * 100.0
            )),
            _ => {}
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn z_matches_the_normal_table() {
        assert!((z_one_sided(0.95) - 1.644_853_6).abs() < 1e-6);
        assert!((z_one_sided(0.975) - 1.959_964).abs() < 1e-6);
        assert!((z_one_sided(0.99) - 2.326_348).abs() < 1e-6);
        assert!((z_one_sided(0.999) - 3.090_232).abs() < 1e-5);
    }

    #[test]
    fn wilson_lower_bound_known_values() {
        let z = z_one_sided(0.95);
        // k = n: n / (n + z^2).
        assert!((wilson_lower(7, 7, z) - 7.0 / (7.0 + z * z)).abs() < 1e-12);
        // 97 of 100 at z = 1.96: 0.9154 (standard tables).
        assert!((wilson_lower(97, 100, 1.959_964) - 0.915_4).abs() < 5e-4);
        assert_eq!(wilson_lower(0, 10, z), 0.0);
        assert_eq!(wilson_lower(0, 0, z), 0.0);
    }

    /// The case of the issue: 7 of 7 certified ">= 99 %". It must not pass, and it must
    /// say how many images it would take.
    #[test]
    fn seven_of_seven_does_not_certify_99_percent() {
        let v = GateVerdict::judge(7, 7, 0.99, 0.95);
        assert!(!v.passed);
        // n / (n + z^2) = 7 / 9.7055 = 72.1 %: far from 99 %.
        assert!((v.lower_bound - 0.7212).abs() < 1e-3, "{v:?}");
        let need = v.images_needed_if_all_agree.unwrap();
        // n / (n + 1.6449^2) >= 0.99  <=>  n >= 99 * 2.7055 = 267.8
        assert_eq!(need, 268);
        assert_eq!(v.images_needed_at_this_rate, Some(268));
        let text = v.explain();
        assert!(text.contains("268 held-out images"), "{text}");
        assert!(text.contains("Wilson lower bound"), "{text}");
        assert!(GateVerdict::judge(268, 268, 0.99, 0.95).passed);
        assert!(!GateVerdict::judge(267, 267, 0.99, 0.95).passed);
    }

    #[test]
    fn a_rate_below_the_gate_is_never_certified() {
        let v = GateVerdict::judge(759, 780, 0.99, 0.95); // 97.3 %
        assert!(!v.passed);
        assert_eq!(v.images_needed_at_this_rate, None);
        assert!(
            v.explain().contains("below the gate (no sample size"),
            "{}",
            v.explain()
        );
        // 99.5 % of 780 images: the bound is 98.9 %, just short; 99.7 % passes.
        assert!(!GateVerdict::judge(776, 780, 0.99, 0.95).passed);
        assert!(GateVerdict::judge(778, 780, 0.99, 0.95).passed);
        let v = GateVerdict::judge(776, 780, 0.99, 0.95);
        let n = v.images_needed_at_this_rate.unwrap();
        assert!(n > 780, "{v:?}");
        assert!(
            GateVerdict::judge((n as f64 * v.agreement).floor() as usize, n, 0.99, 0.95).passed
        );
    }

    #[test]
    fn no_images_never_pass() {
        assert!(!GateVerdict::judge(0, 0, 0.5, 0.95).passed);
        assert!(GateVerdict::judge(10, 10, 0.0, 0.95).passed);
    }
}
