//! Element-wise and row-wise CPU ops: embedding gather, RMSNorm (whole row or per head),
//! bias, NeoX rotary embedding (default or per-pair frequencies), SiLU·mul, residual add and the logit-row gather. Rows are
//! split across threads; every op writes into a tensor it is given and allocates nothing.

use rayon::prelude::*;

use super::quant::dequantize_row;
use super::tensor::{CpuTensor, CpuWeight};
use crate::error::{shape_err, BackendError, Result};
use crate::Rope;

/// Elements per parallel task of the element-wise ops.
const CHUNK: usize = 4096;
/// Largest head size of [`rope_neox`] (its cos/sin tables live on the stack).
const MAX_ROPE_HEAD_DIM: usize = 1024;

/// Rows of `table [vocab, hidden]` at `ids` → `out [ids.len(), hidden]`, dequantized.
pub fn embedding(table: &CpuWeight, ids: &[u32], out: &mut CpuTensor) -> Result<()> {
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= table.rows) {
        return Err(BackendError::Batch(format!(
            "token id {bad} outside the vocabulary of {}",
            table.rows
        )));
    }
    check_cols("embedding", out, table.cols)?;
    out.set_rows("embedding", ids.len())?;
    out.as_mut_slice()
        .par_chunks_mut(table.cols)
        .zip(ids.par_iter())
        .for_each(|(dst, &id)| match &table.f32_data {
            Some(v) => {
                dst.copy_from_slice(&v[id as usize * table.cols..(id as usize + 1) * table.cols])
            }
            None => dequantize_row(table.format, table.row_bytes(id as usize), dst),
        });
    Ok(())
}

fn check_cols(op: &'static str, t: &CpuTensor, cols: usize) -> Result<()> {
    if t.cols != cols {
        return Err(shape_err(
            op,
            format!("output has {} columns, expected {cols}", t.cols),
        ));
    }
    Ok(())
}

fn norm_weight<'w>(x: &CpuTensor, weight: &'w CpuWeight) -> Result<&'w [f32]> {
    let g = weight.cols;
    match weight.vector() {
        Some(w) if g > 0 && x.cols % g == 0 => Ok(w),
        _ => Err(shape_err(
            "rms_norm",
            format!(
                "x [{}, {}] with weight [{}, {g}]",
                x.rows, x.cols, weight.rows
            ),
        )),
    }
}

/// RMSNorm of one group, computed in f32 as `transformers` does:
/// `x * rsqrt(mean(x²) + eps) * weight`.
#[inline]
fn norm_group(src: &[f32], w: &[f32], eps: f32, dst: &mut [f32]) {
    let ss: f32 = src.iter().map(|v| v * v).sum::<f32>() / src.len() as f32;
    let inv = 1.0 / (ss + eps).sqrt();
    for ((d, v), wi) in dst.iter_mut().zip(src).zip(w) {
        *d = *v * inv * wi;
    }
}

/// RMSNorm over groups of `weight.cols` values → `out`.
pub fn rms_norm(x: &CpuTensor, weight: &CpuWeight, eps: f32, out: &mut CpuTensor) -> Result<()> {
    let w = norm_weight(x, weight)?;
    check_cols("rms_norm", out, x.cols)?;
    out.set_rows("rms_norm", x.rows)?;
    let g = w.len();
    out.as_mut_slice()
        .par_chunks_mut(x.cols)
        .zip(x.as_slice().par_chunks(x.cols))
        .for_each(|(dst, src)| {
            for (d, s) in dst.chunks_exact_mut(g).zip(src.chunks_exact(g)) {
                norm_group(s, w, eps, d);
            }
        });
    Ok(())
}

/// RMSNorm in place (per-head q/k norms).
pub fn rms_norm_inplace(x: &mut CpuTensor, weight: &CpuWeight, eps: f32) -> Result<()> {
    let w = norm_weight(x, weight)?;
    let (g, cols) = (w.len(), x.cols);
    x.as_mut_slice().par_chunks_mut(cols).for_each(|row| {
        for grp in row.chunks_exact_mut(g) {
            // The sum of squares is taken before any element is overwritten.
            let ss: f32 = grp.iter().map(|v| v * v).sum::<f32>() / g as f32;
            let inv = 1.0 / (ss + eps).sqrt();
            for (v, wi) in grp.iter_mut().zip(w) {
                *v = *v * inv * wi;
            }
        }
    });
    Ok(())
}

/// `x [n, m] += bias` on every row.
pub fn add_bias(x: &mut CpuTensor, bias: &CpuWeight) -> Result<()> {
    let b = match bias.vector() {
        Some(b) if b.len() == x.cols => b,
        _ => {
            return Err(shape_err(
                "add_bias",
                format!("bias of {} for {} columns", bias.rows * bias.cols, x.cols),
            ))
        }
    };
    let cols = x.cols;
    x.as_mut_slice()
        .par_chunks_mut(cols)
        .for_each(|row| row.iter_mut().zip(b).for_each(|(v, bi)| *v += bi));
    Ok(())
}

/// Rotary embedding in the NeoX (GPT-J "rotate half") layout used by Qwen, Llama and Phi-3
/// checkpoints: within each head, element `i` pairs with `i + head_dim/2`, rotated by
/// `pos * inv_freq[i]` with `inv_freq[i] = theta^(-2i/head_dim)` unless the model gives its own
/// (scaled RoPE); cos and sin are multiplied by `rope.scale`. Angles are computed in f64.
pub fn rope_neox(x: &mut CpuTensor, positions: &[u32], rope: Rope<'_, CpuWeight>) -> Result<()> {
    let head_dim = rope.head_dim;
    if positions.len() != x.rows
        || head_dim % 2 != 0
        || head_dim > MAX_ROPE_HEAD_DIM
        || x.cols % head_dim != 0
    {
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
    let table = match rope.inv_freq {
        None => None,
        Some(w) => match w.vector() {
            Some(v) if v.len() == half => Some(v),
            _ => {
                return Err(shape_err(
                    "rope",
                    format!(
                        "inverse frequencies [{}, {}] for head_dim {head_dim}",
                        w.rows, w.cols
                    ),
                ))
            }
        },
    };
    let (theta, scale) = (rope.theta, rope.scale);
    let cols = x.cols;
    x.as_mut_slice()
        .par_chunks_mut(cols)
        .zip(positions.par_iter())
        .for_each(|(row, &pos)| {
            let mut cos = [0.0f32; MAX_ROPE_HEAD_DIM / 2];
            let mut sin = [0.0f32; MAX_ROPE_HEAD_DIM / 2];
            for i in 0..half {
                let inv_freq = match table {
                    Some(t) => t[i] as f64,
                    None => theta.powf(-((2 * i) as f64) / head_dim as f64),
                };
                let a = pos as f64 * inv_freq;
                cos[i] = a.cos() as f32 * scale;
                sin[i] = a.sin() as f32 * scale;
            }
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

/// `out = silu(gate) * up`.
pub fn silu_mul(gate: &CpuTensor, up: &CpuTensor, out: &mut CpuTensor) -> Result<()> {
    if gate.rows != up.rows || gate.cols != up.cols || out.cols != gate.cols {
        return Err(shape_err(
            "silu_mul",
            format!(
                "[{}, {}] vs [{}, {}] into {} columns",
                gate.rows, gate.cols, up.rows, up.cols, out.cols
            ),
        ));
    }
    out.set_rows("silu_mul", gate.rows)?;
    let silu_mul = super::simd::kernels().silu_mul;
    out.as_mut_slice()
        .par_chunks_mut(CHUNK)
        .zip(gate.as_slice().par_chunks(CHUNK))
        .zip(up.as_slice().par_chunks(CHUNK))
        .for_each(|((o, g), u)| {
            o.copy_from_slice(g);
            silu_mul(o, u);
        });
    Ok(())
}

/// `x += y`.
pub fn add_assign(x: &mut CpuTensor, y: &CpuTensor) -> Result<()> {
    if x.rows != y.rows || x.cols != y.cols {
        return Err(shape_err(
            "add_assign",
            format!("[{}, {}] vs [{}, {}]", x.rows, x.cols, y.rows, y.cols),
        ));
    }
    x.as_mut_slice()
        .par_chunks_mut(CHUNK)
        .zip(y.as_slice().par_chunks(CHUNK))
        .for_each(|(a, b)| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        });
    Ok(())
}

/// Rows `idx` of `x` → `out [idx.len(), cols]`.
pub fn gather_rows(x: &CpuTensor, idx: &[u32], out: &mut CpuTensor) -> Result<()> {
    check_cols("gather_logit_rows", out, x.cols)?;
    if let Some(&i) = idx.iter().find(|&&i| i as usize >= x.rows) {
        return Err(shape_err(
            "gather_logit_rows",
            format!("row {i} of {}", x.rows),
        ));
    }
    out.set_rows("gather_logit_rows", idx.len())?;
    let cols = x.cols;
    for (dst, &i) in out.as_mut_slice().chunks_exact_mut(cols).zip(idx) {
        dst.copy_from_slice(x.row(i as usize));
    }
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
