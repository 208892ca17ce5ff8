//! What every handler shares: the server's settings, its lifecycle (draining, requests in
//! flight), its HTTP metrics and, once loading is done, the model (engine handle, tokenizer,
//! chat template). The model slot is empty while the model loads, so `/health` and `/ready`
//! answer 503 and generation routes answer 503 until it is filled.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use kestrel_engine::{EngineHandle, GrammarCompiler, SamplingParams};
use kestrel_text::reasoning::ThinkTokens;
use kestrel_text::{ChatTemplate, Tokenizer};

use crate::error::ApiError;
use crate::lifecycle::Lifecycle;
use crate::metrics::HttpMetrics;
use crate::response_cache::ResponseCache;

/// Which field carries reasoning in responses (`--reasoning-field`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReasoningField {
    /// `reasoning_content` (SGLang, llama.cpp, mistral.rs) and `reasoning` (vLLM ≥ 0.16, Ollama).
    #[default]
    Both,
    ReasoningContent,
    Reasoning,
}

impl FromStr for ReasoningField {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "both" => Ok(Self::Both),
            "reasoning_content" => Ok(Self::ReasoningContent),
            "reasoning" => Ok(Self::Reasoning),
            _ => Err(format!(
                "expected both, reasoning_content or reasoning, got {s:?}"
            )),
        }
    }
}

impl ReasoningField {
    /// `(reasoning_content, reasoning)` for a piece of reasoning text.
    pub fn split(self, text: Option<String>) -> (Option<String>, Option<String>) {
        match self {
            Self::Both => (text.clone(), text),
            Self::ReasoningContent => (text, None),
            Self::Reasoning => (None, text),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub served_model_name: String,
    /// `--api-key` (repeatable): one of them is required as `Authorization: Bearer <key>` on
    /// every route but /health, /metrics, /version and the chat page; none = open.
    pub api_keys: Vec<String>,
    /// `--prefix-cache-salt-by-api-key`: callers with different keys never share prefix-cache
    /// blocks (the key is folded into the cache salt).
    pub cache_salt_by_api_key: bool,
    /// `--cors-allow-origin` (`*` allows any); empty = no CORS headers.
    pub cors_allow_origins: Vec<String>,
    pub reasoning_field: ReasoningField,
    /// Request bodies larger than this are 413.
    pub max_body_bytes: usize,
    /// Most choices (`n`) per request.
    pub max_n: usize,
    /// Serve the built-in chat page at `/` (`--no-webui` turns it off).
    pub webui: bool,
    /// `--thinking-budget`: most reasoning tokens before `</think>` is forced, for requests
    /// that set no `thinking_budget` of their own; `None` is no limit.
    pub thinking_budget: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            served_model_name: "kestrel".into(),
            api_keys: Vec::new(),
            cache_salt_by_api_key: false,
            cors_allow_origins: Vec::new(),
            reasoning_field: ReasoningField::Both,
            max_body_bytes: 32 * 1024 * 1024,
            max_n: 16,
            webui: true,
            thinking_budget: None,
        }
    }
}

/// The loaded model as the server sees it.
pub struct Model {
    pub engine: EngineHandle,
    pub tokenizer: Arc<Tokenizer>,
    /// `None` when the model has no chat template: chat routes answer 400.
    pub template: Option<Arc<ChatTemplate>>,
    /// `None` when the vocabulary has no `<think>`/`</think>`: no reasoning split.
    pub think_tokens: Option<ThinkTokens>,
    pub eos_token_ids: Vec<u32>,
    /// Sampling defaults from `generation_config.json`, before a request's own fields.
    pub default_sampling: SamplingParams,
    pub max_model_len: usize,
    /// A prompt text longer than this cannot fit in `max_model_len` tokens, whatever it says:
    /// it is refused before the (costly) tokenization. See [`Model::prompt_bytes_bound`].
    pub max_prompt_bytes: usize,
    pub created: u64,
    /// What the response cache's key calls this model: a digest of its weights and of the
    /// settings that change its arithmetic. `None`: the response cache is not used.
    pub identity: Option<String>,
    /// Structured output's grammar compiler (the token trie), built on first use: most
    /// servers never need it, and it takes a walk over the vocabulary.
    grammar: OnceLock<Result<GrammarCompiler, String>>,
}

impl Model {
    /// The model as served. A chat template that does not compile is an error (start-up fails
    /// with the template's message); a model without one serves completions only.
    pub fn new(
        engine: EngineHandle,
        tokenizer: Tokenizer,
        default_sampling: SamplingParams,
        extra_eos: &[u32],
    ) -> Result<Self, kestrel_text::Error> {
        let template = match ChatTemplate::from_tokenizer(&tokenizer) {
            Ok(t) => Some(Arc::new(t)),
            Err(kestrel_text::Error::NoChatTemplate) => None,
            Err(e) => return Err(e),
        };
        let think_tokens = match (
            tokenizer.token_to_id("<think>"),
            tokenizer.token_to_id("</think>"),
        ) {
            (Some(start), Some(end)) => Some(ThinkTokens {
                think_start_id: start,
                think_end_id: end,
                tool_call_start_id: tokenizer.token_to_id("<tool_call>"),
            }),
            _ => None,
        };
        let mut eos_token_ids = tokenizer.eos_token_ids();
        for &id in extra_eos {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let max_model_len = engine.config().max_model_len;
        let max_prompt_bytes = Self::prompt_bytes_bound(tokenizer.max_token_bytes(), max_model_len);
        Ok(Self {
            engine,
            tokenizer: Arc::new(tokenizer),
            template,
            think_tokens,
            eos_token_ids,
            default_sampling,
            max_model_len,
            max_prompt_bytes,
            created: unix_now(),
            identity: None,
            grammar: OnceLock::new(),
        })
    }

    /// The grammar compiler for this model's vocabulary (built once, on first use); an error
    /// says why the vocabulary cannot have one (not byte-level BPE).
    pub fn grammar_compiler(&self) -> Result<&GrammarCompiler, String> {
        self.grammar
            .get_or_init(|| {
                let bytes = self.tokenizer.token_bytes().map_err(|e| e.to_string())?;
                let eos = *self
                    .eos_token_ids
                    .first()
                    .ok_or("the model has no end-of-sequence token")?;
                let vocab = self.engine.vocab_size().max(bytes.len());
                GrammarCompiler::new(bytes, eos, vocab).map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Names the model for the response cache (see [`Model::identity`]).
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    /// Most bytes of text that `max_model_len` tokens can stand for. Each token covers at most
    /// `max_token_bytes` bytes of normalized text, and Unicode normalization (NFC/NFKC, as
    /// Qwen's tokenizer applies) shrinks text at most threefold (Hangul jamo to syllables,
    /// full-width letters to ASCII); 4 leaves a margin.
    pub fn prompt_bytes_bound(max_token_bytes: usize, max_model_len: usize) -> usize {
        max_token_bytes
            .saturating_mul(max_model_len)
            .saturating_mul(4)
    }

    /// Refuses a prompt text that cannot fit in the context before tokenizing it (a 10 MB
    /// message would otherwise cost seconds of tokenizer time to learn the same).
    pub fn check_prompt_bytes(&self, text: &str, field: &'static str) -> Result<(), ApiError> {
        if text.len() > self.max_prompt_bytes {
            return Err(ApiError::bad_request(
                field,
                format!(
                    "this model's maximum context length is {} tokens, which no text over {} \
                     bytes fits in; the `{field}` text is {} bytes",
                    self.max_model_len,
                    self.max_prompt_bytes,
                    text.len()
                ),
            ));
        }
        Ok(())
    }
}

pub struct AppState {
    pub config: ServerConfig,
    pub lifecycle: Arc<Lifecycle>,
    pub http_metrics: HttpMetrics,
    /// `--response-cache`; `None`: off.
    pub response_cache: Option<Arc<ResponseCache>>,
    model: OnceLock<Arc<Model>>,
    load_error: OnceLock<String>,
}

impl AppState {
    pub fn new(config: ServerConfig) -> Arc<Self> {
        Self::with_response_cache(config, None)
    }

    pub fn with_response_cache(
        config: ServerConfig,
        response_cache: Option<ResponseCache>,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            lifecycle: Arc::default(),
            http_metrics: HttpMetrics::default(),
            response_cache: response_cache.map(Arc::new),
            model: OnceLock::new(),
            load_error: OnceLock::new(),
        })
    }

    /// Fills the model slot once loading is done; later calls are ignored.
    pub fn set_model(&self, model: Model) {
        if self.response_cache.is_some() && model.identity.is_none() {
            tracing::warn!("the model has no identity: the response cache is not used");
        }
        let _ = self.model.set(Arc::new(model));
    }

    /// Records why loading failed; /health then reports it.
    pub fn set_load_error(&self, message: String) {
        let _ = self.load_error.set(message);
    }

    /// Readiness (`/ready`): loaded, engine alive, not draining.
    pub fn is_ready(&self) -> bool {
        !self.lifecycle.is_draining() && self.model.get().is_some_and(|m| m.engine.is_healthy())
    }

    pub fn model(&self) -> Result<Arc<Model>, ApiError> {
        match (self.model.get(), self.load_error.get()) {
            (Some(m), _) => Ok(m.clone()),
            (None, Some(e)) => Err(ApiError::Unavailable(format!(
                "the model failed to load: {e}"
            ))),
            (None, None) => Err(ApiError::Unavailable("the model is still loading".into())),
        }
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasoning_field_flag() {
        let r = || Some("why".to_string());
        assert_eq!(
            "both".parse::<ReasoningField>().unwrap().split(r()),
            (r(), r())
        );
        assert_eq!(
            "reasoning_content"
                .parse::<ReasoningField>()
                .unwrap()
                .split(r()),
            (r(), None)
        );
        assert_eq!(
            "reasoning".parse::<ReasoningField>().unwrap().split(r()),
            (None, r())
        );
        assert!("thoughts".parse::<ReasoningField>().is_err());
    }
}
