//! GGUF v3 writer: metadata, tensor infos and tensor data, with tensor bytes produced one at a
//! time by a callback so multi-gigabyte models are written without holding them in memory.
//! Used by `kestrel synth` and by tests that need small, deliberately broken files.

use std::io::{BufWriter, Seek, Write};
use std::path::Path;

use kestrel_backend::WeightFormat;

use crate::error::{ModelError, Result};
use crate::gguf::GgufValue;

const ALIGNMENT: u64 = 32;

/// A tensor to be written: `dims` innermost first (ggml order), i.e. `[cols, rows]`.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
}

impl TensorSpec {
    /// A `[rows, cols]` matrix (or `[cols]` vector when `rows` is `None`) in `format`.
    pub fn new(
        name: impl Into<String>,
        format: WeightFormat,
        rows: Option<usize>,
        cols: usize,
    ) -> Self {
        let dims = match rows {
            Some(r) => vec![cols as u64, r as u64],
            None => vec![cols as u64],
        };
        Self {
            name: name.into(),
            dims,
            ggml_type: format.ggml_type_id(),
        }
    }

    /// Byte size of the data, when the type is one this engine knows.
    pub fn byte_len(&self) -> Option<u64> {
        let f = WeightFormat::from_ggml_type_id(self.ggml_type)?;
        let cols = *self.dims.first()? as usize;
        let rows: u64 = self.dims[1..].iter().product();
        Some(rows * f.row_bytes(cols) as u64)
    }
}

fn write_str<W: Write>(w: &mut W, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::Str(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn write_value<W: Write>(w: &mut W, v: &GgufValue) -> std::io::Result<()> {
    match v {
        GgufValue::U8(x) => w.write_all(&[*x]),
        GgufValue::I8(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::Bool(x) => w.write_all(&[*x as u8]),
        GgufValue::Str(s) => write_str(w, s),
        GgufValue::Array(items) => {
            let inner = items.first().map(type_id).unwrap_or(8);
            w.write_all(&inner.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| write_value(w, i))
        }
        GgufValue::U64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

/// Writes a GGUF v3 file. `fill(i, buf)` must fill `buf` (already sized) with tensor `i`'s bytes.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, GgufValue)],
    tensors: &[TensorSpec],
    mut fill: impl FnMut(usize, &mut [u8]),
) -> Result<()> {
    let io = |e: std::io::Error| ModelError::file(path, e);
    let file = std::fs::File::create(path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    let sizes: Vec<u64> = tensors
        .iter()
        .map(|t| {
            t.byte_len()
                .ok_or_else(|| ModelError::file(path, format!("tensor `{}`: unknown type", t.name)))
        })
        .collect::<Result<_>>()?;
    w.write_all(b"GGUF").map_err(io)?;
    w.write_all(&3u32.to_le_bytes()).map_err(io)?;
    w.write_all(&(tensors.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(&(metadata.len() as u64).to_le_bytes())
        .map_err(io)?;
    for (k, v) in metadata {
        write_str(&mut w, k).map_err(io)?;
        w.write_all(&type_id(v).to_le_bytes()).map_err(io)?;
        write_value(&mut w, v).map_err(io)?;
    }
    let mut offset = 0u64;
    for (t, size) in tensors.iter().zip(&sizes) {
        write_str(&mut w, &t.name).map_err(io)?;
        w.write_all(&(t.dims.len() as u32).to_le_bytes())
            .map_err(io)?;
        t.dims
            .iter()
            .try_for_each(|d| w.write_all(&d.to_le_bytes()))
            .map_err(io)?;
        w.write_all(&t.ggml_type.to_le_bytes()).map_err(io)?;
        w.write_all(&offset.to_le_bytes()).map_err(io)?;
        offset = (offset + size).div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    let pad = |w: &mut BufWriter<std::fs::File>| -> std::io::Result<()> {
        let pos = w.stream_position()?;
        let target = pos.div_ceil(ALIGNMENT) * ALIGNMENT;
        w.write_all(&vec![0u8; (target - pos) as usize])
    };
    pad(&mut w).map_err(io)?;
    let mut buf = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        buf.clear();
        buf.resize(*size as usize, 0);
        fill(i, &mut buf);
        w.write_all(&buf).map_err(io)?;
        pad(&mut w).map_err(io)?;
    }
    w.flush().map_err(io)
}
