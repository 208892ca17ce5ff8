//! Q6_K (`block_q6_K`): 256 values in 210 bytes: `ql: [u8; 128]` at 0..128 (low 4 bits),
//! `qh: [u8; 64]` at 128..192 (high 2 bits), `scales: [i8; 16]` at 192..208 (one per 16
//! values) and `d: f16` at 208..210. For each half `h` (128 values) and `l < 32`, with
//! `ql = ql[64h..]`, `qh = qh[32h..]`:
//! element `128h + l`      = `ql[l] & 15`      | `(qh[l] >> 0 & 3) << 4`,
//! element `128h + l + 32` = `ql[l + 32] & 15` | `(qh[l] >> 2 & 3) << 4`,
//! element `128h + l + 64` = `ql[l] >> 4`      | `(qh[l] >> 4 & 3) << 4`,
//! element `128h + l + 96` = `ql[l + 32] >> 4` | `(qh[l] >> 6 & 3) << 4`,
//! each minus 32. Value `= d · scales[i / 16] · q`.
//!
//! Quantization is `quantize_row_q6_K_ref`: `make_qx_quants(16, nmax 32, rmse_type 1)` per
//! run of 16, scales quantized to int8 with `iscale = -128 / max_scale` (the largest scale
//! maps to -128), `d = 1 / iscale`, quants recomputed from the stored scales.
//! Activations are Q8_K; the dot product is `ggml_vec_dot_q6_K_q8_K_generic`: eight i32
//! lanes `aux32[l] = Σ_j scales[j] · Σ_{i ≡ l mod 8} q[i]·a[i]` per super-block,
//! `sums[l] += (d·d_a) · aux32[l]`, then `sumf = sums[0] + … + sums[7]` in order.

use super::act::{Q8_K_BLOCK_BYTES, QK_K};
use super::common::{arr, f16_at, f32_at, nearest_int, put_f16};
use super::k_common::{make_qx_quants_rmse1, GROUP_MAX_EPS};

pub(super) const BLOCK_BYTES: usize = 210;

pub(super) fn quantize_row(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src
        .chunks_exact(QK_K)
        .zip(dst.chunks_exact_mut(BLOCK_BYTES))
    {
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..16 {
            let scale = make_qx_quants_rmse1(
                32,
                &x[16 * ib..16 * (ib + 1)],
                &mut l[16 * ib..16 * (ib + 1)],
            );
            scales[ib] = scale;
            if scale.abs() > max_abs_scale {
                max_abs_scale = scale.abs();
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            y.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(y, 208, 1.0 / iscale);
        for ib in 0..16 {
            y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let d_all = f16_at(y, 208);
        for j in 0..16 {
            let d = d_all * (y[192 + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for i in 16 * j..16 * (j + 1) {
                l[i] = (nearest_int(x[i] / d).clamp(-32, 31) + 32) as i8;
            }
        }
        for h in 0..2 {
            for i in 0..32 {
                let lv = |o: usize| l[128 * h + i + o] as u8;
                y[64 * h + i] = (lv(0) & 0x0f) | ((lv(64) & 0x0f) << 4);
                y[64 * h + i + 32] = (lv(32) & 0x0f) | ((lv(96) & 0x0f) << 4);
                y[128 + 32 * h + i] = (lv(0) >> 4)
                    | ((lv(32) >> 4) << 2)
                    | ((lv(64) >> 4) << 4)
                    | ((lv(96) >> 4) << 6);
            }
        }
    }
}

/// The 256 signed quants (`-32..=31`) of a block, in element order.
#[inline(always)]
pub(super) fn unpack(b: &[u8; BLOCK_BYTES]) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for h in 0..2 {
        let ql = &b[64 * h..64 * (h + 1)];
        let qh = &b[128 + 32 * h..128 + 32 * (h + 1)];
        for i in 0..32 {
            q[128 * h + i] = ((ql[i] & 0x0f) | ((qh[i] & 3) << 4)) as i8 - 32;
            q[128 * h + i + 32] = ((ql[i + 32] & 0x0f) | (((qh[i] >> 2) & 3) << 4)) as i8 - 32;
            q[128 * h + i + 64] = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i8 - 32;
            q[128 * h + i + 96] = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    q
}

pub(super) fn dequantize_row(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(QK_K))
    {
        let d = f16_at(b, 208);
        let q = unpack(arr(b));
        for j in 0..16 {
            let dj = d * (b[192 + j] as i8) as f32;
            for i in 16 * j..16 * (j + 1) {
                y[i] = dj * q[i] as f32;
            }
        }
    }
}

/// The eight i32 lanes of one super-block (exact integers).
#[inline(always)]
pub(super) fn block_lanes(w: &[u8; BLOCK_BYTES], a: &[u8]) -> [i32; 8] {
    let q = unpack(w);
    let q8: &[u8; QK_K] = arr(&a[4..]);
    let mut aux32 = [0i32; 8];
    for j in 0..16 {
        let mut lanes = [0i32; 8];
        for i in 0..16 {
            lanes[i % 8] += q[16 * j + i] as i32 * (q8[16 * j + i] as i8 as i32);
        }
        let sc = (w[192 + j] as i8) as i32;
        for t in 0..8 {
            aux32[t] += sc * lanes[t];
        }
    }
    aux32
}

pub(super) fn vec_dot(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = k / QK_K;
    assert!(
        k % QK_K == 0 && w.len() == nb * BLOCK_BYTES && a.len() == nb * Q8_K_BLOCK_BYTES,
        "q6_K vec_dot: bad row sizes for k = {k}"
    );
    let mut sums = [0.0f32; 8];
    for (wb, ab) in w
        .chunks_exact(BLOCK_BYTES)
        .zip(a.chunks_exact(Q8_K_BLOCK_BYTES))
    {
        let aux32 = block_lanes(arr(wb), ab);
        let d = f16_at(wb, 208) * f32_at(ab, 0);
        for t in 0..8 {
            sums[t] += d * aux32[t] as f32;
        }
    }
    let mut sumf = 0.0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}
