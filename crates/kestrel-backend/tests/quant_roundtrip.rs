//! `quantize_row` → `dequantize_row` error bounds for every weight format, and the same for the
//! activation formats, at one block, several blocks and a 4096-wide row.
//!
//! Bounds, per block, with `amax` the largest |x| of the block (K-quants: of the 256-value
//! super-block) and `ε = 2⁻¹¹` the f16 rounding of stored scales:
//!
//! | format | bound on |x - y| | why |
//! |--------|------------------|-----|
//! | F32 | 0 | copy |
//! | F16 / BF16 | `|x|·2⁻¹¹ + 2⁻²⁵` / `|x|·2⁻⁸` | round to nearest (f16 subnormals below 2⁻¹⁴) |
//! | Q8_0 | `d·(0.5 + 128ε)`, `d = amax/127` | half a step, plus `q·(d - f16(d))` |
//! | Q4_0 / Q5_0 | `d·(1 + 9ε)` / `d·(1 + 17ε)`, `d = amax/8` / `amax/16` | the end opposite to `max` saturates one step short |
//! | Q4_1 / Q5_1 | `d·(0.5 + 16ε) + |min|·ε` / `d·(0.5 + 32ε) + |min|·ε`, `d = range/15` / `range/31` | half a step, f16 `d` and `m` |
//! | Q4_K / Q5_K / Q6_K | `0.1·amax` / `0.05·amax` / `0.02·amax` | half a grid step of the widest sub-block (`2·amax/15`, `2·amax/31`, `amax/32`) plus the 6/8-bit rounding of sub-block scales; RMS error under 12 % / 6 % / 4 % of RMS(x) |

use kestrel_backend::cpu::quant::{
    dequantize_act_row, dequantize_row, quantize_act_row, quantize_row, ActFormat, WeightFormat,
};
use rand::{Rng, SeedableRng};

const EPS16: f32 = 1.0 / 2048.0;

/// Roughly Gaussian values (sum of four uniforms), each block with its own magnitude
/// (1e-2 .. 1e2) and offset, so blocks of every shape appear.
fn test_row(rng: &mut rand::rngs::StdRng, k: usize, block: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(k);
    for b in 0..k / block {
        let scale = 10f32.powf(rng.gen_range(-2.0..2.0));
        let offset = if b % 3 == 1 {
            rng.gen_range(-2.0..2.0) * scale
        } else {
            0.0
        };
        for _ in 0..block {
            let g: f32 = (0..4).map(|_| rng.gen_range(-1.0f32..1.0)).sum();
            x.push(g * scale + offset);
        }
    }
    x
}

fn amax(xs: &[f32]) -> f32 {
    xs.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Largest allowed |x - y| for each element of one block of `fmt`.
fn bound(fmt: WeightFormat, xs: &[f32]) -> f32 {
    let am = amax(xs);
    let (min, max) = xs
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let tiny = 1e-6 * am + 1e-30;
    tiny + match fmt {
        WeightFormat::F32 => 0.0,
        WeightFormat::F16 | WeightFormat::BF16 => unreachable!("per-element bound"),
        WeightFormat::Q8_0 => am / 127.0 * (0.5 + 128.0 * EPS16),
        WeightFormat::Q4_0 => am / 8.0 * (1.0 + 9.0 * EPS16),
        WeightFormat::Q5_0 => am / 16.0 * (1.0 + 17.0 * EPS16),
        WeightFormat::Q4_1 => (max - min) / 15.0 * (0.5 + 16.0 * EPS16) + min.abs() * EPS16,
        WeightFormat::Q5_1 => (max - min) / 31.0 * (0.5 + 32.0 * EPS16) + min.abs() * EPS16,
        WeightFormat::Q4_K => 0.1 * am,
        WeightFormat::Q5_K => 0.05 * am,
        WeightFormat::Q6_K => 0.02 * am,
    }
}

fn rms_limit(fmt: WeightFormat) -> f64 {
    match fmt {
        WeightFormat::Q4_K => 0.12,
        WeightFormat::Q5_K => 0.06,
        WeightFormat::Q6_K => 0.04,
        _ => 1.0,
    }
}

#[test]
fn every_weight_format_round_trips_within_its_bound() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for fmt in WeightFormat::ALL {
        let bl = fmt.block_len().max(32);
        for k in [fmt.block_len().max(32), 4 * bl, 4096] {
            let x = test_row(&mut rng, k, bl);
            let mut bytes = vec![0u8; fmt.row_bytes(k)];
            quantize_row(fmt, &x, &mut bytes);
            let mut y = vec![0.0f32; k];
            dequantize_row(fmt, &bytes, &mut y);
            let (mut se, mut sx) = (0.0f64, 0.0f64);
            for (b, (xs, ys)) in x.chunks(bl).zip(y.chunks(bl)).enumerate() {
                for (i, (&xv, &yv)) in xs.iter().zip(ys).enumerate() {
                    let lim = match fmt {
                        // Below 2⁻¹⁴ f16 is subnormal: absolute steps of 2⁻²⁴.
                        WeightFormat::F16 => xv.abs() * EPS16 + f32::powi(2.0, -25),
                        WeightFormat::BF16 => xv.abs() / 256.0,
                        _ => bound(fmt, xs),
                    };
                    assert!(
                        (xv - yv).abs() <= lim,
                        "{fmt:?} k={k} block {b} elem {i}: {xv} → {yv}, bound {lim}"
                    );
                    se += ((xv - yv) as f64).powi(2);
                    sx += (xv as f64).powi(2);
                }
            }
            assert!(
                (se / sx).sqrt() < rms_limit(fmt),
                "{fmt:?} k={k}: relative RMS error {}",
                (se / sx).sqrt()
            );
        }
    }
}

#[test]
fn k_quants_handle_flat_and_zero_super_blocks() {
    for fmt in [WeightFormat::Q4_K, WeightFormat::Q5_K, WeightFormat::Q6_K] {
        for x in [
            vec![0.0f32; 256],
            vec![0.37f32; 256],
            vec![-1.5f32; 256],
            (0..256).map(|i| i as f32).collect(),
        ] {
            let mut bytes = vec![0u8; fmt.row_bytes(256)];
            quantize_row(fmt, &x, &mut bytes);
            let mut y = vec![0.0f32; 256];
            dequantize_row(fmt, &bytes, &mut y);
            let lim = bound(fmt, &x);
            for (xv, yv) in x.iter().zip(&y) {
                assert!((xv - yv).abs() <= lim, "{fmt:?}: {xv} → {yv}");
            }
        }
    }
}

#[test]
fn activation_formats_round_trip_within_their_bound() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(43);
    for act in [
        ActFormat::F32,
        ActFormat::F16,
        ActFormat::BF16,
        ActFormat::Q8_0,
        ActFormat::Q8_1,
        ActFormat::Q8_K,
    ] {
        let bl = act.block_len().max(32);
        for k in [256, 4096] {
            let x = test_row(&mut rng, k, bl);
            let mut bytes = vec![0u8; act.row_bytes(k)];
            quantize_act_row(act, &x, &mut bytes);
            let mut y = vec![0.0f32; k];
            dequantize_act_row(act, &bytes, &mut y);
            for (xs, ys) in x.chunks(bl).zip(y.chunks(bl)) {
                let am = amax(xs);
                for (&xv, &yv) in xs.iter().zip(ys) {
                    let lim = match act {
                        ActFormat::F32 => 0.0,
                        ActFormat::F16 => xv.abs() * EPS16 + f32::powi(2.0, -25),
                        ActFormat::BF16 => xv.abs() / 256.0,
                        ActFormat::Q8_0 | ActFormat::Q8_1 => am / 127.0 * (0.5 + 128.0 * EPS16),
                        // d is kept in f32: half a step plus the f32 rounding of 1/iscale.
                        ActFormat::Q8_K => am / 127.0 * (0.5 + 1e-5),
                    };
                    assert!(
                        (xv - yv).abs() <= lim + 1e-30,
                        "{act:?} k={k}: {xv} → {yv}, bound {lim}"
                    );
                }
            }
        }
    }
}
