//! The arithmetic of the interleaved kernels, written plainly over the original GGUF rows: the
//! definition the AVX-512 kernels must reproduce bit for bit, whatever the batch.
//!
//! Per output (one weight row · one activation row) the integer part of each block is exact
//! (so any order of the integer additions gives the same value), and the f32 part is one
//! chain over the blocks in order, one fused multiply-add per block:
//!
//! - Q8_0 (activations Q8_0): `acc = fma(f32(Σ w·a), d_w·d_a, acc)`; Q4_0 and Q5_0 the same
//!   over their Q8_0 form (`w = q − 8`, `q − 16`);
//! - Q4_K (activations Q8_K): `S = Σ_j sc_j·Σ q·a`, `M = Σ_j m_j·(bsum_2j + bsum_2j+1)`,
//!   `acc_d = fma(f32(S), d_w·d_a, acc_d)`, `acc_m = fma(f32(M), dmin_w·d_a, acc_m)`, and the
//!   result is `acc_d − acc_m`;
//! - Q6_K (activations Q8_K): `S = Σ_j sc_j·Σ (q − 32)·a`, `acc = fma(f32(S), d_w·d_a, acc)`.
//!
//! This differs from ggml's x86 kernels (which keep eight f32 lanes of partial sums per
//! output) only in f32 rounding; the quantization of weights and activations is ggml's.

use super::super::act::{Q8_K_BLOCK_BYTES, QK_K};
use super::super::common::{arr, f16_at, f32_at};
use super::super::k_common::scales_mins_k4;
use super::super::{q4_k, q6_k, q8_0, WeightFormat};

/// `Σ w·a` of one weight row and one activation row (converted to the format's activation
/// type), in the canonical order.
pub fn dot(format: WeightFormat, w: &[u8], a: &[u8], k: usize) -> f32 {
    match format {
        WeightFormat::Q8_0 => dot_q8_0(w, a, k),
        WeightFormat::Q4_0 | WeightFormat::Q5_0 => {
            let bb = format.block_bytes();
            let mut q8 = Vec::with_capacity(k / q8_0::QK * q8_0::BLOCK_BYTES);
            let mut block = [0u8; q8_0::BLOCK_BYTES];
            for src in w.chunks_exact(bb) {
                super::repack::to_q8_0_block(format, src, &mut block);
                q8.extend_from_slice(&block);
            }
            dot_q8_0(&q8, a, k)
        }
        WeightFormat::Q4_K => dot_q4_k(w, a, k),
        WeightFormat::Q6_K => dot_q6_k(w, a, k),
        other => panic!("no interleaved kernel for {other:?}"),
    }
}

fn dot_q8_0(w: &[u8], a: &[u8], k: usize) -> f32 {
    let mut acc = 0.0f32;
    for b in 0..k / q8_0::QK {
        let (wb, ab) = (
            &w[b * q8_0::BLOCK_BYTES..(b + 1) * q8_0::BLOCK_BYTES],
            &a[b * q8_0::BLOCK_BYTES..(b + 1) * q8_0::BLOCK_BYTES],
        );
        let isum: i32 = wb[2..]
            .iter()
            .zip(&ab[2..])
            .map(|(&x, &y)| (x as i8 as i32) * (y as i8 as i32))
            .sum();
        acc = (isum as f32).mul_add(f16_at(wb, 0) * f16_at(ab, 0), acc);
    }
    acc
}

fn dot_q4_k(w: &[u8], a: &[u8], k: usize) -> f32 {
    let (mut acc_d, mut acc_m) = (0.0f32, 0.0f32);
    for b in 0..k / QK_K {
        let wb = &w[b * q4_k::BLOCK_BYTES..(b + 1) * q4_k::BLOCK_BYTES];
        let ab = &a[b * Q8_K_BLOCK_BYTES..(b + 1) * Q8_K_BLOCK_BYTES];
        let (sc, m) = scales_mins_k4(arr(&wb[4..16]));
        let qa = |i: usize| ab[4 + i] as i8 as i32;
        let bsum = |j: usize| i16::from_le_bytes([ab[260 + 2 * j], ab[261 + 2 * j]]) as i32;
        let (mut s, mut mm) = (0i32, 0i32);
        for j in 0..8 {
            let (c, high) = (j / 2, j % 2 == 1);
            let mut isum = 0i32;
            for l in 0..32 {
                let byte = wb[16 + 32 * c + l];
                let q = if high { byte >> 4 } else { byte & 0x0f } as i32;
                isum += q * qa(32 * j + l);
            }
            s += sc[j] as i32 * isum;
            mm += m[j] as i32 * (bsum(2 * j) + bsum(2 * j + 1));
        }
        let da = f32_at(ab, 0);
        acc_d = (s as f32).mul_add(f16_at(wb, 0) * da, acc_d);
        acc_m = (mm as f32).mul_add(f16_at(wb, 2) * da, acc_m);
    }
    acc_d - acc_m
}

fn dot_q6_k(w: &[u8], a: &[u8], k: usize) -> f32 {
    let mut acc = 0.0f32;
    for b in 0..k / QK_K {
        let wb = &w[b * q6_k::BLOCK_BYTES..(b + 1) * q6_k::BLOCK_BYTES];
        let ab = &a[b * Q8_K_BLOCK_BYTES..(b + 1) * Q8_K_BLOCK_BYTES];
        let q = q6_k::unpack(arr(wb));
        let mut s = 0i32;
        for j in 0..16 {
            let isum: i32 = (16 * j..16 * (j + 1))
                .map(|i| q[i] as i32 * (ab[4 + i] as i8 as i32))
                .sum();
            s += (wb[192 + j] as i8 as i32) * isum;
        }
        acc = (s as f32).mul_add(f16_at(wb, 208) * f32_at(ab, 0), acc);
    }
    acc
}
