//! Q4_0 (`block_q4_0`): 32 values in 18 bytes, `d: f16` at 0..2 then `qs: [u8; 16]` at 2..18.
//! Byte `j` holds element `j` in its low nibble and element `j + 16` in its high nibble; value
//! `= d · (nibble - 8)`, so the grid is `-8d ..= 7d`.
//!
//! Quantization is `quantize_row_q4_0_ref`: `d = max / -8` where `max` is the element of
//! largest magnitude (first one on ties), `q = min(15, (int8)(x/d + 8.5))` (truncation).
//! The element at `max` maps to -8 exactly; its opposite would need +8 and saturates at 7.
//! Activations are Q8_0; the dot product is `ggml_vec_dot_q4_0_q8_0_generic`:
//! `sumf += sumi · d_w · d_a` evaluated left to right per block.

use super::common::{arr, f16_at, put_f16};
use super::q8_0;

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 18;

pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        for j in 0..QK / 2 {
            let xi0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
            let xi1 = ((x[j + QK / 2] * id + 8.5) as i8).min(15) as u8;
            y[2 + j] = xi0 | (xi1 << 4);
        }
    }
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for j in 0..QK / 2 {
            y[j] = ((b[2 + j] & 0x0f) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((b[2 + j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// `Σ (q_w - 8) · q_a` of one block, exact.
#[inline(always)]
pub(super) fn block_sumi(qs: &[u8; 16], a: &[u8; 32]) -> i32 {
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        s0 += ((qs[j] & 0x0f) as i32 - 8) * (a[j] as i8 as i32);
        s1 += ((qs[j] >> 4) as i32 - 8) * (a[j + 16] as i8 as i32);
    }
    s0 + s1
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK;
    assert!(
        k % QK == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * q8_0::BLOCK_BYTES,
        "q4_0 vec_dot: bad row sizes for k = {k}"
    );
    let mut sumf = 0.0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(q8_0::BLOCK_BYTES))
    {
        let sumi = block_sumi(arr(&wb[2..]), arr(&ab[2..]));
        sumf += sumi as f32 * f16_at(wb, 0) * f16_at(ab, 0);
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_magnitude_maps_to_minus_eight() {
        let mut x = [0.0f32; 32];
        x[0] = -8.0; // max = -8 → d = 1
        x[1] = 8.0; // would be +8: saturates at 7
        x[17] = 3.0;
        x[18] = -2.6; // -2.6 + 8.5 = 5.9 → 5 (truncation) → -3
        let mut b = [0u8; 18];
        quantize_row(&x, &mut b);
        let mut y = [0.0f32; 32];
        dequantize_row(&b, &mut y);
        assert_eq!(f16_at(&b, 0), 1.0);
        assert_eq!(
            (y[0], y[1], y[17], y[18], y[5]),
            (-8.0, 7.0, 3.0, -3.0, 0.0)
        );
    }
}
