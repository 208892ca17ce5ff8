//! `POST /v1/chat/completions`: request, response and stream chunk.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::common::{ChatLogprobs, SamplingOptions, Usage};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ChatCompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    /// OpenAI's newer name for `max_tokens` (which is in `sampling`).
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<Value>,
    /// `false`: at most one tool call per choice.
    pub parallel_tool_calls: Option<bool>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    /// mistral.rs-style top-level switch; same meaning as `chat_template_kwargs.enable_thinking`.
    pub enable_thinking: Option<bool>,
    /// `"none"` turns thinking off (llama.cpp, Ollama); other values leave it on.
    pub reasoning_effort: Option<String>,
    /// vLLM: `false` drops the reasoning from the response.
    pub include_reasoning: Option<bool>,
    /// Qwen docs / LangChain `extra_body`: `false` drops the reasoning from the response.
    pub return_reasoning: Option<bool>,
    pub add_generation_prompt: Option<bool>,
    /// Sampling, stopping and streaming fields shared with `/v1/completions`.
    #[serde(flatten)]
    pub sampling: SamplingOptions,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Reasoning history; both names are accepted on input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

/// A message's `content`: a string or a list of content parts.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged, expecting = "a string or an array of content parts")]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

// ---- responses ----

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatChoice {
    pub index: usize,
    pub message: ResponseMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
    /// vLLM: the stop string or token id that ended the choice, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResponseMessage {
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCallOut {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionCallOut,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionCallOut {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChunkChoice {
    pub index: usize,
    pub delta: Delta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallChunk>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCallChunk {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallChunk,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionCallChunk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_json, parse_request};

    #[test]
    fn parses_minimal_and_ignores_unknown_fields() {
        let r: ChatCompletionRequest = parse_json(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"foo":{"bar":1}}"#,
        )
        .unwrap();
        assert_eq!(r.messages.len(), 1);
        assert_eq!(
            r.messages[0].content,
            Some(MessageContent::Text("hi".into()))
        );
    }

    #[test]
    fn content_parts_and_null_content() {
        let r: ChatCompletionRequest = parse_json(
            br#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"reasoning":"r"}]}"#,
        )
        .unwrap();
        assert!(
            matches!(r.messages[0].content, Some(MessageContent::Parts(ref p)) if p.len() == 2)
        );
        assert_eq!(r.messages[1].content, None);
        assert_eq!(r.messages[1].reasoning.as_deref(), Some("r"));
    }

    #[test]
    fn wrong_type_names_the_field() {
        // A flattened sampling field: `parse_request` still names it.
        let e = parse_request::<ChatCompletionRequest>(br#"{"messages":[],"max_tokens":"ten"}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(e.message.contains("max_tokens"), "{}", e.message);
        let e = parse_request::<ChatCompletionRequest>(
            br#"{"messages":[],"stream_options":{"include_usage":3}}"#,
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stream_options.include_usage"));
        let e =
            parse_request::<ChatCompletionRequest>(br#"{"messages":[],"stop":[1]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("stop"));
        // Fields outside the flattened part keep their own path.
        let e = parse_request::<ChatCompletionRequest>(br#"{"messages":[],"top_logprobs":"x"}"#)
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("top_logprobs"));
        let r: ChatCompletionRequest =
            parse_request(br#"{"messages":[],"max_tokens":5,"temperature":0,"cache_salt":"s"}"#)
                .unwrap();
        assert_eq!(r.sampling.max_tokens, Some(5));
        assert_eq!(r.sampling.temperature, Some(0.0));
        assert_eq!(r.sampling.cache_salt.as_deref(), Some("s"));
        let e =
            parse_json::<ChatCompletionRequest>(br#"{"messages":[{"role":"user","content":5}]}"#)
                .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].content"));
        let e = parse_json::<ChatCompletionRequest>(
            br#"{"messages":[],"tools":[{"type":"function","function":{"description":"x"}}]}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("name"), "{}", e.message);
        assert!(
            e.param.as_deref().unwrap().starts_with("tools[0]"),
            "{:?}",
            e.param
        );
    }

    #[test]
    fn missing_messages_and_bad_json() {
        let e = parse_json::<ChatCompletionRequest>(br#"{"model":"m"}"#).unwrap_err();
        assert!(e.message.contains("messages"), "{}", e.message);
        let e = parse_json::<ChatCompletionRequest>(br#"{"model":"#).unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse_json::<ChatCompletionRequest>(b"{\"messages\":[]} x").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let body = format!(r#"{{"messages":[],"tool_choice":{deep}}}"#);
        let e = parse_request::<ChatCompletionRequest>(body.as_bytes()).unwrap_err();
        assert!(e.message.contains("nested too deeply"), "{}", e.message);
    }

    #[test]
    fn delta_serializes_only_present_fields() {
        let d = Delta {
            content: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(serde_json::to_string(&d).unwrap(), r#"{"content":"x"}"#);
        let c = ChunkChoice {
            index: 0,
            delta: d,
            logprobs: None,
            finish_reason: None,
            stop_reason: None,
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::json!({"index":0,"delta":{"content":"x"},"logprobs":null,"finish_reason":null})
        );
    }
}
