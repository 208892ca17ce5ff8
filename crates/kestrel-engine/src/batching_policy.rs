//! How a step's token budget is shared between decodes and prefills (`--batching-policy`).
//!
//! - [`BatchingPolicy::Latency`] (the default) serves users' first tokens in arrival order and
//!   keeps running streams smooth, in vLLM's terms: decodes first (every running sequence past its
//!   prefill gets its one token before any prompt token is scheduled); then at most
//!   `max_num_partial_prefills` sequences prefill per step (1 by default), oldest first, of which
//!   at most `max_long_partial_prefills` have more than `long_prefill_token_threshold` prompt
//!   tokens left (a shorter prompt may overtake a long one waiting for that slot, as in vLLM).
//!   When a burst arrives, the first arrival's first token thus comes after its own prefill, not
//!   after everyone's, and a burst of prefix-cache hits is spread over steps, each hit decoding as
//!   soon as its few uncached tokens are done. The prefill tokens of a step with `D` decodes are
//!   at most `max(threshold, (budget − D) / (D + 1))` (a waiting prompt counts as one more user
//!   sharing the step), and one sequence's chunk is at most `threshold` while anything decodes;
//!   with nothing decoding, a prompt takes the whole budget.
//! - [`BatchingPolicy::Throughput`] is the plain vLLM v1 budget filler: running sequences oldest
//!   first (a decode takes 1 token, an unfinished prefill what is left), then as many waiting
//!   ones as fit. Fewest steps, so the best step throughput, but a burst's first tokens all come
//!   after the whole burst's prefill.
//!
//! `long_prefill_token_threshold` 0 is automatic: under the latency policy 4 % of
//! `max_model_len` (vLLM's choice), at least 64 and at most a quarter of the budget; under the
//! throughput policy no cap. A threshold set explicitly caps one sequence's prefill tokens per
//! step under both policies, decoding or not. With chunked prefill off
//! (`enable_chunked_prefill: false`) a prompt is prefilled whole in one step, so the budget must
//! hold `max_model_len`.

/// `--batching-policy`: what a step's budget favours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchingPolicy {
    /// Decodes first, prefills one (or a few) at a time in arrival order.
    #[default]
    Latency,
    /// Fill each step's budget: running sequences first, then every waiting one that fits.
    Throughput,
}

impl std::str::FromStr for BatchingPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latency" => Ok(Self::Latency),
            "throughput" => Ok(Self::Throughput),
            other => Err(format!(
                "unknown batching policy {other:?} (latency or throughput)"
            )),
        }
    }
}

impl BatchingPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Throughput => "throughput",
        }
    }
}

/// The policy's knobs, resolved (no "automatic" values left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefillLimits {
    pub policy: BatchingPolicy,
    /// Prompts longer than this (tokens left) are long; the most prefill tokens one sequence
    /// gets per step while anything decodes (or always, when `cap_always`). 0: no cap.
    pub long_prefill_token_threshold: usize,
    /// The threshold was given explicitly: it caps every step, decoding or not.
    pub cap_always: bool,
    /// Most sequences prefilling in one step (latency policy).
    pub max_num_partial_prefills: usize,
    /// Most of those with a long prompt left (latency policy).
    pub max_long_partial_prefills: usize,
    /// A prompt may be split over steps; without it, it is prefilled whole.
    pub enable_chunked_prefill: bool,
}

impl PrefillLimits {
    /// Resolves the automatic threshold (`threshold` 0) for `policy`.
    pub fn resolve(
        policy: BatchingPolicy,
        threshold: usize,
        max_model_len: usize,
        max_num_batched_tokens: usize,
        max_num_partial_prefills: usize,
        max_long_partial_prefills: usize,
        enable_chunked_prefill: bool,
    ) -> Self {
        let auto = match policy {
            BatchingPolicy::Latency => (max_model_len * 4 / 100)
                .max(64)
                .min((max_num_batched_tokens / 4).max(1)),
            BatchingPolicy::Throughput => 0,
        };
        Self {
            policy,
            long_prefill_token_threshold: if threshold == 0 { auto } else { threshold },
            cap_always: threshold != 0,
            max_num_partial_prefills,
            max_long_partial_prefills,
            enable_chunked_prefill,
        }
    }

    /// Whether a prompt with `num_remaining` tokens left counts as long.
    pub fn is_long(&self, num_remaining: usize) -> bool {
        self.long_prefill_token_threshold != 0 && num_remaining > self.long_prefill_token_threshold
    }

    /// Prefill tokens a step may hold after `num_decodes` decode tokens, out of `budget_left`
    /// (the step budget less those decodes).
    pub fn prefill_budget(&self, budget_left: usize, num_decodes: usize) -> usize {
        if self.policy == BatchingPolicy::Throughput
            || num_decodes == 0
            || !self.enable_chunked_prefill
        {
            return budget_left;
        }
        let fair_share = budget_left / (num_decodes + 1);
        fair_share
            .max(self.long_prefill_token_threshold)
            .min(budget_left)
    }

    /// Tokens a sequence with `num_remaining` prompt tokens left takes out of `budget` in a step
    /// where `decoding` says whether anything decodes; 0 when it cannot be scheduled (a whole
    /// prompt that does not fit, without chunked prefill).
    pub fn chunk(&self, num_remaining: usize, budget: usize, decoding: bool) -> usize {
        if !self.enable_chunked_prefill {
            return if num_remaining <= budget {
                num_remaining
            } else {
                0
            };
        }
        let capped = self.long_prefill_token_threshold != 0
            && (self.cap_always || (decoding && self.policy == BatchingPolicy::Latency));
        let cap = if capped {
            self.long_prefill_token_threshold
        } else {
            usize::MAX
        };
        num_remaining.min(budget).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(threshold: usize) -> PrefillLimits {
        PrefillLimits::resolve(BatchingPolicy::Latency, threshold, 4096, 2048, 1, 1, true)
    }

    #[test]
    fn automatic_threshold() {
        assert_eq!(latency(0).long_prefill_token_threshold, 163);
        assert!(!latency(0).cap_always);
        let small = PrefillLimits::resolve(BatchingPolicy::Latency, 0, 256, 512, 1, 1, true);
        assert_eq!(small.long_prefill_token_threshold, 64);
        let big = PrefillLimits::resolve(BatchingPolicy::Latency, 0, 40960, 2048, 1, 1, true);
        assert_eq!(big.long_prefill_token_threshold, 512);
        let t = PrefillLimits::resolve(BatchingPolicy::Throughput, 0, 4096, 2048, 1, 1, true);
        assert_eq!(t.long_prefill_token_threshold, 0);
        assert_eq!(t.chunk(5000, 2048, true), 2048);
    }

    #[test]
    fn prefill_budget_shrinks_with_decodes_down_to_the_threshold() {
        let l = latency(0);
        assert_eq!(l.prefill_budget(2048, 0), 2048);
        assert_eq!(l.prefill_budget(2047, 1), 1023);
        assert_eq!(l.prefill_budget(2044, 4), 408);
        assert_eq!(l.prefill_budget(2032, 16), 163);
        assert_eq!(l.prefill_budget(100, 16), 100);
    }

    #[test]
    fn chunk_is_capped_only_while_decoding_unless_explicit() {
        let l = latency(0);
        assert_eq!(l.chunk(1000, 2048, false), 1000);
        assert_eq!(l.chunk(1000, 2048, true), 163);
        let explicit = latency(16);
        assert_eq!(explicit.chunk(1000, 2048, false), 16);
        let whole = PrefillLimits::resolve(BatchingPolicy::Latency, 0, 4096, 4096, 1, 1, false);
        assert_eq!(whole.chunk(1000, 2048, true), 1000);
        assert_eq!(whole.chunk(3000, 2048, true), 0);
    }

    #[test]
    fn parses_names() {
        assert_eq!("latency".parse(), Ok(BatchingPolicy::Latency));
        assert_eq!("throughput".parse(), Ok(BatchingPolicy::Throughput));
        assert!("fast"
            .parse::<BatchingPolicy>()
            .unwrap_err()
            .contains("fast"));
    }
}
