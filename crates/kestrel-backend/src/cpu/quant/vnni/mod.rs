//! Quantized matmul on AVX-512 VNNI over interleaved weights: Q8_0, Q4_K and Q6_K (the
//! matrices of Q8_0 and Q4_K_M models; Q4_0 and Q5_0 as Q8_0 of the same values) are repacked
//! once at load (`repack.rs`) so that one
//! `vpdpbusd` multiplies four weights of sixteen rows by four activation bytes; the same tiles
//! (`avx512.rs`) serve one activation row (decode) and many (prefill), and give every row the
//! bits of the scalar definition (`reference.rs`) whatever the batch: these kernels are
//! batch-invariant by construction, so invariant steps cost nothing extra on such CPUs.
//!
//! Activations are converted as ggml converts them (Q8_0 or Q8_K rows); each parallel task owns
//! a run of sixteen-row groups and walks the activation rows in L2-sized blocks.

pub mod reference;
pub mod repack;

#[cfg(target_arch = "x86_64")]
mod avx512;

use rayon::prelude::*;

pub use repack::{Interleaved, GROUP};

use super::act::Q8_K_BLOCK_BYTES;
use super::{quantize_act_row, WeightFormat};

/// Whether weights stored as `format` are interleaved for these kernels on this CPU.
pub fn available_for(format: WeightFormat) -> bool {
    super::super::isa::avx512() && repack::packed_format(format).is_some()
}

/// The reusable buffers of one call.
#[derive(Default)]
pub struct Buffers {
    /// `[n][act_row_bytes]` converted activations.
    pub acts: Vec<u8>,
    /// `[n][blocks][..]` per-block side sums.
    pub sums: Vec<i32>,
}

/// Side sums per block per activation row: `Σa` of each Q8_0 block, or the four `(bsum, bsum)`
/// i16 pairs of the 32-element sums of a Q8_K block.
fn sums_per_block(format: WeightFormat) -> usize {
    match format {
        WeightFormat::Q8_0 => 1,
        WeightFormat::Q4_K => 4,
        _ => 0,
    }
}

/// `out [n, m] = x [n, k] · wᵀ` (`out` already `n` rows; `x` row `i` at `x[i·k..]`).
pub fn matmul(x: &[f32], n: usize, w: &Interleaved, out: &mut [f32], buf: &mut Buffers) {
    let (k, m) = (w.cols, w.rows);
    assert!(
        x.len() >= n * k && out.len() >= n * m,
        "interleaved matmul: bad sizes"
    );
    let act = w.format.act_format();
    let arb = act.row_bytes(k);
    let nb = w.num_blocks();
    let spb = sums_per_block(w.format);
    // At least one slot per row, so that every row has a chunk to zip with.
    let row_sums = (nb * spb).max(1);
    buf.acts.clear();
    buf.acts.resize(n * arb, 0);
    buf.sums.clear();
    buf.sums.resize(n * row_sums, 0);
    buf.acts
        .par_chunks_mut(arb)
        .zip(buf.sums.par_chunks_mut(row_sums))
        .enumerate()
        .for_each(|(i, (dst, sums))| {
            quantize_act_row(act, &x[i * k..(i + 1) * k], dst);
            fill_sums(w.format, dst, nb, sums);
        });
    let (acts, sums) = (&buf.acts[..], &buf.sums[..]);
    let groups = w.num_groups();
    let threads = rayon::current_num_threads().max(1);
    // Runs of groups per task: a few tasks per thread to balance, each long enough to amortize.
    let per_task = groups.div_ceil(threads * 4).max(1);
    // Activation rows per block: their converted bytes stay in L2 while a task's groups pass.
    let row_block = (128 * 1024 / arb).clamp(8, 256);
    let out_ptr = OutPtr(out.as_mut_ptr());
    (0..groups.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let out_ptr = &out_ptr;
            let g_range = task * per_task..((task + 1) * per_task).min(groups);
            for i0 in (0..n).step_by(row_block) {
                let i1 = (i0 + row_block).min(n);
                for g in g_range.clone() {
                    let valid = (m - g * GROUP).min(GROUP);
                    let row = |i: usize| RowRef {
                        q: acts[i * arb..].as_ptr(),
                        sums: sums[i * row_sums..].as_ptr(),
                        // SAFETY: row `i < n` of the `n × m` output, columns from `16·g`.
                        out: unsafe { out_ptr.0.add(i * m + g * GROUP) },
                    };
                    // SAFETY: the CPU has AVX-512 VNNI (checked when the weight was interleaved);
                    // the rows' buffers hold `nb` blocks; this task alone writes these columns.
                    unsafe { run_group(w, g, nb, i0..i1, valid, &row) };
                }
            }
        });
}

/// Fills one activation row's side sums from its converted blocks.
fn fill_sums(format: WeightFormat, row: &[u8], nb: usize, sums: &mut [i32]) {
    match format {
        WeightFormat::Q8_0 => {
            for (b, s) in sums.iter_mut().enumerate().take(nb) {
                let blk = &row[b * 34 + 2..(b + 1) * 34];
                *s = blk.iter().map(|&v| v as i8 as i32).sum();
            }
        }
        WeightFormat::Q4_K => {
            for b in 0..nb {
                let bs = |j: usize| {
                    let o = b * Q8_K_BLOCK_BYTES + 260 + 2 * j;
                    i16::from_le_bytes([row[o], row[o + 1]]) as i32
                };
                for p in 0..4 {
                    let lo = bs(4 * p) + bs(4 * p + 1);
                    let hi = bs(4 * p + 2) + bs(4 * p + 3);
                    sums[4 * b + p] = (lo & 0xffff) | (hi << 16);
                }
            }
        }
        _ => {}
    }
}

struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint columns of the output, which outlives the parallel loop.
unsafe impl Sync for OutPtr {}

/// One activation row as the tiles see it.
#[derive(Clone, Copy)]
struct RowRef {
    q: *const u8,
    sums: *const i32,
    out: *mut f32,
}

/// Activation rows per tile of each format (what fits in the 32 registers).
fn tile_rows(format: WeightFormat) -> usize {
    match format {
        WeightFormat::Q8_0 => 6,
        _ => 4,
    }
}

/// Group `g` against activation rows `rows`, tile by tile.
///
/// # Safety
/// As `avx512::*_tile`.
#[cfg(target_arch = "x86_64")]
unsafe fn run_group(
    w: &Interleaved,
    g: usize,
    nb: usize,
    rows: std::ops::Range<usize>,
    valid: usize,
    row: &impl Fn(usize) -> RowRef,
) {
    use avx512::ActRow;
    let group = w.group(g).as_ptr();
    let (quants, meta) = (group, group.add(nb * w.geometry.quant_bytes));
    let mask: u16 = if valid == GROUP {
        u16::MAX
    } else {
        (1u16 << valid) - 1
    };
    let act = |i: usize| {
        let r = row(i);
        ActRow {
            q: r.q,
            sums: r.sums,
            out: r.out,
        }
    };
    macro_rules! tile {
        ($n:literal, $i:expr) => {{
            let rs: [ActRow; $n] = std::array::from_fn(|j| act($i + j));
            match w.format {
                WeightFormat::Q8_0 => avx512::q8_0_tile::<$n>(quants, meta, nb, &rs, mask),
                WeightFormat::Q4_K => avx512::q4_k_tile::<$n>(quants, meta, nb, &rs, mask),
                WeightFormat::Q6_K => avx512::q6_k_tile::<$n>(quants, meta, nb, &rs, mask),
                other => unreachable!("{other:?} is not interleaved"),
            }
        }};
    }
    let full = tile_rows(w.format);
    let mut i = rows.start;
    while i < rows.end {
        let left = (rows.end - i).min(full);
        match left {
            6 => tile!(6, i),
            5 => tile!(5, i),
            4 => tile!(4, i),
            3 => tile!(3, i),
            2 => tile!(2, i),
            _ => tile!(1, i),
        }
        i += left;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn run_group(
    _: &Interleaved,
    _: usize,
    _: usize,
    _: std::ops::Range<usize>,
    _: usize,
    _: &impl Fn(usize) -> RowRef,
) {
    unreachable!("interleaved weights exist only on x86-64")
}

#[cfg(test)]
mod tests;
