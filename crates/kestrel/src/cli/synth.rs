//! `kestrel synth`: random-weight models with real shapes (Qwen3, Qwen2, Llama, Phi-3), for
//! benchmarks.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use kestrel_backend::WeightFormat;
use kestrel_model::{synth, Arch};

#[derive(Clone, Copy, ValueEnum)]
pub enum SynthArch {
    Qwen3,
    /// Qwen2 architecture (Qwen1.5, Qwen2, Qwen2.5).
    Qwen2,
    /// Llama architecture (Llama 3.2).
    Llama,
    /// Phi-3 architecture (Phi-3-mini).
    Phi3,
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
    /// qwen3: tiny, 0.6b, 1.7b, 4b or 8b; qwen2: tiny or 1.8b (Qwen1.5-1.8B); llama: tiny or 1b
    /// (Llama-3.2-1B); phi3: tiny or mini-4k (Phi-3-mini-4k).
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
    let arch = match args.arch {
        SynthArch::Qwen3 => Arch::Qwen3,
        SynthArch::Qwen2 => Arch::Qwen2,
        SynthArch::Llama => Arch::Llama,
        SynthArch::Phi3 => Arch::Phi3,
    };
    let Some(config) = synth::config_for(arch, &args.size) else {
        bail!(
            "--size `{}` is not one of {} for {}",
            args.size,
            synth::sizes_for(arch),
            arch.name()
        );
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
