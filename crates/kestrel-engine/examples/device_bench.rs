//! Decode and prefill speed of the whole engine on any compiled device, on a random-weight
//! Qwen3 model of real shapes (bf16; values do not change speed): aggregate decode tok/s of
//! 1, 8, 32 and 128 greedy streams (32-token prompts, 128 new tokens each, timed from the
//! last stream's first token to the end), and the time to first token of one 512-token
//! prompt. The numbers line up with `anchor_graph.py`'s (decode at batch sizes, 512-token
//! prefill); `scripts/device-check.sh` runs both in one device run.
//!
//! ```text
//! cargo run --release -p kestrel-engine --example device_bench -- [--device auto|cpu|cuda]
//!     [--size 1.7b] [--batches 1,8,32,128] [--out results.json]
//! ```

use std::time::{Duration, Instant};

use kestrel_backend::{with_backend, Backend, BackendVisitor, DeviceChoice, WeightFormat};
use kestrel_engine::{start_engine, EngineConfig, EngineEvent, EngineRequest, SamplingParams};
use kestrel_model::{synth, ModelFiles, QwenModel};

struct Args {
    device: DeviceChoice,
    size: String,
    batches: Vec<usize>,
    out: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        device: DeviceChoice::Auto,
        size: "1.7b".into(),
        batches: vec![1, 8, 32, 128],
        out: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--device" => a.device = v.parse().expect("auto, cpu or cuda"),
            "--size" => a.size = v,
            "--batches" => {
                a.batches = v
                    .split(',')
                    .map(|b| b.parse().expect("batch sizes like 1,8,32"))
                    .collect()
            }
            "--out" => a.out = Some(v),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 7919) >> 5) % 150_000)
        .collect()
}

/// Submits every request at once; returns each stream's token arrival times.
fn run(handle: &kestrel_engine::EngineHandle, reqs: Vec<EngineRequest>) -> Vec<Vec<Instant>> {
    std::thread::scope(|s| {
        let workers: Vec<_> = reqs
            .into_iter()
            .map(|r| {
                let mut stream = handle.submit(r).expect("submit");
                s.spawn(move || {
                    let mut times = Vec::new();
                    while let Some(e) = stream.blocking_recv() {
                        match e {
                            EngineEvent::Token { .. } => times.push(Instant::now()),
                            EngineEvent::Error { message } => panic!("{message}"),
                            EngineEvent::Finished { .. } => {}
                        }
                    }
                    times
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("stream"))
            .collect()
    })
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

struct Bench<'a>(&'a Args, std::path::PathBuf);

impl BackendVisitor for Bench<'_> {
    type Output = serde_json::Value;

    fn visit<B: Backend + Clone>(self, backend: B) -> serde_json::Value {
        let (a, dir) = (self.0, self.1);
        eprintln!("device: {}", backend.describe());
        let files = ModelFiles::open(&dir).expect("model");
        let model =
            QwenModel::load(&backend, files.config().clone(), files.weights()).expect("load");
        let max_batch = a.batches.iter().copied().max().unwrap_or(1);
        let config = EngineConfig {
            max_num_batched_tokens: 2048.max(max_batch),
            max_num_seqs: max_batch.max(1),
            max_model_len: 4096,
            num_blocks: (max_batch * 12).max(256),
            enable_prefix_caching: false,
            kv_dtype: files.default_kv_dtype(),
            ..EngineConfig::default()
        };
        let handle = start_engine(backend.clone(), model, config).expect("engine");
        // Warm-up: kernels, graphs for the batch sizes' first steps.
        run(&handle, vec![request("warm".into(), prompt(99, 32), 8)]);
        let mut decode = serde_json::Map::new();
        for &b in &a.batches {
            let new_tokens = 128;
            let traces = run(
                &handle,
                (0..b)
                    .map(|i| request(format!("b{b}-{i}"), prompt(i as u32, 32), new_tokens))
                    .collect(),
            );
            let start = traces.iter().map(|t| t[0]).max().expect("streams");
            let end = traces
                .iter()
                .map(|t| *t.last().expect("tokens"))
                .max()
                .expect("streams");
            let after: usize = traces
                .iter()
                .map(|t| t.iter().filter(|&&x| x > start).count())
                .sum();
            let tok_s = after as f64 / (end - start).as_secs_f64().max(1e-9);
            println!("decode batch {b:>4}: {tok_s:>10.1} tok/s");
            decode.insert(b.to_string(), tok_s.into());
        }
        let mut ttfts: Vec<Duration> = (0..5)
            .map(|i| {
                let t0 = Instant::now();
                let t = run(
                    &handle,
                    vec![request(format!("p{i}"), prompt(1000 + i, 512), 1)],
                );
                t[0][0] - t0
            })
            .collect();
        ttfts.sort();
        let ttft_ms = ttfts[ttfts.len() / 2].as_secs_f64() * 1e3;
        println!("prefill 512 tokens: TTFT {ttft_ms:.2} ms (median of 5)");
        serde_json::json!({
            "device": backend.describe(),
            "size": a.size,
            "decode_tok_s": decode,
            "prefill_512_ttft_ms": ttft_ms,
        })
    }
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join(&a.size);
    let c = synth::qwen3_config(&a.size).expect("a known Qwen3 size (0.6b, 1.7b, ...)");
    synth::write_safetensors_dir(&c, WeightFormat::BF16, 0, &dir, None).expect("synth");
    let device = a.device;
    let result = with_backend(device, Bench(&a, dir)).expect("device");
    if let Some(r) = kestrel_backend::device::fallback_reason() {
        eprintln!("note: --device auto fell back to the CPU: {r}");
    }
    let text = serde_json::to_string_pretty(&result).expect("json");
    match &a.out {
        Some(path) => std::fs::write(path, text).expect("writing the results"),
        None => println!("{text}"),
    }
}
