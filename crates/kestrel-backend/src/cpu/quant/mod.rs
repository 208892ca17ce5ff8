//! GGML weight formats on the CPU, numerically identical to llama.cpp's `ggml-quants.c` and
//! the generic C paths of `ggml-cpu/quants.c` / `vec.cpp`.
//!
//! A weight row is `row_bytes(k)` bytes of consecutive blocks; every block is little-endian and
//! read from plain bytes (rows may sit unaligned inside a memory-mapped GGUF file). A matrix
//! product converts each activation row once to the weight's [`ActFormat`] (ggml's
//! `vec_dot_type`) and then calls [`vec_dot`] per weight row, which sums integer products per
//! block and scales them in f32 in ggml's order, so greedy decoding follows llama.cpp on the
//! same file.
//!
//! | format | block | bytes | activation | file |
//! |--------|-------|-------|------------|------|
//! | F32 / F16 / BF16 | 1 | 4 / 2 / 2 | F32 / F16 / BF16 | `float.rs` |
//! | Q8_0 | 32 | 34 | Q8_0 | `q8_0.rs` |
//! | Q4_0 / Q4_1 | 32 | 18 / 20 | Q8_0 / Q8_1 | `q4_0.rs`, `q4_1.rs` |
//! | Q5_0 / Q5_1 | 32 | 22 / 24 | Q8_0 / Q8_1 | `q5_0.rs`, `q5_1.rs` |
//! | Q4_K / Q5_K / Q6_K | 256 | 144 / 176 / 210 | Q8_K | `q4_k.rs`, `q5_k.rs`, `q6_k.rs` |
//!
//! Activation formats Q8_1 and Q8_K live in `act.rs`; the K-quant search helpers of
//! `quantize_row_q*_K_ref` in `k_common.rs`; the AVX2 kernels in `x86.rs`, each checked bit for
//! bit against the scalar reference in its file.
//!
//! Truth: `tests/quant_golden.rs` checks quantization bytes and dequantized values against
//! gguf-py and, for the K-quants, ggml's `quantize_row_q*_K_ref`; `tests/quant_ggml_dot.rs`
//! checks activation conversion and dot products against ggml's own functions. Products are
//! rounded as the C source writes them, never fused into FMAs behind its back (a compiler
//! building ggml may fuse some; see that test).
//!
//! Callers validate sizes (`k` a multiple of the block length, slices of `row_bytes(k)`); the
//! functions here panic on a mismatch, which is a caller bug.

mod act;
mod common;
mod float;
mod k_common;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;
pub mod vnni;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Storage format of a weight, with GGUF's type ids.
#[allow(non_camel_case_types)] // ggml's names
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K,
    Q5_K,
    Q6_K,
}

impl WeightFormat {
    /// Every format, in declaration order.
    pub const ALL: [WeightFormat; 11] = [
        Self::F32,
        Self::F16,
        Self::BF16,
        Self::Q8_0,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
    ];

    /// Elements per block.
    pub const fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 => 32,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => 256,
        }
    }

    /// Bytes per block (ggml's `type_size`).
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => q8_0::BLOCK_BYTES,
            Self::Q4_0 => q4_0::BLOCK_BYTES,
            Self::Q4_1 => q4_1::BLOCK_BYTES,
            Self::Q5_0 => q5_0::BLOCK_BYTES,
            Self::Q5_1 => q5_1::BLOCK_BYTES,
            Self::Q4_K => q4_k::BLOCK_BYTES,
            Self::Q5_K => q5_k::BLOCK_BYTES,
            Self::Q6_K => q6_k::BLOCK_BYTES,
        }
    }

    /// Bytes of a row of `k` elements. Panics unless `k` is a multiple of the block length.
    pub fn row_bytes(self, k: usize) -> usize {
        assert!(
            k % self.block_len() == 0,
            "{k} elements is not a multiple of the {} block",
            self.name()
        );
        k / self.block_len() * self.block_bytes()
    }

    /// The `ggml_type` id stored in GGUF tensor infos.
    pub fn ggml_type_id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::BF16 => 30,
        }
    }

    /// The format of a `ggml_type` id, `None` for types this crate does not compute with.
    pub fn from_ggml_type_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.ggml_type_id() == id)
    }

    /// The name llama.cpp prints (`ggml_type_name`, upper-cased as in `llama-quantize`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
        }
    }

    /// What activations are converted to before [`vec_dot`]: ggml-cpu's `vec_dot_type`.
    pub fn act_format(self) -> ActFormat {
        match self {
            Self::F32 => ActFormat::F32,
            Self::F16 => ActFormat::F16,
            Self::BF16 => ActFormat::BF16,
            Self::Q8_0 | Self::Q4_0 | Self::Q5_0 => ActFormat::Q8_0,
            Self::Q4_1 | Self::Q5_1 => ActFormat::Q8_1,
            Self::Q4_K | Self::Q5_K | Self::Q6_K => ActFormat::Q8_K,
        }
    }
}

/// Format of a converted activation row (the right-hand side of [`vec_dot`]).
#[allow(non_camel_case_types)] // ggml's names
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActFormat {
    F32,
    F16,
    BF16,
    /// 32 × i8 with an f16 scale (34 bytes).
    Q8_0,
    /// 32 × i8 with f16 `d` and f16 `s = d·Σq` (36 bytes).
    Q8_1,
    /// 256 × i8 with an f32 scale and 16 i16 sums of 16 (292 bytes).
    Q8_K,
}

impl ActFormat {
    /// Elements per block.
    pub const fn block_len(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q8_0 | Self::Q8_1 => 32,
            Self::Q8_K => 256,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q8_0 => q8_0::BLOCK_BYTES,
            Self::Q8_1 => act::Q8_1_BLOCK_BYTES,
            Self::Q8_K => act::Q8_K_BLOCK_BYTES,
        }
    }

    /// Bytes of a converted row of `k` elements. Panics unless `k` is a multiple of the block.
    pub fn row_bytes(self, k: usize) -> usize {
        assert!(
            k % self.block_len() == 0,
            "{k} elements is not a multiple of the {self:?} block"
        );
        k / self.block_len() * self.block_bytes()
    }
}

fn check_row(what: &str, bytes: usize, expected: usize, k: usize) {
    assert!(
        bytes == expected,
        "{what}: {bytes} bytes for {k} elements, expected {expected}"
    );
}

/// Weight row (`row_bytes(k)` bytes) → `k` f32 values, as ggml's `dequantize_row_*`.
pub fn dequantize_row(fmt: WeightFormat, src: &[u8], dst: &mut [f32]) {
    check_row(fmt.name(), src.len(), fmt.row_bytes(dst.len()), dst.len());
    match fmt {
        WeightFormat::F32 => float::f32_to_f32(src, dst),
        WeightFormat::F16 => float::f16_to_f32(src, dst),
        WeightFormat::BF16 => float::bf16_to_f32(src, dst),
        WeightFormat::Q8_0 => q8_0::dequantize_row(src, dst),
        WeightFormat::Q4_0 => q4_0::dequantize_row(src, dst),
        WeightFormat::Q4_1 => q4_1::dequantize_row(src, dst),
        WeightFormat::Q5_0 => q5_0::dequantize_row(src, dst),
        WeightFormat::Q5_1 => q5_1::dequantize_row(src, dst),
        WeightFormat::Q4_K => q4_k::dequantize_row(src, dst),
        WeightFormat::Q5_K => q5_k::dequantize_row(src, dst),
        WeightFormat::Q6_K => q6_k::dequantize_row(src, dst),
    }
}

/// f32 → weight format, as ggml's `quantize_row_*_ref` (no importance matrix): used for
/// in-situ quantization at load and for test data.
pub fn quantize_row(fmt: WeightFormat, src: &[f32], dst: &mut [u8]) {
    check_row(fmt.name(), dst.len(), fmt.row_bytes(src.len()), src.len());
    match fmt {
        WeightFormat::F32 => float::f32_from_f32(src, dst),
        WeightFormat::F16 => float::f16_from_f32(src, dst),
        WeightFormat::BF16 => float::bf16_from_f32(src, dst),
        WeightFormat::Q8_0 => q8_0::quantize_row(src, dst),
        WeightFormat::Q4_0 => q4_0::quantize_row(src, dst),
        WeightFormat::Q4_1 => q4_1::quantize_row(src, dst),
        WeightFormat::Q5_0 => q5_0::quantize_row(src, dst),
        WeightFormat::Q5_1 => q5_1::quantize_row(src, dst),
        WeightFormat::Q4_K => q4_k::quantize_row(src, dst),
        WeightFormat::Q5_K => q5_k::quantize_row(src, dst),
        WeightFormat::Q6_K => q6_k::quantize_row(src, dst),
    }
}

/// One activation row of `k` f32 → `act.row_bytes(k)` bytes: `quantize_row_q8_0_ref`,
/// `quantize_row_q8_1_ref`, `quantize_row_q8_K_ref`, f16 / bf16 rounding, or an f32 copy.
pub fn quantize_act_row(act: ActFormat, src: &[f32], dst: &mut [u8]) {
    check_row("activation", dst.len(), act.row_bytes(src.len()), src.len());
    match act {
        ActFormat::F32 => float::f32_from_f32(src, dst),
        ActFormat::F16 => float::f16_from_f32(src, dst),
        ActFormat::BF16 => float::bf16_from_f32(src, dst),
        ActFormat::Q8_0 => q8_0::quantize_row(src, dst),
        ActFormat::Q8_1 => act::quantize_row_q8_1(src, dst),
        ActFormat::Q8_K => act::quantize_row_q8_k(src, dst),
    }
}

/// Converted activation row → `k` f32 values (`d·q` for the 8-bit formats). For tests and
/// debugging; the matmul never needs it.
pub fn dequantize_act_row(act: ActFormat, src: &[u8], dst: &mut [f32]) {
    check_row("activation", src.len(), act.row_bytes(dst.len()), dst.len());
    match act {
        ActFormat::F32 => float::f32_to_f32(src, dst),
        ActFormat::F16 => float::f16_to_f32(src, dst),
        ActFormat::BF16 => float::bf16_to_f32(src, dst),
        ActFormat::Q8_0 => q8_0::dequantize_row(src, dst),
        ActFormat::Q8_1 => act::dequantize_row_q8_1(src, dst),
        ActFormat::Q8_K => act::dequantize_row_q8_k(src, dst),
    }
}

/// `Σ w[i]·a[i]` over one weight row and one activation row converted with
/// `quantize_act_row(fmt.act_format(), ..)`, as `ggml_vec_dot_<fmt>_<act>`.
#[inline]
pub fn vec_dot(fmt: WeightFormat, w_row: &[u8], act_row: &[u8], k: usize) -> f32 {
    vec_dot_kernel(fmt)(w_row, act_row, k)
}

/// Signature of a dot-product kernel: `(weight row, activation row, k) -> Σ`.
pub type VecDotFn = fn(&[u8], &[u8], usize) -> f32;

/// One weight row against four activation rows (contiguous, each converted as for
/// [`vec_dot`]): `[Σ₀, Σ₁, Σ₂, Σ₃]`, each bit for bit what the one-row kernel returns.
pub type VecDot4Fn = fn(&[u8], &[u8], usize) -> [f32; 4];

/// The four-row kernel of a format where this CPU has one (Q8_0, Q4_K and Q6_K with AVX2): the
/// weight is unpacked once for four activation rows, which pays in prefill and batched decode.
pub fn vec_dot4_kernel(fmt: WeightFormat) -> Option<VecDot4Fn> {
    #[cfg(target_arch = "x86_64")]
    return x86::vec_dot4_kernel(fmt);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = fmt;
        None
    }
}

/// Four weight rows (contiguous) against one activation row: `[Σ₀, Σ₁, Σ₂, Σ₃]`, each bit for
/// bit what the one-row kernel returns.
pub type VecDotW4Fn = fn(&[u8], &[u8], usize) -> [f32; 4];

/// The four-weight-row kernel of a format where this CPU has one (Q8_0 with AVX2): the
/// activation is loaded once for four weight rows and four FMA chains run side by side, which
/// pays in decode, where the one-row loop is bound by its FMA latency.
pub fn vec_dot_w4_kernel(fmt: WeightFormat) -> Option<VecDotW4Fn> {
    #[cfg(target_arch = "x86_64")]
    return x86::vec_dot_w4_kernel(fmt);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = fmt;
        None
    }
}

/// The [`vec_dot`] kernel of a format with the CPU dispatch resolved once, for callers that
/// run many rows of one weight.
pub fn vec_dot_kernel(fmt: WeightFormat) -> VecDotFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = x86::vec_dot_kernel(fmt) {
        return f;
    }
    vec_dot_kernel_scalar(fmt)
}

/// The portable scalar kernels: the reference every SIMD kernel is tested against.
pub fn vec_dot_kernel_scalar(fmt: WeightFormat) -> VecDotFn {
    match fmt {
        WeightFormat::F32 => float::vec_dot_f32,
        WeightFormat::F16 => float::vec_dot_f16,
        WeightFormat::BF16 => float::vec_dot_bf16,
        WeightFormat::Q8_0 => q8_0::vec_dot,
        WeightFormat::Q4_0 => q4_0::vec_dot,
        WeightFormat::Q4_1 => q4_1::vec_dot,
        WeightFormat::Q5_0 => q5_0::vec_dot,
        WeightFormat::Q5_1 => q5_1::vec_dot,
        WeightFormat::Q4_K => q4_k::vec_dot,
        WeightFormat::Q5_K => q5_k::vec_dot,
        WeightFormat::Q6_K => q6_k::vec_dot,
    }
}

/// Which instruction set [`vec_dot_kernel`] picks for a format on this CPU: `"avx2"` or
/// `"scalar"`. For logs and benchmarks.
pub fn vec_dot_isa(fmt: WeightFormat) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if x86::vec_dot_kernel(fmt).is_some() {
        return "avx2";
    }
    let _ = fmt;
    "scalar"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ids_match_ggml() {
        let bytes: Vec<usize> = WeightFormat::ALL.iter().map(|f| f.block_bytes()).collect();
        assert_eq!(bytes, [4, 2, 2, 34, 18, 20, 22, 24, 144, 176, 210]);
        for f in WeightFormat::ALL {
            assert_eq!(WeightFormat::from_ggml_type_id(f.ggml_type_id()), Some(f));
            assert_eq!(f.row_bytes(4096), 4096 / f.block_len() * f.block_bytes());
        }
        assert_eq!(WeightFormat::from_ggml_type_id(10), None); // Q2_K
        assert_eq!(ActFormat::Q8_0.row_bytes(64), 68);
        assert_eq!(ActFormat::Q8_1.row_bytes(64), 72);
        assert_eq!(ActFormat::Q8_K.row_bytes(512), 584);
        assert_eq!(ActFormat::F16.row_bytes(3), 6);
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn row_bytes_rejects_partial_blocks() {
        WeightFormat::Q4_K.row_bytes(100);
    }
}
