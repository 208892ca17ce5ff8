//! The floating-point row GEMM of `gemm.rs` (F32 / F16 / BF16 weights, f32 activations) on
//! AVX-512: 16 lanes per register and, with 32 registers, a tile of `R ≤ 4` weight rows ×
//! `C ≤ 6` activation rows (24 accumulators; per 16 columns, four weight loads widened in
//! registers and six activation loads feed 24 fused multiply-adds).
//!
//! Batch invariance as in `gemm.rs`: every output is one 16-lane accumulator over `k`
//! (sequential fused multiply-adds), the fixed reduction of `_mm512_reduce_add_ps`, then a
//! scalar tail, for the matrix-vector product (`n = 1`) and every tile alike. The order differs
//! from the AVX2 path's (8 lanes), so a process uses one path for every step.

use std::arch::x86_64::*;

use super::isa::STREAM_PREFETCH_BYTES;
use super::quant::WeightFormat;

/// Activation rows per block: 64 rows of a 2,048-wide model are 512 KiB of f32 (in L2).
const ROW_BLOCK: usize = 64;
/// Lanes per register.
const L: usize = 16;
/// Inner-dimension slice per pass of a long-`k` panel: 4 weight rows × 512 f32 = 8 KiB (L1).
const KC: usize = 512;

/// How one storage format turns into f32 lanes.
trait Load {
    const BYTES: usize;
    /// Sixteen elements starting at element `t` of the row at `p`.
    unsafe fn load16(p: *const u8, t: usize) -> __m512;
    unsafe fn load1(p: *const u8, t: usize) -> f32;
}

struct F32;
struct F16;
struct Bf16;

impl Load for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load16(p: *const u8, t: usize) -> __m512 {
        _mm512_loadu_ps(p.add(4 * t) as *const f32)
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, t: usize) -> f32 {
        (p.add(4 * t) as *const f32).read_unaligned()
    }
}

impl Load for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8, t: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * t) as *const __m256i))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, t: usize) -> f32 {
        half::f16::from_bits((p.add(2 * t) as *const u16).read_unaligned()).to_f32()
    }
}

impl Load for Bf16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8, t: usize) -> __m512 {
        let h = _mm256_loadu_si256(p.add(2 * t) as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8, t: usize) -> f32 {
        f32::from_bits(((p.add(2 * t) as *const u16).read_unaligned() as u32) << 16)
    }
}

/// As `gemm::gemm_rows`.
///
/// # Safety
/// The CPU must have AVX-512 F and BW; sizes as checked by `gemm::gemm_rows`; `dst` valid for
/// writing `dst[i · ldo + j]` (`i < n`, `j < rows`), written by no other thread meanwhile.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
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
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn rows_of<T: Load>(
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
    let row_bytes = k * T::BYTES;
    if n == 1 {
        // Four rows at a time: four weight streams, four FMA chains (one accumulator per row,
        // two FMAs per row each iteration). Six rows (six streams) decoded 8-12 % slower on a
        // 2-core Xeon, bound by memory, not by FMA latency.
        let mut j = 0;
        while j + 4 <= rows {
            matvec::<T, 4>(wp.add(j * row_bytes), row_bytes, xp, k, dst.add(j));
            j += 4;
        }
        let (w0, d0) = (wp.add(j * row_bytes), dst.add(j));
        match rows - j {
            3 => matvec::<T, 3>(w0, row_bytes, xp, k, d0),
            2 => matvec::<T, 2>(w0, row_bytes, xp, k, d0),
            1 => matvec::<T, 1>(w0, row_bytes, xp, k, d0),
            _ => {}
        }
        return;
    }
    let mut i0 = 0;
    while i0 < n {
        let nb = ROW_BLOCK.min(n - i0);
        let mut j = 0;
        if T::BYTES != 4 && nb > 6 {
            // Half-precision weights: widen each 4-row panel to f32 once and run its tiles on
            // that, instead of widening it again in every tile (the conversions compete with
            // the multiply-adds for the same ports). Exact, so the results are the same bits.
            PANEL.with(|buf| {
                let mut buf = buf.borrow_mut();
                buf.resize(4 * k, 0.0);
                while j + 4 <= rows {
                    widen::<T>(wp.add(j * row_bytes), row_bytes, 4, k, &mut buf);
                    let wf = buf.as_ptr() as *const u8;
                    panel::<F32, 4>(wf, 4 * k, xp, k, i0, nb, dst, j, ldo);
                    j += 4;
                }
            });
        }
        while j + 4 <= rows {
            panel::<T, 4>(wp.add(j * row_bytes), row_bytes, xp, k, i0, nb, dst, j, ldo);
            j += 4;
        }
        let w0 = wp.add(j * row_bytes);
        match rows - j {
            3 => panel::<T, 3>(w0, row_bytes, xp, k, i0, nb, dst, j, ldo),
            2 => panel::<T, 2>(w0, row_bytes, xp, k, i0, nb, dst, j, ldo),
            1 => panel::<T, 1>(w0, row_bytes, xp, k, i0, nb, dst, j, ldo),
            _ => {}
        }
        i0 += nb;
    }
}

thread_local! {
    /// A 4-row weight panel widened to f32 (`[4, k]`), per compute thread.
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `rows` weight rows of `k` elements (stride `row_bytes`) → f32 `[rows, k]` in `out`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn widen<T: Load>(w: *const u8, row_bytes: usize, rows: usize, k: usize, out: &mut [f32]) {
    for r in 0..rows {
        let src = w.add(r * row_bytes);
        let dst = out.as_mut_ptr().add(r * k);
        let mut t = 0;
        while t + L <= k {
            _mm512_storeu_ps(dst.add(t), T::load16(src, t));
            t += L;
        }
        for u in t..k {
            *dst.add(u) = T::load1(src, u);
        }
    }
}

/// Weight rows `j..j+R` against activation rows `i0..i0+nb`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn panel<T: Load, const R: usize>(
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
    if k > KC {
        return panel_k_blocked::<T, R>(w, row_bytes, x, k, i0, nb, dst, j, ldo);
    }
    let mut i = i0;
    let end = i0 + nb;
    while i + 6 <= end {
        store(
            dst,
            &tile::<T, R, 6>(w, row_bytes, x.add(i * k), k),
            j,
            i,
            ldo,
        );
        i += 6;
    }
    let xi = x.add(i * k);
    match end - i {
        5 => store(dst, &tile::<T, R, 5>(w, row_bytes, xi, k), j, i, ldo),
        4 => store(dst, &tile::<T, R, 4>(w, row_bytes, xi, k), j, i, ldo),
        3 => store(dst, &tile::<T, R, 3>(w, row_bytes, xi, k), j, i, ldo),
        2 => store(dst, &tile::<T, R, 2>(w, row_bytes, xi, k), j, i, ldo),
        1 => store(dst, &tile::<T, R, 1>(w, row_bytes, xi, k), j, i, ldo),
        _ => {}
    }
}

/// [`panel`] for a long inner dimension, in passes of [`KC`]: each pass runs every tile of the
/// activation block over one slice of the weight rows (which stays in L1 across the tiles),
/// keeping the accumulators in memory between passes. Each output lane still sees one chain of
/// fused multiply-adds in `k` order, then the same reduction and tail: the bits of [`tile`].
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn panel_k_blocked<T: Load, const R: usize>(
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
    debug_assert!(nb <= ROW_BLOCK);
    let k16 = k / L * L;
    let mut acc = [[_mm512_setzero_ps(); R]; ROW_BLOCK];
    for k0 in (0..k16).step_by(KC) {
        let k1 = (k0 + KC).min(k16);
        let mut i = 0;
        while i + 6 <= nb {
            tile_pass::<T, R, 6>(w, row_bytes, x.add((i0 + i) * k), k, k0..k1, &mut acc[i..]);
            i += 6;
        }
        let (xi, a) = (x.add((i0 + i) * k), &mut acc[i..]);
        match nb - i {
            5 => tile_pass::<T, R, 5>(w, row_bytes, xi, k, k0..k1, a),
            4 => tile_pass::<T, R, 4>(w, row_bytes, xi, k, k0..k1, a),
            3 => tile_pass::<T, R, 3>(w, row_bytes, xi, k, k0..k1, a),
            2 => tile_pass::<T, R, 2>(w, row_bytes, xi, k, k0..k1, a),
            1 => tile_pass::<T, R, 1>(w, row_bytes, xi, k, k0..k1, a),
            _ => {}
        }
    }
    for (c, acc_c) in acc.iter().enumerate().take(nb) {
        let xc = x.add((i0 + c) * k);
        for (r, a) in acc_c.iter().enumerate() {
            let mut s = _mm512_reduce_add_ps(*a);
            for u in k16..k {
                s += T::load1(w.add(r * row_bytes), u) * *xc.add(u);
            }
            *dst.add((i0 + c) * ldo + j + r) = s;
        }
    }
}

/// One pass of [`panel_k_blocked`]: `C` activation rows (stride `k`) against `R` weight rows
/// over `t` in `ks` (whole vectors), accumulating into `acc[c][r]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn tile_pass<T: Load, const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    x: *const f32,
    k: usize,
    ks: std::ops::Range<usize>,
    acc: &mut [[__m512; R]],
) {
    let mut a = [[_mm512_setzero_ps(); C]; R];
    for (c, acc_c) in acc.iter().enumerate().take(C) {
        for r in 0..R {
            a[r][c] = acc_c[r];
        }
    }
    for t in ks.step_by(L) {
        let mut wv = [_mm512_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = T::load16(w.add(r * row_bytes), t);
        }
        for c in 0..C {
            let xv = _mm512_loadu_ps(x.add(c * k + t));
            for (a_r, wv_r) in a.iter_mut().zip(&wv) {
                a_r[c] = _mm512_fmadd_ps(*wv_r, xv, a_r[c]);
            }
        }
    }
    for (c, acc_c) in acc.iter_mut().enumerate().take(C) {
        for r in 0..R {
            acc_c[r] = a[r][c];
        }
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
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn tile<T: Load, const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    x: *const f32,
    k: usize,
) -> [[f32; C]; R] {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let mut t = 0;
    while t + L <= k {
        let mut wv = [_mm512_setzero_ps(); R];
        for (r, v) in wv.iter_mut().enumerate() {
            *v = T::load16(w.add(r * row_bytes), t);
        }
        for c in 0..C {
            let xv = _mm512_loadu_ps(x.add(c * k + t));
            for (acc_r, wv_r) in acc.iter_mut().zip(&wv) {
                acc_r[c] = _mm512_fmadd_ps(*wv_r, xv, acc_r[c]);
            }
        }
        t += L;
    }
    let mut out = [[0.0f32; C]; R];
    for (r, (out_r, acc_r)) in out.iter_mut().zip(&acc).enumerate() {
        for (c, (o, a)) in out_r.iter_mut().zip(acc_r).enumerate() {
            let mut s = _mm512_reduce_add_ps(*a);
            for u in t..k {
                s += T::load1(w.add(r * row_bytes), u) * *x.add(c * k + u);
            }
            *o = s;
        }
    }
    out
}

/// `R` weight rows × one activation row: one accumulator per row, in the order of [`tile`]
/// (a row's result is the same bits alone as in a batch), the weight stream prefetched ahead.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn matvec<T: Load, const R: usize>(
    w: *const u8,
    row_bytes: usize,
    x: *const f32,
    k: usize,
    dst: *mut f32,
) {
    let mut acc = [_mm512_setzero_ps(); R];
    let mut t = 0;
    while t + 2 * L <= k {
        let x0 = _mm512_loadu_ps(x.add(t));
        let x1 = _mm512_loadu_ps(x.add(t + L));
        for (r, a) in acc.iter_mut().enumerate() {
            let p = w.add(r * row_bytes);
            _mm_prefetch::<_MM_HINT_T0>(
                p.wrapping_add(t * T::BYTES + STREAM_PREFETCH_BYTES) as *const i8
            );
            *a = _mm512_fmadd_ps(T::load16(p, t), x0, *a);
            *a = _mm512_fmadd_ps(T::load16(p, t + L), x1, *a);
        }
        t += 2 * L;
    }
    if t + L <= k {
        let x0 = _mm512_loadu_ps(x.add(t));
        for (r, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(T::load16(w.add(r * row_bytes), t), x0, *a);
        }
        t += L;
    }
    for (r, a) in acc.iter().enumerate() {
        let mut s = _mm512_reduce_add_ps(*a);
        for u in t..k {
            s += T::load1(w.add(r * row_bytes), u) * *x.add(u);
        }
        *dst.add(r) = s;
    }
}
