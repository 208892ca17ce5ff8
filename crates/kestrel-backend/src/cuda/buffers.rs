//! Device memory of the CUDA backend: activations ([`CudaTensor`], f32 `[rows ≤ capacity,
//! cols]`), weights ([`CudaWeight`], f32, f16 or bf16 `[rows, cols]`) and one layer of the
//! paged KV cache ([`CudaKvLayer`], f32 or f16 `[num_blocks, block_size, num_kv_heads,
//! head_dim]` for K and for V). All of it is allocated at start-up; a step only reads and
//! writes it.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::launch::ptr;
use crate::cpu::quant::dequantize_row;
use crate::error::{BackendError, Result};
use crate::{HostWeight, KvDtype, KvLayout, WeightFormat};

/// Element type codes shared with `kernels.cu` (`DT_*`).
pub const DT_F32: i32 = 0;
pub const DT_F16: i32 = 1;
pub const DT_BF16: i32 = 2;

fn dev_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("{what}: {e}"))
}

/// `n` zeroed elements (at least one, so every buffer has an address).
pub fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    n: usize,
    what: &str,
) -> Result<CudaSlice<T>> {
    stream
        .alloc_zeros::<T>(n.max(1))
        .map_err(|e| dev_err(&format!("allocating {what} ({n} elements)"), e))
}

/// Activations, f32 `[rows, cols]` in a buffer of `capacity` rows.
pub struct CudaTensor {
    pub data: CudaSlice<f32>,
    pub rows: usize,
    pub cols: usize,
    pub capacity: usize,
}

impl CudaTensor {
    pub fn new(stream: &Arc<CudaStream>, capacity: usize, cols: usize) -> Result<Self> {
        Ok(Self {
            data: zeros(stream, capacity * cols, "an activation tensor")?,
            rows: 0,
            cols,
            capacity,
        })
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn ptr(&self, stream: &CudaStream) -> u64 {
        ptr(&self.data, stream)
    }

    /// Sets the row count of an op's output (checked against the capacity and `cols`).
    pub fn set_rows(&mut self, op: &'static str, rows: usize, cols: usize) -> Result<()> {
        if rows > self.capacity || cols != self.cols {
            return Err(crate::error::shape_err(
                op,
                format!(
                    "output [{rows}, {cols}] does not fit a tensor of [{}, {}]",
                    self.capacity, self.cols
                ),
            ));
        }
        self.rows = rows;
        Ok(())
    }
}

/// A weight on the device in a floating-point type cuBLAS multiplies. Quantized GGUF weights
/// are dequantized to f16 at load (their scales are f16).
pub struct CudaWeight {
    pub data: CudaSlice<u8>,
    /// `DT_F32`, `DT_F16` or `DT_BF16`.
    pub dtype: i32,
    pub rows: usize,
    pub cols: usize,
}

impl CudaWeight {
    pub fn load(stream: &Arc<CudaStream>, w: HostWeight) -> Result<Self> {
        w.validate()?;
        let (dtype, bytes): (i32, std::borrow::Cow<[u8]>) = match w.format {
            WeightFormat::F32 => (DT_F32, w.bytes.as_slice().into()),
            WeightFormat::F16 => (DT_F16, w.bytes.as_slice().into()),
            WeightFormat::BF16 => (DT_BF16, w.bytes.as_slice().into()),
            fmt => {
                let row_bytes = fmt.row_bytes(w.cols);
                let mut row = vec![0.0f32; w.cols];
                let mut out = Vec::with_capacity(w.rows * w.cols * 2);
                for src in w.bytes.as_slice().chunks_exact(row_bytes) {
                    dequantize_row(fmt, src, &mut row);
                    out.extend(
                        row.iter()
                            .flat_map(|&x| half::f16::from_f32(x).to_bits().to_le_bytes()),
                    );
                }
                (DT_F16, out.into())
            }
        };
        let data = stream
            .clone_htod(&bytes[..])
            .map_err(|e| dev_err(&format!("uploading weight `{}`", w.name), e))?;
        Ok(Self {
            data,
            dtype,
            rows: w.rows,
            cols: w.cols,
        })
    }

    pub fn ptr(&self, stream: &CudaStream) -> u64 {
        ptr(&self.data, stream)
    }

    /// Whether it is a vector `[1, cols]` (norm weights, biases).
    pub fn is_vector(&self) -> bool {
        self.rows == 1
    }
}

/// K and V of one layer.
pub struct CudaKvLayer {
    pub k: CudaSlice<u8>,
    pub v: CudaSlice<u8>,
    pub layout: KvLayout,
}

impl CudaKvLayer {
    pub fn zeros(stream: &Arc<CudaStream>, layout: KvLayout) -> Result<Self> {
        let bytes = layout.bytes_per_layer() / 2;
        Ok(Self {
            k: zeros(stream, bytes, "the K cache")?,
            v: zeros(stream, bytes, "the V cache")?,
            layout,
        })
    }

    /// The element type code of `kernels.cu`.
    pub fn dtype(&self) -> i32 {
        match self.layout.dtype {
            KvDtype::F32 => DT_F32,
            KvDtype::F16 => DT_F16,
        }
    }
}
