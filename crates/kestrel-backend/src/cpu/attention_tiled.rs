//! Prefill attention over the f16 KV cache in query tiles (AVX2 + FMA + F16C).
//!
//! The queries of a run of tokens of one sequence, for every head that shares one KV head
//! (`rows = tokens × group`), form the left operand of two small GEMMs computed with the
//! packed GEMM's micro-kernel:
//!
//! - `S [rows, keys] = Q · Kᵀ`: keys are widened from f16 and transposed sixteen at a time
//!   (`[head_dim][16]`), once per tile instead of once per (token, head);
//! - softmax per row over its own causal prefix, into `P` packed `[panel][keys][MR]`;
//! - `O [rows, head_dim] = P · V`: values widened once per block of [`V_BLOCK`] keys.
//!
//! The rounding points are those of the row path in `attention.rs` (ggml's CPU attention):
//! queries rounded to f16, scores in f32, softmax with an f64 sum, probabilities rounded to
//! f16 before `V`. The order of the additions inside `q·k` and `p·V` differs, and the softmax
//! runs eight lanes at a time with a polynomial `exp` (within a few ulp of libm's, as ggml's
//! vector `expf` is).

use std::arch::x86_64::*;
use std::ops::Range;

use half::f16;

use super::gemm_packed::{micro_kernel, transpose_panel, KC, MR, NR, NV};
use super::simd::avx2::exp256;

/// Keys per block of widened values (`V_BLOCK · head_dim` f32, 64 KiB at 128).
const V_BLOCK: usize = 128;

/// Whether a head size fits the tiled kernel: whole 16-wide output chunks, and keys no wider
/// than one transposed panel.
pub(super) fn supports(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(NR) && head_dim <= KC
}

/// One tile's inputs: the queries, the layer's cache and where the sequence's keys live.
pub(super) struct TileInput<'a> {
    /// `[num_tokens, q_cols]` queries, f32.
    pub q: &'a [f32],
    pub q_cols: usize,
    /// The cache, `[slots][slot_width]` f16.
    pub k: &'a [f16],
    pub v: &'a [f16],
    pub slot_width: usize,
    pub block_size: usize,
    /// The sequence's block table.
    pub table: &'a [u32],
    /// `[num_tokens]` positions.
    pub positions: &'a [u32],
    pub group: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Per-thread buffers, reused from tile to tile.
#[derive(Default)]
pub(super) struct TileScratch {
    /// `[panel][head_dim][MR]` queries.
    qpack: Vec<f32>,
    /// `[16][KC]` widened keys, then `[head_dim][16]` transposed.
    kwide: Vec<f32>,
    kt: Vec<f32>,
    /// `[rows][keys]` scores.
    scores: Vec<f32>,
    /// `[panel][keys][MR]` probabilities.
    ppack: Vec<f32>,
    /// `[V_BLOCK][head_dim]` widened values.
    vbuf: Vec<f32>,
    /// `[rows][head_dim]` output.
    obuf: Vec<f32>,
}

/// Attention of `tokens` (one sequence) for the query heads of `kv_head`, written to
/// `out [num_tokens, q_cols]`.
///
/// # Safety
/// The CPU must have AVX2, FMA and F16C; `out` must be valid for `tokens.end · q_cols` floats,
/// and no other thread may write these tokens' columns of these heads during the call. Every
/// slot the block table maps for keys `0..=max position` must lie inside the cache.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn attend_tile(
    inp: &TileInput,
    tokens: Range<usize>,
    kv_head: usize,
    s: &mut TileScratch,
    out: *mut f32,
) {
    let (d, group) = (inp.head_dim, inp.group);
    let rows = tokens.len() * group;
    let panels = rows.div_ceil(MR);
    let num_keys = |r: usize| inp.positions[tokens.start + r / group] as usize + 1;
    let nk_max = (0..rows).map(num_keys).max().unwrap_or(0);
    let nkp = nk_max.next_multiple_of(NR);
    let kv_off = kv_head * d;
    let bs = inp.block_size;
    let slot = |j: usize| (inp.table[j / bs] as usize * bs + j % bs) * inp.slot_width + kv_off;

    // Q, rounded through f16, packed k-major per panel; rows past `rows` stay zero.
    s.qpack.clear();
    s.qpack.resize(panels * d * MR, 0.0);
    for r in 0..rows {
        let h = kv_head * group + r % group;
        let src = &inp.q[(tokens.start + r / group) * inp.q_cols + h * d..][..d];
        let dst = &mut s.qpack[(r / MR) * d * MR + r % MR..];
        let mut rounded = [0.0f32; 8];
        for c in (0..d).step_by(8) {
            let h =
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src[c..].as_ptr()));
            _mm256_storeu_ps(rounded.as_mut_ptr(), _mm256_cvtph_ps(h));
            for (l, v) in rounded.iter().enumerate() {
                dst[(c + l) * MR] = *v;
            }
        }
    }

    // S = Q·Kᵀ, sixteen keys at a time.
    s.scores.clear();
    s.scores.resize(rows * nkp, 0.0);
    s.kwide.resize(NR * KC, 0.0);
    s.kt.resize(KC * NR, 0.0);
    for kb in (0..nk_max).step_by(NR) {
        let nkb = NR.min(nk_max - kb);
        for jj in 0..nkb {
            widen_f16(
                &inp.k[slot(kb + jj)..][..d],
                &mut s.kwide[jj * KC..jj * KC + d],
            );
        }
        transpose_panel(&s.kwide, nkb, d, &mut s.kt);
        for p in 0..panels {
            let q = s.qpack.as_ptr().add(p * d * MR);
            let c = micro_kernel(q, s.kt.as_ptr(), d, NR, q);
            for (i, ci) in c.iter().enumerate().take(rows - p * MR) {
                let dst = s.scores.as_mut_ptr().add((p * MR + i) * nkp + kb);
                for (v, cv) in ci.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(8 * v), *cv);
                }
            }
        }
    }

    // Softmax of each row over its causal prefix; P packed k-major, zero past the prefix.
    s.ppack.clear();
    s.ppack.resize(panels * nkp * MR, 0.0);
    for r in 0..rows {
        softmax_row(
            s.scores.as_mut_ptr().add(r * nkp),
            num_keys(r),
            inp.scale,
            s.ppack.as_mut_ptr().add((r / MR) * nkp * MR + r % MR),
        );
    }

    // O = P·V, one block of widened values at a time.
    s.obuf.clear();
    s.obuf.resize(rows * d, 0.0);
    s.vbuf.resize(V_BLOCK * d, 0.0);
    for vb in (0..nk_max).step_by(V_BLOCK) {
        let nvb = V_BLOCK.min(nk_max - vb);
        for jj in 0..nvb {
            widen_f16(
                &inp.v[slot(vb + jj)..][..d],
                &mut s.vbuf[jj * d..(jj + 1) * d],
            );
        }
        for d0 in (0..d).step_by(NR) {
            for p in 0..panels {
                let a = s.ppack.as_ptr().add((p * nkp + vb) * MR);
                let c = micro_kernel(a, s.vbuf.as_ptr().add(d0), nvb, d, a);
                for (i, ci) in c.iter().enumerate().take(rows - p * MR) {
                    let o = s.obuf.as_mut_ptr().add((p * MR + i) * d + d0);
                    for (v, cv) in ci.iter().enumerate().take(NV) {
                        let ov = o.add(8 * v);
                        _mm256_storeu_ps(ov, _mm256_add_ps(_mm256_loadu_ps(ov), *cv));
                    }
                }
            }
        }
    }

    for r in 0..rows {
        let h = kv_head * group + r % group;
        let dst = out.add((tokens.start + r / group) * inp.q_cols + h * d);
        std::ptr::copy_nonoverlapping(s.obuf.as_ptr().add(r * d), dst, d);
    }
}

/// `p[j · MR] = f16(softmax(scale · row)[j])` for `j < n`, eight lanes at a time: `row` has
/// room for `n` rounded up to 8 (it is overwritten), `p` for as many strided values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn softmax_row(row: *mut f32, n: usize, scale: f32, p: *mut f32) {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let valid = |j: usize| {
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((n - j) as i32), lanes))
    };
    let padded = n.next_multiple_of(8);
    let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut vmax = neg_inf;
    for j in (0..padded).step_by(8) {
        let v = _mm256_mul_ps(_mm256_loadu_ps(row.add(j)), _mm256_set1_ps(scale));
        let v = _mm256_blendv_ps(neg_inf, v, valid(j));
        _mm256_storeu_ps(row.add(j), v);
        vmax = _mm256_max_ps(vmax, v);
    }
    let m = _mm_max_ps(
        _mm256_castps256_ps128(vmax),
        _mm256_extractf128_ps::<1>(vmax),
    );
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let max = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps::<1>(m, m))));
    // Σ exp in f64, as the row path sums.
    let mut sum = _mm256_setzero_pd();
    for j in (0..padded).step_by(8) {
        let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(row.add(j)), max));
        let e = _mm256_and_ps(e, valid(j));
        _mm256_storeu_ps(row.add(j), e);
        sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        sum = _mm256_add_pd(sum, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
    }
    let s2 = _mm_add_pd(_mm256_castpd256_pd128(sum), _mm256_extractf128_pd::<1>(sum));
    let total = _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
    let inv = _mm256_set1_ps((1.0 / total) as f32);
    let mut probs = [0.0f32; 8];
    for j in (0..padded).step_by(8) {
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_mul_ps(
            _mm256_loadu_ps(row.add(j)),
            inv,
        ));
        _mm256_storeu_ps(probs.as_mut_ptr(), _mm256_cvtph_ps(h));
        // Lanes past `n` are zero, as `p` already is there.
        for (l, v) in probs.iter().enumerate().take(n - j) {
            *p.add((j + l) * MR) = *v;
        }
    }
}

/// f16 → f32 for a slice whose length is a multiple of 8.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn widen_f16(src: &[f16], dst: &mut [f32]) {
    debug_assert!(src.len() == dst.len() && src.len().is_multiple_of(8));
    for i in (0..src.len()).step_by(8) {
        let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
    }
}
