//! AVX2 (+FMA, F16C) kernels for every dot product, chosen at run time by
//! [`vec_dot_kernel`]. Q8_0, Q4_K and Q6_K (the Q8_0 and Q4_K_M models) use ggml's own x86
//! AVX2 arithmetic, which is what llama.cpp runs on these CPUs: the same integer sums as the
//! reference, f32 rounding apart; they also come in four-activation-row versions. Every other kernel returns exactly what its scalar reference
//! returns:
//!
//! - Integer parts are exact whatever the order, so only the f32 arithmetic has to follow the
//!   reference. 32-value formats: four blocks at a time, their i32 sums in one vector, the
//!   per-block f32 terms computed lane-wise with the scalar operations (no FMA), then added
//!   to `sumf` block after block. K-quants: the eight f32 lanes of ggml's generic code, fed
//!   with per-lane i32 sums (bytes shuffled so `maddubs` pairs elements `t` and `t + 8`,
//!   which share a lane).
//! - F32 / F16 / BF16 use the lane layout and reduction tree documented in `float.rs`.
//!
//! `maddubs` (u8 × i8 → i16 pairs, saturating) never saturates here: weight magnitudes are at
//! most 63 after the offsets below and activation quants are in `-127..=127`
//! (`quantize_act_row` never produces -128; a Q8_0 *weight* of -128 is handled exactly).
//! The unit tests at the bottom compare every kernel with its scalar reference bit for bit.

use std::arch::x86_64::*;

use super::act::{Q8_1_BLOCK_BYTES, Q8_K_BLOCK_BYTES, QK_K};
use super::common::f32_at;
use super::k_common::scales_mins_k4;
use super::{float, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, VecDotFn, WeightFormat};

/// Whether the kernels below run: the CPU has AVX2, FMA and F16C and `KESTREL_CPU_ISA` allows them.
pub(super) fn available() -> bool {
    super::super::isa::avx2()
}

/// The AVX2 kernel of a format, `None` when the CPU lacks AVX2.
pub(super) fn vec_dot_kernel(fmt: WeightFormat) -> Option<VecDotFn> {
    if !available() {
        return None;
    }
    let f: VecDotFn = match fmt {
        WeightFormat::F32 => vec_dot_f32,
        WeightFormat::F16 => vec_dot_f16,
        WeightFormat::BF16 => vec_dot_bf16,
        WeightFormat::Q8_0 => vec_dot_q8_0,
        WeightFormat::Q4_0 => vec_dot_q4_0,
        WeightFormat::Q5_0 => vec_dot_q5_0,
        WeightFormat::Q4_K => vec_dot_q4_k,
        WeightFormat::Q5_K => vec_dot_q5_k,
        WeightFormat::Q6_K => vec_dot_q6_k,
        WeightFormat::Q4_1 => vec_dot_q4_1,
        WeightFormat::Q5_1 => vec_dot_q5_1,
    };
    Some(f)
}

fn check(name: &str, w: &[u8], a: &[u8], k: usize, qk: usize, wb: usize, ab: usize) -> usize {
    let nb = k / qk;
    assert!(
        k % qk == 0 && w.len() == nb * wb && a.len() == nb * ab,
        "{name} vec_dot: bad row sizes for k = {k}"
    );
    nb
}

// The safe wrappers below are only handed out by `vec_dot_kernel` after `available()`, and
// check the slice lengths every unsafe kernel relies on.

fn vec_dot_f32(w: &[u8], a: &[u8], k: usize) -> f32 {
    check("f32", w, a, k, 1, 4, 4);
    unsafe { f32_avx2(w, a, k) }
}

fn vec_dot_f16(w: &[u8], a: &[u8], k: usize) -> f32 {
    check("f16", w, a, k, 1, 2, 2);
    unsafe { f16_avx2(w, a, k) }
}

fn vec_dot_bf16(w: &[u8], a: &[u8], k: usize) -> f32 {
    check("bf16", w, a, k, 1, 2, 2);
    unsafe { bf16_avx2(w, a, k) }
}

fn vec_dot_q8_0(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q8_0", w, a, k, 32, q8_0::BLOCK_BYTES, q8_0::BLOCK_BYTES);
    unsafe { q8_0_rows::<1>(w, a.as_ptr(), 0, nb)[0] }
}

fn vec_dot_q4_0(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q4_0", w, a, k, 32, q4_0::BLOCK_BYTES, q8_0::BLOCK_BYTES);
    unsafe { q4_0_avx2(w, a, nb) }
}

fn vec_dot_q5_0(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q5_0", w, a, k, 32, q5_0::BLOCK_BYTES, q8_0::BLOCK_BYTES);
    unsafe { q5_0_avx2(w, a, nb) }
}

fn vec_dot_q4_1(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q4_1", w, a, k, 32, q4_1::BLOCK_BYTES, Q8_1_BLOCK_BYTES);
    unsafe { q4_1_avx2(w, a, nb) }
}

fn vec_dot_q5_1(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q5_1", w, a, k, 32, q5_1::BLOCK_BYTES, Q8_1_BLOCK_BYTES);
    unsafe { q5_1_avx2(w, a, nb) }
}

fn vec_dot_q4_k(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q4_K", w, a, k, QK_K, q4_k::BLOCK_BYTES, Q8_K_BLOCK_BYTES);
    unsafe { q4_k_rows::<1>(w, a.as_ptr(), 0, nb)[0] }
}

fn vec_dot_q5_k(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q5_K", w, a, k, QK_K, q5_k::BLOCK_BYTES, Q8_K_BLOCK_BYTES);
    unsafe { q5_k_avx2(w, a, nb) }
}

fn vec_dot_q6_k(w: &[u8], a: &[u8], k: usize) -> f32 {
    let nb = check("q6_K", w, a, k, QK_K, q6_k::BLOCK_BYTES, Q8_K_BLOCK_BYTES);
    unsafe { q6_k_rows::<1>(w, a.as_ptr(), 0, nb)[0] }
}

fn vec_dot4_q8_0(w: &[u8], a: &[u8], k: usize) -> [f32; 4] {
    let arb = a.len() / 4;
    let nb = check(
        "q8_0",
        w,
        &a[..arb],
        k,
        32,
        q8_0::BLOCK_BYTES,
        q8_0::BLOCK_BYTES,
    );
    assert_eq!(a.len(), 4 * arb, "q8_0 vec_dot4: four activation rows");
    unsafe { q8_0_rows::<4>(w, a.as_ptr(), arb, nb) }
}

fn vec_dot4_q4_k(w: &[u8], a: &[u8], k: usize) -> [f32; 4] {
    let arb = a.len() / 4;
    let nb = check(
        "q4_K",
        w,
        &a[..arb],
        k,
        QK_K,
        q4_k::BLOCK_BYTES,
        Q8_K_BLOCK_BYTES,
    );
    assert_eq!(a.len(), 4 * arb, "q4_K vec_dot4: four activation rows");
    unsafe { q4_k_rows::<4>(w, a.as_ptr(), arb, nb) }
}

fn vec_dot4_q6_k(w: &[u8], a: &[u8], k: usize) -> [f32; 4] {
    let arb = a.len() / 4;
    let nb = check(
        "q6_K",
        w,
        &a[..arb],
        k,
        QK_K,
        q6_k::BLOCK_BYTES,
        Q8_K_BLOCK_BYTES,
    );
    assert_eq!(a.len(), 4 * arb, "q6_K vec_dot4: four activation rows");
    unsafe { q6_k_rows::<4>(w, a.as_ptr(), arb, nb) }
}

fn vec_dot_w4_q8_0(w: &[u8], a: &[u8], k: usize) -> [f32; 4] {
    let wrb = w.len() / 4;
    let nb = check(
        "q8_0",
        &w[..wrb],
        a,
        k,
        32,
        q8_0::BLOCK_BYTES,
        q8_0::BLOCK_BYTES,
    );
    assert_eq!(w.len(), 4 * wrb, "q8_0 vec_dot_w4: four weight rows");
    unsafe { q8_0_weight_rows::<4>(w.as_ptr(), wrb, a.as_ptr(), nb) }
}

/// The four-weight-row kernel of a format, where one exists (`None` without AVX2).
pub(super) fn vec_dot_w4_kernel(fmt: WeightFormat) -> Option<super::VecDotW4Fn> {
    if !available() {
        return None;
    }
    match fmt {
        WeightFormat::Q8_0 => Some(vec_dot_w4_q8_0),
        _ => None,
    }
}

/// The four-activation-row kernel of a format, where one exists (`None` without AVX2).
pub(super) fn vec_dot4_kernel(fmt: WeightFormat) -> Option<super::VecDot4Fn> {
    if !available() {
        return None;
    }
    match fmt {
        WeightFormat::Q8_0 => Some(vec_dot4_q8_0),
        WeightFormat::Q4_K => Some(vec_dot4_q4_k),
        WeightFormat::Q6_K => Some(vec_dot4_q6_k),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Prefetches the weight stream [`STREAM_PREFETCH_BYTES`](super::super::isa::STREAM_PREFETCH_BYTES)
/// ahead of `p`.
#[inline(always)]
unsafe fn prefetch(p: *const u8) {
    _mm_prefetch::<_MM_HINT_T0>(
        p.wrapping_add(super::super::isa::STREAM_PREFETCH_BYTES) as *const i8
    );
}

#[inline(always)]
unsafe fn load256(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}

/// f16 at `p` → f32 with F16C (exact, like `GGML_CPU_FP16_TO_FP32`).
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    let bits = u16::from_le_bytes([*p, *p.add(1)]);
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)))
}

#[inline(always)]
unsafe fn hsum_i32_8(a: __m256i) -> i32 {
    let sum128 = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
    let hi64 = _mm_unpackhi_epi64(sum128, sum128);
    let sum64 = _mm_add_epi32(hi64, sum128);
    let hi32 = _mm_shuffle_epi32::<0b10_11_00_01>(sum64);
    _mm_cvtsi128_si32(_mm_add_epi32(sum64, hi32))
}

/// Σ x·y of 32 signed bytes as 8 i32 partial sums (sign trick: |x| · sign(y, x)).
#[inline(always)]
unsafe fn mul_sum_i8_pairs(x: __m256i, y: __m256i) -> __m256i {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
}

/// 32 nibbles of 16 bytes: low nibbles in bytes 0..16, high nibbles in bytes 16..32.
#[inline(always)]
unsafe fn bytes_from_nibbles_32(p: *const u8) -> __m256i {
    let tmp = load128(p);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(tmp), tmp);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0f))
}

/// Byte `i` is 0xFF where bit `i` of `x` is set.
#[inline(always)]
unsafe fn bytes_from_bits_32(x: u32) -> __m256i {
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// Within each 16-byte half: `[0, 8, 1, 9, …, 7, 15]`, so `maddubs` adds elements `t` and
/// `t + 8`, which belong to the same lane `t mod 8` of ggml's generic K-quant loops.
#[inline(always)]
unsafe fn lane_pair_shuffle() -> __m256i {
    _mm256_setr_epi8(
        0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, //
        0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
    )
}

/// Two i16 scales as the i32 pattern `madd_epi16` multiplies pairs by.
#[inline(always)]
fn scale_pair(lo: i32, hi: i32) -> i32 {
    (lo & 0xffff) | (hi << 16)
}

/// `acc_lo` holds lanes 0..4 twice (one per 128-bit half), `acc_hi` lanes 4..8: → lanes 0..8.
#[inline(always)]
unsafe fn fold_lanes(acc_lo: __m256i, acc_hi: __m256i) -> __m256i {
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(acc_lo, acc_hi),
        _mm256_permute2x128_si256::<0x31>(acc_lo, acc_hi),
    )
}

// ---------------------------------------------------------------------------------------------
// Float rows

#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_fma(acc: [__m256; 4]) -> f32 {
    let r0 = _mm256_add_ps(acc[0], acc[2]);
    let r1 = _mm256_add_ps(acc[1], acc[3]);
    let r = _mm256_add_ps(r0, r1);
    let t0 = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps::<1>(r));
    let t1 = _mm_hadd_ps(t0, t0);
    _mm_cvtss_f32(_mm_hadd_ps(t1, t1))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f32_avx2(w: &[u8], a: &[u8], k: usize) -> f32 {
    let np = k / float::STEP * float::STEP;
    let (pw, pa) = (w.as_ptr() as *const f32, a.as_ptr() as *const f32);
    let mut acc = [_mm256_setzero_ps(); 4];
    for c in (0..np).step_by(float::STEP) {
        for (j, lane) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pw.add(c + 8 * j));
            let y = _mm256_loadu_ps(pa.add(c + 8 * j));
            *lane = _mm256_fmadd_ps(x, y, *lane);
        }
    }
    let mut sumf = reduce_fma(acc);
    for i in np..k {
        sumf += f32_at(w, 4 * i) * f32_at(a, 4 * i);
    }
    sumf
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_avx2(w: &[u8], a: &[u8], k: usize) -> f32 {
    let np = k / float::STEP * float::STEP;
    let (pw, pa) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    for c in (0..np).step_by(float::STEP) {
        for (j, lane) in acc.iter_mut().enumerate() {
            let x = _mm256_cvtph_ps(load128(pw.add(2 * (c + 8 * j))));
            let y = _mm256_cvtph_ps(load128(pa.add(2 * (c + 8 * j))));
            *lane = _mm256_fmadd_ps(x, y, *lane);
        }
    }
    let mut sumf = reduce_fma(acc) as f64;
    for i in np..k {
        sumf += (f16_at(pw.add(2 * i)) * f16_at(pa.add(2 * i))) as f64;
    }
    sumf as f32
}

/// 8 bf16 at `p` widened to f32 (a 16-bit shift, exact).
#[inline(always)]
unsafe fn load_bf16x8(p: *const u8) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(p))))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bf16_avx2(w: &[u8], a: &[u8], k: usize) -> f32 {
    let np = k / float::STEP * float::STEP;
    let (pw, pa) = (w.as_ptr(), a.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    for c in (0..np).step_by(float::STEP) {
        for (j, lane) in acc.iter_mut().enumerate() {
            let x = load_bf16x8(pw.add(2 * (c + 8 * j)));
            let y = load_bf16x8(pa.add(2 * (c + 8 * j)));
            *lane = _mm256_add_ps(_mm256_mul_ps(x, y), *lane);
        }
    }
    let c = _mm256_add_ps(_mm256_add_ps(acc[0], acc[2]), _mm256_add_ps(acc[1], acc[3]));
    let mut g = _mm_add_ps(_mm256_extractf128_ps::<1>(c), _mm256_castps256_ps128(c));
    g = _mm_add_ps(g, _mm_movehl_ps(g, g));
    g = _mm_add_ss(g, _mm_movehdup_ps(g));
    let mut sumf = _mm_cvtss_f32(g) as f64;
    let b =
        |p: &[u8], i: usize| float::bf16_bits_to_f32(u16::from_le_bytes([p[2 * i], p[2 * i + 1]]));
    for i in np..k {
        sumf += (b(w, i) * b(a, i)) as f64;
    }
    sumf as f32
}

// ---------------------------------------------------------------------------------------------
// 32-value blocks against Q8_0 / Q8_1 activations. Blocks go four at a time: their exact i32
// sums land in one vector, the per-block f32 terms are computed lane-wise with exactly the
// scalar operations, and the terms are added to `sumf` one block after another, as ggml does.

/// Zero bytes standing in for the blocks past the end of a row in the last group of four.
static ZERO_BLOCK: [u8; 64] = [0; 64];

/// The f16 at `off` in each of four blocks, widened.
#[inline(always)]
unsafe fn f16x4(p: [*const u8; 4], off: usize) -> __m128 {
    let h = |q: *const u8| i16::from_le_bytes([*q.add(off), *q.add(off + 1)]);
    _mm_cvtph_ps(_mm_setr_epi16(
        h(p[0]),
        h(p[1]),
        h(p[2]),
        h(p[3]),
        0,
        0,
        0,
        0,
    ))
}

/// Four blocks' 8 partial sums each → the four block sums as f32 (exact below 2²⁴).
#[inline(always)]
unsafe fn block_sums4(p: [__m256i; 4]) -> __m128 {
    let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
    _mm_cvtepi32_ps(_mm_add_epi32(
        _mm256_castsi256_si128(h),
        _mm256_extracti128_si256::<1>(h),
    ))
}

/// The driver: `partial(w_block, a_block)` gives a block's 8 i32 partial sums and
/// `terms(sumi, w_blocks, a_blocks)` the f32 term each block adds to `sumf`.
#[inline(always)]
unsafe fn blocks32<P, T>(
    w: &[u8],
    a: &[u8],
    nb: usize,
    wb: usize,
    ab: usize,
    partial: P,
    terms: T,
) -> f32
where
    P: Fn(*const u8, *const u8) -> __m256i,
    T: Fn(__m128, [*const u8; 4], [*const u8; 4]) -> __m128,
{
    let (w, a) = (w.as_ptr(), a.as_ptr());
    let mut sumf = 0.0f32;
    let mut t = [0.0f32; 4];
    // Whole groups of four, spelled out so the partial sums stay in registers.
    let groups = nb / 4;
    for g in 0..groups {
        let i = 4 * g;
        let pw = [
            w.add(i * wb),
            w.add((i + 1) * wb),
            w.add((i + 2) * wb),
            w.add((i + 3) * wb),
        ];
        let pa = [
            a.add(i * ab),
            a.add((i + 1) * ab),
            a.add((i + 2) * ab),
            a.add((i + 3) * ab),
        ];
        let ps = [
            partial(pw[0], pa[0]),
            partial(pw[1], pa[1]),
            partial(pw[2], pa[2]),
            partial(pw[3], pa[3]),
        ];
        _mm_storeu_ps(t.as_mut_ptr(), terms(block_sums4(ps), pw, pa));
        sumf += t[0];
        sumf += t[1];
        sumf += t[2];
        sumf += t[3];
    }
    // The last 1..3 blocks, with zero blocks standing in for the missing ones.
    let n = nb - 4 * groups;
    if n > 0 {
        let mut pw = [ZERO_BLOCK.as_ptr(); 4];
        let mut pa = [ZERO_BLOCK.as_ptr(); 4];
        let mut ps = [_mm256_setzero_si256(); 4];
        for j in 0..n {
            pw[j] = w.add((4 * groups + j) * wb);
            pa[j] = a.add((4 * groups + j) * ab);
            ps[j] = partial(pw[j], pa[j]);
        }
        _mm_storeu_ps(t.as_mut_ptr(), terms(block_sums4(ps), pw, pa));
        for tj in &t[..n] {
            sumf += tj;
        }
    }
    sumf
}

/// Q8_0 with ggml's AVX2 arithmetic (`ggml_vec_dot_q8_0_q8_0`, x86 build): per block
/// `acc += (d_w · d_a) · Σ` with one FMA over eight lanes. `R` activation rows at once (stride
/// `arb` bytes), each row's result bit for bit the `R = 1` result.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_rows<const R: usize>(w: &[u8], a: *const u8, arb: usize, nb: usize) -> [f32; R] {
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let bw = w.as_ptr().add(i * q8_0::BLOCK_BYTES);
        let qx = load256(bw.add(2));
        let dw = f16_at(bw);
        // The weight's |x| once; each activation row takes x's signs.
        let ax = _mm256_sign_epi8(qx, qx);
        for (r, acc) in acc.iter_mut().enumerate() {
            let ba = a.add(r * arb + i * q8_0::BLOCK_BYTES);
            let sy = _mm256_sign_epi8(load256(ba.add(2)), qx);
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(
                _mm256_maddubs_epi16(ax, sy),
                _mm256_set1_epi16(1),
            ));
            *acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * f16_at(ba)), q, *acc);
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = hsum_f32_8(acc[r]);
    }
    out
}

/// Q8_0 as [`q8_0_rows`], but `R` weight rows (stride `wrb` bytes) against one activation row:
/// the activation block is loaded once for all rows, the `R` weight scales are widened with one
/// conversion, and `R` independent FMA chains hide the FMA latency that bounds the one-row
/// loop in decode. Each row's result is bit for bit the one-row result.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_weight_rows<const R: usize>(
    w: *const u8,
    wrb: usize,
    a: *const u8,
    nb: usize,
) -> [f32; R] {
    const { assert!(R == 4) };
    let mut acc = [_mm256_setzero_ps(); R];
    let mut scales = [0.0f32; R];
    let ones = _mm256_set1_epi16(1);
    for i in 0..nb {
        let ba = a.add(i * q8_0::BLOCK_BYTES);
        let qy = load256(ba.add(2));
        let pw = [
            w.add(i * q8_0::BLOCK_BYTES),
            w.add(wrb + i * q8_0::BLOCK_BYTES),
            w.add(2 * wrb + i * q8_0::BLOCK_BYTES),
            w.add(3 * wrb + i * q8_0::BLOCK_BYTES),
        ];
        // d_w · d_a for the four rows, each the same f32 product as the one-row kernel's.
        _mm_storeu_ps(
            scales.as_mut_ptr(),
            _mm_mul_ps(f16x4(pw, 0), _mm_set1_ps(f16_at(ba))),
        );
        for r in 0..R {
            prefetch(pw[r]);
            let qx = load256(pw[r].add(2));
            let ax = _mm256_sign_epi8(qx, qx);
            let sy = _mm256_sign_epi8(qy, qx);
            let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scales[r]), q, acc[r]);
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = hsum_f32_8(acc[r]);
    }
    out
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_0_avx2(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let eight = _mm256_set1_epi8(8);
    blocks32(
        w,
        a,
        nb,
        q4_0::BLOCK_BYTES,
        q8_0::BLOCK_BYTES,
        |bw, ba| {
            mul_sum_i8_pairs(
                _mm256_sub_epi8(bytes_from_nibbles_32(bw.add(2)), eight),
                load256(ba.add(2)),
            )
        },
        // sumi · d_w · d_a, left to right
        |sumi, pw, pa| _mm_mul_ps(_mm_mul_ps(sumi, f16x4(pw, 0)), f16x4(pa, 0)),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0_avx2(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let high = _mm256_set1_epi8(0xf0u8 as i8);
    blocks32(
        w,
        a,
        nb,
        q5_0::BLOCK_BYTES,
        q8_0::BLOCK_BYTES,
        |bw, ba| {
            let qh = u32::from_le_bytes([*bw.add(2), *bw.add(3), *bw.add(4), *bw.add(5)]);
            // nibble | 0xF0 is nibble - 16 as i8 when the fifth bit is clear; nibble when set.
            let x = _mm256_or_si256(
                bytes_from_nibbles_32(bw.add(6)),
                _mm256_andnot_si256(bytes_from_bits_32(qh), high),
            );
            mul_sum_i8_pairs(x, load256(ba.add(2)))
        },
        // (d_w · d_a) · sumi
        |sumi, pw, pa| _mm_mul_ps(_mm_mul_ps(f16x4(pw, 0), f16x4(pa, 0)), sumi),
    )
}

/// Σ q·y of unsigned weight bytes (≤ 31) and signed activation bytes, as 8 i32 partials.
#[inline(always)]
unsafe fn mul_sum_u8_i8(q: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), _mm256_set1_epi16(1))
}

/// `(d_w · d_a) · sumi + m_w · s_a` of Q4_1 / Q5_1 against Q8_1.
#[inline(always)]
unsafe fn terms_q8_1(sumi: __m128, pw: [*const u8; 4], pa: [*const u8; 4]) -> __m128 {
    let dd = _mm_mul_ps(f16x4(pw, 0), f16x4(pa, 0));
    _mm_add_ps(_mm_mul_ps(dd, sumi), _mm_mul_ps(f16x4(pw, 2), f16x4(pa, 2)))
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_1_avx2(w: &[u8], a: &[u8], nb: usize) -> f32 {
    blocks32(
        w,
        a,
        nb,
        q4_1::BLOCK_BYTES,
        Q8_1_BLOCK_BYTES,
        |bw, ba| mul_sum_u8_i8(bytes_from_nibbles_32(bw.add(4)), load256(ba.add(4))),
        |sumi, pw, pa| terms_q8_1(sumi, pw, pa),
    )
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_1_avx2(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let bit4 = _mm256_set1_epi8(0x10);
    blocks32(
        w,
        a,
        nb,
        q5_1::BLOCK_BYTES,
        Q8_1_BLOCK_BYTES,
        |bw, ba| {
            let qh = u32::from_le_bytes([*bw.add(4), *bw.add(5), *bw.add(6), *bw.add(7)]);
            let q = _mm256_or_si256(
                bytes_from_nibbles_32(bw.add(8)),
                _mm256_and_si256(bytes_from_bits_32(qh), bit4),
            );
            mul_sum_u8_i8(q, load256(ba.add(4)))
        },
        |sumi, pw, pa| terms_q8_1(sumi, pw, pa),
    )
}

// ---------------------------------------------------------------------------------------------
// K-quants against Q8_K: eight i32 lanes per super-block, as ggml's generic loops.

/// `Σ_j bsums[j] · mins[j / 2]` of a Q4_K / Q5_K super-block.
#[inline(always)]
unsafe fn bsums_dot_mins(a: *const u8, mins: &[u8; 8]) -> i32 {
    let m8 = _mm_loadl_epi64(mins.as_ptr() as *const __m128i);
    let m16 = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
    hsum_i32_8(_mm256_madd_epi16(load256(a.add(260)), m16))
}

/// Shared f32 tail of the Q4_K / Q5_K kernels: one super-block's lanes into `sums`.
#[inline(always)]
unsafe fn accumulate_k(
    sums: &mut __m256,
    sumf: &mut f32,
    aux: __m256i,
    d: f32,
    dmin: f32,
    sumi_min: i32,
) {
    *sums = _mm256_add_ps(
        *sums,
        _mm256_mul_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(aux)),
    );
    *sumf -= dmin * sumi_min as f32;
}

#[inline(always)]
unsafe fn finish_lanes(sums: __m256, mut sumf: f32) -> f32 {
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sums);
    for s in lanes {
        sumf += s;
    }
    sumf
}

/// Q4_K with ggml's AVX2 arithmetic (`ggml_vec_dot_q4_K_q8_K`, x86 build): per block the
/// integer sums are scaled by the sub-block scales in i32 and accumulated with one FMA, the
/// mins through the activation's block sums. llama.cpp runs exactly this on x86; it differs
/// from the generic reference only in f32 rounding (tested within tolerance).
///
/// One weight row against `R` activation rows (`a`, stride `arb` bytes): the weight's nibbles
/// and scales are unpacked once per block for all `R`, and each row's result is bit for bit
/// the `R = 1` result (the per-row operations are the same, in the same order).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_k_rows<const R: usize>(w: &[u8], a: *const u8, arb: usize, nb: usize) -> [f32; R] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let m4 = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut acc_m = [_mm_setzero_ps(); R];
    for i in 0..nb {
        let bw = w.as_ptr().add(i * q4_k::BLOCK_BYTES);
        for line in (0..q4_k::BLOCK_BYTES).step_by(64) {
            prefetch(bw.wrapping_add(line));
        }
        let u = |j: usize| (bw.add(4 + 4 * j) as *const u32).read_unaligned();
        let (u0, u1, u2) = (u(0), u(1), u(2));
        let t3 = ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4);
        let t1 = (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4);
        let t2 = u1 & KMASK1;
        let t0 = u0 & KMASK1;
        // i16 lanes 0..8: the sub-block scales; 8..16: the mins.
        let mins_and_scales =
            _mm256_cvtepu8_epi16(_mm_set_epi32(t3 as i32, t2 as i32, t1 as i32, t0 as i32));
        let mins = _mm256_extracti128_si256::<1>(mins_and_scales);
        let sc128 = _mm256_castsi256_si128(mins_and_scales);
        let scales = _mm256_set_m128i(sc128, sc128);
        let ba = |r: usize| a.add(r * arb + i * Q8_K_BLOCK_BYTES);
        let mut d = [0.0f32; R];
        for r in 0..R {
            let da = (ba(r) as *const f32).read_unaligned();
            d[r] = da * f16_at(bw);
            let dmin = -da * f16_at(bw.add(2));
            let q8sums = _mm256_loadu_si256(ba(r).add(4 + QK_K) as *const __m256i);
            let q8s = _mm_hadd_epi16(
                _mm256_castsi256_si128(q8sums),
                _mm256_extracti128_si256::<1>(q8sums),
            );
            let prod = _mm_madd_epi16(mins, q8s);
            acc_m[r] = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(prod), acc_m[r]);
        }
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..QK_K / 64 {
            let scale_l = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j));
            let scale_h = _mm256_shuffle_epi8(scales, scale_shuffle_k4(2 * j + 1));
            let q4bits = load256(bw.add(16 + 32 * j));
            let q4l = _mm256_and_si256(q4bits, m4);
            let q4h = _mm256_and_si256(_mm256_srli_epi16::<4>(q4bits), m4);
            for (r, sumi) in sumi.iter_mut().enumerate() {
                let q8l = load256(ba(r).add(4 + 64 * j));
                let q8h = load256(ba(r).add(4 + 64 * j + 32));
                let p16l = _mm256_madd_epi16(scale_l, _mm256_maddubs_epi16(q4l, q8l));
                let p16h = _mm256_madd_epi16(scale_h, _mm256_maddubs_epi16(q4h, q8h));
                *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(p16l, p16h));
            }
        }
        for r in 0..R {
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d[r]), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        let m = _mm_add_ps(acc_m[r], _mm_movehl_ps(acc_m[r], acc_m[r]));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        out[r] = hsum_f32_8(acc[r]) + _mm_cvtss_f32(m);
    }
    out
}

/// ggml's `get_scale_shuffle_k4(i)`: broadcasts i16 lane `i` (bytes `2i, 2i+1`).
#[inline(always)]
unsafe fn scale_shuffle_k4(i: usize) -> __m256i {
    let lo = (2 * i) as i8;
    let hi = (2 * i + 1) as i8;
    let pair = ((hi as u8 as i16) << 8) | lo as u8 as i16;
    _mm256_set1_epi16(pair)
}

/// ggml's `hsum_float_8`.
#[inline(always)]
unsafe fn hsum_f32_8(x: __m256) -> f32 {
    let mut res = _mm256_extractf128_ps::<1>(x);
    res = _mm_add_ps(res, _mm256_castps256_ps128(x));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_k_avx2(w: &[u8], a: &[u8], nb: usize) -> f32 {
    let shuf = lane_pair_shuffle();
    let m4 = _mm256_set1_epi8(0x0f);
    let one = _mm256_set1_epi8(1);
    let mut sums = _mm256_setzero_ps();
    let mut sumf = 0.0f32;
    for i in 0..nb {
        let bw = &w[i * q5_k::BLOCK_BYTES..(i + 1) * q5_k::BLOCK_BYTES];
        let ba = a.as_ptr().add(i * Q8_K_BLOCK_BYTES);
        let (sc, mins) = scales_mins_k4(bw[4..16].try_into().expect("12 scale bytes"));
        let sumi_min = bsums_dot_mins(ba, &mins);
        let qh = _mm256_shuffle_epi8(load256(bw.as_ptr().add(16)), shuf);
        let (mut acc_lo, mut acc_hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for c in 0..4 {
            let q = _mm256_shuffle_epi8(load256(bw.as_ptr().add(48 + 32 * c)), shuf);
            // Bit 2c (low sub-block) and 2c+1 (high sub-block) of each qh byte, moved to bit 4.
            let h_lo = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32)), one);
            let h_hi = _mm256_and_si256(
                _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * c as i32 + 1)),
                one,
            );
            let a_lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16::<4>(h_lo));
            let a_hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4),
                _mm256_slli_epi16::<4>(h_hi),
            );
            let y_lo = _mm256_shuffle_epi8(load256(ba.add(4 + 64 * c)), shuf);
            let y_hi = _mm256_shuffle_epi8(load256(ba.add(4 + 64 * c + 32)), shuf);
            let p_lo = _mm256_maddubs_epi16(a_lo, y_lo);
            let p_hi = _mm256_maddubs_epi16(a_hi, y_hi);
            let s = _mm256_set1_epi32(scale_pair(sc[2 * c] as i32, sc[2 * c + 1] as i32));
            acc_lo = _mm256_add_epi32(
                acc_lo,
                _mm256_madd_epi16(_mm256_unpacklo_epi16(p_lo, p_hi), s),
            );
            acc_hi = _mm256_add_epi32(
                acc_hi,
                _mm256_madd_epi16(_mm256_unpackhi_epi16(p_lo, p_hi), s),
            );
        }
        let da = f32_at(a, i * Q8_K_BLOCK_BYTES);
        let d = f16_at(bw.as_ptr()) * da;
        let dmin = f16_at(bw.as_ptr().add(2)) * da;
        accumulate_k(
            &mut sums,
            &mut sumf,
            fold_lanes(acc_lo, acc_hi),
            d,
            dmin,
            sumi_min,
        );
    }
    finish_lanes(sums, sumf)
}

/// Q6_K with ggml's AVX2 arithmetic (`ggml_vec_dot_q6_K_q8_K`, x86 build): the `-32` offset
/// is applied as `maddubs(32, y)` per pair, sub-block scales in i32, one FMA per block. Differs
/// from the generic reference only in f32 rounding (tested within tolerance). `R` activation
/// rows at once, as [`q4_k_rows`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_rows<const R: usize>(w: &[u8], a: *const u8, arb: usize, nb: usize) -> [f32; R] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(3);
    let m32s = _mm256_set1_epi8(32);
    let mut acc = [_mm256_setzero_ps(); R];
    for i in 0..nb {
        let bw = w.as_ptr().add(i * q6_k::BLOCK_BYTES);
        for line in (0..q6_k::BLOCK_BYTES).step_by(64) {
            prefetch(bw.wrapping_add(line));
        }
        let ba = |r: usize| a.add(r * arb + i * Q8_K_BLOCK_BYTES);
        let scales = _mm_loadu_si128(bw.add(192) as *const __m128i);
        let mut sumi = [_mm256_setzero_si256(); R];
        for j in 0..QK_K / 128 {
            let is = 4 * j;
            // ggml's `get_scale_shuffle(i)`: scale `2i` in bytes 0..8, `2i + 1` in 8..16.
            let scale = |k: usize| {
                let (lo, hi) = ((2 * (is + k)) as i8, (2 * (is + k) + 1) as i8);
                let sh = _mm_set_epi8(
                    hi, hi, hi, hi, hi, hi, hi, hi, lo, lo, lo, lo, lo, lo, lo, lo,
                );
                _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, sh))
            };
            let sc = [scale(0), scale(1), scale(2), scale(3)];
            let q4bits1 = load256(bw.add(64 * j));
            let q4bits2 = load256(bw.add(64 * j + 32));
            let q4bits_h = load256(bw.add(128 + 32 * j));
            let q4h_0 = _mm256_slli_epi16::<4>(_mm256_and_si256(q4bits_h, m2));
            let q4h_1 =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(q4bits_h), m2));
            let q4h_2 =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits_h), m2));
            let q4h_3 =
                _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(q4bits_h), m2));
            let q4 = [
                _mm256_or_si256(_mm256_and_si256(q4bits1, m4), q4h_0),
                _mm256_or_si256(_mm256_and_si256(q4bits2, m4), q4h_1),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits1), m4), q4h_2),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q4bits2), m4), q4h_3),
            ];
            for (r, sumi) in sumi.iter_mut().enumerate() {
                let mut p = [_mm256_setzero_si256(); 4];
                for k in 0..4 {
                    let q8 = load256(ba(r).add(4 + 128 * j + 32 * k));
                    let p16 = _mm256_sub_epi16(
                        _mm256_maddubs_epi16(q4[k], q8),
                        _mm256_maddubs_epi16(m32s, q8),
                    );
                    p[k] = _mm256_madd_epi16(sc[k], p16);
                }
                *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(p[0], p[1]));
                *sumi = _mm256_add_epi32(*sumi, _mm256_add_epi32(p[2], p[3]));
            }
        }
        for r in 0..R {
            let d = (ba(r) as *const f32).read_unaligned() * f16_at(bw.add(208));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi[r]), acc[r]);
        }
    }
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = hsum_f32_8(acc[r]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{quantize_act_row, quantize_row, vec_dot_kernel_scalar};
    use super::*;
    use half::f16;
    use rand::{Rng, SeedableRng};

    /// Random block bytes with finite f16 scale fields (any bit pattern is a valid block).
    fn random_row(rng: &mut rand::rngs::StdRng, fmt: WeightFormat, k: usize) -> Vec<u8> {
        let mut row: Vec<u8> = (0..fmt.row_bytes(k)).map(|_| rng.gen()).collect();
        let fields: &[usize] = match fmt {
            WeightFormat::Q8_0 | WeightFormat::Q4_0 | WeightFormat::Q5_0 => &[0],
            WeightFormat::Q4_1 | WeightFormat::Q5_1 => &[0, 2],
            WeightFormat::Q4_K | WeightFormat::Q5_K => &[0, 2],
            WeightFormat::Q6_K => &[208],
            WeightFormat::F16 => {
                return (0..k)
                    .flat_map(|_| f16::from_f32(rng.gen_range(-2.0..2.0)).to_le_bytes())
                    .collect()
            }
            WeightFormat::BF16 => {
                return (0..k)
                    .flat_map(|_| float::f32_to_bf16_bits(rng.gen_range(-2.0..2.0)).to_le_bytes())
                    .collect()
            }
            WeightFormat::F32 => {
                return (0..k)
                    .flat_map(|_| rng.gen_range(-2.0f32..2.0).to_le_bytes())
                    .collect()
            }
        };
        for block in row.chunks_exact_mut(fmt.block_bytes()) {
            for &off in fields {
                let d = f16::from_f32(rng.gen_range(-0.05f32..0.05));
                block[off..off + 2].copy_from_slice(&d.to_le_bytes());
            }
        }
        row
    }

    #[test]
    fn avx2_kernels_match_the_scalar_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX2/FMA/F16C");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for fmt in WeightFormat::ALL {
            let Some(simd) = vec_dot_kernel(fmt) else {
                continue;
            };
            let scalar = vec_dot_kernel_scalar(fmt);
            let exact = !matches!(
                fmt,
                WeightFormat::Q8_0 | WeightFormat::Q4_K | WeightFormat::Q6_K
            );
            // Every remainder of the four-block groups and of the 32-lane float chunks.
            let sizes: &[usize] = match fmt.block_len() {
                1 => &[1, 31, 32, 100, 4096],
                32 => &[32, 64, 96, 160, 1024, 4096],
                _ => &[256, 768, 4096],
            };
            for &k in sizes {
                for trial in 0..6 {
                    let x: Vec<f32> = (0..k)
                        .map(|_| rng.gen_range(-1.0f32..1.0) * (1 + trial) as f32)
                        .collect();
                    let w = if trial % 2 == 0 {
                        random_row(&mut rng, fmt, k)
                    } else {
                        let v: Vec<f32> = (0..k).map(|_| rng.gen_range(-0.1f32..0.1)).collect();
                        let mut b = vec![0u8; fmt.row_bytes(k)];
                        quantize_row(fmt, &v, &mut b);
                        b
                    };
                    let act = fmt.act_format();
                    let mut a = vec![0u8; act.row_bytes(k)];
                    quantize_act_row(act, &x, &mut a);
                    let (s, v) = (scalar(&w, &a, k), simd(&w, &a, k));
                    if exact {
                        assert_eq!(
                            s.to_bits(),
                            v.to_bits(),
                            "{fmt:?} k={k} trial {trial}: scalar {s} vs avx2 {v}"
                        );
                    } else {
                        // ggml's x86 arithmetic: the same integer sums, f32 rounding apart.
                        let scale: f32 = {
                            let mut wf = vec![0.0f32; k];
                            super::super::dequantize_row(fmt, &w, &mut wf);
                            wf.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum()
                        };
                        assert!(
                            (s - v).abs() <= 1e-5 * scale.max(1e-3),
                            "{fmt:?} k={k} trial {trial}: scalar {s} vs avx2 {v}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn four_row_kernels_equal_the_one_row_kernel_bit_for_bit() {
        if !available() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(44);
        for fmt in [WeightFormat::Q8_0, WeightFormat::Q4_K, WeightFormat::Q6_K] {
            let (one, four) = (
                vec_dot_kernel(fmt).expect("avx2"),
                vec_dot4_kernel(fmt).expect("avx2"),
            );
            for k in [256, 1024] {
                let w = random_row(&mut rng, fmt, k);
                let act = fmt.act_format();
                let arb = act.row_bytes(k);
                let mut a = vec![0u8; 4 * arb];
                for row in a.chunks_exact_mut(arb) {
                    let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
                    quantize_act_row(act, &x, row);
                }
                let got = four(&w, &a, k);
                for (r, g) in got.iter().enumerate() {
                    let want = one(&w, &a[r * arb..(r + 1) * arb], k);
                    assert_eq!(g.to_bits(), want.to_bits(), "{fmt:?} k={k} row {r}");
                }
            }
        }
    }

    #[test]
    fn four_weight_row_kernel_equals_the_one_row_kernel_bit_for_bit() {
        if !available() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(45);
        let fmt = WeightFormat::Q8_0;
        let (one, four) = (
            vec_dot_kernel(fmt).expect("avx2"),
            vec_dot_w4_kernel(fmt).expect("avx2"),
        );
        // One block, an odd number of blocks, and a decode-sized row.
        for k in [32, 224, 2048] {
            let rows: Vec<Vec<u8>> = (0..4).map(|_| random_row(&mut rng, fmt, k)).collect();
            let w = rows.concat();
            let act = fmt.act_format();
            let mut a = vec![0u8; act.row_bytes(k)];
            let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
            quantize_act_row(act, &x, &mut a);
            let got = four(&w, &a, k);
            for (r, g) in got.iter().enumerate() {
                let want = one(&rows[r], &a, k);
                assert_eq!(g.to_bits(), want.to_bits(), "k={k} row {r}");
            }
        }
        assert!(vec_dot_w4_kernel(WeightFormat::Q4_0).is_none());
    }

    #[test]
    fn q8_0_weight_of_minus_128_is_exact() {
        if !available() {
            return;
        }
        let mut w = vec![0u8; 34];
        w[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        w[2..].fill(0x80); // -128 everywhere
        let mut a = vec![0u8; 34];
        a[0..2].copy_from_slice(&f16::from_f32(1.0).to_le_bytes());
        a[2..].fill(127);
        assert_eq!(vec_dot_q8_0(&w, &a, 32), -128.0 * 127.0 * 32.0);
        a[2..].fill((-127i8) as u8);
        assert_eq!(vec_dot_q8_0(&w, &a, 32), 128.0 * 127.0 * 32.0);
    }

    #[test]
    fn extreme_k_quant_blocks_do_not_saturate() {
        if !available() {
            return;
        }
        // Largest quants and scales against ±127 activations in every position.
        let k = QK_K;
        for fmt in [WeightFormat::Q4_K, WeightFormat::Q5_K, WeightFormat::Q6_K] {
            let mut w = vec![0xffu8; fmt.row_bytes(k)];
            let one = f16::from_f32(1.0).to_le_bytes();
            match fmt {
                WeightFormat::Q6_K => {
                    w[192..208].fill(0x80); // scales -128
                    w[208..210].copy_from_slice(&one);
                }
                _ => {
                    w[0..2].copy_from_slice(&one);
                    w[2..4].copy_from_slice(&one);
                }
            }
            for sign in [1.0f32, -1.0] {
                let x: Vec<f32> = (0..k)
                    .map(|i| if i % 3 == 0 { sign } else { -sign })
                    .collect();
                let mut a = vec![0u8; Q8_K_BLOCK_BYTES];
                quantize_act_row(fmt.act_format(), &x, &mut a);
                let scalar = vec_dot_kernel_scalar(fmt)(&w, &a, k);
                let simd = vec_dot_kernel(fmt).expect("AVX2 kernel")(&w, &a, k);
                assert_eq!(scalar.to_bits(), simd.to_bits(), "{fmt:?} sign {sign}");
            }
        }
    }
}
