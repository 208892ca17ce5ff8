//! The CPU backend: f32 activations in host memory, weights in their storage format (often
//! pointing into a memory-mapped file), and every op split across the rayon thread pool.
//!
//! Quantized weights are multiplied the way ggml's CPU backend does it: each activation row is
//! converted once to the weight's dot-product format (q8_0, q8_1, q8_K) and integer block dot
//! products are scaled in f32, so greedy decoding follows llama.cpp on the same GGUF file. On
//! AVX-512 VNNI, Q8_0 / Q4_K / Q6_K matrices are interleaved at load for `vpdpbusd` tiles
//! (`quant/vnni`), whose f32 rounding is their own.
//! F32/F16/BF16 weights go through a register-blocked f32 GEMM (16-bit weights widened in
//! registers) with f32 activations, which keeps parity with `transformers` running in f32.
//!
//! "Device" memory is host memory, so uploads are copies into persistent buffers, a step runs
//! synchronously inside [`Backend::run_step`] on a compute thread, and `read_sampled` only
//! copies. Ops take their buffers from the backend's [`scratch`] and the threads' task
//! buffers, so a warm step allocates nothing.

mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_group;
#[cfg(target_arch = "x86_64")]
mod attention_tiled;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
#[cfg(target_arch = "x86_64")]
mod gemm_packed;
pub mod isa;
mod matmul;
mod ops;
pub mod quant;
mod sampling;
mod scratch;
mod simd;
mod tensor;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{BackendError, Result};
use crate::sampling::{SampleOutput, SamplingBatch};
use crate::{
    AttnShape, Backend, BatchInput, BatchLimits, DeviceKind, HostWeight, KvLayout, MemoryInfo,
    StepOptions, PLACEHOLDER,
};

pub use sampling::CpuSampling;
pub use tensor::{CpuBatch, CpuKvLayer, CpuTensor, CpuWeight, KvStore};

/// The CPU backend. Threads come from rayon's global pool (`RAYON_NUM_THREADS`); clones share
/// one set of op buffers.
#[derive(Clone, Default)]
pub struct CpuBackend {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    scratch: Mutex<scratch::StepScratch>,
    /// The current step asked for batch-invariant kernels.
    invariant: AtomicBool,
}

impl CpuBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn scratch(&self) -> MutexGuard<'_, scratch::StepScratch> {
        // A panic inside an op poisons nothing that matters: the buffers hold no invariants.
        self.shared
            .scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn invariant(&self) -> bool {
        self.shared.invariant.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Total and available host memory from `/proc/meminfo` (zeros where it cannot be read).
fn host_memory() -> MemoryInfo {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<usize>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    MemoryInfo {
        total: field("MemTotal:"),
        free: field("MemAvailable:"),
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Batch = CpuBatch;
    type KvLayer = CpuKvLayer;
    type Sampling = CpuSampling;

    fn describe(&self) -> String {
        let interleaved = if quant::vnni::available_for(quant::WeightFormat::Q4_K) {
            "; Q8_0/Q4_K/Q6_K interleaved for VNNI, Q4_0/Q5_0 as Q8_0"
        } else {
            ""
        };
        let attention = if isa::avx512() {
            "; attention per token and KV-head group"
        } else {
            ""
        };
        format!(
            "cpu ({} threads, {} kernels{interleaved}{attention})",
            rayon::current_num_threads(),
            isa::isa().name()
        )
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn memory_info(&self) -> MemoryInfo {
        host_memory()
    }

    fn load_weight(&self, weight: HostWeight) -> Result<CpuWeight> {
        CpuWeight::new(weight)
    }

    fn load_embedding(&self, weight: HostWeight) -> Result<CpuWeight> {
        CpuWeight::rows_only(weight)
    }

    fn alloc_tensor(&self, max_rows: usize, cols: usize) -> Result<CpuTensor> {
        Ok(CpuTensor::with_capacity(max_rows, cols))
    }

    fn alloc_batch(&self, limits: BatchLimits) -> Result<CpuBatch> {
        // The block size comes with each uploaded batch.
        Ok(CpuBatch::with_limits(limits, 16))
    }

    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<CpuKvLayer> {
        // The per-token attention pass keeps one score per key of the longest sequence.
        let slots = layout.num_blocks * layout.block_size;
        scratch::on_every_thread(|s| {
            s.scores.reserve(slots.saturating_sub(s.scores.len()));
            s.q16.reserve(layout.head_dim.saturating_sub(s.q16.len()));
        });
        Ok(CpuKvLayer::zeros(layout))
    }

    fn alloc_sampling(&self, max_rows: usize, vocab: usize) -> Result<CpuSampling> {
        scratch::on_every_thread(|s| s.sample.reserve(vocab));
        Ok(CpuSampling::new(max_rows, vocab))
    }

    fn upload_batch(&self, host: &BatchInput, dev: &mut CpuBatch) -> Result<()> {
        dev.fill(host)
    }

    fn upload_sampling(&self, host: &SamplingBatch, dev: &mut CpuSampling) -> Result<()> {
        dev.upload(host)
    }

    fn resolve_placeholders(&self, batch: &mut CpuBatch, prev: &CpuSampling) -> Result<()> {
        let sampled = prev.sampled();
        let input = &mut batch.input;
        for &(t, row) in &input.prev_sampled {
            let id = *sampled.get(row as usize).ok_or_else(|| {
                BackendError::Batch(format!(
                    "placeholder reads row {row} of a step that sampled {}",
                    sampled.len()
                ))
            })?;
            let slot = &mut input.input_ids[t as usize];
            debug_assert_eq!(*slot, PLACEHOLDER);
            *slot = id;
        }
        Ok(())
    }

    fn embedding(&self, table: &CpuWeight, batch: &CpuBatch, out: &mut CpuTensor) -> Result<()> {
        ops::embedding(table, &batch.input.input_ids, out)
    }

    fn rms_norm(
        &self,
        x: &CpuTensor,
        weight: &CpuWeight,
        eps: f32,
        out: &mut CpuTensor,
    ) -> Result<()> {
        ops::rms_norm(x, weight, eps, out)
    }

    fn rms_norm_inplace(&self, x: &mut CpuTensor, weight: &CpuWeight, eps: f32) -> Result<()> {
        ops::rms_norm_inplace(x, weight, eps)
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight, out: &mut CpuTensor) -> Result<()> {
        matmul::matmul(x, w, out, &mut self.scratch(), self.invariant())
    }

    fn matmul_many(
        &self,
        x: &CpuTensor,
        ws: &[&CpuWeight],
        outs: &mut [&mut CpuTensor],
    ) -> Result<()> {
        matmul::matmul_many(x, ws, outs, &mut self.scratch(), self.invariant())
    }

    fn add_bias(&self, x: &mut CpuTensor, bias: &CpuWeight) -> Result<()> {
        ops::add_bias(x, bias)
    }

    fn rope(
        &self,
        x: &mut CpuTensor,
        batch: &CpuBatch,
        rope: crate::Rope<'_, CpuWeight>,
    ) -> Result<()> {
        ops::rope_neox(x, &batch.input.positions, rope)
    }

    fn write_kv(
        &self,
        cache: &mut CpuKvLayer,
        k: &CpuTensor,
        v: &CpuTensor,
        batch: &CpuBatch,
    ) -> Result<()> {
        attention::write_kv(cache, k, v, &batch.input.slot_mapping)
    }

    fn copy_kv(&self, cache: &mut CpuKvLayer, batch: &CpuBatch) -> Result<()> {
        attention::copy_kv(cache, &batch.input.kv_copies, batch.input.block_size)
    }

    fn attention(
        &self,
        q: &CpuTensor,
        cache: &CpuKvLayer,
        batch: &CpuBatch,
        shape: AttnShape,
        out: &mut CpuTensor,
    ) -> Result<()> {
        attention::paged_attention(
            q,
            cache,
            batch,
            shape,
            out,
            &mut self.scratch(),
            self.invariant(),
        )
    }

    fn silu_mul(&self, gate: &CpuTensor, up: &CpuTensor, out: &mut CpuTensor) -> Result<()> {
        ops::silu_mul(gate, up, out)
    }

    fn add_assign(&self, x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
        ops::add_assign(x, y)
    }

    fn gather_logit_rows(
        &self,
        x: &CpuTensor,
        batch: &CpuBatch,
        out: &mut CpuTensor,
    ) -> Result<()> {
        ops::gather_rows(x, &batch.input.logits_indices, out)
    }

    fn sample(&self, logits: &CpuTensor, sampling: &mut CpuSampling) -> Result<()> {
        sampling::sample(logits, sampling)
    }

    fn read_sampled(&self, sampling: &CpuSampling, out: &mut SampleOutput) -> Result<()> {
        let src = &sampling.out;
        out.clear();
        out.tokens.extend_from_slice(&src.tokens);
        out.logprobs.extend_from_slice(&src.logprobs);
        out.top.extend_from_slice(&src.top);
        out.top_start.extend_from_slice(&src.top_start);
        Ok(())
    }

    fn from_host(&self, data: &[f32], rows: usize, out: &mut CpuTensor) -> Result<()> {
        if data.len() != rows * out.cols {
            return Err(crate::error::shape_err(
                "from_host",
                format!("{} values for {rows} rows of {}", data.len(), out.cols),
            ));
        }
        out.set_rows("from_host", rows)?;
        out.as_mut_slice().copy_from_slice(data);
        Ok(())
    }

    fn to_host(&self, x: &CpuTensor, out: &mut Vec<f32>) -> Result<(usize, usize)> {
        out.clear();
        out.extend_from_slice(x.as_slice());
        Ok((x.rows, x.cols))
    }

    fn run_step<E: Send>(
        &self,
        opts: StepOptions,
        step: impl FnOnce() -> std::result::Result<(), E> + Send,
    ) -> std::result::Result<(), E> {
        self.shared
            .invariant
            .store(opts.batch_invariant, Ordering::Relaxed);
        // From outside the pool, `scope` queues `step` to a worker and waits; inside it, the
        // ops' parallel loops split through work stealing and single-task loops run inline.
        rayon::scope(|_| step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_runs_on_a_compute_thread_with_its_options() {
        let backend = CpuBackend::new();
        assert!(rayon::current_thread_index().is_none());
        let mut seen = None;
        let opts = StepOptions {
            batch_invariant: true,
            graph_tokens: None,
        };
        backend
            .run_step(opts, || {
                seen = Some((rayon::current_thread_index(), backend.invariant()));
                Ok::<(), ()>(())
            })
            .unwrap();
        let (index, invariant) = seen.expect("the step ran");
        assert!(index.is_some(), "the step ran on the calling thread");
        assert!(invariant);
        let err = backend.run_step(StepOptions::default(), || Err::<(), _>("failed"));
        assert_eq!(err, Err("failed"));
        assert!(!backend.invariant());
    }

    #[test]
    fn memory_info_reads_the_host() {
        let m = CpuBackend::new().memory_info();
        assert!(m.total > 0 && m.free > 0 && m.free <= m.total, "{m:?}");
    }
}
