//! Structured output: a request's grammar (JSON Schema, regex, Lark, a choice of strings)
//! compiled by llguidance against the model's token table ([`grammar`]), and the per-sequence
//! [`OutputControl`] beside the sampler that turns it into an allowed-token bitmask for each
//! step ([`control`]). The backend applies the mask to the logits; the control advances with
//! each sampled token and ends the sequence when the grammar is complete.
//!
//! With thinking on, the grammar starts after the reasoning's end token (`</think>`); a
//! thinking budget forces that token after N reasoning tokens, so a constrained answer always
//! comes.

pub mod control;
pub mod grammar;

pub use control::{Advance, OutputConstraint, OutputControl, Thinking};
pub use grammar::{Grammar, GrammarCompiler, GrammarError, GrammarSpec};
