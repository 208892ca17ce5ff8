//! Paged attention on the CPU for a varlen batch: KV writes by slot mapping (and the copies of
//! partial prefix-cache hits between blocks), then for every
//! (token, head) a pass over that sequence's keys up to the token's position, read through the
//! block table. On AVX2, prompt chunks over the f16 cache (3 tokens or more of one sequence)
//! go through query tiles instead (`attention_tiled.rs`: the same rounding points, computed as
//! two small GEMMs per tile); decode tokens always take the per-token pass.
//!
//! - f32 cache: one online-softmax pass (exact up to f32 rounding), for `transformers` parity.
//! - f16 cache: ggml's CPU attention arithmetic (`kq = k·f16(q)`, softmax in f32 with an f64
//!   sum, probabilities rounded to f16 before `v`), so GGUF models follow llama.cpp.
//!
//! On AVX-512 the per-token pass over the f16 cache runs one task per (token, KV head) for the
//! whole query group (`attention_group.rs`: each key widened once for the group, sixteen scores
//! reduced at a time, a vector softmax); elsewhere one task per (token, query head).
//!
//! The per-token pass computes a token's output from its own query and its sequence's cache
//! alone, in one order, so it is batch-invariant; the query tiles sum `q·k` and `p·V` in
//! another order, so a batch-invariant step sends every token through the per-token pass.

use half::f16;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::attention_group::{self, attend_group, GroupInput};
#[cfg(target_arch = "x86_64")]
use super::attention_tiled::{self, attend_tile, TileInput};
#[cfg(target_arch = "x86_64")]
use super::scratch::{put_task_scratch, take_task_scratch};
use super::scratch::{with_task_scratch, StepScratch};
use super::simd::kernels;
use super::tensor::{check_slot, CpuBatch, CpuKvLayer, CpuTensor, KvStore, SharedOut};
use crate::error::{shape_err, BackendError, Result};
use crate::{AttnShape, KvCopy};

/// Stores `k, v [num_tokens, num_kv_heads * head_dim]` at their slots.
pub fn write_kv(cache: &mut CpuKvLayer, k: &CpuTensor, v: &CpuTensor, slots: &[u32]) -> Result<()> {
    let w = cache.slot_width();
    if k.cols != w || v.cols != w || k.rows != slots.len() || v.rows != slots.len() {
        return Err(shape_err(
            "write_kv",
            format!(
                "k [{}, {}] v [{}, {}], slot width {w}",
                k.rows, k.cols, v.rows, v.cols
            ),
        ));
    }
    let num_slots = cache.num_slots();
    for &slot in slots {
        check_slot(slot as usize, num_slots)?;
    }
    for (t, &slot) in slots.iter().enumerate() {
        let slot = slot as usize;
        cache.k.write(slot * w, k.row(t));
        cache.v.write(slot * w, v.row(t));
    }
    Ok(())
}

/// Copies the batch's [`KvCopy`] slots between blocks, K and V.
pub fn copy_kv(cache: &mut CpuKvLayer, copies: &[KvCopy], block_size: usize) -> Result<()> {
    let w = cache.slot_width();
    let num_blocks = cache.layout.num_blocks;
    for c in copies {
        let (src, dst, n) = (
            c.src_block as usize,
            c.dst_block as usize,
            c.num_tokens as usize,
        );
        if src >= num_blocks || dst >= num_blocks || src == dst || n > block_size {
            return Err(BackendError::Batch(format!(
                "KV copy of {n} slots from block {src} to block {dst} in a cache of {num_blocks}"
            )));
        }
        let len = n * w;
        cache
            .k
            .copy_within(src * block_size * w, dst * block_size * w, len);
        cache
            .v
            .copy_within(src * block_size * w, dst * block_size * w, len);
    }
    Ok(())
}

/// Whether prompt chunks take the tiled kernel: AVX2 and a head size it handles.
fn tiled_available(head_dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::isa::avx2() && attention_tiled::supports(head_dim)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = head_dim;
        false
    }
}

/// From how many tokens of one sequence in a batch its attention goes through query tiles.
const TILED_MIN_TOKENS: usize = 3;

/// Tokens per query tile: with 2 query heads per KV head, 24 rows = 4 micro-panels.
const TILE_TOKENS: usize = 12;

/// `q [num_tokens, num_heads * head_dim]` → `out [num_tokens, num_heads * head_dim]`.
pub fn paged_attention(
    q: &CpuTensor,
    cache: &CpuKvLayer,
    batch: &CpuBatch,
    shape: AttnShape,
    out: &mut CpuTensor,
    scratch: &mut StepScratch,
    invariant: bool,
) -> Result<()> {
    let AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
        scale,
    } = shape;
    let input = &batch.input;
    if q.cols != num_heads * head_dim
        || q.rows != input.num_tokens()
        || out.cols != q.cols
        || num_kv_heads == 0
        || num_heads % num_kv_heads != 0
        || cache.layout.head_dim != head_dim
        || cache.layout.num_kv_heads != num_kv_heads
    {
        return Err(shape_err(
            "attention",
            format!(
                "q [{}, {}] with {shape:?} and {:?}",
                q.rows, q.cols, cache.layout
            ),
        ));
    }
    let group = num_heads / num_kv_heads;
    let bs = input.block_size;
    let w = cache.slot_width();
    let num_slots = cache.num_slots();
    // Every slot a token may read must exist; checking once here keeps the inner loop free of it.
    for s in 0..input.num_seqs() {
        let table = input.block_table(s);
        let needed = (input.seq_lens[s] as usize).div_ceil(bs);
        if table.len() < needed {
            return Err(shape_err(
                "attention",
                format!("sequence {s}: block table too short"),
            ));
        }
        for &b in &table[..needed] {
            check_slot((b as usize + 1) * bs - 1, num_slots)?;
        }
    }
    let kern = kernels();
    out.set_rows("attention", q.rows)?;
    let out_ptr = SharedOut(out.as_mut_slice().as_mut_ptr());
    // Prompt chunks over the f16 cache go through query tiles; the other tokens (decodes, and
    // everything on the f32 cache, without AVX2, or in batch-invariant steps) take one pass
    // per (token, head).
    let StepScratch {
        tiles, row_tokens, ..
    } = scratch;
    tiles.clear();
    row_tokens.clear();
    let tiled = !invariant && matches!(cache.k, KvStore::F16(_)) && tiled_available(head_dim);
    for seq in 0..input.num_seqs() {
        let span = input.query_start_loc[seq] as usize..input.query_start_loc[seq + 1] as usize;
        if tiled && span.len() >= TILED_MIN_TOKENS {
            for t0 in span.clone().step_by(TILE_TOKENS) {
                tiles.push((seq, t0..(t0 + TILE_TOKENS).min(span.end)));
            }
        } else {
            row_tokens.extend(span);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if let (KvStore::F16(k), KvStore::F16(v)) = (&cache.k, &cache.v) {
        let tiles = &tiles[..];
        // KV-head-major order: a thread's run of tiles reads the same heads' keys and values.
        (0..num_kv_heads * tiles.len())
            .into_par_iter()
            .for_each(|idx| {
                let (g, (seq, span)) = (idx / tiles.len(), &tiles[idx % tiles.len()]);
                let out_ptr = &out_ptr;
                let inp = TileInput {
                    q: q.as_slice(),
                    q_cols: q.cols,
                    k,
                    v,
                    slot_width: w,
                    block_size: bs,
                    table: input.block_table(*seq),
                    positions: &input.positions,
                    group,
                    head_dim,
                    scale,
                };
                with_task_scratch(|s| {
                    // SAFETY: tiles exist only when `tiled_available` saw AVX2; the tile is the
                    // only writer of its tokens' columns of KV head `g`'s query heads; every slot
                    // up to the sequence's length was checked above.
                    unsafe { attend_tile(&inp, span.clone(), g, &mut s.tile, out_ptr.0) };
                });
            });
    }
    let tokens = row_tokens.len();
    let row_tokens = &row_tokens[..];
    // On AVX-512, one task per (KV head, token) computes the whole query group over the f16
    // cache (`attention_group.rs`), KV-head-major like the tiles.
    #[cfg(target_arch = "x86_64")]
    if let (KvStore::F16(k), KvStore::F16(v)) = (&cache.k, &cache.v) {
        if super::isa::avx512() && attention_group::supports(head_dim) {
            (0..num_kv_heads * tokens).into_par_iter().for_each(|idx| {
                let (g, t) = (idx / tokens, row_tokens[idx % tokens]);
                let inp = GroupInput {
                    q: q.row(t),
                    k,
                    v,
                    slot_width: w,
                    block_size: bs,
                    table: input.block_table(batch.token_seq[t] as usize),
                    num_keys: input.positions[t] as usize + 1,
                    kv_head: g,
                    group,
                    head_dim,
                    scale,
                };
                let out_ptr = &out_ptr;
                // SAFETY: task (g, t) is the only writer of `out[t]`'s columns of KV head g's
                // query heads, in bounds of the `tokens × q.cols` buffer, which outlives the loop.
                let o = unsafe {
                    std::slice::from_raw_parts_mut(
                        out_ptr.0.add(t * q.cols + g * group * head_dim),
                        group * head_dim,
                    )
                };
                let mut s = take_task_scratch();
                // SAFETY: AVX-512 checked above, the head size is supported, and every slot up
                // to the sequence's length was checked at the top.
                unsafe { attend_group(&inp, &mut s.scores, &mut s.q16, o) };
                put_task_scratch(s);
            });
            return Ok(());
        }
    }
    // Head-major task order: a thread takes runs of tokens of one head, whose keys and values
    // stay in its cache from one token to the next (token-major order cycled through every KV
    // head and re-read a long prompt's cache from L3 for each token).
    (0..num_heads * tokens).into_par_iter().for_each(|idx| {
        with_task_scratch(|scratch| {
            let (h, t) = (idx / tokens, row_tokens[idx % tokens]);
            let out_ptr = &out_ptr;
            // SAFETY: task (t, h) is the only writer of `out[t][h·d..(h+1)·d]`, in bounds of
            // the `tokens × q.cols` buffer, which outlives the loop.
            let o = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.0.add(t * q.cols + h * head_dim), head_dim)
            };
            // The buffer holds the previous step's values.
            o.fill(0.0);
            let kv_off = (h / group) * head_dim;
            let qh = &q.row(t)[h * head_dim..(h + 1) * head_dim];
            let table = input.block_table(batch.token_seq[t] as usize);
            let num_keys = input.positions[t] as usize + 1;
            let base = |j: usize| (table[j / bs] as usize * bs + j % bs) * w + kv_off;
            match (&cache.k, &cache.v) {
                (KvStore::F32(k), KvStore::F32(v)) => {
                    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
                    for j in 0..num_keys {
                        let b = base(j);
                        let score = (kern.dot_f32)(qh, &k[b..b + head_dim]) * scale;
                        if score > max {
                            let correction = (max - score).exp();
                            sum *= correction;
                            o.iter_mut().for_each(|x| *x *= correction);
                            max = score;
                        }
                        let p = (score - max).exp();
                        sum += p;
                        (kern.axpy_f32)(o, p, &v[b..b + head_dim]);
                    }
                    let inv = 1.0 / sum;
                    o.iter_mut().for_each(|x| *x *= inv);
                }
                (KvStore::F16(k), KvStore::F16(v)) => {
                    let (scores, q16) = (&mut scratch.scores, &mut scratch.q16);
                    q16.clear();
                    q16.extend(qh.iter().map(|x| f16::from_f32(*x).to_f32()));
                    scores.clear();
                    let mut max = f32::NEG_INFINITY;
                    let key = |j: usize| &k[base(j)..base(j) + head_dim];
                    let mut j = 0;
                    while j + 4 <= num_keys {
                        let s4 = (kern.dot4_f16)(q16, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
                        for s in s4 {
                            let s = s * scale;
                            max = max.max(s);
                            scores.push(s);
                        }
                        j += 4;
                    }
                    for j in j..num_keys {
                        let s = (kern.dot_f16)(q16, key(j)) * scale;
                        max = max.max(s);
                        scores.push(s);
                    }
                    let mut sum = 0.0f64;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s as f64;
                    }
                    let inv = (1.0 / sum) as f32;
                    let prob = |j: usize| f16::from_f32(scores[j] * inv).to_f32();
                    let value = |j: usize| &v[base(j)..base(j) + head_dim];
                    let mut j = 0;
                    while j + 4 <= num_keys {
                        (kern.axpy4_f16)(
                            o,
                            [prob(j), prob(j + 1), prob(j + 2), prob(j + 3)],
                            [value(j), value(j + 1), value(j + 2), value(j + 3)],
                        );
                        j += 4;
                    }
                    for j in j..num_keys {
                        (kern.axpy_f16)(o, prob(j), value(j));
                    }
                }
                _ => unreachable!("K and V share one dtype"),
            }
        })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::scratch::StepScratch;
    use super::*;
    use crate::{BatchInput, KvDtype, KvLayout};
    use rand::{Rng, SeedableRng};

    /// One batch entry per `(block table, positions)`; every token's query is its own row.
    fn batch(seqs: &[(Vec<u32>, std::ops::Range<u32>)], block_size: usize) -> CpuBatch {
        let mut input = BatchInput::new(block_size);
        for (table, pos) in seqs {
            input.push_seq(pos.clone().map(|_| 0), pos.start as usize, table, false);
        }
        CpuBatch::new(&input)
    }

    fn attend(
        q: &CpuTensor,
        cache: &CpuKvLayer,
        batch: &CpuBatch,
        shape: AttnShape,
        invariant: bool,
    ) -> CpuTensor {
        // A reused buffer full of garbage: every output element must be written.
        let mut out = CpuTensor::from_vec(q.rows, q.cols, vec![f32::NAN; q.rows * q.cols]).unwrap();
        paged_attention(
            q,
            cache,
            batch,
            shape,
            &mut out,
            &mut StepScratch::default(),
            invariant,
        )
        .unwrap();
        out
    }

    /// Prompt chunks (query tiles on AVX2) give what the same tokens give one by one, each as
    /// its own one-token sequence (the per-token path): a whole prompt whose length is not a
    /// multiple of the tile, and a chunk that starts after a cached prefix.
    #[test]
    fn query_tiles_match_the_per_token_path() {
        let (block_size, num_kv_heads, head_dim, group) = (16, 2, 128, 2);
        let layout = KvLayout {
            num_blocks: 8,
            block_size,
            num_kv_heads,
            head_dim,
            dtype: KvDtype::F16,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut cache = CpuKvLayer::zeros(layout);
        for store in [&mut cache.k, &mut cache.v] {
            let KvStore::F16(data) = store else {
                unreachable!()
            };
            data.iter_mut()
                .for_each(|x| *x = f16::from_f32(rng.gen_range(-1.0..1.0)));
        }
        let seqs = vec![(vec![3, 0, 5], 0..37), (vec![1, 7], 10..30)];
        let singles: Vec<_> = seqs
            .iter()
            .flat_map(|(t, pos)| pos.clone().map(move |p| (t.clone(), p..p + 1)))
            .collect();
        let tokens = 37 + 20;
        let cols = num_kv_heads * group * head_dim;
        let q = CpuTensor::from_vec(
            tokens,
            cols,
            (0..tokens * cols)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect(),
        )
        .unwrap();
        let shape = AttnShape {
            num_heads: num_kv_heads * group,
            num_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
        };
        let tiled = attend(&q, &cache, &batch(&seqs, block_size), shape, false);
        let rows = attend(&q, &cache, &batch(&singles, block_size), shape, false);
        // Batch-invariant steps send the chunks through the per-token pass: the same bits as
        // the tokens one by one.
        let invariant = attend(&q, &cache, &batch(&seqs, block_size), shape, true);
        assert!(invariant
            .as_slice()
            .iter()
            .zip(rows.as_slice())
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        let max_diff = tiled
            .as_slice()
            .iter()
            .zip(rows.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        // Both round probabilities to f16; a different summation order inside q·k may move
        // one of them by an f16 step (2⁻¹¹ relative).
        assert!(max_diff < 2e-3, "tiled vs per-token: max |diff| {max_diff}");
        assert!(
            tiled.as_slice().iter().any(|x| x.abs() > 0.05),
            "output is not trivially zero"
        );
    }
}
