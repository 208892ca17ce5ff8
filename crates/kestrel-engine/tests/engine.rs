//! Behaviour of the engine thread on the tiny f32 Qwen3 fixture: stop tokens and `min_tokens`,
//! disconnects and aborts freeing their blocks at once, admission control, async streams, and
//! device failures (an error or a panic inside a step) failing every in-flight sequence with
//! an error and flipping health instead of hanging. The output invariances are in the
//! conformance suite (`tests/conformance`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::testing::{Fault, FaultyBackend};
use kestrel_backend::{Backend, KvDtype};
use kestrel_engine::{
    start_engine, EngineConfig, EngineEvent, EngineHandle, EngineRequest, FinishReason,
    RequestStream, SamplingParams, SubmitError, Usage,
};
use kestrel_model::{ModelFiles, QwenModel};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/qwen3-tiny-tied")
}

fn load<B: Backend>(backend: &B) -> QwenModel<B> {
    let files = ModelFiles::open(&fixture_dir()).expect("fixture");
    QwenModel::load(backend, files.config().clone(), files.weights()).expect("load")
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
        ..EngineConfig::default()
    }
}

fn engine(config: EngineConfig) -> EngineHandle {
    let backend = CpuBackend::new();
    let model = load(&backend);
    start_engine(backend, model, config).expect("engine starts")
}

/// A deterministic pseudo-random prompt.
fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97 + 13) >> 7) % 320)
        .collect()
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
        constraint: Default::default(),
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

#[test]
fn stop_tokens_and_min_tokens() {
    for async_scheduling in [false, true] {
        let handle = engine(EngineConfig {
            async_scheduling,
            ..config()
        });
        let p = prompt(30, 12);
        let want = run_all(&handle, vec![request("free", p.clone(), 20)])
            .remove(0)
            .0;
        let stop = want[3];
        let first_stop = want.iter().position(|&t| t == stop).expect("present");
        let mut r = request("s", p.clone(), 20);
        r.stop_token_ids = vec![stop];
        let got = run_all(&handle, vec![r]).remove(0);
        assert_eq!(got.0, want[..first_stop]);
        assert_eq!(got.1, FinishReason::Stop { token: Some(stop) });
        assert_eq!(got.2.completion_tokens, first_stop + 1);
        // With min_tokens past it, the stop token is never sampled before min_tokens.
        let mut r = request("m", p, 20);
        r.stop_token_ids = vec![stop];
        r.min_tokens = first_stop + 1;
        let got = run_all(&handle, vec![r]).remove(0);
        assert!(!got.0[..first_stop + 1].contains(&stop));
        assert_eq!(got.0[..first_stop], want[..first_stop]);
    }
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
    assert_eq!(m.finished_abort.load(Ordering::Relaxed), 1);
    assert_eq!(m.kv_cache_usage(), 0.0);
    assert_eq!(m.num_requests_running.load(Ordering::Relaxed), 0);
    assert!(m.render_prometheus("tiny").contains(
        "vllm:request_success_total{model_name=\"tiny\",engine=\"0\",finished_reason=\"abort\"} 1"
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
    let mut bias = request("b", vec![1], 3);
    bias.sampling.logit_bias = vec![(320, 1.0)];
    assert!(
        matches!(handle.submit(bias), Err(SubmitError::Invalid(m)) if m.contains("logit_bias"))
    );
    assert!(handle.is_healthy());
    // A cache too small for max_model_len is a configuration error.
    let backend = CpuBackend::new();
    let model = load(&backend);
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
fn bad_prefill_limits_are_configuration_errors_naming_the_field() {
    let cases = [
        (
            EngineConfig {
                max_num_partial_prefills: 0,
                ..config()
            },
            "max_num_partial_prefills",
        ),
        (
            EngineConfig {
                max_num_partial_prefills: 2,
                max_long_partial_prefills: 3,
                ..config()
            },
            "max_long_partial_prefills 3 exceeds max_num_partial_prefills 2",
        ),
        (
            EngineConfig {
                enable_chunked_prefill: false,
                max_num_batched_tokens: 128,
                ..config()
            },
            "max_num_batched_tokens 128 must be at least max_model_len 256",
        ),
    ];
    for (bad, field) in cases {
        let backend = CpuBackend::new();
        let model = load(&backend);
        let err = start_engine(backend, model, bad).err().expect("rejected");
        assert!(err.to_string().contains(field), "{err}");
    }
    // Without chunked prefill a budget holding max_model_len is fine, and serves.
    let handle = engine(EngineConfig {
        enable_chunked_prefill: false,
        max_num_batched_tokens: 256,
        ..config()
    });
    let got = run_all(&handle, vec![request("whole", prompt(3, 200), 4)]);
    assert_eq!(got[0].0.len(), 4);
}

#[test]
fn async_recv_streams_tokens() {
    let handle = engine(config());
    let p = prompt(50, 9);
    let want = run_all(&handle, vec![request("sync", p.clone(), 6)])
        .remove(0)
        .0;
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

/// A device that fails (an error or a panic) in a step fails every in-flight sequence with an
/// error naming the failure, flips health, and refuses new work instead of hanging.
#[test]
fn a_failing_step_fails_every_sequence_and_flips_health() {
    for (fault, needle) in [
        (Fault::Error, "injected device failure"),
        (Fault::Panic, "injected kernel panic"),
    ] {
        for async_scheduling in [false, true] {
            let backend = FaultyBackend::new(CpuBackend::new(), fault);
            let model = load(&backend);
            let control = backend.clone();
            let handle = start_engine(
                backend,
                model,
                EngineConfig {
                    async_scheduling,
                    ..config()
                },
            )
            .expect("engine starts");
            let mut a = handle
                .submit(request("a", prompt(60, 10), 200))
                .expect("submit");
            let mut b = handle
                .submit(request("b", prompt(61, 10), 200))
                .expect("submit");
            assert!(matches!(a.blocking_recv(), Some(EngineEvent::Token { .. })));
            control.fail_after(2);
            for stream in [&mut a, &mut b] {
                let last = std::iter::from_fn(|| stream.blocking_recv()).last();
                match last {
                    Some(EngineEvent::Error { message }) => {
                        assert!(message.contains(needle), "{message}")
                    }
                    other => panic!("{fault:?}: expected an error, got {other:?}"),
                }
            }
            // The error is sent after health flips.
            assert!(!handle.is_healthy());
            assert!(matches!(
                handle.submit(request("c", vec![1], 1)),
                Err(SubmitError::EngineDead)
            ));
        }
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
