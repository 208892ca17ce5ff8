//! Engine-side state of one sequence: its tokens (prompt + output), how many of them have KV in
//! the cache (`num_computed_tokens`, which catches up with `num_tokens()` step by step), its
//! sampler and its status. Its block table lives in the KV cache manager, keyed by [`SeqId`].

/// Engine-internal id of one submitted sequence (unique for the engine's lifetime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);
