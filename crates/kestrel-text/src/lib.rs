//! Everything between a request's messages and the model's token ids, in both directions:
//! tokenizer loading (files or GGUF metadata), chat template rendering, incremental
//! detokenization, stop strings, and the Qwen3 reasoning and tool-call parsers.
//! No tensors here: this crate is plain text and token-id logic.

pub mod chat_template;
pub mod detokenizer;
pub mod error;
pub mod stop;
pub mod token_bytes;
pub mod tokenizer;

pub use chat_template::{ChatTemplate, TemplateInput};
pub use detokenizer::Detokenizer;
pub use error::{Error, Result};
pub use stop::{StopMatcher, StopResult, StopTokens};
pub use tokenizer::{GgufVocab, SpecialTokens, TokenId, Tokenizer};
pub mod reasoning;
pub mod tool_calls;
