//! Grammars for structured output: what a request asks for ([`GrammarSpec`]), the compiler
//! that turns it into a token-level parser for one model ([`GrammarCompiler`], built once per
//! model from its token table), and a compiled [`Grammar`] ready to drive one sequence.
//!
//! The token table is each token id's bytes (Qwen's byte-level BPE tokens mapped back through
//! the GPT-2 byte-to-unicode table; special tokens prefixed with llguidance's `0xFF` marker so
//! that no grammar can spell them), padded with empty entries up to the model's vocabulary
//! size: ids past the tokenizer can never be allowed.
//!
//! JSON schemas compile with fixed whitespace (`", "` and `": "`, no free whitespace), as
//! vLLM's `disable_any_whitespace`: a small model given free whitespace can spend its whole
//! budget on newlines. A schema that sets its own `x-guidance` options keeps them.

use std::fmt;
use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{ParserFactory, TokenParser};
use serde_json::Value;

/// What a request constrains its output to.
#[derive(Clone, Debug, PartialEq)]
pub enum GrammarSpec {
    /// A JSON Schema (draft 2020-12 subset, as llguidance supports).
    JsonSchema(Value),
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// A regular expression the whole output matches (Rust `regex` syntax).
    Regex(String),
    /// A Lark grammar (llguidance's dialect; `%json {...}` embeds a schema).
    Lark(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
}

impl GrammarSpec {
    /// A short name for errors and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            GrammarSpec::JsonSchema(_) => "json_schema",
            GrammarSpec::JsonObject => "json_object",
            GrammarSpec::Regex(_) => "regex",
            GrammarSpec::Lark(_) => "grammar",
            GrammarSpec::Choice(_) => "choice",
        }
    }

    /// The llguidance grammar of this spec.
    fn to_grammar(&self) -> Result<TopLevelGrammar, GrammarError> {
        Ok(match self {
            GrammarSpec::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(GrammarError("a JSON schema must be an object".into()));
                }
                TopLevelGrammar::from_json_schema(with_fixed_whitespace(schema.clone()))
            }
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(with_fixed_whitespace(
                serde_json::json!({"type": "object"}),
            )),
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Lark(lark) => {
                if lark.trim().is_empty() {
                    return Err(GrammarError("the grammar is empty".into()));
                }
                TopLevelGrammar::from_lark(lark.clone())
            }
            GrammarSpec::Choice(choices) => {
                if choices.is_empty() {
                    return Err(GrammarError("the choice list is empty".into()));
                }
                let alternatives: Vec<String> = choices
                    .iter()
                    .map(|c| serde_json::to_string(c).expect("a string serializes"))
                    .collect();
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
        })
    }
}

/// Sets llguidance's JSON options to fixed separators unless the schema has its own.
fn with_fixed_whitespace(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

/// A grammar that cannot be compiled (or a token table that cannot be built); the message
/// says why, for a 400 naming the request field.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct GrammarError(pub String);

/// Compiles grammars for one model: the token trie and llguidance's per-tokenizer tables,
/// built once (tens of milliseconds for a 150k vocabulary) and shared by every request.
#[derive(Clone)]
pub struct GrammarCompiler {
    factory: Arc<ParserFactory>,
    vocab_size: usize,
}

impl fmt::Debug for GrammarCompiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrammarCompiler")
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

impl GrammarCompiler {
    /// From each token id's bytes (`token_bytes[id]`, special tokens marked with a leading
    /// `0xFF`), the end-of-sequence id llguidance allows when a grammar is complete, and the
    /// model's vocabulary size (the logits' width, at least the tokenizer's).
    pub fn new(
        mut token_bytes: Vec<Vec<u8>>,
        eos: u32,
        vocab_size: usize,
    ) -> Result<Self, GrammarError> {
        if token_bytes.len() > vocab_size {
            return Err(GrammarError(format!(
                "the tokenizer has {} tokens, more than the model's vocabulary of {vocab_size}",
                token_bytes.len()
            )));
        }
        if eos as usize >= vocab_size {
            return Err(GrammarError(format!(
                "end-of-sequence token {eos} outside the vocabulary of {vocab_size}"
            )));
        }
        token_bytes.resize(vocab_size, Vec::new());
        let info = TokRxInfo::new(vocab_size as u32, eos);
        let trie = TokTrie::from(&info, &token_bytes);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            factory: Arc::new(factory),
            vocab_size,
        })
    }

    /// From a Hugging Face `tokenizer.json` (byte-level BPE or byte-fallback vocabularies).
    pub fn from_tokenizer_json(
        tokenizer_json: &Value,
        eos: u32,
        vocab_size: usize,
    ) -> Result<Self, GrammarError> {
        let bytes = llguidance::token_bytes_from_tokenizer_json(tokenizer_json)
            .map_err(|e| GrammarError(format!("token table: {e}")))?;
        Self::new(bytes, eos, vocab_size)
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Compiles `spec`; an invalid or unsupported grammar is an error saying why.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        let grammar = spec.to_grammar()?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError(first_line(&e.to_string())))?;
        Ok(Grammar {
            parser,
            kind: spec.kind(),
            vocab_size: self.vocab_size,
        })
    }
}

/// llguidance's errors can carry a long trace after the first line.
fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_string()
}

/// A compiled grammar in its initial state. Cloning gives an independent parser (each `n > 1`
/// choice gets its own).
pub struct Grammar {
    pub(super) parser: TokenParser,
    kind: &'static str,
    pub(super) vocab_size: usize,
}

impl Grammar {
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

impl Clone for Grammar {
    fn clone(&self) -> Self {
        Self {
            parser: self.parser.deep_clone(),
            kind: self.kind,
            vocab_size: self.vocab_size,
        }
    }
}

impl fmt::Debug for Grammar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grammar({})", self.kind)
    }
}
