//! Q4_1 (`block_q4_1`): 32 values in 20 bytes, `d: f16` at 0..2, `m: f16` at 2..4, then
//! `qs: [u8; 16]` at 4..20 (element `j` low nibble, element `j + 16` high nibble); value
//! `= d · nibble + m`, an affine grid from the block minimum.
//!
//! Quantization is `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `m = min`,
//! `q = min(15, (int8)((x - min)/d + 0.5))`. Activations are Q8_1; the dot product is
//! `ggml_vec_dot_q4_1_q8_1_generic`: `sumf += (d_w · d_a) · sumi + m_w · s_a`, where
//! `s_a = d_a · Σq_a` is stored in the activation block, so the offset costs no extra sum.

use super::act::Q8_1_BLOCK_BYTES;
use super::common::{arr, f16_at, put_f16};

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 20;

pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        put_f16(y, 2, min);
        for j in 0..QK / 2 {
            let xi0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let xi1 = (((x[j + QK / 2] - min) * id + 0.5) as i8).min(15) as u8;
            y[4 + j] = xi0 | (xi1 << 4);
        }
    }
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        for j in 0..QK / 2 {
            y[j] = (b[4 + j] & 0x0f) as f32 * d + m;
            y[j + QK / 2] = (b[4 + j] >> 4) as f32 * d + m;
        }
    }
}

/// `Σ q_w · q_a` of one block (unsigned nibbles), exact.
#[inline(always)]
pub(super) fn block_sumi(qs: &[u8; 16], a: &[u8; 32]) -> i32 {
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        s0 += (qs[j] & 0x0f) as i32 * (a[j] as i8 as i32);
        s1 += (qs[j] >> 4) as i32 * (a[j + 16] as i8 as i32);
    }
    s0 + s1
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK;
    assert!(
        k % QK == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * Q8_1_BLOCK_BYTES,
        "q4_1 vec_dot: bad row sizes for k = {k}"
    );
    let mut sumf = 0.0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(Q8_1_BLOCK_BYTES))
    {
        let sumi = block_sumi(arr(&wb[4..]), arr(&ab[4..]));
        sumf += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32 + f16_at(wb, 2) * f16_at(ab, 2);
    }
    sumf
}
