//! Sampling settings for `kestrel generate`: command-line flags, else the model's
//! `generation_config.json`, else llama.cpp's command-line defaults (temperature 0.8,
//! top_k 40, top_p 0.95) so a bare GGUF file does not sample from the raw distribution.

use kestrel_engine::generation_config::GenerationDefaults;
use kestrel_engine::SamplingParams;

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
