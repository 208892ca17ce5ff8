//! The tokenizer: a `tokenizers::Tokenizer` plus what the server needs to know around it
//! (special tokens, the ids generation stops on, the chat template).
//!
//! Two sources, one result:
//! - a Hugging Face model directory (`tokenizer.json` + `tokenizer_config.json`, optionally
//!   `chat_template.jinja` and `generation_config.json`), read the way `transformers` reads it;
//! - the vocabulary stored in a GGUF file ([`GgufVocab`], filled by the GGUF reader elsewhere, so
//!   this crate never parses GGUF). It is rebuilt into the same byte-level BPE pipeline as the
//!   Hugging Face Qwen2 `tokenizer.json` minus its NFC normalizer (the Qwen2 split regex,
//!   isolated; byte-level without prefix space; byte-level decoder). No normalization is what
//!   llama.cpp and `transformers`' GGUF conversion do, so a GGUF model sees the ids llama.cpp
//!   gives it; on NFC text (nearly all text) the result equals `tokenizer.json`'s. Control tokens (GGUF type 3) become special added
//!   tokens and user-defined tokens (type 4: `<think>`, `<tool_call>`) non-special added tokens,
//!   both matched whole on the raw text, as llama.cpp and `transformers` do.
//!
//! Invariant: token ids are the checkpoint's ids; an added token keeps the id the vocabulary
//! gives it (it is also in the BPE vocabulary at that id, so no id is ever re-numbered).

use std::fmt;
use std::path::Path;

use serde_json::Value;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PostProcessorWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};

/// A token id, as the model's embedding table indexes it.
pub type TokenId = u32;

/// The pre-tokenizer regex of Qwen2/2.5/3 (`tokenizer.json` → `pre_tokenizer` → `Split`).
pub const QWEN2_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen chat models end a turn with `<|im_end|>` and a document with `<|endoftext|>`;
/// generation stops on either, whatever `eos_token` says (vLLM reads both from
/// `generation_config.json`, which is not always at hand).
const QWEN_STOP_TOKENS: [&str; 2] = ["<|im_end|>", "<|endoftext|>"];

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
const GGUF_TOKEN_CONTROL: i32 = 3;
const GGUF_TOKEN_USER_DEFINED: i32 = 4;

/// The tokenizer metadata of a GGUF file, as plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`, e.g. `"gpt2"` (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. `"qwen2"`: which pre-tokenizer regex.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token strings in byte-level form, indexed by id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: one per token (1 normal, 3 control, 4 user defined, 5 unused).
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"left right"`, in rank order.
    pub merges: Vec<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    pub padding_token_id: Option<u32>,
    pub add_bos_token: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

/// The named special tokens, as `transformers`' `special_tokens_map` has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
}

/// A loaded tokenizer with its special tokens and chat templates.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special_tokens: SpecialTokens,
    eos_token_ids: Vec<TokenId>,
    /// `(name, source)`; the plain-string form of `chat_template` is named `"default"`.
    chat_templates: Vec<(String, String)>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("special_tokens", &self.special_tokens)
            .field("eos_token_ids", &self.eos_token_ids)
            .field(
                "chat_templates",
                &self
                    .chat_templates
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Tokenizer {
    /// Loads a Hugging Face tokenizer directory.
    ///
    /// `tokenizer.json` is required. `tokenizer_config.json` gives the special tokens, the
    /// chat template (a string, or a list of `{"name", "template"}`) and `added_tokens_decoder`;
    /// `chat_template.jinja`, when present, replaces the default template (as in `transformers`);
    /// `generation_config.json`'s `eos_token_id` (one id or a list) adds stop ids.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let tokenizer_path = dir.join("tokenizer.json");
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|err| {
            if tokenizer_path.exists() {
                Error::Config {
                    path: tokenizer_path.clone(),
                    message: err.to_string(),
                }
            } else {
                Error::Io {
                    path: tokenizer_path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
                }
            }
        })?;

        let config_path = dir.join("tokenizer_config.json");
        let config = read_json_if_exists(&config_path)?.unwrap_or(Value::Null);
        let mut tokenizer =
            Self::from_tokenizer_and_config(inner, &config).map_err(|err| match err {
                Error::Config { message, .. } => Error::Config {
                    path: config_path.clone(),
                    message,
                },
                other => other,
            })?;

        let template_path = dir.join("chat_template.jinja");
        if template_path.exists() {
            let source = std::fs::read_to_string(&template_path).map_err(|source| Error::Io {
                path: template_path.clone(),
                source,
            })?;
            tokenizer.set_chat_template(source);
        }

        let generation_path = dir.join("generation_config.json");
        if let Some(generation) = read_json_if_exists(&generation_path)? {
            let ids = match generation.get("eos_token_id") {
                Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_u64).collect(),
                _ => Vec::new(),
            };
            for id in ids {
                let id = TokenId::try_from(id).map_err(|_| Error::Config {
                    path: generation_path.clone(),
                    message: format!("eos_token_id {id} does not fit a token id"),
                })?;
                push_unique(&mut tokenizer.eos_token_ids, id);
            }
        }
        Ok(tokenizer)
    }

    /// Wraps an already built `tokenizers::Tokenizer` with a parsed `tokenizer_config.json`
    /// (`Value::Null` when there is none).
    pub fn from_tokenizer_and_config(
        mut inner: tokenizers::Tokenizer,
        config: &Value,
    ) -> Result<Self> {
        add_config_added_tokens(&mut inner, config.get("added_tokens_decoder"))?;
        let special_tokens = SpecialTokens {
            bos_token: token_field(config.get("bos_token")),
            eos_token: token_field(config.get("eos_token")),
            unk_token: token_field(config.get("unk_token")),
            pad_token: token_field(config.get("pad_token")),
        };
        let chat_templates = match config.get("chat_template") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(source)) => vec![("default".to_owned(), source.clone())],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let name = item.get("name").and_then(Value::as_str);
                    let template = item.get("template").and_then(Value::as_str);
                    match (name, template) {
                        (Some(name), Some(template)) => Ok((name.to_owned(), template.to_owned())),
                        _ => Err(config_error(
                            "chat_template list entries need string \"name\" and \"template\"",
                        )),
                    }
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(config_error(format!(
                    "chat_template must be a string or a list of named templates, got {other}"
                )))
            }
        };
        let eos_id = special_tokens
            .eos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t));
        let eos_token_ids = stop_token_ids(&inner, eos_id);
        Ok(Self {
            inner,
            special_tokens,
            eos_token_ids,
            chat_templates,
        })
    }

    /// Builds the tokenizer described by a GGUF file's metadata.
    pub fn from_gguf_vocab(vocab: &GgufVocab) -> Result<Self> {
        if vocab.model != "gpt2" || vocab.pre.as_deref() != Some("qwen2") {
            return Err(Error::UnsupportedGgufTokenizer {
                model: vocab.model.clone(),
                pre: vocab.pre.clone(),
            });
        }
        let num_tokens = vocab.tokens.len();
        if vocab.token_types.len() != num_tokens {
            return Err(Error::InvalidGgufVocab(format!(
                "{} token types for {num_tokens} tokens",
                vocab.token_types.len()
            )));
        }
        let token_at = |what: &str, id: Option<u32>| -> Result<Option<String>> {
            id.map(|id| {
                vocab.tokens.get(id as usize).cloned().ok_or_else(|| {
                    Error::InvalidGgufVocab(format!(
                        "{what} {id} is outside the vocabulary ({num_tokens} tokens)"
                    ))
                })
            })
            .transpose()
        };
        let special_tokens = SpecialTokens {
            bos_token: token_at("bos_token_id", vocab.bos_token_id)?,
            eos_token: token_at("eos_token_id", vocab.eos_token_id)?,
            unk_token: None,
            pad_token: token_at("padding_token_id", vocab.padding_token_id)?,
        };

        // Every token, added ones included, sits in the BPE vocabulary at its GGUF id, so
        // registering the added tokens below reuses these ids instead of appending new ones.
        let mut bpe_vocab = Vocab::with_capacity(num_tokens);
        for (id, token) in vocab.tokens.iter().enumerate() {
            let id = TokenId::try_from(id).map_err(|_| {
                Error::InvalidGgufVocab(format!("{num_tokens} tokens do not fit u32 ids"))
            })?;
            if bpe_vocab.insert(token.clone(), id).is_some() {
                return Err(Error::InvalidGgufVocab(format!(
                    "token {token:?} appears twice"
                )));
            }
        }
        let merges = vocab
            .merges
            .iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(left, right)| (left.to_owned(), right.to_owned()))
                    .ok_or_else(|| {
                        Error::InvalidGgufVocab(format!("merge {merge:?} is not \"left right\""))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(bpe_vocab, merges)
            .build()
            .map_err(Error::tokenizer)?;

        let mut inner = tokenizers::Tokenizer::new(bpe);
        let split = Split::new(
            SplitPattern::Regex(QWEN2_SPLIT_REGEX.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(Error::tokenizer)?;
        let byte_level = ByteLevel::new(false, false, false);
        inner.with_pre_tokenizer(Some(Sequence::new(vec![split.into(), byte_level.into()])));
        inner.with_decoder(Some(byte_level));
        let post_processor: PostProcessorWrapper = match (
            vocab.add_bos_token,
            &special_tokens.bos_token,
            vocab.bos_token_id,
        ) {
            (Some(true), Some(bos), Some(bos_id)) => TemplateProcessing::builder()
                .try_single(format!("{bos} $A"))
                .and_then(|b| b.try_pair(format!("{bos} $A {bos} $B")))
                .map_err(Error::tokenizer)?
                .special_tokens(vec![(bos.clone(), bos_id)])
                .build()
                .map_err(Error::tokenizer)?
                .into(),
            _ => byte_level.into(),
        };
        inner.with_post_processor(Some(post_processor));

        let added = |wanted: i32, special: bool| -> Vec<AddedToken> {
            vocab
                .tokens
                .iter()
                .zip(&vocab.token_types)
                .filter(|(_, &kind)| kind == wanted)
                .map(|(token, _)| AddedToken::from(token.clone(), special).normalized(false))
                .collect()
        };
        inner
            .add_special_tokens(added(GGUF_TOKEN_CONTROL, true))
            .map_err(Error::tokenizer)?;
        inner
            .add_tokens(added(GGUF_TOKEN_USER_DEFINED, false))
            .map_err(Error::tokenizer)?;

        let eos_token_ids = stop_token_ids(&inner, vocab.eos_token_id);
        let chat_templates = vocab
            .chat_template
            .iter()
            .map(|source| ("default".to_owned(), source.clone()))
            .collect();
        Ok(Self {
            inner,
            special_tokens,
            eos_token_ids,
            chat_templates,
        })
    }

    /// Token ids of `text`. `add_special_tokens` applies the post-processor (e.g. a BOS token);
    /// special-token text inside `text` (`<|im_start|>`) is always matched as that token.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenId>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`; invalid UTF-8 (a character cut between tokens) becomes U+FFFD.
    pub fn decode(&self, ids: &[TokenId], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(Error::tokenizer)
    }

    pub fn token_to_id(&self, token: &str) -> Option<TokenId> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: TokenId) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// An upper bound on the bytes of (normalized) text one token stands for: the longest
    /// vocabulary string in UTF-8. Byte-level and SentencePiece vocabularies spell a byte or a
    /// space with a longer character (`Ġ`, `▁`, `<0x41>`), so this never falls short. A text of
    /// `b` normalized bytes has at least `b / max_token_bytes()` tokens. Walks the vocabulary:
    /// call it once.
    pub fn max_token_bytes(&self) -> usize {
        (0..self.vocab_size() as TokenId)
            .filter_map(|id| self.inner.id_to_token(id))
            .map(|t| t.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }

    /// Each id's bytes (special tokens marked), for structured output's token trie; an error
    /// for a vocabulary that is not byte-level BPE. See [`crate::token_bytes`].
    pub fn token_bytes(&self) -> Result<Vec<Vec<u8>>> {
        crate::token_bytes::token_bytes(&self.inner)
    }

    /// Whether `id` is a special (control) token, i.e. one `skip_special_tokens` drops.
    pub fn is_special_id(&self, id: TokenId) -> bool {
        self.inner
            .id_to_token(id)
            .is_some_and(|token| self.inner.get_added_vocabulary().is_special_token(&token))
    }

    /// Number of ids the tokenizer knows, added tokens included. The model's embedding table
    /// may be larger (Qwen pads it to a multiple of 128).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Ids that end generation: the configured EOS, plus `<|im_end|>` and `<|endoftext|>`
    /// when the vocabulary has them. No duplicates; configured EOS first.
    pub fn eos_token_ids(&self) -> Vec<TokenId> {
        self.eos_token_ids.clone()
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special_tokens
    }

    pub fn bos_token_id(&self) -> Option<TokenId> {
        self.special_tokens
            .bos_token
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    pub fn pad_token_id(&self) -> Option<TokenId> {
        self.special_tokens
            .pad_token
            .as_deref()
            .and_then(|t| self.token_to_id(t))
    }

    /// The special tokens a chat template sees as variables (`bos_token`, `eos_token`, ...),
    /// only those that are set, like `transformers`' `special_tokens_map`.
    pub fn special_tokens_map(&self) -> serde_json::Map<String, Value> {
        let SpecialTokens {
            bos_token,
            eos_token,
            unk_token,
            pad_token,
        } = &self.special_tokens;
        [
            ("bos_token", bos_token),
            ("eos_token", eos_token),
            ("unk_token", unk_token),
            ("pad_token", pad_token),
        ]
        .into_iter()
        .filter_map(|(name, token)| {
            token
                .as_ref()
                .map(|t| (name.to_owned(), Value::String(t.clone())))
        })
        .collect()
    }

    /// The default chat template (the plain string, or the entry named `"default"`).
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template_named("default")
    }

    /// A named chat template (`"tool_use"`, ...) from the list form of `chat_template`.
    pub fn chat_template_named(&self, name: &str) -> Option<&str> {
        self.chat_templates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, source)| source.as_str())
    }

    /// Names of the chat templates, default first when present.
    pub fn chat_template_names(&self) -> impl Iterator<Item = &str> {
        self.chat_templates.iter().map(|(name, _)| name.as_str())
    }

    /// Replaces the default chat template (e.g. from a `--chat-template` file).
    pub fn set_chat_template(&mut self, source: String) {
        self.chat_templates.retain(|(name, _)| name != "default");
        self.chat_templates
            .insert(0, ("default".to_owned(), source));
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn read_json_if_exists(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| Error::Config {
            path: path.to_owned(),
            message: err.to_string(),
        })
}

/// An error in `tokenizer_config.json`; [`Tokenizer::from_dir`] fills in the full path.
fn config_error(message: impl Into<String>) -> Error {
    Error::Config {
        path: "tokenizer_config.json".into(),
        message: message.into(),
    }
}

/// A special token field of `tokenizer_config.json`: `"<|im_end|>"` or `{"content": "<|im_end|>", ...}`.
fn token_field(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

/// Adds the entries of `added_tokens_decoder` that `tokenizer.json` lacks, and checks that the
/// ones it has sit at the declared ids.
fn add_config_added_tokens(
    inner: &mut tokenizers::Tokenizer,
    decoder: Option<&Value>,
) -> Result<()> {
    let Some(Value::Object(entries)) = decoder else {
        return Ok(());
    };
    for (id, entry) in entries {
        let declared: TokenId = id.parse().map_err(|_| {
            config_error(format!("added_tokens_decoder key {id:?} is not a token id"))
        })?;
        let Some(content) = entry.get("content").and_then(Value::as_str) else {
            return Err(config_error(format!(
                "added_tokens_decoder[{id}] has no \"content\""
            )));
        };
        let flag =
            |name: &str, default: bool| entry.get(name).and_then(Value::as_bool).unwrap_or(default);
        if inner.token_to_id(content).is_none() {
            let special = flag("special", false);
            let token = AddedToken::from(content, special)
                .single_word(flag("single_word", false))
                .lstrip(flag("lstrip", false))
                .rstrip(flag("rstrip", false))
                .normalized(flag("normalized", !special));
            if special {
                inner
                    .add_special_tokens([token])
                    .map_err(Error::tokenizer)?;
            } else {
                inner.add_tokens([token]).map_err(Error::tokenizer)?;
            }
        }
        let actual = inner.token_to_id(content);
        if actual != Some(declared) {
            return Err(config_error(format!(
                "added token {content:?} is id {declared} in tokenizer_config.json but {actual:?} in tokenizer.json"
            )));
        }
    }
    Ok(())
}

fn stop_token_ids(inner: &tokenizers::Tokenizer, eos: Option<TokenId>) -> Vec<TokenId> {
    let mut ids = Vec::new();
    if let Some(id) = eos {
        ids.push(id);
    }
    for token in QWEN_STOP_TOKENS {
        if let Some(id) = inner.token_to_id(token) {
            push_unique(&mut ids, id);
        }
    }
    ids
}

fn push_unique(ids: &mut Vec<TokenId>, id: TokenId) {
    if !ids.contains(&id) {
        ids.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny byte-level vocabulary: single bytes `a`, `b`, `Ġ` (space), a merge `a b`, and
    /// Qwen's control and user-defined tokens.
    fn tiny_vocab() -> GgufVocab {
        let tokens = [
            "a",
            "b",
            "Ġ",
            "ab",
            "<|endoftext|>",
            "<|im_end|>",
            "<think>",
        ];
        GgufVocab {
            model: "gpt2".into(),
            pre: Some("qwen2".into()),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_types: vec![1, 1, 1, 1, 3, 3, 4],
            merges: vec!["a b".into()],
            bos_token_id: Some(4),
            eos_token_id: Some(5),
            padding_token_id: Some(4),
            add_bos_token: Some(false),
            chat_template: Some("{{ messages[0].content }}".into()),
        }
    }

    #[test]
    fn gguf_vocab_builds_a_byte_level_bpe() {
        let tok = Tokenizer::from_gguf_vocab(&tiny_vocab()).unwrap();
        assert_eq!(tok.encode("ab a", false).unwrap(), vec![3, 2, 0]);
        assert_eq!(
            tok.encode("ab<think>b<|im_end|>", false).unwrap(),
            vec![3, 6, 1, 5]
        );
        assert_eq!(tok.decode(&[3, 2, 0, 5], false).unwrap(), "ab a<|im_end|>");
        assert_eq!(
            tok.decode(&[3, 6, 5], true).unwrap(),
            "ab<think>",
            "only control tokens are skipped"
        );
        assert!(tok.is_special_id(5) && !tok.is_special_id(6) && !tok.is_special_id(0));
        assert_eq!(tok.eos_token_ids(), vec![5, 4]);
        assert_eq!(tok.vocab_size(), 7);
        assert_eq!(tok.chat_template(), Some("{{ messages[0].content }}"));
        assert_eq!(
            tok.special_tokens().bos_token.as_deref(),
            Some("<|endoftext|>")
        );
        let map = tok.special_tokens_map();
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["bos_token", "eos_token", "pad_token"]
        );
    }

    #[test]
    fn add_bos_token_prepends_bos_only_with_special_tokens() {
        let mut vocab = tiny_vocab();
        vocab.add_bos_token = Some(true);
        let tok = Tokenizer::from_gguf_vocab(&vocab).unwrap();
        assert_eq!(tok.encode("ab", true).unwrap(), vec![4, 3]);
        assert_eq!(tok.encode("ab", false).unwrap(), vec![3]);
    }

    #[test]
    fn unsupported_gguf_tokenizers_are_named() {
        let mut vocab = tiny_vocab();
        vocab.model = "llama".into();
        let err = Tokenizer::from_gguf_vocab(&vocab).unwrap_err().to_string();
        assert!(
            err.contains("\"llama\"") && err.contains("\"qwen2\""),
            "{err}"
        );
        let mut vocab = tiny_vocab();
        vocab.pre = Some("llama-bpe".into());
        let err = Tokenizer::from_gguf_vocab(&vocab).unwrap_err().to_string();
        assert!(err.contains("llama-bpe"), "{err}");
    }

    #[test]
    fn inconsistent_gguf_vocab_is_rejected() {
        let mut vocab = tiny_vocab();
        vocab.token_types.pop();
        assert!(matches!(
            Tokenizer::from_gguf_vocab(&vocab),
            Err(Error::InvalidGgufVocab(_))
        ));
        let mut vocab = tiny_vocab();
        vocab.merges.push("ab".into());
        assert!(matches!(
            Tokenizer::from_gguf_vocab(&vocab),
            Err(Error::InvalidGgufVocab(_))
        ));
        let mut vocab = tiny_vocab();
        vocab.eos_token_id = Some(99);
        assert!(matches!(
            Tokenizer::from_gguf_vocab(&vocab),
            Err(Error::InvalidGgufVocab(_))
        ));
    }

    #[test]
    fn config_fields_accept_both_token_forms_and_template_lists() {
        let base = Tokenizer::from_gguf_vocab(&tiny_vocab())
            .unwrap()
            .inner()
            .clone();
        let config = serde_json::json!({
            "eos_token": {"content": "<|im_end|>", "special": true},
            "pad_token": "<|endoftext|>",
            "bos_token": null,
            "chat_template": [
                {"name": "default", "template": "D"},
                {"name": "tool_use", "template": "T"}
            ],
            "added_tokens_decoder": {"5": {"content": "<|im_end|>", "special": true}}
        });
        let tok = Tokenizer::from_tokenizer_and_config(base.clone(), &config).unwrap();
        assert_eq!(
            tok.special_tokens().eos_token.as_deref(),
            Some("<|im_end|>")
        );
        assert_eq!(
            tok.special_tokens().pad_token.as_deref(),
            Some("<|endoftext|>")
        );
        assert_eq!(tok.special_tokens().bos_token, None);
        assert_eq!(tok.chat_template(), Some("D"));
        assert_eq!(tok.chat_template_named("tool_use"), Some("T"));
        assert_eq!(tok.eos_token_ids(), vec![5, 4]);

        let wrong_id =
            serde_json::json!({"added_tokens_decoder": {"6": {"content": "<|im_end|>"}}});
        assert!(Tokenizer::from_tokenizer_and_config(base.clone(), &wrong_id).is_err());
        let new_token =
            serde_json::json!({"added_tokens_decoder": {"7": {"content": "<x>", "special": true}}});
        let tok = Tokenizer::from_tokenizer_and_config(base, &new_token).unwrap();
        assert_eq!(tok.token_to_id("<x>"), Some(7));
    }
}
