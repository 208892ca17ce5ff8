//! OpenAI-compatible wire types: chat completions, completions, models, vLLM's tokenize /
//! detokenize, and the error body; and TGI's native `/generate` shapes ([`tgi`]). Serde types and
//! their JSON parsing only; validation of ranges and semantics lives in `kestrel-server`.
//!
//! Unknown fields are ignored (clients send vendor extensions freely); a known field with the
//! wrong type is a [`ParseError`] whose message and `param` name the field's path.

pub mod chat;
pub mod common;
pub mod completion;
pub mod error;
pub mod models;
pub mod tgi;
pub mod tokenize;

pub use chat::*;
pub use common::*;
pub use completion::*;
pub use error::{ErrorBody, ErrorDetail, ParseError};
pub use models::{ModelCard, ModelList};
pub use tokenize::*;

/// Parses a JSON request body, naming the failing field on error (`max_tokens: invalid type: ...`).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    parse(body).map_err(|(e, _)| e)
}

/// [`parse_json`] for a request with flattened [`SamplingOptions`] (chat and text completions).
/// serde's `flatten` hands the flattened fields over without their path, so an error inside
/// them would name no field: the body is then parsed as [`SamplingOptions`] alone to find it.
pub fn parse_request<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ParseError> {
    parse(body).map_err(|(e, syntax)| {
        if syntax || e.param.is_some() {
            return e;
        }
        match parse::<SamplingOptions>(body) {
            Err((inner, _)) if inner.param.is_some() => inner,
            _ => e,
        }
    })
}

/// The value, or the error and whether it is a JSON syntax error.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (ParseError, bool)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let param = if path.is_empty() || path == "." {
            None
        } else {
            Some(path)
        };
        let syntax = matches!(
            inner.classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        );
        let message = match (&param, syntax) {
            // serde_json stops at 128 levels of nesting rather than overflow the stack.
            (_, true) if inner.to_string().starts_with("recursion limit exceeded") => {
                format!("request body is nested too deeply (at most 128 levels): {inner}")
            }
            (_, true) => format!("request body is not valid JSON: {inner}"),
            (Some(p), false) => format!("invalid field `{p}`: {inner}"),
            (None, false) => format!("invalid request body: {inner}"),
        };
        (ParseError { message, param }, syntax)
    })?;
    de.end().map_err(|e| {
        (
            ParseError {
                message: format!("request body is not valid JSON: {e}"),
                param: None,
            },
            true,
        )
    })?;
    Ok(value)
}
