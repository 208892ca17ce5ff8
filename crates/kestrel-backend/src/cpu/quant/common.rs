//! Scalar helpers shared by every block format: little-endian field access, f16 scales and
//! ggml's `nearest_int`.
//!
//! Blocks are read straight out of (possibly memory-mapped, unaligned) byte rows, so every
//! multi-byte field goes through `from_le_bytes`; no block is ever reinterpreted in place.
//! f16 conversions round to nearest-even like `GGML_FP32_TO_FP16` (F16C `vcvtps2ph` with
//! rounding mode 0, and ggml's software fallback) and widen exactly like `GGML_FP16_TO_FP32`.

use half::f16;

/// f16 at `b[0..2]` widened to f32 (exact).
#[inline(always)]
pub(super) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// Stores `v` rounded to f16 (nearest-even) at `b[at..at + 2]`.
#[inline(always)]
pub(super) fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// f32 at `b[at..at + 4]`.
#[inline(always)]
pub(super) fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// ggml's `nearest_int`: adds 1.5·2²³ so the float adder rounds to the nearest integer
/// (ties to even) and reads the integer back from the mantissa. Valid for |x| < 2²²; outside
/// that range ggml asserts only in debug builds, and the same bit trick is reproduced here so
/// out-of-range inputs give the same (meaningless) value instead of a panic.
#[inline(always)]
pub(super) fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// A fixed-size view of `N` bytes at the start of `b`; the length check folds away when the
/// caller slices with a constant length (`chunks_exact(N)`).
#[inline(always)]
pub(super) fn arr<const N: usize>(b: &[u8]) -> &[u8; N] {
    b[..N].try_into().expect("slice of exactly N bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even_like_ggml() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.49), -2);
        assert_eq!(nearest_int(126.6), 127);
        assert_eq!(nearest_int(-4_194_303.0), -4_194_303);
    }

    #[test]
    fn f16_round_trip_is_nearest_even() {
        let mut b = [0u8; 2];
        // 1 + 2^-11 is exactly between 1 and the next f16 (1 + 2^-10): ties go to even (1.0).
        put_f16(&mut b, 0, 1.0 + f32::powi(2.0, -11));
        assert_eq!(f16_at(&b, 0), 1.0);
        put_f16(&mut b, 0, 1.0 + 3.0 * f32::powi(2.0, -11));
        assert_eq!(f16_at(&b, 0), 1.0 + 2.0 * f32::powi(2.0, -10));
        put_f16(&mut b, 0, 70000.0);
        assert_eq!(f16_at(&b, 0), f32::INFINITY);
    }
}
