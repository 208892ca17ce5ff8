//! A safetensors file from untrusted bytes: the 8-byte header length, the JSON header (dtypes,
//! shapes, offsets, `__metadata__`) and every tensor's byte range, as `kestrel serve` opens a
//! model directory.
//!
//! Invariants: nothing panics; an accepted tensor's bytes are exactly its shape in its dtype
//! and lie inside the file.

use arbitrary::Unstructured;
use kestrel_model::safetensors_source::SafetensorsSource;
use kestrel_model::WeightSource;
use serde_json::{json, Map, Value};

use crate::{signature, Target};

pub struct Safetensors;

/// A safetensors file: header length, header, data.
fn file(header: &Value, data: &[u8]) -> Vec<u8> {
    let header = header.to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

const DTYPES: &[(&str, usize)] = &[
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("I64", 8),
    ("U8", 1),
    ("F64", 8),
    ("BOOL", 1),
];

impl Target for Safetensors {
    fn name(&self) -> &'static str {
        "safetensors"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            file(
                &json!({"__metadata__": {"format": "pt"},
                    "model.embed_tokens.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                    "model.norm.weight": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}}),
                &[0x3f; 32],
            ),
            file(
                &json!({"a": {"dtype": "F16", "shape": [2, 2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [1, 2, 2], "data_offsets": [8, 24]}}),
                &[0x11; 24],
            ),
            file(
                &json!({"c": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}),
                &[0; 8],
            ),
        ]
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        [
            "\"dtype\":",
            "\"shape\":",
            "\"data_offsets\":",
            "\"__metadata__\":",
            "\"F32\"",
            "\"BF16\"",
            "\"F16\"",
            "18446744073709551615",
            "4294967296",
            "[]",
            "[0,0]",
            "-1",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .collect()
    }

    fn generate(&self, u: &mut Unstructured<'_>) -> Option<Vec<u8>> {
        // A header of consistent-looking entries with hostile shapes and offsets.
        let mut header = Map::new();
        let n = u.int_in_range(0..=4).ok()?;
        let mut offset = 0u64;
        for i in 0..n {
            let (dtype, size) = DTYPES[u.choose_index(DTYPES.len()).ok()?];
            let rank = u.int_in_range(0..=3).ok()?;
            let shape: Vec<u64> = (0..rank)
                .map(|_| {
                    if u.ratio(1, 8).ok()? {
                        u.arbitrary::<u64>().ok()
                    } else {
                        u.int_in_range(0u64..=5).ok()
                    }
                })
                .collect::<Option<_>>()?;
            let len = shape.iter().fold(size as u64, |a, &d| a.wrapping_mul(d));
            let end = if u.ratio(1, 6).ok()? {
                u.arbitrary::<u64>().ok()?
            } else {
                offset.wrapping_add(len)
            };
            header.insert(
                format!("t{i}"),
                json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}),
            );
            offset = end;
        }
        let data_len = (offset.min(4096) as usize).saturating_add(u.int_in_range(0..=8).ok()?);
        let data: Vec<u8> = (0..data_len).map(|i| i as u8).collect();
        Some(file(&Value::Object(header), &data))
    }

    fn run(&self, input: &[u8]) -> u64 {
        let src = match SafetensorsSource::from_bytes("fuzz.safetensors", input.to_vec()) {
            Ok(src) => src,
            Err(e) => {
                let message: String = e.to_string().chars().take(60).collect();
                return signature(&["open", &message]);
            }
        };
        let names: Vec<String> = src.tensor_names().map(str::to_owned).collect();
        let mut sig = vec![format!("tensors {}", names.len().min(3))];
        for name in &names {
            assert!(src.contains(name));
            match src.get(name) {
                Ok(w) => {
                    assert_eq!(
                        w.bytes.len(),
                        w.rows * w.format.row_bytes(w.cols),
                        "tensor `{name}`: bytes and shape disagree"
                    );
                    assert!(w.bytes.len() <= input.len());
                    sig.push(format!("ok {}", w.format.name()));
                }
                Err(e) => sig.push(e.to_string().chars().take(60).collect()),
            }
        }
        let parts: Vec<&str> = sig.iter().map(String::as_str).collect();
        signature(&parts)
    }
}
