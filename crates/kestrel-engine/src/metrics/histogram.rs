//! A Prometheus histogram kept in atomics: fixed upper bounds, non-cumulative counts per bucket
//! and a running sum. The engine thread observes; a scrape reads it at any time. The count is
//! the total of the buckets, so a scrape never sees `_count` disagree with the `+Inf` bucket.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus::proto;

#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds, ascending; the implicit last bucket is `+Inf`.
    bounds: Vec<f64>,
    /// `[bounds.len() + 1]` non-cumulative counts; the last is `+Inf`.
    counts: Vec<AtomicU64>,
    /// Sum of the observed values, `f64` bits.
    sum_bits: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Self {
            bounds: bounds.to_vec(),
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Observes a duration, in seconds (the unit of every `_seconds` histogram).
    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    /// Observes a plain value (token counts).
    pub fn observe_value(&self, v: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| v <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        // One writer in practice (the engine thread); the CAS keeps concurrent writers exact.
        let _ = self.sum_bits.fetch_update(Relaxed, Relaxed, |s| {
            Some((f64::from_bits(s) + v).to_bits())
        });
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum_bits.load(Relaxed))
    }

    /// The sum of a `_seconds` histogram.
    pub fn sum_secs(&self) -> f64 {
        self.sum()
    }

    /// Cumulative buckets as the exposition format wants them (`+Inf` is added by the encoder).
    pub(crate) fn to_proto(&self) -> proto::Histogram {
        let mut cumulative = 0;
        let buckets = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(&bound, c)| {
                cumulative += c.load(Relaxed);
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let total = cumulative + self.counts[self.bounds.len()].load(Relaxed);
        let mut h = proto::Histogram::default();
        h.set_bucket(buckets);
        h.set_sample_count(total);
        h.set_sample_sum(self.sum());
        h
    }
}

/// vLLM's `build_1_2_5_buckets(max_value)`: 1, 2, 5, 10, 20, 50, … up to `max_value`.
pub fn buckets_1_2_5(max_value: usize) -> Vec<f64> {
    let mut out = Vec::new();
    let mut scale = 1usize;
    loop {
        for m in [1, 2, 5] {
            let v = m * scale;
            if v > max_value {
                return out;
            }
            out.push(v as f64);
        }
        scale = match scale.checked_mul(10) {
            Some(s) => s,
            None => return out,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_count_and_sum() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 10.0] {
            h.observe_value(v);
        }
        let p = h.to_proto();
        let cumulative: Vec<u64> = p
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(cumulative, [2, 3]);
        assert_eq!(p.get_sample_count(), 4);
        assert_eq!(h.count(), 4);
        assert_eq!(p.get_sample_sum(), 13.0);
    }

    #[test]
    fn one_two_five() {
        assert_eq!(buckets_1_2_5(100), [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        assert_eq!(buckets_1_2_5(0), Vec::<f64>::new());
    }
}
