//! Counting output tokens when the server does not report `usage` and the answer did not simply
//! run to its `max_tokens` cap (`finish_reason: "length"`, which gives the count exactly).
//!
//! The benchmark knows no tokenizer itself (it must run against any server); the caller plugs one
//! in, e.g. the model's own tokenizer loaded by `kestrel-text`. Without one, each content-bearing
//! chunk counts as one token and the report says so (`token_source: chunks`).

/// Counts the tokens of generated text.
pub trait TokenCounter: Send + Sync {
    fn count_tokens(&self, text: &str) -> usize;
}

impl<F: Fn(&str) -> usize + Send + Sync> TokenCounter for F {
    fn count_tokens(&self, text: &str) -> usize {
        self(text)
    }
}
