//! Activation-only formats (ggml never stores weights in them).
//!
//! - Q8_1 (`block_q8_1`, for Q4_1/Q5_1 weights): 32 values in 36 bytes, `d: f16` at 0..2,
//!   `s: f16` at 2..4, `qs: [i8; 32]` at 4..36. `quantize_row_q8_1_ref`: quants exactly as
//!   Q8_0 (`roundf(x / (amax/127))`), and `s = f16(d · Σqs)` with the unrounded `d`, so the
//!   weight's offset `m` is applied as `m · s` without touching the quants.
//! - Q8_K (`block_q8_K`, for the K-quants): 256 values in 292 bytes, `d: f32` at 0..4,
//!   `qs: [i8; 256]` at 4..260, `bsums: [i16; 16]` at 260..292 (sum of each run of 16
//!   quants). `quantize_row_q8_K_ref`: `iscale = -127 / max` with `max` the element of largest
//!   magnitude, `qs = min(127, nearest_int(iscale·x))` (ties to even), `d = 1 / iscale` kept
//!   in f32. An all-zero block stores `d = 0`, zero quants and zero sums.
//!
//! The Q8_0 activation format is the Q8_0 weight format (`q8_0.rs`).

use super::common::{f16_at, f32_at, nearest_int, put_f16};

pub(super) const Q8_1_BLOCK_BYTES: usize = 36;
pub(super) const Q8_K_BLOCK_BYTES: usize = 292;
pub(super) const QK_K: usize = 256;

pub(super) fn quantize_row_q8_1(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(32)
        .zip(dst.chunks_exact_mut(Q8_1_BLOCK_BYTES))
    {
        let amax = x
            .iter()
            .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        let mut sum = 0i32;
        for (q, v) in y[4..].iter_mut().zip(x) {
            let qi = (v * id).round() as i8;
            *q = qi as u8;
            sum += qi as i32;
        }
        put_f16(y, 2, sum as f32 * d);
    }
}

pub(super) fn dequantize_row_q8_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q8_1_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(32))
    {
        let d = f16_at(b, 0);
        for (v, q) in y.iter_mut().zip(&b[4..]) {
            *v = (*q as i8) as f32 * d;
        }
    }
}

pub(super) fn quantize_row_q8_k(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(Q8_K_BLOCK_BYTES))
    {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            y.fill(0);
            continue;
        }
        let iscale = -127.0 / max;
        for (q, v) in y[4..4 + QK_K].iter_mut().zip(x) {
            *q = nearest_int(iscale * v).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let sum: i32 = y[4 + 16 * j..4 + 16 * (j + 1)]
                .iter()
                .map(|&q| q as i8 as i32)
                .sum();
            y[260 + 2 * j..262 + 2 * j].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        y[0..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

pub(super) fn dequantize_row_q8_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(Q8_K_BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f32_at(b, 0);
        for (v, q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
            *v = (*q as i8) as f32 * d;
        }
    }
}

/// `bsums[j]` of a Q8_K block.
#[inline(always)]
pub(super) fn q8k_bsum(b: &[u8], j: usize) -> i32 {
    i16::from_le_bytes([b[260 + 2 * j], b[261 + 2 * j]]) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_1_stores_scaled_sum() {
        let x: Vec<f32> = (0..32).map(|i| i as f32 - 10.0).collect();
        let mut b = [0u8; 36];
        quantize_row_q8_1(&x, &mut b);
        let d = 21.0f32 / 127.0;
        let sum: i32 = b[4..].iter().map(|&q| q as i8 as i32).sum();
        assert_eq!(b[4 + 31] as i8, 127);
        assert_eq!(f16_at(&b, 2), half::f16::from_f32(sum as f32 * d).to_f32());
    }

    #[test]
    fn q8_k_maps_largest_magnitude_to_minus_127_and_sums_runs() {
        let mut x = vec![0.0f32; 256];
        x[3] = 2.0;
        x[200] = -4.0; // max = -4 → iscale = 31.75, d = 1/31.75
        x[17] = 1.0;
        let mut b = vec![0u8; 292];
        quantize_row_q8_k(&x, &mut b);
        assert_eq!(f32_at(&b, 0), 1.0 / (127.0f32 / 4.0));
        assert_eq!(b[4 + 200] as i8, -127);
        assert_eq!(b[4 + 3] as i8, 64); // 63.5 → 64 (ties to even)
        assert_eq!(b[4 + 17] as i8, 32); // 31.75 → 32
        assert_eq!(q8k_bsum(&b, 0), 64);
        assert_eq!(q8k_bsum(&b, 1), 32);
        assert_eq!(q8k_bsum(&b, 12), -127);
    }

    #[test]
    fn q8_k_zero_block_is_all_zero() {
        let mut b = vec![0xaau8; 292];
        quantize_row_q8_k(&[0.0; 256], &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }
}
