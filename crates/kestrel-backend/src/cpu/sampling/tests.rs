//! Unit tests of the CPU sampler's pieces against naive references: candidate sets (top-k,
//! top-p, min-p, ties) against a full sort, the fast `exp`, penalties and bias.
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::select::{
    apply_penalties, by_logit_desc, candidates, masked_row, top_k_into, Candidates,
};
use super::vector::{exp_nonpos, max_of};
use super::*;
use crate::sampling::SamplingParams;

/// The one row of parameters `p` becomes.
fn row(p: &SamplingParams) -> RowParams {
    let mut b = SamplingBatch::default();
    b.push(p, 0, 0, std::iter::empty(), &[]);
    b.rows[0]
}

/// Naive reference for the candidate set: sorts the whole vocabulary. Same f32 arithmetic
/// as the sampler up to the truncations, which it does the obvious way.
fn reference_candidates(p: &SamplingParams, processed: &[f32]) -> Vec<u32> {
    let inv_t = 1.0 / p.temperature;
    let l: Vec<f32> = processed
        .iter()
        .map(|&x| if p.temperature != 1.0 { x * inv_t } else { x })
        .collect();
    let max = max_of(&l);
    let mut order: Vec<u32> = (0..l.len() as u32).collect();
    order.sort_by(by_logit_desc(&l));
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    if p.top_p < 1.0 {
        let w: Vec<f64> = order
            .iter()
            .map(|&i| f64::from(exp_nonpos(l[i as usize] - max)))
            .collect();
        let target = f64::from(p.top_p) * w.iter().sum::<f64>();
        let mut cum = 0.0;
        let keep = w.iter().take_while(|&&x| {
            let kept = cum < target;
            cum += x;
            kept
        });
        let n = keep.count().max(1);
        order.truncate(n);
    }
    if p.min_p > 0.0 {
        order.retain(|&i| l[i as usize] >= max + p.min_p.ln());
    }
    order.sort_unstable();
    order
}

fn sampler_candidates(p: &SamplingParams, logits: &[f32]) -> Vec<u32> {
    let mut s = RowScratch::default();
    masked_row(logits, &[], None, &mut s.logits);
    let (cands, total) = candidates(&row(p), &mut s).expect("finite logits");
    assert!(total >= 1.0, "the top token has weight 1");
    let mut ids: Vec<u32> = match cands {
        Candidates::All => (0..logits.len() as u32).collect(),
        Candidates::Subset(n) => s.idx[..n].to_vec(),
    };
    ids.sort_unstable();
    ids
}

fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        ..SamplingParams::default()
    }
}

#[test]
fn fast_exp_is_accurate() {
    let mut worst = 0.0f64;
    for i in 0..=200_000 {
        let x = -87.0 * i as f32 / 200_000.0;
        let exact = f64::from(x).exp();
        worst = worst.max((f64::from(exp_nonpos(x)) - exact).abs() / exact);
    }
    assert!(worst < 5e-7, "relative error {worst}");
    assert_eq!(exp_nonpos(0.0), 1.0);
    assert_eq!(exp_nonpos(-88.0), 0.0);
    assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
}

#[test]
fn penalties_and_bias_follow_vllm() {
    let p = SamplingParams {
        repetition_penalty: 2.0,
        presence_penalty: 0.5,
        frequency_penalty: 0.25,
        logit_bias: vec![(4, -1.0), (0, 3.0)],
        ..Default::default()
    };
    // Prompt has tokens 0 and 1; output has 2 twice and 1 once.
    let mut b = SamplingBatch::default();
    b.push(&p, 0, 0, [(0, 0), (1, 1), (2, 2)], &[3]);
    let r = b.rows[0];
    let mut l = Vec::new();
    masked_row(&[4.0, -4.0, 2.0, 1.0, 1.0], &b.banned_tokens, None, &mut l);
    apply_penalties(
        &r,
        (&b.penalty_tokens, &b.penalty_counts),
        (&b.bias_tokens, &b.bias_values),
        &mut l,
    );
    assert_eq!(
        l,
        [
            4.0 / 2.0 + 3.0,               // prompt: divided, then biased
            -4.0 * 2.0 - 0.25 * 1.0 - 0.5, // negative: multiplied; once in output
            2.0 / 2.0 - 0.25 * 2.0 - 0.5,  // twice in output
            f32::NEG_INFINITY,             // banned
            1.0 - 1.0,                     // bias only
        ]
    );
}

#[test]
fn top_k_selection_matches_a_full_sort() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (v, k) in [
        (10, 3),
        (5_000, 1),
        (5_000, 7),
        (5_000, 2_000),
        (151_936, 20),
        (151_936, 1_500),
    ] {
        // Coarse values make ties at the boundary common.
        let l: Vec<f32> = (0..v)
            .map(|_| (rng.gen::<f32>() * 64.0).floor() / 8.0)
            .collect();
        let mut idx = Vec::new();
        top_k_into(&l, k, &mut idx);
        idx.sort_unstable();
        let mut all: Vec<u32> = (0..v as u32).collect();
        all.sort_by(by_logit_desc(&l));
        all.truncate(k);
        all.sort_unstable();
        assert_eq!(idx, all, "v={v} k={k}");
    }
}

/// The full Qwen vocabulary with a peaked, realistic-looking distribution: every path of
/// the candidate selection against the naive full sort.
#[test]
fn candidates_match_reference_on_a_full_vocabulary() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let v = 151_936;
    let logits: Vec<f32> = (0..v)
        .map(|_| rng.gen::<f32>() * 12.0 - 4.0 + if rng.gen::<f32>() < 0.001 { 8.0 } else { 0.0 })
        .collect();
    for p in [
        params(1.0, 0, 0.9, 0.0),
        params(0.7, 0, 0.95, 0.0),
        params(2.0, 0, 0.5, 0.0),
        params(0.6, 20, 0.95, 0.0),
        params(1.0, 50, 1.0, 0.0),
        params(1.0, 0, 1.0, 0.05),
        params(1.3, 1_000, 0.8, 0.01),
        params(1.0, 0, 0.999, 0.0),
    ] {
        assert_eq!(
            sampler_candidates(&p, &logits),
            reference_candidates(&p, &logits),
            "{p:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// The candidate set is exactly the naive reference's, ties and all.
    #[test]
    fn candidates_match_reference(
        logits in proptest::collection::vec(prop_oneof![-8.0f32..8.0, proptest::sample::select(vec![-1.0f32, 0.0, 0.5, 2.0])], 1..80),
        temperature in 0.05f32..3.0,
        top_k in 0usize..90,
        top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
        min_p in prop_oneof![Just(0.0f32), 0.0f32..1.0],
    ) {
        let p = params(temperature, top_k, top_p, min_p);
        prop_assert_eq!(sampler_candidates(&p, &logits), reference_candidates(&p, &logits));
    }
}
