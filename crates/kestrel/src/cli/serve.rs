//! `kestrel serve`: the OpenAI-compatible server. It binds first and loads the model on a
//! background thread, so `/health` and `/ready` answer 503 while loading and 200 once the
//! engine runs. SIGTERM drains (`--shutdown-timeout`) and exits 0. Flag names follow vLLM's
//! where the concept is the same.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use kestrel_backend::{with_backend, Backend, BackendVisitor, DeviceChoice};
use kestrel_engine::generation_config::GenerationDefaults;
use kestrel_engine::{start_engine, BatchInvariance, BatchingPolicy, EngineConfig};
use kestrel_model::{KvCache, Workspace};
use kestrel_server::response_cache::{
    parse_duration, CacheBackend, ResponseCache, ResponseCacheConfig,
};
use kestrel_server::{AppState, Model, ReasoningField, ServerConfig};

use crate::load::{generation_config_path, kv_cache_bytes, load, KvBudget};
use crate::model_identity::{model_identity, Numerics};

#[derive(Args)]
pub struct ServeArgs {
    /// A Hugging Face model directory, a .gguf file, or a model id (e.g. Qwen/Qwen3-1.7B).
    #[arg(long)]
    pub model: String,
    /// Compute threads (default: one per available core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Quantize a float checkpoint's matrices at load (ggml's reference quantizers); GGUF
    /// files keep their own formats.
    #[arg(long, value_enum)]
    pub quantization: Option<super::QuantType>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The name clients use in `model`; defaults to `--model`.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Require `Authorization: Bearer <key>` on the API routes (/health stays open); repeat
    /// for several keys.
    #[arg(long = "api-key")]
    pub api_keys: Vec<String>,
    /// Fold the caller's API key into the prefix-cache salt, so callers with different keys
    /// never share cached KV blocks (needs --api-key).
    #[arg(long)]
    pub prefix_cache_salt_by_api_key: bool,
    /// Prompt + output limit per request; defaults to the model's context, capped by the KV cache.
    #[arg(long)]
    pub max_model_len: Option<usize>,
    /// Allowed CORS origins (repeat, or `*`); none by default.
    #[arg(long = "cors-allow-origin")]
    pub cors_allow_origins: Vec<String>,
    /// Most sequences running at once.
    #[arg(long, default_value_t = 256)]
    pub max_num_seqs: usize,
    /// Token budget of one engine step (prefill chunks + decode tokens).
    #[arg(long, default_value_t = 2048)]
    pub max_num_batched_tokens: usize,
    /// The compute device: cpu, cuda, or auto (the best compiled in and present).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Memory for the KV cache (e.g. 4GiB, 512MiB). Default: 4GiB on the CPU; on a GPU what
    /// --gpu-memory-utilization leaves after the weights and activations.
    #[arg(long, value_parser = parse_bytes)]
    pub kv_cache_memory: Option<usize>,
    /// Fraction of a GPU's memory for weights, activations and KV cache together.
    #[arg(long, default_value_t = 0.9)]
    pub gpu_memory_utilization: f64,
    /// Batch-invariant kernels (a request's output independent of what shares its steps):
    /// auto (for greedy and seeded requests), on, or off.
    #[arg(long, default_value = "auto")]
    pub batch_invariant: BatchInvariance,
    /// Schedule the next step while the device runs the current one (default: on for GPUs).
    #[arg(long)]
    pub async_scheduling: Option<bool>,
    /// Speculative decoding, as vLLM's JSON: prompt lookup, e.g. '{"method": "ngram",
    /// "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5}'. Outputs
    /// are unchanged; decoding is faster when the output repeats the input (quoting, code
    /// edits). Draft models are not supported yet.
    #[arg(long, value_name = "JSON", value_parser = super::parse_speculative_config)]
    pub speculative_config: Option<kestrel_engine::SpeculativeConfig>,
    /// Requests waiting for their first step beyond this are answered 503 with Retry-After.
    #[arg(
        long = "max-queued-requests",
        alias = "max-num-queued-reqs",
        default_value_t = 1024
    )]
    pub max_queued_requests: usize,
    /// How each step's token budget is shared: latency (decodes first, then waiting prompts
    /// prefilled one at a time in arrival order) or throughput (fill the budget: every waiting
    /// prompt that fits, so a burst's first tokens all come after its whole prefill).
    #[arg(long, default_value = "latency")]
    pub batching_policy: BatchingPolicy,
    /// Prompts with more tokens left than this are long, and one request's prefill chunk per
    /// step is at most this. 0: automatic (latency: 4% of --max-model-len, 64 to a quarter of
    /// --max-num-batched-tokens, while anything decodes; throughput: no cap). A value given
    /// caps every step.
    #[arg(long, default_value_t = 0)]
    pub long_prefill_token_threshold: usize,
    /// Most requests prefilling in one step (latency policy).
    #[arg(long, default_value_t = 1)]
    pub max_num_partial_prefills: usize,
    /// Most of those with a long prompt left (latency policy); below
    /// --max-num-partial-prefills, short prompts may pass long ones.
    #[arg(long, default_value_t = 1)]
    pub max_long_partial_prefills: usize,
    /// Split long prompts over steps (on by default); --no-enable-chunked-prefill prefills
    /// each prompt whole in one step (then --max-num-batched-tokens must hold --max-model-len).
    #[arg(long, overrides_with = "no_enable_chunked_prefill")]
    pub enable_chunked_prefill: bool,
    #[arg(long, overrides_with = "enable_chunked_prefill")]
    pub no_enable_chunked_prefill: bool,
    #[arg(long, overrides_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,
    #[arg(long, overrides_with = "enable_prefix_caching")]
    pub no_enable_prefix_caching: bool,
    /// Which response field carries reasoning: both, reasoning_content or reasoning.
    #[arg(long, default_value = "both")]
    pub reasoning_field: ReasoningField,
    /// Most reasoning tokens before `</think>` is forced, for requests that set no
    /// `thinking_budget` of their own (so that a structured answer always comes); unset is no
    /// limit.
    #[arg(long)]
    pub thinking_budget: Option<usize>,
    /// Most choices (`n`) per request.
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Do not serve the built-in chat page at `/` (then `/` is 404 like any unknown route).
    #[arg(long)]
    pub no_webui: bool,
    /// Seconds that requests in flight get to finish after SIGTERM (new ones get 503 at once);
    /// keep it below the orchestrator's grace period (Kubernetes: terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 30.0)]
    pub shutdown_timeout: f64,
    /// Answer repeated deterministic requests (greedy or seeded, one choice) from a cache:
    /// `memory` (in this process) or a Redis URL, redis://host:port/db (shared by replicas).
    #[arg(long)]
    pub response_cache: Option<CacheBackend>,
    /// The in-memory response cache's bound (e.g. 256MiB, the default, or 2GiB).
    #[arg(long, value_parser = parse_bytes)]
    pub response_cache_size: Option<usize>,
    /// How long a cached answer is served (e.g. 90s, 10m, 1h; default 1h).
    #[arg(long, value_parser = parse_duration)]
    pub response_cache_ttl: Option<Duration>,
    /// How long a request waits for the cache's store before it runs on the model anyway
    /// (default 100ms).
    #[arg(long, value_parser = parse_duration)]
    pub response_cache_timeout: Option<Duration>,
}

impl ServeArgs {
    /// The response cache's settings; its flags without `--response-cache` are an error.
    fn response_cache_config(&self) -> Result<Option<ResponseCacheConfig>> {
        let Some(backend) = self.response_cache.clone() else {
            if self.response_cache_size.is_some()
                || self.response_cache_ttl.is_some()
                || self.response_cache_timeout.is_some()
            {
                bail!("--response-cache-size, --response-cache-ttl and --response-cache-timeout need --response-cache");
            }
            return Ok(None);
        };
        let mut config = ResponseCacheConfig::new(backend);
        config.max_bytes = self.response_cache_size;
        config.ttl = self.response_cache_ttl.unwrap_or(config.ttl);
        config.timeout = self.response_cache_timeout.unwrap_or(config.timeout);
        Ok(Some(config))
    }
}

/// `4GiB`, `512MiB`, `1.5GB`, `1000000` → bytes.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("expected a size like 4GiB, got {s:?}"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    Ok((num * scale) as usize)
}

pub fn run(args: ServeArgs) -> Result<()> {
    if args.prefix_cache_salt_by_api_key && args.api_keys.is_empty() {
        bail!("--prefix-cache-salt-by-api-key needs at least one --api-key");
    }
    crate::load::init_threads(args.threads)?;
    if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
        bail!(
            "--shutdown-timeout must be a number of seconds >= 0, got {}",
            args.shutdown_timeout
        );
    }
    let shutdown_timeout = Duration::from_secs_f64(args.shutdown_timeout);
    let cache_config = args.response_cache_config()?;
    let config = ServerConfig {
        served_model_name: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| args.model.clone()),
        api_keys: args.api_keys.clone(),
        cache_salt_by_api_key: args.prefix_cache_salt_by_api_key,
        cors_allow_origins: args.cors_allow_origins.clone(),
        reasoning_field: args.reasoning_field,
        max_body_bytes: args.max_body_bytes,
        max_n: args.max_n,
        webui: !args.no_webui,
        thinking_budget: args.thinking_budget,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let response_cache = match &cache_config {
        Some(c) => {
            // A Redis store's connection manager lives on the runtime.
            let _runtime = runtime.enter();
            let cache = ResponseCache::open(c)?;
            tracing::info!(cache = %cache.describe(), "response cache on");
            Some(cache)
        }
        None => None,
    };
    let state = AppState::with_response_cache(config, response_cache);
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .context("parsing --host/--port")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(model = %args.model, "listening on http://{addr}; loading the model");

    let loader_state = Arc::clone(&state);
    std::thread::Builder::new()
        .name("kestrel-load".into())
        .spawn(move || {
            match with_backend(args.device, Load(&args))
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
            {
                Ok(model) => {
                    tracing::info!(max_model_len = model.max_model_len, "model ready");
                    loader_state.set_model(model);
                }
                Err(e) => {
                    tracing::error!("loading the model failed: {e:#}");
                    loader_state.set_load_error(format!("{e:#}"));
                    std::process::exit(1);
                }
            }
        })
        .context("spawning the loader thread")?;

    runtime
        .block_on(kestrel_server::serve(listener, state, shutdown_timeout))
        .context("serving HTTP")?;
    // Tasks still running (a response past the timeout) are cut here, not waited for.
    runtime.shutdown_timeout(Duration::from_millis(500));
    tracing::info!("shut down");
    Ok(())
}

/// Loads the model on the chosen backend and starts its engine.
struct Load<'a>(&'a ServeArgs);

impl BackendVisitor for Load<'_> {
    type Output = Result<Model>;
    fn visit<B: Backend + Clone>(self, backend: B) -> Result<Model> {
        load_model(self.0, backend)
    }
}

fn load_model<B: Backend>(args: &ServeArgs, backend: B) -> Result<Model> {
    let loaded = load(
        backend,
        &args.model,
        args.quantization.map(super::QuantType::format),
    )?;
    tracing::info!(
        model = %args.model,
        load_s = loaded.load_time.as_secs_f64(),
        backend = %loaded.backend.describe(),
        "weights loaded"
    );
    if let Some(reason) = kestrel_backend::device::fallback_reason() {
        tracing::warn!("--device auto found no usable GPU ({reason}); running on the CPU");
    }
    let Some(tokenizer) = loaded.tokenizer else {
        bail!(
            "{} has no tokenizer (tokenizer.json or GGUF tokenizer metadata)",
            args.model
        );
    };
    let defaults = match generation_config_path(loaded.dir.as_deref()) {
        Some(p) => GenerationDefaults::from_file(&p)?,
        None => GenerationDefaults::default(),
    };
    let model_config = loaded.model.config.clone();
    let block_size = 16;
    let kv_bytes = kv_cache_bytes(
        &loaded.backend,
        loaded.weights_bytes,
        Workspace::<B>::bytes(
            &model_config,
            args.max_num_batched_tokens,
            // A logit row per sequence, plus one per draft token verified in a step.
            args.max_num_seqs
                + args.speculative_config.as_ref().map_or(0, |s| {
                    kestrel_engine::engine::max_num_spec_tokens(
                        args.max_num_seqs,
                        args.max_num_batched_tokens,
                        s.num_speculative_tokens,
                    )
                }),
        ),
        &KvBudget {
            kv_cache_memory: args.kv_cache_memory,
            gpu_memory_utilization: args.gpu_memory_utilization,
            cpu_default: 4 << 30,
        },
    )?;
    let num_blocks =
        KvCache::<B>::blocks_for_budget(&model_config, block_size, loaded.kv_dtype, kv_bytes);
    let cache_tokens = num_blocks * block_size;
    let max_model_len = match args.max_model_len {
        Some(len) if len > cache_tokens => {
            bail!("--max-model-len {len} does not fit in the KV cache ({cache_tokens} tokens); raise --kv-cache-memory")
        }
        Some(len) => len,
        None => model_config.max_position_embeddings.min(cache_tokens),
    };
    let engine_config = EngineConfig {
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens: args.max_num_batched_tokens,
        max_model_len,
        block_size,
        num_blocks,
        enable_prefix_caching: !args.no_enable_prefix_caching,
        max_queued_requests: args.max_queued_requests,
        kv_dtype: loaded.kv_dtype,
        batching_policy: args.batching_policy,
        long_prefill_token_threshold: args.long_prefill_token_threshold,
        max_num_partial_prefills: args.max_num_partial_prefills,
        max_long_partial_prefills: args.max_long_partial_prefills,
        enable_chunked_prefill: !args.no_enable_chunked_prefill,
        batch_invariance: args.batch_invariant,
        async_scheduling: args
            .async_scheduling
            .unwrap_or(loaded.backend.kind().is_accelerator()),
        speculative: args.speculative_config.clone(),
    };
    let identity = match &args.response_cache {
        Some(_) => Some(model_identity(
            &loaded.path,
            &Numerics {
                quantization: args.quantization.and_then(|q| {
                    clap::ValueEnum::to_possible_value(&q).map(|v| v.get_name().to_string())
                }),
                device: loaded.backend.kind(),
                kv_dtype: loaded.kv_dtype,
                batch_invariance: args.batch_invariant,
            },
        )?),
        None => None,
    };
    let engine =
        start_engine(loaded.backend, loaded.model, engine_config).context("starting the engine")?;
    let model = Model::new(
        engine,
        tokenizer,
        defaults.sampling_params(),
        &defaults.eos_token_ids,
    )
    .with_context(|| format!("the chat template of {}", args.model))?;
    Ok(match identity {
        Some(identity) => model.with_identity(identity),
        None => model,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert!(parse_bytes("4 parsecs").is_err());
    }
}
