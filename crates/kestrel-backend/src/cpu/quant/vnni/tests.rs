//! The interleaved layout is lossless, and the AVX-512 tiles give the scalar definition's bits
//! for every row count (skipped, with the reason printed, on CPUs without AVX-512 VNNI).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::{dequantize_row, quantize_act_row, quantize_row, WeightFormat};
use super::repack::{pack, packed_format, unpack_row};
use super::{available_for, matmul, reference, Buffers};

const FORMATS: [WeightFormat; 5] = [
    WeightFormat::Q8_0,
    WeightFormat::Q4_K,
    WeightFormat::Q6_K,
    WeightFormat::Q4_0,
    WeightFormat::Q5_0,
];

fn quantized(format: WeightFormat, rows: usize, k: usize, rng: &mut StdRng) -> Vec<u8> {
    let rb = format.row_bytes(k);
    let mut w = vec![0u8; rows * rb];
    for r in 0..rows {
        let vals: Vec<f32> = (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        quantize_row(format, &vals, &mut w[r * rb..(r + 1) * rb]);
    }
    w
}

#[test]
fn repacking_is_lossless() {
    let mut rng = StdRng::seed_from_u64(1);
    for format in FORMATS {
        let (rows, k) = (37, 512);
        let w = quantized(format, rows, k, &mut rng);
        let p = pack(format, &w, rows, k);
        assert_eq!(p.format, packed_format(format).unwrap());
        let rb = format.row_bytes(k);
        let mut row = vec![0u8; p.format.row_bytes(k)];
        let (mut want, mut got) = (vec![0.0; k], vec![0.0; k]);
        for r in 0..rows {
            unpack_row(&p, r, &mut row);
            let original = &w[r * rb..(r + 1) * rb];
            if p.format == format {
                assert_eq!(row, original, "{format:?} row {r}");
            }
            // A format packed as another keeps its values exactly.
            dequantize_row(format, original, &mut want);
            dequantize_row(p.format, &row, &mut got);
            assert_eq!(want, got, "{format:?} row {r} values");
        }
    }
}

#[test]
fn tiles_equal_the_reference_bit_for_bit_for_every_row_count() {
    if !available_for(WeightFormat::Q8_0) {
        eprintln!("skipped: this CPU has no AVX-512 VNNI (or KESTREL_CPU_ISA excludes it)");
        return;
    }
    let mut rng = StdRng::seed_from_u64(2);
    for format in FORMATS {
        let (m, k) = (45, 1024);
        let w = quantized(format, m, k, &mut rng);
        let p = pack(format, &w, m, k);
        let n = 13;
        let x: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-2.0..2.0)).collect();
        let act = format.act_format();
        let arb = act.row_bytes(k);
        let rb = format.row_bytes(k);
        let mut a = vec![0u8; arb];
        let want: Vec<f32> = (0..n * m)
            .map(|idx| {
                let (i, j) = (idx / m, idx % m);
                quantize_act_row(act, &x[i * k..(i + 1) * k], &mut a);
                reference::dot(format, &w[j * rb..(j + 1) * rb], &a, k)
            })
            .collect();
        for rows in [1, 2, 3, 5, 6, 7, 13] {
            let mut out = vec![f32::NAN; rows * m];
            matmul(&x[..rows * k], rows, &p, &mut out, &mut Buffers::default());
            for (idx, (g, e)) in out.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    e.to_bits(),
                    "{format:?} n={rows} row {} col {}: {g} vs {e}",
                    idx / m,
                    idx % m
                );
            }
        }
    }
}

/// The definition is a dot product: close to the f32 one of the dequantized weights and
/// activations.
#[test]
fn the_reference_is_a_dot_product() {
    let mut rng = StdRng::seed_from_u64(3);
    for format in FORMATS {
        let k = 512;
        let w = quantized(format, 1, k, &mut rng);
        let x: Vec<f32> = (0..k).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let act = format.act_format();
        let mut a = vec![0u8; act.row_bytes(k)];
        quantize_act_row(act, &x, &mut a);
        let mut wf = vec![0.0; k];
        dequantize_row(format, &w, &mut wf);
        let mut af = vec![0.0; k];
        super::super::dequantize_act_row(act, &a, &mut af);
        let exact: f64 = wf.iter().zip(&af).map(|(p, q)| f64::from(p * q)).sum();
        let got = f64::from(reference::dot(format, &w, &a, k));
        assert!(
            (got - exact).abs() < 1e-3 * (1.0 + exact.abs()),
            "{format:?}: {got} vs {exact}"
        );
    }
}
