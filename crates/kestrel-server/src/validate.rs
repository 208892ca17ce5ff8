//! Request fields → a checked generation plan. Every range error is a 400 that names the field
//! (TGI style); nothing past this point needs to re-check the request.

use kestrel_engine::SamplingParams;
use kestrel_engine::MAX_TOP_LOGPROBS;
use kestrel_protocol::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, MessageContent, SamplingOptions, Stop,
    Tool,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::{Model, ServerConfig};
use crate::structured::{self, GrammarRequest};

/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;

/// Longest stop string, in bytes: the matcher holds back this much text.
pub const MAX_STOP_STRING_BYTES: usize = 1024;

/// Roles a message may have (`developer` is OpenAI's newer name for `system`).
const KNOWN_ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// What validation needs to know about the server and its model (no engine: the fuzz targets
/// and unit tests build one directly).
#[derive(Clone, Debug)]
pub struct Limits {
    pub served_model_name: String,
    pub max_n: usize,
    pub max_model_len: usize,
    pub vocab_size: usize,
    /// Sampling defaults from `generation_config.json`, before a request's own fields.
    pub default_sampling: SamplingParams,
    /// `--thinking-budget`, for requests without their own.
    pub thinking_budget: Option<usize>,
}

impl Limits {
    pub fn new(model: &Model, config: &ServerConfig) -> Self {
        Self {
            served_model_name: config.served_model_name.clone(),
            max_n: config.max_n,
            max_model_len: model.max_model_len,
            vocab_size: model.tokenizer.vocab_size(),
            default_sampling: model.default_sampling.clone(),
            thinking_budget: config.thinking_budget,
        }
    }
}

/// The sampling and output fields shared by chat and text completions, checked.
#[derive(Clone, Debug)]
pub struct GenerationPlan {
    /// With the request's seed; choice `i` uses `seed + i`.
    pub sampling: SamplingParams,
    /// `None`: up to the end of the context (vLLM's default).
    pub max_tokens: Option<usize>,
    /// The request set `max_tokens` itself (the completions default of 16 is not its choice).
    pub max_tokens_set: bool,
    /// The request field `max_tokens` came from (`max_tokens` or `max_completion_tokens`).
    pub max_tokens_field: &'static str,
    /// The request field holding the prompt (`messages` or `prompt`), for errors about its length.
    pub prompt_field: &'static str,
    pub min_tokens: usize,
    pub n: usize,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// As the request sent it; part of the response cache's key.
    pub response_format: Option<Value>,
    /// The output's grammar (from `response_format`, `structured_outputs`, `guided_*` or a
    /// forced tool call), compiled once the prompt is rendered.
    pub grammar: Option<GrammarRequest>,
    /// Most reasoning tokens before `</think>` is forced (the request's, or the server's).
    pub thinking_budget: Option<usize>,
    pub stream: bool,
    pub include_usage: bool,
    /// vLLM's `stream_options.continuous_usage_stats`: usage on every chunk.
    pub continuous_usage: bool,
    /// The request's `cache_salt` (the server may fold the API key in before submitting).
    pub cache_salt: Option<String>,
    /// `"cache": false` opts out of the response cache (neither read nor written).
    pub cache: bool,
}

impl GenerationPlan {
    /// The `max_tokens` to submit for a prompt of `prompt_len` tokens; over the context → 400
    /// naming the field to change: the prompt when it leaves no room (or the default
    /// `max_tokens` was used), else the `max_tokens` the request set.
    pub fn max_tokens_for(
        &self,
        prompt_len: usize,
        max_model_len: usize,
    ) -> Result<usize, ApiError> {
        if prompt_len == 0 {
            return Err(ApiError::bad_request(
                self.prompt_field,
                format!("`{}` is empty after tokenization", self.prompt_field),
            ));
        }
        let room = max_model_len.saturating_sub(prompt_len);
        let max_tokens = self.max_tokens.unwrap_or(room);
        if max_tokens == 0 || prompt_len + max_tokens > max_model_len {
            return Err(ApiError::bad_request(
                self.too_long_param(prompt_len, max_model_len),
                format!(
                    "this model's maximum context length is {max_model_len} tokens, but the request asks for \
                     {prompt_len} prompt tokens (`{}`) + {max_tokens} `{}`; shorten the prompt or lower `{}`",
                    self.prompt_field, self.max_tokens_field, self.max_tokens_field
                ),
            ));
        }
        Ok(max_tokens)
    }

    /// The field to blame when a prompt of `prompt_len` tokens plus `max_tokens` does not fit:
    /// the prompt when it leaves no room or `max_tokens` was not the request's own choice, else
    /// the `max_tokens` field the request set.
    pub fn too_long_param(&self, prompt_len: usize, max_model_len: usize) -> &'static str {
        if prompt_len >= max_model_len || !self.max_tokens_set {
            self.prompt_field
        } else {
            self.max_tokens_field
        }
    }

    /// Sampling for choice `index` (distinct seeds so n > 1 choices differ but stay reproducible).
    pub fn sampling_for(&self, index: usize) -> SamplingParams {
        let mut s = self.sampling.clone();
        s.seed = s.seed.map(|seed| seed.wrapping_add(index as u64));
        s
    }

    /// EOS + the request's stop ids, as the engine wants them (empty EOS part for `ignore_eos`).
    pub fn engine_stop_ids(&self, eos_token_ids: &[u32]) -> Vec<u32> {
        let mut ids: Vec<u32> = if self.ignore_eos {
            Vec::new()
        } else {
            eos_token_ids.to_vec()
        };
        for &id in &self.stop_token_ids {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }
}

/// What differs between the endpoints around the shared [`SamplingOptions`].
struct Endpoint {
    /// Chat's `max_completion_tokens` or `options.max_tokens`.
    max_tokens: Option<i64>,
    /// Used when the request sets none (the completions endpoint's 16).
    default_max_tokens: Option<usize>,
    max_tokens_field: &'static str,
    prompt_field: &'static str,
    /// Top logprobs per token, when logprobs were asked for.
    logprobs: Option<usize>,
}

fn check_model_name(requested: Option<&str>, limits: &Limits) -> Result<(), ApiError> {
    match requested {
        Some(name) if !name.is_empty() && name != limits.served_model_name => {
            Err(ApiError::NotFound(format!(
                "the model `{name}` does not exist; this server serves `{}`",
                limits.served_model_name
            )))
        }
        _ => Ok(()),
    }
}

fn count(
    param: &'static str,
    value: Option<i64>,
    min: i64,
    max: i64,
) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v < min || v > max => Err(ApiError::bad_request(
            param,
            format!("`{param}` must be between {min} and {max}, got {v}"),
        )),
        Some(v) => Ok(Some(v as usize)),
    }
}

fn plan(
    o: &SamplingOptions,
    endpoint: Endpoint,
    limits: &Limits,
) -> Result<GenerationPlan, ApiError> {
    let grammar = structured::from_options(o)?;
    let thinking_budget = structured::thinking_budget(o, limits.thinking_budget)?;
    // `stream_options` without `stream` has nothing to act on: a non-streamed response always
    // carries its usage.
    let stream = o.stream.unwrap_or(false);
    if o.cache_salt.as_deref() == Some("") {
        return Err(ApiError::bad_request(
            "cache_salt",
            "`cache_salt` must be a non-empty string when given",
        ));
    }
    let max_len = limits.max_model_len as i64;
    let max_tokens_set = endpoint.max_tokens.is_some();
    let max_tokens = count(endpoint.max_tokens_field, endpoint.max_tokens, 1, max_len)?
        .or(endpoint.default_max_tokens);
    let min_tokens = count("min_tokens", o.min_tokens, 0, max_len)?.unwrap_or(0);
    if let Some(max) = max_tokens.filter(|&m| m < min_tokens) {
        return Err(ApiError::bad_request(
            "min_tokens",
            format!(
                "`min_tokens` ({min_tokens}) must not exceed `{}` ({max})",
                endpoint.max_tokens_field
            ),
        ));
    }
    let n = count("n", o.n, 1, limits.max_n as i64)?.unwrap_or(1);
    let stop = o.stop.clone().map(Stop::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::bad_request(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                stop.len()
            ),
        ));
    }
    if let Some(i) = stop.iter().position(String::is_empty) {
        return Err(ApiError::BadRequest {
            message: format!("stop[{i}]: stop strings must not be empty"),
            param: Some("stop".into()),
        });
    }
    if let Some(long) = stop.iter().find(|s| s.len() > MAX_STOP_STRING_BYTES) {
        return Err(ApiError::bad_request(
            "stop",
            format!(
                "stop strings are at most {MAX_STOP_STRING_BYTES} bytes, got one of {}",
                long.len()
            ),
        ));
    }
    let vocab_size = limits.vocab_size;
    let stop_token_ids = o.stop_token_ids.clone().unwrap_or_default();
    if let Some(id) = stop_token_ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ApiError::bad_request(
            "stop_token_ids",
            format!("token id {id} is out of the vocabulary ({vocab_size})"),
        ));
    }

    let mut sampling = limits.default_sampling.clone();
    if let Some(t) = o.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = o.top_p {
        sampling.top_p = p;
    }
    if let Some(k) = o.top_k {
        // vLLM: -1 (and 0) disable top-k.
        if k < -1 {
            return Err(ApiError::bad_request(
                "top_k",
                format!("`top_k` must be -1 (off) or >= 0, got {k}"),
            ));
        }
        sampling.top_k = usize::try_from(k.max(0)).unwrap_or(usize::MAX);
    }
    if let Some(m) = o.min_p {
        sampling.min_p = m;
    }
    if let Some(p) = o.presence_penalty {
        sampling.presence_penalty = p;
    }
    if let Some(p) = o.frequency_penalty {
        sampling.frequency_penalty = p;
    }
    if let Some(p) = o.repetition_penalty {
        sampling.repetition_penalty = p;
    }
    if let Some(bias) = &o.logit_bias {
        let mut entries = Vec::with_capacity(bias.len());
        for (key, &value) in bias {
            let id: u32 = key.parse().map_err(|_| {
                ApiError::bad_request(
                    "logit_bias",
                    format!("`logit_bias` keys must be token ids, got {key:?}"),
                )
            })?;
            if id as usize >= vocab_size {
                return Err(ApiError::bad_request(
                    "logit_bias",
                    format!("token id {id} is out of the vocabulary ({vocab_size})"),
                ));
            }
            entries.push((id, value));
        }
        entries.sort_by_key(|&(id, _)| id);
        sampling.logit_bias = entries;
    }
    sampling.seed = o.seed.map(|s| s as u64);
    sampling.logprobs = endpoint.logprobs;
    sampling.validate()?;
    let options = o.stream_options.as_ref();
    Ok(GenerationPlan {
        sampling,
        max_tokens,
        max_tokens_set,
        max_tokens_field: endpoint.max_tokens_field,
        prompt_field: endpoint.prompt_field,
        min_tokens,
        n,
        stop,
        stop_token_ids,
        ignore_eos: o.ignore_eos.unwrap_or(false),
        include_stop_str_in_output: o.include_stop_str_in_output.unwrap_or(false),
        skip_special_tokens: o.skip_special_tokens.unwrap_or(true),
        response_format: o.response_format.clone(),
        grammar,
        thinking_budget,
        stream,
        include_usage: stream && options.is_some_and(|o| o.include_usage),
        continuous_usage: stream && options.is_some_and(|o| o.continuous_usage_stats),
        cache_salt: o.cache_salt.clone(),
        cache: o.cache.unwrap_or(true),
    })
}

/// A chat request, checked, with what the template needs.
#[derive(Debug)]
pub struct ChatPlan {
    pub generation: GenerationPlan,
    /// Messages normalised for the template (null content → "", text parts joined).
    pub messages: Vec<Value>,
    pub tools: Option<Vec<Value>>,
    /// As the request sent it, for the response cache's key.
    pub tool_choice: Option<Value>,
    pub tool_parsing: bool,
    /// `parallel_tool_calls: false`: at most one tool call per choice.
    pub parallel_tool_calls: bool,
    pub chat_template_kwargs: Map<String, Value>,
    pub add_generation_prompt: bool,
    /// `include_reasoning` / `return_reasoning`: false drops reasoning from the response.
    pub include_reasoning: bool,
    pub logprobs: bool,
    /// The template's thinking switch is on (its default): a grammar starts after `</think>`.
    pub thinking_on: bool,
}

pub fn validate_chat(req: &ChatCompletionRequest, limits: &Limits) -> Result<ChatPlan, ApiError> {
    check_model_name(req.model.as_deref(), limits)?;
    let top_logprobs = count("top_logprobs", req.top_logprobs, 0, MAX_TOP_LOGPROBS as i64)?;
    let logprobs = req.logprobs.unwrap_or(false);
    if top_logprobs.is_some_and(|n| n > 0) && !logprobs {
        return Err(ApiError::bad_request(
            "top_logprobs",
            "`top_logprobs` requires `logprobs: true`",
        ));
    }
    let o = &req.sampling;
    if o.max_tokens.is_some()
        && req.max_completion_tokens.is_some()
        && o.max_tokens != req.max_completion_tokens
    {
        return Err(ApiError::bad_request(
            "max_completion_tokens",
            "`max_tokens` and `max_completion_tokens` disagree",
        ));
    }
    let mut generation = plan(
        o,
        Endpoint {
            max_tokens: req.max_completion_tokens.or(o.max_tokens),
            max_tokens_field: if req.max_completion_tokens.is_some() {
                "max_completion_tokens"
            } else {
                "max_tokens"
            },
            default_max_tokens: None,
            prompt_field: "messages",
            logprobs: logprobs.then_some(top_logprobs.unwrap_or(0)),
        },
        limits,
    )?;
    let messages = normalize_messages(&req.messages)?;
    validate_tool_choice(
        req.tool_choice.as_ref(),
        req.tools.as_deref().unwrap_or(&[]),
    )?;
    let parallel_tool_calls = req.parallel_tool_calls.unwrap_or(true);
    let forced_call = structured::tool_grammar(
        req.tools.as_deref().unwrap_or(&[]),
        req.tool_choice.as_ref(),
        parallel_tool_calls,
    );
    let tools = validate_tools(req.tools.as_deref(), forced_call.is_some())?;
    if let Some(call) = forced_call {
        if let Some(g) = &generation.grammar {
            return Err(ApiError::BadRequest {
                message: format!(
                    "`tool_choice` forces a tool call, which cannot be combined with `{}`",
                    g.param
                ),
                param: Some("tool_choice".into()),
            });
        }
        generation.grammar = Some(call);
    }
    let chat_template_kwargs = thinking_kwargs(
        req.chat_template_kwargs.as_ref(),
        req.enable_thinking,
        req.reasoning_effort.as_deref(),
    )?;
    let num_tools = req.tools.as_ref().map_or(0, Vec::len);
    Ok(ChatPlan {
        generation,
        messages,
        tools,
        tool_choice: req.tool_choice.clone(),
        tool_parsing: kestrel_text::tool_calls::tool_parsing_enabled(
            num_tools,
            req.tool_choice.as_ref(),
        ),
        parallel_tool_calls,
        thinking_on: chat_template_kwargs.get("enable_thinking") != Some(&Value::Bool(false)),
        chat_template_kwargs,
        add_generation_prompt: req.add_generation_prompt.unwrap_or(true),
        include_reasoning: req.include_reasoning.unwrap_or(true)
            && req.return_reasoning.unwrap_or(true),
        logprobs,
    })
}

/// A text-completions request, checked.
#[derive(Debug)]
pub struct CompletionPlan {
    pub generation: GenerationPlan,
    pub logprobs: Option<usize>,
}

pub fn validate_completion(
    req: &CompletionRequest,
    limits: &Limits,
) -> Result<CompletionPlan, ApiError> {
    check_model_name(req.model.as_deref(), limits)?;
    let logprobs = count("logprobs", req.logprobs, 0, MAX_TOP_LOGPROBS as i64)?;
    if req.echo.unwrap_or(false) {
        return Err(ApiError::bad_request("echo", "`echo` is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix", "`suffix` is not supported"));
    }
    for (param, set) in [
        ("thinking_budget", req.sampling.thinking_budget.is_some()),
        (
            "thinking_token_budget",
            req.sampling.thinking_token_budget.is_some(),
        ),
    ] {
        if set {
            return Err(ApiError::bad_request(
                param,
                format!("`{param}` applies to chat completions (the completions endpoint has no reasoning phase)"),
            ));
        }
    }
    if let Some(best_of) = req.best_of {
        if best_of != req.sampling.n.unwrap_or(1) {
            return Err(ApiError::bad_request(
                "best_of",
                "`best_of` other than `n` is not supported",
            ));
        }
    }
    let generation = plan(
        &req.sampling,
        Endpoint {
            max_tokens: req.sampling.max_tokens,
            // The legacy endpoint's default is 16 tokens (OpenAI, vLLM).
            default_max_tokens: Some(16),
            max_tokens_field: "max_tokens",
            prompt_field: "prompt",
            logprobs,
        },
        limits,
    )?;
    Ok(CompletionPlan {
        generation,
        logprobs,
    })
}

/// The request of another API (TGI's `/generate`, the `EventSource` route) once its fields were
/// mapped onto [`SamplingOptions`]: checked like the OpenAI endpoints, errors naming that API's
/// own fields. `max_tokens` is `o.max_tokens` (none: up to the end of the context).
pub fn validate_options(
    o: &SamplingOptions,
    max_tokens_field: &'static str,
    prompt_field: &'static str,
    logprobs: Option<usize>,
    limits: &Limits,
) -> Result<GenerationPlan, ApiError> {
    plan(
        o,
        Endpoint {
            max_tokens: o.max_tokens,
            default_max_tokens: None,
            max_tokens_field,
            prompt_field,
            logprobs,
        },
        limits,
    )
}

/// Messages as the chat template takes them. Qwen3's template fails on `content: null`
/// (llama.cpp #13178), so null becomes "" and text parts are joined into one string;
/// `reasoning` on input is accepted as an alias of `reasoning_content`.
pub fn normalize_messages(messages: &[ChatMessage]) -> Result<Vec<Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        if !KNOWN_ROLES.contains(&m.role.as_str()) {
            return Err(ApiError::BadRequest {
                message: format!(
                    "messages[{i}].role: unknown role {:?}; expected one of {}",
                    m.role,
                    KNOWN_ROLES.join(", ")
                ),
                param: Some(format!("messages[{i}].role")),
            });
        }
        let content = match &m.content {
            None => String::new(),
            Some(MessageContent::Text(s)) => s.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for (j, part) in parts.iter().enumerate() {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(t)) => text.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::BadRequest {
                                message: format!(
                                    "messages[{i}].content[{j}]: only text content parts are supported, got type {kind:?}"
                                ),
                                param: Some(format!("messages[{i}].content[{j}]")),
                            })
                        }
                    }
                }
                text
            }
        };
        let mut obj = Map::new();
        obj.insert("role".into(), Value::String(m.role.clone()));
        obj.insert("content".into(), Value::String(content));
        if let Some(name) = &m.name {
            obj.insert("name".into(), Value::String(name.clone()));
        }
        if let Some(calls) = &m.tool_calls {
            obj.insert(
                "tool_calls".into(),
                Value::Array(calls.iter().map(normalize_tool_call).collect()),
            );
        }
        if let Some(id) = &m.tool_call_id {
            obj.insert("tool_call_id".into(), Value::String(id.clone()));
        }
        if let Some(r) = m.reasoning_content.as_ref().or(m.reasoning.as_ref()) {
            obj.insert("reasoning_content".into(), Value::String(r.clone()));
        }
        out.push(Value::Object(obj));
    }
    Ok(out)
}

/// OpenAI sends `function.arguments` as a JSON string; Qwen templates print a mapping with
/// `tojson`, so a string holding an object is parsed back into one.
fn normalize_tool_call(call: &Value) -> Value {
    let mut call = call.clone();
    if let Some(args) = call.pointer_mut("/function/arguments") {
        if let Some(parsed) = args
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(Value::is_object)
        {
            *args = parsed;
        }
    }
    call
}

/// `forced`: `tool_choice` forces a call, whose arguments the grammar then holds to the
/// schema, so `strict: true` can be kept.
fn validate_tools(tools: Option<&[Tool]>, forced: bool) -> Result<Option<Vec<Value>>, ApiError> {
    let Some(tools) = tools else { return Ok(None) };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let bad = |what: &str, field: &str| ApiError::BadRequest {
            message: format!("tools[{i}]{field}: {what}"),
            param: Some(format!("tools[{i}]{field}")),
        };
        if tool.kind != "function" {
            return Err(bad(
                &format!(
                    "only tools of type \"function\" are supported, got {:?}",
                    tool.kind
                ),
                ".type",
            ));
        }
        if tool.function.name.trim().is_empty() {
            return Err(bad("the function name must not be empty", ".function.name"));
        }
        if tool.function.strict == Some(true) && !forced {
            // OpenAI's `strict` promises arguments that match the schema, which the grammar
            // keeps only for a forced call (`tool_choice` required or named); under `auto` the
            // model may answer in prose, so the promise would be empty.
            return Err(bad(
                "`strict: true` needs `tool_choice` \"required\" or a named function (the only calls Kestrel constrains)",
                ".function.strict",
            ));
        }
        if let Some(params) = &tool.function.parameters {
            if !params.is_object() {
                return Err(bad(
                    "`parameters` must be a JSON Schema object",
                    ".function.parameters",
                ));
            }
        }
        out.push(serde_json::to_value(tool).map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    Ok(Some(out))
}

/// `none` and `auto` leave the output free; `required` and a named function force a call,
/// kept by a grammar ([`structured::tool_grammar`]).
fn validate_tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<(), ApiError> {
    let Some(choice) = choice else { return Ok(()) };
    let bad = |m: String| ApiError::bad_request("tool_choice", m);
    match choice {
        Value::String(s) => match s.as_str() {
            "none" | "auto" => Ok(()),
            "required" if tools.is_empty() => {
                Err(bad("`tool_choice` \"required\" needs `tools`".into()))
            }
            "required" => Ok(()),
            other => Err(bad(format!(
                "`tool_choice` must be none, auto, required or a named function, got {other:?}"
            ))),
        },
        Value::Object(_) => {
            let name = choice.pointer("/function/name").and_then(Value::as_str);
            match name {
                Some(name) if tools.iter().any(|t| t.function.name == name) => Ok(()),
                Some(name) => Err(bad(format!("`tool_choice` names function {name:?}, which is not in `tools`"))),
                None => Err(bad("`tool_choice` object must be {\"type\":\"function\",\"function\":{\"name\":...}}".into())),
            }
        }
        _ => Err(bad("`tool_choice` must be a string or an object".into())),
    }
}

/// Merges the thinking switches into the template kwargs: top-level `enable_thinking`
/// (mistral.rs), `chat_template_kwargs.enable_thinking` (vLLM, SGLang) and
/// `reasoning_effort: "none"` (llama.cpp, Ollama). Contradictory switches are a 400.
pub fn thinking_kwargs(
    kwargs: Option<&Map<String, Value>>,
    enable_thinking: Option<bool>,
    reasoning_effort: Option<&str>,
) -> Result<Map<String, Value>, ApiError> {
    let mut kwargs = kwargs.cloned().unwrap_or_default();
    let from_kwargs = match kwargs.get("enable_thinking") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(ApiError::bad_request(
                "chat_template_kwargs.enable_thinking",
                format!("`chat_template_kwargs.enable_thinking` must be a boolean, got {other}"),
            ))
        }
    };
    let from_effort = match reasoning_effort {
        None => None,
        Some("none") => Some(false),
        Some("minimal" | "low" | "medium" | "high") => Some(true),
        Some(other) => {
            return Err(ApiError::bad_request(
                "reasoning_effort",
                format!(
                    "`reasoning_effort` must be none, minimal, low, medium or high, got {other:?}"
                ),
            ))
        }
    };
    let mut decided: Option<(bool, &str)> = None;
    for (value, name) in [
        (enable_thinking, "enable_thinking"),
        (from_kwargs, "chat_template_kwargs.enable_thinking"),
        (from_effort, "reasoning_effort"),
    ] {
        let Some(value) = value else { continue };
        match decided {
            Some((prev, prev_name)) if prev != value => {
                return Err(ApiError::bad_request(
                    "enable_thinking",
                    format!("`{prev_name}` and `{name}` contradict each other"),
                ))
            }
            _ => decided = Some((value, name)),
        }
    }
    if let Some((value, _)) = decided {
        kwargs.insert("enable_thinking".into(), Value::Bool(value));
    }
    Ok(kwargs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_protocol::parse_json;

    fn msgs(json: &str) -> Vec<ChatMessage> {
        parse_json::<ChatCompletionRequest>(format!(r#"{{"messages":{json}}}"#).as_bytes())
            .unwrap()
            .messages
    }

    #[test]
    fn normalizes_null_content_and_parts() {
        let m = normalize_messages(&msgs(
            r#"[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
                {"role":"assistant","content":null,"reasoning":"r","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]}]"#,
        ))
        .unwrap();
        assert_eq!(m[0]["content"], "ab");
        assert_eq!(m[1]["content"], "");
        assert_eq!(m[1]["reasoning_content"], "r");
        assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"]["x"], 1);
    }

    #[test]
    fn rejects_empty_unknown_role_and_image_parts() {
        assert!(normalize_messages(&[]).is_err());
        let e = normalize_messages(&msgs(r#"[{"role":"wizard","content":"x"}]"#)).unwrap_err();
        assert!(e.to_string().contains("unknown role"), "{e}");
        let e = normalize_messages(&msgs(
            r#"[{"role":"user","content":[{"type":"image_url"}]}]"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("only text"), "{e}");
    }

    #[test]
    fn thinking_switches() {
        let k = thinking_kwargs(None, Some(false), None).unwrap();
        assert_eq!(k["enable_thinking"], false);
        let k = thinking_kwargs(None, None, Some("none")).unwrap();
        assert_eq!(k["enable_thinking"], false);
        let mut m = Map::new();
        m.insert("enable_thinking".into(), Value::Bool(true));
        assert_eq!(
            thinking_kwargs(Some(&m), None, None).unwrap()["enable_thinking"],
            true
        );
        assert!(thinking_kwargs(Some(&m), Some(false), None).is_err());
        assert!(thinking_kwargs(None, Some(true), Some("none")).is_err());
        assert!(thinking_kwargs(None, None, None)
            .unwrap()
            .get("enable_thinking")
            .is_none());
    }

    #[test]
    fn tool_choice_checks() {
        let tools: Vec<Tool> =
            serde_json::from_str(r#"[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}]"#).unwrap();
        assert!(validate_tool_choice(Some(&"auto".into()), &tools).is_ok());
        assert!(validate_tool_choice(Some(&"none".into()), &tools).is_ok());
        assert!(validate_tool_choice(Some(&"sometimes".into()), &tools).is_err());
        // A forced call is kept by a grammar.
        assert!(validate_tool_choice(Some(&"required".into()), &tools).is_ok());
        assert!(validate_tool_choice(Some(&"required".into()), &[]).is_err());
        let named = serde_json::json!({"type":"function","function":{"name":"get_weather"}});
        assert!(validate_tool_choice(Some(&named), &tools).is_ok());
        let other = serde_json::json!({"type":"function","function":{"name":"nope"}});
        assert!(validate_tool_choice(Some(&other), &tools).is_err());
        let bad: Vec<Tool> = serde_json::from_str(
            r#"[{"type":"function","function":{"name":"f","parameters":"string"}}]"#,
        )
        .unwrap();
        assert!(validate_tools(Some(&bad), false).is_err());
    }
}
