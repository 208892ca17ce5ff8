//! Pieces shared by the K-quants (256-value super-blocks):
//!
//! - the 12-byte packing of eight 6-bit (scale, min) pairs used by Q4_K and Q5_K
//!   (`get_scale_min_k4`): bytes 0..4 hold scales 0..3 in their low 6 bits, bytes 4..8 mins
//!   0..3; bytes 8..12 hold the low 4 bits of scale 4+j (low nibble) and min 4+j (high
//!   nibble), whose top 2 bits sit in bits 6..8 of bytes j and 4+j;
//! - the searches of `quantize_row_q*_K_ref`: `make_qkx2_quants` (affine, non-negative levels
//!   with a min, for Q4_K/Q5_K) and `make_qx_quants` (symmetric, for Q6_K).
//!
//! The searches are transcribed operation for operation from `ggml-quants.c` in plain f32
//! (no fused multiply-add), in ggml's evaluation order, because every rounding decides which
//! candidate scale wins and therefore the stored bytes.

use super::common::nearest_int;

/// `get_scale_min_k4(j, q)` → `(scale, min)`, both `0..=63`.
#[inline(always)]
pub(super) fn get_scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// All eight `(scale, min)` pairs of a Q4_K / Q5_K block.
#[inline(always)]
pub(super) fn scales_mins_k4(q: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        (sc[j], m[j]) = get_scale_min_k4(j, q);
    }
    (sc, m)
}

/// Inverse of [`get_scale_min_k4`] for six-bit values, as written by `quantize_row_q4_K_ref`.
pub(super) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0x0f) | ((lm[j] & 0x0f) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// `make_qkx2_quants`: finds `scale` and `min` so that `x ≈ scale·L + min` with
/// `L ∈ 0..=nmax`, trying `nstep + 1` candidate scales around `nmax / (max - min)` and
/// refitting (scale, min) by weighted least squares for each. Returns `(scale, -min)`;
/// `l` receives the levels.
#[allow(clippy::too_many_arguments)]
pub(super) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let mut laux = [0u8; 32];
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmaxf = nmax as f32;
    let mut iscale = nmaxf / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = li as u8;
        let mut diff = scale * li as f32 + min - x[i];
        diff = if use_mad { diff.abs() } else { diff * diff };
        best_error += weights[i] * diff;
    }
    if nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = li as u8;
            let w = weights[i];
            let lf = li as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let mut diff = this_scale * laux[i] as f32 + this_min - x[i];
                diff = if use_mad { diff.abs() } else { diff * diff };
                cur_error += weights[i] * diff;
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Below this magnitude a group counts as all zero (`GROUP_MAX_EPS`).
pub(super) const GROUP_MAX_EPS: f32 = 1e-15;

/// `make_qx_quants` with `rmse_type = 1` and no importance weights (`w = x²`), the only mode
/// `quantize_row_q6_K_ref` uses: symmetric levels `L - nmax ∈ -nmax..nmax`, trying 18 scales
/// around `-nmax / max` and keeping the best weighted least-squares fit. `l` receives
/// `L ∈ 0..2·nmax`; returns the scale.
pub(super) fn make_qx_quants_rmse1(nmax: i32, x: &[f32], l: &mut [i8]) -> f32 {
    let n = x.len();
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l[..n].fill(0);
        return 0.0;
    }
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        l[i] = (li + nmax) as i8;
        let w = x[i] * x[i];
        let lf = li as f32;
        sumlx += w * x[i] * lf;
        suml2 += w * lf * lf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let lf = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
            let w = v * v;
            sumlx += w * v * lf;
            suml2 += w * lf * lf;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
                l[i] = (nmax + li) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_packing_round_trips_every_six_bit_value() {
        for seed in 0..64usize {
            let ls: [u8; 8] = std::array::from_fn(|j| ((seed * 7 + j * 9) & 63) as u8);
            let lm: [u8; 8] = std::array::from_fn(|j| ((seed * 13 + j * 5 + 1) & 63) as u8);
            let packed = pack_scale_min_k4(&ls, &lm);
            assert_eq!(scales_mins_k4(&packed), (ls, lm));
        }
    }

    #[test]
    fn qkx2_fits_an_affine_grid() {
        let x: Vec<f32> = (0..32).map(|i| 0.25 * i as f32 - 1.0).collect();
        let w = vec![1.0f32; 32];
        let mut l = [0u8; 32];
        let (scale, neg_min) = make_qkx2_quants(15, &x, &w, &mut l, -1.0, 0.1, 20, false);
        for (xi, li) in x.iter().zip(l) {
            assert!((scale * li as f32 - neg_min - xi).abs() <= 0.5 * scale + 1e-6);
        }
    }

    #[test]
    fn qx_rmse1_levels_stay_in_range() {
        let x: Vec<f32> = (0..16).map(|i| ((i * 37) % 11) as f32 - 5.3).collect();
        let mut l = [0i8; 16];
        let scale = make_qx_quants_rmse1(32, &x, &mut l);
        assert!(l.iter().all(|&v| (0..64).contains(&v)));
        let err: f32 = x
            .iter()
            .zip(l)
            .map(|(xi, li)| (xi - scale * (li as f32 - 32.0)).abs())
            .fold(0.0, f32::max);
        assert!(err <= 0.5 * scale.abs() + 1e-5, "{err} vs scale {scale}");
    }
}
