//! A warm decode step allocates nothing: the workspace, the batch and sampling buffers and the
//! kernels' scratch are all sized before, so the number of heap allocations of a step does not
//! grow with the layers or ops of the model (it is zero). Counted by a global allocator, in a
//! test binary of its own so that no other test allocates meanwhile.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::{
    BatchInput, KvDtype, SampleOutput, SamplingBatch, SamplingParams, StepOptions,
};
use kestrel_model::{ModelFiles, ModelRunner, QwenModel, RunnerConfig};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by decode steps of three sequences once warm, in the given kernel mode.
fn decode_allocations(dir: &Path, invariant: bool) -> usize {
    let backend = CpuBackend::new();
    let files = ModelFiles::open(dir).expect("model");
    let model = QwenModel::load(&backend, files.config().clone(), files.weights()).expect("load");
    let vocab = model.config.vocab_size as u32;
    let block = 16;
    let config = RunnerConfig {
        max_num_tokens: 64,
        max_num_seqs: 4,
        max_num_logits: 4,
        num_blocks: 24,
        block_size: block,
        max_blocks_per_seq: 8,
        kv_dtype: KvDtype::F16,
    };
    let mut runner = ModelRunner::new(backend, model, config).expect("runner");
    let tables: [Vec<u32>; 3] = [(0..8).collect(), (8..16).collect(), (16..24).collect()];
    let prompts: Vec<Vec<u32>> = (0..3u32)
        .map(|s| (0..5 + 7 * s).map(|i| (i * 31 + s * 7) % vocab).collect())
        .collect();
    // One sampled, penalized and logprob-asking row per sequence, like a busy server's.
    let params = [
        SamplingParams::greedy(),
        SamplingParams {
            seed: Some(3),
            top_p: 0.9,
            repetition_penalty: 1.1,
            ..SamplingParams::default()
        },
        SamplingParams {
            logprobs: Some(5),
            top_k: 20,
            logit_bias: vec![(1, 2.0)],
            ..SamplingParams::default()
        },
    ];
    let opts = StepOptions {
        batch_invariant: invariant,
        graph_tokens: None,
    };
    let mut batch = BatchInput::new(block);
    let mut sampling = SamplingBatch::default();
    let mut out = SampleOutput::default();
    let mut seqs: Vec<Vec<u32>> = prompts.clone();
    let mut computed = vec![0usize; 3];
    let mut count = 0;
    for step in 0..8 {
        batch.clear();
        sampling.clear();
        for s in 0..3 {
            let new = &seqs[s][computed[s]..];
            batch.push_seq(new.iter().copied(), computed[s], &tables[s], true);
            let history: Vec<(u32, u32)> = Vec::new();
            sampling.push(
                &params[s],
                11 + s as u64,
                seqs[s].len() as u64,
                history,
                &[2],
            );
        }
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        runner
            .execute(&batch, &sampling, opts, &mut out)
            .expect("step");
        let after = ALLOCATIONS.load(Ordering::SeqCst);
        // Steps 0 (prefill), 1 and 2 warm up; decode steps from 5 on are measured.
        if step >= 5 {
            count += after - before;
        }
        for s in 0..3 {
            computed[s] = seqs[s].len();
            seqs[s].push(out.tokens[s]);
        }
    }
    count
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
}

#[test]
fn a_warm_decode_step_allocates_nothing() {
    let mut models = vec![fixture("qwen3-tiny-tied"), fixture("qwen2-tiny-untied")];
    let gguf = std::env::var_os("KESTREL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/kestrel/fixtures")
        })
        .join("qwen2.5-coder-0.5b-instruct.gguf");
    // The real GGUF takes the quantized kernels (scripts/fetch-fixtures.sh fetches it).
    assert!(
        gguf.exists(),
        "{} is missing: run scripts/fetch-fixtures.sh",
        gguf.display()
    );
    models.push(gguf);
    for dir in &models {
        for invariant in [false, true] {
            assert_eq!(
                decode_allocations(dir, invariant),
                0,
                "{} (invariant {invariant}): allocations in warm decode steps",
                dir.display()
            );
        }
    }
}
