//! Paged attention on the CPU for a varlen batch: KV writes by slot mapping, then for every
//! (token, head) an online-softmax pass over that sequence's keys up to the token's position,
//! read through the block table. Prefill chunks and decode tokens take the same path.

use rayon::prelude::*;

use super::ops::dot_f32;
use super::tensor::{check_slot, CpuBatch, CpuKvLayer, CpuTensor};
use crate::error::{shape_err, Result};
use crate::AttnShape;

/// Stores `k, v [num_tokens, num_kv_heads * head_dim]` at their slots.
pub fn write_kv(cache: &mut CpuKvLayer, k: &CpuTensor, v: &CpuTensor, slots: &[u32]) -> Result<()> {
    let w = cache.slot_width();
    if k.cols != w || v.cols != w || k.rows != slots.len() || v.rows != slots.len() {
        return Err(shape_err("write_kv", format!("k [{}, {}] v [{}, {}], slot width {w}", k.rows, k.cols, v.rows, v.cols)));
    }
    let num_slots = cache.num_slots();
    for (t, &slot) in slots.iter().enumerate() {
        let slot = slot as usize;
        check_slot(slot, num_slots)?;
        cache.k[slot * w..(slot + 1) * w].copy_from_slice(k.row(t));
        cache.v[slot * w..(slot + 1) * w].copy_from_slice(v.row(t));
    }
    Ok(())
}

/// `q [num_tokens, num_heads * head_dim]` → `[num_tokens, num_heads * head_dim]`.
pub fn paged_attention(q: &CpuTensor, cache: &CpuKvLayer, batch: &CpuBatch, shape: AttnShape) -> Result<CpuTensor> {
    let AttnShape { num_heads, num_kv_heads, head_dim, scale } = shape;
    let input = &batch.input;
    if q.cols != num_heads * head_dim
        || q.rows != input.num_tokens()
        || num_kv_heads == 0
        || num_heads % num_kv_heads != 0
        || cache.layout.head_dim != head_dim
        || cache.layout.num_kv_heads != num_kv_heads
    {
        return Err(shape_err("attention", format!("q [{}, {}] with {shape:?} and {:?}", q.rows, q.cols, cache.layout)));
    }
    let group = num_heads / num_kv_heads;
    let bs = input.block_size;
    let w = cache.slot_width();
    let num_slots = cache.num_slots();
    // Every slot a token may read must exist; checking once here keeps the inner loop free of it.
    for (s, table) in input.block_tables.iter().enumerate() {
        let needed = (input.seq_lens[s] as usize).div_ceil(bs);
        if let Some(&b) = table.iter().take(needed).find(|&&b| (b as usize + 1) * bs > num_slots) {
            check_slot(b as usize * bs, num_slots)?;
        }
        if table.len() < needed {
            return Err(shape_err("attention", format!("sequence {s}: block table too short")));
        }
    }
    let mut out = CpuTensor::zeros(q.rows, q.cols);
    out.data.par_chunks_mut(head_dim).enumerate().for_each(|(idx, o)| {
        let (t, h) = (idx / num_heads, idx % num_heads);
        let kv_off = (h / group) * head_dim;
        let qh = &q.row(t)[h * head_dim..(h + 1) * head_dim];
        let table = &input.block_tables[batch.token_seq[t] as usize];
        let num_keys = input.positions[t] as usize + 1;
        let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
        for j in 0..num_keys {
            let slot = table[j / bs] as usize * bs + j % bs;
            let base = slot * w + kv_off;
            let score = dot_f32(qh, &cache.k[base..base + head_dim]) * scale;
            if score > max {
                let correction = (max - score).exp();
                sum *= correction;
                o.iter_mut().for_each(|v| *v *= correction);
                max = score;
            }
            let p = (score - max).exp();
            sum += p;
            for (ov, vv) in o.iter_mut().zip(&cache.v[base..base + head_dim]) {
                *ov += p * vv;
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|v| *v *= inv);
    });
    Ok(out)
}
