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
//! - Q8_0 / Q4_K / Q6_K (and Q4_0 / Q5_0 as Q8_0) on AVX-512 VNNI: the interleaved kernels of
//!   `quant/vnni` for every row count (weights repacked at load; batch-invariant by
//!   construction).
//! - Quantized otherwise (decode): each activation row is quantized once to the format's dot
//!   type (ggml's `vec_dot_type`) and block-integer dot products give the result, as ggml does.
//!
//! Batch invariance: the row kernels (`gemm.rs` for floats, the block dot products for
//! quantized weights, in their one-, four-row and four-weight-row forms) give a row the same
//! bits whatever the batch; the packed GEMM sums in another order. A batch-invariant step
//! therefore never takes the packed GEMM, at a cost in prefill speed (docs/benchmarks.md).
//! Outputs are written in place, and the op's buffers come from the backend's scratch.

use rayon::prelude::*;

use super::gemm::gemm_rows;
#[cfg(target_arch = "x86_64")]
use super::gemm_packed;
use super::quant::{
    quantize_act_row, vec_dot4_kernel, vec_dot_kernel, vec_dot_w4_kernel, WeightFormat,
};
use super::scratch::StepScratch;
use super::tensor::{CpuTensor, CpuWeight, SharedOut};
use crate::error::{shape_err, Result};

/// Weight rows per task: enough tasks to balance threads, few enough to amortize scheduling;
/// a multiple of the GEMM tile's three rows and of the four rows of the decode kernels.
fn rows_per_task(m: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    ((m / (threads * 8)).clamp(12, 72) / 12) * 12
}

fn check_shapes(x: &CpuTensor, w: &CpuWeight, out: &CpuTensor) -> Result<()> {
    if w.cols != x.cols || out.cols != w.rows {
        return Err(shape_err(
            "matmul",
            format!(
                "x [{}, {}] · w[{}, {}]ᵀ ({}) into {} columns",
                x.rows, x.cols, w.rows, w.cols, w.name, out.cols
            ),
        ));
    }
    Ok(())
}

/// `x · wᵢᵀ → outᵢ` for every weight; when all of them take the packed GEMM, `x` is packed
/// once and one parallel loop covers every weight's column runs.
pub fn matmul_many(
    x: &CpuTensor,
    ws: &[&CpuWeight],
    outs: &mut [&mut CpuTensor],
    scratch: &mut StepScratch,
    invariant: bool,
) -> Result<()> {
    if ws.len() != outs.len() {
        return Err(shape_err(
            "matmul_many",
            format!("{} weights but {} outputs", ws.len(), outs.len()),
        ));
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        check_shapes(x, w, out)?;
        out.set_rows("matmul", x.rows)?;
    }
    #[cfg(target_arch = "x86_64")]
    if x.rows > 0 && ws.iter().all(|w| takes_packed(x.rows, w, invariant)) {
        packed(x, ws, outs, scratch);
        return Ok(());
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        matmul(x, w, out, scratch, invariant)?;
    }
    Ok(())
}

/// `out [n, m] = x [n, k] · wᵀ`. With `invariant`, each row's result is the same bits
/// whatever `n` is: batches never switch to the packed GEMM, whose summation order differs
/// from the per-row kernels'.
pub fn matmul(
    x: &CpuTensor,
    w: &CpuWeight,
    out: &mut CpuTensor,
    scratch: &mut StepScratch,
    invariant: bool,
) -> Result<()> {
    check_shapes(x, w, out)?;
    out.set_rows("matmul", x.rows)?;
    let (n, k, m) = (x.rows, x.cols, w.rows);
    if n == 0 || m == 0 {
        return Ok(());
    }
    if let Some(p) = &w.interleaved {
        // Batch-invariant by construction: one kernel for every row count.
        super::quant::vnni::matmul(
            x.as_slice(),
            n,
            p,
            out.as_mut_slice(),
            &mut scratch.interleaved,
        );
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if takes_packed(n, w, invariant) {
        packed(x, &[w], &mut [out], scratch);
        return Ok(());
    }
    let chunk = rows_per_task(m);
    let out_ptr = SharedOut(out.as_mut_slice().as_mut_ptr());
    let xs = x.as_slice();
    match w.format {
        WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16 => {
            let bytes = w.data();
            let rb = w.format.row_bytes(k);
            (0..m.div_ceil(chunk)).into_par_iter().for_each(|c| {
                let j0 = c * chunk;
                let rows = chunk.min(m - j0);
                let out_ptr = &out_ptr;
                // SAFETY: task `c` writes only columns `j0..j0 + rows` of the `n × m` output.
                unsafe {
                    gemm_rows(
                        w.format,
                        &bytes[j0 * rb..(j0 + rows) * rb],
                        rows,
                        xs,
                        n,
                        k,
                        out_ptr.0.add(j0),
                        m,
                    )
                };
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
            let acts = &mut scratch.acts;
            acts.clear();
            acts.resize(n * arb, 0);
            acts.par_chunks_mut(arb)
                .enumerate()
                .for_each(|(i, dst)| quantize_act_row(act, x.row(i), dst));
            let acts = &acts[..];
            // Activation rows in blocks that stay in L2 while the task's weight rows (also
            // L2-resident) pass over them; without blocking a long prompt's activations are
            // re-read from L3 for every weight row.
            let row_block = (256 * 1024 / arb).clamp(4, 256) / 4 * 4;
            (0..m.div_ceil(chunk)).into_par_iter().for_each(|c| {
                let j0 = c * chunk;
                let rows = chunk.min(m - j0);
                let out_ptr = &out_ptr;
                // SAFETY: task `c` writes only columns `j0..j0 + rows` of the `n × m` output.
                let put = |i: usize, j: usize, v: f32| unsafe { *out_ptr.0.add(i * m + j) = v };
                if let Some(dot_w4) = dot_w4 {
                    let mut r = 0;
                    while r + 4 <= rows {
                        let j = j0 + r;
                        let wrows = &w.bytes.as_slice()[j * w_rb..(j + 4) * w_rb];
                        for (i, a) in acts.chunks_exact(arb).enumerate() {
                            let s = dot_w4(wrows, a, k);
                            for (q, v) in s.into_iter().enumerate() {
                                put(i, j + q, v);
                            }
                        }
                        r += 4;
                    }
                    for j in j0 + r..j0 + rows {
                        let wrow = w.row_bytes(j);
                        for (i, a) in acts.chunks_exact(arb).enumerate() {
                            put(i, j, dot(wrow, a, k));
                        }
                    }
                    return;
                }
                for i0 in (0..n).step_by(row_block) {
                    let i1 = (i0 + row_block).min(n);
                    for j in j0..j0 + rows {
                        let wrow = w.row_bytes(j);
                        let mut i = i0;
                        if let Some(dot4) = dot4 {
                            while i + 4 <= i1 {
                                let s = dot4(wrow, &acts[i * arb..(i + 4) * arb], k);
                                for (q, v) in s.into_iter().enumerate() {
                                    put(i + q, j, v);
                                }
                                i += 4;
                            }
                        }
                        for i in i..i1 {
                            put(i, j, dot(wrow, &acts[i * arb..(i + 1) * arb], k));
                        }
                    }
                }
            });
        }
    }
    Ok(())
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

/// Whether `n` activation rows against `w` go through [`gemm_packed`] (never for
/// batch-invariant steps).
#[cfg(target_arch = "x86_64")]
fn takes_packed(n: usize, w: &CpuWeight, invariant: bool) -> bool {
    !invariant && w.interleaved.is_none() && packed_rows(w.format) <= n && super::isa::avx2()
}

/// `x · wᵢᵀ → outᵢ` through [`gemm_packed`]: activations packed once, tasks own column runs of
/// one weight's output. The outputs already have `n` rows.
#[cfg(target_arch = "x86_64")]
fn packed(
    x: &CpuTensor,
    ws: &[&CpuWeight],
    outs: &mut [&mut CpuTensor],
    scratch: &mut StepScratch,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (n, k) = (x.rows, x.cols);
    let StepScratch { packed, tasks, .. } = scratch;
    let a = gemm_packed::pack_act(x.as_slice(), n, k, packed);
    let threads = rayon::current_num_threads().max(1);
    // (weight, first row, rows) per task: 16 per thread and weight, at most `TASK_ROWS` rows
    // (whose widened weights and outputs stay in L2).
    tasks.clear();
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
    let num_whole = tasks.len();
    for t in tail..num_whole {
        let (i, j0, rows) = tasks[t];
        let nr = gemm_packed::NR;
        for j in (j0..j0 + rows).step_by(nr) {
            tasks.push((i, j, nr.min(j0 + rows - j)));
        }
    }
    // Run order: the whole tasks before the tail, then the tail's groups (appended after the
    // tail's whole tasks, which are skipped).
    let tasks = &tasks[..];
    let order_len = tail + (tasks.len() - num_whole);
    let mut out_ptrs = [const { SharedOut(std::ptr::null_mut()) }; 4];
    assert!(
        outs.len() <= out_ptrs.len(),
        "matmul_many takes at most four weights"
    );
    for (p, o) in out_ptrs.iter_mut().zip(outs.iter_mut()) {
        p.0 = o.as_mut_slice().as_mut_ptr();
    }
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
    (0..threads).into_par_iter().for_each(|_| loop {
        let idx = taken.fetch_add(1, Ordering::Relaxed);
        if idx >= order_len {
            break;
        }
        let t = if idx < tail {
            idx
        } else {
            num_whole + idx - tail
        };
        run(&tasks[t]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostBytes, HostWeight};
    use rand::{Rng, SeedableRng};

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

    fn mm(x: &CpuTensor, w: &CpuWeight, invariant: bool) -> CpuTensor {
        let mut out = CpuTensor::with_capacity(x.rows, w.rows);
        matmul(x, w, &mut out, &mut StepScratch::default(), invariant).unwrap();
        out
    }

    fn random(rng: &mut impl Rng, rows: usize, cols: usize) -> CpuTensor {
        CpuTensor::from_vec(
            rows,
            cols,
            (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        )
        .unwrap()
    }

    fn reference(x: &CpuTensor, w: &CpuWeight) -> Vec<f32> {
        let wf = w.to_f32_vec();
        let mut out = vec![0.0; x.rows * w.rows];
        for i in 0..x.rows {
            for j in 0..w.rows {
                out[i * w.rows + j] = (0..x.cols).map(|t| x.row(i)[t] * wf[j * x.cols + t]).sum();
            }
        }
        out
    }

    fn assert_bits(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "{what}, column {j}: {x} vs {y}");
        }
    }

    /// The decode kernels (four weight rows, one activation row) and the batch kernels (one
    /// weight row, four activation rows) give every row the same bits, so a sequence's logits do
    /// not depend on what else is in the batch.
    #[test]
    fn quantized_rows_are_batch_invariant() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        for format in [WeightFormat::Q8_0, WeightFormat::Q4_K, WeightFormat::Q6_K] {
            let (n, m, k) = (6, 29, 512);
            let wv: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let w = weight(format, m, k, &wv);
            let x = random(&mut rng, n, k);
            let batch = mm(&x, &w, false);
            for i in 0..n {
                let alone = mm(
                    &CpuTensor::from_vec(1, k, x.row(i).to_vec()).unwrap(),
                    &w,
                    false,
                );
                assert_bits(alone.row(0), batch.row(i), &format!("{format:?} row {i}"));
            }
        }
    }

    /// With `invariant`, every format gives each row the same bits alone and in batches of
    /// every size class (decode kernels, four-row kernels, and sizes that would otherwise take
    /// the packed GEMM).
    #[test]
    fn invariant_rows_do_not_depend_on_the_batch() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for format in [
            WeightFormat::F32,
            WeightFormat::F16,
            WeightFormat::BF16,
            WeightFormat::Q8_0,
            WeightFormat::Q5_0,
            WeightFormat::Q4_K,
            WeightFormat::Q6_K,
        ] {
            let (m, k) = (37, 512);
            let wv: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let w = weight(format, m, k, &wv);
            let x = random(&mut rng, 70, k);
            let alone: Vec<CpuTensor> = (0..x.rows)
                .map(|i| {
                    mm(
                        &CpuTensor::from_vec(1, k, x.row(i).to_vec()).unwrap(),
                        &w,
                        true,
                    )
                })
                .collect();
            for n in [2, 3, 5, 6, 8, 13, 64, 70] {
                let xs = CpuTensor::from_vec(n, k, x.as_slice()[..n * k].to_vec()).unwrap();
                let batch = mm(&xs, &w, true);
                for i in 0..n {
                    assert_bits(
                        alone[i].row(0),
                        batch.row(i),
                        &format!("{format:?} n={n} row {i}"),
                    );
                }
            }
        }
    }

    /// One call for several weights (Q/K/V, gate/up) gives each weight's own `matmul`, bit
    /// for bit: on the packed GEMM (one shared activation pack, mixed formats, widths that are
    /// not whole tiles) and on the decode kernels.
    #[test]
    fn matmul_many_equals_one_matmul_per_weight() {
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
            let x = random(&mut rng, n, k);
            let mut outs: Vec<CpuTensor> = ws
                .iter()
                .map(|w| CpuTensor::with_capacity(n, w.rows))
                .collect();
            let mut out_refs: Vec<&mut CpuTensor> = outs.iter_mut().collect();
            matmul_many(&x, &refs, &mut out_refs, &mut StepScratch::default(), false).unwrap();
            for (got, w) in outs.iter().zip(&ws) {
                let want = mm(&x, w, false);
                assert_eq!((got.rows, got.cols), (n, w.rows));
                assert_bits(
                    got.as_slice(),
                    want.as_slice(),
                    &format!("n = {n}, {:?}", w.format),
                );
            }
        }
        let bad = weight(WeightFormat::F16, 3, 256, &[0.5; 3 * 256]);
        let x = CpuTensor::from_vec(6, k, vec![1.0; 6 * k]).unwrap();
        let mut o1 = CpuTensor::with_capacity(6, 40);
        let mut o2 = CpuTensor::with_capacity(6, 3);
        let err = matmul_many(
            &x,
            &[&ws[0], &bad],
            &mut [&mut o1, &mut o2],
            &mut StepScratch::default(),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("matmul"), "{err}");
        // An output without room for the rows is an error too, not a reallocation.
        let mut small = CpuTensor::with_capacity(2, 40);
        let err = matmul(&x, &ws[0], &mut small, &mut StepScratch::default(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("capacity"), "{err}");
    }

    #[test]
    fn every_format_matches_a_scalar_reference_on_odd_sizes() {
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
                let w = weight(format, m, k, &wv);
                let x = random(&mut rng, n, k);
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
                for invariant in [false, true] {
                    let got = mm(&x, &w, invariant);
                    for (g, e) in got.as_slice().iter().zip(&want) {
                        assert!(
                            (g - e).abs() <= tol,
                            "{format:?} n={n} m={m} invariant={invariant}: {g} vs {e}"
                        );
                    }
                }
            }
        }
    }
}
