//! `POST /v1/completions`: request (prompt as text or token ids), response and stream chunk.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{CompletionLogprobs, SamplingOptions, Usage};

/// `prompt`: a string, a list of strings, a list of token ids, or a list of token id lists.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(
    untagged,
    expecting = "a string, an array of strings, an array of token ids, or an array of token id arrays"
)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

/// One prompt of a (possibly batched) completions request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    Ids(Vec<u32>),
}

impl Prompt {
    pub fn into_inputs(self) -> Vec<PromptInput> {
        match self {
            Prompt::Text(s) => vec![PromptInput::Text(s)],
            Prompt::Texts(v) => v.into_iter().map(PromptInput::Text).collect(),
            Prompt::Ids(ids) => vec![PromptInput::Ids(ids)],
            Prompt::IdLists(v) => v.into_iter().map(PromptInput::Ids).collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    pub model: Option<String>,
    pub prompt: Prompt,
    /// Number of top logprobs per token (legacy completions shape).
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub best_of: Option<i64>,
    pub suffix: Option<String>,
    /// Sampling, stopping and streaming fields shared with `/v1/chat/completions`.
    #[serde(flatten)]
    pub sampling: SamplingOptions,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionResponse {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn prompt_shapes() {
        let p = |s: &str| parse_json::<CompletionRequest>(s.as_bytes()).map(|r| r.prompt);
        assert_eq!(p(r#"{"prompt":"hi"}"#).unwrap(), Prompt::Text("hi".into()));
        assert_eq!(
            p(r#"{"prompt":["a","b"]}"#).unwrap(),
            Prompt::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            p(r#"{"prompt":[1,2,3]}"#).unwrap(),
            Prompt::Ids(vec![1, 2, 3])
        );
        assert_eq!(
            p(r#"{"prompt":[[1],[2,3]]}"#).unwrap(),
            Prompt::IdLists(vec![vec![1], vec![2, 3]])
        );
        let e = p(r#"{"prompt":[-1]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
        assert!(e.message.contains("token ids"), "{}", e.message);
        let e = p(r#"{"prompt":{"x":1}}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("prompt"));
    }

    #[test]
    fn inputs_flatten() {
        assert_eq!(
            Prompt::IdLists(vec![vec![1], vec![2]]).into_inputs().len(),
            2
        );
        assert_eq!(
            Prompt::Text("x".into()).into_inputs(),
            vec![PromptInput::Text("x".into())]
        );
    }
}
