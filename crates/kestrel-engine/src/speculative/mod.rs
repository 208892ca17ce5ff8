//! Speculative decoding (vLLM's `--speculative-config`), prompt-lookup flavour: a decoding
//! sequence whose recent tokens occurred earlier in its prompt or output proposes the tokens
//! that followed them ([`ngram`]), the step verifies all of them in one forward pass (the
//! sequence's input is `[last token, draft_1..draft_k]`, like a small prefill chunk on top of
//! its KV, with a logit row for each of the `k + 1` positions), and the sampled tokens decide
//! how many drafts are kept ([`acceptance`]). Rejected drafts' KV is discarded by rolling the
//! sequence's computed length back (the scheduler frees blocks past it); prefix-cache hashes
//! only ever cover tokens that were accepted, because the KV manager hashes known tokens only.
//!
//! Acceptance is exact: each of the `k + 1` rows samples its position exactly as a
//! non-speculative step would (same processed distribution, same Philox draw keyed by
//! `(seed, position)`), and a draft is kept while it equals that sample. For greedy rows that
//! is "accept while the draft is the argmax"; for sampled rows it is rejection sampling with a
//! point-mass draft (accept `d` with probability `p(d)`, else a token from `p` with `d`
//! removed). So outputs are those of non-speculative decoding, seeded requests included.
//!
//! Drafting switches itself off per sequence when its acceptance rate falls ([`DraftState`]),
//! and is never used for sequences with penalties (each row would need the drafts before it
//! in its history) or with structured output (each row would need the grammar advanced over
//! the drafts before it).

pub mod acceptance;
pub mod config;
pub mod draft_state;
pub mod ngram;

pub use acceptance::num_accepted;
pub use config::{SpeculativeConfig, SpeculativeConfigError, MAX_SPECULATIVE_TOKENS};
pub use draft_state::DraftState;
pub use ngram::propose;

/// Acceptance counts of one engine step, for vLLM's `spec_decode_*` metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecDecodingStats {
    /// Sequences that verified drafts.
    pub num_drafts: u64,
    pub num_draft_tokens: u64,
    pub num_accepted_tokens: u64,
    /// `[position]` drafts accepted at each draft position (0-based).
    pub num_accepted_tokens_per_pos: Vec<u64>,
}

impl SpecDecodingStats {
    /// Records one sequence's verification: `num_draft` drafts, of which the first
    /// `num_accepted` were kept.
    pub fn observe(&mut self, num_draft: usize, num_accepted: usize) {
        self.num_drafts += 1;
        self.num_draft_tokens += num_draft as u64;
        self.num_accepted_tokens += num_accepted as u64;
        if self.num_accepted_tokens_per_pos.len() < num_draft {
            self.num_accepted_tokens_per_pos.resize(num_draft, 0);
        }
        for n in &mut self.num_accepted_tokens_per_pos[..num_accepted] {
            *n += 1;
        }
    }

    pub fn clear(&mut self) {
        self.num_drafts = 0;
        self.num_draft_tokens = 0;
        self.num_accepted_tokens = 0;
        self.num_accepted_tokens_per_pos
            .iter_mut()
            .for_each(|n| *n = 0);
    }
}
