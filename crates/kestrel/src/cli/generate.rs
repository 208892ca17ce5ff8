//! `kestrel generate`: one prompt in, text (or ids, or JSON) out, streamed as it is produced.
//! The chat template is applied by default (`--raw` sends the prompt as is); speeds go to
//! stderr so stdout stays clean for scripts. The request runs through the same engine as the
//! server's (one sequence, prefill in chunks of `--prefill-chunk`), so it gets the tokens the
//! server would give it.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use kestrel_backend::{with_backend, Backend, BackendVisitor, DeviceChoice};
use kestrel_engine::{
    start_engine, BatchInvariance, EngineConfig, EngineEvent, EngineRequest, FinishReason,
};
use kestrel_text::{ChatTemplate, Detokenizer, TemplateInput};
use serde_json::{json, Value};

use crate::load::{generation_config_path, load};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The generated text, streamed.
    Text,
    /// The generated token ids as one JSON array.
    Ids,
    /// One JSON object with prompt ids, output ids, text and timings.
    Json,
}

#[derive(Args)]
pub struct GenerateArgs {
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
    /// The user message (or raw text with --raw).
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Comma-separated prompt token ids, used as is.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Do not apply the chat template.
    #[arg(long)]
    pub raw: bool,
    /// A system message for the chat template.
    #[arg(long)]
    pub system: Option<String>,
    /// Thinking mode for Qwen3 templates (`enable_thinking`); the template's default when omitted.
    #[arg(long)]
    pub enable_thinking: Option<bool>,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 is greedy. Defaults to the model's generation_config.json, else 0.
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long)]
    pub top_p: Option<f32>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub min_p: Option<f32>,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Largest prefill chunk in tokens.
    #[arg(long, default_value_t = 512)]
    pub prefill_chunk: usize,
    /// KV cache element type; `auto` follows the checkpoint (f16 for GGUF and 16-bit weights).
    #[arg(long, value_enum, default_value = "auto")]
    pub kv_cache_dtype: KvCacheDtype,
    /// The compute device: cpu, cuda, or auto (the best compiled in and present).
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
    /// Batch-invariant kernels: auto (for greedy and seeded sampling, as the server), on, off.
    #[arg(long, default_value = "auto")]
    pub batch_invariant: BatchInvariance,
    /// Speculative decoding, as vLLM's JSON: prompt lookup, e.g. '{"method": "ngram",
    /// "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5}'. Outputs
    /// are unchanged; decoding is faster when the output repeats the input (quoting, code
    /// edits). Draft models are not supported yet.
    #[arg(long, value_name = "JSON", value_parser = super::parse_speculative_config)]
    pub speculative_config: Option<kestrel_engine::SpeculativeConfig>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KvCacheDtype {
    Auto,
    F32,
    F16,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    crate::load::init_threads(args.threads)?;
    with_backend(args.device, Generate(&args))?
}

struct Generate<'a>(&'a GenerateArgs);

impl BackendVisitor for Generate<'_> {
    type Output = Result<()>;
    fn visit<B: Backend + Clone>(self, backend: B) -> Result<()> {
        generate(self.0, backend)
    }
}

/// What one run measured.
struct Stats {
    prompt_tokens: usize,
    generated_tokens: usize,
    /// Submission to the first token.
    prefill_time: Duration,
    /// First token to the last.
    decode_time: Duration,
    finish_reason: &'static str,
}

impl Stats {
    fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_time.as_secs_f64().max(1e-9)
    }
    /// Decode speed over the tokens produced by decode steps (the first comes from prefill).
    fn decode_tokens_per_s(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_time.as_secs_f64().max(1e-9)
    }
}

fn generate<B: Backend>(args: &GenerateArgs, backend: B) -> Result<()> {
    let loaded = load(
        backend,
        &args.model,
        args.quantization.map(super::QuantType::format),
    )?;
    eprintln!(
        "loaded {} ({:?}, {} layers) on {} in {:.2}s",
        args.model,
        loaded.model.config.arch,
        loaded.model.config.num_layers,
        loaded.backend.describe(),
        loaded.load_time.as_secs_f64()
    );
    if let Some(reason) = kestrel_backend::device::fallback_reason() {
        eprintln!("--device auto found no usable GPU ({reason}); running on the CPU");
    }
    let tokenizer = loaded.tokenizer.map(std::sync::Arc::new);

    let prompt_ids = match (&args.prompt_ids, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => {
            let tok = tokenizer
                .as_ref()
                .context("this model has no tokenizer: pass --prompt-ids")?;
            if args.raw {
                tok.encode(text, false)?
            } else {
                let template = ChatTemplate::from_tokenizer(tok)
                    .context("--prompt needs a chat template (or use --raw)")?;
                let mut messages = Vec::new();
                if let Some(system) = &args.system {
                    messages.push(json!({"role": "system", "content": system}));
                }
                messages.push(json!({"role": "user", "content": text}));
                let mut kwargs = serde_json::Map::new();
                if let Some(t) = args.enable_thinking {
                    kwargs.insert("enable_thinking".into(), Value::Bool(t));
                }
                let rendered = template.render(&TemplateInput {
                    messages: &messages,
                    tools: None,
                    add_generation_prompt: true,
                    chat_template_kwargs: Some(&kwargs),
                })?;
                tok.encode(&rendered, false)?
            }
        }
        (None, None) => bail!("pass --prompt or --prompt-ids"),
    };
    let config = &loaded.model.config;
    if let Some(&bad) = prompt_ids
        .iter()
        .find(|&&id| id as usize >= config.vocab_size)
    {
        bail!(
            "--prompt-ids: token id {bad} is outside the vocabulary of {}",
            config.vocab_size
        );
    }
    if prompt_ids.is_empty() {
        bail!("the prompt is empty");
    }
    let context = config.max_position_embeddings;
    let total = prompt_ids.len() + args.max_tokens;
    if total > context {
        bail!(
            "prompt ({}) + max_tokens ({}) exceeds the model's context of {context} tokens",
            prompt_ids.len(),
            args.max_tokens
        );
    }
    if args.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }

    let defaults = match generation_config_path(loaded.dir.as_deref()) {
        Some(p) => kestrel_engine::generation_config::GenerationDefaults::from_file(&p)?,
        None => Default::default(),
    };
    let sampling = crate::cli::sampling::params(args, &defaults);
    sampling
        .validate_for_vocab(config.vocab_size)
        .map_err(|e| anyhow::anyhow!("--{}: {e}", e.param.replace('_', "-")))?;

    let mut stop_ids = defaults.eos_token_ids.clone();
    if let Some(tok) = &tokenizer {
        stop_ids.extend(tok.eos_token_ids());
    }
    if args.ignore_eos {
        stop_ids.clear();
    }
    let block_size = 16;
    let engine = start_engine(
        loaded.backend,
        loaded.model,
        EngineConfig {
            max_num_seqs: 1,
            max_num_batched_tokens: args.prefill_chunk.max(1),
            max_model_len: total,
            block_size,
            num_blocks: total.div_ceil(block_size),
            enable_prefix_caching: false,
            max_queued_requests: 1,
            kv_dtype: match args.kv_cache_dtype {
                KvCacheDtype::Auto => loaded.kv_dtype,
                KvCacheDtype::F32 => kestrel_backend::KvDtype::F32,
                KvCacheDtype::F16 => kestrel_backend::KvDtype::F16,
            },
            long_prefill_token_threshold: 0,
            batch_invariance: args.batch_invariant,
            async_scheduling: false,
            speculative: args.speculative_config.clone(),
            ..EngineConfig::default()
        },
    )
    .context("starting the engine")?;

    let mut detok = tokenizer
        .as_ref()
        .map(|t| Detokenizer::new(t.clone(), true));
    let mut text = String::new();
    let stream_text = args.output == OutputFormat::Text;
    let mut stdout = std::io::stdout().lock();
    let submitted = Instant::now();
    let mut stream = engine
        .submit(EngineRequest {
            request_id: "generate".into(),
            prompt_ids: prompt_ids.clone(),
            sampling,
            max_tokens: args.max_tokens,
            min_tokens: 0,
            stop_token_ids: stop_ids,
            cache_salt: None,
            constraint: Default::default(),
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out_ids = Vec::new();
    let (mut first, mut last) = (None, submitted);
    let finish = loop {
        match stream.blocking_recv() {
            Some(EngineEvent::Token { id, .. }) => {
                last = Instant::now();
                first.get_or_insert(last);
                out_ids.push(id);
                let Some(d) = detok.as_mut() else { continue };
                match d.push(id) {
                    Ok(Some(delta)) => {
                        if stream_text {
                            // A closed stdout ends the run; dropping the stream aborts it.
                            stdout
                                .write_all(delta.as_bytes())
                                .and_then(|_| stdout.flush())
                                .context("writing to stdout")?;
                        }
                        text.push_str(&delta);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!("detokenizing token {id}: {e}"),
                }
            }
            Some(EngineEvent::Finished { reason, .. }) => break reason,
            Some(EngineEvent::Error { message }) => bail!("{message}"),
            None => bail!("the engine stopped"),
        }
    };
    let first = first.unwrap_or(last);
    let stats = Stats {
        prompt_tokens: prompt_ids.len(),
        generated_tokens: out_ids.len(),
        prefill_time: first - submitted,
        decode_time: last - first,
        finish_reason: match finish {
            FinishReason::Length => "length",
            _ => "stop",
        },
    };
    if let Some(Ok(Some(rest))) = detok.as_mut().map(|d| d.flush()) {
        if stream_text {
            stdout.write_all(rest.as_bytes())?;
        }
        text.push_str(&rest);
    }
    match args.output {
        OutputFormat::Text => writeln!(stdout)?,
        OutputFormat::Ids => writeln!(stdout, "{}", serde_json::to_string(&out_ids)?)?,
        OutputFormat::Json => writeln!(
            stdout,
            "{}",
            json!({
                "prompt_ids": prompt_ids,
                "output_ids": out_ids,
                "text": if tokenizer.is_some() { Value::String(text) } else { Value::Null },
                "finish_reason": stats.finish_reason,
                "prefill_tokens_per_s": stats.prefill_tokens_per_s(),
                "decode_tokens_per_s": stats.decode_tokens_per_s(),
            })
        )?,
    }
    eprintln!(
        "prompt {} tokens, prefill {:.1} tok/s ({:.0} ms); generated {} tokens, decode {:.1} tok/s; finish: {}",
        stats.prompt_tokens,
        stats.prefill_tokens_per_s(),
        stats.prefill_time.as_secs_f64() * 1e3,
        stats.generated_tokens,
        stats.decode_tokens_per_s(),
        stats.finish_reason
    );
    Ok(())
}
