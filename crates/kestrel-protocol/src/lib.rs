//! OpenAI-compatible wire types: chat completions, completions, models, vLLM's tokenize /
//! detokenize, and the error body. Serde types and their JSON parsing only; validation of
//! ranges and semantics lives in `kestrel-server`.
//!
//! Unknown fields are ignored (clients send vendor extensions freely); a known field with the
//! wrong type is a [`ParseError`] whose message and `param` name the field's path.

pub mod chat;
pub mod common;
pub mod completion;
pub mod error;
pub mod models;
pub mod tokenize;

pub use chat::*;
pub use common::*;
pub use completion::*;
pub use error::{ErrorBody, ErrorDetail, ParseError};
pub use models::{ModelCard, ModelList};
pub use tokenize::*;

/// Parses a JSON request body, naming the failing field on error (`max_tokens: invalid type: ...`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let param = if path.is_empty() || path == "." {
            None
        } else {
            Some(path)
        };
        let message = match (&param, inner.classify()) {
            (_, serde_json::error::Category::Syntax | serde_json::error::Category::Eof) => {
                format!("request body is not valid JSON: {inner}")
            }
            (Some(p), _) => format!("invalid field `{p}`: {inner}"),
            (None, _) => format!("invalid request body: {inner}"),
        };
        ParseError { message, param }
    })?;
    de.end().map_err(|e| ParseError {
        message: format!("request body is not valid JSON: {e}"),
        param: None,
    })?;
    Ok(value)
}
