//! The architecture hyper-parameters of a Qwen3 / Qwen2 / Llama / Phi-3 model, read from a
//! Hugging Face `config.json` or from GGUF metadata. Unknown fields are ignored (configs grow new keys all the
//! time); missing required ones and features this engine does not implement are errors that name
//! the file and the key.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `Qwen3ForCausalLM`: per-head RMSNorm on q and k, no qkv bias by default.
    Qwen3,
    /// `Qwen2ForCausalLM` (Qwen2 / Qwen2.5): bias on q, k and v projections.
    Qwen2,
    /// `LlamaForCausalLM` (Llama 2, Llama 3.x): the plain decoder, optional `llama3` RoPE
    /// scaling. llama.cpp's GGUF files hold q and k permuted for its interleaved RoPE.
    Llama,
    /// `Phi3ForCausalLM` (Phi-3 mini): fused `qkv_proj` and `gate_up_proj`, optional
    /// `longrope` scaling. Its `sliding_window` (2047 in Phi-3-mini-4k) is not applied:
    /// attention sees the whole context, which is the same up to 2047 tokens.
    Phi3,
}

impl Arch {
    /// llama.cpp's architecture name (`general.architecture`), also `model_type`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen3 => "qwen3",
            Arch::Qwen2 => "qwen2",
            Arch::Llama => "llama",
            Arch::Phi3 => "phi3",
        }
    }

    /// The `architectures` entry of a Hugging Face `config.json`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Llama => "LlamaForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
        }
    }

    const ALL: [Arch; 4] = [Arch::Qwen3, Arch::Qwen2, Arch::Llama, Arch::Phi3];

    fn from_hf_class(class: &str) -> Option<Arch> {
        Self::ALL.into_iter().find(|a| a.hf_class() == class)
    }

    fn from_name(name: &str) -> Option<Arch> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// How rotary frequencies are scaled for long contexts. Every kind becomes per-pair inverse
/// frequencies (and a factor on cos and sin) at load: see [`ModelConfig::rope_inv_freq`].
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// `theta^(-2i/head_dim)`.
    None,
    /// Llama 3.1's `llama3`: low frequencies divided by `factor`, high ones kept, the band
    /// between interpolated (transformers' `_compute_llama3_parameters`).
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
    /// Phi-3's `longrope` (`su`): per-pair divisors of the frequencies, `long_factor` for a
    /// context past `original_max_position_embeddings`, `short_factor` within it, and
    /// `attention_factor` on cos and sin.
    LongRope {
        short_factor: Vec<f64>,
        long_factor: Vec<f64>,
        original_max_position_embeddings: usize,
        attention_factor: f64,
    },
    /// Per-pair divisors of the frequencies as llama.cpp stores `llama3` scaling in GGUF
    /// (`rope_freqs.weight`).
    Factors(Vec<f64>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: RopeScaling,
    pub max_position_embeddings: usize,
    /// `lm_head` shares the embedding matrix.
    pub tie_word_embeddings: bool,
}

impl ModelConfig {
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// The per-pair inverse frequencies `[head_dim / 2]` of scaled RoPE, `None` for the default
    /// `theta^(-2i/head_dim)`. `longrope` takes its long factors when the model's context
    /// (`max_position_embeddings`) is longer than the original one, its short factors otherwise:
    /// one set for every position, so the KV cache never mixes two rotations (llama.cpp picks
    /// by context size the same way; transformers switches per forward call on the longest
    /// position, which is the same choice whenever the prompt already passes the original
    /// context).
    pub fn rope_inv_freq(&self) -> Option<Vec<f32>> {
        let d = self.head_dim as f64;
        let base = |i: usize| self.rope_theta.powf(-((2 * i) as f64) / d);
        let half = self.head_dim / 2;
        let divided = |f: &[f64]| (0..half).map(|i| (base(i) / f[i]) as f32).collect();
        match &self.rope_scaling {
            RopeScaling::None => None,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let old = *original_max_position_embeddings as f64;
                let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
                Some(
                    (0..half)
                        .map(|i| {
                            let f = base(i);
                            let wavelen = 2.0 * std::f64::consts::PI / f;
                            let v = if wavelen < high_wavelen {
                                f
                            } else if wavelen > low_wavelen {
                                f / factor
                            } else {
                                let smooth = (old / wavelen - low_freq_factor)
                                    / (high_freq_factor - low_freq_factor);
                                (1.0 - smooth) * f / factor + smooth * f
                            };
                            v as f32
                        })
                        .collect(),
                )
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings,
                ..
            } => Some(
                if self.max_position_embeddings > *original_max_position_embeddings {
                    divided(long_factor)
                } else {
                    divided(short_factor)
                },
            ),
            RopeScaling::Factors(f) => Some(divided(f)),
        }
    }

    /// The factor on RoPE's cos and sin (`longrope`'s attention factor; 1 otherwise).
    pub fn rope_scale(&self) -> f32 {
        match &self.rope_scaling {
            RopeScaling::LongRope {
                attention_factor, ..
            } => *attention_factor as f32,
            _ => 1.0,
        }
    }

    /// Checks relations between fields that every forward relies on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let fail = |d: String| Err(ModelError::config(path, d));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ] {
            if v == 0 {
                return fail(format!("`{name}` must be positive"));
            }
        }
        if self.num_heads % self.num_kv_heads != 0 {
            return fail(format!(
                "`num_attention_heads` ({}) must be a multiple of `num_key_value_heads` ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim % 2 != 0 {
            return fail(format!(
                "`head_dim` ({}) must be even for rotary embeddings",
                self.head_dim
            ));
        }
        if !(self.rms_norm_eps > 0.0) || !(self.rope_theta > 0.0) {
            return fail("`rms_norm_eps` and `rope_theta` must be positive".into());
        }
        let half = self.head_dim / 2;
        match &self.rope_scaling {
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                ..
            } => {
                for (name, f) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                    if f.len() != half {
                        return fail(format!(
                            "rope scaling `{name}` has {} values, expected head_dim / 2 = {half}",
                            f.len()
                        ));
                    }
                    if !f.iter().copied().all(positive) {
                        return fail(format!("rope scaling `{name}` must be positive"));
                    }
                }
            }
            RopeScaling::Factors(f) if f.len() != half || !f.iter().copied().all(positive) => {
                return fail(format!(
                    "rope frequency factors: {} values, expected {half} positive ones",
                    f.len()
                ));
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } if !positive(*factor)
                || !positive(*low_freq_factor)
                || !positive(high_freq_factor - low_freq_factor)
                || *original_max_position_embeddings == 0 =>
            {
                return fail(
                    "rope scaling `llama3` needs factor > 0, 0 < low_freq_factor < \
                     high_freq_factor and original_max_position_embeddings > 0"
                        .into(),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        Self::from_hf_json(&text, path)
    }

    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text).map_err(|e| ModelError::config(path, e))?;
        let supported = Arch::ALL.map(Arch::hf_class).join(", ");
        let arch = match (raw.architectures.as_deref(), raw.model_type.as_deref()) {
            (Some([a, ..]), _) => Arch::from_hf_class(a).ok_or_else(|| {
                ModelError::config(
                    path,
                    format!("architecture `{a}` is not supported (supported: {supported})"),
                )
            })?,
            (_, Some(t)) if Arch::from_name(t).is_some() => {
                Arch::from_name(t).expect("checked just above")
            }
            (_, other) => {
                return Err(ModelError::config(
                    path,
                    format!("no supported `architectures` or `model_type` (got {other:?})"),
                ))
            }
        };
        let required = |name: &str, v: Option<usize>| {
            v.ok_or_else(|| ModelError::config(path, format!("missing required field `{name}`")))
        };
        let hidden_size = required("hidden_size", raw.hidden_size)?;
        let num_heads = required("num_attention_heads", raw.num_attention_heads)?;
        if raw.use_sliding_window == Some(true) {
            return Err(ModelError::config(
                path,
                "`use_sliding_window: true` is not supported",
            ));
        }
        if raw.mlp_bias == Some(true) {
            return Err(ModelError::config(
                path,
                "`mlp_bias: true` is not supported",
            ));
        }
        // transformers 5 moved rope settings into `rope_parameters`; older configs use
        // `rope_theta` + `rope_scaling`.
        let rope = raw
            .rope_parameters
            .as_ref()
            .or(raw.rope_scaling.as_ref())
            .filter(|v| !v.is_null());
        let partial = raw
            .partial_rotary_factor
            .or_else(|| rope.and_then(|r| r.get("partial_rotary_factor")?.as_f64()));
        if partial.is_some_and(|p| p != 1.0) {
            return Err(ModelError::config(
                path,
                format!(
                    "`partial_rotary_factor: {}` is not supported (only 1.0)",
                    partial.unwrap_or(1.0)
                ),
            ));
        }
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope.and_then(|r| r.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
        let max_position_embeddings = raw.max_position_embeddings.unwrap_or(32_768);
        let rope_scaling = match rope {
            None => RopeScaling::None,
            Some(r) => hf_rope_scaling(r, &raw, max_position_embeddings, path)?,
        };
        let cfg = ModelConfig {
            arch,
            vocab_size: required("vocab_size", raw.vocab_size)?,
            hidden_size,
            intermediate_size: required("intermediate_size", raw.intermediate_size)?,
            num_layers: required("num_hidden_layers", raw.num_hidden_layers)?,
            num_heads,
            num_kv_heads: raw.num_key_value_heads.unwrap_or(num_heads),
            head_dim: raw.head_dim.unwrap_or(if num_heads > 0 {
                hidden_size / num_heads
            } else {
                0
            }),
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta,
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads the `{arch}.*` keys of a GGUF file (llama.cpp's names).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let arch_name = gguf
            .get_str("general.architecture")
            .map_err(|e| ModelError::config(path, e))?;
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            ModelError::config(
                path,
                format!(
                    "GGUF architecture `{arch_name}` is not supported (supported: {})",
                    Arch::ALL.map(Arch::name).join(", ")
                ),
            )
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let uint = |k: &str| {
            gguf.get_u64(&key(k))
                .map(|v| v as usize)
                .map_err(|e| ModelError::config(path, e))
        };
        let hidden_size = uint("embedding_length")?;
        let num_heads = uint("attention.head_count")?;
        let head_dim = match gguf.get_u64(&key("attention.key_length")) {
            Ok(v) => v as usize,
            Err(_) => hidden_size / num_heads.max(1),
        };
        let vocab_size = match gguf.get_u64(&key("vocab_size")) {
            Ok(v) => v as usize,
            Err(_) => match gguf.tensor_info("token_embd.weight") {
                Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                _ => {
                    return Err(ModelError::config(
                        path,
                        "no vocabulary size (no token_embd.weight)",
                    ))
                }
            },
        };
        let max_position_embeddings = gguf
            .get_u64(&key("context_length"))
            .map(|v| v as usize)
            .unwrap_or(32_768);
        let rope_scaling = gguf_rope_scaling(gguf, arch_name, max_position_embeddings)?;
        let cfg = ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            intermediate_size: uint("feed_forward_length")?,
            num_layers: uint("block_count")?,
            num_heads,
            num_kv_heads: gguf
                .get_u64(&key("attention.head_count_kv"))
                .map(|v| v as usize)
                .unwrap_or(num_heads),
            head_dim,
            rms_norm_eps: gguf
                .get_f64(&key("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6) as f32,
            rope_theta: gguf.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling,
            max_position_embeddings,
            tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
        };
        cfg.validate(path)?;
        Ok(cfg)
    }
}

/// `v > 0` and not NaN.
fn positive(v: f64) -> bool {
    v > 0.0
}

/// RoPE scaling as llama.cpp's converter stores it: `llama3` as per-pair frequency divisors
/// in `rope_freqs.weight`; Phi-3's `longrope` as `rope_factors_long.weight` and
/// `rope_factors_short.weight` with `{arch}.rope.scaling.original_context_length` and
/// `{arch}.rope.scaling.attn_factor`.
fn gguf_rope_scaling(
    gguf: &GgufFile,
    arch_name: &str,
    max_position_embeddings: usize,
) -> Result<RopeScaling> {
    let path = gguf.path();
    let vector = |name: &str| -> Result<Option<Vec<f64>>> {
        if gguf.tensor_info(name).is_none() {
            return Ok(None);
        }
        let w = gguf.weight(name)?;
        let mut v = vec![0.0f32; w.rows * w.cols];
        kestrel_backend::cpu::quant::dequantize_row(w.format, w.bytes.as_slice(), &mut v);
        Ok(Some(v.into_iter().map(f64::from).collect()))
    };
    let long = vector("rope_factors_long.weight")?;
    let short = vector("rope_factors_short.weight")?;
    if let (Some(long_factor), Some(short_factor)) = (long.clone(), short.clone()) {
        let original = gguf
            .get_u64(&format!("{arch_name}.rope.scaling.original_context_length"))
            .map(|v| v as usize)
            .unwrap_or(max_position_embeddings);
        let attention_factor = gguf
            .get_f64(&format!("{arch_name}.rope.scaling.attn_factor"))
            .unwrap_or_else(|_| {
                longrope_attention_factor(
                    max_position_embeddings as f64 / original as f64,
                    original,
                )
            });
        return Ok(RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings: original,
            attention_factor,
        });
    }
    if long.is_some() || short.is_some() {
        return Err(ModelError::config(
            path,
            "GGUF has only one of `rope_factors_long.weight` and `rope_factors_short.weight`",
        ));
    }
    Ok(match vector("rope_freqs.weight")? {
        Some(f) => RopeScaling::Factors(f),
        None => RopeScaling::None,
    })
}

/// The `rope_scaling` (or transformers 5 `rope_parameters`) object of a `config.json`.
fn hf_rope_scaling(
    r: &Value,
    raw: &HfConfig,
    max_position_embeddings: usize,
    path: &Path,
) -> Result<RopeScaling> {
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f64> {
        r.get(k).and_then(Value::as_f64).ok_or_else(|| {
            ModelError::config(path, format!("rope scaling `{kind}` needs a number `{k}`"))
        })
    };
    let original = || -> Result<usize> {
        r.get("original_max_position_embeddings")
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .or(raw.original_max_position_embeddings)
            .ok_or_else(|| {
                ModelError::config(
                    path,
                    format!("rope scaling `{kind}` needs `original_max_position_embeddings`"),
                )
            })
    };
    let factors = |k: &str| -> Result<Vec<f64>> {
        r.get(k)
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                ModelError::config(
                    path,
                    format!("rope scaling `{kind}` needs a number array `{k}`"),
                )
            })
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: original()?,
        },
        "longrope" | "su" => {
            let original = original()?;
            // As transformers: `factor` when given, else the ratio of the two contexts, sets
            // the default attention factor.
            let factor = match r.get("factor").and_then(Value::as_f64) {
                Some(f) => f,
                None => max_position_embeddings as f64 / original as f64,
            };
            let attention_factor = match r.get("attention_factor").and_then(Value::as_f64) {
                Some(a) => a,
                None => longrope_attention_factor(factor, original),
            };
            RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            }
        }
        other => {
            return Err(ModelError::config(
                path,
                format!("rope scaling `{other}` is not supported (default, llama3, longrope)"),
            ))
        }
    })
}

/// LongRoPE's attention factor for a context `factor` times the original one:
/// `sqrt(1 + ln(factor) / ln(original))`, 1 when not extended.
fn longrope_attention_factor(factor: f64, original: usize) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / (original as f64).ln()).sqrt()
    }
}

/// The fields of `config.json` this engine reads; everything else is ignored.
#[derive(Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    max_position_embeddings: Option<usize>,
    /// Phi-3 / Llama 3.1: the context the model was pretrained with, outside `rope_scaling`.
    original_max_position_embeddings: Option<usize>,
    partial_rotary_factor: Option<f64>,
    mlp_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    use_sliding_window: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN3_1_7B: &str = r#"{
      "architectures": ["Qwen3ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
      "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
      "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
      "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
      "rms_norm_eps": 1e-06, "rope_scaling": null, "rope_theta": 1000000, "sliding_window": null,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.51.0",
      "use_cache": true, "use_sliding_window": false, "vocab_size": 151936, "some_future_key": {"x": 1}
    }"#;

    #[test]
    fn reads_the_real_qwen3_1_7b_config_and_ignores_unknown_fields() {
        let c = ModelConfig::from_hf_json(QWEN3_1_7B, Path::new("config.json")).unwrap();
        assert_eq!(c.arch, Arch::Qwen3);
        assert_eq!(
            (
                c.hidden_size,
                c.num_layers,
                c.num_heads,
                c.num_kv_heads,
                c.head_dim
            ),
            (2048, 28, 16, 8, 128)
        );
        assert_eq!(c.rope_theta, 1e6);
        assert!(c.tie_word_embeddings);
    }

    /// Qwen1.5-1.8B's `config.json` (Qwen2 architecture; no `head_dim`, a `sliding_window` that
    /// is off), and the shapes `kestrel synth --arch qwen2 --size 1.8b` writes.
    const QWEN1_5_1_8B: &str = r#"{
      "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
      "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
      "initializer_range": 0.02, "intermediate_size": 5504, "max_position_embeddings": 32768,
      "max_window_layers": 21, "model_type": "qwen2", "num_attention_heads": 16,
      "num_hidden_layers": 24, "num_key_value_heads": 16, "rms_norm_eps": 1e-06,
      "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": false,
      "torch_dtype": "bfloat16", "transformers_version": "4.37.0", "use_cache": true,
      "use_sliding_window": false, "vocab_size": 151936
    }"#;

    #[test]
    fn reads_the_real_qwen1_5_1_8b_config_as_qwen2() {
        let c = ModelConfig::from_hf_json(QWEN1_5_1_8B, Path::new("config.json")).unwrap();
        assert_eq!(c.arch, Arch::Qwen2);
        assert_eq!(c.head_dim, 128, "hidden_size / num_attention_heads");
        assert!(!c.tie_word_embeddings);
        assert_eq!(c, crate::synth::qwen2_config("1.8b").unwrap());
        // What synth writes reads back the same.
        let written = crate::synth::hf_config_json(&c, kestrel_backend::WeightFormat::BF16);
        let back =
            ModelConfig::from_hf_json(&written.to_string(), Path::new("config.json")).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn transformers_5_rope_parameters_are_read() {
        let text = QWEN3_1_7B.replace(
            r#""rope_theta": 1000000,"#,
            r#""rope_parameters": {"rope_theta": 5000.0, "rope_type": "default"},"#,
        );
        let c = ModelConfig::from_hf_json(&text, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 5000.0);
    }

    #[test]
    fn missing_required_field_is_named() {
        let text = QWEN3_1_7B.replace(r#""hidden_size": 2048,"#, "");
        let e = ModelConfig::from_hf_json(&text, Path::new("/m/config.json"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "/m/config.json: missing required field `hidden_size`");
    }

    #[test]
    fn unsupported_architecture_and_rope_scaling_are_errors() {
        let e = ModelConfig::from_hf_json(
            &QWEN3_1_7B.replace("Qwen3ForCausalLM", "GemmaForCausalLM"),
            Path::new("c.json"),
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("`GemmaForCausalLM` is not supported"));
        let yarn = QWEN3_1_7B.replace(
            r#""rope_scaling": null"#,
            r#""rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#,
        );
        let e = ModelConfig::from_hf_json(&yarn, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope scaling `yarn` is not supported"), "{e}");
    }

    /// Llama-3.2-1B-Instruct's `config.json`.
    const LLAMA_3_2_1B: &str = r#"{
      "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
      "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "head_dim": 64,
      "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02,
      "intermediate_size": 8192, "max_position_embeddings": 131072, "mlp_bias": false,
      "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 16,
      "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3"},
      "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
      "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256
    }"#;

    #[test]
    fn reads_the_real_llama_3_2_1b_config_with_llama3_scaling() {
        let c = ModelConfig::from_hf_json(LLAMA_3_2_1B, Path::new("config.json")).unwrap();
        assert_eq!(c, crate::synth::llama_config("1b").unwrap());
        let f = c.rope_inv_freq().unwrap();
        assert_eq!(f.len(), 32);
        // High frequencies are kept, low ones divided by the factor, the band between smoothed.
        let base = |i: usize| 500_000f64.powf(-((2 * i) as f64) / 64.0) as f32;
        assert_eq!(f[0], base(0));
        assert!((f[31] - base(31) / 32.0).abs() <= 1e-6 * base(31));
        assert!(
            f[16] < base(16) && f[16] > base(16) / 32.0,
            "{} {}",
            f[16],
            base(16)
        );
        assert_eq!(c.rope_scale(), 1.0);
        let written = crate::synth::hf_config_json(&c, kestrel_backend::WeightFormat::BF16);
        let back =
            ModelConfig::from_hf_json(&written.to_string(), Path::new("config.json")).unwrap();
        assert_eq!(back, c);
    }

    /// Phi-3-mini-128k's `config.json` shape, factors shortened to the head size 96 / 2.
    fn phi3_128k(kind: &str) -> String {
        let short: Vec<String> = (0..48)
            .map(|i| format!("{}", 1.0 + i as f64 / 100.0))
            .collect();
        let long: Vec<String> = (0..48).map(|i| format!("{}", 1.0 + i as f64)).collect();
        format!(
            r#"{{
          "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072,
          "intermediate_size": 8192, "num_attention_heads": 32, "num_hidden_layers": 32,
          "num_key_value_heads": 32, "max_position_embeddings": 131072,
          "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-05,
          "rope_theta": 10000.0, "sliding_window": 262144, "tie_word_embeddings": false,
          "vocab_size": 32064,
          "rope_scaling": {{"type": "{kind}", "short_factor": [{}], "long_factor": [{}]}}
        }}"#,
            short.join(", "),
            long.join(", ")
        )
    }

    #[test]
    fn reads_phi3_longrope_and_picks_factors_by_context() {
        for kind in ["longrope", "su"] {
            let c = ModelConfig::from_hf_json(&phi3_128k(kind), Path::new("c.json")).unwrap();
            assert_eq!((c.arch, c.head_dim), (Arch::Phi3, 96));
            let want = (1.0 + (32f64).ln() / (4096f64).ln()).sqrt() as f32;
            assert_eq!(c.rope_scale(), want);
            let base = |i: usize| 10_000f64.powf(-((2 * i) as f64) / 96.0);
            // A 128k context takes the long factors ...
            let f = c.rope_inv_freq().unwrap();
            assert_eq!(f[3], (base(3) / 4.0) as f32);
            // ... a context within the original one the short factors.
            let short = ModelConfig {
                max_position_embeddings: 4096,
                ..c.clone()
            };
            assert_eq!(short.rope_inv_freq().unwrap()[3], (base(3) / 1.03) as f32);
        }
        let bad = phi3_128k("longrope").replace(r#""short_factor": [1,"#, r#""short_factor": ["#);
        let e = ModelConfig::from_hf_json(&bad, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`short_factor` has 47 values, expected head_dim / 2 = 48"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_llama_and_phi3_features_are_named() {
        let cases = [
            (
                LLAMA_3_2_1B.replace("\"llama3\"", "\"dynamic\""),
                "rope scaling `dynamic` is not supported",
            ),
            (
                LLAMA_3_2_1B.replace("\"low_freq_factor\": 1.0,", ""),
                "`llama3` needs a number `low_freq_factor`",
            ),
            (
                LLAMA_3_2_1B.replace("\"mlp_bias\": false", "\"mlp_bias\": true"),
                "`mlp_bias: true` is not supported",
            ),
            (
                phi3_128k("longrope").replace(
                    "\"vocab_size\"",
                    "\"partial_rotary_factor\": 0.75, \"vocab_size\"",
                ),
                "`partial_rotary_factor: 0.75` is not supported",
            ),
            (
                phi3_128k("longrope").replace("\"original_max_position_embeddings\": 4096,", ""),
                "`longrope` needs `original_max_position_embeddings`",
            ),
        ];
        for (text, want) in cases {
            let e = ModelConfig::from_hf_json(&text, Path::new("c.json"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn wrong_types_and_bad_relations_are_errors() {
        let e = ModelConfig::from_hf_json(
            &QWEN3_1_7B.replace(r#""hidden_size": 2048"#, r#""hidden_size": "big""#),
            Path::new("c.json"),
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .starts_with("c.json: invalid type"));
        let e = ModelConfig::from_hf_json(
            &QWEN3_1_7B.replace(r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 3"#),
            Path::new("c.json"),
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("multiple of `num_key_value_heads`"));
    }
}
