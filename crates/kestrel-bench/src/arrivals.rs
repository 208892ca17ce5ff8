//! When each request arrives: all at once (`--request-rate inf`) or as a seeded Poisson process
//! of rate R requests per second (exponential gaps of mean 1/R), the way vLLM's `bench serve`
//! models independent users. The first request arrives at time 0.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Arrival offsets in milliseconds from the run start, non-decreasing. `rate: None` = infinite.
pub fn arrival_times_ms(n: usize, rate: Option<f64>, seed: u64) -> Vec<f64> {
    let Some(rate) = rate.filter(|r| r.is_finite() && *r > 0.0) else {
        return vec![0.0; n];
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            if i > 0 {
                // Inverse CDF of Exp(rate); 1-u is in (0, 1] so the log is finite.
                let u: f64 = rng.gen();
                t += -(1.0 - u).ln() / rate * 1000.0;
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinite_rate_sends_everything_at_once() {
        assert_eq!(arrival_times_ms(3, None, 0), vec![0.0; 3]);
        assert_eq!(arrival_times_ms(2, Some(f64::INFINITY), 0), vec![0.0; 2]);
    }

    #[test]
    fn poisson_is_seeded_ordered_and_has_the_right_mean() {
        let a = arrival_times_ms(20_000, Some(4.0), 1);
        assert_eq!(a, arrival_times_ms(20_000, Some(4.0), 1));
        assert_ne!(a, arrival_times_ms(20_000, Some(4.0), 2));
        assert_eq!(a[0], 0.0);
        assert!(a.windows(2).all(|w| w[1] >= w[0]));
        // Mean gap 250 ms; the sample mean of 20k exponentials is within 3% with overwhelming odds.
        let mean_gap = a[a.len() - 1] / (a.len() - 1) as f64;
        assert!((mean_gap - 250.0).abs() < 7.5, "mean gap {mean_gap}");
    }
}
