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
use super::tensor::{check_slot, CpuBatch, CpuKvLayer, CpuTensor, KvStore};
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
    let mut out = CpuTensor::zeros(q.rows, q.cols);
    out.data.par_chunks_mut(head_dim).enumerate().for_each_init(
        Scratch::default,
        |scratch, (idx, o)| {
            let (t, h) = (idx / num_heads, idx % num_heads);
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
                    for j in 0..num_keys {
                        let b = base(j);
                        let s = (kern.dot_f16)(q16, &k[b..b + head_dim]) * scale;
                        max = max.max(s);
                        scores.push(s);
                    }
                    let mut sum = 0.0f64;
                    for s in scores.iter_mut() {
                        *s = (*s - max).exp();
                        sum += *s as f64;
                    }
                    let inv = (1.0 / sum) as f32;
                    for (j, s) in scores.iter().enumerate() {
                        let p = f16::from_f32(s * inv).to_f32();
                        let b = base(j);
                        (kern.axpy_f16)(o, p, &v[b..b + head_dim]);
                    }
                }
                _ => unreachable!("K and V share one dtype"),
            }
        },
    );
    Ok(out)
}
