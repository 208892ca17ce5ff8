//! Throughput of the CPU matmul for one weight format and shape: `x [n, k] · w [m, k]ᵀ` on
//! random data, median of several calls, in GFLOP/s and (for `n = 1`) weight GB/s.
//!
//! ```text
//! cargo run --release -p kestrel-backend --example matmul_bench -- q8_0 512 6144 2048
//! ```

use std::time::Instant;

use kestrel_backend::cpu::quant::quantize_row;
use kestrel_backend::cpu::{CpuBackend, CpuTensor};
use kestrel_backend::{Backend, HostBytes, HostWeight, StepOptions, WeightFormat};

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 4 {
        eprintln!("usage: matmul_bench FORMAT N M K [REPS]");
        std::process::exit(2);
    }
    let format = match argv[0].to_ascii_lowercase().as_str() {
        "f32" => WeightFormat::F32,
        "f16" => WeightFormat::F16,
        "bf16" => WeightFormat::BF16,
        "q8_0" => WeightFormat::Q8_0,
        "q4_0" => WeightFormat::Q4_0,
        "q4_k" => WeightFormat::Q4_K,
        "q5_k" => WeightFormat::Q5_K,
        "q6_k" => WeightFormat::Q6_K,
        other => panic!("unknown format {other}"),
    };
    let num = |i: usize| -> usize { argv[i].parse().expect("a number") };
    let (n, m, k) = (num(1), num(2), num(3));
    let reps = argv.get(4).map_or(5, |s| s.parse().expect("a number"));
    // A cheap deterministic pseudo-random fill in [-1, 1).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let rb = format.row_bytes(k);
    let mut bytes = vec![0u8; m * rb];
    let mut row = vec![0.0f32; k];
    for dst in bytes.chunks_exact_mut(rb) {
        row.iter_mut().for_each(|v| *v = next());
        quantize_row(format, &row, dst);
    }
    let backend = CpuBackend::new();
    let w = backend
        .load_weight(HostWeight {
            name: "w".into(),
            format,
            rows: m,
            cols: k,
            bytes: HostBytes::from_vec(bytes),
        })
        .expect("weight");
    let x = CpuTensor::from_vec(n, k, (0..n * k).map(|_| next()).collect()).expect("x");
    let mut out = CpuTensor::with_capacity(n, m);
    // `KESTREL_BATCH_INVARIANT=1`: the batch-invariant kernels.
    let opts = StepOptions {
        batch_invariant: std::env::var("KESTREL_BATCH_INVARIANT").is_ok_and(|v| v == "1"),
        graph_tokens: None,
    };
    let mut times = Vec::new();
    for _ in 0..reps + 1 {
        let t = Instant::now();
        backend
            .run_step(opts, || backend.matmul(&x, &w, &mut out))
            .expect("matmul");
        std::hint::black_box(&out);
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    times.sort_by(f64::total_cmp);
    let s = times[times.len() / 2];
    println!(
        "{format:?} n={n} m={m} k={k}: {:.2} ms, {:.1} GFLOP/s (best {:.1}), {:.2} GB/s of weights",
        s * 1e3,
        2.0 * (n * m * k) as f64 / s / 1e9,
        2.0 * (n * m * k) as f64 / times[0] / 1e9,
        (m * rb) as f64 / s / 1e9
    );
}
