//! Sampling as a backend operation: what a step asks for ([`SamplingBatch`], one row of
//! parameters per logit row), what comes back ([`SampleOutput`]: ids, and logprobs only where
//! asked), the request-side parameters and their validation ([`SamplingParams`]), and the
//! counter-based random numbers every backend draws from ([`philox`]).
//!
//! The semantics every backend implements, per logit row:
//! 1. banned tokens (vLLM's `min_tokens` masking of stop tokens) are set to `-inf` in the raw
//!    logits; logprobs, when asked, are the log-softmax of these raw logits (vLLM's
//!    `raw_logprobs`): the sampled token's and the `n` most likely (ties by lower id);
//! 2. repetition penalty over every token of prompt + output (positive logits divided, negative
//!    multiplied), then frequency (× output count) and presence (if in output) subtracted, as
//!    vLLM's `apply_penalties`; 3. logit bias added;
//! 4. greedy when `temperature < 1e-5` or `top_k == 1`: argmax, ties to the lowest id;
//! 5. temperature, top-k, top-p (on the distribution renormalized after top-k), min-p
//!    (relative to the top token), in `transformers`' order;
//! 6. one uniform `u` from Philox4x32-10 keyed by the row's seed at counter (position, 0):
//!    the sampled token is the first candidate, in increasing id order, at which the running
//!    sum of `exp(l - max)` exceeds `u · Σ`. The same seed and position give the same `u` on
//!    every backend and in any batch, so equal logits give equal tokens.

mod batch;
pub mod params;
pub mod philox;

pub use batch::{RowParams, SampleOutput, SamplingBatch, TokenLogprobs};
pub use params::{
    SamplingError, SamplingParams, GREEDY_TEMPERATURE, MAX_TOP_LOGPROBS, MIN_LOGPROB,
};
