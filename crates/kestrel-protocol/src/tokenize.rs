//! vLLM's `POST /tokenize` and `POST /detokenize`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::{ChatMessage, Tool};

/// Either `{"prompt": ...}` (completion style) or `{"messages": [...]}` (chat style, rendered
/// through the chat template exactly as `/v1/chat/completions` would).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Option<String>,
    pub messages: Option<Vec<ChatMessage>>,
    pub tools: Option<Vec<Tool>>,
    pub add_generation_prompt: Option<bool>,
    pub add_special_tokens: Option<bool>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    pub enable_thinking: Option<bool>,
    pub reasoning_effort: Option<String>,
    #[serde(default)]
    pub return_token_strs: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenizeResponse {
    pub count: usize,
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_strs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DetokenizeRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub tokens: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DetokenizeResponse {
    pub prompt: String,
}
