//! `vec_dot` against the dequantized rows: the integer block dot products must equal
//! `Σ dequantize_row(w)[i] · dequantize_act_row(a)[i]` up to f32 rounding, for every format, at
//! one block, several blocks and k = 4096. The dispatched kernel (AVX2 where available) must
//! also equal the portable scalar kernel bit for bit.
//!
//! Tolerance: the kernels add at most `k/32 + 16` f32 terms in sequence (per block or per lane)
//! after rounding each product once or twice, so the error is below
//! `2·(k/32 + 16)·2⁻²⁴·Σ|w_i·a_i|`. Q4_1 / Q5_1 add `m_w · s_a` per block, where `s_a` is
//! `d_a·Σq_a` rounded to f16 from the unrounded `d_a` (ggml's `block_q8_1`), so they also get
//! `Σ_blocks |m_w·s_a|·2⁻¹⁰`.

use kestrel_backend::cpu::quant::{
    dequantize_act_row, dequantize_row, quantize_act_row, quantize_row, vec_dot, vec_dot_kernel,
    vec_dot_kernel_scalar, ActFormat, WeightFormat,
};
use rand::{Rng, SeedableRng};

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn random_row(rng: &mut rand::rngs::StdRng, k: usize, offset: f32) -> Vec<f32> {
    (0..k)
        .map(|_| rng.gen_range(-1.0f32..1.0) * rng.gen_range(0.1f32..2.0) + offset)
        .collect()
}

/// Σ |m_w · s_a| over the blocks of a Q4_1 / Q5_1 row.
fn offset_terms(fmt: WeightFormat, w: &[u8], a: &[u8]) -> f64 {
    match fmt {
        WeightFormat::Q4_1 | WeightFormat::Q5_1 => w
            .chunks_exact(fmt.block_bytes())
            .zip(a.chunks_exact(ActFormat::Q8_1.block_bytes()))
            .map(|(wb, ab)| (f16_at(wb, 2) as f64 * f16_at(ab, 2) as f64).abs())
            .sum(),
        _ => 0.0,
    }
}

#[test]
fn act_formats_follow_ggml_vec_dot_type() {
    use ActFormat as A;
    use WeightFormat as W;
    let table = [
        (W::F32, A::F32),
        (W::F16, A::F16),
        (W::BF16, A::BF16),
        (W::Q8_0, A::Q8_0),
        (W::Q4_0, A::Q8_0),
        (W::Q5_0, A::Q8_0),
        (W::Q4_1, A::Q8_1),
        (W::Q5_1, A::Q8_1),
        (W::Q4_K, A::Q8_K),
        (W::Q5_K, A::Q8_K),
        (W::Q6_K, A::Q8_K),
    ];
    for (w, a) in table {
        assert_eq!(w.act_format(), a, "{w:?}");
        assert_eq!(w.block_len() % a.block_len(), 0);
    }
}

#[test]
fn vec_dot_equals_the_dot_of_dequantized_rows() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for fmt in WeightFormat::ALL {
        let bl = fmt.block_len();
        let sizes = if bl == 1 {
            vec![1, 32, 100, 4096]
        } else {
            vec![bl, 4 * bl, 4096]
        };
        for k in sizes {
            for offset in [0.0f32, 0.7] {
                let act = fmt.act_format();
                let (xw, xa) = (
                    random_row(&mut rng, k, offset),
                    random_row(&mut rng, k, -offset),
                );
                let mut w = vec![0u8; fmt.row_bytes(k)];
                quantize_row(fmt, &xw, &mut w);
                let mut a = vec![0u8; act.row_bytes(k)];
                quantize_act_row(act, &xa, &mut a);
                let (mut dw, mut da) = (vec![0.0f32; k], vec![0.0f32; k]);
                dequantize_row(fmt, &w, &mut dw);
                dequantize_act_row(act, &a, &mut da);
                let want: f64 = dw.iter().zip(&da).map(|(x, y)| *x as f64 * *y as f64).sum();
                let abs: f64 = dw
                    .iter()
                    .zip(&da)
                    .map(|(x, y)| (*x as f64 * *y as f64).abs())
                    .sum();
                let tol = 2.0 * (k / 32 + 16) as f64 * f64::powi(2.0, -24) * abs
                    + offset_terms(fmt, &w, &a) * f64::powi(2.0, -10);
                let got = vec_dot(fmt, &w, &a, k) as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{fmt:?} k={k} offset {offset}: {got} vs {want} (tol {tol})"
                );
                let scalar = vec_dot_kernel_scalar(fmt)(&w, &a, k);
                if matches!(
                    fmt,
                    WeightFormat::Q8_0 | WeightFormat::Q4_K | WeightFormat::Q6_K
                ) {
                    // ggml's x86 arithmetic on x86: same integer sums, other f32 rounding.
                    assert!(
                        (got - scalar as f64).abs() <= tol,
                        "{fmt:?} k={k}: dispatched {got} vs scalar reference {scalar}"
                    );
                } else {
                    assert_eq!(
                        got as f32, scalar,
                        "{fmt:?} k={k}: dispatched kernel differs from the scalar reference"
                    );
                }
            }
        }
    }
}

#[test]
fn quantized_matvec_tracks_the_f32_product() {
    // End to end: a 4096-wide weight row and activation, both quantized, against the exact f32
    // dot product; the error is the quantization noise, bounded loosely per format.
    let mut rng = rand::rngs::StdRng::seed_from_u64(8);
    let k = 4096;
    let xw = random_row(&mut rng, k, 0.0);
    let xa = random_row(&mut rng, k, 0.0);
    let exact: f64 = xw.iter().zip(&xa).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = (xw.iter().map(|v| (*v as f64).powi(2)).sum::<f64>()
        * xa.iter().map(|v| (*v as f64).powi(2)).sum::<f64>())
    .sqrt();
    for fmt in WeightFormat::ALL {
        let mut w = vec![0u8; fmt.row_bytes(k)];
        quantize_row(fmt, &xw, &mut w);
        let mut a = vec![0u8; fmt.act_format().row_bytes(k)];
        quantize_act_row(fmt.act_format(), &xa, &mut a);
        let got = vec_dot_kernel(fmt)(&w, &a, k) as f64;
        let rel = match fmt {
            WeightFormat::F32 => 1e-6,
            WeightFormat::F16 => 2e-3,
            WeightFormat::BF16 => 1e-2,
            WeightFormat::Q8_0 | WeightFormat::Q6_K => 2e-2,
            _ => 1e-1,
        };
        assert!(
            (got - exact).abs() <= rel * norm,
            "{fmt:?}: {got} vs exact {exact} (|w|·|a| = {norm})"
        );
    }
}
