//! The crate's one error type. Every fallible function in `kestrel-text` returns
//! [`Result`]; variants say which input was wrong (a file, a GGUF vocabulary, a chat
//! template, a request's messages) so the server can turn template and input errors
//! into a 400 and file errors into a startup failure.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between text and token ids.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tokenizer file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A tokenizer or config file is not the JSON we expect.
    #[error("parsing {path}: {message}")]
    Config { path: PathBuf, message: String },

    /// The GGUF vocabulary uses a tokenizer this crate does not implement.
    #[error(
        "unsupported GGUF tokenizer: tokenizer.ggml.model = {model:?}, tokenizer.ggml.pre = {pre:?} \
         (supported: model \"gpt2\" with pre \"qwen2\")"
    )]
    UnsupportedGgufTokenizer { model: String, pre: Option<String> },

    /// The GGUF vocabulary is inconsistent (lengths, ids, merges).
    #[error("invalid GGUF vocabulary: {0}")]
    InvalidGgufVocab(String),

    /// An error reported by the `tokenizers` crate (encode, decode, build).
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// The tokenizer (files or GGUF) carries no chat template and none was given.
    #[error("the model has no chat template (tokenizer_config.json `chat_template` or GGUF `tokenizer.chat_template`)")]
    NoChatTemplate,

    /// The chat template does not compile.
    #[error("chat template syntax error: {0}")]
    TemplateSyntax(String),

    /// The template called `raise_exception(message)`: it rejects this conversation.
    #[error("chat template rejected the conversation: {0}")]
    TemplateRaised(String),

    /// Rendering failed for another reason (undefined value, type error, ...).
    #[error("chat template rendering failed: {0}")]
    TemplateRender(String),

    /// The messages, tools or template kwargs are not of the shape a template can take.
    #[error("invalid chat template input: {0}")]
    TemplateInput(String),
}

impl Error {
    /// Wraps an error of the `tokenizers` crate, which only gives a boxed `dyn Error`.
    pub(crate) fn tokenizer(err: impl std::fmt::Display) -> Self {
        Error::Tokenizer(err.to_string())
    }
}
