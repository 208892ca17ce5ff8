//! Floating-point GEMM for F32 / F16 / BF16 weights: `outT[j][i] = Σₜ w[j][t]·x[i][t]` with
//! f32 activations and f32 accumulation.
//!
//! Register-blocked micro-kernel (AVX2 + FMA, chosen at run time; portable scalar otherwise):
//! a tile of `R ≤ 3` weight rows × `C ≤ 4` activation rows keeps `R·C` 8-lane accumulators in
//! registers (12 of the 16 ymm registers for the full 3×4 tile). Each step loads `R` weight
//! vectors (widened from f16/bf16 in registers, never written back) and `C` activation
//! vectors for `R·C` fused multiply-adds, so a batch of rows reuses every weight load `C`
//! times and every activation load `R` times. Activation rows are walked in blocks that stay
//! in L2 while a task's weight rows pass over them.
//!
//! Decode (`n = 1`) is a matrix-vector product bound by weight bandwidth: the `R × 1` tile
//! uses two accumulators per row to hide FMA latency and prefetches the weight stream ahead.
//!
//! Summation order differs from a sequential dot product (8 lanes, then a lane reduction and a
//! scalar tail); results agree with the scalar reference to f32 rounding.

use super::quant::WeightFormat;

/// Activation rows per block: 64 rows of a 2,048-wide model are 512 KiB of f32.
const ROW_BLOCK: usize = 64;

/// Computes `dst [rows, n] = w[rows, k] · x[n, k]ᵀ` for `rows` consecutive weight rows stored
/// in `w` (`rows · k` elements of `format`, which must be F32, F16 or BF16).
pub(super) fn gemm_rows(
    format: WeightFormat,
    w: &[u8],
    rows: usize,
    x: &[f32],
    n: usize,
    k: usize,
    dst: &mut [f32],
) {
    assert!(
        w.len() == rows * format.row_bytes(k) && x.len() == n * k && dst.len() == rows * n,
        "gemm_rows: bad sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if super::isa::avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); sizes were checked above.
        unsafe { avx2::gemm_rows(format, w, rows, x, n, k, dst) };
        return;
    }
    scalar::gemm_rows(format, w, rows, x, n, k, dst);
}

pub(super) mod scalar {
    use super::super::quant::{dequantize_row, WeightFormat};

    /// The portable path and the reference the SIMD path is tested against.
    pub(in super::super) fn gemm_rows(
        format: WeightFormat,
        w: &[u8],
        rows: usize,
        x: &[f32],
        n: usize,
        k: usize,
        dst: &mut [f32],
    ) {
        let rb = format.row_bytes(k);
        let mut wrow = vec![0.0f32; k];
        for j in 0..rows {
            dequantize_row(format, &w[j * rb..(j + 1) * rb], &mut wrow);
            for i in 0..n {
                dst[j * n + i] = super::super::ops::dot_f32(&x[i * k..(i + 1) * k], &wrow);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::super::isa::STREAM_PREFETCH_BYTES;
    use super::super::quant::WeightFormat;
    use super::super::simd::avx2::hsum;
    use super::ROW_BLOCK;

    /// How one storage format turns into f32 lanes.
    trait Load {
        const BYTES: usize;
        /// Eight elements starting at element `t` of the row at `p`.
        unsafe fn load8(p: *const u8, t: usize) -> __m256;
        unsafe fn load1(p: *const u8, t: usize) -> f32;
    }

    struct F32;
    struct F16;
    struct Bf16;

    impl Load for F32 {
        const BYTES: usize = 4;
        #[inline(always)]
        unsafe fn load8(p: *const u8, t: usize) -> __m256 {
            _mm256_loadu_ps(p.add(4 * t) as *const f32)
        }
        #[inline(always)]
        unsafe fn load1(p: *const u8, t: usize) -> f32 {
            (p.add(4 * t) as *const f32).read_unaligned()
        }
    }

    impl Load for F16 {
        const BYTES: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8, t: usize) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * t) as *const __m128i))
        }
        #[inline(always)]
        unsafe fn load1(p: *const u8, t: usize) -> f32 {
            half::f16::from_bits((p.add(2 * t) as *const u16).read_unaligned()).to_f32()
        }
    }

    impl Load for Bf16 {
        const BYTES: usize = 2;
        #[inline(always)]
        unsafe fn load8(p: *const u8, t: usize) -> __m256 {
            let h = _mm_loadu_si128(p.add(2 * t) as *const __m128i);
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16))
        }
        #[inline(always)]
        unsafe fn load1(p: *const u8, t: usize) -> f32 {
            f32::from_bits(((p.add(2 * t) as *const u16).read_unaligned() as u32) << 16)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm_rows(
        format: WeightFormat,
        w: &[u8],
        rows: usize,
        x: &[f32],
        n: usize,
        k: usize,
        dst: &mut [f32],
    ) {
        match format {
            WeightFormat::F32 => rows_of::<F32>(w, rows, x, n, k, dst),
            WeightFormat::F16 => rows_of::<F16>(w, rows, x, n, k, dst),
            WeightFormat::BF16 => rows_of::<Bf16>(w, rows, x, n, k, dst),
            other => unreachable!("gemm_rows on {other:?}"),
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_of<L: Load>(
        w: &[u8],
        rows: usize,
        x: &[f32],
        n: usize,
        k: usize,
        dst: &mut [f32],
    ) {
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let row_bytes = k * L::BYTES;
        if n == 1 {
            let mut j = 0;
            while j + 3 <= rows {
                matvec::<L, 3>(
                    wp.add(j * row_bytes),
                    row_bytes,
                    xp,
                    k,
                    dst.as_mut_ptr().add(j),
                );
                j += 3;
            }
            match rows - j {
                2 => matvec::<L, 2>(
                    wp.add(j * row_bytes),
                    row_bytes,
                    xp,
                    k,
                    dst.as_mut_ptr().add(j),
                ),
                1 => matvec::<L, 1>(
                    wp.add(j * row_bytes),
                    row_bytes,
                    xp,
                    k,
                    dst.as_mut_ptr().add(j),
                ),
                _ => {}
            }
            return;
        }
        let mut i0 = 0;
        while i0 < n {
            let nb = ROW_BLOCK.min(n - i0);
            let mut j = 0;
            while j + 3 <= rows {
                panel::<L, 3>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, n);
                j += 3;
            }
            match rows - j {
                2 => panel::<L, 2>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, n),
                1 => panel::<L, 1>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, n),
                _ => {}
            }
            i0 += nb;
        }
    }

    /// Weight rows `j..j+R` against activation rows `i0..i0+nb`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn panel<L: Load, const R: usize>(
        w: *const u8,
        row_bytes: usize,
        x: *const f32,
        k: usize,
        i0: usize,
        nb: usize,
        dst: &mut [f32],
        j: usize,
        n: usize,
    ) {
        let mut i = i0;
        let end = i0 + nb;
        while i + 4 <= end {
            let out = tile::<L, R, 4>(w, row_bytes, x.add(i * k), k);
            store(dst, &out, j, i, n);
            i += 4;
        }
        match end - i {
            3 => store(
                dst,
                &tile::<L, R, 3>(w, row_bytes, x.add(i * k), k),
                j,
                i,
                n,
            ),
            2 => store(
                dst,
                &tile::<L, R, 2>(w, row_bytes, x.add(i * k), k),
                j,
                i,
                n,
            ),
            1 => store(
                dst,
                &tile::<L, R, 1>(w, row_bytes, x.add(i * k), k),
                j,
                i,
                n,
            ),
            _ => {}
        }
    }

    #[inline(always)]
    fn store<const R: usize, const C: usize>(
        dst: &mut [f32],
        out: &[[f32; C]; R],
        j: usize,
        i: usize,
        n: usize,
    ) {
        for (r, row) in out.iter().enumerate() {
            dst[(j + r) * n + i..(j + r) * n + i + C].copy_from_slice(row);
        }
    }

    /// `R` weight rows (stride `row_bytes`) × `C` activation rows (stride `k`).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile<L: Load, const R: usize, const C: usize>(
        w: *const u8,
        row_bytes: usize,
        x: *const f32,
        k: usize,
    ) -> [[f32; C]; R] {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut t = 0;
        while t + 8 <= k {
            let mut wv = [_mm256_setzero_ps(); R];
            for (r, v) in wv.iter_mut().enumerate() {
                *v = L::load8(w.add(r * row_bytes), t);
            }
            for c in 0..C {
                let xv = _mm256_loadu_ps(x.add(c * k + t));
                for r in 0..R {
                    acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
                }
            }
            t += 8;
        }
        let mut out = [[0.0f32; C]; R];
        for r in 0..R {
            for c in 0..C {
                let mut s = hsum(acc[r][c]);
                for u in t..k {
                    s += L::load1(w.add(r * row_bytes), u) * *x.add(c * k + u);
                }
                out[r][c] = s;
            }
        }
        out
    }

    /// `R` weight rows × one activation row, two accumulators per row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn matvec<L: Load, const R: usize>(
        w: *const u8,
        row_bytes: usize,
        x: *const f32,
        k: usize,
        dst: *mut f32,
    ) {
        let mut a0 = [_mm256_setzero_ps(); R];
        let mut a1 = [_mm256_setzero_ps(); R];
        let mut t = 0;
        while t + 16 <= k {
            let x0 = _mm256_loadu_ps(x.add(t));
            let x1 = _mm256_loadu_ps(x.add(t + 8));
            for r in 0..R {
                let p = w.add(r * row_bytes);
                _mm_prefetch::<_MM_HINT_T0>(
                    p.wrapping_add(t * L::BYTES + STREAM_PREFETCH_BYTES) as *const i8
                );
                a0[r] = _mm256_fmadd_ps(L::load8(p, t), x0, a0[r]);
                a1[r] = _mm256_fmadd_ps(L::load8(p, t + 8), x1, a1[r]);
            }
            t += 16;
        }
        if t + 8 <= k {
            let x0 = _mm256_loadu_ps(x.add(t));
            for r in 0..R {
                a0[r] = _mm256_fmadd_ps(L::load8(w.add(r * row_bytes), t), x0, a0[r]);
            }
            t += 8;
        }
        for r in 0..R {
            let mut s = hsum(_mm256_add_ps(a0[r], a1[r]));
            for u in t..k {
                s += L::load1(w.add(r * row_bytes), u) * *x.add(u);
            }
            *dst.add(r) = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::quant::quantize_row;
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Every shape class of the kernel (full and partial tiles in both directions, k tails,
    /// more rows than one activation block) against the scalar path.
    #[test]
    fn simd_path_matches_the_scalar_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::BF16] {
            for (rows, n, k) in [
                (1, 1, 1),
                (3, 1, 64),
                (7, 1, 37),
                (5, 2, 24),
                (6, 4, 16),
                (4, 7, 45),
                (9, 70, 33),
                (3, 131, 128),
                (2, 3, 7),
            ] {
                let wv: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let rb = format.row_bytes(k);
                let mut w = vec![0u8; rows * rb];
                for (r, d) in w.chunks_exact_mut(rb).enumerate() {
                    quantize_row(format, &wv[r * k..(r + 1) * k], d);
                }
                let mut got = vec![f32::NAN; rows * n];
                let mut want = vec![f32::NAN; rows * n];
                gemm_rows(format, &w, rows, &x, n, k, &mut got);
                scalar::gemm_rows(format, &w, rows, &x, n, k, &mut want);
                for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - e).abs() <= 1e-5 * (k as f32).sqrt() * 4.0,
                        "{format:?} rows={rows} n={n} k={k} [{idx}]: {g} vs {e}"
                    );
                }
            }
        }
    }
}
