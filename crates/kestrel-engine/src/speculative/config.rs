//! `--speculative-config`: vLLM's JSON object, with vLLM's field names and defaults for the
//! `ngram` method (prompt lookup). Every problem is an error naming the field, at start-up.
//! The draft-model, EAGLE and MTP methods are recognised and refused as not supported yet.

use serde_json::{Map, Value};

/// Most draft tokens per step a sequence may propose.
pub const MAX_SPECULATIVE_TOKENS: usize = 16;
/// Longest n-gram the lookup may match (vLLM bounds it only by the sequence).
const MAX_PROMPT_LOOKUP: usize = 64;

/// A valid speculative decoding configuration (prompt lookup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeculativeConfig {
    /// Drafts proposed per step, `1..=MAX_SPECULATIVE_TOKENS`.
    pub num_speculative_tokens: usize,
    /// Shortest suffix n-gram that may match (vLLM's `prompt_lookup_min`).
    pub prompt_lookup_min: usize,
    /// Longest suffix n-gram tried first (vLLM's `prompt_lookup_max`).
    pub prompt_lookup_max: usize,
    /// No drafting while this many sequences or more are running (vLLM's
    /// `disable_by_batch_size`); `None`: no limit.
    pub disable_by_batch_size: Option<usize>,
}

/// Why a `--speculative-config` was refused; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--speculative-config: {0}")]
pub struct SpeculativeConfigError(pub String);

fn err<T>(m: String) -> Result<T, SpeculativeConfigError> {
    Err(SpeculativeConfigError(m))
}

/// An optional positive integer field.
fn uint(obj: &Map<String, Value>, field: &str) -> Result<Option<usize>, SpeculativeConfigError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n as usize)),
            None => err(format!("`{field}` must be a non-negative integer, got {v}")),
        },
    }
}

impl SpeculativeConfig {
    /// Parses vLLM's JSON form, e.g.
    /// `{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 5}`.
    pub fn from_json(text: &str) -> Result<Self, SpeculativeConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SpeculativeConfigError(format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return err(format!("must be a JSON object, got {value}"));
        };
        let method = match obj.get("method") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(v) => return err(format!("`method` must be a string, got {v}")),
        };
        let model = match obj.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(v) => return err(format!("`model` must be a string, got {v}")),
        };
        // vLLM's older spelling of prompt lookup is `"model": "[ngram]"`.
        let method = match (method, model) {
            (Some(m), _) => m,
            (None, Some("[ngram]" | "ngram")) => "ngram",
            (None, Some(path)) => {
                return err(format!(
                "`model`: a draft model ({path:?}) is not supported yet; use \"method\": \"ngram\""
            ))
            }
            (None, None) => return err("`method` is required (\"ngram\")".into()),
        };
        match method {
            "ngram" | "[ngram]" => {}
            "draft_model" | "eagle" | "eagle3" | "mtp" | "medusa" | "mlp_speculator" | "suffix" => {
                return err(format!(
                    "`method` {method:?} is not supported yet; the supported method is \"ngram\""
                ))
            }
            other => {
                return err(format!(
                    "unknown `method` {other:?}; the supported method is \"ngram\""
                ))
            }
        }
        if let Some(path) = model.filter(|m| !matches!(*m, "[ngram]" | "ngram")) {
            return err(format!(
                "`model`: the ngram method takes no draft model, got {path:?}"
            ));
        }
        const KNOWN: &[&str] = &[
            "method",
            "model",
            "num_speculative_tokens",
            "prompt_lookup_min",
            "prompt_lookup_max",
            "disable_by_batch_size",
        ];
        if let Some(field) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return err(format!(
                "unknown field `{field}` (known: {})",
                KNOWN.join(", ")
            ));
        }
        let Some(k) = uint(&obj, "num_speculative_tokens")? else {
            return err("`num_speculative_tokens` is required".into());
        };
        if !(1..=MAX_SPECULATIVE_TOKENS).contains(&k) {
            return err(format!(
                "`num_speculative_tokens` must be in 1..={MAX_SPECULATIVE_TOKENS}, got {k}"
            ));
        }
        // vLLM's defaults: both unset → 5 and 5; one unset → the other's value.
        let (min, max) = match (
            uint(&obj, "prompt_lookup_min")?,
            uint(&obj, "prompt_lookup_max")?,
        ) {
            (None, None) => (5, 5),
            (Some(min), None) => (min, min),
            (None, Some(max)) => (max, max),
            (Some(min), Some(max)) => (min, max),
        };
        if !(1..=MAX_PROMPT_LOOKUP).contains(&min) {
            return err(format!(
                "`prompt_lookup_min` must be in 1..={MAX_PROMPT_LOOKUP}, got {min}"
            ));
        }
        if !(1..=MAX_PROMPT_LOOKUP).contains(&max) {
            return err(format!(
                "`prompt_lookup_max` must be in 1..={MAX_PROMPT_LOOKUP}, got {max}"
            ));
        }
        if min > max {
            return err(format!(
                "`prompt_lookup_min` ({min}) must not exceed `prompt_lookup_max` ({max})"
            ));
        }
        let disable_by_batch_size = uint(&obj, "disable_by_batch_size")?;
        if disable_by_batch_size == Some(0) {
            return err("`disable_by_batch_size` must be at least 1".into());
        }
        Ok(Self {
            num_speculative_tokens: k,
            prompt_lookup_min: min,
            prompt_lookup_max: max,
            disable_by_batch_size,
        })
    }
}

impl std::str::FromStr for SpeculativeConfig {
    type Err = SpeculativeConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_json(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SpeculativeConfig, String> {
        SpeculativeConfig::from_json(s).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_vllm_ngram_configs_with_vllm_defaults() {
        assert_eq!(
            parse(
                r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5}"#
            ),
            Ok(SpeculativeConfig {
                num_speculative_tokens: 4,
                prompt_lookup_min: 2,
                prompt_lookup_max: 5,
                disable_by_batch_size: None,
            })
        );
        let c = parse(r#"{"method": "ngram", "num_speculative_tokens": 3}"#).unwrap();
        assert_eq!((c.prompt_lookup_min, c.prompt_lookup_max), (5, 5));
        let c =
            parse(r#"{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}"#)
                .unwrap();
        assert_eq!((c.prompt_lookup_min, c.prompt_lookup_max), (4, 4));
        let c = parse(
            r#"{"model": "[ngram]", "num_speculative_tokens": 2, "disable_by_batch_size": 8}"#,
        )
        .unwrap();
        assert_eq!(c.disable_by_batch_size, Some(8));
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{not json", "not valid JSON"),
            ("[1, 2]", "must be a JSON object"),
            (r#"{"num_speculative_tokens": 4}"#, "`method` is required"),
            (
                r#"{"method": "lookahead", "num_speculative_tokens": 4}"#,
                "unknown `method`",
            ),
            (
                r#"{"method": "eagle", "num_speculative_tokens": 4}"#,
                "not supported yet",
            ),
            (
                r#"{"model": "/models/draft", "num_speculative_tokens": 4}"#,
                "draft model",
            ),
            (
                r#"{"method": "ngram"}"#,
                "`num_speculative_tokens` is required",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 0}"#,
                "`num_speculative_tokens` must be in 1..=16, got 0",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 17}"#,
                "`num_speculative_tokens` must be in",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": -1}"#,
                "`num_speculative_tokens` must be a non-negative integer",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": "4"}"#,
                "`num_speculative_tokens` must be a non-negative integer",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 0}"#,
                "`prompt_lookup_min` must be in",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 6, "prompt_lookup_max": 3}"#,
                "`prompt_lookup_min` (6) must not exceed `prompt_lookup_max` (3)",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 4, "draft_tensor_parallel_size": 1}"#,
                "unknown field `draft_tensor_parallel_size`",
            ),
            (
                r#"{"method": "ngram", "num_speculative_tokens": 4, "disable_by_batch_size": 0}"#,
                "`disable_by_batch_size`",
            ),
        ];
        for (input, want) in cases {
            let got = parse(input).expect_err(input);
            assert!(got.contains(want), "{input}: {got:?} lacks {want:?}");
            assert!(got.starts_with("--speculative-config: "), "{got}");
        }
    }
}
