//! Floating-point GEMM for F32 / F16 / BF16 weights: `outT[j][i] = Σₜ w[j][t]·x[i][t]` with
//! f32 activations and f32 accumulation.
//!
//! Register-blocked micro-kernel (AVX-512 in `gemm_avx512.rs`, else AVX2 + FMA, chosen at run
//! time; portable scalar otherwise). The AVX2 form:
//! a tile of `R ≤ 3` weight rows × `C ≤ 4` activation rows keeps `R·C` 8-lane accumulators in
//! registers (12 of the 16 ymm registers for the full 3×4 tile). Each step loads `R` weight
//! vectors (widened from f16/bf16 in registers, never written back) and `C` activation
//! vectors for `R·C` fused multiply-adds, so a batch of rows reuses every weight load `C`
//! times and every activation load `R` times. Activation rows are walked in blocks that stay
//! in L2 while a task's weight rows pass over them.
//!
//! Decode (`n = 1`) is a matrix-vector product bound by weight bandwidth: the `R × 1` tile
//! prefetches the weight stream ahead.
//!
//! Every output is the same reduction whatever the tile: 8 lanes over `k` (one accumulator,
//! sequential fused multiply-adds), a fixed lane reduction, then a scalar tail. So a row's
//! result does not depend on how many rows the batch has (batch invariance). The order differs
//! from a sequential dot product; results agree with the scalar reference to f32 rounding.

use super::quant::WeightFormat;

/// Activation rows per block: 64 rows of a 2,048-wide model are 512 KiB of f32.
const ROW_BLOCK: usize = 64;

/// Computes `dst[i · ldo + j] = Σₜ w[j][t] · x[i][t]` for the `rows` consecutive weight rows
/// stored in `w` (`rows · k` elements of `format`, which must be F32, F16 or BF16) and the `n`
/// activation rows of `x`.
///
/// # Safety
/// `dst` must be valid for writing `dst[i · ldo + j]` for `i < n`, `j < rows`, and no other
/// thread may write those elements during the call.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm_rows(
    format: WeightFormat,
    w: &[u8],
    rows: usize,
    x: &[f32],
    n: usize,
    k: usize,
    dst: *mut f32,
    ldo: usize,
) {
    assert!(
        w.len() == rows * format.row_bytes(k) && x.len() >= n * k && (n <= 1 || ldo >= rows),
        "gemm_rows: bad sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if super::isa::avx512() {
        // SAFETY: the CPU supports AVX-512 F and BW (checked above); sizes were checked above.
        super::gemm_avx512::gemm_rows(format, w, rows, x, n, k, dst, ldo);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if super::isa::avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above); sizes were checked above.
        avx2::gemm_rows(format, w, rows, x, n, k, dst, ldo);
        return;
    }
    scalar::gemm_rows(format, w, rows, x, n, k, dst, ldo);
}

pub(super) mod scalar {
    use super::super::quant::{dequantize_row, WeightFormat};

    /// The portable path and the reference the SIMD path is tested against. Each output is
    /// the same dot product of one row pair whatever `n` is.
    ///
    /// # Safety
    /// As [`super::gemm_rows`].
    #[allow(clippy::too_many_arguments)]
    pub(in super::super) unsafe fn gemm_rows(
        format: WeightFormat,
        w: &[u8],
        rows: usize,
        x: &[f32],
        n: usize,
        k: usize,
        dst: *mut f32,
        ldo: usize,
    ) {
        let rb = format.row_bytes(k);
        let mut buf = [0.0f32; 1024];
        let mut heap = Vec::new();
        let wrow: &mut [f32] = if k <= buf.len() {
            &mut buf[..k]
        } else {
            heap.resize(k, 0.0);
            &mut heap
        };
        for j in 0..rows {
            dequantize_row(format, &w[j * rb..(j + 1) * rb], wrow);
            for i in 0..n {
                *dst.add(i * ldo + j) = super::super::ops::dot_f32(&x[i * k..(i + 1) * k], wrow);
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

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gemm_rows(
        format: WeightFormat,
        w: &[u8],
        rows: usize,
        x: &[f32],
        n: usize,
        k: usize,
        dst: *mut f32,
        ldo: usize,
    ) {
        match format {
            WeightFormat::F32 => rows_of::<F32>(w, rows, x, n, k, dst, ldo),
            WeightFormat::F16 => rows_of::<F16>(w, rows, x, n, k, dst, ldo),
            WeightFormat::BF16 => rows_of::<Bf16>(w, rows, x, n, k, dst, ldo),
            other => unreachable!("gemm_rows on {other:?}"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn rows_of<L: Load>(
        w: &[u8],
        rows: usize,
        x: &[f32],
        n: usize,
        k: usize,
        dst: *mut f32,
        ldo: usize,
    ) {
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let row_bytes = k * L::BYTES;
        if n == 1 {
            // Four rows at a time: four weight streams, four FMA chains (one accumulator per row,
            // two FMAs per row each iteration). Six rows (six streams) decoded 8-12 % slower on a
            // 2-core Xeon, bound by memory, not by FMA latency.
            let mut j = 0;
            while j + 4 <= rows {
                matvec::<L, 4>(wp.add(j * row_bytes), row_bytes, xp, k, dst.add(j));
                j += 4;
            }
            let (w0, d0) = (wp.add(j * row_bytes), dst.add(j));
            match rows - j {
                3 => matvec::<L, 3>(w0, row_bytes, xp, k, d0),
                2 => matvec::<L, 2>(w0, row_bytes, xp, k, d0),
                1 => matvec::<L, 1>(w0, row_bytes, xp, k, d0),
                _ => {}
            }
            return;
        }
        let mut i0 = 0;
        while i0 < n {
            let nb = ROW_BLOCK.min(n - i0);
            let mut j = 0;
            while j + 3 <= rows {
                panel::<L, 3>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, ldo);
                j += 3;
            }
            match rows - j {
                2 => panel::<L, 2>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, ldo),
                1 => panel::<L, 1>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, ldo),
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
        dst: *mut f32,
        j: usize,
        ldo: usize,
    ) {
        let mut i = i0;
        let end = i0 + nb;
        while i + 4 <= end {
            let out = tile::<L, R, 4>(w, row_bytes, x.add(i * k), k);
            store(dst, &out, j, i, ldo);
            i += 4;
        }
        match end - i {
            3 => store(
                dst,
                &tile::<L, R, 3>(w, row_bytes, x.add(i * k), k),
                j,
                i,
                ldo,
            ),
            2 => store(
                dst,
                &tile::<L, R, 2>(w, row_bytes, x.add(i * k), k),
                j,
                i,
                ldo,
            ),
            1 => store(
                dst,
                &tile::<L, R, 1>(w, row_bytes, x.add(i * k), k),
                j,
                i,
                ldo,
            ),
            _ => {}
        }
    }

    #[inline(always)]
    unsafe fn store<const R: usize, const C: usize>(
        dst: *mut f32,
        out: &[[f32; C]; R],
        j: usize,
        i: usize,
        ldo: usize,
    ) {
        for (r, row) in out.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                *dst.add((i + c) * ldo + j + r) = *v;
            }
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

    /// `R` weight rows × one activation row: one accumulator per row, in the order of
    /// [`tile`] (so a row's result is the same bits alone as in a batch), with the weight
    /// stream prefetched ahead; the `R` rows' chains hide the FMA latency.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn matvec<L: Load, const R: usize>(
        w: *const u8,
        row_bytes: usize,
        x: *const f32,
        k: usize,
        dst: *mut f32,
    ) {
        let mut acc = [_mm256_setzero_ps(); R];
        let mut t = 0;
        while t + 16 <= k {
            let x0 = _mm256_loadu_ps(x.add(t));
            let x1 = _mm256_loadu_ps(x.add(t + 8));
            for r in 0..R {
                let p = w.add(r * row_bytes);
                _mm_prefetch::<_MM_HINT_T0>(
                    p.wrapping_add(t * L::BYTES + STREAM_PREFETCH_BYTES) as *const i8
                );
                acc[r] = _mm256_fmadd_ps(L::load8(p, t), x0, acc[r]);
                acc[r] = _mm256_fmadd_ps(L::load8(p, t + 8), x1, acc[r]);
            }
            t += 16;
        }
        if t + 8 <= k {
            let x0 = _mm256_loadu_ps(x.add(t));
            for r in 0..R {
                acc[r] = _mm256_fmadd_ps(L::load8(w.add(r * row_bytes), t), x0, acc[r]);
            }
            t += 8;
        }
        for r in 0..R {
            let mut s = hsum(acc[r]);
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

    type GemmRows = unsafe fn(WeightFormat, &[u8], usize, &[f32], usize, usize, *mut f32, usize);

    /// The SIMD forms this CPU can run, each called directly (whatever `KESTREL_CPU_ISA`
    /// says); a form the CPU lacks is skipped with a printed reason.
    fn simd_paths() -> Vec<(&'static str, GemmRows)> {
        let mut paths: Vec<(&'static str, GemmRows)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                paths.push(("avx2", avx2::gemm_rows));
            } else {
                eprintln!("skipped: the AVX2 float GEMM (this CPU lacks AVX2/FMA)");
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                paths.push(("avx512", super::super::gemm_avx512::gemm_rows));
            } else {
                eprintln!("skipped: the AVX-512 float GEMM (this CPU lacks AVX-512 F/BW)");
            }
        }
        paths
    }

    /// The same bits for a row whatever the batch, on each SIMD form.
    #[test]
    fn simd_rows_are_batch_invariant() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        // k = 1,100: the AVX-512 path's passes over 512-wide slices of the inner dimension.
        for (rows, k) in [(13, 77), (9, 1100)] {
            for format in [WeightFormat::F32, WeightFormat::F16, WeightFormat::BF16] {
                let wv: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let rb = format.row_bytes(k);
                let mut w = vec![0u8; rows * rb];
                for (r, d) in w.chunks_exact_mut(rb).enumerate() {
                    quantize_row(format, &wv[r * k..(r + 1) * k], d);
                }
                let n = 71;
                let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                for (path, run) in simd_paths() {
                    let mut all = vec![0.0f32; n * rows];
                    // SAFETY: `n` rows of `rows` floats; the CPU has the path.
                    unsafe { run(format, &w, rows, &x, n, k, all.as_mut_ptr(), rows) };
                    for i in [0, 5, 6, 40, 70] {
                        let mut one = vec![0.0f32; rows];
                        // SAFETY: one row of `rows` floats.
                        unsafe { run(format, &w, rows, &x[i * k..], 1, k, one.as_mut_ptr(), rows) };
                        assert_eq!(
                            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            all[i * rows..(i + 1) * rows]
                                .iter()
                                .map(|v| v.to_bits())
                                .collect::<Vec<_>>(),
                            "{path} {format:?} row {i}"
                        );
                    }
                }
            }
        }
    }

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
                (8, 13, 47),
                (4, 6, 32),
                (11, 12, 100),
                (6, 75, 1043),
            ] {
                let wv: Vec<f32> = (0..rows * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let rb = format.row_bytes(k);
                let mut w = vec![0u8; rows * rb];
                for (r, d) in w.chunks_exact_mut(rb).enumerate() {
                    quantize_row(format, &wv[r * k..(r + 1) * k], d);
                }
                // `[n, rows + 3]`: a row stride wider than the run of columns written.
                let ldo = rows + 3;
                let mut want = vec![f32::NAN; n * ldo];
                // SAFETY: the buffer holds `n` rows of `ldo ≥ rows` floats.
                unsafe { scalar::gemm_rows(format, &w, rows, &x, n, k, want.as_mut_ptr(), ldo) };
                for (path, run) in simd_paths() {
                    let mut got = vec![f32::NAN; n * ldo];
                    // SAFETY: as above; `simd_paths` lists only what the CPU has.
                    unsafe { run(format, &w, rows, &x, n, k, got.as_mut_ptr(), ldo) };
                    assert!(got
                        .chunks(ldo)
                        .all(|r| r[rows..].iter().all(|v| v.is_nan())));
                    for (idx, (g, e)) in got.iter().zip(&want).enumerate() {
                        if idx % ldo >= rows {
                            continue;
                        }
                        assert!(
                            (g - e).abs() <= 1e-5 * (k as f32).sqrt() * 4.0,
                            "{path} {format:?} rows={rows} n={n} k={k} [{idx}]: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}
