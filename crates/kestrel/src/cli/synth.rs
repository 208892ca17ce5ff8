//! `kestrel synth`: random-weight Qwen3 models with real shapes, for benchmarks.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use kestrel_backend::WeightFormat;
use kestrel_model::synth;

#[derive(Clone, Copy, ValueEnum)]
pub enum SynthArch {
    Qwen3,
    /// Qwen2 architecture (Qwen1.5, Qwen2, Qwen2.5).
    Qwen2,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SynthDtype {
    Bf16,
    F16,
    F32,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SynthFormat {
    Safetensors,
    Gguf,
}

#[derive(Args)]
pub struct SynthArgs {
    #[arg(long, value_enum, default_value = "qwen3")]
    arch: SynthArch,
    /// qwen3: tiny, 0.6b, 1.7b, 4b or 8b; qwen2: tiny or 1.8b (Qwen1.5-1.8B).
    #[arg(long)]
    size: String,
    #[arg(long, value_enum, default_value = "bf16")]
    dtype: SynthDtype,
    #[arg(long, value_enum, default_value = "safetensors")]
    format: SynthFormat,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (safetensors) or directory to hold `model.gguf` (gguf); a path ending in
    /// `.gguf` names the file itself.
    #[arg(long)]
    out: PathBuf,
    /// A tokenizer directory (tokenizer.json, tokenizer_config.json) to attach.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
}

pub fn run(args: SynthArgs) -> Result<()> {
    let (config, sizes) = match args.arch {
        SynthArch::Qwen3 => (synth::qwen3_config(&args.size), "tiny, 0.6b, 1.7b, 4b, 8b"),
        SynthArch::Qwen2 => (synth::qwen2_config(&args.size), "tiny, 1.8b"),
    };
    let Some(config) = config else {
        bail!("--size `{}` is not one of {sizes}", args.size);
    };
    let dtype = match args.dtype {
        SynthDtype::Bf16 => WeightFormat::BF16,
        SynthDtype::F16 => WeightFormat::F16,
        SynthDtype::F32 => WeightFormat::F32,
    };
    let start = Instant::now();
    let written = match args.format {
        SynthFormat::Safetensors => {
            synth::write_safetensors_dir(
                &config,
                dtype,
                args.seed,
                &args.out,
                args.tokenizer.as_deref(),
            )?;
            args.out
        }
        SynthFormat::Gguf => {
            let file = if args.out.extension().is_some_and(|e| e == "gguf") {
                args.out
            } else {
                std::fs::create_dir_all(&args.out)?;
                args.out.join("model.gguf")
            };
            synth::write_gguf_model(&config, dtype, args.seed, &file, args.tokenizer.as_deref())?;
            file
        }
    };
    eprintln!(
        "wrote {} in {:.1}s",
        written.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
