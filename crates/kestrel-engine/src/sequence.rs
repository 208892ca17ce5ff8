//! Engine-side state of one sequence: its tokens (prompt + output), how many of them have KV in
//! the cache or are being computed by a launched step (`num_computed_tokens`, which catches up
//! with the tokens step by step), tokens sampled by a launched step but not back yet
//! (`num_pending`), draft tokens proposed for its next step (speculative decoding), its
//! sampling state and its status. Its block table lives in the KV cache
//! manager, keyed by [`SeqId`].

/// Engine-internal id of one submitted sequence (unique for the engine's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

use crate::block_hash::CacheSalt;
use crate::request::{EngineRequest, FinishReason};
use crate::sampling_state::SequenceSampling;
use crate::speculative::DraftState;
use crate::structured::{Advance, OutputControl};

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
    /// Leading positions whose KV is in the cache or written by a launched step; may run one
    /// past `tokens` by the pending tokens.
    pub num_computed_tokens: usize,
    /// Tokens a launched step samples that are not appended yet (0, or 1 with two steps in
    /// flight).
    pub num_pending: usize,
    /// Incremented by each preemption: a launched step's sample for an older epoch is void.
    pub epoch: u32,
    pub max_tokens: usize,
    pub min_tokens: usize,
    pub stop_token_ids: Vec<u32>,
    /// Prompt + output limit.
    pub max_model_len: usize,
    pub sampling: SequenceSampling,
    /// Steps that compute this sequence use batch-invariant kernels.
    pub batch_invariant: bool,
    pub status: SeqStatus,
    /// Prefix-cache hit of the first admission (`usage.cached_tokens`); `None` before it.
    pub num_cached_tokens: Option<usize>,
    /// A stop token was sampled (counted in the usage, not appended).
    pub stopped_by_token: bool,
    /// The prefix-cache tenant: the request's `cache_salt`, folded with the kernel mode where
    /// the engine keeps the modes apart.
    pub cache_salt: Option<CacheSalt>,
    /// Structured output (grammar mask, thinking budget), when the request has any; the
    /// engine sets it at admission.
    pub control: Option<OutputControl>,
    /// Draft tokens proposed for the next step (speculative decoding), verified after the
    /// sequence's last token; empty unless the sequence is decoding with its last token known.
    pub spec_tokens: Vec<u32>,
    /// Whether drafting pays for this sequence (see [`DraftState`]).
    pub draft: DraftState,
}

impl Sequence {
    /// A waiting sequence for `request`.
    pub fn new(
        id: SeqId,
        request: EngineRequest,
        sampling: SequenceSampling,
        max_model_len: usize,
        batch_invariant: bool,
    ) -> Self {
        Self {
            id,
            request_id: request.request_id,
            num_prompt_tokens: request.prompt_ids.len(),
            tokens: request.prompt_ids,
            num_computed_tokens: 0,
            num_pending: 0,
            epoch: 0,
            max_tokens: request.max_tokens,
            min_tokens: request.min_tokens,
            stop_token_ids: request.stop_token_ids,
            max_model_len,
            sampling,
            batch_invariant,
            status: SeqStatus::Waiting,
            num_cached_tokens: None,
            stopped_by_token: false,
            cache_salt: request.cache_salt.as_deref().map(CacheSalt::new),
            control: None,
            spec_tokens: Vec::new(),
            draft: DraftState::default(),
        }
    }

    pub fn num_tokens(&self) -> usize {
        self.tokens.len()
    }

    /// Tokens once the pending ones are back.
    pub fn num_tokens_with_pending(&self) -> usize {
        self.tokens.len() + self.num_pending
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.num_prompt_tokens..]
    }

    pub fn num_output_tokens(&self) -> usize {
        self.tokens.len() - self.num_prompt_tokens
    }

    /// Whether the sequence's next step is a decode: one token left to compute (its last,
    /// known or pending), drafts aside.
    pub fn is_decoding(&self) -> bool {
        self.num_tokens_with_pending() == self.num_computed_tokens + 1
    }

    /// Whether stop tokens are masked for the token sampled at `position` (an output token
    /// with fewer than `min_tokens` before it).
    pub fn stop_tokens_masked_at(&self, position: usize) -> bool {
        position.saturating_sub(self.num_prompt_tokens) < self.min_tokens
    }

    /// Whether the pending tokens already end the sequence by length, so it needs no more
    /// steps.
    pub fn done_by_length_when_pending_land(&self) -> bool {
        self.num_pending > 0
            && (self.num_output_tokens() + self.num_pending >= self.max_tokens
                || self.num_tokens_with_pending() >= self.max_model_len)
    }

    /// Whether stop tokens are masked for the token the latest scheduled step samples (the
    /// last of the pending ones): they are while fewer than `min_tokens` come before it.
    pub fn stop_tokens_masked(&self) -> bool {
        self.num_output_tokens() + self.num_pending.saturating_sub(1) < self.min_tokens
    }

    /// Takes a sampled token: a stop token ends the sequence without being appended; any other
    /// is appended (and recorded for the penalties), advances the output control (a complete
    /// grammar ends the sequence as a stop; one that cannot be satisfied, as `Length`; the
    /// next mask is computed before the next sampling), and may end it by length. Returns
    /// `(appended, finish)`.
    pub fn append_sampled(&mut self, token: u32) -> (bool, Option<FinishReason>) {
        // A mask computed while this step ran may have ended the output: the step sampled
        // without one, and its token is not taken.
        match self.control.as_mut().and_then(|c| c.take_deferred()) {
            Some(Advance::Complete) => return (false, Some(FinishReason::Stop { token: None })),
            Some(_) => return (false, Some(FinishReason::Length)),
            None => {}
        }
        if self.num_output_tokens() >= self.min_tokens && self.stop_token_ids.contains(&token) {
            self.stopped_by_token = true;
            return (false, Some(FinishReason::Stop { token: Some(token) }));
        }
        self.tokens.push(token);
        self.sampling.push_output(token);
        if let Some(control) = &mut self.control {
            match control.consume(token) {
                Advance::Continue => {}
                Advance::Complete => return (true, Some(FinishReason::Stop { token: None })),
                Advance::Failed(_) => return (true, Some(FinishReason::Length)),
            }
        }
        let done =
            self.num_output_tokens() >= self.max_tokens || self.num_tokens() >= self.max_model_len;
        (true, done.then_some(FinishReason::Length))
    }

    /// Completion tokens for the usage: the output plus a sampled stop token.
    pub fn num_completion_tokens(&self) -> usize {
        self.num_output_tokens() + usize::from(self.stopped_by_token)
    }
}
