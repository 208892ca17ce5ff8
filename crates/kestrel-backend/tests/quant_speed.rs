//! Throughput of the dot-product kernels, dispatched (AVX2 where available) against the portable
//! scalar reference, on a weight matrix bigger than the caches (decode reads every weight once).
//! Ignored by default; run with
//! `cargo test -p kestrel-backend --test quant_speed -- --ignored --nocapture` (the test profile
//! is optimized).

use std::time::Instant;

use kestrel_backend::cpu::quant::{
    quantize_act_row, quantize_row, vec_dot_isa, vec_dot_kernel, vec_dot_kernel_scalar, VecDotFn,
    WeightFormat,
};

/// Best of 5 passes over all rows; each pass repeats the matrix `reps` times.
fn time_rows(
    f: VecDotFn,
    w: &[u8],
    a: &[u8],
    k: usize,
    row_bytes: usize,
    reps: usize,
) -> (f64, f32) {
    let mut best = f64::MAX;
    let mut sink = 0.0f32;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..reps {
            for row in w.chunks_exact(row_bytes) {
                sink += f(row, a, k);
            }
        }
        best = best.min(t.elapsed().as_secs_f64() / reps as f64);
    }
    (best, sink)
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
        for row in w.chunks_exact_mut(rb) {
            quantize_row(fmt, &x, row);
        }
        let act = fmt.act_format();
        let mut a = vec![0u8; act.row_bytes(k)];
        quantize_act_row(act, &x, &mut a);
        let (ts, s1) = time_rows(vec_dot_kernel_scalar(fmt), &w, &a, k, rb, reps);
        let (tk, s2) = time_rows(vec_dot_kernel(fmt), &w, &a, k, rb, reps);
        assert_eq!(s1.to_bits(), s2.to_bits());
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
