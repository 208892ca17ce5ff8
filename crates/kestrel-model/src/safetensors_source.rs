//! Weights from a Hugging Face directory: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, each file memory-mapped once. bf16 / f16 / f32 tensors are
//! handed to the backend in place, without conversion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kestrel_backend::{HostBytes, HostWeight, WeightFormat};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ModelError, Result};
use crate::source::{checked_tensor_bytes, map_model_file, WeightSource};

struct Entry {
    file: usize,
    format: WeightFormat,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    len: usize,
}

/// The bytes of one file: its memory mapping, or a buffer ([`SafetensorsSource::from_bytes`]).
type FileBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

pub struct SafetensorsSource {
    dir: PathBuf,
    /// Each file's bytes, and the same as a file mapping when they are one.
    files: Vec<(PathBuf, FileBytes, Option<Arc<Mmap>>)>,
    entries: HashMap<String, Entry>,
}

impl SafetensorsSource {
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index = dir.join("model.safetensors.index.json");
        let shard_names: Vec<String> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::file(&index, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::file(&index, e))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::file(&index, "no `weight_map` object"))?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect();
            names.sort();
            names.dedup();
            names
        } else {
            vec!["model.safetensors".to_string()]
        };
        let mut src = SafetensorsSource {
            dir: dir.to_path_buf(),
            files: Vec::new(),
            entries: HashMap::new(),
        };
        for name in shard_names {
            if name.contains('/') || name.contains("..") {
                return Err(ModelError::file(
                    &index,
                    format!("shard name `{name}` leaves the model directory"),
                ));
            }
            src.add_file(&dir.join(name))?;
        }
        Ok(src)
    }

    /// One safetensors file held in memory; `name` stands for its path in messages. Parses
    /// exactly as [`SafetensorsSource::open_dir`] does each shard (the fuzz targets use it).
    pub fn from_bytes(name: &str, bytes: Vec<u8>) -> Result<Self> {
        let mut src = SafetensorsSource {
            dir: PathBuf::from(name),
            files: Vec::new(),
            entries: HashMap::new(),
        };
        src.add_bytes(Path::new(name), Arc::new(bytes))?;
        Ok(src)
    }

    /// Names of the tensors, in no particular order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let mmap: Arc<Mmap> = Arc::new(map_model_file(path)?);
        self.add_bytes(path, mmap.clone())?;
        if let Some(last) = self.files.last_mut() {
            last.2 = Some(mmap);
        }
        Ok(())
    }

    fn add_bytes(&mut self, path: &Path, mmap: FileBytes) -> Result<()> {
        let (header_len, meta) = SafeTensors::read_metadata((*mmap).as_ref())
            .map_err(|e| ModelError::file(path, format!("invalid safetensors file: {e:?}")))?;
        let data_start = 8 + header_len;
        let file_idx = self.files.len();
        for (name, info) in meta.tensors() {
            let format = match info.dtype {
                Dtype::F32 => WeightFormat::F32,
                Dtype::F16 => WeightFormat::F16,
                Dtype::BF16 => WeightFormat::BF16,
                other => {
                    return Err(ModelError::BadWeight {
                        name,
                        source_desc: path.display().to_string(),
                        detail: format!("dtype {other:?} is not supported (bf16, f16 or f32)"),
                    })
                }
            };
            let (s, e) = info.data_offsets;
            self.entries.insert(
                name,
                Entry {
                    file: file_idx,
                    format,
                    shape: info.shape.clone(),
                    start: data_start + s,
                    len: e - s,
                },
            );
        }
        self.files.push((path.to_path_buf(), mmap, None));
        Ok(())
    }
}

impl WeightSource for SafetensorsSource {
    fn contains(&self, hf_name: &str) -> bool {
        self.entries.contains_key(hf_name)
    }

    fn get(&self, hf_name: &str) -> Result<HostWeight> {
        let e = self
            .entries
            .get(hf_name)
            .ok_or_else(|| ModelError::MissingWeight {
                name: hf_name.to_string(),
                source_desc: self.describe(),
            })?;
        let (path, mmap, mapping) = &self.files[e.file];
        let bad = |d: String| ModelError::BadWeight {
            name: hf_name.to_string(),
            source_desc: path.display().to_string(),
            detail: d,
        };
        let (rows, cols) = match e.shape[..] {
            [n] => (1, n),
            [r, c] => (r, c),
            _ => return Err(bad(format!("unsupported shape {:?}", e.shape))),
        };
        if checked_tensor_bytes(e.format, rows, cols) != Some(e.len) {
            return Err(bad(format!(
                "shape {:?} does not match its {} bytes of data",
                e.shape, e.len
            )));
        }
        let bytes = match mapping {
            Some(map) => HostBytes::mapped(map.clone(), e.start, e.len),
            None => HostBytes::new(mmap.clone(), e.start, e.len),
        };
        let bytes = bytes.ok_or_else(|| bad("data out of range".into()))?;
        Ok(HostWeight {
            name: hf_name.to_string(),
            format: e.format,
            rows,
            cols,
            bytes,
        })
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}
