//! Vector kernels of attention and activations: dot products and `o += p·v` over one head,
//! with f32 or f16 keys and values, `silu(gate)·up`, and a vector `exp`. The AVX2 versions are
//! picked once per call site through [`VecKernels`]; the scalar ones are the reference.

use half::f16;

use super::isa;

/// Function pointers to one instruction set's kernels (all slices of one head's length).
#[derive(Clone, Copy)]
pub(super) struct VecKernels {
    pub dot_f32: fn(&[f32], &[f32]) -> f32,
    pub dot_f16: fn(&[f32], &[f16]) -> f32,
    pub axpy_f32: fn(&mut [f32], f32, &[f32]),
    pub axpy_f16: fn(&mut [f32], f32, &[f16]),
    /// Four `dot_f16`s against one `a`, each bit for bit the single result.
    pub dot4_f16: fn(&[f32], [&[f16]; 4]) -> [f32; 4],
    /// Four `axpy_f16`s in order (`o += p₀v₀`, then `p₁v₁`, ...), bit for bit.
    pub axpy4_f16: fn(&mut [f32], [f32; 4], [&[f16]; 4]),
    /// `gate[i] = silu(gate[i]) · up[i]`.
    pub silu_mul: fn(&mut [f32], &[f32]),
}

pub(super) fn kernels() -> VecKernels {
    #[cfg(target_arch = "x86_64")]
    if isa::avx2() {
        return VecKernels {
            dot_f32: avx2::dot_f32,
            dot_f16: avx2::dot_f16,
            axpy_f32: avx2::axpy_f32,
            axpy_f16: avx2::axpy_f16,
            dot4_f16: avx2::dot4_f16,
            axpy4_f16: avx2::axpy4_f16,
            silu_mul: avx2::silu_mul,
        };
    }
    SCALAR
}

/// The constants of the vector `exp` (Cephes' `expf`): `x` clamped below at `X_MIN`, reduced by
/// `ln 2` in two parts, then the polynomial `POLY` (highest degree first) in the remainder.
pub(super) mod exp_poly {
    pub const X_MIN: f32 = -87.336_55;
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    pub const POLY: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.500_000_01,
    ];
}

pub(super) const SCALAR: VecKernels = VecKernels {
    dot_f32: super::ops::dot_f32,
    dot_f16: scalar::dot_f16,
    axpy_f32: scalar::axpy_f32,
    axpy_f16: scalar::axpy_f16,
    dot4_f16: scalar::dot4_f16,
    axpy4_f16: scalar::axpy4_f16,
    silu_mul: scalar::silu_mul,
};

mod scalar {
    use half::f16;

    pub(super) fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let mut acc = [0.0f32; 8];
        let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..8 {
                acc[i] += x[i] * y[i].to_f32();
            }
        }
        let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y.to_f32()).sum();
        acc.iter().sum::<f32>() + tail
    }

    pub(super) fn axpy_f32(o: &mut [f32], p: f32, v: &[f32]) {
        o.iter_mut().zip(v).for_each(|(x, v)| *x += p * v);
    }

    pub(super) fn axpy_f16(o: &mut [f32], p: f32, v: &[f16]) {
        o.iter_mut().zip(v).for_each(|(x, v)| *x += p * v.to_f32());
    }

    pub(super) fn dot4_f16(a: &[f32], b: [&[f16]; 4]) -> [f32; 4] {
        b.map(|b| dot_f16(a, b))
    }

    pub(super) fn axpy4_f16(o: &mut [f32], p: [f32; 4], v: [&[f16]; 4]) {
        for (p, v) in p.into_iter().zip(v) {
            axpy_f16(o, p, v);
        }
    }

    pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use half::f16;

    /// The sum of eight lanes.
    #[inline(always)]
    pub(in super::super) unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    pub(super) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: chosen only when the CPU has AVX2/FMA; lengths checked.
        unsafe { dot_f32_impl(a, b) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32_impl(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                s1,
            );
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    pub(super) fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: chosen only when the CPU has AVX2/FMA/F16C; lengths checked.
        unsafe { dot_f16_impl(a, b) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_f16_impl(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), load_f16(pb.add(i)), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), load_f16(pb.add(i + 8)), s1);
            i += 16;
        }
        if i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), load_f16(pb.add(i)), s0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            s += a[i] * b[i].to_f32();
            i += 1;
        }
        s
    }

    pub(super) fn dot4_f16(a: &[f32], b: [&[f16]; 4]) -> [f32; 4] {
        assert!(b.iter().all(|b| b.len() == a.len()));
        // SAFETY: chosen only when the CPU has AVX2/FMA/F16C; lengths checked.
        unsafe { dot4_f16_impl(a, b) }
    }

    /// Four keys at once: eight independent FMA chains instead of two, and each `a` load
    /// shared; per key the lanes, chains and reduction of [`dot_f16_impl`].
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot4_f16_impl(a: &[f32], b: [&[f16]; 4]) -> [f32; 4] {
        let n = a.len();
        let pa = a.as_ptr();
        let pb = b.map(|b| b.as_ptr());
        let mut s0 = [_mm256_setzero_ps(); 4];
        let mut s1 = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 16 <= n {
            let (a0, a1) = (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pa.add(i + 8)));
            for r in 0..4 {
                s0[r] = _mm256_fmadd_ps(a0, load_f16(pb[r].add(i)), s0[r]);
                s1[r] = _mm256_fmadd_ps(a1, load_f16(pb[r].add(i + 8)), s1[r]);
            }
            i += 16;
        }
        if i + 8 <= n {
            let a0 = _mm256_loadu_ps(pa.add(i));
            for r in 0..4 {
                s0[r] = _mm256_fmadd_ps(a0, load_f16(pb[r].add(i)), s0[r]);
            }
            i += 8;
        }
        let mut out = [0.0f32; 4];
        for r in 0..4 {
            let mut s = hsum(_mm256_add_ps(s0[r], s1[r]));
            for j in i..n {
                s += a[j] * b[r][j].to_f32();
            }
            out[r] = s;
        }
        out
    }

    pub(super) fn axpy4_f16(o: &mut [f32], p: [f32; 4], v: [&[f16]; 4]) {
        assert!(v.iter().all(|v| v.len() == o.len()));
        // SAFETY: chosen only when the CPU has AVX2/FMA/F16C; lengths checked.
        unsafe { axpy4_f16_impl(o, p, v) }
    }

    /// `o` loaded and stored once for four values rows, the FMAs in [`axpy_f16_impl`]'s order.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn axpy4_f16_impl(o: &mut [f32], p: [f32; 4], v: [&[f16]; 4]) {
        let n = o.len();
        let po = o.as_mut_ptr();
        let pv = v.map(|v| v.as_ptr());
        let pp = p.map(|p| _mm256_set1_ps(p));
        let mut i = 0;
        while i + 8 <= n {
            let mut r = _mm256_loadu_ps(po.add(i));
            for q in 0..4 {
                r = _mm256_fmadd_ps(pp[q], load_f16(pv[q].add(i)), r);
            }
            _mm256_storeu_ps(po.add(i), r);
            i += 8;
        }
        for j in i..n {
            for q in 0..4 {
                o[j] += p[q] * v[q][j].to_f32();
            }
        }
    }

    pub(super) fn axpy_f32(o: &mut [f32], p: f32, v: &[f32]) {
        assert_eq!(o.len(), v.len());
        // SAFETY: chosen only when the CPU has AVX2/FMA; lengths checked.
        unsafe { axpy_f32_impl(o, p, v) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn axpy_f32_impl(o: &mut [f32], p: f32, v: &[f32]) {
        let n = o.len();
        let (po, pv) = (o.as_mut_ptr(), v.as_ptr());
        let pp = _mm256_set1_ps(p);
        let mut i = 0;
        while i + 8 <= n {
            let r = _mm256_fmadd_ps(pp, _mm256_loadu_ps(pv.add(i)), _mm256_loadu_ps(po.add(i)));
            _mm256_storeu_ps(po.add(i), r);
            i += 8;
        }
        while i < n {
            o[i] += p * v[i];
            i += 1;
        }
    }

    pub(super) fn axpy_f16(o: &mut [f32], p: f32, v: &[f16]) {
        assert_eq!(o.len(), v.len());
        // SAFETY: chosen only when the CPU has AVX2/FMA/F16C; lengths checked.
        unsafe { axpy_f16_impl(o, p, v) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn axpy_f16_impl(o: &mut [f32], p: f32, v: &[f16]) {
        let n = o.len();
        let (po, pv) = (o.as_mut_ptr(), v.as_ptr());
        let pp = _mm256_set1_ps(p);
        let mut i = 0;
        while i + 8 <= n {
            let r = _mm256_fmadd_ps(pp, load_f16(pv.add(i)), _mm256_loadu_ps(po.add(i)));
            _mm256_storeu_ps(po.add(i), r);
            i += 8;
        }
        while i < n {
            o[i] += p * v[i].to_f32();
            i += 1;
        }
    }

    pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
        assert_eq!(gate.len(), up.len());
        // SAFETY: chosen only when the CPU has AVX2/FMA; lengths checked.
        unsafe { silu_mul_impl(gate, up) }
    }

    /// `silu(x) = x · σ(x)` with `σ` from `e = exp(−|x|)`: `1/(1+e)` for `x ≥ 0`, `e/(1+e)`
    /// below, so the exponential never overflows.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn silu_mul_impl(gate: &mut [f32], up: &[f32]) {
        let n = gate.len();
        let (pg, pu) = (gate.as_mut_ptr(), up.as_ptr());
        let sign = _mm256_set1_ps(-0.0);
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= n {
            let x = _mm256_loadu_ps(pg.add(i));
            let e = exp256(_mm256_or_ps(x, sign));
            let num = _mm256_blendv_ps(one, e, x);
            let sig = _mm256_div_ps(num, _mm256_add_ps(one, e));
            let y = _mm256_mul_ps(_mm256_mul_ps(x, sig), _mm256_loadu_ps(pu.add(i)));
            _mm256_storeu_ps(pg.add(i), y);
            i += 8;
        }
        super::scalar::silu_mul(&mut gate[i..], &up[i..]);
    }

    /// `eˣ` for `x ≤ 0` to about 1 ulp (Cephes' `expf`: range reduction by ln 2 in two parts, a
    /// degree-5 polynomial, the power of two built in the exponent bits); `e⁰ = 1` exactly and
    /// inputs below −87.3 give about 1e-38.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn exp256(x: __m256) -> __m256 {
        use super::exp_poly::{LN2_HI, LN2_LO, POLY, X_MIN};
        let x = _mm256_max_ps(x, _mm256_set1_ps(X_MIN));
        let fx = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(LN2_LO), r);
        let mut y = _mm256_set1_ps(POLY[0]);
        for c in &POLY[1..] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_fmadd_ps(
            y,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let n = _mm256_cvtps_epi32(fx);
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn selected_kernels_match_the_scalar_ones() {
        let k = kernels();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1, 7, 8, 15, 16, 17, 64, 128, 131] {
            let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let bh: Vec<f16> = b.iter().map(|x| f16::from_f32(*x)).collect();
            let tol = 1e-5 * n as f32;
            assert!(((k.dot_f32)(&a, &b) - (SCALAR.dot_f32)(&a, &b)).abs() <= tol);
            assert!(((k.dot_f16)(&a, &bh) - (SCALAR.dot_f16)(&a, &bh)).abs() <= tol);
            let (mut o1, mut o2) = (a.clone(), a.clone());
            (k.axpy_f32)(&mut o1, 0.37, &b);
            (SCALAR.axpy_f32)(&mut o2, 0.37, &b);
            assert!(o1.iter().zip(&o2).all(|(x, y)| (x - y).abs() <= 1e-6));
            let (mut o1, mut o2) = (a.clone(), a.clone());
            (k.axpy_f16)(&mut o1, -1.5, &bh);
            (SCALAR.axpy_f16)(&mut o2, -1.5, &bh);
            assert!(o1.iter().zip(&o2).all(|(x, y)| (x - y).abs() <= 1e-6));
            // The four-row kernels equal four one-row calls of the same set, bit for bit.
            let rows: Vec<Vec<f16>> = (0..4)
                .map(|_| {
                    (0..n)
                        .map(|_| f16::from_f32(rng.gen_range(-1.0..1.0)))
                        .collect()
                })
                .collect();
            let four = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
            for set in [k, SCALAR] {
                let got = (set.dot4_f16)(&a, four);
                for (g, r) in got.iter().zip(four) {
                    assert_eq!(g.to_bits(), (set.dot_f16)(&a, r).to_bits(), "dot4 n={n}");
                }
                let p = [0.5, -1.25, 2.0, 0.03];
                let (mut o1, mut o2) = (a.clone(), a.clone());
                (set.axpy4_f16)(&mut o1, p, four);
                for (p, r) in p.into_iter().zip(four) {
                    (set.axpy_f16)(&mut o2, p, r);
                }
                assert!(
                    o1.iter().zip(&o2).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "axpy4 n={n}"
                );
            }
        }
    }

    /// The vector `exp` agrees with libm's to a few ulp down to −87 (below, both are ~0), is
    /// exactly 1 at 0, and flushes far-negative inputs to (nearly) zero.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_matches_libm() {
        use std::arch::x86_64::{_mm256_loadu_ps, _mm256_storeu_ps};
        if !isa::avx2() {
            return;
        }
        let xs: Vec<f32> = (0..=174_000).map(|i| -(i as f32) * 5e-4).collect();
        let mut worst = 0.0f32;
        for chunk in xs.chunks_exact(8) {
            let mut got = [0.0f32; 8];
            // SAFETY: AVX2/FMA/F16C checked above; 8 floats in and out.
            unsafe {
                _mm256_storeu_ps(
                    got.as_mut_ptr(),
                    avx2::exp256(_mm256_loadu_ps(chunk.as_ptr())),
                )
            };
            for (x, g) in chunk.iter().zip(got) {
                let want = x.exp();
                worst = worst.max(((g - want) / want).abs());
            }
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        let xs = [
            0.0,
            -1e-30,
            -87.0,
            -100.0,
            -1e4,
            f32::NEG_INFINITY,
            -0.0,
            -1.0,
        ];
        let mut edge = [0.0f32; 8];
        // SAFETY: as above.
        unsafe {
            _mm256_storeu_ps(
                edge.as_mut_ptr(),
                avx2::exp256(_mm256_loadu_ps(xs.as_ptr())),
            )
        };
        assert_eq!(edge[0], 1.0);
        assert_eq!(edge[6], 1.0);
        assert!((edge[2] - (-87.0f32).exp()).abs() <= 1e-6 * (-87.0f32).exp());
        assert!(
            edge[3..6].iter().all(|v| *v >= 0.0 && *v < 1e-37),
            "{edge:?}"
        );
    }

    /// `silu(g)·u` on AVX2 agrees with the scalar formula across signs and magnitudes,
    /// including a tail shorter than a vector.
    #[test]
    fn silu_mul_matches_the_scalar_formula() {
        let k = kernels();
        let g: Vec<f32> = (0..203).map(|i| (i as f32 - 101.0) * 0.37).collect();
        let u: Vec<f32> = (0..203).map(|i| 1.0 + (i % 7) as f32 * 0.25).collect();
        let (mut got, mut want) = (g.clone(), g.clone());
        (k.silu_mul)(&mut got, &u);
        (SCALAR.silu_mul)(&mut want, &u);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{i}: {a} vs {b}");
        }
    }
}
