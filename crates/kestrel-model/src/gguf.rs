//! GGUF reader (versions 2 and 3): metadata key/values, tensor infos and tensor data, the file
//! memory-mapped once and shared by every weight that points into it.
//!
//! Layout: magic `GGUF`, u32 version, u64 tensor count, u64 metadata count, the metadata, the
//! tensor infos (name, dims innermost-first, ggml type, offset), padding to `general.alignment`
//! (default 32), then tensor data. Every length read from the file is checked against the file
//! size before anything is allocated, so a truncated or hostile file is an error, not an abort.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kestrel_backend::{HostBytes, HostWeight, WeightFormat};
use memmap2::Mmap;

use crate::error::{ModelError, Result};
use crate::source::{checked_tensor_bytes, map_model_file};

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v as u64),
            GgufValue::U16(v) => Some(v as u64),
            GgufValue::U32(v) => Some(v as u64),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v as i64),
            GgufValue::I16(v) => Some(v as i64),
            GgufValue::I32(v) => Some(v as i64),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// One tensor's description; `dims` innermost first (ggml's `ne`).
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

/// The bytes of a GGUF file: its memory mapping, or a buffer ([`GgufFile::from_bytes`]).
type FileBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

pub struct GgufFile {
    path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    data_offset: usize,
    mmap: FileBytes,
    /// The same bytes as a file mapping, when they are one (not for [`GgufFile::from_bytes`]).
    mapping: Option<Arc<Mmap>>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs {n} bytes at offset {} of {}",
                    self.pos,
                    self.buf.len()
                )
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A count that must fit in what is left of the file at `min_bytes` per item.
    fn count(&mut self, what: &str, min_bytes: usize) -> std::result::Result<usize, String> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes as u64) > left {
            return Err(format!("{what} count {n} does not fit in the file"));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.count("string length", 1)?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("invalid UTF-8 string at offset {}", self.pos - n))
    }
    fn value(&mut self, ty: u32, depth: usize) -> std::result::Result<GgufValue, String> {
        Ok(match ty {
            0 => GgufValue::U8(self.arr::<1>()?[0]),
            1 => GgufValue::I8(self.arr::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.arr()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.arr()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.arr()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.arr()?)),
            7 => GgufValue::Bool(self.arr::<1>()?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 => {
                if depth > 4 {
                    return Err("metadata arrays nested too deeply".into());
                }
                let inner = self.u32()?;
                let n = self.count("array", 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(inner, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.arr()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.arr()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let mmap: Arc<Mmap> = Arc::new(map_model_file(path)?);
        let mut file = Self::parse(path, mmap.clone())?;
        file.mapping = Some(mmap);
        Ok(file)
    }

    /// A GGUF file held in memory; `name` stands for its path in messages. Parses exactly as
    /// [`GgufFile::open`] (the fuzz targets and tests use it).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Path::new(name), Arc::new(bytes))
    }

    fn parse(path: &Path, mmap: FileBytes) -> Result<Self> {
        let err = |d: String| ModelError::file(path, format!("not a valid GGUF file: {d}"));
        let mut r = Reader {
            buf: (*mmap).as_ref(),
            pos: 0,
        };
        if r.take(4).map_err(err)? != b"GGUF" {
            return Err(ModelError::file(path, "not a GGUF file (bad magic)"));
        }
        let version = r.u32().map_err(err)?;
        if !(2..=3).contains(&version) {
            return Err(ModelError::file(
                path,
                format!("GGUF version {version} is not supported (2 or 3)"),
            ));
        }
        let num_tensors = r.count("tensor", 24).map_err(err)?;
        let num_kv = r.count("metadata", 12).map_err(err)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..num_kv {
            let key = r.string().map_err(err)?;
            let ty = r.u32().map_err(err)?;
            let v = r
                .value(ty, 0)
                .map_err(|e| err(format!("metadata `{key}`: {e}")))?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(num_tensors);
        for _ in 0..num_tensors {
            let name = r.string().map_err(err)?;
            let n_dims = r.u32().map_err(err)?;
            if n_dims > 4 {
                return Err(err(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(err)?;
            let ggml_type = r.u32().map_err(err)?;
            let offset = r.u64().map_err(err)?;
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .unwrap_or(32) as usize;
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(err(format!(
                "general.alignment {alignment} is not a power of two"
            )));
        }
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        Ok(Self {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            data_offset,
            mmap,
            mapping: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    fn typed<T>(
        &self,
        key: &str,
        what: &str,
        f: impl Fn(&GgufValue) -> Option<T>,
    ) -> std::result::Result<T, String> {
        let v = self
            .get(key)
            .ok_or_else(|| format!("missing GGUF metadata `{key}`"))?;
        f(v).ok_or_else(|| format!("GGUF metadata `{key}` is not {what}"))
    }
    pub fn get_str(&self, key: &str) -> std::result::Result<&str, String> {
        let v = self
            .get(key)
            .ok_or_else(|| format!("missing GGUF metadata `{key}`"))?;
        v.as_str()
            .ok_or_else(|| format!("GGUF metadata `{key}` is not a string"))
    }
    pub fn get_u64(&self, key: &str) -> std::result::Result<u64, String> {
        self.typed(key, "an unsigned integer", GgufValue::as_u64)
    }
    pub fn get_f64(&self, key: &str) -> std::result::Result<f64, String> {
        self.typed(key, "a number", GgufValue::as_f64)
    }
    pub fn get_bool(&self, key: &str) -> std::result::Result<bool, String> {
        self.typed(key, "a bool", GgufValue::as_bool)
    }
    /// A string array (e.g. `tokenizer.ggml.tokens`).
    pub fn get_str_array(&self, key: &str) -> std::result::Result<Vec<String>, String> {
        self.typed(key, "a string array", |v| match v {
            GgufValue::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => None,
        })
    }
    /// An integer array (e.g. `tokenizer.ggml.token_type`).
    pub fn get_i64_array(&self, key: &str) -> std::result::Result<Vec<i64>, String> {
        self.typed(key, "an integer array", |v| match v {
            GgufValue::Array(items) => items.iter().map(GgufValue::as_i64).collect(),
            _ => None,
        })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The tensor `name` as a host weight pointing into the mapping. Shapes become
    /// `[rows, cols]` = `[ne1, ne0]` (a 1-D tensor is one row).
    pub fn weight(&self, name: &str) -> Result<HostWeight> {
        let bad = |d: String| ModelError::BadWeight {
            name: name.to_string(),
            source_desc: self.path.display().to_string(),
            detail: d,
        };
        let info = self
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingWeight {
                name: name.to_string(),
                source_desc: self.path.display().to_string(),
            })?;
        let format = WeightFormat::from_ggml_type_id(info.ggml_type).ok_or_else(|| {
            bad(format!(
                "tensor type {} ({}) is not supported",
                info.ggml_type,
                ggml_type_name(info.ggml_type)
            ))
        })?;
        let (rows, cols) = match info.dims[..] {
            [n] => (1, n as usize),
            [c, r] => (r as usize, c as usize),
            [c, r, 1] | [c, r, 1, 1] => (r as usize, c as usize),
            _ => return Err(bad(format!("unsupported shape {:?}", info.dims))),
        };
        if cols % format.block_len() != 0 {
            return Err(bad(format!(
                "{cols} columns is not a multiple of the {} block",
                format.name()
            )));
        }
        let len = checked_tensor_bytes(format, rows, cols)
            .ok_or_else(|| bad(format!("shape {:?} overflows", info.dims)))?;
        let start = self
            .data_offset
            .checked_add(info.offset as usize)
            .ok_or_else(|| bad("offset overflows".into()))?;
        let bytes = match &self.mapping {
            Some(map) => HostBytes::mapped(map.clone(), start, len),
            None => HostBytes::new(self.mmap.clone(), start, len),
        };
        let bytes = bytes.ok_or_else(|| {
            bad(format!(
                "data {start}..{} lies past the end of the file ({} bytes): truncated?",
                start.saturating_add(len),
                (*self.mmap).as_ref().len()
            ))
        })?;
        Ok(HostWeight {
            name: name.to_string(),
            format,
            rows,
            cols,
            bytes,
        })
    }
}

/// ggml's name for a type id, for error messages about types this engine does not load.
pub fn ggml_type_name(id: u32) -> &'static str {
    match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => "unknown",
    }
}
