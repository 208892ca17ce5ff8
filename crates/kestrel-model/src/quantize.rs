//! Quantization of float checkpoints: in place at load (`--quantization q8_0|q4_k`, as vLLM's
//! in-situ quantization) and written out as GGUF (`kestrel quantize`).
//!
//! Every matrix (the attention and MLP projections, the token embedding and an untied LM head)
//! is re-encoded with ggml's reference quantizers (`quantize_row_*_ref`, no importance matrix),
//! so a file written here loads in llama.cpp and gives the same bytes as quantizing at load.
//! Norms and biases keep their precision (GGUF stores them as f32, as llama.cpp's converter
//! does). Matrices whose rows are not a whole number of quantization blocks are left as they
//! are, as `llama-quantize` falls back for such tensors.

use std::path::Path;

use kestrel_backend::cpu::quant::{dequantize_row, quantize_row};
use kestrel_backend::{HostBytes, HostWeight, WeightFormat};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::gguf_writer::{write_gguf, TensorSpec};
use crate::source::{gguf_name, llama_permute, llama_permuted_heads, ModelFiles, WeightSource};
use crate::synth::{gguf_metadata, gguf_rope_tensors, tensor_shapes};

/// The formats `--quantization` and `kestrel quantize --type` accept, by their llama.cpp names.
pub fn parse_target(name: &str) -> Option<WeightFormat> {
    match name.to_ascii_lowercase().as_str() {
        "q8_0" => Some(WeightFormat::Q8_0),
        "q4_k" => Some(WeightFormat::Q4_K),
        _ => None,
    }
}

/// llama.cpp's `general.file_type` (`LLAMA_FTYPE_MOSTLY_*`) for a file whose matrices are all
/// `target`: Q8_0 → 7, Q4_K → 14 (`Q4_K_S`, every matrix Q4_K).
fn file_type(target: WeightFormat) -> u32 {
    match target {
        WeightFormat::Q4_K => 14,
        _ => 7,
    }
}

/// A [`WeightSource`] whose float matrices come back quantized to `target`.
pub struct QuantizedSource<'a> {
    inner: &'a dyn WeightSource,
    target: WeightFormat,
}

impl<'a> QuantizedSource<'a> {
    /// `target` must be a quantized format (see [`parse_target`]).
    pub fn new(inner: &'a dyn WeightSource, target: WeightFormat) -> Self {
        assert!(target.block_len() > 1, "quantize to a block format");
        Self { inner, target }
    }

    /// Whether `w` (named `hf_name`) is a float matrix this quantizes.
    fn quantizes(&self, hf_name: &str, w: &HostWeight) -> bool {
        hf_name.ends_with(".weight")
            && !hf_name.contains("norm")
            && w.rows > 1
            && matches!(
                w.format,
                WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16
            )
            && w.cols % self.target.block_len() == 0
    }
}

impl WeightSource for QuantizedSource<'_> {
    fn contains(&self, hf_name: &str) -> bool {
        self.inner.contains(hf_name)
    }

    fn get(&self, hf_name: &str) -> Result<HostWeight> {
        let w = self.inner.get(hf_name)?;
        if !self.quantizes(hf_name, &w) {
            return Ok(w);
        }
        Ok(quantize_weight(&w, self.target))
    }

    fn describe(&self) -> String {
        format!(
            "{} quantized to {}",
            self.inner.describe(),
            self.target.name()
        )
    }
}

/// `w` (a float matrix) re-encoded row by row in `target`, rows in parallel.
fn quantize_weight(w: &HostWeight, target: WeightFormat) -> HostWeight {
    let (src_rb, dst_rb) = (w.format.row_bytes(w.cols), target.row_bytes(w.cols));
    let src = w.bytes.as_slice();
    let mut out = vec![0u8; w.rows * dst_rb];
    out.par_chunks_mut(dst_rb)
        .zip(src.par_chunks(src_rb))
        .for_each_init(
            || vec![0.0f32; w.cols],
            |row, (dst, s)| {
                dequantize_row(w.format, s, row);
                quantize_row(target, row, dst);
            },
        );
    HostWeight {
        name: w.name.clone(),
        format: target,
        rows: w.rows,
        cols: w.cols,
        bytes: HostBytes::from_vec(out),
    }
}

/// Writes the checkpoint in `files` (a Hugging Face directory) as a GGUF file with its matrices
/// in `target`, llama.cpp's tensor names and metadata, and the directory's tokenizer when it
/// has one.
pub fn write_quantized_gguf(files: &ModelFiles, target: WeightFormat, out: &Path) -> Result<()> {
    write_gguf_from_hf(files, Some(target), out)
}

/// Converts the checkpoint in `files` (a Hugging Face directory) to GGUF as llama.cpp's
/// `convert_hf_to_gguf.py` does: llama.cpp's tensor names and metadata, vectors in f32, Llama's
/// q and k rows permuted for llama.cpp's RoPE, scaled RoPE as its factor tensors, and the
/// matrices quantized to `target` (or kept in the checkpoint's float type for `None`).
pub fn write_gguf_from_hf(
    files: &ModelFiles,
    target: Option<WeightFormat>,
    out: &Path,
) -> Result<()> {
    let ModelFiles::HfDir { dir, config, .. } = files else {
        return Err(ModelError::file(
            out,
            "kestrel quantize reads a Hugging Face directory (safetensors); \
             requantize a GGUF file with llama.cpp's llama-quantize",
        ));
    };
    let tokenizer = dir.join("tokenizer.json").exists().then_some(dir.as_path());
    let (ftype, name) = match target {
        Some(t) => (file_type(t), format!("{} {}", dir.display(), t.name())),
        None => {
            let embed = files.weights().get("model.embed_tokens.weight")?.format;
            let ftype = match embed {
                WeightFormat::F32 => 0,
                WeightFormat::BF16 => 32,
                _ => 1,
            };
            (ftype, dir.display().to_string())
        }
    };
    let md = gguf_metadata(config, ftype, &name, tokenizer)?;
    let quantized = target.map(|t| QuantizedSource::new(files.weights(), t));
    let source: &dyn WeightSource = match &quantized {
        Some(q) => q,
        None => files.weights(),
    };
    let shapes = tensor_shapes(config);
    // Fetch (and quantize) every tensor first so errors surface before the file is written.
    let mut weights = Vec::with_capacity(shapes.len());
    let mut specs = Vec::with_capacity(shapes.len());
    for (hf_name, rows, cols) in &shapes {
        let mut w = source.get(hf_name)?;
        if rows.is_none() && w.format != WeightFormat::F32 {
            // Vectors (norms, biases) are f32 in GGUF files.
            let mut v = vec![0.0f32; w.cols * w.rows];
            dequantize_row(w.format, w.bytes.as_slice(), &mut v);
            w = HostWeight {
                format: WeightFormat::F32,
                bytes: HostBytes::from_vec(bytemuck::cast_slice(&v).to_vec()),
                ..w
            };
        }
        if let Some(heads) = llama_permuted_heads(config, hf_name) {
            w = llama_permute(w, heads, true, &source.describe())?;
        }
        let gname = gguf_name(hf_name).expect("every checkpoint tensor has a GGUF name");
        specs.push(TensorSpec::new(gname, w.format, *rows, *cols));
        weights.push(w.bytes);
    }
    for (gname, values) in gguf_rope_tensors(config) {
        specs.push(TensorSpec::new(
            gname,
            WeightFormat::F32,
            None,
            values.len(),
        ));
        weights.push(HostBytes::from_vec(bytemuck::cast_slice(&values).to_vec()));
    }
    write_gguf(out, &md, &specs, |i, buf| {
        buf.copy_from_slice(weights[i].as_slice())
    })
}
