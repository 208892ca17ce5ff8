//! Paged attention on the CPU for a varlen batch: KV writes by slot mapping, then for every
//! (token, head) a pass over that sequence's keys up to the token's position, read through the
//! block table. Prefill chunks and decode tokens take the same path.
//!
//! - f32 cache: one online-softmax pass (exact up to f32 rounding), for `transformers` parity.
//! - f16 cache: ggml's CPU attention arithmetic (`kq = k·f16(q)`, softmax in f32 with an f64
//!   sum, probabilities rounded to f16 before `v`), so GGUF models follow llama.cpp.

use half::f16;
use rayon::prelude::*;

use super::simd::kernels;
use super::tensor::{check_slot, CpuBatch, CpuKvLayer, CpuTensor, KvStore, SharedOut};
use crate::error::{shape_err, Result};
use crate::AttnShape;

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
    for (t, &slot) in slots.iter().enumerate() {
        let slot = slot as usize;
        check_slot(slot, num_slots)?;
        cache.k.write(slot * w, k.row(t));
        cache.v.write(slot * w, v.row(t));
    }
    Ok(())
}

/// Per-task scratch rows.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    q: Vec<f32>,
}

/// `q [num_tokens, num_heads * head_dim]` → `[num_tokens, num_heads * head_dim]`.
pub fn paged_attention(
    q: &CpuTensor,
    cache: &CpuKvLayer,
    batch: &CpuBatch,
    shape: AttnShape,
) -> Result<CpuTensor> {
    let AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
        scale,
    } = shape;
    let input = &batch.input;
    if q.cols != num_heads * head_dim
        || q.rows != input.num_tokens()
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
    for (s, table) in input.block_tables.iter().enumerate() {
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
    let tokens = q.rows;
    let mut out = CpuTensor::zeros(tokens, q.cols);
    let out_ptr = SharedOut(out.data.as_mut_ptr());
    // Head-major task order: a thread takes runs of tokens of one head, whose keys and values
    // stay in its cache from one token to the next (token-major order cycled through every KV
    // head and re-read a long prompt's cache from L3 for each token).
    (0..num_heads * tokens)
        .into_par_iter()
        .for_each_init(Scratch::default, |scratch, idx| {
            let (h, t) = (idx / tokens, idx % tokens);
            let out_ptr = &out_ptr;
            // SAFETY: task (t, h) is the only writer of `out[t][h·d..(h+1)·d]`, in bounds of
            // the `tokens × q.cols` buffer, which outlives the loop.
            let o = unsafe {
                std::slice::from_raw_parts_mut(out_ptr.0.add(t * q.cols + h * head_dim), head_dim)
            };
            let kv_off = (h / group) * head_dim;
            let qh = &q.row(t)[h * head_dim..(h + 1) * head_dim];
            let table = &input.block_tables[batch.token_seq[t] as usize];
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
                    let Scratch { scores, q: q16 } = scratch;
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
        });
    Ok(out)
}
