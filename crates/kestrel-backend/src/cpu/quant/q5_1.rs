//! Q5_1 (`block_q5_1`): 32 values in 24 bytes, `d: f16` at 0..2, `m: f16` at 2..4,
//! `qh: u32` (little-endian) at 4..8, `qs: [u8; 16]` at 8..24, bits laid out as in Q5_0.
//! Value `= d · q + m` with `q` in `0..=31`.
//!
//! Quantization is `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `m = min`,
//! `q = (uint8)((x - min)/d + 0.5)`. Activations are Q8_1; the dot product is
//! `ggml_vec_dot_q5_1_q8_1_generic`: `sumf += (d_w · d_a) · sumi + m_w · s_a`.

use super::act::Q8_1_BLOCK_BYTES;
use super::common::{arr, f16_at, put_f16};
use super::q5_0::unpack;

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 24;

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
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        put_f16(y, 2, min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let xi0 = ((x[j] - min) * id + 0.5) as u8;
            let xi1 = ((x[j + QK / 2] - min) * id + 0.5) as u8;
            y[8 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= ((xi0 as u32 & 0x10) >> 4) << j;
            qh |= ((xi1 as u32 & 0x10) >> 4) << (j + QK / 2);
        }
        y[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let q = unpack(u32::from_le_bytes(*arr(&b[4..])), arr(&b[8..]));
        for (v, q) in y.iter_mut().zip(q) {
            *v = q as f32 * d + m;
        }
    }
}

/// `Σ q_w · q_a` of one block (unsigned 5-bit quants), exact.
#[inline(always)]
pub(super) fn block_sumi(qh: u32, qs: &[u8; 16], a: &[u8; 32]) -> i32 {
    let q = unpack(qh, qs);
    let mut sumi = 0i32;
    for j in 0..32 {
        sumi += q[j] as i32 * (a[j] as i8 as i32);
    }
    sumi
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK;
    assert!(
        k % QK == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * Q8_1_BLOCK_BYTES,
        "q5_1 vec_dot: bad row sizes for k = {k}"
    );
    let mut sumf = 0.0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(Q8_1_BLOCK_BYTES))
    {
        let sumi = block_sumi(
            u32::from_le_bytes(*arr(&wb[4..])),
            arr(&wb[8..]),
            arr(&ab[4..]),
        );
        sumf += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32 + f16_at(wb, 2) * f16_at(ab, 2);
    }
    sumf
}
