//! Element-wise and row-wise CPU ops: embedding gather, RMSNorm (whole row or per head),
//! bias, NeoX rotary embedding, SiLU·mul and residual add. Rows are split across threads.

use rayon::prelude::*;

use super::quant::dequantize_row;
use super::tensor::{CpuTensor, CpuWeight};
use crate::error::{shape_err, BackendError, Result};

/// Rows of `table [vocab, hidden]` at `ids` → `[ids.len(), hidden]`, dequantized.
pub fn embedding(table: &CpuWeight, ids: &[u32]) -> Result<CpuTensor> {
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
        return Err(BackendError::Batch(format!(
            "token id {bad} outside the vocabulary of {}",
            table.rows
        )));
    }
    let mut out = CpuTensor::zeros(ids.len(), table.cols);
    out.data
        .par_chunks_mut(table.cols)
        .zip(ids.par_iter())
        .for_each(|(dst, &id)| match &table.f32_data {
            Some(v) => {
                dst.copy_from_slice(&v[id as usize * table.cols..(id as usize + 1) * table.cols])
            }
            None => dequantize_row(table.format, table.row_bytes(id as usize), dst),
        });
    Ok(out)
}

/// RMSNorm over groups of `weight.cols` values, computed in f32 as `transformers` does:
/// `x * rsqrt(mean(x²) + eps) * weight`.
pub fn rms_norm(x: &CpuTensor, weight: &CpuWeight, eps: f32) -> Result<CpuTensor> {
    let g = weight.cols;
    if weight.rows != 1 || g == 0 || x.cols % g != 0 {
        return Err(shape_err(
            "rms_norm",
            format!(
                "x [{}, {}] with weight [{}, {g}]",
                x.rows, x.cols, weight.rows
            ),
        ));
    }
    let w = weight.to_f32_vec();
    let mut out = x.par_clone();
    out.data.par_chunks_mut(x.cols).for_each(|row| {
        for grp in row.chunks_exact_mut(g) {
            let ss: f32 = grp.iter().map(|v| v * v).sum::<f32>() / g as f32;
            let inv = 1.0 / (ss + eps).sqrt();
            for (v, wi) in grp.iter_mut().zip(&w) {
                *v = *v * inv * wi;
            }
        }
    });
    Ok(out)
}

/// `x [n, m] += bias` on every row.
pub fn add_bias(x: &mut CpuTensor, bias: &CpuWeight) -> Result<()> {
    if bias.rows * bias.cols != x.cols {
        return Err(shape_err(
            "add_bias",
            format!("bias of {} for {} columns", bias.rows * bias.cols, x.cols),
        ));
    }
    let b = bias.to_f32_vec();
    x.data
        .par_chunks_mut(x.cols)
        .for_each(|row| row.iter_mut().zip(&b).for_each(|(v, bi)| *v += bi));
    Ok(())
}

/// Rotary embedding in the NeoX (GPT-J "rotate half") layout used by Qwen: within each head,
/// element `i` pairs with `i + head_dim/2`, rotated by `pos * theta^(-2i/head_dim)`.
pub fn rope_neox(x: &mut CpuTensor, positions: &[u32], head_dim: usize, theta: f64) -> Result<()> {
    if positions.len() != x.rows || head_dim % 2 != 0 || x.cols % head_dim != 0 {
        return Err(shape_err(
            "rope",
            format!(
                "x [{}, {}], {} positions, head_dim {head_dim}",
                x.rows,
                x.cols,
                positions.len()
            ),
        ));
    }
    let half = head_dim / 2;
    let inv_freq: Vec<f64> = (0..half)
        .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
        .collect();
    let cols = x.cols;
    x.data
        .par_chunks_mut(cols)
        .zip(positions.par_iter())
        .for_each(|(row, &pos)| {
            let (cos, sin): (Vec<f32>, Vec<f32>) = inv_freq
                .iter()
                .map(|f| {
                    let a = pos as f64 * f;
                    (a.cos() as f32, a.sin() as f32)
                })
                .unzip();
            for head in row.chunks_exact_mut(head_dim) {
                let (lo, hi) = head.split_at_mut(half);
                for i in 0..half {
                    let (a, b) = (lo[i], hi[i]);
                    lo[i] = a * cos[i] - b * sin[i];
                    hi[i] = b * cos[i] + a * sin[i];
                }
            }
        });
    Ok(())
}

/// `silu(gate) * up`.
pub fn silu_mul(gate: &CpuTensor, up: &CpuTensor) -> Result<CpuTensor> {
    if gate.rows != up.rows || gate.cols != up.cols {
        return Err(shape_err(
            "silu_mul",
            format!(
                "[{}, {}] vs [{}, {}]",
                gate.rows, gate.cols, up.rows, up.cols
            ),
        ));
    }
    let silu_mul = super::simd::kernels().silu_mul;
    let mut out = gate.par_clone();
    out.data
        .par_chunks_mut(4096)
        .zip(up.data.par_chunks(4096))
        .for_each(|(g, u)| silu_mul(g, u));
    Ok(out)
}

/// `x += y`.
pub fn add_assign(x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
    if x.rows != y.rows || x.cols != y.cols {
        return Err(shape_err(
            "add_assign",
            format!("[{}, {}] vs [{}, {}]", x.rows, x.cols, y.rows, y.cols),
        ));
    }
    x.data
        .par_chunks_mut(4096)
        .zip(y.data.par_chunks(4096))
        .for_each(|(a, b)| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        });
    Ok(())
}

/// f32 dot product with eight independent accumulators, so it vectorizes.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}
