//! `x [n, k] · wᵀ [k, m]` for weights of every storage format, split across threads by
//! blocks of weight rows so each weight row is read from memory once per call.
//!
//! - Batches (prefill) on AVX2: the packed f32 GEMM of `gemm_packed.rs`, floats from 6 rows
//!   and quantized weights from 64; [`matmul_many`] packs the activations once for several
//!   weights that read them (Q/K/V, gate/up) and runs them in one parallel loop. Its tasks
//!   (runs of up to 64 weight rows, the last few cut to 16) are taken in order from a shared
//!   counter, so the threads finish within one small task of each other.
//! - F32 / F16 / BF16 otherwise: the register-blocked f32 GEMM of `gemm.rs` (16-bit weights
//!   widened in registers), f32 activations.
//! - Quantized otherwise (decode): each activation row is quantized once to the format's dot
//!   type (ggml's `vec_dot_type`) and block-integer dot products give the result, as ggml does.

use rayon::prelude::*;

use super::gemm::gemm_rows;
#[cfg(target_arch = "x86_64")]
use super::gemm_packed;
use super::quant::{
    quantize_act_row, vec_dot4_kernel, vec_dot_kernel, vec_dot_w4_kernel, WeightFormat,
};
use super::tensor::{CpuTensor, CpuWeight, SharedOut};
use crate::error::{shape_err, Result};

/// Weight rows per task: enough tasks to balance threads, few enough to amortize scheduling;
/// a multiple of the GEMM tile's three rows and of the four rows of the decode kernels.
fn rows_per_task(m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    ((m / (threads * 8)).clamp(12, 72) / 12) * 12
}

fn check_shapes(x: &CpuTensor, w: &CpuWeight) -> Result<()> {
    if w.cols != x.cols {
        return Err(shape_err(
            "matmul",
            format!(
                "x [{}, {}] · w[{}, {}]ᵀ ({})",
                x.rows, x.cols, w.rows, w.cols, w.name
            ),
        ));
    }
    Ok(())
}

/// `x · wᵢᵀ` for every weight; when all of them take the packed GEMM, `x` is packed once and
/// one parallel loop covers every weight's column runs.
pub fn matmul_many(x: &CpuTensor, ws: &[&CpuWeight]) -> Result<Vec<CpuTensor>> {
    for w in ws {
        check_shapes(x, w)?;
    }
    #[cfg(target_arch = "x86_64")]
    if x.rows > 0 && ws.iter().all(|w| takes_packed(x.rows, w)) {
        return Ok(packed(x, ws));
    }
    ws.iter().map(|w| matmul(x, w)).collect()
}

pub fn matmul(x: &CpuTensor, w: &CpuWeight) -> Result<CpuTensor> {
    check_shapes(x, w)?;
    let (n, k, m) = (x.rows, x.cols, w.rows);
    if n == 0 || m == 0 {
        return Ok(CpuTensor::zeros(n, m));
    }
    #[cfg(target_arch = "x86_64")]
    if takes_packed(n, w) {
        return Ok(packed(x, &[w]).pop().expect("one output per weight"));
    }
    // outT [m, n]: each task owns a contiguous run of weight rows.
    let mut out_t = vec![0.0f32; m * n];
    let chunk = rows_per_task(m);
    match w.format {
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => {
            let bytes = w.data();
            let rb = w.format.row_bytes(k);
            out_t
                .par_chunks_mut(chunk * n)
                .enumerate()
                .for_each(|(c, dst)| {
                    let rows = dst.len() / n;
                    let j0 = c * chunk;
                    gemm_rows(
                        w.format,
                        &bytes[j0 * rb..(j0 + rows) * rb],
                        rows,
                        &x.data,
                        n,
                        k,
                        dst,
                    );
                });
        }
        fmt => {
            let dot = vec_dot_kernel(fmt);
            let dot4 = vec_dot4_kernel(fmt);
            // Decode-sized batches: four weight rows against each activation row.
            let dot_w4 = if n < 4 { vec_dot_w4_kernel(fmt) } else { None };
            let act = fmt.act_format();
            let arb = act.row_bytes(k);
            let w_rb = fmt.row_bytes(k);
            let mut acts = vec![0u8; n * arb];
            acts.par_chunks_mut(arb)
                .enumerate()
                .for_each(|(i, dst)| quantize_act_row(act, x.row(i), dst));
            // Activation rows in blocks that stay in L2 while the task's weight rows (also
            // L2-resident) pass over them; without blocking a long prompt's activations are
            // re-read from L3 for every weight row.
            let row_block = (256 * 1024 / arb).clamp(4, 256) / 4 * 4;
            out_t
                .par_chunks_mut(chunk * n)
                .enumerate()
                .for_each(|(c, dst)| {
                    if let Some(dot_w4) = dot_w4 {
                        let rows = dst.len() / n;
                        let mut r = 0;
                        while r + 4 <= rows {
                            let j = c * chunk + r;
                            let wrows = &w.bytes.as_slice()[j * w_rb..(j + 4) * w_rb];
                            for (i, a) in acts.chunks_exact(arb).enumerate() {
                                let s = dot_w4(wrows, a, k);
                                for (q, v) in s.into_iter().enumerate() {
                                    dst[(r + q) * n + i] = v;
                                }
                            }
                            r += 4;
                        }
                        for (rr, orow) in dst.chunks_exact_mut(n).enumerate().skip(r) {
                            let wrow = w.row_bytes(c * chunk + rr);
                            for (o, a) in orow.iter_mut().zip(acts.chunks_exact(arb)) {
                                *o = dot(wrow, a, k);
                            }
                        }
                        return;
                    }
                    for i0 in (0..n).step_by(row_block) {
                        let i1 = (i0 + row_block).min(n);
                        for (r, orow) in dst.chunks_exact_mut(n).enumerate() {
                            let wrow = w.row_bytes(c * chunk + r);
                            let mut i = i0;
                            if let Some(dot4) = dot4 {
                                while i + 4 <= i1 {
                                    orow[i..i + 4].copy_from_slice(&dot4(
                                        wrow,
                                        &acts[i * arb..(i + 4) * arb],
                                        k,
                                    ));
                                    i += 4;
                                }
                            }
                            for (o, a) in orow[i..i1]
                                .iter_mut()
                                .zip(acts[i * arb..i1 * arb].chunks_exact(arb))
                            {
                                *o = dot(wrow, a, k);
                            }
                        }
                    }
                });
        }
    }
    let data = if n == 1 {
        out_t
    } else {
        transpose(&out_t, m, n)
    };
    CpuTensor::from_vec(n, m, data)
}

/// From how many activation rows on a format goes through the packed f32 GEMM: floats as
/// soon as a 6-row micro-tile is filled; quantized weights once the rows amortize dequantizing
/// each weight panel (below that, integer dot products on the quantized activations win).
#[cfg(target_arch = "x86_64")]
fn packed_rows(format: WeightFormat) -> usize {
    match format {
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => gemm_packed::MR,
        _ => PACKED_ROWS_QUANTIZED,
    }
}

#[cfg(target_arch = "x86_64")]
const PACKED_ROWS_QUANTIZED: usize = 64;

/// Whether `n` activation rows against `w` go through [`gemm_packed`].
#[cfg(target_arch = "x86_64")]
fn takes_packed(n: usize, w: &CpuWeight) -> bool {
    packed_rows(w.format) <= n && super::isa::avx2()
}

/// `x · wᵢᵀ` through [`gemm_packed`]: activations packed once, tasks own column runs of one
/// weight's output.
#[cfg(target_arch = "x86_64")]
fn packed(x: &CpuTensor, ws: &[&CpuWeight]) -> Vec<CpuTensor> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (n, k) = (x.rows, x.cols);
    let a = gemm_packed::pack_act(&x.data, n, k);
    let threads = rayon::current_num_threads().max(1);
    // Left uninitialized: the tasks together write every element before `set_len` below.
    let mut outs: Vec<Vec<f32>> = ws.iter().map(|w| Vec::with_capacity(n * w.rows)).collect();
    // (weight, first row, rows) per task: 16 per thread and weight, at most `TASK_ROWS` rows
    // (whose widened weights and outputs stay in L2).
    let mut tasks = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        let m = w.rows;
        let chunk = (m / (threads * 16)).clamp(gemm_packed::NR, gemm_packed::TASK_ROWS)
            / gemm_packed::NR
            * gemm_packed::NR;
        tasks.extend((0..m).step_by(chunk).map(|j0| (i, j0, chunk.min(m - j0))));
    }
    // The last tasks cut into single 16-row groups: a thread that runs out of work then waits
    // at most one such group's time for the others, not one whole task's.
    let tail = tasks.len().saturating_sub(2 * threads);
    let last: Vec<_> = tasks.drain(tail..).collect();
    for (i, j0, rows) in last {
        let nr = gemm_packed::NR;
        tasks.extend(
            (j0..j0 + rows)
                .step_by(nr)
                .map(|j| (i, j, nr.min(j0 + rows - j))),
        );
    }
    let out_ptrs: Vec<SharedOut> = outs.iter_mut().map(|o| SharedOut(o.as_mut_ptr())).collect();
    let run = |&(i, j0, rows): &(usize, usize, usize)| {
        let w = ws[i];
        let rb = w.format.row_bytes(k);
        // SAFETY: AVX2/FMA/F16C were checked by `takes_packed`; output `i` holds `n · m`
        // floats and each task writes only its own columns `j0..j0 + rows` of it.
        unsafe {
            gemm_packed::gemm_packed(
                w.format,
                &w.data()[j0 * rb..(j0 + rows) * rb],
                rows,
                &a,
                out_ptrs[i].0,
                w.rows,
                j0,
            )
        };
    };
    // Each thread takes the next task in list order from a shared counter (the small ones
    // come last), rather than owning half of the list up front.
    let taken = AtomicUsize::new(0);
    (0..threads).into_par_iter().for_each(|_| {
        while let Some(task) = tasks.get(taken.fetch_add(1, Ordering::Relaxed)) {
            run(task);
        }
    });
    for (o, w) in outs.iter_mut().zip(ws) {
        // SAFETY: the tasks' column runs cover `0..m` and `gemm_packed` writes every row of
        // them, so all `n · m` floats are initialized.
        unsafe { o.set_len(n * w.rows) };
    }
    outs.into_iter()
        .zip(ws)
        .map(|(o, w)| CpuTensor::from_vec(n, w.rows, o).expect("n · m floats"))
        .collect()
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut dst = vec![0.0f32; rows * cols];
    dst.par_chunks_mut(rows).enumerate().for_each(|(c, drow)| {
        for (r, d) in drow.iter_mut().enumerate() {
            *d = src[r * cols + c];
        }
    });
    dst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostBytes, HostWeight};

    fn weight(format: WeightFormat, rows: usize, cols: usize, vals: &[f32]) -> CpuWeight {
        let rb = format.row_bytes(cols);
        let mut bytes = vec![0u8; rows * rb];
        for (r, dst) in bytes.chunks_exact_mut(rb).enumerate() {
            super::super::quant::quantize_row(format, &vals[r * cols..(r + 1) * cols], dst);
        }
        CpuWeight::new(HostWeight {
            name: "w".into(),
            format,
            rows,
            cols,
            bytes: HostBytes::from_vec(bytes),
        })
        .unwrap()
    }

    fn reference(x: &CpuTensor, w: &CpuWeight) -> Vec<f32> {
        let wf = w.to_f32_vec();
        let mut out = vec![0.0; x.rows * w.rows];
        for i in 0..x.rows {
            for j in 0..w.rows {
                out[i * w.rows + j] = (0..x.cols)
                    .map(|t| x.data[i * x.cols + t] * wf[j * x.cols + t])
                    .sum();
            }
        }
        out
    }

    /// The decode kernels (four weight rows, one activation row) and the batch kernels (one
    /// weight row, four activation rows) give every row the same bits, so a sequence's logits do
    /// not depend on what else is in the batch.
    #[test]
    fn quantized_rows_are_batch_invariant() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_K, WeightFormat::Q6_K] {
            let (n, m, k) = (6, 29, 512);
            let wv: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let xv: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let w = weight(format, m, k, &wv);
            let batch = matmul(&CpuTensor::from_vec(n, k, xv.clone()).unwrap(), &w).unwrap();
            for i in 0..n {
                let x = CpuTensor::from_vec(1, k, xv[i * k..(i + 1) * k].to_vec()).unwrap();
                let alone = matmul(&x, &w).unwrap();
                for (j, (a, b)) in alone.data.iter().zip(batch.row(i)).enumerate() {
                    assert_eq!(a.to_bits(), b.to_bits(), "{format:?} row {i} col {j}");
                }
            }
        }
    }

    /// One call for several weights (Q/K/V, gate/up) gives each weight's own `matmul`, bit
    /// for bit: on the packed GEMM (one shared activation pack, mixed formats, widths that are
    /// not whole tiles) and on the decode kernels.
    #[test]
    fn matmul_many_equals_one_matmul_per_weight() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let k = 512;
        let ws: Vec<CpuWeight> = [
            (WeightFormat::F16, 40),
            (WeightFormat::Q4_K, 17),
            (WeightFormat::Q8_0, 0),
        ]
        .into_iter()
        .map(|(format, m)| {
            let vals: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            weight(format, m, k, &vals)
        })
        .collect();
        let refs: Vec<&CpuWeight> = ws.iter().collect();
        for n in [1, 70] {
            let x =
                CpuTensor::from_vec(n, k, (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect())
                    .unwrap();
            let many = matmul_many(&x, &refs).unwrap();
            assert_eq!(many.len(), ws.len());
            for (got, w) in many.iter().zip(&ws) {
                let want = matmul(&x, w).unwrap();
                assert_eq!((got.rows, got.cols), (n, w.rows));
                assert!(
                    got.data
                        .iter()
                        .zip(&want.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "n = {n}, {:?}",
                    w.format
                );
            }
        }
        let bad = weight(WeightFormat::F16, 3, 256, &[0.5; 3 * 256]);
        let x = CpuTensor::from_vec(6, k, vec![1.0; 6 * k]).unwrap();
        let err = matmul_many(&x, &[&ws[0], &bad]).unwrap_err().to_string();
        assert!(err.contains("matmul"), "{err}");
    }

    #[test]
    fn every_format_matches_a_scalar_reference_on_odd_sizes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for format in [
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::BF16,
            WeightFormat::Q8_0,
            WeightFormat::Q4_0,
            WeightFormat::Q4_1,
            WeightFormat::Q5_0,
            WeightFormat::Q5_1,
            WeightFormat::Q4_K,
            WeightFormat::Q5_K,
            WeightFormat::Q6_K,
        ] {
            let block = format.block_len().max(32);
            // Shapes for every path: decode (n = 1), small batches, the packed GEMM (n ≥ 6 for
            // floats, ≥ 64 for quantized) with partial tiles, and k over several panels with
            // a tail.
            for (n, m, k) in [
                (1, 37, 2 * block),
                (5, 67, 2 * block),
                (3, 1, 2 * block),
                (0, 9, 2 * block),
                (7, 37, 2 * block),
                (70, 19, 2 * block),
                (13, 35, 17 * block + 5),
                (65, 16, 3 * block),
            ] {
                // Float rows may end mid-vector; quantized rows are whole blocks.
                let k = if format.block_len() == 1 {
                    k
                } else {
                    k / format.block_len() * format.block_len()
                };
                let wv: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let xv: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let w = weight(format, m, k, &wv);
                let x = CpuTensor::from_vec(n, k, xv).unwrap();
                let got = matmul(&x, &w).unwrap();
                let want = reference(&x, &w);
                // Quantized formats also quantize the activations (8-bit): ~1% of the row norm.
                let tol = if matches!(
                    format,
                    WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16
                ) {
                    1e-4
                } else {
                    0.02
                } * (k as f32).sqrt();
                for (g, e) in got.data.iter().zip(&want) {
                    assert!((g - e).abs() <= tol, "{format:?} n={n} m={m}: {g} vs {e}");
                }
            }
        }
    }
}
