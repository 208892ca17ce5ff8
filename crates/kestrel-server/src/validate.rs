//! Request fields → a checked generation plan. Every range error is a 400 that names the field
//! (TGI style); nothing past this point needs to re-check the request.

use std::collections::HashMap;

use kestrel_engine::SamplingParams;
use kestrel_engine::MAX_TOP_LOGPROBS;
use kestrel_protocol::{
    ChatCompletionRequest, ChatMessage, CompletionRequest, MessageContent, Stop, Tool,
};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::state::{Model, ServerConfig};

/// Most stop strings per request.
pub const MAX_STOP_STRINGS: usize = 16;

/// Roles a message may have (`developer` is OpenAI's newer name for `system`).
const KNOWN_ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// The sampling and output fields shared by chat and text completions, checked.
#[derive(Clone, Debug)]
pub struct GenerationPlan {
    /// With the request's seed; choice `i` uses `seed + i`.
    pub sampling: SamplingParams,
    /// `None`: up to the end of the context (vLLM's default).
    pub max_tokens: Option<usize>,
    pub min_tokens: usize,
    pub n: usize,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    pub stream: bool,
    pub include_usage: bool,
}

impl GenerationPlan {
    /// The `max_tokens` to submit for a prompt of `prompt_len` tokens; over the context → 400.
    pub fn max_tokens_for(
        &self,
        prompt_len: usize,
        max_model_len: usize,
    ) -> Result<usize, ApiError> {
        if prompt_len == 0 {
            return Err(ApiError::bad_request("prompt", "the prompt is empty"));
        }
        let room = max_model_len.saturating_sub(prompt_len);
        let max_tokens = self.max_tokens.unwrap_or(room);
        if max_tokens == 0 || prompt_len + max_tokens > max_model_len {
            let param = if self.max_tokens.is_some() {
                "max_tokens"
            } else {
                "messages"
            };
            return Err(ApiError::bad_request(
                param,
                format!(
                    "this model's maximum context length is {max_model_len} tokens, but the request asks for \
                     {prompt_len} prompt tokens + {max_tokens} max_tokens; shorten the prompt or lower max_tokens"
                ),
            ));
        }
        Ok(max_tokens)
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

/// The fields both endpoints share, borrowed from either request type.
struct Common<'a> {
    model: Option<&'a str>,
    max_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    n: Option<i64>,
    stop: Option<&'a Stop>,
    stop_token_ids: Option<&'a [u32]>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    logit_bias: Option<&'a HashMap<String, f32>>,
    /// Top logprobs per token, when logprobs were asked for.
    logprobs: Option<usize>,
    stream: bool,
    include_usage: bool,
    response_format: Option<&'a Value>,
    ignore_eos: Option<bool>,
    min_tokens: Option<i64>,
    include_stop_str_in_output: Option<bool>,
    skip_special_tokens: Option<bool>,
}

fn check_model_name(requested: Option<&str>, config: &ServerConfig) -> Result<(), ApiError> {
    match requested {
        Some(name) if !name.is_empty() && name != config.served_model_name => {
            Err(ApiError::NotFound(format!(
                "the model `{name}` does not exist; this server serves `{}`",
                config.served_model_name
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

fn plan(c: Common<'_>, model: &Model, config: &ServerConfig) -> Result<GenerationPlan, ApiError> {
    check_model_name(c.model, config)?;
    if let Some(format) = c.response_format {
        let kind = format.get("type").and_then(Value::as_str);
        if kind != Some("text") {
            return Err(ApiError::bad_request(
                "response_format",
                format!(
                    "`response_format` {} is not supported; only {{\"type\":\"text\"}}",
                    format
                ),
            ));
        }
    }
    let max_len = model.max_model_len as i64;
    let max_tokens = count("max_tokens", c.max_tokens, 1, max_len)?;
    let min_tokens = count("min_tokens", c.min_tokens, 0, max_len)?.unwrap_or(0);
    if let Some(max) = max_tokens.filter(|&m| m < min_tokens) {
        return Err(ApiError::bad_request(
            "min_tokens",
            format!("`min_tokens` ({min_tokens}) must not exceed `max_tokens` ({max})"),
        ));
    }
    let n = count("n", c.n, 1, config.max_n as i64)?.unwrap_or(1);
    let stop = c.stop.cloned().map(Stop::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::bad_request(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop strings, got {}",
                stop.len()
            ),
        ));
    }
    let vocab_size = model.tokenizer.vocab_size();
    let stop_token_ids = c.stop_token_ids.map(<[u32]>::to_vec).unwrap_or_default();
    if let Some(id) = stop_token_ids.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(ApiError::bad_request(
            "stop_token_ids",
            format!("token id {id} is out of the vocabulary ({vocab_size})"),
        ));
    }

    let mut sampling = model.default_sampling.clone();
    if let Some(t) = c.temperature {
        sampling.temperature = t;
    }
    if let Some(p) = c.top_p {
        sampling.top_p = p;
    }
    if let Some(k) = c.top_k {
        // vLLM: -1 (and 0) disable top-k.
        if k < -1 {
            return Err(ApiError::bad_request(
                "top_k",
                format!("`top_k` must be -1 (off) or >= 0, got {k}"),
            ));
        }
        sampling.top_k = k.max(0) as usize;
    }
    if let Some(m) = c.min_p {
        sampling.min_p = m;
    }
    if let Some(p) = c.presence_penalty {
        sampling.presence_penalty = p;
    }
    if let Some(p) = c.frequency_penalty {
        sampling.frequency_penalty = p;
    }
    if let Some(p) = c.repetition_penalty {
        sampling.repetition_penalty = p;
    }
    if let Some(bias) = c.logit_bias {
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
    sampling.seed = c.seed.map(|s| s as u64);
    sampling.logprobs = c.logprobs;
    sampling.validate()?;
    Ok(GenerationPlan {
        sampling,
        max_tokens,
        min_tokens,
        n,
        stop,
        stop_token_ids,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        include_stop_str_in_output: c.include_stop_str_in_output.unwrap_or(false),
        skip_special_tokens: c.skip_special_tokens.unwrap_or(true),
        stream: c.stream,
        include_usage: c.include_usage,
    })
}

/// A chat request, checked, with what the template needs.
#[derive(Debug)]
pub struct ChatPlan {
    pub generation: GenerationPlan,
    /// Messages normalised for the template (null content → "", text parts joined).
    pub messages: Vec<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_parsing: bool,
    pub chat_template_kwargs: Map<String, Value>,
    pub add_generation_prompt: bool,
    /// `include_reasoning` / `return_reasoning`: false drops reasoning from the response.
    pub include_reasoning: bool,
    pub logprobs: bool,
}

pub fn validate_chat(
    req: &ChatCompletionRequest,
    model: &Model,
    config: &ServerConfig,
) -> Result<ChatPlan, ApiError> {
    let top_logprobs = count("top_logprobs", req.top_logprobs, 0, MAX_TOP_LOGPROBS as i64)?;
    let logprobs = req.logprobs.unwrap_or(false);
    if top_logprobs.is_some_and(|n| n > 0) && !logprobs {
        return Err(ApiError::bad_request(
            "top_logprobs",
            "`top_logprobs` requires `logprobs: true`",
        ));
    }
    if req.max_tokens.is_some()
        && req.max_completion_tokens.is_some()
        && req.max_tokens != req.max_completion_tokens
    {
        return Err(ApiError::bad_request(
            "max_completion_tokens",
            "`max_tokens` and `max_completion_tokens` disagree",
        ));
    }
    let stream = req.stream.unwrap_or(false);
    let generation = plan(
        Common {
            model: req.model.as_deref(),
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            min_p: req.min_p,
            n: req.n,
            stop: req.stop.as_ref(),
            stop_token_ids: req.stop_token_ids.as_deref(),
            seed: req.seed,
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
            repetition_penalty: req.repetition_penalty,
            logit_bias: req.logit_bias.as_ref(),
            logprobs: logprobs.then_some(top_logprobs.unwrap_or(0)),
            stream,
            include_usage: stream && req.stream_options.as_ref().is_some_and(|o| o.include_usage),
            response_format: req.response_format.as_ref(),
            ignore_eos: req.ignore_eos,
            min_tokens: req.min_tokens,
            include_stop_str_in_output: req.include_stop_str_in_output,
            skip_special_tokens: req.skip_special_tokens,
        },
        model,
        config,
    )?;
    let messages = normalize_messages(&req.messages)?;
    let tools = validate_tools(req.tools.as_deref())?;
    validate_tool_choice(
        req.tool_choice.as_ref(),
        req.tools.as_deref().unwrap_or(&[]),
    )?;
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
        tool_parsing: kestrel_text::tool_calls::tool_parsing_enabled(
            num_tools,
            req.tool_choice.as_ref(),
        ),
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
    model: &Model,
    config: &ServerConfig,
) -> Result<CompletionPlan, ApiError> {
    let logprobs = count("logprobs", req.logprobs, 0, MAX_TOP_LOGPROBS as i64)?;
    if req.echo.unwrap_or(false) {
        return Err(ApiError::bad_request("echo", "`echo` is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_request("suffix", "`suffix` is not supported"));
    }
    if let Some(best_of) = req.best_of {
        if best_of != req.n.unwrap_or(1) {
            return Err(ApiError::bad_request(
                "best_of",
                "`best_of` other than `n` is not supported",
            ));
        }
    }
    let stream = req.stream.unwrap_or(false);
    let generation = plan(
        Common {
            model: req.model.as_deref(),
            // The legacy endpoint's default is 16 tokens (OpenAI, vLLM).
            max_tokens: Some(req.max_tokens.unwrap_or(16)),
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
            min_p: req.min_p,
            n: req.n,
            stop: req.stop.as_ref(),
            stop_token_ids: req.stop_token_ids.as_deref(),
            seed: req.seed,
            presence_penalty: req.presence_penalty,
            frequency_penalty: req.frequency_penalty,
            repetition_penalty: req.repetition_penalty,
            logit_bias: req.logit_bias.as_ref(),
            logprobs,
            stream,
            include_usage: stream && req.stream_options.as_ref().is_some_and(|o| o.include_usage),
            response_format: req.response_format.as_ref(),
            ignore_eos: req.ignore_eos,
            min_tokens: req.min_tokens,
            include_stop_str_in_output: req.include_stop_str_in_output,
            skip_special_tokens: req.skip_special_tokens,
        },
        model,
        config,
    )?;
    Ok(CompletionPlan {
        generation,
        logprobs,
    })
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

fn validate_tools(tools: Option<&[Tool]>) -> Result<Option<Vec<Value>>, ApiError> {
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

fn validate_tool_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<(), ApiError> {
    let Some(choice) = choice else { return Ok(()) };
    let bad = |m: String| ApiError::bad_request("tool_choice", m);
    match choice {
        Value::String(s) => match s.as_str() {
            "none" | "auto" => Ok(()),
            "required" if !tools.is_empty() => Ok(()),
            "required" => Err(bad("`tool_choice` \"required\" needs `tools`".into())),
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
        assert!(validate_tool_choice(Some(&"sometimes".into()), &tools).is_err());
        let named = serde_json::json!({"type":"function","function":{"name":"get_weather"}});
        assert!(validate_tool_choice(Some(&named), &tools).is_ok());
        let other = serde_json::json!({"type":"function","function":{"name":"nope"}});
        assert!(validate_tool_choice(Some(&other), &tools).is_err());
        let bad: Vec<Tool> = serde_json::from_str(
            r#"[{"type":"function","function":{"name":"f","parameters":"string"}}]"#,
        )
        .unwrap();
        assert!(validate_tools(Some(&bad)).is_err());
    }
}
