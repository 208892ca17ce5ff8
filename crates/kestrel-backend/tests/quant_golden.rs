//! Block formats against gguf-py, the Python twin of ggml's reference (de)quantizers.
//!
//! `tests/data/quant_vectors/<NAME>.bin` are written by `scripts/golden/make_quant_vectors.py`
//! (file format documented there). For every case our `dequantize_row` must reproduce gguf-py's
//! values bit for bit; where gguf-py quantized the input (F32, F16, BF16, Q8_0, Q4_0, Q4_1,
//! Q5_0, Q5_1) our `quantize_row` must produce the same bytes. gguf-py does not implement the
//! K-quant quantizers: their kind-0 cases were quantized by ggml's own `quantize_row_q*_K_ref`
//! (the script's `--ggml-lib-dir`, from a llama-cpp-python build) and dequantized by gguf-py.

use std::path::PathBuf;

use kestrel_backend::cpu::quant::{dequantize_row, quantize_row, WeightFormat};

struct Case {
    input: Option<Vec<f32>>,
    blocks: Vec<u8>,
    values: Vec<f32>,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(self.0.len() >= n, "vector file truncated");
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

fn load(fmt: WeightFormat) -> Vec<Case> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/quant_vectors")
        .join(format!("{}.bin", fmt.name()));
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = Reader(&data);
    assert_eq!(r.take(4), b"KQV1");
    assert_eq!(r.u32(), fmt.ggml_type_id(), "{}", path.display());
    let n = r.u32();
    let cases = (0..n)
        .map(|_| {
            let kind = r.u32();
            let k = r.u32() as usize;
            let input = (kind == 0).then(|| r.f32s(k));
            let blocks = r.take(fmt.row_bytes(k)).to_vec();
            let values = r.f32s(k);
            Case {
                input,
                blocks,
                values,
            }
        })
        .collect();
    assert!(r.0.is_empty(), "trailing bytes in {}", path.display());
    cases
}

fn assert_bits_eq(fmt: WeightFormat, what: &str, got: &[f32], want: &[f32]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{fmt:?} {what}: value {i}: {g} vs gguf-py {w}"
        );
    }
}

fn check_format(fmt: WeightFormat) -> (usize, usize) {
    let (mut quantized, mut random) = (0, 0);
    for (c, case) in load(fmt).iter().enumerate() {
        let k = case.values.len();
        let mut values = vec![0.0f32; k];
        dequantize_row(fmt, &case.blocks, &mut values);
        assert_bits_eq(fmt, &format!("case {c} dequantize"), &values, &case.values);
        match &case.input {
            Some(input) => {
                let mut blocks = vec![0u8; fmt.row_bytes(k)];
                quantize_row(fmt, input, &mut blocks);
                let bb = fmt.block_bytes();
                for (b, (g, w)) in blocks
                    .chunks_exact(bb)
                    .zip(case.blocks.chunks_exact(bb))
                    .enumerate()
                {
                    assert_eq!(
                        g,
                        w,
                        "{fmt:?} case {c}: block {b} differs from gguf-py (input {:?})",
                        &input[b * fmt.block_len()..(b + 1) * fmt.block_len()]
                    );
                }
                quantized += 1;
            }
            None => random += 1,
        }
    }
    (quantized, random)
}

#[test]
fn float_formats_match_gguf_py() {
    for fmt in [WeightFormat::F32, WeightFormat::F16, WeightFormat::BF16] {
        let (quantized, _) = check_format(fmt);
        assert_eq!(quantized, 3, "{fmt:?}");
    }
}

#[test]
fn legacy_quants_match_gguf_py_bytes_and_values() {
    for fmt in [
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q4_1,
        WeightFormat::Q5_0,
        WeightFormat::Q5_1,
    ] {
        let (quantized, random) = check_format(fmt);
        assert_eq!((quantized, random), (2, 1), "{fmt:?}");
    }
}

#[test]
fn k_quants_match_ggml_bytes_and_gguf_py_values() {
    for fmt in [WeightFormat::Q4_K, WeightFormat::Q5_K, WeightFormat::Q6_K] {
        let (quantized, random) = check_format(fmt);
        assert_eq!((quantized, random), (2, 1), "{fmt:?}");
    }
}
