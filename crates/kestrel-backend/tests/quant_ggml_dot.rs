//! Dot products and activation conversion against ggml itself.
//!
//! `tests/data/quant_vectors/dot_<NAME>.bin` (format in `scripts/golden/make_quant_vectors.py`)
//! hold weight rows, activation values, ggml's reference conversion of the activations
//! (`quantize_row_q8_0_ref`, `q8_1_ref`, `q8_K_ref`, f16 / bf16 rows) and the results of
//! `ggml_vec_dot_<fmt>_<act>_generic` and of the SIMD kernel ggml dispatched on the machine that
//! made them (x86 AVX2, from a llama-cpp-python build).
//!
//! - `quantize_act_row` must give ggml's bytes exactly.
//! - `vec_dot` must equal the generic result bit for bit: same integer sums, same f32 order.
//!   For F32 / F16 / BF16 the recorded result is ggml's AVX2 `ggml_vec_dot_f32/f16/bf16`, whose
//!   lanes and reduction `float.rs` reproduces, so it too must match exactly.
//!   Exceptions: the recorded build (GCC, `-march=native` on an AMD FMA machine) fused some
//!   multiply-adds the C source writes as two roundings: Q4_1 / Q5_1's per-block
//!   `(d_w·d_a)·sumi + m_w·s_a` became `fma(d_w·d_a, sumi, m_w·s_a)`, and the vectorized
//!   `sums[l] += d·aux32[l]` of the K-quants became `fma(d, aux32[l], sums[l])` (checked by
//!   replaying the recorded cases both ways). Whether a compiler fuses is its choice, so
//!   Kestrel keeps the unfused source semantics and those formats are held to f32 rounding
//!   here; F32, F16, BF16, Q8_0, Q4_0 and Q5_0 match the build bit for bit.
//! - ggml's SIMD kernels for the quantized formats sum the same integers in another f32 order;
//!   they must agree within f32 rounding (`32 · 2⁻²⁴ · Σ|w·a|`). Q8_0 and Q4_K run ggml's
//!   AVX2 arithmetic on AVX2 machines, so there they must equal the recorded SIMD result bit
//!   for bit (and the generic one within rounding).

use std::path::PathBuf;

use kestrel_backend::cpu::quant::{
    dequantize_act_row, dequantize_row, quantize_act_row, vec_dot, WeightFormat,
};

struct DotCase {
    k: usize,
    weights: Vec<u8>,
    x: Vec<f32>,
    act: Vec<u8>,
    generic: f32,
    native: f32,
}

fn load(fmt: WeightFormat) -> Vec<DotCase> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant_vectors")
        .join(format!("dot_{}.bin", fmt.name()));
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut at = 0usize;
    let mut take = |n: usize| {
        let s = &data[at..at + n];
        at += n;
        s.to_vec()
    };
    let u32_of = |b: Vec<u8>| u32::from_le_bytes(b.try_into().unwrap());
    let f32s = |b: Vec<u8>| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<f32>>()
    };
    assert_eq!(take(4), b"KQD1");
    assert_eq!(u32_of(take(4)), fmt.ggml_type_id());
    let n = u32_of(take(4));
    let act = fmt.act_format();
    let cases = (0..n)
        .map(|_| {
            let k = u32_of(take(4)) as usize;
            let weights = take(fmt.row_bytes(k));
            let x = f32s(take(4 * k));
            let act_bytes = take(act.row_bytes(k));
            let r = f32s(take(8));
            DotCase {
                k,
                weights,
                x,
                act: act_bytes,
                generic: r[0],
                native: r[1],
            }
        })
        .collect();
    assert_eq!(at, data.len(), "trailing bytes in {}", path.display());
    cases
}

/// Formats whose generic kernel the recorded build compiled with fused multiply-adds.
fn fused_by_recorded_build(fmt: WeightFormat) -> bool {
    matches!(
        fmt,
        WeightFormat::Q4_1
            | WeightFormat::Q5_1
            | WeightFormat::Q4_K
            | WeightFormat::Q5_K
            | WeightFormat::Q6_K
    )
}

#[test]
fn activation_conversion_and_dot_products_match_ggml() {
    for fmt in WeightFormat::ALL {
        let act = fmt.act_format();
        let cases = load(fmt);
        assert_eq!(cases.len(), 2, "{fmt:?}");
        for (c, case) in cases.iter().enumerate() {
            let k = case.k;
            let mut a = vec![0u8; act.row_bytes(k)];
            quantize_act_row(act, &case.x, &mut a);
            assert!(
                a == case.act,
                "{fmt:?} case {c}: {act:?} conversion differs from ggml's reference"
            );

            let got = vec_dot(fmt, &case.weights, &case.act, k);
            let (mut dw, mut da) = (vec![0.0f32; k], vec![0.0f32; k]);
            dequantize_row(fmt, &case.weights, &mut dw);
            dequantize_act_row(act, &case.act, &mut da);
            let abs: f64 = dw
                .iter()
                .zip(&da)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            let tol = 32.0 * f64::powi(2.0, -24) * abs;

            // Q6_K follows ggml's AVX2 kernel as published before its lanes were rearranged
            // around the block sums; it agrees with the recorded build within rounding (below).
            let x86_arith = matches!(fmt, WeightFormat::Q8_0 | WeightFormat::Q4_K)
                && kestrel_backend::cpu::quant::vec_dot_isa(fmt) == "avx2";
            if x86_arith {
                // Kestrel runs ggml's own AVX2 kernel here: the recorded SIMD result exactly.
                assert_eq!(
                    got.to_bits(),
                    case.native.to_bits(),
                    "{fmt:?} case {c} (k={k}): {got} vs ggml's AVX2 kernel {}",
                    case.native
                );
                assert!((got as f64 - case.generic as f64).abs() <= tol);
            } else if fused_by_recorded_build(fmt) {
                assert!(
                    (got as f64 - case.generic as f64).abs() <= tol,
                    "{fmt:?} case {c}: {got} vs ggml {}",
                    case.generic
                );
            } else {
                assert_eq!(
                    got.to_bits(),
                    case.generic.to_bits(),
                    "{fmt:?} case {c} (k={k}): {got} vs ggml {}",
                    case.generic
                );
            }
            assert!(
                (got as f64 - case.native as f64).abs() <= tol,
                "{fmt:?} case {c}: {got} vs ggml's SIMD kernel {} (tol {tol})",
                case.native
            );
        }
    }
}
