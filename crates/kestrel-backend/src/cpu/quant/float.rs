//! F32, F16 and BF16 rows: one element per "block", little-endian, 4 / 2 / 2 bytes.
//!
//! - f32 → f16 rounds to nearest-even (`GGML_FP32_TO_FP16`), f16 → f32 is exact.
//! - f32 → bf16 is `ggml_compute_fp32_to_bf16`: round to nearest-even on the top 16 bits,
//!   NaN forced quiet; bf16 → f32 is a 16-bit shift (exact).
//!
//! Dot products follow ggml's AVX2 build of `ggml_vec_dot_f32` / `ggml_vec_dot_f16` /
//! `ggml_vec_dot_bf16`, the path llama.cpp takes on x86 (its scalar fallback accumulates in
//! f64, which no SIMD build uses). Whole chunks of 32 elements go to 32 f32 lanes (lane
//! `j·8 + l` holds elements `32c + 8j + l`, four 8-wide registers); then the lanes are reduced
//! in ggml's fixed tree and the remaining `k mod 32` elements are added one by one:
//!
//! - F32 and F16: lanes accumulate with fused multiply-add (`GGML_F32x8_FMA` with `__FMA__`);
//!   reduction `r0+=r2, r1+=r3, r0+=r1`, then `t[l] = r0[l] + r0[l+4]` and
//!   `(t0+t1) + (t2+t3)` (`GGML_F32x8_REDUCE`). F32 adds the tail in f32, F16 in f64.
//! - BF16: lanes accumulate `acc + x·y` rounded twice (mul then add, no FMA); reduction
//!   `(r0+r2) + (r1+r3)`, then `t[l] = r0[l] + r0[l+4]` and `(t0+t2) + (t1+t3)`; tail in f64.
//!
//! `x86.rs` implements the same arithmetic with AVX2 and is tested equal bit for bit.

use half::f16;

/// Width of one chunk of lanes (`GGML_F32_STEP` on AVX2).
pub(super) const STEP: usize = 32;

pub(super) fn f32_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

pub(super) fn f32_from_f32(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

pub(super) fn f16_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
    }
}

pub(super) fn f16_from_f32(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f16::from_f32(*s).to_bits().to_le_bytes());
    }
}

#[inline(always)]
pub(super) fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// `ggml_compute_fp32_to_bf16`.
#[inline(always)]
pub(super) fn f32_to_bf16_bits(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: keep the sign and payload top, force quiet.
        return ((u >> 16) | 64) as u16;
    }
    ((u.wrapping_add(0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

pub(super) fn bf16_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

pub(super) fn bf16_from_f32(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_bf16_bits(*s).to_le_bytes());
    }
}

/// `GGML_F32x8_REDUCE` over 4 registers of 8 lanes (F32 and F16 dots).
#[inline(always)]
pub(super) fn reduce_fma_lanes(acc: &[f32; STEP]) -> f32 {
    let mut r = [0.0f32; 8];
    for l in 0..8 {
        let r0 = acc[l] + acc[16 + l];
        let r1 = acc[8 + l] + acc[24 + l];
        r[l] = r0 + r1;
    }
    let t = [r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]];
    (t[0] + t[1]) + (t[2] + t[3])
}

/// The reduction of ggml's AVX2 `ggml_vec_dot_bf16`.
#[inline(always)]
pub(super) fn reduce_bf16_lanes(acc: &[f32; STEP]) -> f32 {
    let mut r = [0.0f32; 8];
    for l in 0..8 {
        r[l] = (acc[l] + acc[16 + l]) + (acc[8 + l] + acc[24 + l]);
    }
    let t = [r[0] + r[4], r[1] + r[5], r[2] + r[6], r[3] + r[7]];
    (t[0] + t[2]) + (t[1] + t[3])
}

#[inline(always)]
fn check(w: &[u8], a: &[u8], k: usize, elem: usize) {
    assert!(
        w.len() == k * elem && a.len() == k * elem,
        "vec_dot: rows of {} and {} bytes for k = {k}",
        w.len(),
        a.len()
    );
}

pub(super) fn vec_dot_f32(w: &[u8], a: &[u8], k: usize) -> f32 {
    check(w, a, k, 4);
    let np = k / STEP * STEP;
    let x = |i: usize| f32::from_le_bytes([w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]]);
    let y = |i: usize| f32::from_le_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
    let mut acc = [0.0f32; STEP];
    for c in (0..np).step_by(STEP) {
        for (t, lane) in acc.iter_mut().enumerate() {
            *lane = x(c + t).mul_add(y(c + t), *lane);
        }
    }
    let mut sumf = reduce_fma_lanes(&acc);
    for i in np..k {
        sumf += x(i) * y(i);
    }
    sumf
}

pub(super) fn vec_dot_f16(w: &[u8], a: &[u8], k: usize) -> f32 {
    check(w, a, k, 2);
    let np = k / STEP * STEP;
    let h =
        |b: &[u8], i: usize| f16::from_bits(u16::from_le_bytes([b[2 * i], b[2 * i + 1]])).to_f32();
    let mut acc = [0.0f32; STEP];
    for c in (0..np).step_by(STEP) {
        for (t, lane) in acc.iter_mut().enumerate() {
            *lane = h(w, c + t).mul_add(h(a, c + t), *lane);
        }
    }
    let mut sumf = reduce_fma_lanes(&acc) as f64;
    for i in np..k {
        sumf += (h(w, i) * h(a, i)) as f64;
    }
    sumf as f32
}

pub(super) fn vec_dot_bf16(w: &[u8], a: &[u8], k: usize) -> f32 {
    check(w, a, k, 2);
    let np = k / STEP * STEP;
    let b = |b: &[u8], i: usize| bf16_bits_to_f32(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]));
    let mut acc = [0.0f32; STEP];
    for c in (0..np).step_by(STEP) {
        for (t, lane) in acc.iter_mut().enumerate() {
            *lane += b(w, c + t) * b(a, c + t);
        }
    }
    let mut sumf = reduce_bf16_lanes(&acc) as f64;
    for i in np..k {
        sumf += (b(w, i) * b(a, i)) as f64;
    }
    sumf as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        // Exactly halfway between two bf16 values: ties go to the even mantissa.
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16_bits(-1.0), 0xbf80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::INFINITY), 0x7f80);
    }

    #[test]
    fn lane_reduction_orders_differ_only_in_rounding() {
        let acc: [f32; STEP] = std::array::from_fn(|i| 1.0 + i as f32 * 0.25);
        let exact: f32 = acc.iter().sum();
        assert!((reduce_fma_lanes(&acc) - exact).abs() < 1e-4);
        assert!((reduce_bf16_lanes(&acc) - exact).abs() < 1e-4);
    }

    #[test]
    fn f32_dot_uses_lanes_then_tail() {
        let k = 35;
        let x: Vec<f32> = (0..k).map(|i| (i as f32 - 10.0) * 0.5).collect();
        let y: Vec<f32> = (0..k).map(|i| 1.0 / (1.0 + i as f32)).collect();
        let (mut wb, mut ab) = (vec![0u8; 4 * k], vec![0u8; 4 * k]);
        f32_from_f32(&x, &mut wb);
        f32_from_f32(&y, &mut ab);
        let want: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((vec_dot_f32(&wb, &ab, k) as f64 - want).abs() < 1e-5);
    }
}
