//! Host-memory buffers of the CPU backend: activations, weights, one step's batch and one
//! layer of paged KV cache.

use crate::error::{shape_err, BackendError, Result};
use crate::{BatchInput, BatchLimits, HostBytes, HostWeight, KvDtype, KvLayout, WeightFormat};

/// Activations `[rows, cols]`, row-major f32, in a buffer with room for more rows.
///
/// `data` never shrinks: its length is the largest row count the tensor has held (grown with
/// zeros, within the capacity reserved at allocation, so it never moves), and `rows` says how
/// many rows the current step uses. Reusing the same buffer step after step costs no
/// allocation and no re-zeroing.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    pub rows: usize,
    pub cols: usize,
    data: Vec<f32>,
}

impl PartialEq for CpuTensor {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.cols) == (other.rows, other.cols) && self.as_slice() == other.as_slice()
    }
}

impl CpuTensor {
    /// An empty tensor with room for `max_rows` rows (address space only: pages are committed
    /// as rows are first used).
    pub fn with_capacity(max_rows: usize, cols: usize) -> Self {
        Self {
            rows: 0,
            cols,
            data: Vec::with_capacity(max_rows * cols),
        }
    }

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

    /// Most rows this tensor can hold.
    pub fn max_rows(&self) -> usize {
        self.data.capacity().checked_div(self.cols).unwrap_or(0)
    }

    /// Makes the tensor `rows` rows long; new rows hold unspecified values.
    pub fn set_rows(&mut self, op: &'static str, rows: usize) -> Result<()> {
        let len = rows * self.cols;
        if len > self.data.capacity() {
            return Err(shape_err(
                op,
                format!(
                    "output of {rows} rows x {} columns exceeds its capacity of {} rows",
                    self.cols,
                    self.max_rows()
                ),
            ));
        }
        if len > self.data.len() {
            self.data.resize(len, 0.0);
        }
        self.rows = rows;
        Ok(())
    }

    /// Sets the shape to `[rows, cols]` (a workspace buffer reused with another width).
    pub fn reshape(&mut self, op: &'static str, rows: usize, cols: usize) -> Result<()> {
        let len = rows * cols;
        if len > self.data.capacity() {
            return Err(shape_err(
                op,
                format!(
                    "{rows}x{cols} exceeds a capacity of {}",
                    self.data.capacity()
                ),
            ));
        }
        if len > self.data.len() {
            self.data.resize(len, 0.0);
        }
        self.rows = rows;
        self.cols = cols;
        Ok(())
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.data[..self.rows * self.cols]
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data[..self.rows * self.cols]
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The values as a new vector (tests).
    pub fn to_vec(&self) -> Vec<f32> {
        self.as_slice().to_vec()
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
    /// `[cols]` f32 values of a one-row weight (norms, biases), converted once at load.
    vector: Option<Vec<f32>>,
    /// The matrix in the interleaved layout of the AVX-512 VNNI kernels, where they run.
    pub interleaved: Option<super::quant::vnni::Interleaved>,
}

impl CpuWeight {
    /// A weight for every op: a matrix the VNNI kernels run is interleaved for them.
    pub fn new(w: HostWeight) -> Result<Self> {
        Self::load(w, true)
    }

    /// A matrix whose rows are only looked up (an untied embedding): kept as stored.
    pub fn rows_only(w: HostWeight) -> Result<Self> {
        Self::load(w, false)
    }

    fn load(w: HostWeight, for_matmul: bool) -> Result<Self> {
        w.validate()?;
        let f32_data = (w.format == WeightFormat::F32).then(|| {
            w.bytes
                .as_slice()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        });
        let mut weight = Self {
            name: w.name,
            format: w.format,
            rows: w.rows,
            cols: w.cols,
            bytes: w.bytes,
            f32_data,
            vector: None,
            interleaved: None,
        };
        if weight.rows == 1 {
            weight.vector = Some(weight.to_f32_vec());
        } else if for_matmul && super::quant::vnni::available_for(weight.format) {
            weight.interleaved = Some(super::quant::vnni::repack::pack(
                weight.format,
                weight.bytes.as_slice(),
                weight.rows,
                weight.cols,
            ));
            // The kernels read the interleaved copy only; the file's pages need not stay
            // resident (an embedding lookup on a tied matrix faults its few rows back in).
            weight.bytes.release_resident();
        }
        Ok(weight)
    }

    /// The f32 values of a one-row weight (norm scales, biases).
    pub fn vector(&self) -> Option<&[f32]> {
        self.vector.as_deref()
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

/// The step's batch on the CPU: a copy of the host batch with a per-token sequence index,
/// refilled in place every step.
pub struct CpuBatch {
    pub input: BatchInput,
    /// `[num_tokens]` index of the sequence each token belongs to.
    pub token_seq: Vec<u32>,
    pub limits: BatchLimits,
}

impl CpuBatch {
    pub fn with_limits(limits: BatchLimits, block_size: usize) -> Self {
        let mut input = BatchInput::new(block_size);
        input.input_ids.reserve(limits.max_tokens);
        input.positions.reserve(limits.max_tokens);
        input.slot_mapping.reserve(limits.max_tokens);
        input.query_start_loc.reserve(limits.max_seqs + 1);
        input.seq_lens.reserve(limits.max_seqs);
        input.block_tables.reserve(limits.max_blocks);
        input.block_table_start.reserve(limits.max_seqs + 1);
        input.logits_indices.reserve(limits.max_tokens);
        input.prev_sampled.reserve(limits.max_seqs);
        Self {
            input,
            token_seq: Vec::with_capacity(limits.max_tokens),
            limits,
        }
    }

    /// A batch holding `input` (tests and one-off steps).
    pub fn new(input: &BatchInput) -> Self {
        let mut b = Self::with_limits(
            BatchLimits {
                max_tokens: input.num_tokens(),
                max_seqs: input.num_seqs(),
                max_blocks: input.block_tables.len(),
            },
            input.block_size,
        );
        b.fill(input).expect("limits taken from the batch");
        b
    }

    /// Copies `src` in, keeping capacity.
    pub fn fill(&mut self, src: &BatchInput) -> Result<()> {
        let l = self.limits;
        if src.num_tokens() > l.max_tokens
            || src.num_seqs() > l.max_seqs
            || src.block_tables.len() > l.max_blocks
        {
            return Err(BackendError::Batch(format!(
                "{} tokens, {} sequences and {} blocks exceed the step limits {l:?}",
                src.num_tokens(),
                src.num_seqs(),
                src.block_tables.len()
            )));
        }
        let d = &mut self.input;
        let copy = |dst: &mut Vec<u32>, s: &[u32]| {
            dst.clear();
            dst.extend_from_slice(s);
        };
        copy(&mut d.input_ids, &src.input_ids);
        copy(&mut d.positions, &src.positions);
        copy(&mut d.slot_mapping, &src.slot_mapping);
        copy(&mut d.query_start_loc, &src.query_start_loc);
        copy(&mut d.seq_lens, &src.seq_lens);
        copy(&mut d.block_tables, &src.block_tables);
        copy(&mut d.block_table_start, &src.block_table_start);
        copy(&mut d.logits_indices, &src.logits_indices);
        d.prev_sampled.clear();
        d.prev_sampled.extend_from_slice(&src.prev_sampled);
        d.kv_copies.clear();
        d.kv_copies.extend_from_slice(&src.kv_copies);
        d.block_size = src.block_size;
        self.token_seq.clear();
        for s in 0..d.num_seqs() {
            let n = d.query_start_loc[s + 1].saturating_sub(d.query_start_loc[s]);
            self.token_seq
                .extend(std::iter::repeat_n(s as u32, n as usize));
        }
        Ok(())
    }
}

/// Storage of K or V for one layer, in the cache's element type.
pub enum KvStore {
    F32(Vec<f32>),
    /// IEEE half precision bits.
    F16(Vec<half::f16>),
}

impl KvStore {
    /// Zeroed storage from the allocator's zeroed pages (`calloc`): a large cache costs memory
    /// only as its blocks are first written, not the whole `--kv-cache-memory` at start-up.
    fn zeros(dtype: KvDtype, n: usize) -> Self {
        match dtype {
            // `vec![0.0; n]` allocates zeroed memory for primitive zeros.
            KvDtype::F32 => KvStore::F32(vec![0.0; n]),
            KvDtype::F16 => {
                let mut bits = std::mem::ManuallyDrop::new(vec![0u16; n]);
                let (ptr, len, cap) = (bits.as_mut_ptr(), bits.len(), bits.capacity());
                // SAFETY: `f16` is a `repr(transparent)` `u16`, so the allocation's layout and
                // every bit pattern (zero here) are valid for it; ownership moves to the new Vec.
                KvStore::F16(unsafe { Vec::from_raw_parts(ptr as *mut half::f16, len, cap) })
            }
        }
    }

    /// Copies `len` values from element offset `src` to `dst` (the ranges may not overlap).
    pub fn copy_within(&mut self, src: usize, dst: usize, len: usize) {
        match self {
            KvStore::F32(v) => v.copy_within(src..src + len, dst),
            KvStore::F16(v) => v.copy_within(src..src + len, dst),
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

    /// An embedding loaded for lookups only keeps no interleaved copy and gathers the same
    /// rows as one loaded for every op (which the VNNI kernels may have repacked).
    #[test]
    fn a_rows_only_embedding_gathers_the_same_rows_without_a_repacked_copy() {
        let (rows, cols) = (40, 64);
        let vals: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        for format in [WeightFormat::Q8_0, WeightFormat::Q5_0, WeightFormat::F16] {
            let rb = format.row_bytes(cols);
            let mut bytes = vec![0u8; rows * rb];
            for r in 0..rows {
                super::super::quant::quantize_row(
                    format,
                    &vals[r * cols..(r + 1) * cols],
                    &mut bytes[r * rb..(r + 1) * rb],
                );
            }
            let host = || HostWeight {
                name: "embed".into(),
                format,
                rows,
                cols,
                bytes: HostBytes::from_vec(bytes.clone()),
            };
            let full = CpuWeight::new(host()).unwrap();
            let lookup = CpuWeight::rows_only(host()).unwrap();
            assert!(lookup.interleaved.is_none(), "{format:?}");
            let ids = [0u32, 39, 7, 7, 21];
            let mut a = CpuTensor::with_capacity(ids.len(), cols);
            let mut b = CpuTensor::with_capacity(ids.len(), cols);
            super::super::ops::embedding(&full, &ids, &mut a).unwrap();
            super::super::ops::embedding(&lookup, &ids, &mut b).unwrap();
            assert_eq!(a.as_slice(), b.as_slice(), "{format:?}");
        }
    }

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
}
