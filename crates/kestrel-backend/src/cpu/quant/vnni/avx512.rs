//! AVX-512 VNNI tiles over the interleaved layout (`repack.rs`): sixteen weight rows (one per
//! f32 lane) against `N` activation rows. Every `vpdpbusd` multiplies four unsigned weight
//! bytes of sixteen rows by four signed activation bytes broadcast to all lanes; integer
//! partial sums may be grouped in any way (they are exact), and the f32 part is the chain of
//! `reference.rs`, one fused multiply-add per block in order, so a row's result is the same
//! bits for every `N` (batch invariance) and equals the scalar reference.
//!
//! Activation rows are ggml's Q8_0 blocks (`d: f16`, 32 × i8) for Q8_0 weights and Q8_K
//! blocks (`d: f32`, 256 × i8, 16 × i16 sums of 16) for the k-quants; `sums` carries per block
//! what the kernels need beside them: `Σa` (Q8_0) or the four `i16` pairs
//! `(bsum₂ₚ, bsum₂ₚ₊₁)` of 32-element sums (Q4_K).

use std::arch::x86_64::*;

use super::super::super::isa::STREAM_PREFETCH_BYTES;
use super::super::act::Q8_K_BLOCK_BYTES;
use super::super::q8_0;

/// Where one activation row's data lives.
#[derive(Clone, Copy)]
pub struct ActRow {
    /// The converted row (`act_format.row_bytes(k)` bytes).
    pub q: *const u8,
    /// Per-block side sums (see the module doc); unused for Q6_K.
    pub sums: *const i32,
    /// `out[16·group ..]` of this row.
    pub out: *mut f32,
}

#[inline(always)]
unsafe fn bcast(p: *const u8) -> __m512i {
    _mm512_set1_epi32((p as *const i32).read_unaligned())
}

/// Decode (`N = 1`) reads each weight once, at the machine's bandwidth: fetch the line
/// `STREAM_PREFETCH_BYTES` ahead of the one being read (the hardware prefetchers alone keep too
/// few misses in flight). A prefetch past the end of the weights is a harmless hint.
#[inline(always)]
unsafe fn stream_ahead<const N: usize>(p: *const u8) {
    if N == 1 {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(STREAM_PREFETCH_BYTES) as *const i8);
    }
}

#[inline(always)]
unsafe fn f16s(p: *const u8) -> __m512 {
    _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
}

/// Q8_0: quants `[block][g 8][row 16][4]` (`w + 128`), meta `[block] d: [row] f16`.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI and F16C; `quants`/`meta` hold `nb` blocks of one group (quants
/// 64-byte aligned); each row's `q` holds `nb` Q8_0 blocks, `sums` `nb` values, and `out` 16
/// writable floats where `mask` is set.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
pub unsafe fn q8_0_tile<const N: usize>(
    quants: *const u8,
    meta: *const u8,
    nb: usize,
    rows: &[ActRow; N],
    mask: __mmask16,
) {
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let q = quants.add(b * 512);
        // The scales' stream: one line per two blocks.
        stream_ahead::<N>(meta.add(b * 32));
        let dw = f16s(meta.add(b * 32));
        let mut s0 = [_mm512_setzero_si512(); N];
        let mut s1 = [_mm512_setzero_si512(); N];
        for g in (0..8).step_by(2) {
            stream_ahead::<N>(q.add(64 * g));
            stream_ahead::<N>(q.add(64 * g + 64));
            let w0 = _mm512_load_si512(q.add(64 * g) as *const _);
            let w1 = _mm512_load_si512(q.add(64 * g + 64) as *const _);
            for (i, r) in rows.iter().enumerate() {
                let a = r.q.add(b * q8_0::BLOCK_BYTES + 2 + 4 * g);
                s0[i] = _mm512_dpbusd_epi32(s0[i], w0, bcast(a));
                s1[i] = _mm512_dpbusd_epi32(s1[i], w1, bcast(a.add(4)));
            }
        }
        for (i, r) in rows.iter().enumerate() {
            // Σ (w + 128)·a − 128·Σ a = Σ w·a.
            let offset = _mm512_set1_epi32(128 * *r.sums.add(b));
            let isum = _mm512_sub_epi32(_mm512_add_epi32(s0[i], s1[i]), offset);
            let bits = (r.q.add(b * q8_0::BLOCK_BYTES) as *const u16).read_unaligned();
            let da = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))));
            let d = _mm512_mul_ps(dw, _mm512_set1_ps(da));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), d, acc[i]);
        }
    }
    for (i, r) in rows.iter().enumerate() {
        _mm512_mask_storeu_ps(r.out, mask, acc[i]);
    }
}

/// Q4_K: quants `[sb][c 4][g 8][row 16][4]`, meta `[sb] d, dmin: [row] f16,
/// sc: [j 8][row] u8, m: [pair 4][row][2] u8`.
///
/// # Safety
/// As [`q8_0_tile`], with Q8_K activation blocks and `4·nb` side pairs per row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
pub unsafe fn q4_k_tile<const N: usize>(
    quants: *const u8,
    meta: *const u8,
    nb: usize,
    rows: &[ActRow; N],
    mask: __mmask16,
) {
    let m4 = _mm512_set1_epi8(0x0f);
    let mut acc_d = [_mm512_setzero_ps(); N];
    let mut acc_m = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let q = quants.add(b * 2048);
        let m = meta.add(b * 320);
        for line in 0..5 {
            stream_ahead::<N>(m.add(64 * line));
        }
        let mut s = [_mm512_setzero_si512(); N];
        for c in 0..4 {
            let mut lo = [_mm512_setzero_si512(); N];
            let mut hi = [_mm512_setzero_si512(); N];
            for g in 0..8 {
                stream_ahead::<N>(q.add((c * 8 + g) * 64));
                let w = _mm512_load_si512(q.add((c * 8 + g) * 64) as *const _);
                let wl = _mm512_and_si512(w, m4);
                let wh = _mm512_and_si512(_mm512_srli_epi16::<4>(w), m4);
                for (i, r) in rows.iter().enumerate() {
                    let a = r.q.add(b * Q8_K_BLOCK_BYTES + 4 + 64 * c + 4 * g);
                    lo[i] = _mm512_dpbusd_epi32(lo[i], wl, bcast(a));
                    hi[i] = _mm512_dpbusd_epi32(hi[i], wh, bcast(a.add(32)));
                }
            }
            let scl = _mm512_cvtepu8_epi32(_mm_loadu_si128(m.add(64 + 32 * c) as *const __m128i));
            let sch =
                _mm512_cvtepu8_epi32(_mm_loadu_si128(m.add(64 + 32 * c + 16) as *const __m128i));
            for i in 0..N {
                let t = _mm512_add_epi32(
                    _mm512_mullo_epi32(scl, lo[i]),
                    _mm512_mullo_epi32(sch, hi[i]),
                );
                s[i] = _mm512_add_epi32(s[i], t);
            }
        }
        let mut mins = [_mm512_setzero_si512(); N];
        for p in 0..4 {
            let mp =
                _mm512_cvtepu8_epi16(_mm256_loadu_si256(m.add(192 + 32 * p) as *const __m256i));
            for (i, r) in rows.iter().enumerate() {
                let pair = _mm512_set1_epi32(*r.sums.add(4 * b + p));
                mins[i] = _mm512_dpwssd_epi32(mins[i], mp, pair);
            }
        }
        let (dw, dmw) = (f16s(m), f16s(m.add(32)));
        for (i, r) in rows.iter().enumerate() {
            let da = _mm512_set1_ps((r.q.add(b * Q8_K_BLOCK_BYTES) as *const f32).read_unaligned());
            acc_d[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i]), _mm512_mul_ps(dw, da), acc_d[i]);
            acc_m[i] = _mm512_fmadd_ps(
                _mm512_cvtepi32_ps(mins[i]),
                _mm512_mul_ps(dmw, da),
                acc_m[i],
            );
        }
    }
    for (i, r) in rows.iter().enumerate() {
        _mm512_mask_storeu_ps(r.out, mask, _mm512_sub_ps(acc_d[i], acc_m[i]));
    }
}

/// Q6_K: quants `[sb] lo: [u 32][row][4], hi: [t 16][row][4]`, meta `[sb] d: [row] f16,
/// sc: [j 16][row] i8`.
///
/// # Safety
/// As [`q8_0_tile`], with Q8_K activation blocks (`sums` unused).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,fma")]
pub unsafe fn q6_k_tile<const N: usize>(
    quants: *const u8,
    meta: *const u8,
    nb: usize,
    rows: &[ActRow; N],
    mask: __mmask16,
) {
    let m4 = _mm512_set1_epi8(0x0f);
    let m3 = _mm512_set1_epi8(0x03);
    let mut acc = [_mm512_setzero_ps(); N];
    for b in 0..nb {
        let lo = quants.add(b * 3072);
        let hi = lo.add(2048);
        let m = meta.add(b * 288);
        for line in 0..5 {
            stream_ahead::<N>(m.add(64 * line));
        }
        let mut s = [_mm512_setzero_si512(); N];
        for sb in 0..4 {
            // Groups t = 4·sb .. 4·sb + 4 of each quarter: sub-blocks sb, 4 + sb, 8 + sb, 12 + sb.
            let mut part = [[_mm512_setzero_si512(); 4]; N];
            for t in 4 * sb..4 * sb + 4 {
                stream_ahead::<N>(lo.add(t * 64));
                stream_ahead::<N>(lo.add((16 + t) * 64));
                stream_ahead::<N>(hi.add(t * 64));
                let l0 = _mm512_load_si512(lo.add(t * 64) as *const _);
                let l1 = _mm512_load_si512(lo.add((16 + t) * 64) as *const _);
                let h = _mm512_load_si512(hi.add(t * 64) as *const _);
                // The two high bits of each quarter, moved to bits 4..6 of their byte.
                let h0 = _mm512_slli_epi16::<4>(_mm512_and_si512(h, m3));
                let h1 = _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<2>(h), m3));
                let h2 = _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(h), m3));
                let h3 = _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<6>(h), m3));
                let v = [
                    _mm512_or_si512(_mm512_and_si512(l0, m4), h0),
                    _mm512_or_si512(_mm512_and_si512(l1, m4), h1),
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(l0), m4), h2),
                    _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(l1), m4), h3),
                ];
                for (i, r) in rows.iter().enumerate() {
                    let a = r.q.add(b * Q8_K_BLOCK_BYTES + 4 + 4 * t);
                    for (qq, vq) in v.iter().enumerate() {
                        part[i][qq] = _mm512_dpbusd_epi32(part[i][qq], *vq, bcast(a.add(64 * qq)));
                    }
                }
            }
            for qq in 0..4 {
                let j = 4 * qq + sb;
                let sc =
                    _mm512_cvtepi8_epi32(_mm_loadu_si128(m.add(32 + 16 * j) as *const __m128i));
                for (i, r) in rows.iter().enumerate() {
                    // Σ (v − 32)·a = Σ v·a − 32·Σ a over the sub-block.
                    let bsum = (r.q.add(b * Q8_K_BLOCK_BYTES + 260 + 2 * j) as *const i16)
                        .read_unaligned() as i32;
                    let exact = _mm512_sub_epi32(part[i][qq], _mm512_set1_epi32(32 * bsum));
                    s[i] = _mm512_add_epi32(s[i], _mm512_mullo_epi32(sc, exact));
                }
            }
        }
        let dw = f16s(m);
        for (i, r) in rows.iter().enumerate() {
            let da = _mm512_set1_ps((r.q.add(b * Q8_K_BLOCK_BYTES) as *const f32).read_unaligned());
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[i]), _mm512_mul_ps(dw, da), acc[i]);
        }
    }
    for (i, r) in rows.iter().enumerate() {
        _mm512_mask_storeu_ps(r.out, mask, acc[i]);
    }
}
