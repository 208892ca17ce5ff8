//! Q5_0 (`block_q5_0`): 32 values in 22 bytes, `d: f16` at 0..2, `qh: u32` (little-endian)
//! at 2..6, `qs: [u8; 16]` at 6..22. Element `j < 16` is `qs[j] & 15` with fifth bit
//! `qh >> j & 1`; element `j + 16` is `qs[j] >> 4` with fifth bit `qh >> (j + 16) & 1`.
//! Value `= d · (q - 16)`, grid `-16d ..= 15d`.
//!
//! Quantization is `quantize_row_q5_0_ref`: `d = max / -16` (`max` the element of largest
//! magnitude), `q = min(31, (int8)(x/d + 16.5))`. Activations are Q8_0; the dot product is
//! `ggml_vec_dot_q5_0_q8_0_generic`: `sumf += (d_w · d_a) · sumi`.

use super::common::{arr, f16_at, put_f16};
use super::q8_0;

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 22;

pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let xi0 = ((x[j] * id + 16.5) as i8).min(31) as u8;
            let xi1 = ((x[j + QK / 2] * id + 16.5) as i8).min(31) as u8;
            y[6 + j] = (xi0 & 0x0f) | ((xi1 & 0x0f) << 4);
            qh |= ((xi0 as u32 & 0x10) >> 4) << j;
            qh |= ((xi1 as u32 & 0x10) >> 4) << (j + QK / 2);
        }
        y[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// The 32 unsigned 5-bit quants of a block, in element order.
#[inline(always)]
pub(super) fn unpack(qh: u32, qs: &[u8; 16]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | (((qh >> j) << 4) & 0x10) as u8;
        q[j + 16] = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10) as u8;
    }
    q
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let q = unpack(u32::from_le_bytes(*arr(&b[2..])), arr(&b[6..]));
        for (v, q) in y.iter_mut().zip(q) {
            *v = (q as i32 - 16) as f32 * d;
        }
    }
}

/// `Σ (q_w - 16) · q_a` of one block, exact.
#[inline(always)]
pub(super) fn block_sumi(qh: u32, qs: &[u8; 16], a: &[u8; 32]) -> i32 {
    let q = unpack(qh, qs);
    let mut sumi = 0i32;
    for j in 0..32 {
        sumi += (q[j] as i32 - 16) * (a[j] as i8 as i32);
    }
    sumi
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK;
    assert!(
        k % QK == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * q8_0::BLOCK_BYTES,
        "q5_0 vec_dot: bad row sizes for k = {k}"
    );
    let mut sumf = 0.0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
    {
        let sumi = block_sumi(
            u32::from_le_bytes(*arr(&wb[2..])),
            arr(&wb[6..]),
            arr(&ab[2..]),
        );
        sumf += (f16_at(wb, 0) * f16_at(ab, 0)) * sumi as f32;
    }
    sumf
}
