//! The interleaved weight layout of the AVX-512 VNNI kernels: rows in groups of [`GROUP`],
//! and within a block the bytes of the group's rows interleaved four at a time, so that one
//! 64-byte load holds four consecutive weights of sixteen rows: exactly the operand of
//! `vpdpbusd` against four activation bytes broadcast to every lane. Weights are stored
//! unsigned (Q8_0 offset by +128; Q6_K's six-bit values without their −32), the kernels take
//! the offsets back through the activation sums.
//!
//! A group is `[quants of every block][metadata of every block]`, padded to 64 bytes, so each
//! quant load is aligned. Per block (Q8_0) or super-block (Q4_K, Q6_K):
//!
//! | format | quants | metadata |
//! |---|---|---|
//! | Q8_0 | `[g 8][row 16][4]` bytes `w + 128` (512) | `d: [row 16] f16` (32) |
//! | Q4_K | `[c 4][g 8][row 16][4]` the original nibble bytes (2048) | `d, dmin: [row 16] f16`, `sc: [j 8][row 16] u8`, `m: [pair 4][row 16][2] u8` (320) |
//! | Q6_K | `lo: [u 32][row 16][4]` nibble pairs (2048), `hi: [t 16][row 16][4]` bit pairs (1024) | `d: [row 16] f16`, `sc: [j 16][row 16] i8` (288) |
//!
//! Q4_K byte `32c + 4g + i` holds elements `64c + 4g + i` (low nibble) and `64c + 32 + 4g + i`
//! (high nibble), as in GGUF. Q6_K, with `v = q + 32` in `0..64`: `lo[t]` byte `i` holds
//! `v[4t+i] & 15 | (v[128+4t+i] & 15) << 4`, `lo[16+t]` the same for `64+4t+i` and `192+4t+i`,
//! and `hi[t]` byte `i` the high two bits of `v[4t+i]`, `v[64+4t+i]`, `v[128+4t+i]`,
//! `v[192+4t+i]` at bits 0, 2, 4, 6. Rows past the matrix's end are zero.
//!
//! Q4_0 and Q5_0 matrices are packed as Q8_0 (the same values, [`packed_format`]).
//!
//! The layout is lossless: [`unpack_row`] gives a row's GGUF bytes back in the packed format
//! (tested against the original).

use rayon::prelude::*;

use super::super::common::arr;
use super::super::k_common::{pack_scale_min_k4, scales_mins_k4};
use super::super::{q5_0, q6_k, q8_0, WeightFormat};

/// Rows per interleaved group: the sixteen f32 lanes of an AVX-512 register.
pub const GROUP: usize = 16;

/// One 64-byte line, for an aligned byte buffer.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Sizes of one block of one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Weights per block.
    pub block_len: usize,
    pub quant_bytes: usize,
    pub meta_bytes: usize,
}

/// The format whose kernels run a matrix stored as `format`: itself for Q8_0, Q4_K and Q6_K;
/// Q8_0 for Q4_0 and Q5_0, whose values `d · (q − offset)` are Q8_0 values with the same scale
/// (converted exactly at load, [`to_q8_0_block`]: a matrix of the 4- and 5-bit formats, which
/// llama.cpp writes where a row is not a multiple of 256, runs on the Q8_0 tiles).
pub fn packed_format(format: WeightFormat) -> Option<WeightFormat> {
    match format {
        WeightFormat::Q8_0 | WeightFormat::Q4_K | WeightFormat::Q6_K => Some(format),
        WeightFormat::Q4_0 | WeightFormat::Q5_0 => Some(WeightFormat::Q8_0),
        _ => None,
    }
}

/// One Q4_0 or Q5_0 block as the Q8_0 block of the same values (the same `d`, `q − 8` or
/// `q − 16` as the signed bytes); a Q8_0 block is copied.
pub fn to_q8_0_block(format: WeightFormat, src: &[u8], dst: &mut [u8; q8_0::BLOCK_BYTES]) {
    dst[0..2].copy_from_slice(&src[0..2]);
    let q: [i8; 32] = match format {
        WeightFormat::Q8_0 => std::array::from_fn(|i| src[2 + i] as i8),
        WeightFormat::Q4_0 => std::array::from_fn(|i| {
            let byte = src[2 + i % 16];
            (if i < 16 { byte & 15 } else { byte >> 4 }) as i8 - 8
        }),
        WeightFormat::Q5_0 => {
            let u = q5_0::unpack(u32::from_le_bytes(*arr(&src[2..])), arr(&src[6..]));
            std::array::from_fn(|i| u[i] as i8 - 16)
        }
        other => panic!("{other:?} has no Q8_0 form"),
    };
    for (d, q) in dst[2..].iter_mut().zip(q) {
        *d = q as u8;
    }
}

/// The layout of the kernels' `format` ([`packed_format`]), or `None` when it has none.
pub fn geometry(format: WeightFormat) -> Option<Geometry> {
    let (block_len, quant_bytes, meta_bytes) = match format {
        WeightFormat::Q8_0 => (q8_0::QK, 512, 32),
        WeightFormat::Q4_K => (256, 2048, 320),
        WeightFormat::Q6_K => (256, 3072, 288),
        _ => return None,
    };
    Some(Geometry {
        block_len,
        quant_bytes,
        meta_bytes,
    })
}

/// A matrix in the interleaved layout.
pub struct Interleaved {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub geometry: Geometry,
    /// Bytes of one group (a multiple of 64).
    pub group_bytes: usize,
    lines: Vec<Line>,
}

impl Interleaved {
    pub fn num_groups(&self) -> usize {
        self.rows.div_ceil(GROUP)
    }

    pub fn num_blocks(&self) -> usize {
        self.cols / self.geometry.block_len
    }

    /// Group `g`'s bytes: quants at 0, metadata at `num_blocks · quant_bytes`.
    pub fn group(&self, g: usize) -> &[u8] {
        let bytes: &[u8] = bytemuck::cast_slice(&self.lines);
        &bytes[g * self.group_bytes..(g + 1) * self.group_bytes]
    }

    /// Bytes held (for logs and memory accounting).
    pub fn len_bytes(&self) -> usize {
        self.lines.len() * 64
    }
}

// SAFETY: `Line` is 64 plain bytes with no padding.
unsafe impl bytemuck::Zeroable for Line {}
unsafe impl bytemuck::Pod for Line {}

/// Repacks `rows` GGUF rows of `k` weights (`w`, row-major, stored as `stored`) for the
/// kernels of [`packed_format`]`(stored)`.
pub fn pack(stored: WeightFormat, w: &[u8], rows: usize, k: usize) -> Interleaved {
    let format = packed_format(stored).expect("a format with interleaved kernels");
    let geo = geometry(format).expect("a packed format has a geometry");
    let nb = k / geo.block_len;
    let row_bytes = stored.row_bytes(k);
    assert_eq!(w.len(), rows * row_bytes, "interleave: bad weight size");
    let group_bytes = (nb * (geo.quant_bytes + geo.meta_bytes)).next_multiple_of(64);
    let groups = rows.div_ceil(GROUP);
    let num_lines = groups * group_bytes / 64;
    let mut lines: Vec<Line> = Vec::with_capacity(num_lines);
    let zero = vec![0u8; stored.row_bytes(geo.block_len)];
    // Groups in parallel, each written whole (a serial zero fill of the gigabyte a 1.7B model's
    // matrices take would be a second pass): repacking is on the load path.
    lines.spare_capacity_mut()[..num_lines]
        .par_chunks_mut(group_bytes / 64)
        .enumerate()
        .for_each(|(g, group)| {
            for line in group.iter_mut() {
                line.write(Line([0; 64]));
            }
            // SAFETY: every line of the group was initialized just above.
            let group: &mut [Line] = unsafe {
                std::slice::from_raw_parts_mut(group.as_mut_ptr() as *mut Line, group.len())
            };
            let dst: &mut [u8] = bytemuck::cast_slice_mut(group);
            let (quants, meta) = dst.split_at_mut(nb * geo.quant_bytes);
            for b in 0..nb {
                let bb = stored.row_bytes(geo.block_len);
                let block = |r: usize| -> &[u8] {
                    let row = g * GROUP + r;
                    if row < rows {
                        &w[row * row_bytes + b * bb..row * row_bytes + (b + 1) * bb]
                    } else {
                        &zero
                    }
                };
                let q = &mut quants[b * geo.quant_bytes..(b + 1) * geo.quant_bytes];
                let m = &mut meta[b * geo.meta_bytes..(b + 1) * geo.meta_bytes];
                match format {
                    WeightFormat::Q8_0 => pack_q8_0(stored, block, q, m),
                    WeightFormat::Q4_K => pack_q4_k(block, q, m),
                    WeightFormat::Q6_K => pack_q6_k(block, q, m),
                    _ => unreachable!("checked by geometry"),
                }
            }
        });
    // SAFETY: the tasks above initialized every line.
    unsafe { lines.set_len(num_lines) };
    Interleaved {
        format,
        rows,
        cols: k,
        geometry: geo,
        group_bytes,
        lines,
    }
}

fn pack_q8_0<'a>(
    stored: WeightFormat,
    block: impl Fn(usize) -> &'a [u8],
    q: &mut [u8],
    m: &mut [u8],
) {
    let mut b = [0u8; q8_0::BLOCK_BYTES];
    for r in 0..GROUP {
        to_q8_0_block(stored, block(r), &mut b);
        m[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
        for g in 0..8 {
            let word = u32::from_le_bytes(b[2 + 4 * g..6 + 4 * g].try_into().expect("4 bytes"));
            // +128 in each byte: flipping the sign bit.
            let unsigned = word ^ 0x8080_8080;
            q[(g * GROUP + r) * 4..(g * GROUP + r) * 4 + 4]
                .copy_from_slice(&unsigned.to_le_bytes());
        }
    }
}

fn pack_q4_k<'a>(block: impl Fn(usize) -> &'a [u8], q: &mut [u8], m: &mut [u8]) {
    for r in 0..GROUP {
        let b = block(r);
        m[2 * r..2 * r + 2].copy_from_slice(&b[0..2]);
        m[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&b[2..4]);
        let (sc, mins) = scales_mins_k4(arr(&b[4..16]));
        for j in 0..8 {
            m[64 + j * GROUP + r] = sc[j];
            m[192 + (j / 2 * GROUP + r) * 2 + j % 2] = mins[j];
        }
        for cg in 0..32 {
            let o = ((cg * GROUP) + r) * 4;
            q[o..o + 4].copy_from_slice(&b[16 + 4 * cg..20 + 4 * cg]);
        }
    }
}

fn pack_q6_k<'a>(block: impl Fn(usize) -> &'a [u8], q: &mut [u8], m: &mut [u8]) {
    let (lo, hi) = q.split_at_mut(2048);
    for r in 0..GROUP {
        let b = block(r);
        m[2 * r..2 * r + 2].copy_from_slice(&b[208..210]);
        for j in 0..16 {
            m[32 + j * GROUP + r] = b[192 + j];
        }
        let q6 = q6_k::unpack(arr(b));
        let v: [u8; 256] = std::array::from_fn(|i| (q6[i] as i16 + 32) as u8);
        for t in 0..16 {
            for i in 0..4 {
                let e = 4 * t + i;
                lo[(t * GROUP + r) * 4 + i] = (v[e] & 15) | (v[128 + e] & 15) << 4;
                lo[((16 + t) * GROUP + r) * 4 + i] = (v[64 + e] & 15) | (v[192 + e] & 15) << 4;
                hi[(t * GROUP + r) * 4 + i] = (v[e] >> 4)
                    | (v[64 + e] >> 4) << 2
                    | (v[128 + e] >> 4) << 4
                    | (v[192 + e] >> 4) << 6;
            }
        }
    }
}

/// Row `row`'s GGUF bytes in the packed format `p.format`, into `out`
/// (`p.format.row_bytes(cols)` bytes): the original row, or its Q8_0 form.
pub fn unpack_row(p: &Interleaved, row: usize, out: &mut [u8]) {
    let geo = p.geometry;
    let nb = p.num_blocks();
    let (g, r) = (row / GROUP, row % GROUP);
    let group = p.group(g);
    let (quants, meta) = group.split_at(nb * geo.quant_bytes);
    let bb = p.format.row_bytes(geo.block_len);
    for b in 0..nb {
        let q = &quants[b * geo.quant_bytes..(b + 1) * geo.quant_bytes];
        let m = &meta[b * geo.meta_bytes..(b + 1) * geo.meta_bytes];
        let dst = &mut out[b * bb..(b + 1) * bb];
        match p.format {
            WeightFormat::Q8_0 => {
                dst[0..2].copy_from_slice(&m[2 * r..2 * r + 2]);
                for g in 0..8 {
                    for i in 0..4 {
                        dst[2 + 4 * g + i] = q[(g * GROUP + r) * 4 + i].wrapping_sub(128);
                    }
                }
            }
            WeightFormat::Q4_K => {
                dst[0..2].copy_from_slice(&m[2 * r..2 * r + 2]);
                dst[2..4].copy_from_slice(&m[32 + 2 * r..32 + 2 * r + 2]);
                let sc: [u8; 8] = std::array::from_fn(|j| m[64 + j * GROUP + r]);
                let mins: [u8; 8] =
                    std::array::from_fn(|j| m[192 + (j / 2 * GROUP + r) * 2 + j % 2]);
                dst[4..16].copy_from_slice(&pack_scale_min_k4(&sc, &mins));
                for c in 0..4 {
                    for g in 0..8 {
                        for i in 0..4 {
                            dst[16 + 32 * c + 4 * g + i] = q[((c * 8 + g) * GROUP + r) * 4 + i];
                        }
                    }
                }
            }
            WeightFormat::Q6_K => {
                let (lo, hi) = q.split_at(2048);
                let mut v = [0u8; 256];
                for t in 0..16 {
                    for i in 0..4 {
                        let e = 4 * t + i;
                        let (l0, l1) = (
                            lo[(t * GROUP + r) * 4 + i],
                            lo[((16 + t) * GROUP + r) * 4 + i],
                        );
                        let h = hi[(t * GROUP + r) * 4 + i];
                        v[e] = l0 & 15 | (h & 3) << 4;
                        v[64 + e] = l1 & 15 | (h >> 2 & 3) << 4;
                        v[128 + e] = l0 >> 4 | (h >> 4 & 3) << 4;
                        v[192 + e] = l1 >> 4 | (h >> 6 & 3) << 4;
                    }
                }
                // Back to GGUF's ql / qh arrangement (see q6_k.rs).
                for h in 0..2 {
                    for l in 0..32 {
                        let x = |o: usize| v[128 * h + l + o];
                        dst[64 * h + l] = x(0) & 15 | (x(64) & 15) << 4;
                        dst[64 * h + l + 32] = x(32) & 15 | (x(96) & 15) << 4;
                        dst[128 + 32 * h + l] =
                            x(0) >> 4 | (x(32) >> 4) << 2 | (x(64) >> 4) << 4 | (x(96) >> 4) << 6;
                    }
                }
                for j in 0..16 {
                    dst[192 + j] = m[32 + j * GROUP + r];
                }
                dst[208..210].copy_from_slice(&m[2 * r..2 * r + 2]);
            }
            _ => unreachable!("only formats with a geometry are packed"),
        }
    }
}
