//! The model's `generation_config.json` (Hugging Face) as defaults for what a request omits,
//! as vLLM does with `--generation-config auto`: only the sampling fields vLLM takes from it
//! (`temperature`, `top_k`, `top_p`, `min_p`, `repetition_penalty`, `max_new_tokens`) plus the
//! `eos_token_id` / `bos_token_id` the engine needs. `do_sample` is ignored, as vLLM ignores it:
//! a file that sets a temperature means it. A missing file gives plain defaults; a file that is
//! present but unreadable or not JSON is an error, never silently ignored.

use std::path::Path;

use serde::Deserialize;

use kestrel_backend::SamplingParams;

type TokenId = u32;

#[derive(Debug, thiserror::Error)]
pub enum GenerationConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid generation config {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
}

/// Defaults from `generation_config.json`; `None` where the file does not say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationDefaults {
    pub temperature: Option<f32>,
    /// `0` in a file means "disabled", as in `transformers`.
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
    /// Every id that ends generation (the file allows one id or a list). Empty when unknown.
    pub eos_token_ids: Vec<TokenId>,
    pub bos_token_id: Option<TokenId>,
}

/// `eos_token_id` is an int or a list of ints in HF files.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(TokenId),
    Many(Vec<TokenId>),
}

#[derive(Deserialize)]
struct RawGenerationConfig {
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: Option<f32>,
    max_new_tokens: Option<usize>,
    eos_token_id: Option<OneOrMany>,
    bos_token_id: Option<TokenId>,
}

impl GenerationDefaults {
    /// Reads `path` (usually `<model dir>/generation_config.json`); a missing file gives
    /// [`GenerationDefaults::default`].
    pub fn from_file(path: &Path) -> Result<Self, GenerationConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(GenerationConfigError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Self::from_json_str(&text).map_err(|source| GenerationConfigError::Json {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn from_json_str(text: &str) -> Result<Self, serde_json::Error> {
        let raw: RawGenerationConfig = serde_json::from_str(text)?;
        Ok(Self {
            temperature: raw.temperature,
            // transformers treats top_k <= 0 as "no top-k".
            top_k: raw.top_k.map(|k| usize::try_from(k).unwrap_or(0)),
            top_p: raw.top_p,
            min_p: raw.min_p,
            repetition_penalty: raw.repetition_penalty,
            max_new_tokens: raw.max_new_tokens,
            eos_token_ids: match raw.eos_token_id {
                None => Vec::new(),
                Some(OneOrMany::One(id)) => vec![id],
                Some(OneOrMany::Many(ids)) => ids,
            },
            bos_token_id: raw.bos_token_id,
        })
    }

    /// The parameters a request starts from before its own fields overwrite them.
    pub fn sampling_params(&self) -> SamplingParams {
        let plain = SamplingParams::default();
        SamplingParams {
            temperature: self.temperature.unwrap_or(plain.temperature),
            top_k: self.top_k.unwrap_or(plain.top_k),
            top_p: self.top_p.unwrap_or(plain.top_p),
            min_p: self.min_p.unwrap_or(plain.min_p),
            repetition_penalty: self.repetition_penalty.unwrap_or(plain.repetition_penalty),
            ..plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Qwen/Qwen3-1.7B`'s file.
    const QWEN3: &str = r#"{
      "bos_token_id": 151643,
      "do_sample": true,
      "eos_token_id": [151645, 151643],
      "pad_token_id": 151643,
      "temperature": 0.6,
      "top_k": 20,
      "top_p": 0.95,
      "transformers_version": "4.51.0"
    }"#;

    #[test]
    fn reads_qwen3_defaults() {
        let d = GenerationDefaults::from_json_str(QWEN3).expect("valid");
        assert_eq!(d.eos_token_ids, [151_645, 151_643]);
        assert_eq!(d.bos_token_id, Some(151_643));
        let p = d.sampling_params();
        assert_eq!(
            (
                p.temperature,
                p.top_k,
                p.top_p,
                p.min_p,
                p.repetition_penalty
            ),
            (0.6, 20, 0.95, 0.0, 1.0)
        );
        p.validate().expect("file defaults are valid");
    }

    #[test]
    fn single_eos_id_and_other_fields() {
        let d = GenerationDefaults::from_json_str(
            r#"{"eos_token_id": 2, "repetition_penalty": 1.05, "min_p": 0.1, "top_k": 0, "max_new_tokens": 512}"#,
        )
        .expect("valid");
        assert_eq!(d.eos_token_ids, [2]);
        assert_eq!(
            (d.repetition_penalty, d.min_p, d.top_k, d.max_new_tokens),
            (Some(1.05), Some(0.1), Some(0), Some(512))
        );
        assert_eq!(
            d.sampling_params().temperature,
            1.0,
            "omitted fields keep plain defaults"
        );
    }

    #[test]
    fn missing_file_is_plain_defaults_and_bad_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("kestrel-genconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("generation_config.json");
        let _ = std::fs::remove_file(&missing);
        assert_eq!(
            GenerationDefaults::from_file(&missing).expect("missing is fine"),
            GenerationDefaults::default()
        );
        assert_eq!(
            GenerationDefaults::default().sampling_params(),
            SamplingParams::default()
        );
        std::fs::write(&missing, "{not json").expect("write");
        let err = GenerationDefaults::from_file(&missing).expect_err("bad JSON must fail");
        assert!(err.to_string().contains("generation_config.json"), "{err}");
        std::fs::write(&missing, QWEN3).expect("write");
        assert_eq!(
            GenerationDefaults::from_file(&missing)
                .expect("valid")
                .top_k,
            Some(20)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
