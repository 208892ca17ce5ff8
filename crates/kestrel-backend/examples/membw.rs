//! Read bandwidth of this machine with the compute thread pool: every thread sums its share of
//! a buffer much larger than the last-level cache. Prints the median GB/s of several passes;
//! the CPU benchmark divides it by the weight bytes per token to get the decode roofline.
//!
//! ```text
//! cargo run --release -p kestrel-backend --example membw -- [--threads N] [--mib 1024]
//! ```

use std::time::Instant;

use rayon::prelude::*;

fn main() {
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut mib = 1024usize;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v: usize = pair
            .get(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{} needs a number", pair[0]));
        match pair[0].as_str() {
            "--threads" => threads = v,
            "--mib" => mib = v,
            other => panic!("unknown argument {other}"),
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("thread pool");
    let n = mib * (1 << 20) / 8;
    let buf: Vec<u64> = (0..n as u64).into_par_iter().map(|i| i ^ 0x9e37).collect();
    let mut rates = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let sum = buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
            .reduce(|| 0, u64::wrapping_add);
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        rates.push((n * 8) as f64 / dt / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    println!("{:.2}", rates[rates.len() / 2]);
}
