//! Q8_0 (`block_q8_0`): 32 values in 34 bytes, `d: f16` at 0..2 then `qs: [i8; 32]` at 2..34;
//! value `i` is `d · qs[i]`. Also the activation format of Q8_0, Q4_0 and Q5_0 weights.
//!
//! Quantization is `quantize_row_q8_0_ref`: `d = amax / 127`, `qs = roundf(x / d)` (ties away
//! from zero, through `id = 1/d`), with `d` stored rounded to f16 *after* the quants were
//! computed from the unrounded `d`. The dot product is `ggml_vec_dot_q8_0_q8_0_generic`:
//! an exact i32 sum per block, then `sumf += sumi · (d_w · d_a)` block by block.
//!
//! ggml's x86 `quantize_row_q8_0` (activations on AVX2 builds) uses `127 / amax` and rounds
//! ties to even; it can differ from the reference in the last unit of a quant on exact ties,
//! which random activations essentially never hit. The reference is kept here because it is
//! what gguf-py reproduces and what every architecture's generic path does.

use super::common::{arr, f16_at, put_f16};

pub(super) const QK: usize = 32;
pub(super) const BLOCK_BYTES: usize = 34;

pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(BLOCK_BYTES)) {
        // `MAX(amax, fabsf(v))` as ggml writes it (`a > b ? a : b`).
        let amax = x
            .iter()
            .fold(0.0f32, |m, v| if m > v.abs() { m } else { v.abs() });
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        for (q, v) in y[2..].iter_mut().zip(x) {
            *q = (v * id).round() as i8 as u8;
        }
    }
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(BLOCK_BYTES).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (v, q) in y.iter_mut().zip(&b[2..]) {
            *v = (*q as i8) as f32 * d;
        }
    }
}

/// `Σ qs_w[i] · qs_a[i]` of one block pair, exact.
#[inline(always)]
pub(super) fn block_sumi(w: &[u8; 32], a: &[u8; 32]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..32 {
        sumi += (w[j] as i8 as i32) * (a[j] as i8 as i32);
    }
    sumi
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK;
    assert!(
        k % QK == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * BLOCK_BYTES,
        "q8_0 vec_dot: bad row sizes for k = {k}"
    );
    let mut sumf = 0.0f32;
    for (wb, ab) in w.chunks_exact(BLOCK_BYTES).zip(a.chunks_exact(BLOCK_BYTES)) {
        let sumi = block_sumi(arr(&wb[2..]), arr(&ab[2..]));
        sumf += sumi as f32 * (f16_at(wb, 0) * f16_at(ab, 0));
    }
    sumf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_round_away_from_zero() {
        // amax 127 gives d = 1 exactly, so x·id keeps its .5 fractions.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 2.5;
        x[4] = -126.5;
        let mut b = [0u8; 34];
        quantize_row(&x, &mut b);
        assert_eq!(f16_at(&b, 0), 1.0);
        assert_eq!(&b[2..7], &[127u8, 1, (-1i8) as u8, 3, (-127i8) as u8]);
    }

    #[test]
    fn zero_block_has_zero_scale_and_quants() {
        let mut b = [0xffu8; 34];
        quantize_row(&[0.0; 32], &mut b);
        assert!(b.iter().all(|&v| v == 0));
    }
}
