//! Batched matmul (prefill, large decode batches) over packed panels, for weights of every
//! storage format: `out [n, m] = x [n, k] · wᵀ`, f32 arithmetic, AVX2 + FMA.
//!
//! The classic outer-product scheme of BLIS-style GEMMs:
//!
//! - Activations are packed once per matmul into panels of [`MR`] rows stored k-major
//!   (`[panel][t][MR]`), so the micro-kernel reads them as one sequential stream and
//!   broadcasts each value straight from memory.
//! - Weights are widened (F16/BF16) or dequantized (Q8_0, Q4_K, ...) to f32 one
//!   [`NR`]-row × [`KC`]-column panel at a time, stored k-major (`[t][NR]`, 16 KiB, L1),
//!   so every weight element is converted once per matmul instead of once per activation
//!   tile.
//! - The micro-kernel keeps an `MR × NR` = 6 × 16 tile of `out` in 12 ymm registers: per `t`,
//!   two weight vectors and six activation broadcasts feed twelve FMAs. No horizontal sums;
//!   partial results of successive `KC` slices are added into `out`.
//! - A task owns up to [`TASK_ROWS`] weight rows. Loop order: `KC` slice (the task's rows
//!   widened once: 64 KiB) → block of [`PANEL_BLOCK`] activation panels (192 KiB) → weight
//!   group (16 rows) → panel. The activation block is read from L3 once and from L2 by the
//!   other groups; each weight panel is converted exactly once per matmul; the task's output
//!   tiles accumulate in a contiguous buffer and reach `out` once; the next slice's weights
//!   are prefetched in software (into L2) while the current one is multiplied, and the next
//!   call's activation panel (into L1) while the current panel is.
//! - The micro-kernel also serves the tiled attention (`attention_tiled.rs`).
//!
//! Threads own disjoint column ranges of `out` (runs of weight rows), so each weight panel is
//! converted by one thread only. Summation order differs from a sequential dot product;
//! results agree with the scalar reference to f32 rounding (tested in `matmul.rs`).

use std::arch::x86_64::*;

use super::quant::{dequantize_row, WeightFormat};
use super::scratch::{prefix, put_task_scratch, take_task_scratch};

/// Activation rows per micro-tile.
pub(super) const MR: usize = 6;
/// Weight rows (output columns) per micro-tile: `NV` ymm vectors.
pub(super) const NR: usize = 8 * NV;
pub(super) const NV: usize = 2;
/// Columns per weight panel; a multiple of every quantization block (32, 256).
pub(super) const KC: usize = 256;
/// Activation panels per L2 block: 32 · 6 rows · 256 columns · 4 bytes = 192 KiB.
const PANEL_BLOCK: usize = 32;
/// Most weight rows one task takes: its widened slice (`TASK_ROWS · KC` f32, 64 KiB) and output
/// tiles (`TASK_ROWS · n` f32) sit in L2 beside an activation block.
pub(super) const TASK_ROWS: usize = 64;

/// Activations packed for the micro-kernel: `[n.div_ceil(MR)][k][MR]` f32, the rows past `n`
/// zero.
pub(super) struct PackedAct<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub k: usize,
}

impl PackedAct<'_> {
    pub(super) fn panels(&self) -> usize {
        self.n.div_ceil(MR)
    }

    /// Panel `p` from column `k0` on: `[k - k0][MR]`.
    #[inline]
    fn panel(&self, p: usize, k0: usize) -> *const f32 {
        self.data[(p * self.k + k0) * MR..].as_ptr()
    }
}

/// Packs `x [n, k]` into `buf` (reused from call to call), one panel per task of the pool.
pub(super) fn pack_act<'a>(x: &[f32], n: usize, k: usize, buf: &'a mut Vec<f32>) -> PackedAct<'a> {
    use rayon::prelude::*;
    let panels = n.div_ceil(MR);
    // Filled by the tasks (a serial zero fill of megabytes would idle the pool).
    let data = buf;
    data.clear();
    data.reserve(panels * k * MR);
    data.spare_capacity_mut()[..panels * k * MR]
        .par_chunks_mut(k * MR)
        .enumerate()
        .for_each(|(p, dst)| {
            let rows = MR.min(n - p * MR);
            for r in 0..MR {
                if r < rows {
                    let src = &x[(p * MR + r) * k..(p * MR + r + 1) * k];
                    for (t, v) in src.iter().enumerate() {
                        dst[t * MR + r].write(*v);
                    }
                } else {
                    for t in 0..k {
                        dst[t * MR + r].write(0.0);
                    }
                }
            }
        });
    // SAFETY: the tasks above wrote all `panels · k · MR` elements.
    unsafe { data.set_len(panels * k * MR) };
    PackedAct { data, n, k }
}

/// `out[i][j0 + j] = Σₜ x[i][t] · w[j][t]` for the `rows` weight rows in `w` (consecutive,
/// `format.row_bytes(k)` bytes each) and every activation row; `out` is `[n, ldo]` row-major.
/// Every element of those columns is written (`out` may start uninitialized).
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out` must be valid for writing `n · ldo` floats, and
/// no other thread may touch columns `j0..j0 + rows` of it during the call.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemm_packed(
    format: WeightFormat,
    w: &[u8],
    rows: usize,
    a: &PackedAct,
    out: *mut f32,
    ldo: usize,
    j0: usize,
) {
    let k = a.k;
    let row_bytes = format.row_bytes(k);
    assert!(w.len() == rows * row_bytes, "gemm_packed: bad weight size");
    let block = format.block_len();
    let panels = a.panels();
    let groups = rows.div_ceil(NR);
    let mut scratch = take_task_scratch();
    let s = &mut *scratch;
    // The task's weight slice, widened: `[group][KC][NR]` (16 KiB per group).
    let bpack = prefix(&mut s.bpack, groups * KC * NR);
    let widened = prefix(&mut s.widened, NR * KC);
    // The task's output tiles, contiguous (`[group][panel][MR][NR]` f32): rows of `out` lie
    // `ldo` floats apart, a stride that maps them onto a few cache sets, so partial sums live
    // here until the last `KC` slice.
    let acc = prefix(&mut s.acc, groups * panels * MR * NR);
    let accp = acc.as_mut_ptr();
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        // Bytes of columns k0..k0+kc within a row (KC is a multiple of every block length).
        let (b0, b1) = (
            format.row_bytes(k0 / block * block),
            format.row_bytes((k0 + kc).div_ceil(block) * block),
        );
        for (g, dst) in bpack.chunks_exact_mut(KC * NR).enumerate() {
            let (jg, nr) = (g * NR, NR.min(rows - g * NR));
            for r in 0..nr {
                let src = &w[(jg + r) * row_bytes..(jg + r + 1) * row_bytes];
                widen(format, &src[b0..b1], &mut widened[r * KC..r * KC + kc]);
            }
            transpose_panel(widened, nr, kc, dst);
        }
        let first = k0 == 0;
        let mut next = NextSlice::new(format, w, rows, k0 + KC, k);
        let per_call = next.lines().div_ceil(groups * panels);
        // Panels in blocks whose slice (`PANEL_BLOCK · MR · KC` floats) stays in L2 while every
        // weight group of the task passes over it.
        for pb in (0..panels).step_by(PANEL_BLOCK) {
            let pe = panels.min(pb + PANEL_BLOCK);
            for g in 0..groups {
                let b = bpack.as_ptr().add(g * KC * NR);
                for p in pb..pe {
                    // The next slice's weights come from DRAM in short runs the hardware
                    // prefetchers do not follow; fetch them a few lines per call meanwhile.
                    next.prefetch(per_call);
                    // The panel the next call reads: the next one of the block, or the block's
                    // first for the next group, or the next block's first.
                    let pn = if p + 1 < pe {
                        p + 1
                    } else if g + 1 < groups {
                        pb
                    } else {
                        pe.min(panels - 1)
                    };
                    let c = micro_kernel(a.panel(p, k0), b, kc, NR, a.panel(pn, k0));
                    let tile = accp.add((g * panels + p) * MR * NR);
                    for (v, src) in c.iter().flatten().enumerate() {
                        let dst = tile.add(8 * v);
                        let sum = if first {
                            *src
                        } else {
                            _mm256_add_ps(_mm256_loadu_ps(dst), *src)
                        };
                        _mm256_storeu_ps(dst, sum);
                    }
                }
            }
        }
    }
    for (g, tiles) in acc.chunks_exact(panels * MR * NR).enumerate() {
        let nr = NR.min(rows - g * NR);
        for (p, tile) in tiles.chunks_exact(MR * NR).enumerate() {
            let mr = MR.min(a.n - p * MR);
            store_tile(tile, out.add(p * MR * ldo + j0 + g * NR), ldo, mr, nr);
        }
    }
    put_task_scratch(scratch);
}

/// The weight bytes of one `KC` slice of every row of a task, walked one cache line at a time
/// for software prefetch.
struct NextSlice {
    base: *const u8,
    row_bytes: usize,
    /// Byte range `b0..b0 + len` within each row.
    b0: usize,
    len: usize,
    rows: usize,
    /// Cursor: row, then byte offset within the range.
    r: usize,
    off: usize,
}

impl NextSlice {
    /// Columns `k0..k0 + KC` of the `rows` rows in `w`; nothing when `k0 ≥ k`.
    fn new(format: WeightFormat, w: &[u8], rows: usize, k0: usize, k: usize) -> Self {
        let block = format.block_len();
        let (b0, b1) = if k0 < k {
            (
                format.row_bytes(k0 / block * block),
                format.row_bytes((k0 + KC).min(k).div_ceil(block) * block),
            )
        } else {
            (0, 0)
        };
        NextSlice {
            base: w.as_ptr(),
            row_bytes: format.row_bytes(k),
            b0,
            len: b1 - b0,
            rows: if k0 < k { rows } else { 0 },
            r: 0,
            off: 0,
        }
    }

    fn lines(&self) -> usize {
        self.rows * self.len.div_ceil(64)
    }

    /// Prefetches the next `count` lines into L2.
    #[inline]
    fn prefetch(&mut self, count: usize) {
        for _ in 0..count {
            if self.r == self.rows {
                return;
            }
            // SAFETY: `r < rows` and `off < len` keep the address inside `w`.
            unsafe {
                let p = self.base.add(self.r * self.row_bytes + self.b0 + self.off);
                _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
            }
            self.off += 64;
            if self.off >= self.len {
                self.off = 0;
                self.r += 1;
            }
        }
    }
}

/// One row's columns (whole blocks in `src`) → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen(format: WeightFormat, src: &[u8], dst: &mut [f32]) {
    let (p, d, n) = (src.as_ptr(), dst.as_mut_ptr(), dst.len());
    match format {
        WeightFormat::F16 => {
            let mut t = 0;
            while t + 8 <= n {
                let h = _mm_loadu_si128(p.add(2 * t) as *const __m128i);
                _mm256_storeu_ps(d.add(t), _mm256_cvtph_ps(h));
                t += 8;
            }
            dequantize_row(format, &src[2 * t..], &mut dst[t..]);
        }
        WeightFormat::BF16 => {
            let mut t = 0;
            while t + 8 <= n {
                let h = _mm_loadu_si128(p.add(2 * t) as *const __m128i);
                let v = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
                _mm256_storeu_ps(d.add(t), _mm256_castsi256_ps(v));
                t += 8;
            }
            dequantize_row(format, &src[2 * t..], &mut dst[t..]);
        }
        WeightFormat::Q8_0 => {
            // 34-byte blocks: f16 scale, 32 × i8.
            for b in 0..n / 32 {
                let blk = p.add(34 * b);
                let dscale = _mm256_set1_ps(
                    half::f16::from_bits(u16::from_le_bytes([*blk, *blk.add(1)])).to_f32(),
                );
                for q in 0..4 {
                    let v = _mm_loadl_epi64(blk.add(2 + 8 * q) as *const __m128i);
                    let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                    _mm256_storeu_ps(d.add(32 * b + 8 * q), _mm256_mul_ps(f, dscale));
                }
            }
        }
        _ => dequantize_row(format, src, dst),
    }
}

/// `widened [nr][KC]` (first `kc` columns used) → `bpack [kc][NR]`, rows past `nr` zero.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn transpose_panel(widened: &[f32], nr: usize, kc: usize, bpack: &mut [f32]) {
    let src = widened.as_ptr();
    let dst = bpack.as_mut_ptr();
    if nr < NR {
        bpack[..kc * NR].fill(0.0);
        for r in 0..nr {
            for t in 0..kc {
                *dst.add(t * NR + r) = *src.add(r * KC + t);
            }
        }
        return;
    }
    let mut t = 0;
    while t + 8 <= kc {
        for half in 0..NV {
            let row = |r: usize| _mm256_loadu_ps(src.add((8 * half + r) * KC + t));
            let out = transpose8([
                row(0),
                row(1),
                row(2),
                row(3),
                row(4),
                row(5),
                row(6),
                row(7),
            ]);
            for (q, v) in out.iter().enumerate() {
                _mm256_storeu_ps(dst.add((t + q) * NR + 8 * half), *v);
            }
        }
        t += 8;
    }
    for t in t..kc {
        for r in 0..NR {
            *dst.add(t * NR + r) = *src.add(r * KC + t);
        }
    }
}

/// 8 × 8 transpose of f32 rows.
#[inline(always)]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(s0, s4),
        _mm256_permute2f128_ps::<0x20>(s1, s5),
        _mm256_permute2f128_ps::<0x20>(s2, s6),
        _mm256_permute2f128_ps::<0x20>(s3, s7),
        _mm256_permute2f128_ps::<0x31>(s0, s4),
        _mm256_permute2f128_ps::<0x31>(s1, s5),
        _mm256_permute2f128_ps::<0x31>(s2, s6),
        _mm256_permute2f128_ps::<0x31>(s3, s7),
    ]
}

/// The `MR × NR` tile `c = Σₜ a[t] ⊗ b[t]` over `a [kc][MR]` and `b [kc][NR]` (rows `ldb`
/// floats apart): `c[i][v]` holds output columns `8v..8v+8` of activation row `i`.
///
/// `b` is meant to sit in L1 and `a` to stream from L2. The hardware prefetchers follow `a`
/// only after a few misses, and a panel is just 256 steps long, so the kernel fetches the
/// *next* call's activation panel `a_next [kc][MR]` into L1 as it goes (three lines per eight
/// steps, the rate it reads `a`); pass `a` itself when there is nothing to fetch.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn micro_kernel(
    a: *const f32,
    b: *const f32,
    kc: usize,
    ldb: usize,
    a_next: *const f32,
) -> [[__m256; NV]; MR] {
    let mut c = [[_mm256_setzero_ps(); NV]; MR];
    let step = |c: &mut [[__m256; NV]; MR], t: usize| {
        let mut bv = [_mm256_setzero_ps(); NV];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = _mm256_loadu_ps(b.add(t * ldb + 8 * v));
        }
        for (i, ci) in c.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(t * MR + i));
            for v in 0..NV {
                ci[v] = _mm256_fmadd_ps(av, bv[v], ci[v]);
            }
        }
    };
    let mut t = 0;
    while t + 8 <= kc {
        // Steps t..t + 8 read `8 · MR` floats = 192 bytes = three lines of `a`.
        let pf = a_next.add(t * MR) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(pf);
        _mm_prefetch::<_MM_HINT_T0>(pf.add(64));
        _mm_prefetch::<_MM_HINT_T0>(pf.add(128));
        for u in 0..8 {
            step(&mut c, t + u);
        }
        t += 8;
    }
    for t in t..kc {
        step(&mut c, t);
    }
    c
}

/// `out[i][j] = c[i][j]` (`c` is `[MR][NR]` f32) for the first `mr` rows and `nr` columns.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn store_tile(c: &[f32], out: *mut f32, ldo: usize, mr: usize, nr: usize) {
    for (i, ci) in c.chunks_exact(NR).enumerate().take(mr) {
        std::ptr::copy_nonoverlapping(ci.as_ptr(), out.add(i * ldo), nr);
    }
}
