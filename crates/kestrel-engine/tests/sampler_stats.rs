//! Sampler truth through the public API: empirical frequencies against the expected
//! distribution after each transform, excluded tokens never drawn, seeds reproduce, and a
//! sequence's stream does not depend on its batch neighbours.
//!
//! Tolerance: each token's count over N draws must be within 4 binomial standard deviations
//! (`4 * sqrt(N p (1 - p))`) of `N p`, plus one draw; a token with `p = 0` must never appear.
//! The seeds are fixed, so the tests are deterministic.

use std::collections::HashMap;

use kestrel_engine::sampler::{Sampler, SamplerScratch, SamplingParams};
use proptest::prelude::*;

const DRAWS: usize = 200_000;

/// The expected distribution, in f64, the obvious way: full sort, cumulative sums.
fn expected(p: &SamplingParams, logits: &[f32], prompt: &[u32], output: &[u32]) -> Vec<f64> {
    let mut l: Vec<f64> = logits.iter().map(|&x| f64::from(x)).collect();
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &t in output {
        *counts.entry(t).or_default() += 1;
    }
    let r = f64::from(p.repetition_penalty);
    for (i, x) in l.iter_mut().enumerate() {
        let id = i as u32;
        if prompt.contains(&id) || output.contains(&id) {
            *x = if *x > 0.0 { *x / r } else { *x * r };
        }
        if let Some(&c) = counts.get(&id) {
            *x -= f64::from(p.frequency_penalty) * f64::from(c) + f64::from(p.presence_penalty);
        }
    }
    for &(id, b) in &p.logit_bias {
        l[id as usize] += f64::from(b);
    }
    let mut probs = vec![0.0; l.len()];
    let mut order: Vec<usize> = (0..l.len()).collect();
    order.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
    if p.is_greedy() {
        probs[order[0]] = 1.0;
        return probs;
    }
    let t = f64::from(p.temperature);
    let max = l[order[0]] / t;
    let w = |i: usize| (l[i] / t - max).exp();
    if p.top_k > 0 {
        order.truncate(p.top_k);
    }
    if p.top_p < 1.0 {
        let total: f64 = order.iter().map(|&i| w(i)).sum();
        let mut cum = 0.0;
        let n = order
            .iter()
            .take_while(|&&i| {
                let kept = cum < f64::from(p.top_p) * total;
                cum += w(i);
                kept
            })
            .count();
        order.truncate(n.max(1));
    }
    if p.min_p > 0.0 {
        order.retain(|&i| w(i) >= f64::from(p.min_p));
    }
    let total: f64 = order.iter().map(|&i| w(i)).sum();
    for &i in &order {
        probs[i] = w(i) / total;
    }
    probs
}

fn frequencies(
    p: &SamplingParams,
    logits: &[f32],
    prompt: &[u32],
    output: &[u32],
    draws: usize,
) -> Vec<usize> {
    let mut sampler = Sampler::new(p.clone(), prompt, logits.len(), 1234).expect("valid params");
    for &t in output {
        sampler.push_output_token(t);
    }
    let mut scratch = SamplerScratch::default();
    let mut counts = vec![0; logits.len()];
    for _ in 0..draws {
        counts[sampler.sample(logits, &mut scratch).token as usize] += 1;
    }
    counts
}

fn check(name: &str, p: &SamplingParams, logits: &[f32], prompt: &[u32], output: &[u32]) {
    let probs = expected(p, logits, prompt, output);
    let counts = frequencies(p, logits, prompt, output, DRAWS);
    let n = DRAWS as f64;
    for (id, (&c, &q)) in counts.iter().zip(&probs).enumerate() {
        if q == 0.0 {
            assert_eq!(
                c, 0,
                "{name}: token {id} is excluded but was drawn {c} times"
            );
        } else {
            let sigma = (n * q * (1.0 - q)).sqrt();
            let diff = (c as f64 - n * q).abs();
            assert!(
                diff <= 4.0 * sigma + 1.0,
                "{name}: token {id} drawn {c} times, expected {:.1} ± {:.1}",
                n * q,
                4.0 * sigma
            );
        }
    }
}

/// Ties at 0.5 (ids 2, 3) test the tie order at the top-k / top-p boundaries.
const LOGITS: [f32; 8] = [2.0, 1.0, 0.5, 0.5, 0.0, -1.0, -3.0, 1.5];

fn with(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams::default();
    f(&mut p);
    p.validate().expect("test params are valid");
    p
}

#[test]
fn plain_softmax() {
    check("t=1", &SamplingParams::default(), &LOGITS, &[], &[]);
}

#[test]
fn temperature() {
    check("t=0.5", &with(|p| p.temperature = 0.5), &LOGITS, &[], &[]);
    check("t=2", &with(|p| p.temperature = 2.0), &LOGITS, &[], &[]);
}

#[test]
fn top_k() {
    check("top_k=3", &with(|p| p.top_k = 3), &LOGITS, &[], &[]);
    // Tie between ids 2 and 3 at the boundary: the lower id is kept.
    let p = with(|p| p.top_k = 4);
    assert_eq!(expected(&p, &LOGITS, &[], &[])[3], 0.0);
    check("top_k=4", &p, &LOGITS, &[], &[]);
}

#[test]
fn top_p() {
    check("top_p=0.8", &with(|p| p.top_p = 0.8), &LOGITS, &[], &[]);
    check("top_p=0.3", &with(|p| p.top_p = 0.3), &LOGITS, &[], &[]);
    check(
        "top_k=5,top_p=0.7",
        &with(|p| (p.top_k, p.top_p) = (5, 0.7)),
        &LOGITS,
        &[],
        &[],
    );
}

#[test]
fn min_p() {
    check("min_p=0.2", &with(|p| p.min_p = 0.2), &LOGITS, &[], &[]);
    check(
        "t=0.5,min_p=0.05",
        &with(|p| (p.temperature, p.min_p) = (0.5, 0.05)),
        &LOGITS,
        &[],
        &[],
    );
}

#[test]
fn penalties_and_bias() {
    check(
        "repetition=1.5",
        &with(|p| p.repetition_penalty = 1.5),
        &LOGITS,
        &[0, 5, 5],
        &[7],
    );
    check(
        "repetition=0.8",
        &with(|p| p.repetition_penalty = 0.8),
        &LOGITS,
        &[4, 6],
        &[],
    );
    check(
        "presence+frequency",
        &with(|p| (p.presence_penalty, p.frequency_penalty) = (0.5, 0.3)),
        &LOGITS,
        &[1],
        &[0, 0, 0, 7],
    );
    check(
        "bias",
        &with(|p| p.logit_bias = vec![(6, 4.0), (0, -100.0)]),
        &LOGITS,
        &[],
        &[],
    );
}

#[test]
fn everything_at_once() {
    let p = with(|p| {
        p.temperature = 0.7;
        p.top_k = 6;
        p.top_p = 0.9;
        p.min_p = 0.05;
        p.repetition_penalty = 1.2;
        p.presence_penalty = 0.4;
        p.frequency_penalty = 0.1;
        p.logit_bias = vec![(5, 2.5)];
    });
    check("all", &p, &LOGITS, &[0, 1], &[7, 7, 2]);
}

/// The real vocabulary size with Qwen3's default top_k=20: frequencies still match.
#[test]
fn full_vocabulary_top_k_top_p() {
    let v = 151_936;
    let mut logits = vec![-5.0f32; v];
    for (i, x) in logits.iter_mut().enumerate() {
        *x += ((i * 7_919) % 1_000) as f32 / 250.0;
    }
    for (k, &id) in [10usize, 99_999, 151_935, 3, 77_777, 42].iter().enumerate() {
        logits[id] = 6.0 - k as f32 * 0.5;
    }
    let p = with(|p| (p.temperature, p.top_k, p.top_p) = (0.6, 20, 0.95));
    let probs = expected(&p, &logits, &[], &[]);
    let draws = 20_000;
    let counts = frequencies(&p, &logits, &[], &[], draws);
    let n = draws as f64;
    for (id, (&c, &q)) in counts.iter().zip(&probs).enumerate() {
        if q == 0.0 {
            assert_eq!(c, 0, "token {id} excluded");
        } else {
            assert!(
                (c as f64 - n * q).abs() <= 4.0 * (n * q * (1.0 - q)).sqrt() + 1.0,
                "token {id}: {c} vs {}",
                n * q
            );
        }
    }
}

#[test]
fn greedy_is_argmax() {
    let logits = [0.1, 0.7, 0.7, -2.0];
    for p in [SamplingParams::greedy(), with(|p| p.top_k = 1)] {
        assert_eq!(frequencies(&p, &logits, &[], &[], 100), [0, 100, 0, 0]);
    }
}

fn stream(sampler: &mut Sampler, scratch: &mut SamplerScratch, steps: usize) -> Vec<u32> {
    (0..steps)
        .map(|step| {
            let logits: Vec<f32> = (0..64)
                .map(|i| ((i * 31 + step * 17) % 23) as f32 * 0.2)
                .collect();
            let token = sampler.sample(&logits, scratch).token;
            sampler.push_output_token(token);
            token
        })
        .collect()
}

#[test]
fn a_seed_reproduces_exactly() {
    let p = with(|p| {
        (p.seed, p.temperature, p.top_p, p.repetition_penalty) = (Some(42), 0.9, 0.95, 1.1)
    });
    let run = || {
        stream(
            &mut Sampler::new(p.clone(), &[1, 2, 3], 64, 0).expect("valid"),
            &mut SamplerScratch::default(),
            200,
        )
    };
    let first = run();
    assert_eq!(first, run());
    // The engine seed is ignored when the request has one, and used when it has none.
    assert_eq!(
        first,
        stream(
            &mut Sampler::new(p.clone(), &[1, 2, 3], 64, 999).expect("valid"),
            &mut SamplerScratch::default(),
            200
        )
    );
    let unseeded = SamplingParams {
        seed: None,
        ..p.clone()
    };
    let a = stream(
        &mut Sampler::new(unseeded.clone(), &[1, 2, 3], 64, 5).expect("valid"),
        &mut SamplerScratch::default(),
        200,
    );
    let b = stream(
        &mut Sampler::new(unseeded, &[1, 2, 3], 64, 6).expect("valid"),
        &mut SamplerScratch::default(),
        200,
    );
    assert_ne!(a, b, "different engine seeds give different streams");
    assert_ne!(
        first,
        stream(
            &mut Sampler::new(
                SamplingParams {
                    seed: Some(43),
                    ..p
                },
                &[1, 2, 3],
                64,
                0
            )
            .expect("valid"),
            &mut SamplerScratch::default(),
            200
        )
    );
}

/// Two sequences with the same seed in one batch (interleaved with a third, sharing the
/// engine's scratch) give identical streams, equal to the stream of one running alone.
#[test]
fn same_seed_in_one_batch_gives_identical_streams() {
    let p = with(|p| (p.seed, p.top_k, p.min_p) = (Some(7), 40, 0.02));
    let other = with(|p| (p.seed, p.temperature) = (Some(8), 1.3));
    let alone = stream(
        &mut Sampler::new(p.clone(), &[], 64, 0).expect("valid"),
        &mut SamplerScratch::default(),
        100,
    );
    let mut batch = [
        Sampler::new(p.clone(), &[], 64, 0).expect("valid"),
        Sampler::new(other, &[], 64, 0).expect("valid"),
        Sampler::new(p, &[], 64, 1).expect("valid"),
    ];
    let mut scratch = SamplerScratch::default();
    let mut streams = vec![Vec::new(); 3];
    for step in 0..100 {
        let logits: Vec<f32> = (0..64)
            .map(|i| ((i * 31 + step * 17) % 23) as f32 * 0.2)
            .collect();
        for (sampler, out) in batch.iter_mut().zip(streams.iter_mut()) {
            let token = sampler.sample(&logits, &mut scratch).token;
            sampler.push_output_token(token);
            out.push(token);
        }
    }
    assert_eq!(streams[0], alone);
    assert_eq!(streams[2], alone);
    assert_ne!(streams[1], alone);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// top_k / top_p / min_p never emit a token the reference excludes.
    #[test]
    fn truncation_never_emits_an_excluded_token(
        logits in proptest::collection::vec(prop_oneof![-10.0f32..10.0, proptest::sample::select(vec![0.0f32, 1.0, 1.5])], 1..120),
        temperature in 0.05f32..3.0,
        top_k in 0usize..130,
        top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
        min_p in prop_oneof![Just(0.0f32), 0.0f32..0.99],
        seed in any::<u64>(),
    ) {
        let p = SamplingParams { temperature, top_k, top_p, min_p, seed: Some(seed), ..SamplingParams::default() };
        let allowed = expected(&p, &logits, &[], &[]);
        let mut sampler = Sampler::new(p, &[], logits.len(), 0).expect("valid");
        let mut scratch = SamplerScratch::default();
        for _ in 0..32 {
            let token = sampler.sample(&logits, &mut scratch).token as usize;
            prop_assert!(allowed[token] > 0.0, "drew excluded token {} (p = {:?})", token, allowed);
        }
    }
}
