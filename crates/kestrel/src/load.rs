//! From `--model` to a ready model and tokenizer: resolves the spec (directory, `.gguf`, or a
//! Hugging Face id), opens the files, loads weights onto the chosen backend and builds the
//! tokenizer from `tokenizer.json` or from the GGUF's own vocabulary; and from the memory
//! flags to a KV cache size that fits the device, or a clear error.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kestrel_backend::{Backend, WeightFormat};
use kestrel_model::gguf::GgufFile;
use kestrel_model::quantize::QuantizedSource;
use kestrel_model::{ModelFiles, QwenModel, WeightSource};
use kestrel_text::{GgufVocab, Tokenizer};

pub struct LoadedModel<B: Backend> {
    pub backend: B,
    pub model: QwenModel<B>,
    /// `None` for weight-only directories (use `--prompt-ids`).
    pub tokenizer: Option<Tokenizer>,
    /// The directory holding `generation_config.json`, when there is one.
    pub dir: Option<PathBuf>,
    /// The KV cache type matching the checkpoint.
    pub kv_dtype: kestrel_backend::KvDtype,
    pub load_time: Duration,
    /// Bytes of the weight files.
    pub weights_bytes: usize,
    /// The `.gguf` file or the model directory the spec resolved to.
    pub path: PathBuf,
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
pub fn load<B: Backend>(
    backend: B,
    spec: &str,
    quantization: Option<WeightFormat>,
) -> Result<LoadedModel<B>> {
    let start = Instant::now();
    let path = kestrel_model::hub::resolve(spec)?;
    let files = ModelFiles::open(&path)?;
    check_weights_fit(&backend, &path)?;
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
        weights_bytes: weight_file_bytes(&path),
        path,
    })
}

/// Bytes of the model's weight files (a `.gguf`, or a directory's safetensors).
fn weight_file_bytes(path: &Path) -> usize {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as usize);
    if path.is_dir() {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                    .map(|p| size(&p))
                    .sum()
            })
            .unwrap_or(0)
    } else {
        size(path)
    }
}

/// Fails early when the weights cannot fit: on an accelerator they must fit in its free
/// memory; on the CPU (memory-mapped) in the machine's memory.
fn check_weights_fit<B: Backend>(backend: &B, path: &Path) -> Result<()> {
    let bytes = weight_file_bytes(path);
    let mem = backend.memory_info();
    let (limit, what) = if backend.kind().is_accelerator() {
        (mem.free, "free memory of")
    } else {
        (mem.total, "memory of")
    };
    if limit > 0 && bytes > limit {
        anyhow::bail!(
            "the weights of {} ({}) do not fit in the {what} {} ({})",
            path.display(),
            gib(bytes),
            backend.describe(),
            gib(limit)
        );
    }
    Ok(())
}

pub fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// How the KV cache is sized (vLLM's flags).
pub struct KvBudget {
    /// `--kv-cache-memory`: exactly this many bytes.
    pub kv_cache_memory: Option<usize>,
    /// `--gpu-memory-utilization`: on an accelerator, the fraction of its memory that the
    /// weights, the activations and the KV cache may take together.
    pub gpu_memory_utilization: f64,
    /// The CPU's default when `--kv-cache-memory` is not given (vLLM's CPU backend: 4 GiB).
    pub cpu_default: usize,
}

/// Bytes for the KV cache: `--kv-cache-memory`, else on an accelerator what
/// `--gpu-memory-utilization` leaves after the weights and the workspace, else the CPU default.
/// Fails, naming the flags, when that does not fit in the device's available memory.
pub fn kv_cache_bytes<B: Backend>(
    backend: &B,
    weights_bytes: usize,
    workspace_bytes: usize,
    budget: &KvBudget,
) -> Result<usize> {
    let mem = backend.memory_info();
    let accelerator = backend.kind().is_accelerator();
    if !(budget.gpu_memory_utilization > 0.0 && budget.gpu_memory_utilization <= 1.0) {
        anyhow::bail!(
            "--gpu-memory-utilization must be in (0, 1], got {}",
            budget.gpu_memory_utilization
        );
    }
    let bytes = match budget.kv_cache_memory {
        Some(b) => b,
        None if accelerator => {
            let allowed = (mem.total as f64 * budget.gpu_memory_utilization) as usize;
            let used = weights_bytes + workspace_bytes;
            if used >= allowed {
                anyhow::bail!(
                    "the weights ({}) and activations ({}) leave no room for a KV cache in {} of {} (--gpu-memory-utilization {}); raise it or lower --max-num-batched-tokens",
                    gib(weights_bytes),
                    gib(workspace_bytes),
                    gib(allowed),
                    backend.describe(),
                    budget.gpu_memory_utilization
                );
            }
            allowed - used
        }
        None => budget.cpu_default,
    };
    // On the CPU the weights are mapped from the file (page cache); what must be available is
    // the cache and the activations.
    let needed = bytes + workspace_bytes + if accelerator { weights_bytes } else { 0 };
    if mem.free > 0 && needed > mem.free {
        anyhow::bail!(
            "a KV cache of {} plus {} of activations does not fit in the {} available on {}; lower --kv-cache-memory (or --max-num-batched-tokens)",
            gib(bytes),
            gib(workspace_bytes),
            gib(mem.free),
            backend.describe()
        );
    }
    Ok(bytes)
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
