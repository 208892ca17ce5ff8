//! Invariance tests of the batching engine on the tiny f32 Qwen3 fixture, greedy with an f32 KV
//! cache: whatever the engine does to a sequence (batching it with others, chunking its prefill,
//! serving its prefix from the cache, preempting and recomputing it), its tokens are those of
//! the single-sequence reference loop `generate::generate`.

use std::ops::ControlFlow;
use std::path::PathBuf;

use kestrel_backend::{cpu::CpuBackend, KvDtype};
use kestrel_engine::generate::{argmax, generate, GenerateOptions};
use kestrel_engine::{
    start_engine, EngineConfig, EngineEvent, EngineHandle, EngineRequest, FinishReason,
    RequestStream, SamplingParams, SubmitError, Usage,
};
use kestrel_model::{ModelFiles, QwenModel};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/qwen3-tiny-tied")
}

fn load() -> (CpuBackend, QwenModel<CpuBackend>) {
    let files = ModelFiles::open(&fixture_dir()).expect("fixture");
    let backend = CpuBackend::new();
    let model = QwenModel::load(&backend, files.config().clone(), files.weights()).expect("load");
    (backend, model)
}

fn config() -> EngineConfig {
    EngineConfig {
        max_num_seqs: 16,
        max_num_batched_tokens: 512,
        max_model_len: 256,
        block_size: 16,
        num_blocks: 64,
        enable_prefix_caching: true,
        max_queued_requests: 64,
        kv_dtype: KvDtype::F32,
        long_prefill_token_threshold: 0,
    }
}

fn engine(config: EngineConfig) -> EngineHandle {
    let (backend, model) = load();
    start_engine(backend, model, config).expect("engine starts")
}

/// A deterministic pseudo-random prompt.
fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97 + 13) >> 7) % 320)
        .collect()
}

/// Greedy tokens of the single-sequence reference loop.
fn reference(prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let (backend, model) = load();
    let opts = GenerateOptions {
        max_tokens,
        stop_token_ids: vec![],
        ignore_eos: true,
        prefill_chunk: 512,
        kv_dtype: KvDtype::F32,
    };
    generate(
        &backend,
        &model,
        prompt,
        &opts,
        |l, _| argmax(l),
        |_| ControlFlow::Continue(()),
    )
    .expect("reference")
    .0
}

fn request(id: &str, prompt: Vec<u32>, max_tokens: usize) -> EngineRequest {
    EngineRequest {
        request_id: id.into(),
        prompt_ids: prompt,
        sampling: SamplingParams::greedy(),
        max_tokens,
        min_tokens: 0,
        stop_token_ids: vec![],
        cache_salt: None,
    }
}

/// Reads a stream to its end: tokens and the finish.
fn collect(stream: &mut RequestStream) -> (Vec<u32>, FinishReason, Usage) {
    let mut tokens = Vec::new();
    while let Some(event) = stream.blocking_recv() {
        match event {
            EngineEvent::Token { id, .. } => tokens.push(id),
            EngineEvent::Finished { reason, usage } => return (tokens, reason, usage),
            EngineEvent::Error { message } => panic!("engine error: {message}"),
        }
    }
    panic!("stream ended without a Finished event");
}

/// Submits all at once, then reads every stream.
fn run_all(
    handle: &EngineHandle,
    reqs: Vec<EngineRequest>,
) -> Vec<(Vec<u32>, FinishReason, Usage)> {
    let mut streams: Vec<RequestStream> = reqs
        .into_iter()
        .map(|r| handle.submit(r).expect("submit"))
        .collect();
    streams.iter_mut().map(collect).collect()
}

fn cases() -> Vec<(Vec<u32>, usize)> {
    [
        (1, 5, 12),
        (2, 17, 9),
        (3, 40, 20),
        (4, 3, 30),
        (5, 77, 7),
        (6, 16, 16),
    ]
    .into_iter()
    .map(|(seed, len, max_tokens)| (prompt(seed, len), max_tokens))
    .collect()
}

#[test]
fn batch_of_different_lengths_equals_each_alone() {
    let cases = cases();
    let want: Vec<Vec<u32>> = cases.iter().map(|(p, n)| reference(p, *n)).collect();
    let handle = engine(config());
    let reqs = cases
        .iter()
        .enumerate()
        .map(|(i, (p, n))| request(&format!("r{i}"), p.clone(), *n))
        .collect();
    let got = run_all(&handle, reqs);
    for (i, ((tokens, reason, usage), want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(tokens, want, "sequence {i}");
        assert_eq!(*reason, FinishReason::Length);
        assert_eq!(usage.prompt_tokens, cases[i].0.len());
        assert_eq!(usage.completion_tokens, cases[i].1);
    }
    let m = handle.metrics();
    assert_eq!(
        m.finished_length.load(std::sync::atomic::Ordering::Relaxed),
        cases.len() as u64
    );
}

#[test]
fn chunked_prefill_equals_whole_prefill() {
    let cases = cases();
    let want: Vec<Vec<u32>> = cases.iter().map(|(p, n)| reference(p, *n)).collect();
    // (step budget, per-sequence prefill cap): chunks cut by the budget, and by the cap while
    // other sequences decode in the same steps.
    for (budget, cap) in [(1, 0), (5, 0), (16, 0), (33, 0), (64, 7)] {
        let handle = engine(EngineConfig {
            max_num_batched_tokens: budget,
            enable_prefix_caching: false,
            long_prefill_token_threshold: cap,
            ..config()
        });
        let reqs = cases
            .iter()
            .enumerate()
            .map(|(i, (p, n))| request(&format!("r{i}"), p.clone(), *n))
            .collect();
        let got = run_all(&handle, reqs);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(&g.0, w, "sequence {i}, budget {budget}, cap {cap}");
        }
    }
}

#[test]
fn prefix_cache_hit_equals_miss() {
    let system = prompt(9, 50);
    let mut with_suffix = system.clone();
    with_suffix.extend(prompt(10, 11));
    let handle = engine(config());
    let first = run_all(&handle, vec![request("a", system.clone(), 10)]);
    assert_eq!(first[0].2.cached_tokens, 0);
    // The same prompt again (3 full blocks cached), and a longer one sharing it.
    let again = run_all(
        &handle,
        vec![
            request("b", system.clone(), 10),
            request("c", with_suffix.clone(), 10),
        ],
    );
    assert_eq!(again[0].0, first[0].0);
    assert_eq!(again[0].2.cached_tokens, 48);
    assert_eq!(again[1].2.cached_tokens, 48);
    assert_eq!(again[1].0, reference(&with_suffix, 10));
    assert_eq!(first[0].0, reference(&system, 10));
    let m = handle.metrics();
    assert_eq!(
        m.prefix_cache_hits
            .load(std::sync::atomic::Ordering::Relaxed),
        96
    );
}

#[test]
fn n_choices_share_prompt_blocks() {
    let p = prompt(11, 40);
    let handle = engine(config());
    let got = run_all(
        &handle,
        (0..3)
            .map(|i| request(&format!("x-{i}"), p.clone(), 8))
            .collect(),
    );
    let want = reference(&p, 8);
    for g in &got {
        assert_eq!(g.0, want);
    }
    // The first is a miss; the others hit the 2 full blocks it registered in the same step.
    assert_eq!(
        got.iter().map(|g| g.2.cached_tokens).collect::<Vec<_>>(),
        [0, 32, 32]
    );
}

#[test]
fn preemption_and_resume_equal_an_uninterrupted_run() {
    let cases: Vec<(Vec<u32>, usize)> = (0..5)
        .map(|i| (prompt(20 + i, 20 + 7 * i as usize), 30))
        .collect();
    let want: Vec<Vec<u32>> = cases.iter().map(|(p, n)| reference(p, *n)).collect();
    // 6 blocks of 16: room for one or two sequences at a time.
    let handle = engine(EngineConfig {
        num_blocks: 6,
        max_model_len: 96,
        max_num_batched_tokens: 24,
        block_size: 16,
        ..config()
    });
    let reqs = cases
        .iter()
        .enumerate()
        .map(|(i, (p, n))| request(&format!("r{i}"), p.clone(), *n))
        .collect();
    let got = run_all(&handle, reqs);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(&g.0, w, "sequence {i}");
    }
    let m = handle.metrics();
    assert!(
        m.num_preemptions.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the test must preempt"
    );
}

#[test]
fn stop_tokens_and_min_tokens() {
    let p = prompt(30, 12);
    let want = reference(&p, 20);
    let stop = want[3];
    let first_stop = want.iter().position(|&t| t == stop).expect("present");
    let handle = engine(config());
    let mut r = request("s", p.clone(), 20);
    r.stop_token_ids = vec![stop];
    let got = run_all(&handle, vec![r]);
    assert_eq!(got[0].0, want[..first_stop]);
    assert_eq!(got[0].1, FinishReason::Stop { token: Some(stop) });
    assert_eq!(got[0].2.completion_tokens, first_stop + 1);
    // With min_tokens past it, the stop token is never sampled before min_tokens.
    let mut r = request("m", p, 20);
    r.stop_token_ids = vec![stop];
    r.min_tokens = first_stop + 1;
    let got = run_all(&handle, vec![r]);
    assert!(!got[0].0[..first_stop + 1].contains(&stop));
    assert_eq!(got[0].0[..first_stop], want[..first_stop]);
}

#[test]
fn dropped_stream_frees_its_blocks() {
    let handle = engine(config());
    let mut stream = handle
        .submit(request("drop", prompt(40, 60), 150))
        .expect("submit");
    // Wait for the first two tokens, then disconnect.
    for _ in 0..2 {
        assert!(matches!(
            stream.blocking_recv(),
            Some(EngineEvent::Token { .. })
        ));
    }
    let m = handle.metrics();
    assert!(m.kv_cache_usage() > 0.0);
    drop(stream);
    // Commands are handled in order: once a later request finished, the abort was handled.
    run_all(&handle, vec![request("after", prompt(41, 5), 2)]);
    assert_eq!(
        m.finished_abort.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(m.kv_cache_usage(), 0.0);
    assert_eq!(
        m.num_requests_running
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    assert!(m.render_prometheus("tiny").contains(
        "kestrel:request_success_total{finished_reason=\"abort\",model_name=\"tiny\"} 1"
    ));
}

#[test]
fn abort_by_request_id() {
    let handle = engine(config());
    let mut stream = handle
        .submit(request("victim", prompt(42, 30), 200))
        .expect("submit");
    assert!(matches!(
        stream.blocking_recv(),
        Some(EngineEvent::Token { .. })
    ));
    handle.abort("victim");
    let (_, reason, usage) = collect(&mut stream);
    assert_eq!(reason, FinishReason::Abort);
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens < 200);
    assert!(stream.blocking_recv().is_none());
}

#[test]
fn admission_control() {
    let handle = engine(EngineConfig {
        max_queued_requests: 0,
        ..config()
    });
    assert!(matches!(
        handle.submit(request("q", vec![1, 2], 3)),
        Err(SubmitError::QueueFull { .. })
    ));
    let handle = engine(config());
    let err = handle
        .submit(request("long", prompt(1, 200), 100))
        .err()
        .expect("too long");
    assert!(matches!(
        err,
        SubmitError::TooLong {
            prompt: 200,
            max_tokens: 100,
            max_model_len: 256
        }
    ));
    assert!(matches!(
        handle.submit(request("e", vec![], 3)),
        Err(SubmitError::Invalid(_))
    ));
    assert!(matches!(
        handle.submit(request("v", vec![9999], 3)),
        Err(SubmitError::Invalid(_))
    ));
    let mut bad = request("t", vec![1], 3);
    bad.sampling.top_p = 0.0;
    assert!(matches!(handle.submit(bad), Err(SubmitError::Invalid(_))));
    assert!(handle.is_healthy());
    // A cache too small for max_model_len is a configuration error.
    let (backend, model) = load();
    assert!(start_engine(
        backend,
        model,
        EngineConfig {
            num_blocks: 2,
            ..config()
        }
    )
    .is_err());
}

#[test]
fn async_recv_streams_tokens() {
    let handle = engine(config());
    let p = prompt(50, 9);
    let want = reference(&p, 6);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let got = rt.block_on(async {
        let mut stream = handle.submit(request("async", p, 6)).expect("submit");
        let mut tokens = Vec::new();
        while let Some(event) = stream.recv().await {
            if let EngineEvent::Token { id, .. } = event {
                tokens.push(id);
            }
        }
        tokens
    });
    assert_eq!(got, want);
}

mod panicking {
    //! A backend that panics on demand, to check that an engine failure fails every in-flight
    //! sequence with an error, flips health, and never hangs.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use kestrel_backend::{
        cpu::CpuBackend, AttnShape, Backend, BatchInput, HostWeight, KvLayout, Result,
    };

    use super::*;

    struct Flaky {
        inner: CpuBackend,
        armed: Arc<AtomicBool>,
    }

    impl Backend for Flaky {
        type Tensor = <CpuBackend as Backend>::Tensor;
        type Weight = <CpuBackend as Backend>::Weight;
        type Batch = <CpuBackend as Backend>::Batch;
        type KvLayer = <CpuBackend as Backend>::KvLayer;
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn load_weight(&self, w: HostWeight) -> Result<Self::Weight> {
            self.inner.load_weight(w)
        }
        fn prepare_batch(&self, b: &BatchInput) -> Result<Self::Batch> {
            self.inner.prepare_batch(b)
        }
        fn alloc_kv_layer(&self, l: KvLayout) -> Result<Self::KvLayer> {
            self.inner.alloc_kv_layer(l)
        }
        fn to_host(&self, x: &Self::Tensor) -> Result<(usize, usize, Vec<f32>)> {
            self.inner.to_host(x)
        }
        fn embedding(&self, t: &Self::Weight, b: &Self::Batch) -> Result<Self::Tensor> {
            assert!(!self.armed.load(Ordering::SeqCst), "injected failure");
            self.inner.embedding(t, b)
        }
        fn rms_norm(&self, x: &Self::Tensor, w: &Self::Weight, eps: f32) -> Result<Self::Tensor> {
            self.inner.rms_norm(x, w, eps)
        }
        fn matmul(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor> {
            self.inner.matmul(x, w)
        }
        fn add_bias(&self, x: &mut Self::Tensor, b: &Self::Weight) -> Result<()> {
            self.inner.add_bias(x, b)
        }
        fn rope(&self, x: &mut Self::Tensor, b: &Self::Batch, d: usize, theta: f64) -> Result<()> {
            self.inner.rope(x, b, d, theta)
        }
        fn write_kv(
            &self,
            c: &mut Self::KvLayer,
            k: &Self::Tensor,
            v: &Self::Tensor,
            b: &Self::Batch,
        ) -> Result<()> {
            self.inner.write_kv(c, k, v, b)
        }
        fn attention(
            &self,
            q: &Self::Tensor,
            c: &Self::KvLayer,
            b: &Self::Batch,
            s: AttnShape,
        ) -> Result<Self::Tensor> {
            self.inner.attention(q, c, b, s)
        }
        fn silu_mul(&self, g: &Self::Tensor, u: &Self::Tensor) -> Result<Self::Tensor> {
            self.inner.silu_mul(g, u)
        }
        fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()> {
            self.inner.add_assign(x, y)
        }
        fn gather_logit_rows(&self, x: &Self::Tensor, b: &Self::Batch) -> Result<Self::Tensor> {
            self.inner.gather_logit_rows(x, b)
        }
    }

    #[test]
    fn a_panicking_step_fails_every_sequence_and_flips_health() {
        let armed = Arc::new(AtomicBool::new(false));
        let backend = Flaky {
            inner: CpuBackend::new(),
            armed: armed.clone(),
        };
        let files = ModelFiles::open(&fixture_dir()).expect("fixture");
        let model =
            QwenModel::load(&backend, files.config().clone(), files.weights()).expect("load");
        let handle = start_engine(backend, model, config()).expect("engine starts");
        let mut a = handle
            .submit(request("a", prompt(60, 10), 200))
            .expect("submit");
        let mut b = handle
            .submit(request("b", prompt(61, 10), 200))
            .expect("submit");
        assert!(matches!(a.blocking_recv(), Some(EngineEvent::Token { .. })));
        armed.store(true, Ordering::SeqCst);
        for stream in [&mut a, &mut b] {
            let last = std::iter::from_fn(|| stream.blocking_recv()).last();
            match last {
                Some(EngineEvent::Error { message }) => {
                    assert!(message.contains("injected failure"), "{message}")
                }
                other => panic!("expected an error, got {other:?}"),
            }
        }
        // The thread is gone (the error is sent before it exits; health flips before the errors).
        assert!(!handle.is_healthy());
        assert!(matches!(
            handle.submit(request("c", vec![1], 1)),
            Err(SubmitError::EngineDead)
        ));
    }
}

#[test]
fn handle_and_stream_cross_threads() {
    fn send_sync<T: Send + Sync + Clone + 'static>() {}
    fn send<T: Send + 'static>() {}
    send_sync::<EngineHandle>();
    send::<RequestStream>();
    send::<EngineEvent>();
}
