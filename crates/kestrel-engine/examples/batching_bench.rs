//! Batching benchmark for the issue's must-show numbers, on a random-weight Qwen3 model (values
//! don't change speed): aggregate decode speed of 16 streams vs 1; time to first token of 16
//! requests sharing a 1,000-token system prompt (prefix caching on), with an output check
//! against a cache-off engine; inter-token latency p99 of 8 decoding streams with and without a
//! 2,000-token newcomer (chunked prefill). Prints one table per scenario.
//!
//! ```text
//! cargo run --release -p kestrel-engine --example batching_bench -- \
//!     [--size 0.6b | --model DIR] [--scenario all|streams|prefix|itl] [--max-num-batched-tokens N]
//!     [--long-prefill-token-threshold N] [--batch-invariant auto|on|off]
//!     [--batching-policy latency|throughput]
//! ```
//!
//! The requests are greedy, so under the default `--batch-invariant auto` their steps run the
//! batch-invariant kernels; `off` measures the fast kernels.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kestrel_backend::{cpu::CpuBackend, KvDtype, WeightFormat};
use kestrel_engine::{
    start_engine, EngineConfig, EngineEvent, EngineHandle, EngineRequest, SamplingParams,
};
use kestrel_model::{synth, ModelFiles, QwenModel};

struct Args {
    size: String,
    model: Option<PathBuf>,
    scenario: String,
    budget: usize,
    prefill_cap: usize,
    invariance: kestrel_engine::BatchInvariance,
    policy: kestrel_engine::BatchingPolicy,
}

fn args() -> Args {
    let mut a = Args {
        size: "0.6b".into(),
        model: None,
        scenario: "all".into(),
        budget: 2048,
        prefill_cap: 0,
        invariance: kestrel_engine::BatchInvariance::Auto,
        policy: kestrel_engine::BatchingPolicy::Latency,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--size" => a.size = v,
            "--model" => a.model = Some(v.into()),
            "--scenario" => a.scenario = v,
            "--max-num-batched-tokens" => a.budget = v.parse().expect("a number"),
            "--long-prefill-token-threshold" => a.prefill_cap = v.parse().expect("a number"),
            "--batch-invariant" => a.invariance = v.parse().expect("auto, on or off"),
            "--batching-policy" => a.policy = v.parse().expect("latency or throughput"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Loads the model (synthesizing a bf16 one into a temporary directory when no `--model`).
fn load(
    a: &Args,
    tmp: &mut Option<tempfile::TempDir>,
) -> (CpuBackend, QwenModel<CpuBackend>, KvDtype) {
    let dir = match &a.model {
        Some(d) => d.clone(),
        None => {
            let t = tmp.get_or_insert_with(|| tempfile::tempdir().expect("tempdir"));
            let dir = t.path().join(&a.size);
            if !dir.exists() {
                let c = synth::qwen3_config(&a.size).expect("known size");
                synth::write_safetensors_dir(&c, WeightFormat::BF16, 0, &dir, None).expect("synth");
            }
            dir
        }
    };
    let files = ModelFiles::open(&dir).expect("model");
    let backend = CpuBackend::new();
    let model = QwenModel::load(&backend, files.config().clone(), files.weights()).expect("load");
    (backend, model, files.default_kv_dtype())
}

fn engine(a: &Args, tmp: &mut Option<tempfile::TempDir>, prefix_caching: bool) -> EngineHandle {
    let (backend, model, kv_dtype) = load(a, tmp);
    let config = EngineConfig {
        max_num_batched_tokens: a.budget,
        max_model_len: 4096,
        num_blocks: 2048,
        enable_prefix_caching: prefix_caching,
        kv_dtype,
        long_prefill_token_threshold: a.prefill_cap,
        batching_policy: a.policy,
        batch_invariance: a.invariance,
        ..EngineConfig::default()
    };
    start_engine(backend, model, config).expect("engine")
}

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 7919) >> 5) % 150_000)
        .collect()
}

fn request(id: String, prompt_ids: Vec<u32>, max_tokens: usize) -> EngineRequest {
    EngineRequest {
        request_id: id,
        prompt_ids,
        sampling: SamplingParams::greedy(),
        max_tokens,
        min_tokens: 0,
        stop_token_ids: vec![],
        cache_salt: None,
        constraint: Default::default(),
    }
}

/// Timestamps of one stream: submission, and each token's arrival.
struct Trace {
    submitted: Instant,
    tokens: Vec<(Instant, u32)>,
}

impl Trace {
    fn ttft(&self) -> Duration {
        self.tokens[0].0 - self.submitted
    }
    fn itls(&self) -> impl Iterator<Item = Duration> + '_ {
        self.tokens.windows(2).map(|w| w[1].0 - w[0].0)
    }
    fn ids(&self) -> Vec<u32> {
        self.tokens.iter().map(|t| t.1).collect()
    }
}

/// Submits every request at once and follows each stream on its own thread.
fn run(handle: &EngineHandle, reqs: Vec<EngineRequest>) -> Vec<Trace> {
    std::thread::scope(|s| {
        let workers: Vec<_> = reqs
            .into_iter()
            .map(|r| {
                let submitted = Instant::now();
                let mut stream = handle.submit(r).expect("submit");
                s.spawn(move || {
                    let mut tokens = Vec::new();
                    while let Some(e) = stream.blocking_recv() {
                        match e {
                            EngineEvent::Token { id, .. } => tokens.push((Instant::now(), id)),
                            EngineEvent::Error { message } => panic!("{message}"),
                            EngineEvent::Finished { .. } => {}
                        }
                    }
                    Trace { submitted, tokens }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("stream thread"))
            .collect()
    })
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

fn streams(handle: &EngineHandle) {
    let max_tokens = 64;
    let mut rows = Vec::new();
    for n in [1usize, 16] {
        let traces = run(
            handle,
            (0..n)
                .map(|i| request(format!("s{n}-{i}"), prompt(i as u32, 32), max_tokens))
                .collect(),
        );
        // Decode window: from the last first-token to the last token.
        let start = traces.iter().map(|t| t.tokens[0].0).max().expect("streams");
        let end = traces
            .iter()
            .map(|t| t.tokens.last().expect("tokens").0)
            .max()
            .expect("streams");
        let decoded: usize = traces
            .iter()
            .map(|t| t.tokens.iter().filter(|x| x.0 > start).count())
            .sum();
        rows.push((n, decoded as f64 / (end - start).as_secs_f64()));
    }
    println!("\n| streams | aggregate decode tok/s | vs 1 stream |\n|---|---|---|");
    for (n, tps) in &rows {
        println!("| {n} | {tps:.1} | {:.2}x |", tps / rows[0].1);
    }
}

fn prefix(a: &Args, tmp: &mut Option<tempfile::TempDir>, handle: &EngineHandle) {
    let system = prompt(1000, 1000);
    let req = |i: u32| {
        let mut p = system.clone();
        p.extend(prompt(2000 + i, 16));
        request(format!("p{i}"), p, 8)
    };
    let m = handle.metrics();
    let hits = || {
        m.prefix_cache_hits
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let first = run(handle, vec![req(0)]).remove(0);
    // The 15 later requests, first one after another (each arrives alone, as chat turns do),
    // then all at once (they share one step).
    let h0 = hits();
    let one_by_one: Vec<Trace> = (1..16)
        .map(|i| run(handle, vec![req(i)]).remove(0))
        .collect();
    let h1 = hits();
    let together = run(handle, (16..31).map(req).collect());
    let h2 = hits();
    let mean =
        |ts: &[Trace]| ts.iter().map(|t| t.ttft().as_secs_f64()).sum::<f64>() / ts.len() as f64;
    let cold = first.ttft().as_secs_f64();
    println!(
        "\n| request | TTFT ms | first / this | prompt tokens from the cache |\n|---|---|---|---|"
    );
    println!(
        "| first (cold, 1,016 tokens) | {:.1} | 1.00x | 0 |",
        cold * 1e3
    );
    println!(
        "| 15 later, one after another (mean) | {:.1} | {:.2}x | {} |",
        mean(&one_by_one) * 1e3,
        cold / mean(&one_by_one),
        h1 - h0
    );
    println!(
        "| 15 later, simultaneous (mean) | {:.1} | {:.2}x | {} |",
        mean(&together) * 1e3,
        cold / mean(&together),
        h2 - h1
    );
    // The same requests without the cache give the same tokens.
    let cold_engine = engine(a, tmp, false);
    let check = run(&cold_engine, vec![req(0), req(7), req(20)]);
    let same = check[0].ids() == first.ids()
        && check[1].ids() == one_by_one[6].ids()
        && check[2].ids() == together[4].ids();
    println!("\noutputs equal with prefix caching off: {same}");
}

fn itl(handle: &EngineHandle) {
    let decode = |tag: &str| {
        (0..8)
            .map(|i| request(format!("{tag}{i}"), prompt(300 + i, 32), 96))
            .collect::<Vec<_>>()
    };
    let base = run(handle, decode("b"));
    let base_p99 = p99(base.iter().flat_map(|t| t.itls()).collect());
    // The newcomer arrives once the 8 streams are decoding.
    let m = handle.metrics();
    let before = m
        .generation_tokens
        .load(std::sync::atomic::Ordering::Relaxed);
    let traces = std::thread::scope(|s| {
        let h = handle.clone();
        let decoders = s.spawn(move || run(&h, decode("n")));
        // Wait (polling, not spinning: 2 cores) until the 8 streams have 10 tokens each.
        while m
            .generation_tokens
            .load(std::sync::atomic::Ordering::Relaxed)
            < before + 8 * 10
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let newcomer = run(handle, vec![request("new".into(), prompt(999, 2000), 4)]);
        (decoders.join().expect("decoders"), newcomer)
    });
    let (with, newcomer) = traces;
    let with_p99 = p99(with.iter().flat_map(|t| t.itls()).collect());
    let max_with = with.iter().flat_map(|t| t.itls()).max().unwrap_or_default();
    println!("\n| 8 decoding streams | ITL p99 ms | ITL max ms |\n|---|---|---|");
    println!(
        "| alone | {:.1} | {:.1} |",
        base_p99.as_secs_f64() * 1e3,
        base.iter()
            .flat_map(|t| t.itls())
            .max()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    );
    println!(
        "| + 2,000-token newcomer | {:.1} | {:.1} |",
        with_p99.as_secs_f64() * 1e3,
        max_with.as_secs_f64() * 1e3
    );
    println!(
        "| p99 ratio | {:.2}x | newcomer TTFT {:.0} ms |",
        with_p99.as_secs_f64() / base_p99.as_secs_f64(),
        newcomer[0].ttft().as_secs_f64() * 1e3
    );
}

fn main() {
    let a = args();
    let mut tmp = None;
    let handle = engine(&a, &mut tmp, true);
    let model = a
        .model
        .as_ref()
        .map_or(a.size.clone(), |m| m.display().to_string());
    println!(
        "model {model} (random weights), {}, max_num_batched_tokens {}, long_prefill_token_threshold {}, batch invariance {:?}, batching policy {}",
        kestrel_backend::Backend::describe(&CpuBackend::new()),
        a.budget,
        a.prefill_cap,
        a.invariance,
        a.policy.as_str()
    );
    let all = a.scenario == "all";
    if all || a.scenario == "streams" {
        streams(&handle);
    }
    if all || a.scenario == "prefix" {
        prefix(&a, &mut tmp, &handle);
    }
    if all || a.scenario == "itl" {
        itl(&handle);
    }
}
