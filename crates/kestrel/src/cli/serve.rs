//! `kestrel serve`: the OpenAI-compatible server. It binds first and loads the model on a
//! background thread, so `/health` answers 503 while loading and 200 once the engine runs.
//! Flag names follow vLLM's where the concept is the same.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use kestrel_engine::generation_config::GenerationDefaults;
use kestrel_engine::{start_engine, EngineConfig};
use kestrel_model::KvCache;
use kestrel_server::{AppState, Model, ReasoningField, ServerConfig};

use crate::load::{generation_config_path, load};

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
    /// Memory for the KV cache (e.g. 4GiB, 512MiB).
    #[arg(long, default_value = "4GiB", value_parser = parse_bytes)]
    pub kv_cache_memory: usize,
    /// Requests waiting for their first step beyond this are answered 503 with Retry-After.
    #[arg(
        long = "max-queued-requests",
        alias = "max-num-queued-reqs",
        default_value_t = 1024
    )]
    pub max_queued_requests: usize,
    /// Most prompt tokens one request prefills per step (0: only the step budget limits it).
    /// A small value keeps running streams smooth while a long prompt arrives.
    #[arg(long, default_value_t = 0)]
    pub long_prefill_token_threshold: usize,
    #[arg(long, overrides_with = "no_enable_prefix_caching")]
    pub enable_prefix_caching: bool,
    #[arg(long, overrides_with = "enable_prefix_caching")]
    pub no_enable_prefix_caching: bool,
    /// Which response field carries reasoning: both, reasoning_content or reasoning.
    #[arg(long, default_value = "both")]
    pub reasoning_field: ReasoningField,
    /// Most choices (`n`) per request.
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Do not serve the built-in chat page at `/` (then `/` is 404 like any unknown route).
    #[arg(long)]
    pub no_webui: bool,
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
    };
    let state = AppState::new(config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .context("parsing --host/--port")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("binding {addr}"))?;
    eprintln!(
        "kestrel: listening on http://{addr} (loading {} ...)",
        args.model
    );

    let loader_state = Arc::clone(&state);
    std::thread::Builder::new()
        .name("kestrel-load".into())
        .spawn(move || match load_model(&args) {
            Ok(model) => {
                eprintln!(
                    "kestrel: model ready (max_model_len {})",
                    model.max_model_len
                );
                loader_state.set_model(model);
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                loader_state.set_load_error(format!("{e:#}"));
                std::process::exit(1);
            }
        })
        .context("spawning the loader thread")?;

    runtime
        .block_on(kestrel_server::serve(
            listener,
            kestrel_server::router(state),
        ))
        .context("serving HTTP")?;
    Ok(())
}

fn load_model(args: &ServeArgs) -> Result<Model> {
    let loaded = load(&args.model, args.quantization.map(super::QuantType::format))?;
    eprintln!(
        "kestrel: {} loaded in {:.2}s on {}",
        args.model,
        loaded.load_time.as_secs_f64(),
        kestrel_backend::Backend::describe(&loaded.backend)
    );
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
    let num_blocks = KvCache::<kestrel_backend::cpu::CpuBackend>::blocks_for_budget(
        &model_config,
        block_size,
        loaded.kv_dtype,
        args.kv_cache_memory,
    );
    let cache_tokens = num_blocks * block_size;
    let max_model_len = match args.max_model_len {
        Some(len) if len > cache_tokens => {
            bail!("--max-model-len {len} does not fit in the KV cache ({cache_tokens} tokens); raise --kv-cache-memory")
        }
        Some(len) => len,
        None => model_config.max_position_embeddings.min(cache_tokens),
    };
    // Fields the server has no flag for keep the engine's defaults as the engine grows.
    #[allow(clippy::needless_update)]
    let engine_config = EngineConfig {
        max_num_seqs: args.max_num_seqs,
        max_num_batched_tokens: args.max_num_batched_tokens,
        max_model_len,
        block_size,
        num_blocks,
        enable_prefix_caching: !args.no_enable_prefix_caching,
        max_queued_requests: args.max_queued_requests,
        kv_dtype: loaded.kv_dtype,
        long_prefill_token_threshold: args.long_prefill_token_threshold,
    };
    let engine =
        start_engine(loaded.backend, loaded.model, engine_config).context("starting the engine")?;
    Model::new(
        engine,
        tokenizer,
        defaults.sampling_params(),
        &defaults.eos_token_ids,
    )
    .with_context(|| format!("the chat template of {}", args.model))
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
