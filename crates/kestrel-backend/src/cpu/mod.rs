//! The CPU backend: f32 activations in host memory, weights in their storage format (often
//! pointing into a memory-mapped file), and every op split across the rayon thread pool.
//!
//! Quantized weights are multiplied the way ggml's CPU backend does it: each activation row is
//! converted once to the weight's dot-product format (q8_0, q8_1, q8_K) and integer block dot
//! products are scaled in f32, so greedy decoding follows llama.cpp on the same GGUF file.
//! F32/F16/BF16 weights go through a register-blocked f32 GEMM (16-bit weights widened in
//! registers) with f32 activations, which keeps parity with `transformers` running in f32.

mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_tiled;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_packed;
pub mod isa;
mod matmul;
mod ops;
pub mod quant;
mod simd;
mod tensor;

use crate::error::{shape_err, Result};
use crate::{AttnShape, Backend, BatchInput, HostWeight, KvLayout};

pub use tensor::{CpuBatch, CpuKvLayer, CpuTensor, CpuWeight, KvStore};

/// The CPU backend. Threads come from rayon's global pool (`RAYON_NUM_THREADS`).
#[derive(Debug, Default, Clone)]
pub struct CpuBackend;

impl CpuBackend {
    pub fn new() -> Self {
        Self
    }
}

impl Backend for CpuBackend {
    type Tensor = CpuTensor;
    type Weight = CpuWeight;
    type Batch = CpuBatch;
    type KvLayer = CpuKvLayer;

    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {} kernels)",
            rayon::current_num_threads(),
            isa::isa().name()
        )
    }

    fn load_weight(&self, weight: HostWeight) -> Result<CpuWeight> {
        CpuWeight::new(weight)
    }

    fn prepare_batch(&self, batch: &BatchInput) -> Result<CpuBatch> {
        Ok(CpuBatch::new(batch))
    }

    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<CpuKvLayer> {
        Ok(CpuKvLayer::zeros(layout))
    }

    fn to_host(&self, x: &CpuTensor) -> Result<(usize, usize, Vec<f32>)> {
        Ok((x.rows, x.cols, x.data.clone()))
    }

    fn embedding(&self, table: &CpuWeight, batch: &CpuBatch) -> Result<CpuTensor> {
        ops::embedding(table, &batch.input.input_ids)
    }

    fn rms_norm(&self, x: &CpuTensor, weight: &CpuWeight, eps: f32) -> Result<CpuTensor> {
        ops::rms_norm(x, weight, eps)
    }

    fn matmul(&self, x: &CpuTensor, w: &CpuWeight) -> Result<CpuTensor> {
        matmul::matmul(x, w)
    }

    fn matmul_many(&self, x: &CpuTensor, ws: &[&CpuWeight]) -> Result<Vec<CpuTensor>> {
        matmul::matmul_many(x, ws)
    }

    fn add_bias(&self, x: &mut CpuTensor, bias: &CpuWeight) -> Result<()> {
        ops::add_bias(x, bias)
    }

    fn rope(&self, x: &mut CpuTensor, batch: &CpuBatch, head_dim: usize, theta: f64) -> Result<()> {
        ops::rope_neox(x, &batch.input.positions, head_dim, theta)
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

    fn attention(
        &self,
        q: &CpuTensor,
        cache: &CpuKvLayer,
        batch: &CpuBatch,
        shape: AttnShape,
    ) -> Result<CpuTensor> {
        attention::paged_attention(q, cache, batch, shape)
    }

    fn silu_mul(&self, gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
        ops::silu_mul(gate, up)
    }

    fn add_assign(&self, x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
        ops::add_assign(x, y)
    }

    fn gather_logit_rows(&self, x: &CpuTensor, batch: &CpuBatch) -> Result<CpuTensor> {
        let idx = &batch.input.logits_indices;
        let mut out = CpuTensor::zeros(idx.len(), x.cols);
        for (dst, &i) in out.data.chunks_exact_mut(x.cols).zip(idx) {
            let i = i as usize;
            if i >= x.rows {
                return Err(shape_err(
                    "gather_logit_rows",
                    format!("row {i} of {}", x.rows),
                ));
            }
            dst.copy_from_slice(x.row(i));
        }
        Ok(out)
    }

    fn run_step<R: Send>(&self, step: impl FnOnce() -> R + Send) -> R {
        // From outside the pool, `scope` queues `step` to a worker and waits; inside it, the
        // ops' parallel loops split through work stealing and single-task loops run inline.
        rayon::scope(|_| step())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_runs_on_a_compute_thread_and_returns_its_value() {
        let backend = CpuBackend::new();
        assert!(rayon::current_thread_index().is_none());
        let mut touched = Vec::new();
        let (index, sum) = backend.run_step(|| {
            touched.push(1);
            (rayon::current_thread_index(), (1..=10).sum::<u32>())
        });
        assert!(index.is_some(), "the step ran on the calling thread");
        assert_eq!((sum, touched), (55, vec![1]));
    }
}
