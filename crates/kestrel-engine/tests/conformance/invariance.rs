//! What the engine does to a sequence never changes its output. On the tiny f32 Qwen3 fixture
//! (f32 KV), greedy requests get batch-invariant kernels by default, so beyond equal tokens
//! their logprobs must be equal bit for bit whatever else shares their steps, however their
//! prefill is chunked, on a prefix-cache hit, after preemption, and with async scheduling. Seeded
//! sampling (temperature 1) gives the same tokens alone, in a batch, and on a cache hit.

use kestrel_backend::{Backend, KvDtype};
use kestrel_engine::{BatchInvariance, BatchingPolicy, EngineConfig, FinishReason, SamplingParams};

use crate::common::*;

const VOCAB: u32 = 320;

fn fixture() -> std::path::PathBuf {
    hf_fixture("qwen3-tiny-tied")
}

fn cfg(c: &mut EngineConfig) {
    c.kv_dtype = KvDtype::F32;
}

/// Greedy with the raw logprobs of every step (5 alternatives), to compare logits exactly.
fn traced(id: &str, prompt: Vec<u32>, max_tokens: usize) -> kestrel_engine::EngineRequest {
    request(
        id,
        prompt,
        max_tokens,
        SamplingParams {
            logprobs: Some(5),
            ..SamplingParams::greedy()
        },
    )
}

fn cases() -> Vec<(Vec<u32>, usize)> {
    [
        (1, 5, 12),
        (2, 17, 9),
        (3, 40, 20),
        (4, 3, 30),
        (5, 77, 7),
        (6, 16, 16),
    ]
    .into_iter()
    .map(|(seed, len, max_tokens)| (prompt(seed, len, VOCAB), max_tokens))
    .collect()
}

/// Each case alone in an engine of its own (one sequence, whole prefill, no prefix cache).
fn alone<B: Backend + Clone>(b: &B, cases: &[(Vec<u32>, usize)]) -> Vec<Output> {
    cases
        .iter()
        .map(|(p, n)| {
            let handle = engine(b.clone(), &fixture(), |c| {
                cfg(c);
                c.max_num_seqs = 1;
                c.enable_prefix_caching = false;
            });
            run_all(&handle, vec![traced("alone", p.clone(), *n)]).remove(0)
        })
        .collect()
}

fn batch_of_different_lengths_equals_each_alone<B: Backend + Clone>(b: B) {
    let cases = cases();
    let want = alone(&b, &cases);
    let handle = engine(b, &fixture(), cfg);
    let reqs = cases
        .iter()
        .enumerate()
        .map(|(i, (p, n))| traced(&format!("r{i}"), p.clone(), *n))
        .collect();
    for (i, (got, want)) in run_all(&handle, reqs).iter().zip(&want).enumerate() {
        assert_same_logprobs(got, want, &format!("sequence {i}"));
        assert_eq!(got.reason, FinishReason::Length);
        assert_eq!(got.usage.prompt_tokens, cases[i].0.len());
        assert_eq!(got.usage.completion_tokens, cases[i].1);
    }
}

fn chunked_prefill_equals_whole_prefill<B: Backend + Clone>(b: B) {
    let cases = cases();
    let want = alone(&b, &cases);
    // (step budget, per-sequence prefill cap): chunks cut by the budget, and by the cap while
    // other sequences decode in the same steps.
    for (budget, cap) in [(1, 0), (5, 0), (16, 0), (33, 0), (64, 7)] {
        let handle = engine(b.clone(), &fixture(), |c| {
            cfg(c);
            c.max_num_batched_tokens = budget;
            c.enable_prefix_caching = false;
            c.long_prefill_token_threshold = cap;
        });
        let reqs = cases
            .iter()
            .enumerate()
            .map(|(i, (p, n))| traced(&format!("r{i}"), p.clone(), *n))
            .collect();
        for (i, (g, w)) in run_all(&handle, reqs).iter().zip(&want).enumerate() {
            assert_same_logprobs(g, w, &format!("sequence {i}, budget {budget}, cap {cap}"));
        }
    }
}

fn prefix_cache_hit_equals_miss<B: Backend + Clone>(b: B) {
    let system = prompt(9, 50, VOCAB);
    let mut with_suffix = system.clone();
    with_suffix.extend(prompt(10, 11, VOCAB));
    let want = alone(&b, &[(with_suffix.clone(), 10)]);
    let handle = engine(b, &fixture(), cfg);
    let first = run_all(&handle, vec![traced("a", system.clone(), 10)]);
    assert_eq!(first[0].usage.cached_tokens, 0);
    // The same prompt again (3 full blocks cached), and a longer one sharing it.
    let again = run_all(
        &handle,
        vec![
            traced("b", system.clone(), 10),
            traced("c", with_suffix, 10),
        ],
    );
    assert_same_logprobs(&again[0], &first[0], "hit vs miss");
    assert_eq!(again[0].usage.cached_tokens, 48);
    assert_eq!(again[1].usage.cached_tokens, 48);
    assert_same_logprobs(&again[1], &want[0], "a hit on a shared prefix vs alone");
    let m = handle.metrics();
    assert_eq!(
        m.prefix_cache_hits
            .load(std::sync::atomic::Ordering::Relaxed),
        96
    );
}

/// Prompts that share a system prompt and two tokens of its fourth block: a later one reuses
/// those tokens of the block by copying their KV (50 cached tokens, not 48), and so do prompts
/// admitted in the same step as the block's owner, which copy the slots that step writes.
fn partial_block_hit_equals_miss<B: Backend + Clone>(b: B) {
    let system = prompt(12, 50, VOCAB);
    let with_suffix = |seed| [system.clone(), prompt(seed, 20, VOCAB)].concat();
    let prompts = [with_suffix(13), with_suffix(14), with_suffix(15)];
    let cases: Vec<_> = prompts.iter().map(|p| (p.clone(), 8)).collect();
    let want = alone(&b, &cases);
    let handle = engine(b.clone(), &fixture(), cfg);
    let first = run_all(&handle, vec![traced("x", prompts[0].clone(), 8)]);
    assert_same_logprobs(&first[0], &want[0], "cold");
    let later = run_all(&handle, vec![traced("y", prompts[1].clone(), 8)]);
    assert_eq!(later[0].usage.cached_tokens, 50);
    assert_same_logprobs(&later[0], &want[1], "partial hit vs miss");
    // The throughput policy admits all three in one step.
    let handle = engine(b, &fixture(), |c| {
        cfg(c);
        c.batching_policy = BatchingPolicy::Throughput;
    });
    let reqs = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| traced(&format!("r{i}"), p.clone(), 8))
        .collect();
    let got = run_all(&handle, reqs);
    assert_eq!(
        got.iter()
            .map(|g| g.usage.cached_tokens)
            .collect::<Vec<_>>(),
        [0, 50, 50]
    );
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_same_logprobs(g, w, &format!("sequence {i} admitted in one step"));
    }
}

fn n_choices_share_prompt_blocks<B: Backend + Clone>(b: B) {
    let p = prompt(11, 40, VOCAB);
    let want = alone(&b, &[(p.clone(), 8)]);
    let handle = engine(b, &fixture(), cfg);
    let got = run_all(
        &handle,
        (0..3)
            .map(|i| traced(&format!("x-{i}"), p.clone(), 8))
            .collect(),
    );
    for g in &got {
        assert_same_logprobs(g, &want[0], "choice");
    }
    // The first is a miss; the others hit the 2 full blocks it registered in the same step.
    assert_eq!(
        got.iter()
            .map(|g| g.usage.cached_tokens)
            .collect::<Vec<_>>(),
        [0, 32, 32]
    );
}

fn preemption_and_resume_equal_an_uninterrupted_run<B: Backend + Clone>(b: B) {
    let cases: Vec<(Vec<u32>, usize)> = (0..5)
        .map(|i| (prompt(20 + i, 20 + 7 * i as usize, VOCAB), 30))
        .collect();
    let want = alone(&b, &cases);
    // 6 blocks of 16: room for one or two sequences at a time.
    for async_scheduling in [false, true] {
        let handle = engine(b.clone(), &fixture(), |c| {
            cfg(c);
            c.num_blocks = 6;
            c.max_model_len = 96;
            c.max_num_batched_tokens = 24;
            c.async_scheduling = async_scheduling;
        });
        let reqs = cases
            .iter()
            .enumerate()
            .map(|(i, (p, n))| traced(&format!("r{i}"), p.clone(), *n))
            .collect();
        for (i, (g, w)) in run_all(&handle, reqs).iter().zip(&want).enumerate() {
            assert_same_logprobs(g, w, &format!("sequence {i}, async {async_scheduling}"));
        }
        let m = handle.metrics();
        assert!(
            m.num_preemptions.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "the test must preempt"
        );
    }
}

/// Async scheduling (the next step scheduled while one runs, decode inputs taken from the
/// previous step's samples on the device) gives what synchronous scheduling gives: greedy,
/// seeded, with stop tokens, and with penalties (which make the loop wait for each step).
fn async_scheduling_equals_synchronous<B: Backend + Clone>(b: B) {
    let mut reqs: Vec<kestrel_engine::EngineRequest> = cases()
        .into_iter()
        .enumerate()
        .map(|(i, (p, n))| traced(&format!("g{i}"), p, n))
        .collect();
    reqs.push(request(
        "seeded",
        prompt(7, 21, VOCAB),
        25,
        SamplingParams {
            seed: Some(3),
            ..SamplingParams::default()
        },
    ));
    reqs.push(request(
        "penalized",
        prompt(8, 9, VOCAB),
        25,
        SamplingParams {
            seed: Some(4),
            repetition_penalty: 1.3,
            presence_penalty: 0.5,
            ..SamplingParams::default()
        },
    ));
    let mut stopped = traced("stopped", prompt(9, 12, VOCAB), 40);
    let free = alone(&b, &[(stopped.prompt_ids.clone(), 40)]).remove(0);
    stopped.stop_token_ids = vec![free.tokens[5]];
    stopped.min_tokens = 2;
    reqs.push(stopped);
    let run = |async_scheduling: bool| {
        let handle = engine(b.clone(), &fixture(), |c| {
            cfg(c);
            c.async_scheduling = async_scheduling;
            c.max_num_batched_tokens = 40;
        });
        run_all(&handle, reqs.clone())
    };
    let (sync, overlapped) = (run(false), run(true));
    for (s, a) in sync.iter().zip(&overlapped) {
        assert_same_logprobs(a, s, "async vs sync");
        assert_eq!((a.reason, a.usage), (s.reason, s.usage));
    }
    let last = sync.last().expect("the stopped request");
    assert!(matches!(last.reason, FinishReason::Stop { .. }));
}

/// A seeded request samples the same tokens alone, beside seven other requests (some seeded,
/// some not), and when its prompt comes from the prefix cache.
fn seeded_sampling_is_identical_across_batch_compositions<B: Backend + Clone>(b: B) {
    let seeded = |id: &str, p: Vec<u32>, seed: u64| {
        request(
            id,
            p,
            24,
            SamplingParams {
                seed: Some(seed),
                top_p: 0.95,
                ..SamplingParams::default()
            },
        )
    };
    let p = prompt(31, 33, VOCAB);
    let handle = engine(b.clone(), &fixture(), |c| {
        cfg(c);
        c.enable_prefix_caching = false;
    });
    let lone = run_all(&handle, vec![seeded("lone", p.clone(), 7)]).remove(0);
    let handle = engine(b, &fixture(), cfg);
    let mut batch = vec![seeded("target", p.clone(), 7)];
    for i in 0..7u32 {
        let other = prompt(40 + i, 10 + 5 * i as usize, VOCAB);
        batch.push(if i % 2 == 0 {
            seeded(&format!("o{i}"), other, u64::from(i))
        } else {
            request(&format!("o{i}"), other, 24, SamplingParams::default())
        });
    }
    let batched = run_all(&handle, batch).remove(0);
    assert_eq!(batched.tokens, lone.tokens, "in a batch of 8");
    // 32 of the 33 prompt tokens now come from the cache.
    let hit = run_all(&handle, vec![seeded("again", p, 7)]).remove(0);
    assert_eq!(hit.usage.cached_tokens, 32);
    assert_eq!(hit.tokens, lone.tokens, "on a prefix-cache hit");
}

/// `--batch-invariant off` and `on` are honoured: `on` gives sampled (unseeded) requests the
/// same kernels as greedy ones, so greedy results equal `auto`'s.
fn every_invariance_mode_serves<B: Backend + Clone>(b: B) {
    let cases = cases();
    let mut results = Vec::new();
    for mode in [
        BatchInvariance::Auto,
        BatchInvariance::On,
        BatchInvariance::Off,
    ] {
        let handle = engine(b.clone(), &fixture(), |c| {
            cfg(c);
            c.batch_invariance = mode;
        });
        let reqs = cases
            .iter()
            .enumerate()
            .map(|(i, (p, n))| traced(&format!("r{i}"), p.clone(), *n))
            .collect();
        results.push(run_all(&handle, reqs));
    }
    for (a, on) in results[0].iter().zip(&results[1]) {
        assert_same_logprobs(a, on, "auto vs on");
    }
    for (a, off) in results[0].iter().zip(&results[2]) {
        assert_eq!(a.tokens, off.tokens, "greedy tokens with the fast kernels");
    }
}

kestrel_backend::backend_tests!(
    batch_of_different_lengths_equals_each_alone,
    chunked_prefill_equals_whole_prefill,
    prefix_cache_hit_equals_miss,
    partial_block_hit_equals_miss,
    n_choices_share_prompt_blocks,
    preemption_and_resume_equal_an_uninterrupted_run,
    async_scheduling_equals_synchronous,
    seeded_sampling_is_identical_across_batch_compositions,
    every_invariance_mode_serves,
);
