//! Host-memory buffers of the CPU backend: activations, weights, one step's batch and one
//! layer of paged KV cache.

use crate::error::{shape_err, BackendError, Result};
use crate::{BatchInput, HostBytes, HostWeight, KvDtype, KvLayout, WeightFormat};

/// Activations `[rows, cols]`, row-major f32.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl CpuTensor {
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(shape_err(
                "CpuTensor::from_vec",
                format!("{} values for {rows}x{cols}", data.len()),
            ));
        }
        Ok(Self { rows, cols, data })
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// A copy made by the thread pool: ops that compute in place on a copy of their input
    /// would otherwise spend a serial `memcpy` of megabytes per call while the pool waits.
    pub fn par_clone(&self) -> Self {
        use rayon::prelude::*;
        let mut data = Vec::with_capacity(self.data.len());
        self.data.par_iter().copied().collect_into_vec(&mut data);
        Self {
            rows: self.rows,
            cols: self.cols,
            data,
        }
    }
}

/// An output buffer that the tasks of one parallel op write through, each to its own disjoint
/// elements (a column run of a matmul, one head of one token in attention).
pub(super) struct SharedOut(pub *mut f32);
// SAFETY: users guarantee that tasks write disjoint elements and that the buffer outlives them.
unsafe impl Sync for SharedOut {}

/// A weight in its storage format. F32 weights are copied out of the file (alignment is not
/// guaranteed there); every other format is used in place.
pub struct CpuWeight {
    pub name: String,
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub bytes: HostBytes,
    /// `[rows * cols]` for F32 weights only.
    pub f32_data: Option<Vec<f32>>,
}

impl CpuWeight {
    pub fn new(w: HostWeight) -> Result<Self> {
        w.validate()?;
        let f32_data = (w.format == WeightFormat::F32).then(|| {
            w.bytes
                .as_slice()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        });
        Ok(Self {
            name: w.name,
            format: w.format,
            rows: w.rows,
            cols: w.cols,
            bytes: w.bytes,
            f32_data,
        })
    }

    /// All rows in storage format, from the aligned f32 copy for F32 weights.
    pub fn data(&self) -> &[u8] {
        match &self.f32_data {
            Some(v) => bytemuck::cast_slice(v),
            None => self.bytes.as_slice(),
        }
    }

    /// Bytes of row `i` in storage format.
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        let rb = self.format.row_bytes(self.cols);
        &self.bytes.as_slice()[i * rb..(i + 1) * rb]
    }

    /// The weight as f32 values when it is a small vector (norms, biases).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.f32_data {
            Some(v) => v.clone(),
            None => {
                let mut out = vec![0.0; self.rows * self.cols];
                for (i, dst) in out.chunks_exact_mut(self.cols).enumerate() {
                    super::quant::dequantize_row(self.format, self.row_bytes(i), dst);
                }
                out
            }
        }
    }
}

/// One step's batch with a per-token sequence index precomputed.
pub struct CpuBatch {
    pub input: BatchInput,
    /// `[num_tokens]` index of the sequence each token belongs to.
    pub token_seq: Vec<u32>,
}

impl CpuBatch {
    pub fn new(input: &BatchInput) -> Self {
        let mut token_seq = Vec::with_capacity(input.num_tokens());
        for s in 0..input.num_seqs() {
            let n = input.query_start_loc[s + 1].saturating_sub(input.query_start_loc[s]);
            token_seq.extend(std::iter::repeat_n(s as u32, n as usize));
        }
        Self {
            input: input.clone(),
            token_seq,
        }
    }
}

/// Storage of K or V for one layer, in the cache's element type.
pub enum KvStore {
    F32(Vec<f32>),
    /// IEEE half precision bits.
    F16(Vec<half::f16>),
}

impl KvStore {
    fn zeros(dtype: KvDtype, n: usize) -> Self {
        match dtype {
            KvDtype::F32 => KvStore::F32(vec![0.0; n]),
            KvDtype::F16 => KvStore::F16(vec![half::f16::ZERO; n]),
        }
    }

    /// Writes `src` at element offset `at`, rounding to the storage type (to nearest even,
    /// eight values per F16C instruction where the CPU has it).
    pub fn write(&mut self, at: usize, src: &[f32]) {
        use half::slice::HalfFloatSliceExt;
        match self {
            KvStore::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            KvStore::F16(v) => v[at..at + src.len()].convert_from_f32_slice(src),
        }
    }
}

/// K and V of one layer: `[num_blocks * block_size (slots), num_kv_heads, head_dim]` each.
pub struct CpuKvLayer {
    pub layout: KvLayout,
    pub k: KvStore,
    pub v: KvStore,
}

impl CpuKvLayer {
    pub fn zeros(layout: KvLayout) -> Self {
        let n = layout.num_blocks * layout.block_size * layout.num_kv_heads * layout.head_dim;
        Self {
            layout,
            k: KvStore::zeros(layout.dtype, n),
            v: KvStore::zeros(layout.dtype, n),
        }
    }

    pub fn num_slots(&self) -> usize {
        self.layout.num_blocks * self.layout.block_size
    }

    /// Values per slot (`num_kv_heads * head_dim`).
    pub fn slot_width(&self) -> usize {
        self.layout.num_kv_heads * self.layout.head_dim
    }
}

pub(crate) fn check_slot(slot: usize, num_slots: usize) -> Result<()> {
    if slot >= num_slots {
        return Err(BackendError::Batch(format!(
            "slot {slot} outside the cache of {num_slots}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_cache_writes_round_like_the_scalar_conversion() {
        // Ties, subnormals, overflow, signed zero and an odd length (vector body + tail).
        let src: Vec<f32> = [
            1.0 + 1.0 / 2048.0,
            1.0 + 3.0 / 2048.0,
            -2.5e-7,
            6.0e-8,
            70000.0,
            -0.0,
            0.1,
        ]
        .into_iter()
        .chain((0..20).map(|i| (i as f32 - 9.5) * 0.37))
        .collect();
        let mut store = KvStore::zeros(KvDtype::F16, src.len() + 3);
        store.write(3, &src);
        let KvStore::F16(v) = &store else {
            unreachable!()
        };
        assert!(v[..3].iter().all(|h| h.to_bits() == 0));
        for (h, s) in v[3..].iter().zip(&src) {
            assert_eq!(h.to_bits(), half::f16::from_f32(*s).to_bits(), "value {s}");
        }
    }

    #[test]
    fn par_clone_is_a_copy() {
        let x = CpuTensor::from_vec(3, 5, (0..15).map(|i| i as f32 * 0.5).collect()).unwrap();
        assert_eq!(x.par_clone(), x);
    }
}
