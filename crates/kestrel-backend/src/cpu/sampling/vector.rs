//! Vocabulary-wide kernels of the sampler: branch-free inner loops over fixed-width lanes, so
//! that they vectorize; the vocabulary is 151,936 wide and these run once per row per step.
//! `exp` is Cephes' polynomial (about 1e-7 relative error), 7x faster than `f32::exp` here.

use crate::cpu::isa;

pub(super) const LANES: usize = 16;

/// e^x for x <= 0 (a weight relative to the max logit): Cephes' `expf` polynomial, about 1e-7
/// relative error, 0 below -87 (and for -inf). Branch-free and without float-to-int casts, so
/// loops over it vectorize (7x faster than `f32::exp` over the vocabulary).
#[inline(always)]
pub(super) fn exp_nonpos(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer in the mantissa
    let underflow = x < -87.0;
    let x = if underflow { -87.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let nf = t - ROUND; // round(x / ln 2)
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - nf * 0.693_359_4 - nf * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits((n.wrapping_add(127) as u32) << 23);
    if underflow {
        0.0
    } else {
        e * scale
    }
}

/// Largest value; NaN is ignored (it never compares greater).
pub(super) fn max_of(l: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = l.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Argmax, ties to the lowest id.
pub(super) fn argmax(l: &[f32]) -> u32 {
    let max = max_of(l);
    l.iter().position(|&x| x == max).unwrap_or(0) as u32
}

/// Sum of `w`: f32 lanes within blocks of 1,024, f64 across blocks (vectorizes; the error is
/// far below what sampling can see).
pub(super) fn sum_of(w: &[f32]) -> f64 {
    w.chunks(1024)
        .map(|block| {
            let mut lanes = [0.0f32; LANES];
            let chunks = block.chunks_exact(LANES);
            let tail = chunks.remainder();
            for chunk in chunks {
                for (s, &x) in lanes.iter_mut().zip(chunk) {
                    *s += x;
                }
            }
            lanes.iter().chain(tail).map(|&x| f64::from(x)).sum::<f64>()
        })
        .sum()
}

#[inline(always)]
fn weight(x: f32, max: f32) -> f32 {
    let y = x - max;
    if y.is_nan() {
        0.0
    } else {
        exp_nonpos(y)
    }
}

#[inline(always)]
fn fill_weights(l: &[f32], max: f32, w: &mut [f32]) {
    for (out, &x) in w.iter_mut().zip(l) {
        *out = weight(x, max);
    }
}

/// [`fill_weights`] compiled for AVX2: the same operations (Rust never fuses a multiply and an
/// add on its own), so the same bits, on twice the lanes of the SSE2 baseline.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_weights_avx2(l: &[f32], max: f32, w: &mut [f32]) {
    fill_weights(l, max, w);
}

/// Sets `w[i] = exp(l[i] - max)` for every token (NaN counts as 0).
fn fill_weights_dispatch(l: &[f32], max: f32, w: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa::avx2() {
        // SAFETY: the CPU has AVX2 (the kernels' dispatch checked it).
        unsafe { fill_weights_avx2(l, max, w) };
        return;
    }
    fill_weights(l, max, w);
}

/// Fills `w[i] = exp(l[i] - max)` for every token (NaN counts as 0) and returns the sum.
pub(super) fn exp_all(l: &[f32], max: f32, w: &mut [f32]) -> f64 {
    fill_weights_dispatch(l, max, w);
    sum_of(&w[..l.len()])
}

/// `Σ exp(l[i] - max)` without keeping the weights (NaN counts as 0).
pub(super) fn exp_sum(l: &[f32], max: f32) -> f64 {
    let mut block = [0.0f32; 1024];
    l.chunks(1024)
        .map(|c| {
            fill_weights_dispatch(c, max, &mut block);
            sum_of(&block[..c.len()])
        })
        .sum()
}

/// `Σ w[i]` over tokens with `l[i] >= threshold` (vectorizes like [`sum_of`]).
pub(super) fn mass_at_or_above(l: &[f32], w: &[f32], threshold: f32) -> f64 {
    l.chunks(1024)
        .zip(w.chunks(1024))
        .map(|(lb, wb)| {
            let mut lanes = [0.0f32; LANES];
            for (lc, wc) in lb.chunks(LANES).zip(wb.chunks(LANES)) {
                for ((s, &x), &wi) in lanes.iter_mut().zip(lc).zip(wc) {
                    *s += if x >= threshold { wi } else { 0.0 };
                }
            }
            lanes.iter().map(|&x| f64::from(x)).sum::<f64>()
        })
        .sum()
}

/// Ids of the tokens with `l[i] >= threshold`, skipping blocks with nothing that high.
pub(super) fn collect_at_or_above(l: &[f32], threshold: f32, idx: &mut Vec<u32>) {
    idx.clear();
    for (c, chunk) in l.chunks(4 * LANES).enumerate() {
        if max_of(chunk) >= threshold {
            let base = c * 4 * LANES;
            idx.extend(
                chunk
                    .iter()
                    .enumerate()
                    .filter(|(_, &x)| x >= threshold)
                    .map(|(j, _)| (base + j) as u32),
            );
        }
    }
}
