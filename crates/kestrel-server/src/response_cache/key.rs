//! The response cache's key: a SHA-256 over everything that decides what a response says: the
//! model (a digest of its weights and the settings that change its arithmetic), the endpoint,
//! the rendered prompt token ids (so the chat template, tools in the prompt and the thinking
//! switch are in it), every sampling and output parameter, the chat fields that shape the
//! output (tools, `tool_choice`, reasoning switches, logprobs) and the tenant (the caller's API
//! key and the request's `cache_salt`), so no two tenants ever share an entry.
//!
//! Left out on purpose: how the answer is framed (`stream`, `stream_options`), `user`, and the
//! cache directives themselves. A streamed request may therefore be answered from a
//! non-streamed one's entry and the other way round: an entry holds the engine's tokens, and a
//! hit runs them through the same output path as a live answer.
//!
//! Every field goes into the hash with its name and its length, so no two different requests
//! encode to the same bytes (a stop list `["ab"]` and `["a", "b"]` differ); the plan structs are
//! destructured without `..`, so a new field does not compile until it is classified here.

use std::fmt;

use kestrel_engine::SamplingParams;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::validate::{ChatPlan, GenerationPlan};

/// Bumped whenever the encoding below or the entry format changes, so old entries are never
/// read by a server that would understand them differently.
const KEY_VERSION: &str = "kestrel-response-cache-v1";

/// A response-cache key: SHA-256, shown as 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// Which endpoint answers: the same prompt ids mean different outputs on chat (reasoning split,
/// tool calls) and on text completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// The chat fields that change the output beyond the prompt ids.
#[derive(Clone, Copy, Debug)]
pub struct ChatFields<'a> {
    pub tools: Option<&'a [Value]>,
    pub tool_choice: Option<&'a Value>,
    pub tool_parsing: bool,
    pub parallel_tool_calls: bool,
    pub chat_template_kwargs: &'a Map<String, Value>,
    pub add_generation_prompt: bool,
    pub include_reasoning: bool,
    pub logprobs: bool,
}

impl<'a> ChatFields<'a> {
    pub fn of(plan: &'a ChatPlan) -> Self {
        let ChatPlan {
            // Its own part of the key.
            generation: _,
            // Rendered into the prompt ids, which the key holds.
            messages: _,
            tools,
            tool_choice,
            tool_parsing,
            parallel_tool_calls,
            chat_template_kwargs,
            add_generation_prompt,
            include_reasoning,
            logprobs,
            // Follows from `chat_template_kwargs`, which the key holds.
            thinking_on: _,
        } = plan;
        Self {
            tools: tools.as_deref(),
            tool_choice: tool_choice.as_ref(),
            tool_parsing: *tool_parsing,
            parallel_tool_calls: *parallel_tool_calls,
            chat_template_kwargs,
            add_generation_prompt: *add_generation_prompt,
            include_reasoning: *include_reasoning,
            logprobs: *logprobs,
        }
    }
}

/// Who may read an entry: requests with the same API key (its SHA-256; `None` on a server
/// without keys) and the same `cache_salt`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tenant<'a> {
    pub api_key: Option<&'a str>,
    pub cache_salt: Option<&'a str>,
}

/// Everything the key is made of.
#[derive(Clone, Copy, Debug)]
pub struct KeyInput<'a> {
    /// The served model's identity (weights digest and numerics settings).
    pub model: &'a str,
    pub endpoint: Endpoint,
    pub prompts: &'a [Vec<u32>],
    /// Per prompt, the `max_tokens` submitted: the request's, or what the context leaves (so
    /// servers with different `--max-model-len` never share an answer cut at another length).
    pub max_tokens: &'a [usize],
    /// The stop token ids the engine gets (EOS unless `ignore_eos`, plus `stop_token_ids`).
    pub engine_stop_ids: &'a [u32],
    pub generation: &'a GenerationPlan,
    pub chat: Option<ChatFields<'a>>,
    pub tenant: Tenant<'a>,
}

impl CacheKey {
    pub fn of(input: &KeyInput<'_>) -> Self {
        let mut h = KeyHasher(Sha256::new());
        h.str("version", KEY_VERSION);
        h.str("model", input.model);
        h.str(
            "endpoint",
            match input.endpoint {
                Endpoint::Chat => "chat",
                Endpoint::Completions => "completions",
            },
        );
        h.u64("prompts", input.prompts.len() as u64);
        for prompt in input.prompts {
            h.ids("prompt", prompt);
        }
        h.u64("max_tokens", input.max_tokens.len() as u64);
        for &m in input.max_tokens {
            h.u64("max_tokens", m as u64);
        }
        h.ids("engine_stop_ids", input.engine_stop_ids);
        generation(&mut h, input.generation);
        match &input.chat {
            Some(chat) => chat_fields(&mut h, chat),
            None => h.bool("chat", false),
        }
        h.opt_str("tenant.api_key", input.tenant.api_key);
        h.opt_str("tenant.cache_salt", input.tenant.cache_salt);
        CacheKey(h.0.finalize().into())
    }
}

fn generation(h: &mut KeyHasher, plan: &GenerationPlan) {
    let GenerationPlan {
        sampling,
        // Resolved per prompt in `KeyInput::max_tokens`.
        max_tokens: _,
        // Only name the field in error messages.
        max_tokens_set: _,
        max_tokens_field: _,
        prompt_field: _,
        min_tokens,
        n,
        stop,
        stop_token_ids,
        ignore_eos,
        include_stop_str_in_output,
        skip_special_tokens,
        response_format,
        grammar,
        thinking_budget,
        // Framing: a hit is replayed in the request's own framing.
        stream: _,
        include_usage: _,
        continuous_usage: _,
        // The tenant part of the key.
        cache_salt: _,
        // The directive that led here.
        cache: _,
    } = plan;
    sampling_params(h, sampling);
    h.u64("min_tokens", *min_tokens as u64);
    h.u64("n", *n as u64);
    h.strs("stop", stop);
    h.ids("stop_token_ids", stop_token_ids);
    h.bool("ignore_eos", *ignore_eos);
    h.bool("include_stop_str_in_output", *include_stop_str_in_output);
    h.bool("skip_special_tokens", *skip_special_tokens);
    h.opt_json("response_format", response_format.as_ref());
    // The constraint itself, from whichever field set it (`structured_outputs`, `guided_*`, a
    // forced tool call): two requests with different grammars never share an answer.
    h.opt_json("grammar", grammar.as_ref().map(|g| g.key_json()).as_ref());
    h.opt_u64("thinking_budget", thinking_budget.map(|b| b as u64));
}

fn sampling_params(h: &mut KeyHasher, s: &SamplingParams) {
    let SamplingParams {
        temperature,
        top_k,
        top_p,
        min_p,
        presence_penalty,
        frequency_penalty,
        repetition_penalty,
        logit_bias,
        seed,
        logprobs,
    } = s;
    h.f32("temperature", *temperature);
    h.u64("top_k", *top_k as u64);
    h.f32("top_p", *top_p);
    h.f32("min_p", *min_p);
    h.f32("presence_penalty", *presence_penalty);
    h.f32("frequency_penalty", *frequency_penalty);
    h.f32("repetition_penalty", *repetition_penalty);
    // Sorted by token id at validation, so `{"1":2,"3":4}` and `{"3":4,"1":2}` are one key.
    h.u64("logit_bias", logit_bias.len() as u64);
    for &(id, bias) in logit_bias {
        h.u64("logit_bias.id", u64::from(id));
        h.f32("logit_bias.value", bias);
    }
    h.opt_u64("seed", *seed);
    h.opt_u64("logprobs", logprobs.map(|n| n as u64));
}

fn chat_fields(h: &mut KeyHasher, c: &ChatFields<'_>) {
    let ChatFields {
        tools,
        tool_choice,
        tool_parsing,
        parallel_tool_calls,
        chat_template_kwargs,
        add_generation_prompt,
        include_reasoning,
        logprobs,
    } = c;
    h.bool("chat", true);
    match tools {
        Some(tools) => {
            h.u64("tools", tools.len() as u64);
            for tool in *tools {
                h.json("tool", tool);
            }
        }
        None => h.bool("tools", false),
    }
    h.opt_json("tool_choice", *tool_choice);
    h.bool("tool_parsing", *tool_parsing);
    h.bool("parallel_tool_calls", *parallel_tool_calls);
    h.json(
        "chat_template_kwargs",
        &Value::Object((*chat_template_kwargs).clone()),
    );
    h.bool("add_generation_prompt", *add_generation_prompt);
    h.bool("include_reasoning", *include_reasoning);
    h.bool("logprobs", *logprobs);
}

/// Length-prefixed, named fields into one SHA-256.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, name: &str, value: &[u8]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    fn str(&mut self, name: &str, value: &str) {
        self.field(name, value.as_bytes());
    }

    fn u64(&mut self, name: &str, value: u64) {
        self.field(name, &value.to_le_bytes());
    }

    fn bool(&mut self, name: &str, value: bool) {
        self.field(name, &[u8::from(value)]);
    }

    /// `-0.0` and `0.0` sample alike: one key.
    fn f32(&mut self, name: &str, value: f32) {
        let value = if value == 0.0 { 0.0f32 } else { value };
        self.field(name, &value.to_bits().to_le_bytes());
    }

    fn ids(&mut self, name: &str, ids: &[u32]) {
        let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        self.field(name, &bytes);
    }

    fn strs(&mut self, name: &str, values: &[String]) {
        self.u64(name, values.len() as u64);
        for v in values {
            self.str(name, v);
        }
    }

    fn opt_u64(&mut self, name: &str, value: Option<u64>) {
        match value {
            Some(v) => self.field(name, &[&[1u8][..], &v.to_le_bytes()].concat()),
            None => self.field(name, &[0]),
        }
    }

    fn opt_str(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.field(name, &[&[1u8][..], v.as_bytes()].concat()),
            None => self.field(name, &[0]),
        }
    }

    fn json(&mut self, name: &str, value: &Value) {
        let mut text = Vec::new();
        canonical_json(value, &mut text);
        self.field(name, &text);
    }

    fn opt_json(&mut self, name: &str, value: Option<&Value>) {
        match value {
            Some(v) => {
                let mut text = vec![1u8];
                canonical_json(v, &mut text);
                self.field(name, &text);
            }
            None => self.field(name, &[0]),
        }
    }
}

/// JSON with object keys sorted at every level: the workspace's `serde_json` keeps insertion
/// order, and two requests that differ only in key order ask the same thing.
fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> GenerationPlan {
        GenerationPlan {
            sampling: SamplingParams::greedy(),
            max_tokens: Some(8),
            max_tokens_set: true,
            max_tokens_field: "max_tokens",
            prompt_field: "messages",
            min_tokens: 0,
            n: 1,
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            include_stop_str_in_output: false,
            skip_special_tokens: true,
            response_format: None,
            grammar: None,
            thinking_budget: None,
            stream: false,
            include_usage: false,
            continuous_usage: false,
            cache_salt: None,
            cache: true,
        }
    }

    /// Owned copies of everything a [`KeyInput`] borrows, so each case can change one thing.
    #[derive(Clone)]
    struct Request {
        model: String,
        endpoint: Endpoint,
        prompts: Vec<Vec<u32>>,
        max_tokens: Vec<usize>,
        engine_stop_ids: Vec<u32>,
        plan: GenerationPlan,
        chat: bool,
        tools: Option<Vec<Value>>,
        tool_choice: Option<Value>,
        tool_parsing: bool,
        parallel_tool_calls: bool,
        kwargs: Map<String, Value>,
        add_generation_prompt: bool,
        include_reasoning: bool,
        logprobs: bool,
        api_key: Option<String>,
        cache_salt: Option<String>,
    }

    impl Request {
        fn base() -> Self {
            Self {
                model: "sha256:00;quant:none".into(),
                endpoint: Endpoint::Chat,
                prompts: vec![vec![1, 2, 3]],
                max_tokens: vec![8],
                engine_stop_ids: vec![151645],
                plan: plan(),
                chat: true,
                tools: None,
                tool_choice: None,
                tool_parsing: false,
                parallel_tool_calls: true,
                kwargs: Map::new(),
                add_generation_prompt: true,
                include_reasoning: true,
                logprobs: false,
                api_key: None,
                cache_salt: None,
            }
        }

        fn key(&self) -> CacheKey {
            CacheKey::of(&KeyInput {
                model: &self.model,
                endpoint: self.endpoint,
                prompts: &self.prompts,
                max_tokens: &self.max_tokens,
                engine_stop_ids: &self.engine_stop_ids,
                generation: &self.plan,
                chat: self.chat.then_some(ChatFields {
                    tools: self.tools.as_deref(),
                    tool_choice: self.tool_choice.as_ref(),
                    tool_parsing: self.tool_parsing,
                    parallel_tool_calls: self.parallel_tool_calls,
                    chat_template_kwargs: &self.kwargs,
                    add_generation_prompt: self.add_generation_prompt,
                    include_reasoning: self.include_reasoning,
                    logprobs: self.logprobs,
                }),
                tenant: Tenant {
                    api_key: self.api_key.as_deref(),
                    cache_salt: self.cache_salt.as_deref(),
                },
            })
        }
    }

    type Change = fn(&mut Request);

    /// Each change alone must give another key.
    const CHANGES: &[(&str, Change)] = &[
        ("model identity", |r| r.model.push('1')),
        ("endpoint", |r| r.endpoint = Endpoint::Completions),
        ("prompt ids", |r| r.prompts[0][2] = 4),
        ("prompt length", |r| r.prompts[0].push(0)),
        ("a second prompt", |r| r.prompts.push(vec![1])),
        ("max_tokens", |r| r.max_tokens[0] = 9),
        ("eos / ignore_eos stop ids", |r| r.engine_stop_ids.clear()),
        ("temperature", |r| r.plan.sampling.temperature = 0.5),
        ("top_k", |r| r.plan.sampling.top_k = 40),
        ("top_p", |r| r.plan.sampling.top_p = 0.9),
        ("min_p", |r| r.plan.sampling.min_p = 0.1),
        ("presence_penalty", |r| {
            r.plan.sampling.presence_penalty = 0.5
        }),
        ("frequency_penalty", |r| {
            r.plan.sampling.frequency_penalty = 0.5
        }),
        ("repetition_penalty", |r| {
            r.plan.sampling.repetition_penalty = 1.1
        }),
        ("logit_bias", |r| {
            r.plan.sampling.logit_bias = vec![(5, 1.0)]
        }),
        ("logit_bias value", |r| {
            r.plan.sampling.logit_bias = vec![(5, 2.0)]
        }),
        ("seed", |r| r.plan.sampling.seed = Some(1)),
        ("logprobs", |r| r.plan.sampling.logprobs = Some(0)),
        ("top_logprobs", |r| r.plan.sampling.logprobs = Some(2)),
        ("min_tokens", |r| r.plan.min_tokens = 1),
        ("n", |r| r.plan.n = 2),
        ("stop", |r| r.plan.stop = vec!["ab".into()]),
        ("stop split differently", |r| {
            r.plan.stop = vec!["a".into(), "b".into()]
        }),
        ("stop_token_ids", |r| r.plan.stop_token_ids = vec![7]),
        ("ignore_eos", |r| r.plan.ignore_eos = true),
        ("include_stop_str_in_output", |r| {
            r.plan.include_stop_str_in_output = true
        }),
        ("skip_special_tokens", |r| {
            r.plan.skip_special_tokens = false
        }),
        ("response_format", |r| {
            r.plan.response_format = Some(json!({"type": "text"}))
        }),
        ("grammar", |r| {
            r.plan.grammar = Some(crate::structured::GrammarRequest {
                spec: kestrel_engine::GrammarSpec::Regex("a+".into()),
                param: "guided_regex".into(),
            })
        }),
        ("thinking_budget", |r| r.plan.thinking_budget = Some(8)),
        ("tools", |r| {
            r.tools = Some(vec![json!({"type": "function", "function": {"name": "f"}})])
        }),
        ("tool_choice", |r| r.tool_choice = Some(json!("none"))),
        ("tool_parsing", |r| r.tool_parsing = true),
        ("parallel_tool_calls", |r| r.parallel_tool_calls = false),
        ("chat_template_kwargs", |r| {
            r.kwargs.insert("enable_thinking".into(), json!(false));
        }),
        ("add_generation_prompt", |r| r.add_generation_prompt = false),
        ("include_reasoning", |r| r.include_reasoning = false),
        ("chat logprobs", |r| r.logprobs = true),
        ("chat fields absent", |r| r.chat = false),
        ("api key", |r| r.api_key = Some("ab12".into())),
        ("cache_salt", |r| r.cache_salt = Some("tenant-a".into())),
    ];

    #[test]
    fn every_field_that_changes_the_answer_changes_the_key() {
        let base = Request::base();
        let mut seen = vec![("base", base.key())];
        for (name, change) in CHANGES {
            let mut r = base.clone();
            change(&mut r);
            let key = r.key();
            for (other, k) in &seen {
                assert_ne!(key, *k, "{name} gives the same key as {other}");
            }
            seen.push((name, key));
        }
    }

    #[test]
    fn framing_fields_and_key_order_do_not_change_the_key() {
        let base = Request::base();
        let same: &[(&str, Change)] = &[
            ("stream", |r| r.plan.stream = true),
            ("include_usage", |r| r.plan.include_usage = true),
            ("continuous_usage", |r| r.plan.continuous_usage = true),
            ("max_tokens_set", |r| r.plan.max_tokens_set = false),
            ("max_tokens as the default", |r| r.plan.max_tokens = None),
            ("-0.0 temperature", |r| r.plan.sampling.temperature = -0.0),
            ("tool key order", |r| {
                r.tools = Some(vec![json!({"type": "function", "function": {"name": "f"}})])
            }),
        ];
        let mut ordered = base.clone();
        ordered.tools = Some(vec![serde_json::from_str(
            r#"{"function": {"name": "f"}, "type": "function"}"#,
        )
        .unwrap()]);
        for (name, change) in same {
            let mut r = base.clone();
            change(&mut r);
            let expected = if *name == "tool key order" {
                ordered.key()
            } else {
                base.key()
            };
            assert_eq!(r.key(), expected, "{name} changed the key");
        }
    }

    #[test]
    fn keys_print_as_hex() {
        let key = CacheKey([0xab; 32]);
        assert_eq!(key.to_string(), "ab".repeat(32));
    }
}
