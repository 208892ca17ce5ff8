//! Throughput of the dot-product kernels, dispatched (AVX2 where available) against the portable
//! scalar reference, on a weight matrix bigger than the caches (decode reads every weight once).
//! Before timing, every row's dot product is checked against the scalar reference with the rule
//! of `quant_dot.rs`: bit for bit, except Q8_0 / Q4_K / Q6_K, whose x86 kernels follow ggml's
//! arithmetic (same integer sums, another f32 rounding order) and agree within
//! `2·(k/32 + 16)·2⁻²⁴·Σ|w_i·a_i|`. Ignored by default; run with
//! `cargo test -p kestrel-backend --test quant_speed -- --ignored --nocapture` (the test profile
//! is optimized).

use std::time::Instant;

use kestrel_backend::cpu::quant::{
    dequantize_act_row, dequantize_row, quantize_act_row, quantize_row, vec_dot_isa,
    vec_dot_kernel, vec_dot_kernel_scalar, VecDotFn, WeightFormat,
};

/// Best of 5 passes over all rows, in seconds per pass; each pass repeats the matrix `reps` times.
fn time_rows(f: VecDotFn, w: &[u8], a: &[u8], k: usize, row_bytes: usize, reps: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            for row in w.chunks_exact(row_bytes) {
                std::hint::black_box(f(std::hint::black_box(row), a, k));
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    best
}

/// Every row: the dispatched kernel against the scalar reference (see the module doc).
fn check_rows(fmt: WeightFormat, w: &[u8], a: &[u8], k: usize) {
    let rb = fmt.row_bytes(k);
    let act = fmt.act_format();
    let mut da = vec![0.0f32; k];
    dequantize_act_row(act, a, &mut da);
    let mut dw = vec![0.0f32; k];
    for (r, row) in w.chunks_exact(rb).enumerate() {
        let scalar = vec_dot_kernel_scalar(fmt)(row, a, k);
        let got = vec_dot_kernel(fmt)(row, a, k);
        if matches!(
            fmt,
            WeightFormat::Q8_0 | WeightFormat::Q4_K | WeightFormat::Q6_K
        ) {
            dequantize_row(fmt, row, &mut dw);
            let abs: f64 = dw
                .iter()
                .zip(&da)
                .map(|(x, y)| (*x as f64 * *y as f64).abs())
                .sum();
            let tol = 2.0 * (k / 32 + 16) as f64 * f64::powi(2.0, -24) * abs;
            assert!(
                (got as f64 - scalar as f64).abs() <= tol,
                "{fmt:?} row {r}: kernel {got} vs scalar {scalar} (tol {tol})"
            );
        } else {
            assert_eq!(
                got.to_bits(),
                scalar.to_bits(),
                "{fmt:?} row {r}: kernel {got} vs scalar {scalar}"
            );
        }
    }
}

#[test]
#[ignore]
fn print_vec_dot_throughput() {
    // KESTREL_QUANT_ROWS=64 keeps the matrix in L2 and measures the kernels' arithmetic alone.
    let k = 4096;
    let rows: usize = std::env::var("KESTREL_QUANT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let reps = (4096 / rows).max(1);
    let x: Vec<f32> = (0..k)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    println!(
        "{:<6} {:>7} {:>12} {:>12} {:>7}",
        "format", "isa", "scalar GB/s", "kernel GB/s", "ratio"
    );
    for fmt in WeightFormat::ALL {
        let rb = fmt.row_bytes(k);
        let mut w = vec![0u8; rows * rb];
        for (r, row) in w.chunks_exact_mut(rb).enumerate() {
            // Distinct rows (the input rotated), so the check sees many different sums.
            let xr: Vec<f32> = x.iter().cycle().skip(r * 31 % k).take(k).copied().collect();
            quantize_row(fmt, &xr, row);
        }
        let act = fmt.act_format();
        let mut a = vec![0u8; act.row_bytes(k)];
        quantize_act_row(act, &x, &mut a);
        check_rows(fmt, &w, &a, k);
        let ts = time_rows(vec_dot_kernel_scalar(fmt), &w, &a, k, rb, reps);
        let tk = time_rows(vec_dot_kernel(fmt), &w, &a, k, rb, reps);
        let gb = (rows * rb) as f64 / 1e9;
        println!(
            "{:<6} {:>7} {:>12.2} {:>12.2} {:>6.1}x",
            fmt.name(),
            vec_dot_isa(fmt),
            gb / ts,
            gb / tk,
            ts / tk
        );
    }
}
