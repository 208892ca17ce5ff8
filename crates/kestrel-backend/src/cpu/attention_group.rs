//! The per-token attention pass over the f16 KV cache on AVX-512, one task per (token, KV head).
//!
//! The row path of `attention.rs` runs one task per (token, query head): every query head of a
//! grouped-query model re-reads its KV head's keys and values and widens them from f16 again
//! (seven times on Qwen2.5-0.5B), and each `q·k` ends in its own horizontal sum. Here one task
//! computes all `group` query heads of one KV head for one token:
//!
//! - `S [group, keys] = Q · Kᵀ`, sixteen keys at a time: each key is widened once into a block
//!   buffer and every head's sixteen dot products are reduced together (a transpose-add tree
//!   that yields one vector of sixteen scores);
//! - softmax per head, sixteen lanes at a time with a polynomial `exp`, the sum in f64;
//! - `O [group, head_dim] += P · V`, each value widened once per block for the whole group.
//!
//! The rounding points are the row path's (ggml's CPU attention): queries rounded to f16, scores
//! in f32, softmax with an f64 sum, probabilities rounded to f16 before `V`; the additions inside
//! `q·k` and `p·V` run in sixteen lanes. A head's result depends only on its own query and its
//! sequence's cache, so the pass is batch-invariant like the row path.

use std::arch::x86_64::*;

use half::f16;

/// Keys per block: one vector of scores.
const KB: usize = 16;
/// Largest head size (sixteen-lane chunks of the block buffers).
const MAX_HEAD_DIM: usize = 256;

/// Whether a head size fits: whole sixteen-lane chunks, at most [`MAX_HEAD_DIM`].
pub(super) fn supports(head_dim: usize) -> bool {
    head_dim > 0 && head_dim.is_multiple_of(16) && head_dim <= MAX_HEAD_DIM
}

/// One (token, KV head) task's inputs.
pub(super) struct GroupInput<'a> {
    /// The token's query row, `[num_heads * head_dim]`.
    pub q: &'a [f32],
    /// The cache, `[slots][slot_width]` f16.
    pub k: &'a [f16],
    pub v: &'a [f16],
    pub slot_width: usize,
    pub block_size: usize,
    /// The sequence's block table.
    pub table: &'a [u32],
    /// Keys the token sees (its position + 1).
    pub num_keys: usize,
    pub kv_head: usize,
    pub group: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Attention of one token for the query heads of `inp.kv_head`, written to
/// `out [group * head_dim]` (the token's output columns of those heads). `scores` and `q16`
/// are the task's buffers (grown as needed).
///
/// # Safety
/// The CPU must have AVX-512 F and F16C; `supports(inp.head_dim)`; every slot the block table
/// maps for keys `0..num_keys` must lie inside the cache.
#[target_feature(enable = "avx512f,f16c,fma")]
pub(super) unsafe fn attend_group(
    inp: &GroupInput,
    scores: &mut Vec<f32>,
    q16: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (d, group, n) = (inp.head_dim, inp.group, inp.num_keys);
    let chunks = d / 16;
    let npad = n.next_multiple_of(KB);
    let kv_off = inp.kv_head * d;
    let bs = inp.block_size;
    let slot = |j: usize| (inp.table[j / bs] as usize * bs + j % bs) * inp.slot_width + kv_off;

    // The group's queries, rounded through f16.
    super::scratch::prefix(q16, group * d);
    let q0 = inp.kv_head * group * d;
    for i in (0..group * d).step_by(16) {
        let x = _mm512_loadu_ps(inp.q.as_ptr().add(q0 + i));
        let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x);
        _mm512_storeu_ps(q16.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
    }

    // S = Q·Kᵀ · scale, one block of sixteen keys at a time; keys past `n` score 0.
    super::scratch::prefix(scores, group * npad);
    let mut kbuf = [_mm512_setzero_ps(); KB * MAX_HEAD_DIM / 16];
    let vscale = _mm512_set1_ps(inp.scale);
    for kb in (0..n).step_by(KB) {
        let nkb = KB.min(n - kb);
        widen_block(inp.k.as_ptr(), (kb..kb + nkb).map(slot), chunks, &mut kbuf);
        for h in 0..group {
            let qh = q16.as_ptr().add(h * d);
            let mut acc = [_mm512_setzero_ps(); KB];
            for (jj, a) in acc.iter_mut().enumerate().take(nkb) {
                let mut s = _mm512_mul_ps(_mm512_loadu_ps(qh), kbuf[jj * chunks]);
                for c in 1..chunks {
                    s = _mm512_fmadd_ps(_mm512_loadu_ps(qh.add(16 * c)), kbuf[jj * chunks + c], s);
                }
                *a = s;
            }
            let s = _mm512_mul_ps(reduce16(&acc), vscale);
            _mm512_storeu_ps(scores.as_mut_ptr().add(h * npad + kb), s);
        }
    }

    // Softmax per head over its `n` keys; probabilities rounded to f16, zero past `n`.
    for h in 0..group {
        softmax_row(scores.as_mut_ptr().add(h * npad), n);
    }

    // O = P·V: each block of values widened once, then every head's sixteen FMAs per chunk.
    for h in 0..group {
        out[h * d..(h + 1) * d].fill(0.0);
    }
    for kb in (0..n).step_by(KB) {
        let nkb = KB.min(n - kb);
        widen_block(inp.v.as_ptr(), (kb..kb + nkb).map(slot), chunks, &mut kbuf);
        for h in 0..group {
            let p = scores.as_ptr().add(h * npad + kb);
            let o = out.as_mut_ptr().add(h * d);
            for c in 0..chunks {
                let mut acc = _mm512_loadu_ps(o.add(16 * c));
                for jj in 0..nkb {
                    acc = _mm512_fmadd_ps(_mm512_set1_ps(*p.add(jj)), kbuf[jj * chunks + c], acc);
                }
                _mm512_storeu_ps(o.add(16 * c), acc);
            }
        }
    }
}

/// The rows of `cache` at element offsets `offsets` (`chunks` × 16 values each), widened into
/// `buf[row * chunks + chunk]`.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn widen_block(
    cache: *const f16,
    offsets: impl Iterator<Item = usize>,
    chunks: usize,
    buf: &mut [__m512],
) {
    for (jj, off) in offsets.enumerate() {
        let src = cache.add(off);
        for c in 0..chunks {
            let h = _mm256_loadu_si256(src.add(16 * c) as *const __m256i);
            buf[jj * chunks + c] = _mm512_cvtph_ps(h);
        }
    }
}

/// The sixteen horizontal sums of `a[0..16]`, in order, as one vector: a transpose-add tree
/// (halves, then quarters, then pairs within 128-bit lanes), the same for every call.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn reduce16(a: &[__m512; KB]) -> __m512 {
    // b[i]: lanes 0..8 hold a[2i]'s halves summed, lanes 8..16 a[2i+1]'s.
    let mut b = [_mm512_setzero_ps(); 8];
    for (i, bi) in b.iter_mut().enumerate() {
        let (x, y) = (a[2 * i], a[2 * i + 1]);
        *bi = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x44>(x, y),
            _mm512_shuffle_f32x4::<0xEE>(x, y),
        );
    }
    // c[i]: 128-bit lane k holds key 4i + k's four partial sums.
    let mut c = [_mm512_setzero_ps(); 4];
    for (i, ci) in c.iter_mut().enumerate() {
        let (x, y) = (b[2 * i], b[2 * i + 1]);
        *ci = _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(x, y),
            _mm512_shuffle_f32x4::<0xDD>(x, y),
        );
    }
    // e0 lane k: keys k and 4 + k, two partials each; e1: keys 8 + k and 12 + k.
    let e0 = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(c[0], c[1]),
        _mm512_shuffle_ps::<0xEE>(c[0], c[1]),
    );
    let e1 = _mm512_add_ps(
        _mm512_shuffle_ps::<0x44>(c[2], c[3]),
        _mm512_shuffle_ps::<0xEE>(c[2], c[3]),
    );
    // Lane 4k + m holds key 4m + k.
    let g = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(e0, e1),
        _mm512_shuffle_ps::<0xDD>(e0, e1),
    );
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(order, g)
}

/// `row[j] = f16(softmax(row[..n])[j])` for `j < n` and 0 up to `n` rounded up to 16 (`row`
/// holds scaled scores there).
#[inline]
#[target_feature(enable = "avx512f,f16c")]
unsafe fn softmax_row(row: *mut f32, n: usize) {
    let padded = n.next_multiple_of(KB);
    let valid = |j: usize| -> __mmask16 {
        if j + 16 <= n {
            0xFFFF
        } else {
            ((1u32 << (n - j)) - 1) as __mmask16
        }
    };
    let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut vmax = neg_inf;
    for j in (0..padded).step_by(16) {
        let v = _mm512_mask_blend_ps(valid(j), neg_inf, _mm512_loadu_ps(row.add(j)));
        vmax = _mm512_max_ps(vmax, v);
    }
    let max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    // Σ exp in f64, as the row path sums.
    let mut sum = _mm512_setzero_pd();
    for j in (0..padded).step_by(16) {
        let e = exp512(_mm512_sub_ps(_mm512_loadu_ps(row.add(j)), max));
        let e = _mm512_maskz_mov_ps(valid(j), e);
        _mm512_storeu_ps(row.add(j), e);
        sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        sum = _mm512_add_pd(
            sum,
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(e),
            ))),
        );
    }
    let inv = _mm512_set1_ps((1.0 / _mm512_reduce_add_pd(sum)) as f32);
    for j in (0..padded).step_by(16) {
        let p = _mm512_mul_ps(_mm512_loadu_ps(row.add(j)), inv);
        let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(p);
        _mm512_storeu_ps(row.add(j), _mm512_cvtph_ps(h));
    }
}

/// `exp(x)` in sixteen lanes: the polynomial of `simd::avx2::exp256` (Cephes' `expf`, within a
/// few ulp of libm's); inputs below −87.3 give about 1e-38.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp512(x: __m512) -> __m512 {
    use super::simd::exp_poly::{LN2_HI, LN2_LO, POLY, X_MIN};
    let x = _mm512_max_ps(x, _mm512_set1_ps(X_MIN));
    let fx = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(fx, _mm512_set1_ps(LN2_LO), r);
    let mut y = _mm512_set1_ps(POLY[0]);
    for c in &POLY[1..] {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(*c));
    }
    let y = _mm512_fmadd_ps(
        y,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    let n = _mm512_cvtps_epi32(fx);
    let pow2 = _mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)));
    _mm512_mul_ps(y, _mm512_castsi512_ps(pow2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The transpose-add tree puts each vector's sum in its own lane, in order.
    #[test]
    fn reduce16_sums_each_vector_into_its_lane() {
        if !super::super::isa::avx512() {
            eprintln!("skipped: no AVX-512 here (or KESTREL_CPU_ISA narrows it)");
            return;
        }
        let vals: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 8.0)
            .collect();
        // SAFETY: AVX-512 F checked above.
        let got = unsafe {
            let a: [__m512; KB] =
                std::array::from_fn(|j| _mm512_loadu_ps(vals.as_ptr().add(16 * j)));
            let mut out = [0.0f32; 16];
            _mm512_storeu_ps(out.as_mut_ptr(), reduce16(&a));
            out
        };
        for (j, g) in got.iter().enumerate() {
            let want: f32 = vals[16 * j..16 * (j + 1)].iter().sum();
            assert!((g - want).abs() < 1e-4, "lane {j}: {g} vs {want}");
        }
    }
}
