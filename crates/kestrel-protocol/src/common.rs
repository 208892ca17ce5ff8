//! Types shared by chat and text completions: the sampling options both requests flatten in,
//! stop, stream options, usage, logprobs.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request fields chat and text completions share (vLLM's `SamplingParams` fields plus the
/// output and streaming options), flattened into both requests with `#[serde(flatten)]`.
/// Ranges are checked by the server, once, for both endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingOptions {
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub n: Option<i64>,
    pub stop: Option<Stop>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub logit_bias: Option<HashMap<String, f32>>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// OpenAI's end-user id, for the provider's abuse monitoring: accepted and not used.
    pub user: Option<String>,
    pub response_format: Option<Value>,
    /// vLLM's structured-output object: one of `json`, `regex`, `choice`, `grammar`,
    /// `json_object`.
    pub structured_outputs: Option<Value>,
    /// vLLM's older structured-output fields (one at most, and not with the above).
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
    /// Most reasoning tokens before `</think>` is forced (`-1`: none); vLLM calls it
    /// `thinking_token_budget`.
    pub thinking_budget: Option<i64>,
    pub thinking_token_budget: Option<i64>,
    // vLLM's extra sampling fields.
    pub ignore_eos: Option<bool>,
    pub min_tokens: Option<i64>,
    pub include_stop_str_in_output: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    /// vLLM's `cache_salt`: requests share prefix-cache blocks only with requests of the same salt.
    pub cache_salt: Option<String>,
    /// Kestrel's response cache: `false` keeps this request out of it (not looked up, not stored).
    pub cache: Option<bool>,
}

/// `stop`: one string or a list of strings.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged, expecting = "a string or an array of strings")]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
    /// vLLM extension: a usage object on every chunk.
    #[serde(default)]
    pub continuous_usage_stats: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }),
        }
    }
}

/// Chat-style logprobs: `{"content":[{token, logprob, bytes, top_logprobs}]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChatLogprobs {
    pub content: Vec<ChatLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
    pub top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Option<Vec<u8>>,
}

/// Legacy completions logprobs: parallel arrays.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<serde_json::Map<String, serde_json::Value>>>,
    pub text_offset: Vec<usize>,
}
