//! The architecture hyper-parameters of a Qwen3 / Qwen2 model, read from a Hugging Face
//! `config.json` or from GGUF metadata. Unknown fields are ignored (configs grow new keys all the
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
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen3 => "qwen3",
            Arch::Qwen2 => "qwen2",
        }
    }
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
        Ok(())
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::file(path, e))?;
        Self::from_hf_json(&text, path)
    }

    pub fn from_hf_json(text: &str, path: &Path) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text).map_err(|e| ModelError::config(path, e))?;
        let arch = match (raw.architectures.as_deref(), raw.model_type.as_deref()) {
            (Some([a, ..]), _) if a == "Qwen3ForCausalLM" => Arch::Qwen3,
            (Some([a, ..]), _) if a == "Qwen2ForCausalLM" => Arch::Qwen2,
            (Some([a, ..]), _) => {
                return Err(ModelError::config(
                    path,
                    format!("architecture `{a}` is not supported (supported: Qwen3ForCausalLM, Qwen2ForCausalLM)"),
                ))
            }
            (_, Some("qwen3")) => Arch::Qwen3,
            (_, Some("qwen2")) => Arch::Qwen2,
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
        // transformers 5 moved rope settings into `rope_parameters`; older configs use
        // `rope_theta` + `rope_scaling`.
        let rope = raw
            .rope_parameters
            .as_ref()
            .or(raw.rope_scaling.as_ref())
            .filter(|v| !v.is_null());
        if let Some(kind) = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(Value::as_str)
        {
            if kind != "default" {
                return Err(ModelError::config(
                    path,
                    format!("rope scaling `{kind}` is not supported"),
                ));
            }
        }
        let rope_theta = raw
            .rope_theta
            .or_else(|| {
                rope.and_then(|r| r.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10_000.0);
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
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(32_768),
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
        let arch = match arch_name {
            "qwen3" => Arch::Qwen3,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ModelError::config(
                    path,
                    format!(
                        "GGUF architecture `{other}` is not supported (supported: qwen3, qwen2)"
                    ),
                ))
            }
        };
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
            max_position_embeddings: gguf
                .get_u64(&key("context_length"))
                .map(|v| v as usize)
                .unwrap_or(32_768),
            tie_word_embeddings: gguf.tensor_info("output.weight").is_none(),
        };
        cfg.validate(path)?;
        Ok(cfg)
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
            &QWEN3_1_7B.replace("Qwen3ForCausalLM", "LlamaForCausalLM"),
            Path::new("c.json"),
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("`LlamaForCausalLM` is not supported"));
        let yarn = QWEN3_1_7B.replace(
            r#""rope_scaling": null"#,
            r#""rope_scaling": {"rope_type": "yarn", "factor": 4.0}"#,
        );
        let e = ModelConfig::from_hf_json(&yarn, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope scaling `yarn` is not supported"), "{e}");
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
