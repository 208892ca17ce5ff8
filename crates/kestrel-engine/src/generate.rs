//! Single-sequence generation: prefill the prompt in chunks, then decode one token per step,
//! through the same flat-batch forward and paged KV cache the batching engine uses. This is the
//! path of `kestrel generate` and of the parity tests; the sampler is passed in as a closure so
//! this loop knows nothing about sampling policy.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use kestrel_backend::{Backend, BatchInput, KvDtype};
use kestrel_model::{KvCache, QwenModel};

/// Tokens per KV block.
pub const BLOCK_SIZE: usize = 16;

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Maximum number of new tokens.
    pub max_tokens: usize,
    /// Tokens that end generation (not emitted), unless `ignore_eos`.
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// Largest prefill chunk (tokens per forward step).
    pub prefill_chunk: usize,
    /// Element type of the KV cache.
    pub kv_dtype: KvDtype,
}

#[derive(Clone, Debug, Default)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Why generation ended: "stop" (a stop token) or "length".
    pub finish_reason: &'static str,
}

impl GenerateStats {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Decode speed over the tokens produced by decode steps (the first comes from prefill).
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt ({prompt}) + max_tokens ({max_tokens}) exceeds the model's context of {context} tokens")]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error(transparent)]
    Model(#[from] kestrel_model::ModelError),
}

/// Runs one sequence to completion. `sample(logits, generated_so_far)` picks the next token;
/// `on_token(id)` sees each new token and may stop generation early.
pub fn generate<B: Backend>(
    backend: &B,
    model: &QwenModel<B>,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut sample: impl FnMut(&[f32], &[u32]) -> u32,
    mut on_token: impl FnMut(u32) -> ControlFlow<()>,
) -> Result<(Vec<u32>, GenerateStats), GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let context = model.config.max_position_embeddings;
    let total = prompt.len() + opts.max_tokens;
    if total > context {
        return Err(GenerateError::TooLong {
            prompt: prompt.len(),
            max_tokens: opts.max_tokens,
            context,
        });
    }
    let num_blocks = total.div_ceil(BLOCK_SIZE).max(1);
    let mut kv = KvCache::new(
        backend,
        &model.config,
        num_blocks,
        BLOCK_SIZE,
        opts.kv_dtype,
    )?;
    let table: Vec<u32> = (0..num_blocks as u32).collect();
    let mut stats = GenerateStats {
        prompt_tokens: prompt.len(),
        finish_reason: "length",
        ..Default::default()
    };
    let mut out = Vec::new();
    if opts.max_tokens == 0 {
        return Ok((out, stats));
    }

    let start = Instant::now();
    let chunk = opts.prefill_chunk.max(1);
    let mut logits = None;
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let batch = BatchInput::from_sequences(&[(part, i * chunk, &table)], BLOCK_SIZE);
        logits = Some(model.forward(backend, &batch, &mut kv)?);
    }
    let mut logits = logits.expect("a non-empty prompt has at least one chunk");
    stats.prefill_time = start.elapsed();

    let start = Instant::now();
    loop {
        let next = sample(logits.row(0), &out);
        if !opts.ignore_eos && opts.stop_token_ids.contains(&next) {
            stats.finish_reason = "stop";
            break;
        }
        out.push(next);
        if on_token(next).is_break() {
            stats.finish_reason = "stop";
            break;
        }
        if out.len() >= opts.max_tokens {
            break;
        }
        let pos = prompt.len() + out.len() - 1;
        let batch = BatchInput::from_sequences(&[(&[next], pos, &table)], BLOCK_SIZE);
        logits = model.forward(backend, &batch, &mut kv)?;
    }
    stats.decode_time = start.elapsed();
    stats.generated_tokens = out.len();
    Ok((out, stats))
}

/// Index of the largest value, lowest index on ties (greedy decoding).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}
