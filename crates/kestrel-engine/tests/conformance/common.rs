//! Fixtures and engine helpers shared by the conformance cases.

use std::path::{Path, PathBuf};

use kestrel_backend::{Backend, BatchInput, KvDtype, StepOptions};
use kestrel_engine::{
    start_engine, EngineConfig, EngineEvent, EngineHandle, EngineRequest, FinishReason,
    RequestStream, SamplingParams, TokenLogprobs, Usage,
};
use kestrel_model::{ModelFiles, ModelRunner, QwenModel, RunnerConfig};

pub const BLOCK: usize = 16;

/// `tests/fixtures/hf/<name>` (committed tiny models made by transformers).
pub fn hf_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
}

/// `${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}`, filled by `scripts/fetch-fixtures.sh`.
pub fn fetched_fixtures() -> PathBuf {
    std::env::var_os("KESTREL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                .join(".cache/kestrel/fixtures")
        })
}

/// The real Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0 / Q8_0 / Q4_K / Q6_K tensors).
pub fn real_gguf() -> PathBuf {
    let p = fetched_fixtures().join("qwen2.5-coder-0.5b-instruct.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-fixtures.sh",
        p.display()
    );
    p
}

pub fn load<B: Backend>(backend: &B, dir: &Path) -> (QwenModel<B>, KvDtype) {
    let files = ModelFiles::open(dir).expect("model files");
    let model = QwenModel::load(backend, files.config().clone(), files.weights()).expect("load");
    (model, files.default_kv_dtype())
}

/// A small engine configuration; tests override fields.
pub fn config(kv_dtype: KvDtype) -> EngineConfig {
    EngineConfig {
        max_num_seqs: 16,
        max_num_batched_tokens: 512,
        max_model_len: 256,
        block_size: BLOCK,
        num_blocks: 64,
        enable_prefix_caching: true,
        max_queued_requests: 64,
        kv_dtype,
        long_prefill_token_threshold: 0,
        ..EngineConfig::default()
    }
}

pub fn engine<B: Backend>(
    backend: B,
    dir: &Path,
    f: impl FnOnce(&mut EngineConfig),
) -> EngineHandle {
    let (model, kv_dtype) = load(&backend, dir);
    let mut c = config(kv_dtype);
    c.max_model_len = c.max_model_len.min(model.config.max_position_embeddings);
    f(&mut c);
    start_engine(backend, model, c).expect("engine starts")
}

/// A deterministic pseudo-random prompt over the first `vocab` ids.
pub fn prompt(seed: u32, len: usize, vocab: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97 + 13) >> 7) % vocab)
        .collect()
}

pub fn request(
    id: &str,
    prompt: Vec<u32>,
    max_tokens: usize,
    sampling: SamplingParams,
) -> EngineRequest {
    EngineRequest {
        request_id: id.into(),
        prompt_ids: prompt,
        sampling,
        max_tokens,
        min_tokens: 0,
        stop_token_ids: vec![],
        cache_salt: None,
        constraint: Default::default(),
    }
}

pub fn greedy(id: &str, prompt: Vec<u32>, max_tokens: usize) -> EngineRequest {
    request(id, prompt, max_tokens, SamplingParams::greedy())
}

/// What one stream produced.
#[derive(Debug)]
pub struct Output {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<Option<TokenLogprobs>>,
    pub reason: FinishReason,
    pub usage: Usage,
}

/// Reads a stream to its end.
pub fn collect(stream: &mut RequestStream) -> Output {
    let (mut tokens, mut logprobs) = (Vec::new(), Vec::new());
    while let Some(event) = stream.blocking_recv() {
        match event {
            EngineEvent::Token { id, logprobs: lp } => {
                tokens.push(id);
                logprobs.push(lp);
            }
            EngineEvent::Finished { reason, usage } => {
                return Output {
                    tokens,
                    logprobs,
                    reason,
                    usage,
                }
            }
            EngineEvent::Error { message } => panic!("engine error: {message}"),
        }
    }
    panic!("stream ended without a Finished event");
}

/// Submits all at once, then reads every stream.
pub fn run_all(handle: &EngineHandle, reqs: Vec<EngineRequest>) -> Vec<Output> {
    let mut streams: Vec<RequestStream> = reqs
        .into_iter()
        .map(|r| handle.submit(r).expect("submit"))
        .collect();
    streams.iter_mut().map(collect).collect()
}

/// Every position's logits of `prompt` (`[len * vocab]`), prefilled in chunks of `chunk`
/// tokens over a scrambled block table, through the runner.
pub fn all_logits<B: Backend>(
    backend: B,
    model: QwenModel<B>,
    prompt: &[u32],
    chunk: usize,
    opts: StepOptions,
) -> Vec<f32> {
    let blocks = prompt.len().div_ceil(BLOCK);
    // Blocks need not be contiguous or ordered.
    let table: Vec<u32> = (0..blocks as u32).rev().map(|b| b + 3).collect();
    let config = RunnerConfig::sized(chunk.min(prompt.len()), blocks + 3, KvDtype::F32);
    let mut runner = ModelRunner::new(backend, model, config).expect("runner");
    let (mut out, mut part_logits) = (Vec::new(), Vec::new());
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let mut batch = BatchInput::from_sequences(&[(part, i * chunk, &table)], BLOCK);
        batch.logits_indices = (0..part.len() as u32).collect();
        runner
            .logits(&batch, opts, &mut part_logits)
            .expect("forward");
        out.extend_from_slice(&part_logits);
    }
    out
}

/// Every value within `1e-4 ×` the largest `|want|`.
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max |diff| {worst} > 1e-4 × {scale}"
    );
}

/// Logprobs compared bit for bit (batch-invariant kernels give a sequence the same logits).
pub fn assert_same_logprobs(a: &Output, b: &Output, what: &str) {
    assert_eq!(a.tokens, b.tokens, "{what}: tokens");
    for (i, (x, y)) in a.logprobs.iter().zip(&b.logprobs).enumerate() {
        let bits = |l: &Option<TokenLogprobs>| {
            l.as_ref().map(|l| {
                (
                    l.logprob.to_bits(),
                    l.top
                        .iter()
                        .map(|(t, v)| (*t, v.to_bits()))
                        .collect::<Vec<_>>(),
                )
            })
        };
        assert_eq!(bits(x), bits(y), "{what}: logprobs of token {i}");
    }
}
