//! Q4_K (`block_q4_K`): 256 values in 144 bytes: `d: f16` at 0..2, `dmin: f16` at 2..4,
//! `scales: [u8; 12]` at 4..16 (eight 6-bit scale/min pairs, see `k_common.rs`), and
//! `qs: [u8; 128]` at 16..144. The block is eight sub-blocks of 32; byte `32c + l` holds
//! element `64c + l` (sub-block `2c`) in its low nibble and element `64c + 32 + l` (sub-block
//! `2c + 1`) in its high nibble. Value `= d·sc[j]·q - dmin·m[j]` for sub-block `j`.
//!
//! Quantization is `quantize_row_q4_K_ref` (no importance matrix): per sub-block
//! `make_qkx2_quants(nmax 15, weights av_x + |x|, rmin -1, rdelta 0.1, 20 steps)`, the
//! sub-block scales and mins quantized to 6 bits against `d = max_scale/63`,
//! `dmin = max_min/63`, and the quants recomputed from the stored (f16) scales.
//!
//! Activations are Q8_K; the dot product is `ggml_vec_dot_q4_K_q8_K_generic`: per
//! super-block, eight i32 lanes `aux32[l] = Σ_j sc[j] · Σ_{i ≡ l mod 8} q[i]·a[i]` over the
//! sub-blocks, then `sums[l] += (d·d_a) · aux32[l]` and `sumf -= (dmin·d_a) · Σ bsums·m`;
//! finally `sumf += sums[0] + … + sums[7]` one lane at a time. The lane split matters: it
//! fixes the f32 rounding, so the SIMD kernel keeps the same eight lanes.

use super::act::{q8k_bsum, Q8_K_BLOCK_BYTES, QK_K};
use super::common::{arr, f16_at, f32_at, nearest_int, put_f16};
use super::k_common::{make_qkx2_quants, pack_scale_min_k4, scales_mins_k4};

pub(super) const BLOCK_BYTES: usize = 144;

pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut l = [0u8; QK_K];
        let (mut scales, mut mins) = ([0.0f32; 8], [0.0f32; 8]);
        let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
        for j in 0..8 {
            let xs = &x[32 * j..32 * (j + 1)];
            let mut sum_x2 = 0.0f32;
            for &v in xs {
                sum_x2 += v * v;
            }
            let av_x = (sum_x2 / 32.0).sqrt();
            let weights: [f32; 32] = std::array::from_fn(|i| av_x + xs[i].abs());
            (scales[j], mins[j]) = make_qkx2_quants(
                15,
                xs,
                &weights,
                &mut l[32 * j..32 * (j + 1)],
                -1.0,
                0.1,
                20,
                false,
            );
            if scales[j] > max_scale {
                max_scale = scales[j];
            }
            if mins[j] > max_min {
                max_min = mins[j];
            }
        }
        let inv_scale = if max_scale > 0.0 {
            63.0 / max_scale
        } else {
            0.0
        };
        let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
        // `uint8_t ls = nearest_int(..)` keeps the low byte before `MIN(63, ls)`.
        let ls: [u8; 8] =
            std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
        let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
        let packed = pack_scale_min_k4(&ls, &lm);
        y[4..16].copy_from_slice(&packed);
        put_f16(y, 0, max_scale / 63.0);
        put_f16(y, 2, max_min / 63.0);
        let (d_all, dmin_all) = (f16_at(y, 0), f16_at(y, 2));
        requantize(x, &packed, d_all, dmin_all, 15, &mut l);
        for c in 0..4 {
            for i in 0..32 {
                y[16 + 32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
    }
}

/// The last pass of `quantize_row_q4_K_ref` / `q5_K_ref`: levels from the stored scales.
/// Sub-blocks whose effective scale is zero keep the levels of the search.
pub(super) fn requantize(
    x: &[f32],
    packed: &[u8; 12],
    d_all: f32,
    dmin_all: f32,
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    let (sc, m) = scales_mins_k4(packed);
    for j in 0..8 {
        let d = d_all * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m[j] as f32;
        for i in 0..32 {
            l[32 * j + i] = nearest_int((x[32 * j + i] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let (d, min) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins_k4(arr(&b[4..]));
        for c in 0..4 {
            let (d1, m1) = (d * sc[2 * c] as f32, min * m[2 * c] as f32);
            let (d2, m2) = (d * sc[2 * c + 1] as f32, min * m[2 * c + 1] as f32);
            let q = &b[16 + 32 * c..16 + 32 * (c + 1)];
            for i in 0..32 {
                y[64 * c + i] = d1 * (q[i] & 0x0f) as f32 - m1;
                y[64 * c + 32 + i] = d2 * (q[i] >> 4) as f32 - m2;
            }
        }
    }
}

/// The eight i32 lanes of one super-block and its `Σ bsums·min` (exact integers).
#[inline(always)]
pub(super) fn block_lanes(w: &[u8; BLOCK_BYTES], a: &[u8]) -> ([i32; 8], i32) {
    let (sc, m) = scales_mins_k4(arr(&w[4..]));
    let mut sumi_min = 0i32;
    for j in 0..16 {
        sumi_min += q8k_bsum(a, j) * m[j / 2] as i32;
    }
    let q8: &[u8; QK_K] = arr(&a[4..]);
    let mut aux32 = [0i32; 8];
    for c in 0..4 {
        let q = &w[16 + 32 * c..16 + 32 * (c + 1)];
        let (mut lo, mut hi) = ([0i32; 8], [0i32; 8]);
        for i in 0..32 {
            lo[i % 8] += (q[i] & 0x0f) as i32 * (q8[64 * c + i] as i8 as i32);
            hi[i % 8] += (q[i] >> 4) as i32 * (q8[64 * c + 32 + i] as i8 as i32);
        }
        for t in 0..8 {
            aux32[t] += sc[2 * c] as i32 * lo[t] + sc[2 * c + 1] as i32 * hi[t];
        }
    }
    (aux32, sumi_min)
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK_K;
    assert!(
        k % QK_K == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * Q8_K_BLOCK_BYTES,
        "q4_K vec_dot: bad row sizes for k = {k}"
    );
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(Q8_K_BLOCK_BYTES))
    {
        let (aux32, sumi_min) = block_lanes(arr(wb), ab);
        let da = f32_at(ab, 0);
        let d = f16_at(wb, 0) * da;
        for t in 0..8 {
            sums[t] += d * aux32[t] as f32;
        }
        let dmin = f16_at(wb, 2) * da;
        sumf -= dmin * sumi_min as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}
