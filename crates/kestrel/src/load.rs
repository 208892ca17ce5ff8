//! From `--model` to a ready model and tokenizer: resolves the spec (directory, `.gguf`, or a
//! Hugging Face id), opens the files, loads weights onto the backend and builds the tokenizer
//! from `tokenizer.json` or from the GGUF's own vocabulary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::WeightFormat;
use kestrel_model::gguf::GgufFile;
use kestrel_model::quantize::QuantizedSource;
use kestrel_model::{ModelFiles, QwenModel, WeightSource};
use kestrel_text::{GgufVocab, Tokenizer};

pub struct LoadedModel {
    pub backend: CpuBackend,
    pub model: QwenModel<CpuBackend>,
    /// `None` for weight-only directories (use `--prompt-ids`).
    pub tokenizer: Option<Tokenizer>,
    /// The directory holding `generation_config.json`, when there is one.
    pub dir: Option<PathBuf>,
    /// The KV cache type matching the checkpoint.
    pub kv_dtype: kestrel_backend::KvDtype,
    pub load_time: Duration,
}

/// Sizes the compute thread pool once per process: `--threads`, else one thread per core the
/// process may run on (as llama.cpp, which uses the physical cores; hyperthreads add little to
/// bandwidth-bound decode).
pub fn init_threads(threads: Option<usize>) -> Result<()> {
    let n = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("kestrel-cpu-{i}"))
        .build_global()
        .context("starting the compute thread pool")
}

/// Keeps freed activation buffers in the process. A step allocates and frees buffers of many
/// megabytes (a 512-token prefill: 12 MiB per MLP activation); glibc serves those with `mmap`
/// and returns them with `munmap`, so every step paid fresh page faults, page zeroing and
/// TLB-shootdown interrupts across the compute threads (about 5% of a 1.7B prefill). With the
/// thresholds raised, freed memory is reused by the next step.
pub fn init_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters; called before any other thread starts.
    unsafe {
        // 32 MiB is glibc's largest mmap threshold (HEAP_MAX_SIZE / 2 on 64-bit).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Loads a model (a local directory or GGUF file, or a hub id) with its tokenizer; with
/// `quantization`, float matrices are quantized to that format on the way in.
pub fn load(spec: &str, quantization: Option<WeightFormat>) -> Result<LoadedModel> {
    let start = Instant::now();
    let path = kestrel_model::hub::resolve(spec)?;
    let files = ModelFiles::open(&path)?;
    let backend = CpuBackend::new();
    let quantized = quantization.map(|q| QuantizedSource::new(files.weights(), q));
    let weights: &dyn WeightSource = match &quantized {
        Some(q) => q,
        None => files.weights(),
    };
    let model = QwenModel::load(&backend, files.config().clone(), weights)
        .with_context(|| format!("loading weights from {}", weights.describe()))?;
    let (tokenizer, dir) = match &files {
        ModelFiles::HfDir { dir, .. } => {
            let tok = if dir.join("tokenizer.json").exists() {
                Some(
                    Tokenizer::from_dir(dir)
                        .with_context(|| format!("loading the tokenizer from {}", dir.display()))?,
                )
            } else {
                None
            };
            (tok, Some(dir.clone()))
        }
        ModelFiles::Gguf { gguf, .. } => (gguf_tokenizer(gguf)?, None),
    };
    let kv_dtype = files.default_kv_dtype();
    Ok(LoadedModel {
        backend,
        model,
        tokenizer,
        dir,
        kv_dtype,
        load_time: start.elapsed(),
    })
}

/// The tokenizer a GGUF file carries in its `tokenizer.ggml.*` metadata, if any.
pub fn gguf_tokenizer(gguf: &GgufFile) -> Result<Option<Tokenizer>> {
    let path = gguf.path();
    let Ok(model) = gguf.get_str("tokenizer.ggml.model") else {
        return Ok(None);
    };
    let ctx = |e: String| anyhow::anyhow!("{}: {e}", path.display());
    let id = |k: &str| gguf.get_u64(k).ok().map(|v| v as u32);
    let vocab = GgufVocab {
        model: model.to_string(),
        pre: gguf.get_str("tokenizer.ggml.pre").ok().map(str::to_owned),
        tokens: gguf.get_str_array("tokenizer.ggml.tokens").map_err(ctx)?,
        token_types: gguf
            .get_i64_array("tokenizer.ggml.token_type")
            .map_err(ctx)?
            .into_iter()
            .map(|t| t as i32)
            .collect(),
        merges: gguf
            .get_str_array("tokenizer.ggml.merges")
            .unwrap_or_default(),
        bos_token_id: id("tokenizer.ggml.bos_token_id"),
        eos_token_id: id("tokenizer.ggml.eos_token_id"),
        padding_token_id: id("tokenizer.ggml.padding_token_id"),
        add_bos_token: gguf.get_bool("tokenizer.ggml.add_bos_token").ok(),
        chat_template: gguf
            .get_str("tokenizer.chat_template")
            .ok()
            .map(str::to_owned),
    };
    let tok = Tokenizer::from_gguf_vocab(&vocab)
        .with_context(|| format!("building the tokenizer of {}", path.display()))?;
    Ok(Some(tok))
}

/// `dir/generation_config.json` if present.
pub fn generation_config_path(dir: Option<&Path>) -> Option<PathBuf> {
    dir.map(|d| d.join("generation_config.json"))
        .filter(|p| p.exists())
}
