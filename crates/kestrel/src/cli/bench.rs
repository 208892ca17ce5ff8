//! `kestrel bench`: a serving benchmark against any OpenAI-compatible endpoint (kestrel, vLLM,
//! llama.cpp's server, ...). This file is only the command line: prompts, the optional
//! tokenizer, the progress bar and the output files; the measuring lives in `kestrel-bench`.
//! Flag names follow `vllm bench serve` where the concept is the same.
//!
//! The client runs on a single-threaded runtime: on a small machine the server under test
//! shares the cores, and one thread is plenty to drive a few dozen streams.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kestrel_bench::dataset::{cycle, load_jsonl, random_prompts, warmup};
use kestrel_bench::{
    builtin_prompts, AnswerClass, BenchReport, Client, Endpoint, Prompt, RunSpec, Slo, Target,
    TokenCounter,
};
use kestrel_text::Tokenizer;

#[derive(Clone, Copy, ValueEnum)]
pub enum BenchEndpoint {
    Chat,
    Completions,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Server to measure: `http://host:port` (or with a trailing `/v1`).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    pub base_url: String,
    /// The `model` field of every request.
    #[arg(long)]
    pub model: String,
    #[arg(long, value_enum, default_value = "chat")]
    pub endpoint: BenchEndpoint,
    /// Most requests in flight; a list is a sweep, one run per value (`1,4,16`; `inf` = no limit).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub concurrency: Vec<String>,
    /// Poisson arrival rate in requests/s, seeded by `--seed`; `inf` sends all at once.
    #[arg(long, default_value = "inf")]
    pub request_rate: String,
    /// Measured requests per run; one value, or one per `--concurrency` value.
    #[arg(long, value_delimiter = ',', default_value = "32")]
    pub num_prompts: Vec<usize>,
    /// `builtin` (short/medium/long questions, English and Chinese), `random`, or a .jsonl file
    /// with one `{"prompt": ...}` or `{"messages": [...]}` (optional `max_tokens`) per line.
    #[arg(long, default_value = "builtin")]
    pub dataset: String,
    /// Builtin dataset: only these answer classes (short, medium, long; comma-separated).
    #[arg(long = "class", value_delimiter = ',')]
    pub classes: Vec<AnswerClass>,
    /// Random dataset: prompt length in words (≈ tokens).
    #[arg(long, default_value_t = 128)]
    pub input_len: usize,
    /// Random dataset: `max_tokens`; also the cap for JSONL lines without `max_tokens`.
    #[arg(long, default_value_t = 128)]
    pub output_len: usize,
    /// Random dataset: lengths drawn uniformly from len·[1-r, 1+r].
    #[arg(long, default_value_t = 0.0)]
    pub range_ratio: f64,
    /// Overrides every prompt's `max_tokens` (builtin defaults: short 10, medium 30, long 90).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Ask the server to ignore end-of-sequence so every answer runs to `max_tokens`.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Start this many prompts into the dataset (later rounds of a small set are tagged
    /// variants), so that a second benchmark sends prompts the server has not cached.
    #[arg(long, default_value_t = 0)]
    pub skip_prompts: usize,
    /// Unmeasured requests before each run.
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sent as `Authorization: Bearer <key>`.
    #[arg(long)]
    pub api_key: Option<String>,
    /// Bound on one request, connection to last byte, in seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout_s: f64,
    /// JSON object merged into every request body, e.g.
    /// '{"chat_template_kwargs": {"enable_thinking": false}}'.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Count output tokens with this tokenizer (a directory or a .gguf) when the server sends
    /// no `usage`; without it, streamed chunks are counted and the report says so.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Goodput SLO on time to first token (ms).
    #[arg(long)]
    pub slo_ttft_ms: Option<f64>,
    /// Goodput SLO on time per output token (ms).
    #[arg(long)]
    pub slo_tpot_ms: Option<f64>,
    /// Name shown in every table row (e.g. the server).
    #[arg(long)]
    pub label: Option<String>,
    /// Every request's timings as JSON.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// A self-contained HTML report with latency CDFs and throughput versus concurrency.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_limit(s: &str, what: &str) -> Result<Option<f64>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("inf") {
        return Ok(None);
    }
    let v: f64 = s
        .parse()
        .with_context(|| format!("{what} `{s}` is not a number or `inf`"))?;
    if v.is_nan() || v <= 0.0 {
        bail!("{what} must be positive, got {s}");
    }
    Ok(Some(v))
}

fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.extension().is_some_and(|e| e == "gguf") {
        let gguf = kestrel_model::gguf::GgufFile::open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        crate::load::gguf_tokenizer(&gguf)?
            .with_context(|| format!("{} carries no tokenizer", path.display()))
    } else {
        Tokenizer::from_dir(path)
            .with_context(|| format!("loading the tokenizer from {}", path.display()))
    }
}

/// The prompts of the whole sweep: one slice per run, all distinct, plus the warm-up prompts.
fn prompts(args: &BenchArgs, total: usize) -> Result<(Vec<Prompt>, Vec<Prompt>)> {
    let total = total + args.skip_prompts;
    let (mut all, set) = match args.dataset.as_str() {
        "random" => {
            let all = random_prompts(
                total,
                args.input_len,
                args.output_len,
                args.range_ratio,
                args.seed,
            );
            let set = random_prompts(
                args.warmup.max(1),
                args.input_len,
                args.output_len,
                args.range_ratio,
                args.seed ^ 0x5eed,
            );
            (all, set)
        }
        "builtin" => {
            let set = builtin_prompts(&args.classes);
            (cycle(&set, total), set)
        }
        file => {
            if !args.classes.is_empty() {
                bail!("--class selects builtin questions; it does not apply to --dataset {file}");
            }
            let mut set = load_jsonl(Path::new(file))?;
            for p in &mut set {
                p.max_tokens = p.max_tokens.or(Some(args.output_len as u32));
            }
            (cycle(&set, total), set)
        }
    };
    let mut all = all.split_off(args.skip_prompts.min(all.len()));
    let mut warm = warmup(&set, args.warmup);
    if let Some(max) = args.max_tokens {
        for p in all.iter_mut().chain(warm.iter_mut()) {
            p.max_tokens = Some(max);
        }
    }
    Ok((all, warm))
}

pub fn run(args: BenchArgs) -> Result<()> {
    let levels: Vec<Option<usize>> = args
        .concurrency
        .iter()
        .map(|c| {
            Ok(parse_limit(c, "--concurrency")?
                .map(|v| v as usize)
                .filter(|&v| v > 0))
        })
        .collect::<Result<_>>()?;
    let request_rate = parse_limit(&args.request_rate, "--request-rate")?;
    let per_level: Vec<usize> = match args.num_prompts.len() {
        1 => vec![args.num_prompts[0]; levels.len()],
        n if n == levels.len() => args.num_prompts.clone(),
        n => bail!(
            "--num-prompts has {n} values for {} --concurrency values",
            levels.len()
        ),
    };
    if args.timeout_s.is_nan() || args.timeout_s <= 0.0 {
        bail!("--timeout-s must be positive");
    }
    let extra_body = match &args.extra_body {
        None => Default::default(),
        Some(text) => match serde_json::from_str(text).context("--extra-body is not JSON")? {
            serde_json::Value::Object(map) => map,
            _ => bail!("--extra-body must be a JSON object"),
        },
    };
    let counter: Option<Arc<dyn TokenCounter>> = match &args.tokenizer {
        None => None,
        Some(path) => {
            let tok = load_tokenizer(path)?;
            Some(Arc::new(move |text: &str| {
                tok.encode(text, false).map(|ids| ids.len()).unwrap_or(0)
            }))
        }
    };
    let (all, warm) = prompts(&args, per_level.iter().sum())?;
    let endpoint = match args.endpoint {
        BenchEndpoint::Chat => Endpoint::Chat,
        BenchEndpoint::Completions => Endpoint::Completions,
    };
    let target = Target {
        base_url: args.base_url.clone(),
        model: args.model.clone(),
        endpoint,
        api_key: args.api_key.clone(),
        ignore_eos: args.ignore_eos,
        extra_body,
        timeout: Duration::from_secs_f64(args.timeout_s),
    };
    let client = Arc::new(Client::new(target, counter)?);
    let slo = Slo {
        ttft_ms: args.slo_ttft_ms,
        tpot_ms: args.slo_tpot_ms,
    };
    let started_at_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut runs = Vec::new();
    let mut offset = 0;
    for (&level, &n) in levels.iter().zip(&per_level) {
        let prompts = &all[offset..offset + n];
        offset += n;
        let spec = RunSpec {
            max_concurrency: level,
            request_rate,
            seed: args.seed,
        };
        let name = level.map_or("inf".into(), |c| c.to_string());
        let bar = if args.no_progress {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(n as u64)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "concurrency {prefix}: [{bar:30}] {pos}/{len} {msg} ({elapsed})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(name.clone());
        let (mut ok, mut failed) = (0, 0);
        let result = runtime.block_on(kestrel_bench::run(
            &client,
            &spec,
            &warm,
            prompts,
            &slo,
            &mut |rec| {
                if rec.ok() {
                    ok += 1;
                } else {
                    failed += 1;
                }
                bar.set_message(format!("ok {ok}, failed {failed}"));
                bar.inc(1);
            },
        ));
        bar.finish_and_clear();
        let m = &result.metrics;
        eprintln!(
            "concurrency {name}: {}/{} ok in {:.1}s, {:.1} output tok/s, TTFT p50 {}",
            m.num_ok,
            m.num_requests,
            m.duration_s,
            m.output_tok_per_s,
            m.ttft_ms.p50.map_or("-".into(), |v| format!("{v:.1} ms")),
        );
        runs.push(result);
    }

    let report = BenchReport {
        label: args.label.clone(),
        base_url: args.base_url.clone(),
        model: args.model.clone(),
        endpoint,
        dataset: args.dataset.clone(),
        ignore_eos: args.ignore_eos,
        slo,
        started_at_unix_s,
        command: Some(std::env::args().collect::<Vec<_>>().join(" ")),
        runs,
    };
    println!("{}", kestrel_bench::markdown::render(&report));
    if let Some(path) = &args.output {
        report.write_json(path)?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.report {
        std::fs::write(path, kestrel_bench::html::render(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if report.runs.iter().all(|r| r.metrics.num_ok == 0) {
        bail!("every request failed; see the errors above");
    }
    Ok(())
}
