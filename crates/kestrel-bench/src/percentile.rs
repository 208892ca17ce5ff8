//! Percentiles and the summary (mean, min, p50/p90/p95/p99, max) every latency metric reports.
//!
//! The definition is numpy's default (`method="linear"`, Hyndman & Fan type 7), the one vLLM's
//! `bench serve` uses through `np.percentile`: sort, take rank `p/100 · (n-1)`, and interpolate
//! linearly between the two neighbouring samples. Reports from both tools are therefore comparable.

use serde::{Deserialize, Serialize};

/// The `p`-th percentile (0..=100) of `sorted` (ascending, no NaN), numpy `linear` definition.
/// `None` for an empty slice.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// The `p`-th percentile of unsorted samples; NaNs are ignored.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    percentile_sorted(&sorted(samples), p)
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Distribution of one metric over a run. Every field is `None` when there were no samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Self {
        let v = sorted(samples);
        let count = v.len();
        let mean = (count > 0).then(|| v.iter().sum::<f64>() / count as f64);
        Summary {
            count,
            mean,
            min: v.first().copied(),
            p50: percentile_sorted(&v, 50.0),
            p90: percentile_sorted(&v, 90.0),
            p95: percentile_sorted(&v, 95.0),
            p99: percentile_sorted(&v, 99.0),
            max: v.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values are numpy 2.4.6's output:
    // np.percentile([15, 20, 35, 40, 50], [0, 25, 40, 50, 90, 95, 99, 100])
    #[test]
    fn matches_numpy_linear() {
        let data = [40.0, 15.0, 50.0, 35.0, 20.0];
        let want = [
            (0.0, 15.0),
            (25.0, 20.0),
            (40.0, 29.0),
            (50.0, 35.0),
            (90.0, 46.0),
            (95.0, 48.0),
            (99.0, 49.6),
            (100.0, 50.0),
        ];
        for (p, w) in want {
            let got = percentile(&data, p).unwrap();
            assert!((got - w).abs() < 1e-9, "p{p}: got {got}, numpy {w}");
        }
    }

    // np.percentile(np.arange(1, 11) ** 2, [50, 90, 99]) == [30.5, 82.9, 98.29] (numpy 2.4.6)
    #[test]
    fn matches_numpy_on_squares() {
        let data: Vec<f64> = (1..=10).map(|i| (i * i) as f64).collect();
        for (p, w) in [(50.0, 30.5), (90.0, 82.9), (99.0, 98.29)] {
            let got = percentile(&data, p).unwrap();
            assert!((got - w).abs() < 1e-9, "p{p}: got {got}, numpy {w}");
        }
    }

    #[test]
    fn edge_cases() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, f64::NAN, 3.0], 50.0), Some(2.0));
        let s = Summary::of(&[]);
        assert_eq!(s.count, 0);
        assert_eq!(s.p50, None);
        let s = Summary::of(&[2.0, 4.0]);
        assert_eq!(
            (s.mean, s.min, s.max, s.p50),
            (Some(3.0), Some(2.0), Some(4.0), Some(3.0))
        );
    }
}
