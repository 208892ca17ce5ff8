//! The acceptance rule of a verification step. Row `j` of a sequence's `k + 1` logit rows
//! samples the token after `[.., last, d_1..d_j]` exactly as a non-speculative step would
//! (processed distribution `p_j`, Philox draw keyed by the sequence's seed and the position);
//! draft `d_{j+1}` is kept while it equals that sample, and the sample of the first row whose
//! draft differs (or the row after the last draft: the bonus token) ends the run.
//!
//! This is the rejection sampling of speculative decoding (Leviathan et al. 2023; Chen et al.
//! 2023) for a draft distribution that is a point mass on `d`: the draft is accepted with
//! probability `min(1, p(d) / 1) = p(d)`, the event that the sample is `d`; on rejection the
//! token is the sample conditioned on not being `d`, i.e. drawn from `p` with `d` removed and
//! renormalised. For greedy rows it is "accept while the draft is the argmax". Because each
//! row uses the draw of its own position, the tokens are the ones non-speculative decoding
//! samples from the same logits: seeded requests reproduce with or without speculation.

/// How many of `drafts` are accepted given `sampled`, the `drafts.len() + 1` tokens the
/// verification rows sampled: the length of the common prefix of the two.
pub fn num_accepted(drafts: &[u32], sampled: &[u32]) -> usize {
    debug_assert_eq!(
        sampled.len(),
        drafts.len() + 1,
        "one row per draft plus the bonus"
    );
    drafts
        .iter()
        .zip(sampled)
        .take_while(|(d, s)| d == s)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_backend::cpu::CpuBackend;
    use kestrel_backend::{Backend, SampleOutput, SamplingBatch, SamplingParams};

    #[test]
    fn accepts_the_common_prefix() {
        assert_eq!(num_accepted(&[], &[7]), 0);
        assert_eq!(num_accepted(&[1, 2, 3], &[1, 2, 3, 4]), 3);
        assert_eq!(num_accepted(&[1, 2, 3], &[1, 5, 3, 4]), 1);
        assert_eq!(num_accepted(&[1, 2, 3], &[9, 2, 3, 4]), 0);
    }

    /// The processed target distribution of `logits` under temperature `t` and `top_k`.
    fn target(logits: &[f32], t: f32, top_k: usize) -> Vec<f64> {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let kept = &order[..top_k];
        let max = logits[order[0]] as f64;
        let mut p = vec![0.0; logits.len()];
        for &i in kept {
            p[i] = ((logits[i] as f64 - max) / t as f64).exp();
        }
        let sum: f64 = p.iter().sum();
        p.iter().map(|x| x / sum).collect()
    }

    /// Within 4 binomial standard deviations, plus one draw.
    fn assert_count(what: &str, count: usize, n: usize, p: f64) {
        let want = n as f64 * p;
        let tol = 4.0 * (n as f64 * p * (1.0 - p)).sqrt() + 1.0;
        assert!(
            (count as f64 - want).abs() <= tol,
            "{what}: {count} of {n}, expected {want:.1} ± {tol:.1}"
        );
    }

    /// Rejection sampling with a point-mass draft on the real sampler: over many positions
    /// the draft is accepted with probability `p(d)`, the token emitted on rejection follows
    /// `p` without `d`, renormalised, and the emitted token overall follows `p`.
    #[test]
    fn point_mass_rejection_sampling_keeps_the_target_distribution() {
        let b = CpuBackend::new();
        let logits = [1.0f32, 2.5, 0.3, 2.0, -1.0, 1.7];
        let vocab = logits.len();
        let (temperature, top_k) = (0.9, 5);
        let p = target(&logits, temperature, top_k);
        let params = SamplingParams {
            temperature,
            top_k,
            seed: Some(31),
            ..SamplingParams::default()
        };
        let n = 40_000;
        for draft in [1u32, 3, 2, 4] {
            let mut batch = SamplingBatch::default();
            for pos in 0..n as u64 {
                // Another draft at each position would be another sequence: vary the seed too.
                batch.push(&params, 31 + u64::from(draft), pos, std::iter::empty(), &[]);
            }
            let all: Vec<f32> = (0..n).flat_map(|_| logits).collect();
            let mut t = b.alloc_tensor(n, vocab).unwrap();
            b.from_host(&all, n, &mut t).unwrap();
            let mut s = b.alloc_sampling(n, vocab).unwrap();
            b.upload_sampling(&batch, &mut s).unwrap();
            b.sample(&t, &mut s).unwrap();
            let mut out = SampleOutput::default();
            b.read_sampled(&s, &mut out).unwrap();

            let mut accepted = 0;
            let mut rejected = vec![0usize; vocab];
            let mut emitted = vec![0usize; vocab];
            for &tok in &out.tokens {
                // One draft, then the bonus row (not drawn here): the emitted token is the
                // draft when accepted, else the rejection row's own sample.
                if num_accepted(&[draft], &[tok, 0]) == 1 {
                    accepted += 1;
                } else {
                    rejected[tok as usize] += 1;
                }
                emitted[tok as usize] += 1;
            }
            let d = draft as usize;
            assert_count(&format!("draft {d} accepted"), accepted, n, p[d]);
            assert_eq!(
                rejected[d], 0,
                "a rejected draft is never the emitted token"
            );
            let num_rejected = n - accepted;
            for x in (0..vocab).filter(|&x| x != d) {
                let q = p[x] / (1.0 - p[d]);
                assert_count(
                    &format!("draft {d}: rejected → {x}"),
                    rejected[x],
                    num_rejected,
                    q,
                );
                assert_count(&format!("draft {d}: emitted {x}"), emitted[x], n, p[x]);
            }
            // Outside top-k: never drawn, so a draft there is always rejected.
            assert_eq!(emitted[4], 0);
        }
    }
}
