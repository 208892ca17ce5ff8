//! Sampling settings for `kestrel generate`: command-line flags, else the model's
//! `generation_config.json`, else llama.cpp's command-line defaults (temperature 0.8,
//! top_k 40, top_p 0.95) so a bare GGUF file does not sample from the raw distribution.

use anyhow::Result;
use kestrel_engine::generation_config::GenerationDefaults;
use kestrel_engine::sampler::{Sampler, SamplerScratch, SamplingParams};

use super::generate::GenerateArgs;

/// The effective parameters for this run.
pub fn params(args: &GenerateArgs, defaults: &GenerationDefaults) -> SamplingParams {
    let has_config =
        defaults.temperature.is_some() || defaults.top_k.is_some() || defaults.top_p.is_some();
    let base = if has_config {
        defaults.sampling_params()
    } else {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            ..SamplingParams::default()
        }
    };
    SamplingParams {
        temperature: args.temperature.unwrap_or(base.temperature),
        top_k: args.top_k.unwrap_or(base.top_k),
        top_p: args.top_p.unwrap_or(base.top_p),
        min_p: args.min_p.unwrap_or(base.min_p),
        repetition_penalty: args.repetition_penalty.unwrap_or(base.repetition_penalty),
        seed: args.seed,
        ..base
    }
}

/// A `(logits, generated_so_far) -> next token` closure over one [`Sampler`].
pub fn build(
    params: SamplingParams,
    prompt_ids: &[u32],
    vocab_size: usize,
) -> Result<impl FnMut(&[f32], &[u32]) -> u32> {
    let engine_seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut sampler = Sampler::new(params, prompt_ids, vocab_size, engine_seed)
        .map_err(|e| anyhow::anyhow!("--{}: {e}", e.param.replace('_', "-")))?;
    let mut scratch = SamplerScratch::default();
    let mut pushed = 0;
    Ok(move |logits: &[f32], generated: &[u32]| {
        for &id in &generated[pushed..] {
            sampler.push_output_token(id);
        }
        pushed = generated.len();
        sampler.sample(logits, &mut scratch).token
    })
}
