//! Model files whose headers describe impossible tensors get an error naming the tensor, never
//! a panic in the size arithmetic. Each case is an input the fuzzer (`crates/kestrel-fuzz`)
//! found crashing the loader before it checked its sizes.

use kestrel_model::gguf::GgufFile;
use kestrel_model::safetensors_source::SafetensorsSource;
use kestrel_model::WeightSource;

/// A GGUF v3 file with no metadata and one tensor `t` of `dims` (ggml order) and type F32.
fn gguf_with_tensor(dims: &[u64]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes()); // tensors
    b.extend_from_slice(&0u64.to_le_bytes()); // metadata
    b.extend_from_slice(&1u64.to_le_bytes());
    b.push(b't');
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&0u32.to_le_bytes()); // F32
    b.extend_from_slice(&0u64.to_le_bytes()); // offset
    b.resize(b.len().div_ceil(32) * 32 + 64, 0);
    b
}

#[test]
fn gguf_tensor_sizes_that_overflow_are_errors() {
    for dims in [
        vec![1u64 << 62, 4],
        vec![4, 1 << 62],
        vec![u64::MAX - 31, 1],
        vec![1 << 40, 1 << 40],
    ] {
        let g =
            GgufFile::from_bytes("hostile.gguf", gguf_with_tensor(&dims)).expect("header parses");
        let e = g
            .weight("t")
            .err()
            .unwrap_or_else(|| panic!("{dims:?} accepted"));
        let message = e.to_string();
        assert!(message.contains('t'), "{message}");
    }
    // A sane tensor in the same file shape loads.
    let g = GgufFile::from_bytes("ok.gguf", gguf_with_tensor(&[4, 2])).unwrap();
    let w = g.weight("t").expect("a 2x4 f32 tensor fits");
    assert_eq!((w.rows, w.cols, w.bytes.len()), (2, 4, 32));
}

fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn safetensors_shapes_that_overflow_are_errors() {
    let src = SafetensorsSource::from_bytes(
        "hostile.safetensors",
        safetensors(
            r#"{"t":{"dtype":"F16","shape":[0,12701194564505711537],"data_offsets":[0,0]}}"#,
            &[],
        ),
    );
    if let Ok(src) = src {
        let e = src.get("t").err().expect("an impossible shape is refused");
        assert!(e.to_string().contains("shape"), "{e}");
    }
    let src = SafetensorsSource::from_bytes(
        "ok.safetensors",
        safetensors(
            r#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#,
            &[0; 16],
        ),
    )
    .expect("valid file");
    assert_eq!(src.get("t").expect("loads").bytes.len(), 16);
}
