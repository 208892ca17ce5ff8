//! Conformance of a backend's sampling op (every case runs on each compiled backend):
//! validation messages, greedy ties, logprob semantics, degenerate logits, and statistics:
//! empirical frequencies against the expected distribution after each transform, excluded
//! tokens never drawn, seeds reproduce, and a row's draw depends on its seed and position only,
//! never on the other rows of the step.
//!
//! Tolerance of the statistical tests: each token's count over N draws must be within 4
//! binomial standard deviations (`4 * sqrt(N p (1 - p))`) of `N p`, plus one draw; a token with
//! `p = 0` must never appear. Seeds are fixed, so the tests are deterministic.

use std::collections::HashMap;

use kestrel_backend::sampling::{SamplingError, MIN_LOGPROB};
use kestrel_backend::{Backend, SampleOutput, SamplingBatch, SamplingParams};
use proptest::prelude::*;

/// `(token, output count)` of the distinct tokens of `prompt` then `output`.
fn history(prompt: &[u32], output: &[u32]) -> Vec<(u32, u32)> {
    let mut h: Vec<(u32, u32)> = Vec::new();
    let mut push = |t: u32, c: u32| match h.iter_mut().find(|e| e.0 == t) {
        Some(e) => e.1 += c,
        None => h.push((t, c)),
    };
    prompt.iter().for_each(|&t| push(t, 0));
    output.iter().for_each(|&t| push(t, 1));
    h
}

/// Samples one step: row `i` of `logits` (`[rows, vocab]`) with `rows[i]`.
fn sample<B: Backend>(b: &B, logits: &[f32], vocab: usize, batch: &SamplingBatch) -> SampleOutput {
    let rows = batch.num_rows();
    assert_eq!(logits.len(), rows * vocab);
    let mut t = b.alloc_tensor(rows, vocab).unwrap();
    b.from_host(logits, rows, &mut t).unwrap();
    let mut s = b.alloc_sampling(rows, vocab).unwrap();
    b.upload_sampling(batch, &mut s).unwrap();
    b.sample(&t, &mut s).unwrap();
    let mut out = SampleOutput::default();
    b.read_sampled(&s, &mut out).unwrap();
    out
}

/// One draw with `p` at `position`.
fn draw<B: Backend>(b: &B, p: &SamplingParams, logits: &[f32], position: u64) -> SampleOutput {
    let mut batch = SamplingBatch::default();
    batch.push(p, p.seed.unwrap_or(1234), position, std::iter::empty(), &[]);
    sample(b, logits, logits.len(), &batch)
}

/// Token counts of `draws` draws (positions 0..draws), in steps of up to `chunk` rows.
fn frequencies<B: Backend>(
    b: &B,
    p: &SamplingParams,
    logits: &[f32],
    prompt: &[u32],
    output: &[u32],
    draws: usize,
) -> Vec<usize> {
    let vocab = logits.len();
    let chunk = (64 << 20) / (4 * vocab).max(1);
    let h = history(prompt, output);
    let mut counts = vec![0; vocab];
    let mut done = 0;
    while done < draws {
        let n = chunk.min(draws - done).max(1);
        let mut batch = SamplingBatch::default();
        for i in 0..n {
            batch.push(p, 1234, (done + i) as u64, h.iter().copied(), &[]);
        }
        let rows: Vec<f32> = logits.iter().copied().cycle().take(n * vocab).collect();
        for &t in &sample(b, &rows, vocab, &batch).tokens {
            counts[t as usize] += 1;
        }
        done += n;
    }
    counts
}

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

const DRAWS: usize = 200_000;

fn check<B: Backend>(
    b: &B,
    name: &str,
    p: &SamplingParams,
    logits: &[f32],
    prompt: &[u32],
    output: &[u32],
) {
    let probs = expected(p, logits, prompt, output);
    let counts = frequencies(b, p, logits, prompt, output, DRAWS);
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
fn validate_names_the_field() {
    let cases: [(SamplingParams, &str, &str); 9] = [
        (
            with_unchecked(|p| p.top_p = 1.5),
            "top_p",
            "`top_p` must be in (0, 1], got 1.5",
        ),
        (
            with_unchecked(|p| p.top_p = 0.0),
            "top_p",
            "`top_p` must be in (0, 1], got 0",
        ),
        (
            with_unchecked(|p| p.temperature = -0.1),
            "temperature",
            "`temperature` must be >= 0, got -0.1",
        ),
        (
            with_unchecked(|p| p.temperature = f32::NAN),
            "temperature",
            "`temperature` must be >= 0, got NaN",
        ),
        (
            with_unchecked(|p| p.min_p = 1.1),
            "min_p",
            "`min_p` must be in [0, 1], got 1.1",
        ),
        (
            with_unchecked(|p| p.presence_penalty = 2.5),
            "presence_penalty",
            "`presence_penalty` must be in [-2, 2], got 2.5",
        ),
        (
            with_unchecked(|p| p.frequency_penalty = -3.0),
            "frequency_penalty",
            "`frequency_penalty` must be in [-2, 2], got -3",
        ),
        (
            with_unchecked(|p| p.repetition_penalty = 0.0),
            "repetition_penalty",
            "`repetition_penalty` must be > 0, got 0",
        ),
        (
            with_unchecked(|p| p.logprobs = Some(21)),
            "top_logprobs",
            "`top_logprobs` must be at most 20, got 21",
        ),
    ];
    for (p, param, message) in cases {
        assert_eq!(
            p.validate(),
            Err(SamplingError {
                param,
                message: message.to_owned()
            })
        );
    }
    let bias = with_unchecked(|p| p.logit_bias = vec![(3, 150.0)]);
    assert_eq!(
        bias.validate().expect_err("out of range").param,
        "logit_bias"
    );
    let oob = with_unchecked(|p| p.logit_bias = vec![(10, 1.0)]);
    let err = oob
        .validate_for_vocab(10)
        .expect_err("token 10 of a 10-token vocabulary");
    assert_eq!(err.param, "logit_bias");
    assert!(
        SamplingParams::default().validate().is_ok() && SamplingParams::greedy().validate().is_ok()
    );
}

fn with_unchecked(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
    let mut p = SamplingParams::default();
    f(&mut p);
    p
}

fn greedy_is_argmax_with_ties_to_the_lowest_id<B: Backend + Clone>(b: B) {
    let logits = [0.5, 3.0, -1.0, 3.0, 2.9];
    for p in [
        SamplingParams::greedy(),
        with(|p| p.top_k = 1),
        with(|p| p.temperature = 1e-6),
    ] {
        for pos in 0..10 {
            assert_eq!(draw(&b, &p, &logits, pos).tokens, [1]);
        }
    }
    // Greedy sees the bias.
    let p = with(|p| {
        p.temperature = 0.0;
        p.logit_bias = vec![(4, 0.2)];
    });
    assert_eq!(draw(&b, &p, &logits, 0).tokens, [4]);
    let counts = frequencies(
        &b,
        &with(|p| p.top_k = 1),
        &[0.1, 0.7, 0.7, -2.0],
        &[],
        &[],
        100,
    );
    assert_eq!(counts, [0, 100, 0, 0]);
}

fn logprobs_are_the_raw_log_softmax<B: Backend + Clone>(b: B) {
    let logits = [1.0f32, 3.0, 3.0, -2.0, f32::NEG_INFINITY];
    let p = with(|p| {
        p.temperature = 0.5;
        p.logprobs = Some(3);
        p.logit_bias = vec![(0, 50.0)];
    });
    let mut batch = SamplingBatch::default();
    batch.push(&p, 1, 0, std::iter::empty(), &[]);
    let out = sample(&b, &logits, 5, &batch);
    assert_eq!(out.tokens, [0], "the bias makes token 0 certain");
    let lse = (1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp()).ln();
    let lp = out.token_logprobs(0, &batch.rows[0]).expect("requested");
    assert!(
        (f64::from(lp.logprob) - (1.0 - lse)).abs() < 1e-6,
        "raw logprob, not the biased one"
    );
    let top: Vec<u32> = lp.top.iter().map(|(id, _)| *id).collect();
    assert_eq!(top, [1, 2, 0], "most likely first, ties by id");
    assert!((f64::from(lp.top[0].1) - (3.0 - lse)).abs() < 1e-6);
    // `-inf` is reported as vLLM's -9999; a banned token counts as -inf.
    let p = with(|p| {
        p.temperature = 0.0;
        p.logprobs = Some(5);
    });
    let mut batch = SamplingBatch::default();
    batch.push(&p, 1, 0, std::iter::empty(), &[1]);
    batch.push(
        &with(|p| p.logprobs = Some(0)),
        1,
        0,
        std::iter::empty(),
        &[],
    );
    batch.push(&SamplingParams::greedy(), 1, 0, std::iter::empty(), &[]);
    let rows = [logits, logits, logits].concat();
    let out = sample(&b, &rows, 5, &batch);
    assert_eq!(out.tokens[0], 2, "the banned argmax is skipped");
    let lp = out.token_logprobs(0, &batch.rows[0]).expect("requested");
    assert_eq!(lp.top[3], (1, MIN_LOGPROB));
    assert_eq!(lp.top[4], (4, MIN_LOGPROB));
    assert!(out
        .token_logprobs(1, &batch.rows[1])
        .expect("requested")
        .top
        .is_empty());
    assert!(out.token_logprobs(2, &batch.rows[2]).is_none());
}

fn degenerate_logits_do_not_panic<B: Backend + Clone>(b: B) {
    for logits in [
        [f32::NEG_INFINITY; 4],
        [f32::NAN, 1.0, f32::NAN, 0.0],
        [0.0, f32::INFINITY, 1.0, f32::INFINITY],
    ] {
        let p = with(|p| (p.top_p, p.min_p) = (0.9, 0.1));
        let token = draw(&b, &p, &logits, 0).tokens[0];
        assert!(token < 4);
        if logits[1].is_infinite() && logits[1] > 0.0 {
            assert_eq!(token, 1);
        }
        if logits[0].is_nan() {
            assert_ne!(token, 0, "NaN is never sampled");
        }
    }
}

fn frequencies_follow_each_transform<B: Backend + Clone>(b: B) {
    let b = &b;
    check(b, "t=1", &SamplingParams::default(), &LOGITS, &[], &[]);
    check(
        b,
        "t=0.5",
        &with(|p| p.temperature = 0.5),
        &LOGITS,
        &[],
        &[],
    );
    check(b, "t=2", &with(|p| p.temperature = 2.0), &LOGITS, &[], &[]);
    check(b, "top_k=3", &with(|p| p.top_k = 3), &LOGITS, &[], &[]);
    // Tie between ids 2 and 3 at the boundary: the lower id is kept.
    let p = with(|p| p.top_k = 4);
    assert_eq!(expected(&p, &LOGITS, &[], &[])[3], 0.0);
    check(b, "top_k=4", &p, &LOGITS, &[], &[]);
    check(b, "top_p=0.8", &with(|p| p.top_p = 0.8), &LOGITS, &[], &[]);
    check(b, "top_p=0.3", &with(|p| p.top_p = 0.3), &LOGITS, &[], &[]);
    let p = with(|p| (p.top_k, p.top_p) = (5, 0.7));
    check(b, "top_k=5,top_p=0.7", &p, &LOGITS, &[], &[]);
    check(b, "min_p=0.2", &with(|p| p.min_p = 0.2), &LOGITS, &[], &[]);
    let p = with(|p| (p.temperature, p.min_p) = (0.5, 0.05));
    check(b, "t=0.5,min_p=0.05", &p, &LOGITS, &[], &[]);
}

fn frequencies_follow_penalties_and_bias<B: Backend + Clone>(b: B) {
    let b = &b;
    let p = with(|p| p.repetition_penalty = 1.5);
    check(b, "repetition=1.5", &p, &LOGITS, &[0, 5, 5], &[7]);
    let p = with(|p| p.repetition_penalty = 0.8);
    check(b, "repetition=0.8", &p, &LOGITS, &[4, 6], &[]);
    let p = with(|p| (p.presence_penalty, p.frequency_penalty) = (0.5, 0.3));
    check(b, "presence+frequency", &p, &LOGITS, &[1], &[0, 0, 0, 7]);
    let p = with(|p| p.logit_bias = vec![(6, 4.0), (0, -100.0)]);
    check(b, "bias", &p, &LOGITS, &[], &[]);
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
    check(b, "all", &p, &LOGITS, &[0, 1], &[7, 7, 2]);
}

/// The real vocabulary size with Qwen3's default top_k=20: frequencies still match.
fn full_vocabulary_top_k_top_p<B: Backend + Clone>(b: B) {
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
    let counts = frequencies(&b, &p, &logits, &[], &[], draws);
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

/// Step `step`'s logits of a 64-token vocabulary.
fn step_logits(step: usize) -> Vec<f32> {
    (0..64)
        .map(|i| ((i * 31 + step * 17) % 23) as f32 * 0.2)
        .collect()
}

/// `steps` tokens of sequences sampled side by side, one row each per step, each row's
/// position its prompt length plus the step, its penalty history its own output.
fn streams<B: Backend>(
    b: &B,
    seqs: &[(SamplingParams, u64)],
    prompt: &[u32],
    steps: usize,
) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new(); seqs.len()];
    for step in 0..steps {
        let mut batch = SamplingBatch::default();
        for ((p, seed), o) in seqs.iter().zip(&out) {
            let h = history(prompt, o);
            batch.push(p, *seed, (prompt.len() + step) as u64, h, &[]);
        }
        let logits = step_logits(step).repeat(seqs.len());
        for (o, &t) in out.iter_mut().zip(&sample(b, &logits, 64, &batch).tokens) {
            o.push(t);
        }
    }
    out
}

fn a_seed_reproduces_exactly<B: Backend + Clone>(b: B) {
    let p = with(|p| (p.temperature, p.top_p, p.repetition_penalty) = (0.9, 0.95, 1.1));
    let run = |seed: u64| streams(&b, &[(p.clone(), seed)], &[1, 2, 3], 200).remove(0);
    let first = run(42);
    assert_eq!(first, run(42));
    assert_ne!(first, run(43), "different seeds give different streams");
}

/// Two rows with the same seed and positions in one step (beside a third) give identical
/// streams, equal to the stream of one sampled alone: a draw depends on its seed and position
/// only.
fn same_seed_in_one_batch_gives_identical_streams<B: Backend + Clone>(b: B) {
    let p = with(|p| (p.top_k, p.min_p) = (40, 0.02));
    let other = with(|p| p.temperature = 1.3);
    let alone = streams(&b, &[(p.clone(), 7)], &[], 100).remove(0);
    let batch = streams(&b, &[(p.clone(), 7), (other, 8), (p, 7)], &[], 100);
    assert_eq!(batch[0], alone);
    assert_eq!(batch[2], alone);
    assert_ne!(batch[1], alone);
}

kestrel_backend::backend_tests!(
    greedy_is_argmax_with_ties_to_the_lowest_id,
    logprobs_are_the_raw_log_softmax,
    degenerate_logits_do_not_panic,
    frequencies_follow_each_transform,
    frequencies_follow_penalties_and_bias,
    full_vocabulary_top_k_top_p,
    a_seed_reproduces_exactly,
    same_seed_in_one_batch_gives_identical_streams,
    masked_tokens_are_never_sampled,
);

/// An allowed-token bitmask (structured output): a disallowed token is never drawn, however
/// likely, greedy or not, with penalties and bias in play; the sampled token's logprob is its
/// log-softmax over the allowed tokens; an unmasked row in the same step is unaffected; the
/// tokens past the mask's words are disallowed.
fn masked_tokens_are_never_sampled<B: Backend + Clone>(b: B) {
    let vocab = 100;
    // The likeliest tokens by far are the disallowed ones.
    let logits: Vec<f32> = (0..vocab)
        .map(|t| if t % 3 == 0 { 1.0 } else { 9.0 })
        .collect();
    // Allow every third token below 64 (two words; 64..100 lie past the mask).
    let mut words = [0u32; 2];
    for t in (0..64).step_by(3) {
        words[t / 32] |= 1 << (t % 32);
    }
    let allowed = |t: u32| t < 64 && t % 3 == 0;
    let params = [
        SamplingParams::greedy(),
        with(|p| p.temperature = 1.5),
        with(|p| {
            p.temperature = 0.8;
            p.top_k = 5;
            p.repetition_penalty = 1.3;
            p.logit_bias = vec![(1, 50.0), (3, 2.0)];
            p.logprobs = Some(3);
        }),
    ];
    for p in &params {
        let mut batch = SamplingBatch::default();
        let rows = 64;
        for pos in 0..rows {
            batch.push(p, 99, pos, history(&[3, 4], &[6]), &[]);
            batch.restrict_last_row(&words);
        }
        // One unrestricted row: the disallowed tokens stay its likeliest.
        batch.push(&SamplingParams::greedy(), 99, 0, std::iter::empty(), &[]);
        let all = logits.repeat(rows as usize + 1);
        let out = sample(&b, &all, vocab, &batch);
        for &t in &out.tokens[..rows as usize] {
            assert!(allowed(t), "{p:?} drew disallowed token {t}");
        }
        assert!(!allowed(out.tokens[rows as usize]));
        if p.logprobs.is_some() {
            // 22 allowed tokens of equal logit: each has logprob -ln 22.
            let lp = out.token_logprobs(0, &batch.rows[0]).expect("asked");
            assert!((lp.logprob + (22f32).ln()).abs() < 1e-4, "{lp:?}");
            assert!(lp.top.iter().all(|&(t, _)| allowed(t)), "{lp:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// top_k / top_p / min_p never emit a token the reference excludes (CPU).
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
        let b = kestrel_backend::cpu::CpuBackend::new();
        let mut batch = SamplingBatch::default();
        for pos in 0..32 {
            batch.push(&p, seed, pos, std::iter::empty(), &[]);
        }
        let rows = logits.repeat(32);
        for &token in &sample(&b, &rows, logits.len(), &batch).tokens {
            prop_assert!(allowed[token as usize] > 0.0, "drew excluded token {} (p = {:?})", token, allowed);
        }
    }
}
