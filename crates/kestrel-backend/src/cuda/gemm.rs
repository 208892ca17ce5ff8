//! Matrix products through cuBLAS (on the launcher's stream, fingerprinted like kernels): `out [n, m] = x [n, k] · wᵀ` with `w [m, k]`.
//!
//! Row-major `x` is column-major `xᵀ [k, n]`, and row-major `w` column-major `wᵀ [k, m]`, so
//! the product is cuBLAS's column-major `outᵀ [m, n] = (wᵀ)ᵀ · xᵀ`: `gemm(T, N, m, n, k)`.
//! f32 weights multiply f32 activations in f32 (no TF32: the parity tests compare with
//! `transformers` in f32); f16 and bf16 weights multiply the activations cast to the same
//! type, accumulating in f32 into f32 outputs. The cast goes to a backend-wide half buffer
//! sized at start-up for the largest activation tensor.

use std::ffi::c_void;

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{result, CudaBlas};

use super::buffers::{DT_F16, DT_F32};
use super::launch::Launcher;
use crate::error::{BackendError, Result};

fn data_type(dtype: i32) -> cudaDataType {
    match dtype {
        DT_F32 => cudaDataType::CUDA_R_32F,
        DT_F16 => cudaDataType::CUDA_R_16F,
        _ => cudaDataType::CUDA_R_16BF,
    }
}

/// One GEMM's operands: device addresses and sizes.
pub struct GemmArgs {
    /// `[m, k]` in `w_dtype`.
    pub w: u64,
    pub w_dtype: i32,
    /// `[n, k]` in `w_dtype` (the f32 activations, or their half cast).
    pub x: u64,
    /// `[n, m]` f32.
    pub out: u64,
    pub n: usize,
    pub m: usize,
    pub k: usize,
}

/// Issues `out = x · wᵀ` on the launcher's stream (or fingerprints it).
pub fn gemm(blas: &CudaBlas, launcher: &Launcher, a: &GemmArgs) -> Result<()> {
    if a.n == 0 || a.m == 0 {
        return Ok(());
    }
    let parts = [
        a.w,
        a.w_dtype as u64,
        a.x,
        a.out,
        a.n as u64,
        a.m as u64,
        a.k as u64,
    ];
    launcher.note("gemm", &parts);
    let (alpha, beta) = (1.0f32, 0.0f32);
    let t = data_type(a.w_dtype);
    // SAFETY: `w`, `x` and `out` are live device buffers of at least `m·k`, `n·k` and `n·m`
    // elements of the given types (checked by the op), and the handle is bound to the
    // launcher's stream.
    unsafe {
        result::gemm_ex(
            *blas.handle(),
            cublasOperation_t::CUBLAS_OP_T,
            cublasOperation_t::CUBLAS_OP_N,
            a.m as i32,
            a.n as i32,
            a.k as i32,
            &alpha as *const f32 as *const c_void,
            a.w as *const c_void,
            t,
            a.k as i32,
            a.x as *const c_void,
            t,
            a.k as i32,
            &beta as *const f32 as *const c_void,
            a.out as *mut c_void,
            cudaDataType::CUDA_R_32F,
            a.m as i32,
            cublasComputeType_t::CUBLAS_COMPUTE_32F,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
    .map_err(|e| {
        BackendError::Device(format!(
            "cuBLAS GEMM [{}, {}] x [{}, {}]ᵀ: {e:?}",
            a.n, a.k, a.m, a.k
        ))
    })
}
