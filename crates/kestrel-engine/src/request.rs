//! The API side of one sequence: what the server submits ([`EngineRequest`]) and what comes back
//! ([`EngineEvent`]s, ending with [`EngineEvent::Finished`] or [`EngineEvent::Error`]).
//! `Request` is the API side; the engine's own state for it is a `Sequence`.

use kestrel_backend::{SamplingParams, TokenLogprobs};

use crate::structured::OutputConstraint;

/// One sequence to generate. For `n > 1` the server submits one request per choice, with ids
/// `"<id>-<choice index>"`; identical prompts then share their KV blocks through the prefix cache.
#[derive(Clone, Debug)]
pub struct EngineRequest {
    /// Unique per submitted sequence; [`crate::handle::EngineHandle::abort`] takes it.
    pub request_id: String,
    pub prompt_ids: Vec<u32>,
    /// Validated already by the server; the engine re-validates cheaply.
    pub sampling: SamplingParams,
    /// Most new tokens (at least 1); prompt + `max_tokens` must fit in `max_model_len`.
    pub max_tokens: usize,
    /// Stop tokens cannot be sampled until this many tokens were generated (vLLM's `min_tokens`:
    /// their logits are masked, so they never appear in the output).
    pub min_tokens: usize,
    /// EOS ids + the request's `stop_token_ids` (merged by the server; empty for `ignore_eos`).
    /// A sampled stop token ends the sequence and is not sent as a [`EngineEvent::Token`].
    pub stop_token_ids: Vec<u32>,
    /// vLLM's `cache_salt`: only sequences with the same salt (or both without one) share
    /// prefix-cache blocks. The server may fold the caller's API key into it. `None` by default.
    pub cache_salt: Option<String>,
    /// Structured output: the answer's grammar and the reasoning phase before it (default:
    /// nothing constrained). A complete grammar ends the sequence with `Stop { token: None }`;
    /// one that can no longer be satisfied ends it with `Length`.
    pub constraint: OutputConstraint,
}

/// What the engine tells one sequence's [`crate::handle::RequestStream`].
#[derive(Clone, Debug)]
pub enum EngineEvent {
    /// One new token, sent the moment it is sampled (the first one comes from the prefill step).
    Token {
        id: u32,
        logprobs: Option<TokenLogprobs>,
    },
    /// Last event of a sequence.
    Finished { reason: FinishReason, usage: Usage },
    /// The engine failed this sequence (e.g. engine panic); last event.
    Error { message: String },
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token was sampled (`token: Some(id)`, not part of the streamed tokens), or the
    /// caller stopped it for its own reason (`None`, e.g. a stop string matched server-side).
    Stop { token: Option<u32> },
    /// `max_tokens` reached (or the model's context).
    Length,
    /// [`crate::handle::EngineHandle::abort`] or a dropped stream.
    Abort,
}

impl FinishReason {
    /// OpenAI's / vLLM's `finish_reason` string (`"stop"`, `"length"`, `"abort"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop { .. } => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// Token counts of one sequence, as OpenAI's `usage`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Generated tokens, counting a sampled stop token (as vLLM does) though it is not streamed.
    pub completion_tokens: usize,
    /// Prompt tokens whose KV came from the prefix cache when the sequence was first scheduled
    /// (`usage.prompt_tokens_details.cached_tokens`).
    pub cached_tokens: usize,
}
