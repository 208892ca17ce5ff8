//! `kestrel quantize`: a float checkpoint (Hugging Face directory) written as a quantized GGUF
//! file that both kestrel and llama.cpp load.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use kestrel_model::quantize::write_quantized_gguf;
use kestrel_model::ModelFiles;

#[derive(Args)]
pub struct QuantizeArgs {
    /// A Hugging Face directory (config.json + safetensors), or a hub id.
    #[arg(long)]
    model: String,
    /// The output file (`.gguf`).
    #[arg(long)]
    out: PathBuf,
    /// The matrices' format.
    #[arg(long = "type", value_enum)]
    quant: super::QuantType,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let start = Instant::now();
    let path = kestrel_model::hub::resolve(&args.model)?;
    let files = ModelFiles::open(&path)?;
    let target = args.quant.format();
    write_quantized_gguf(&files, target, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let size = std::fs::metadata(&args.out)?.len();
    eprintln!(
        "wrote {} ({:.2} GiB, {}) in {:.1}s",
        args.out.display(),
        size as f64 / (1u64 << 30) as f64,
        target.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
