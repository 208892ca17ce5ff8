//! Where a model comes from, and the one interface the forward's loader reads weights through.
//!
//! Weights are always asked for by their Hugging Face checkpoint name
//! (`model.layers.{i}.self_attn.q_proj.weight`); the GGUF source maps those to llama.cpp's names
//! (`blk.{i}.attn_q.weight`), so the model definition exists once. llama.cpp's converter
//! permutes the rows of Llama's q and k (weights and biases) for its interleaved ("normal")
//! RoPE; the GGUF source puts them back in the checkpoint's order, for the NeoX-layout RoPE
//! every architecture here uses ([`llama_permute_rows`] and its inverse).

use std::path::{Path, PathBuf};

use kestrel_backend::{HostBytes, HostWeight, KvDtype, WeightFormat};

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::safetensors_source::SafetensorsSource;

/// Read access to a checkpoint's tensors by Hugging Face name.
pub trait WeightSource: Sync {
    fn contains(&self, hf_name: &str) -> bool;
    fn get(&self, hf_name: &str) -> Result<HostWeight>;
    /// For error messages: the file or directory.
    fn describe(&self) -> String;
}

/// A resolved local model: a Hugging Face-format directory or a single GGUF file.
pub enum ModelFiles {
    HfDir {
        dir: PathBuf,
        config: ModelConfig,
        weights: SafetensorsSource,
    },
    Gguf {
        config: ModelConfig,
        gguf: GgufFile,
    },
}

impl ModelFiles {
    /// Opens `path`: a directory with `config.json` + safetensors, or a `.gguf` file.
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| ModelError::file(path, e))?;
        if meta.is_dir() {
            let config = ModelConfig::from_hf_file(&path.join("config.json"))?;
            let weights = SafetensorsSource::open_dir(path)?;
            Ok(ModelFiles::HfDir {
                dir: path.to_path_buf(),
                config,
                weights,
            })
        } else {
            let gguf = GgufFile::open(path)?;
            let config = ModelConfig::from_gguf(&gguf)?;
            Ok(ModelFiles::Gguf { config, gguf })
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match self {
            ModelFiles::HfDir { config, .. } | ModelFiles::Gguf { config, .. } => config,
        }
    }

    /// The KV cache type that matches the checkpoint, as vLLM's `--kv-cache-dtype auto` and
    /// llama.cpp's default do: f16 for GGUF and 16-bit checkpoints, f32 for f32 checkpoints.
    pub fn default_kv_dtype(&self) -> KvDtype {
        match self {
            ModelFiles::Gguf { .. } => KvDtype::F16,
            ModelFiles::HfDir { weights, .. } => {
                match weights.get("model.embed_tokens.weight").map(|w| w.format) {
                    Ok(WeightFormat::F32) => KvDtype::F32,
                    _ => KvDtype::F16,
                }
            }
        }
    }

    pub fn weights(&self) -> &dyn WeightSource {
        match self {
            ModelFiles::HfDir { weights, .. } => weights,
            ModelFiles::Gguf { gguf, .. } => gguf,
        }
    }
}

/// llama.cpp's tensor name for a Hugging Face Qwen2 / Qwen3 / Llama / Phi-3 weight name.
pub fn gguf_name(hf_name: &str) -> Option<String> {
    let (stem, suffix) = hf_name.rsplit_once('.')?;
    let base = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let rest = stem.strip_prefix("model.layers.")?;
            let (idx, part) = rest.split_once('.')?;
            let part = match part {
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "self_attn.qkv_proj" => "attn_qkv",
                "self_attn.q_norm" => "attn_q_norm",
                "self_attn.k_norm" => "attn_k_norm",
                "input_layernorm" => "attn_norm",
                "post_attention_layernorm" => "ffn_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                // Phi-3's fused gate and up, as llama.cpp's converter names it.
                "mlp.gate_up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                _ => return None,
            };
            format!("blk.{idx}.{part}")
        }
    };
    Some(format!("{base}.{suffix}"))
}

/// For a Llama checkpoint, the number of heads whose rows llama.cpp's converter permutes in
/// tensor `hf_name` (`q_proj` by the attention heads, `k_proj` by the KV heads), else `None`.
pub fn llama_permuted_heads(c: &ModelConfig, hf_name: &str) -> Option<usize> {
    (c.arch == Arch::Llama)
        .then(|| permuted_heads(hf_name, c.num_heads, c.num_kv_heads))
        .flatten()
}

fn permuted_heads(hf_name: &str, num_heads: usize, num_kv_heads: usize) -> Option<usize> {
    let stem = hf_name
        .strip_suffix(".weight")
        .or_else(|| hf_name.strip_suffix(".bias"))?;
    if stem.ends_with("self_attn.q_proj") {
        Some(num_heads)
    } else if stem.ends_with("self_attn.k_proj") {
        Some(num_kv_heads)
    } else {
        None
    }
}

/// Reorders the `units` (rows of a matrix, elements of a bias) of `bytes` head by head as
/// llama.cpp's `LlamaModel.permute` does (`to_gguf`) or back (`!to_gguf`): within a head of
/// `d` units, checkpoint unit `s * d/2 + i` (half `s`, pair `i`) is GGUF unit `2 * i + s`.
pub fn llama_permute_rows(bytes: &[u8], units: usize, heads: usize, to_gguf: bool) -> Vec<u8> {
    let unit = bytes.len() / units;
    let d = units / heads;
    let half = d / 2;
    let mut out = vec![0u8; bytes.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..half {
                let hf = h * d + s * half + i;
                let gguf = h * d + 2 * i + s;
                let (from, to) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[to * unit..(to + 1) * unit]
                    .copy_from_slice(&bytes[from * unit..(from + 1) * unit]);
            }
        }
    }
    out
}

/// `w` with the units of `heads` rotary heads permuted (see [`llama_permute_rows`]).
pub fn llama_permute(
    w: HostWeight,
    heads: usize,
    to_gguf: bool,
    source: &str,
) -> Result<HostWeight> {
    let units = if w.rows == 1 { w.cols } else { w.rows };
    if heads == 0 || units % (2 * heads) != 0 || (w.rows == 1 && w.format.block_len() != 1) {
        return Err(ModelError::BadWeight {
            name: w.name.clone(),
            source_desc: source.to_string(),
            detail: format!(
                "[{}, {}] {} cannot be split into {heads} rotary heads",
                w.rows,
                w.cols,
                w.format.name()
            ),
        });
    }
    let bytes = llama_permute_rows(w.bytes.as_slice(), units, heads, to_gguf);
    Ok(HostWeight {
        bytes: HostBytes::from_vec(bytes),
        ..w
    })
}

impl WeightSource for GgufFile {
    fn contains(&self, hf_name: &str) -> bool {
        gguf_name(hf_name).is_some_and(|n| self.tensor_info(&n).is_some())
    }
    fn get(&self, hf_name: &str) -> Result<HostWeight> {
        let name = gguf_name(hf_name).ok_or_else(|| ModelError::MissingWeight {
            name: hf_name.to_string(),
            source_desc: self.describe(),
        })?;
        let w = self.weight(&name)?;
        // Llama's q and k go back to the checkpoint's row order (see the module header).
        if self.get_str("general.architecture") != Ok(Arch::Llama.name()) {
            return Ok(w);
        }
        let count = |k: &str| self.get_u64(&format!("llama.attention.{k}")).ok();
        let num_heads = count("head_count").unwrap_or(0) as usize;
        let num_kv_heads = count("head_count_kv").map_or(num_heads, |v| v as usize);
        match permuted_heads(hf_name, num_heads, num_kv_heads) {
            Some(heads) => llama_permute(w, heads, false, &self.describe()),
            None => Ok(w),
        }
    }
    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::{gguf_name, llama_permute_rows};

    /// llama.cpp's `LlamaModel.permute` on rows 0..16 of one matrix with 2 heads of 8:
    /// `np.arange(16).reshape(2, 2, 4).swapaxes(1, 2).reshape(16)`.
    #[test]
    fn llama_permutation_is_llama_cpps_and_inverts() {
        let rows: Vec<u8> = (0..16).collect();
        let gguf = llama_permute_rows(&rows, 16, 2, true);
        assert_eq!(gguf, [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
        assert_eq!(llama_permute_rows(&gguf, 16, 2, false), rows);
        // Units of several bytes (a row) move whole.
        let wide: Vec<u8> = (0..8u8).flat_map(|r| [r, 100 + r]).collect();
        let back = llama_permute_rows(&llama_permute_rows(&wide, 8, 2, true), 8, 2, false);
        assert_eq!(back, wide);
    }

    #[test]
    fn maps_hf_names_to_llama_cpp_names() {
        assert_eq!(
            gguf_name("model.embed_tokens.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(
            gguf_name("model.layers.11.self_attn.k_norm.weight").unwrap(),
            "blk.11.attn_k_norm.weight"
        );
        assert_eq!(
            gguf_name("model.layers.0.self_attn.q_proj.bias").unwrap(),
            "blk.0.attn_q.bias"
        );
        assert_eq!(
            gguf_name("model.layers.3.mlp.down_proj.weight").unwrap(),
            "blk.3.ffn_down.weight"
        );
        assert_eq!(gguf_name("lm_head.weight").unwrap(), "output.weight");
        assert!(gguf_name("model.layers.0.unknown.weight").is_none());
    }
}

/// Bytes of a `[rows, cols]` tensor in `format`, or `None` when `cols` is not a whole number
/// of blocks or the size overflows (a hostile header must not make the size arithmetic panic).
pub(crate) fn checked_tensor_bytes(
    format: WeightFormat,
    rows: usize,
    cols: usize,
) -> Option<usize> {
    let blocks = cols / format.block_len();
    if blocks * format.block_len() != cols {
        return None;
    }
    blocks.checked_mul(format.block_bytes())?.checked_mul(rows)
}

/// Maps a model file read-only with its pages populated up front (`MAP_POPULATE` on Linux,
/// as llama.cpp maps GGUF files): the first forward then reads weights without taking a
/// page fault per page, and load time says what loading costs.
pub(crate) fn map_model_file(path: &Path) -> Result<memmap2::Mmap> {
    let file = std::fs::File::open(path).map_err(|e| ModelError::file(path, e))?;
    // SAFETY: the mapping is read-only; model files are not expected to change while served
    // (the same assumption llama.cpp and safetensors make).
    unsafe { memmap2::MmapOptions::new().populate().map(&file) }
        .map_err(|e| ModelError::file(path, e))
}
