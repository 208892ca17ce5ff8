//! Engine-side state of one sequence: its tokens (prompt + output), how many of them have KV in
//! the cache (`num_computed_tokens`, which catches up with `num_tokens()` step by step), its
//! sampler and its status. Its block table lives in the KV cache manager, keyed by [`SeqId`].

/// Engine-internal id of one submitted sequence (unique for the engine's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

use crate::block_hash::CacheSalt;
use crate::request::{EngineRequest, FinishReason};
use crate::sampler::Sampler;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqStatus {
    /// Queued, or preempted (its KV freed, to be recomputed).
    Waiting,
    Running,
}

#[derive(Debug)]
pub struct Sequence {
    pub id: SeqId,
    pub request_id: String,
    /// Prompt followed by the generated tokens.
    pub tokens: Vec<u32>,
    pub num_prompt_tokens: usize,
    /// Leading tokens whose KV is in the cache (or being written by the current step).
    pub num_computed_tokens: usize,
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub stop_token_ids: Vec<u32>,
    /// Prompt + output limit.
    pub max_model_len: usize,
    pub sampler: Sampler,
    pub status: SeqStatus,
    /// Prefix-cache hit of the first admission (`usage.cached_tokens`); `None` before it.
    pub num_cached_tokens: Option<usize>,
    /// A stop token was sampled (counted in the usage, not appended).
    pub stopped_by_token: bool,
    /// Digest of the request's `cache_salt`: the prefix-cache tenant.
    pub cache_salt: Option<CacheSalt>,
}

impl Sequence {
    /// A waiting sequence for `request` (its sampler built from `request.sampling` already).
    pub fn new(id: SeqId, request: EngineRequest, sampler: Sampler, max_model_len: usize) -> Self {
        Self {
            id,
            request_id: request.request_id,
            num_prompt_tokens: request.prompt_ids.len(),
            tokens: request.prompt_ids,
            num_computed_tokens: 0,
            max_tokens: request.max_tokens,
            min_tokens: request.min_tokens,
            stop_token_ids: request.stop_token_ids,
            max_model_len,
            sampler,
            status: SeqStatus::Waiting,
            num_cached_tokens: None,
            stopped_by_token: false,
            cache_salt: request.cache_salt.as_deref().map(CacheSalt::new),
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.num_prompt_tokens..]
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }

    /// Stop tokens are masked until `min_tokens` were generated.
    pub fn stop_tokens_masked(&self) -> bool {
        self.num_output_tokens() < self.min_tokens
    }

    /// Takes a sampled token: a stop token ends the sequence without being appended; any other
    /// is appended (and recorded by the sampler), and may end it by length.
    /// Returns `(appended, finish)`.
    pub fn append_sampled(&mut self, token: u32) -> (bool, Option<FinishReason>) {
        if !self.stop_tokens_masked() && self.stop_token_ids.contains(&token) {
            self.stopped_by_token = true;
            return (false, Some(FinishReason::Stop { token: Some(token) }));
        }
        self.tokens.push(token);
        self.sampler.push_output_token(token);
        let done =
            self.num_output_tokens() >= self.max_tokens || self.num_tokens() >= self.max_model_len;
        (true, done.then_some(FinishReason::Length))
    }

    /// Completion tokens for the usage: the output plus a sampled stop token.
    pub fn num_completion_tokens(&self) -> usize {
        self.num_output_tokens() + usize::from(self.stopped_by_token)
    }
}
