//! Q5_K (`block_q5_K`): 256 values in 176 bytes: `d: f16` at 0..2, `dmin: f16` at 2..4,
//! `scales: [u8; 12]` at 4..16 (as Q4_K), `qh: [u8; 32]` at 16..48 and `qs: [u8; 128]` at
//! 48..176. Low nibbles are laid out as in Q4_K; the fifth bit of element `64c + l` is bit
//! `2c` of `qh[l]` and that of element `64c + 32 + l` is bit `2c + 1`. Value
//! `= d·sc[j]·q - dmin·m[j]` with `q ∈ 0..=31`.
//!
//! Quantization is `quantize_row_q5_K_ref`: as Q4_K with `nmax 31`, `rmin -0.5`,
//! `rdelta 0.1`, 15 steps. Activations are Q8_K; the dot product is
//! `ggml_vec_dot_q5_K_q8_K_generic`, the same eight-lane scheme as Q4_K.

use super::act::{q8k_bsum, Q8_K_BLOCK_BYTES, QK_K};
use super::common::{arr, f16_at, f32_at, nearest_int, put_f16};
use super::k_common::{make_qkx2_quants, pack_scale_min_k4, scales_mins_k4};
use super::q4_k::requantize;

pub(super) const BLOCK_BYTES: usize = 176;

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
                31,
                xs,
                &weights,
                &mut l[32 * j..32 * (j + 1)],
                -0.5,
                0.1,
                15,
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
        let ls: [u8; 8] =
            std::array::from_fn(|j| (nearest_int(inv_scale * scales[j]) as u8).min(63));
        let lm: [u8; 8] = std::array::from_fn(|j| (nearest_int(inv_min * mins[j]) as u8).min(63));
        let packed = pack_scale_min_k4(&ls, &lm);
        y[4..16].copy_from_slice(&packed);
        put_f16(y, 0, max_scale / 63.0);
        put_f16(y, 2, max_min / 63.0);
        let (d_all, dmin_all) = (f16_at(y, 0), f16_at(y, 2));
        requantize(x, &packed, d_all, dmin_all, 31, &mut l);
        y[16..48].fill(0);
        for c in 0..4 {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for i in 0..32 {
                let (mut l1, mut l2) = (l[64 * c + i], l[64 * c + 32 + i]);
                if l1 > 15 {
                    l1 -= 16;
                    y[16 + i] |= m1;
                }
                if l2 > 15 {
                    l2 -= 16;
                    y[16 + i] |= m2;
                }
                y[48 + 32 * c + i] = l1 | (l2 << 4);
            }
        }
    }
}

/// The 256 unsigned 5-bit quants of a block, in element order.
#[inline(always)]
fn unpack(b: &[u8; BLOCK_BYTES]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    let qh = &b[16..48];
    for c in 0..4 {
        let ql = &b[48 + 32 * c..48 + 32 * (c + 1)];
        for i in 0..32 {
            q[64 * c + i] = (ql[i] & 0x0f) | (((qh[i] >> (2 * c)) & 1) << 4);
            q[64 * c + 32 + i] = (ql[i] >> 4) | (((qh[i] >> (2 * c + 1)) & 1) << 4);
        }
    }
    q
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let (d, min) = (f16_at(b, 0), f16_at(b, 2));
        let (sc, m) = scales_mins_k4(arr(&b[4..]));
        let q = unpack(arr(b));
        for j in 0..8 {
            let (dj, mj) = (d * sc[j] as f32, min * m[j] as f32);
            for i in 32 * j..32 * (j + 1) {
                y[i] = dj * q[i] as f32 - mj;
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
    let q = unpack(w);
    let q8: &[u8; QK_K] = arr(&a[4..]);
    let mut aux32 = [0i32; 8];
    for j in 0..8 {
        let mut lanes = [0i32; 8];
        for i in 0..32 {
            lanes[i % 8] += q[32 * j + i] as i32 * (q8[32 * j + i] as i8 as i32);
        }
        for t in 0..8 {
            aux32[t] += sc[j] as i32 * lanes[t];
        }
    }
    (aux32, sumi_min)
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK_K;
    assert!(
        k % QK_K == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * Q8_K_BLOCK_BYTES,
        "q5_K vec_dot: bad row sizes for k = {k}"
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
