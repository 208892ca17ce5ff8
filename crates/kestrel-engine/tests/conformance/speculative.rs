//! Speculative decoding (prompt lookup) never changes what a sequence generates: greedy
//! outputs, their logprobs and seeded samples are those of non-speculative decoding, with
//! drafts accepted and rejected along the way, batched with other sequences, with stop tokens
//! and `max_tokens` falling inside an accepted run of drafts, beside a request with penalties
//! (not speculated) and with async scheduling asked for; on the tiny f32 Qwen3 fixture and on
//! the real GGUF with an input-grounded prompt (greedy and seeded).

use std::sync::atomic::Ordering::Relaxed;

use kestrel_backend::{Backend, KvDtype};
use kestrel_engine::{
    EngineHandle, EngineRequest, FinishReason, SamplingParams, SpeculativeConfig,
};
use kestrel_text::Tokenizer;

use crate::common::*;

const VOCAB: u32 = 320;

fn spec(k: usize, min: usize, max: usize) -> SpeculativeConfig {
    SpeculativeConfig::from_json(&format!(
        r#"{{"method": "ngram", "num_speculative_tokens": {k}, "prompt_lookup_min": {min}, "prompt_lookup_max": {max}}}"#
    ))
    .expect("valid config")
}

/// `(drafts, draft tokens, accepted tokens, accepted at position 0)` so far.
fn counters(handle: &EngineHandle) -> (u64, u64, u64, u64) {
    let m = handle.metrics();
    let s = m.spec_decode.as_ref().expect("speculative metrics");
    (
        s.num_drafts.load(Relaxed),
        s.num_draft_tokens.load(Relaxed),
        s.num_accepted_tokens.load(Relaxed),
        s.num_accepted_tokens_per_pos[0].load(Relaxed),
    )
}

/// Prompts whose continuations repeat parts of them (so drafts are proposed), and others.
fn tiny_requests() -> Vec<EngineRequest> {
    let motif = prompt(9, 7, VOCAB);
    let repeated: Vec<u32> = motif.iter().cycle().take(30).copied().collect();
    let traced = |id: &str, p: Vec<u32>, n: usize| {
        request(
            id,
            p,
            n,
            SamplingParams {
                logprobs: Some(3),
                ..SamplingParams::greedy()
            },
        )
    };
    vec![
        traced("repeated", repeated.clone(), 60),
        traced("random-a", prompt(1, 20, VOCAB), 60),
        traced("random-b", prompt(2, 45, VOCAB), 40),
        traced("short-max", repeated[..20].to_vec(), 3),
        request(
            "seeded",
            repeated.clone(),
            50,
            SamplingParams {
                temperature: 0.7,
                seed: Some(11),
                ..SamplingParams::default()
            },
        ),
        // Penalties: never speculated, decoded as before beside the others.
        request(
            "penalized",
            repeated.clone(),
            30,
            SamplingParams {
                repetition_penalty: 1.3,
                ..SamplingParams::greedy()
            },
        ),
        request(
            "top-k",
            prompt(3, 12, VOCAB),
            50,
            SamplingParams {
                temperature: 1.0,
                top_k: 3,
                seed: Some(5),
                ..SamplingParams::default()
            },
        ),
    ]
}

fn greedy_and_seeded_outputs_are_unchanged_by_speculation<B: Backend + Clone>(b: B) {
    let fixture = hf_fixture("qwen3-tiny-tied");
    let plain = engine(b.clone(), &fixture, |c| c.kv_dtype = KvDtype::F32);
    let want = run_all(&plain, tiny_requests());
    // The last one asks for async scheduling, which speculation turns into plain steps.
    for (k, min, max, async_scheduling) in [
        (4, 1, 3, false),
        (2, 2, 5, false),
        (7, 1, 1, false),
        (3, 1, 4, true),
    ] {
        let sped = engine(b.clone(), &fixture, |c| {
            c.kv_dtype = KvDtype::F32;
            c.speculative = Some(spec(k, min, max));
            c.async_scheduling = async_scheduling;
        });
        // All at once: verifications share steps with decodes and prefills.
        let got = run_all(&sped, tiny_requests());
        for ((w, g), r) in want.iter().zip(&got).zip(tiny_requests()) {
            let what = format!("k={k} min={min} max={max} {}", r.request_id);
            assert_same_logprobs(g, w, &what);
            assert_eq!(g.reason, w.reason, "{what}");
            assert_eq!(g.usage, w.usage, "{what}");
        }
        // Seeded requests reproduce with speculation too.
        let again = run_all(&sped, tiny_requests());
        for (g, a) in got.iter().zip(&again) {
            assert_eq!(g.tokens, a.tokens, "seeded, twice, k={k}");
        }
        let (drafts, draft_tokens, accepted, at_0) = counters(&sped);
        eprintln!("k={k} min={min} max={max}: {drafts} drafts, {accepted} of {draft_tokens} draft tokens accepted");
        assert!(drafts > 0, "k={k}: drafts were proposed");
        assert!(accepted > 0, "k={k}: some drafts were accepted");
        assert!(accepted < draft_tokens, "k={k}: some drafts were rejected");
        assert!(at_0 > 0 && at_0 <= drafts);
        // Every block is back (rejected drafts' blocks too).
        let m = sped.metrics();
        assert_eq!(
            m.num_kv_blocks_free.load(Relaxed),
            m.num_kv_blocks_total.load(Relaxed)
        );
    }
}

/// A stop token or `max_tokens` inside a run of accepted drafts ends the output there.
fn stops_inside_an_accepted_run<B: Backend + Clone>(b: B) {
    let fixture = hf_fixture("qwen3-tiny-tied");
    let motif = prompt(9, 7, VOCAB);
    let repeated: Vec<u32> = motif.iter().cycle().take(30).copied().collect();
    let plain = engine(b.clone(), &fixture, |c| c.kv_dtype = KvDtype::F32);
    let sped = engine(b, &fixture, |c| {
        c.kv_dtype = KvDtype::F32;
        c.speculative = Some(spec(6, 1, 4));
    });
    let free = run_all(&plain, vec![greedy("free", repeated.clone(), 60)]).remove(0);
    let (_, _, accepted, _) = {
        run_all(&sped, vec![greedy("warm", repeated.clone(), 60)]);
        counters(&sped)
    };
    assert!(accepted > 0, "the continuation is drafted");
    for cut in [5usize, 17, 33, 58] {
        let stop = free.tokens[cut];
        let first = free
            .tokens
            .iter()
            .position(|&t| t == stop)
            .expect("present");
        let mut r = greedy("stop", repeated.clone(), 60);
        r.stop_token_ids = vec![stop];
        let got = run_all(&sped, vec![r]).remove(0);
        assert_eq!(got.tokens, free.tokens[..first], "stop at {cut}");
        assert_eq!(got.reason, FinishReason::Stop { token: Some(stop) });
        assert_eq!(got.usage.completion_tokens, first + 1);
        let got = run_all(&sped, vec![greedy("len", repeated.clone(), cut)]).remove(0);
        assert_eq!(got.tokens, free.tokens[..cut], "max_tokens {cut}");
        assert_eq!(got.reason, FinishReason::Length);
    }
}

/// The real GGUF quoting its input: many drafts accepted, the same greedy text.
fn real_gguf_repeats_the_same_text_with_speculation<B: Backend + Clone>(b: B) {
    let tok = Tokenizer::from_dir(fetched_fixtures().join("qwen3-tokenizer")).expect("tokenizer");
    let text = "Repeat this text exactly: The river carried small boats past old stone houses, \
                where people kept gardens of herbs and flowers. Every morning the bakers opened \
                their doors to sell bread while children ran toward school.";
    let chat = format!(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    );
    let prompt = tok.encode(&chat, false).expect("encode");
    let gguf = real_gguf();
    let plain = engine(b.clone(), &gguf, |c| c.max_model_len = 512);
    let want = run_all(&plain, vec![greedy("plain", prompt.clone(), 48)]).remove(0);
    let sped = engine(b, &gguf, |c| {
        c.max_model_len = 512;
        c.speculative = Some(spec(4, 2, 5));
    });
    let got = run_all(&sped, vec![greedy("spec", prompt.clone(), 48)]).remove(0);
    assert_eq!(
        tok.decode(&got.tokens, false).unwrap(),
        tok.decode(&want.tokens, false).unwrap()
    );
    assert_eq!(got.tokens, want.tokens);
    let (drafts, draft_tokens, accepted, _) = counters(&sped);
    eprintln!("real GGUF: {drafts} drafts, {accepted} of {draft_tokens} draft tokens accepted");
    assert!(
        drafts > 0 && accepted > 0,
        "{drafts} drafts, {accepted} accepted"
    );
    assert!(
        accepted * 2 >= draft_tokens,
        "quoting the input: most drafts are accepted ({accepted} of {draft_tokens})"
    );
    // Seeded sampling: the same tokens twice, and those of decoding without speculation.
    let seeded = || {
        request(
            "seeded",
            prompt.clone(),
            32,
            SamplingParams {
                temperature: 0.8,
                seed: Some(1234),
                ..SamplingParams::default()
            },
        )
    };
    let want = run_all(&plain, vec![seeded()]).remove(0).tokens;
    assert_eq!(run_all(&sped, vec![seeded()]).remove(0).tokens, want);
    assert_eq!(run_all(&sped, vec![seeded()]).remove(0).tokens, want);
}

kestrel_backend::backend_tests!(
    greedy_and_seeded_outputs_are_unchanged_by_speculation,
    stops_inside_an_accepted_run,
    real_gguf_repeats_the_same_text_with_speculation,
);
