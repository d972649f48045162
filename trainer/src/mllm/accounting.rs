//! What labelling cost, measured: calls, tokens, time, latency percentiles, money at given
//! prices, and the same numbers projected for the direct-MLLM baseline (asking the model
//! about every image at inference time instead of training an edge model once).

use super::answer::Usage;
use super::cache::Record;
use serde::Serialize;

/// Prices in money units (e.g. USD) per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Prices {
    pub fn cost(&self, tokens_in: f64, tokens_out: f64) -> f64 {
        (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6
    }
}

/// Latency summary in milliseconds (nearest-rank percentiles).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(samples: &[f64]) -> Self {
        if samples.is_empty() {
            return Latency::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        Latency {
            n: v.len(),
            p50: percentile(&v, 0.50),
            p95: percentile(&v, 0.95),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Per-answer means over a set of answers (fresh and cached), the unit of every projection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PerAnswer {
    /// Answers the means are taken over (those with reported usage for the tokens).
    pub answers: usize,
    pub tokens_in: f64,
    pub tokens_out: f64,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub money: Option<f64>,
}

impl PerAnswer {
    /// Means over `records`.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>, prices: Option<Prices>) -> Self {
        let (mut n, mut with_usage, mut tin, mut tout, mut lat) = (0usize, 0usize, 0u64, 0u64, 0.0);
        for r in records {
            n += 1;
            lat += r.latency_ms;
            if let Some(Usage {
                prompt_tokens,
                completion_tokens,
            }) = r.usage
            {
                with_usage += 1;
                tin += prompt_tokens;
                tout += completion_tokens;
            }
        }
        if n == 0 {
            return PerAnswer::default();
        }
        let u = with_usage.max(1) as f64;
        let (tin, tout) = (tin as f64 / u, tout as f64 / u);
        PerAnswer {
            answers: n,
            tokens_in: tin,
            tokens_out: tout,
            latency_ms: lat / n as f64,
            money: prices.map(|p| p.cost(tin, tout)),
        }
    }
}

/// A projected workload: `calls` answers at the per-answer means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Projection {
    pub images: usize,
    /// One call per image and sample.
    pub calls: usize,
    pub tokens_in: f64,
    pub tokens_out: f64,
    /// At the measured answers per second of this run (or mean latency / concurrency).
    pub wall_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub money: Option<f64>,
}

impl Projection {
    /// `images` answers at `per` means, `answers_per_s` throughput.
    pub fn new(images: usize, calls_per_image: usize, per: &PerAnswer, answers_per_s: f64) -> Self {
        let calls = images * calls_per_image;
        Projection {
            images,
            calls,
            tokens_in: per.tokens_in * calls as f64,
            tokens_out: per.tokens_out * calls as f64,
            wall_s: if answers_per_s > 0.0 {
                calls as f64 / answers_per_s
            } else {
                0.0
            },
            money: per.money.map(|m| m * calls as f64),
        }
    }
}

/// Money and tokens spent by this run's requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spend {
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// Answers without reported usage (their tokens are unknown, not zero).
    pub answers_without_usage: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub money: Option<f64>,
}

impl Spend {
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>, prices: Option<Prices>) -> Self {
        let mut s = Spend::default();
        for r in records {
            match r.usage {
                Some(u) => {
                    s.tokens_in += u.prompt_tokens;
                    s.tokens_out += u.completion_tokens;
                }
                None => s.answers_without_usage += 1,
            }
        }
        s.money = prices.map(|p| p.cost(s.tokens_in as f64, s.tokens_out as f64));
        s
    }
}

/// CPU time (user + system) this process has used so far, in seconds.
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage writes into the zeroed struct we own and reads nothing else.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            return tv(ru.ru_utime) + tv(ru.ru_stime);
        }
        0.0
    }
    #[cfg(not(unix))]
    {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&v);
        assert_eq!((l.p50, l.p95, l.max, l.n), (50.0, 95.0, 100.0, 100));
        assert_eq!(Latency::of(&[7.0]).p95, 7.0);
        assert_eq!(Latency::of(&[]).n, 0);
    }

    #[test]
    fn money_per_million_tokens() {
        let p = Prices {
            input_per_mtok: 2.5,
            output_per_mtok: 10.0,
        };
        assert!((p.cost(1_000_000.0, 100_000.0) - 3.5).abs() < 1e-12);
    }

    #[test]
    fn cpu_time_is_measured() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1 && process_cpu_seconds() > 0.0);
    }
}
