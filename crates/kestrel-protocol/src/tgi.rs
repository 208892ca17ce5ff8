//! Hugging Face Text Generation Inference's native API (`POST /generate`, `POST /generate_stream`
//! and `POST /`, which picks one by `stream`): its request, response, stream-event and error
//! shapes, as TGI's router serializes them and `huggingface_hub`'s `InferenceClient` parses them.
//!
//! Every parameter is optional (TGI's router defaults); ranges are checked by the server.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"inputs": "...", "parameters": {...}, "stream": false}`.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerateRequest {
    pub inputs: String,
    #[serde(default)]
    pub parameters: Option<GenerateParameters>,
    /// Only read by `POST /` (TGI's `compat_generate`).
    #[serde(default)]
    pub stream: Option<bool>,
}

/// TGI's `GenerateParameters`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GenerateParameters {
    pub best_of: Option<i64>,
    pub temperature: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub top_k: Option<i64>,
    pub top_p: Option<f32>,
    pub typical_p: Option<f32>,
    pub do_sample: Option<bool>,
    pub max_new_tokens: Option<i64>,
    pub return_full_text: Option<bool>,
    pub stop: Option<Vec<String>>,
    pub truncate: Option<i64>,
    pub watermark: Option<bool>,
    pub details: Option<bool>,
    pub decoder_input_details: Option<bool>,
    pub seed: Option<u64>,
    pub top_n_tokens: Option<i64>,
    pub grammar: Option<Value>,
    pub adapter_id: Option<String>,
}

/// One generated token. `logprob` is `null` where it is not known (TGI writes NaN there, which
/// serializes as `null`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgiToken {
    pub id: u32,
    pub text: String,
    pub logprob: Option<f32>,
    pub special: bool,
}

/// `details` of a non-streamed answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgiDetails {
    /// `length`, `eos_token` or `stop_sequence`.
    pub finish_reason: String,
    pub generated_tokens: usize,
    pub seed: Option<u64>,
    pub prefill: Vec<TgiToken>,
    pub tokens: Vec<TgiToken>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_tokens: Vec<Vec<TgiToken>>,
}

/// The answer of `POST /generate`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgiGenerateResponse {
    pub generated_text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<TgiDetails>,
}

/// `details` of the last stream event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgiStreamDetails {
    pub finish_reason: String,
    pub generated_tokens: usize,
    pub seed: Option<u64>,
    pub input_length: usize,
}

/// One event of `POST /generate_stream`: a token; the last one also carries the whole
/// `generated_text` (and `details` when asked for).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgiStreamResponse {
    pub index: usize,
    pub token: TgiToken,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_tokens: Vec<TgiToken>,
    pub generated_text: Option<String>,
    pub details: Option<TgiStreamDetails>,
}

/// TGI's error body: `{"error": "...", "error_type": "validation"}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TgiErrorResponse {
    pub error: String,
    pub error_type: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn request_shapes() {
        let r: GenerateRequest = parse_json(
            br#"{"inputs":"hi","parameters":{"max_new_tokens":5,"stop":["x"],"details":true,"seed":7}}"#,
        )
        .unwrap();
        let p = r.parameters.unwrap();
        assert_eq!(p.max_new_tokens, Some(5));
        assert_eq!(p.stop.unwrap(), vec!["x".to_string()]);
        assert_eq!(p.seed, Some(7));
        let r: GenerateRequest =
            parse_json(br#"{"inputs":"hi","parameters":null,"stream":true}"#).unwrap();
        assert!(r.parameters.is_none());
        assert_eq!(r.stream, Some(true));
        let e = parse_json::<GenerateRequest>(br#"{"inputs":"hi","parameters":{"top_k":"x"}}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("parameters.top_k"));
        assert!(parse_json::<GenerateRequest>(br#"{"parameters":{}}"#).is_err());
    }

    #[test]
    fn stream_event_shape() {
        let e = TgiStreamResponse {
            index: 1,
            token: TgiToken {
                id: 5,
                text: "a".into(),
                logprob: Some(-0.5),
                special: false,
            },
            top_tokens: Vec::new(),
            generated_text: None,
            details: None,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"index":1,"token":{"id":5,"text":"a","logprob":-0.5,"special":false},
                "generated_text":null,"details":null})
        );
    }
}
