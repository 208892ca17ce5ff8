//! Request JSON → parsing → validation → sampling parameters, for both generation endpoints.
//! The first input byte picks the endpoint, the rest is the body.
//!
//! Invariants: parsing and validation never panic; a refusal is a 4xx with an OpenAI error body
//! that serializes; an accepted request's sampling parameters pass the engine's admission
//! check for every choice; the context arithmetic never panics.

use arbitrary::Unstructured;
use kestrel_engine::SamplingParams;
use kestrel_protocol::{parse_request, ChatCompletionRequest, CompletionRequest};
use kestrel_server::validate::{validate_chat, validate_completion, GenerationPlan, Limits};
use kestrel_server::ApiError;
use serde_json::{json, Map, Value};

use crate::{signature, Target};

pub struct Request;

const VOCAB_SIZE: usize = 151_936;

fn limits() -> Limits {
    Limits {
        served_model_name: "m".into(),
        max_n: 16,
        max_model_len: 4096,
        vocab_size: VOCAB_SIZE,
        default_sampling: SamplingParams::default(),
        thinking_budget: None,
    }
}

/// Field names of both endpoints (and a few vendors'), for the generator and the dictionary.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stop",
    "stop_token_ids",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "thinking_budget",
    "thinking_token_budget",
    "chat_template_kwargs",
    "enable_thinking",
    "reasoning_effort",
    "include_reasoning",
    "return_reasoning",
    "add_generation_prompt",
    "ignore_eos",
    "min_tokens",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "cache_salt",
    "echo",
    "best_of",
    "suffix",
];

/// `messages[3].content` → `messages`: the field, not the request's own keys and indices.
fn first_segment(param: Option<&str>) -> &str {
    param.unwrap_or("").split(['.', '[']).next().unwrap_or("")
}

fn check_error(e: &ApiError) -> u64 {
    let status = e.status();
    assert!(
        status.is_client_error(),
        "a request was refused with {status}: {e}"
    );
    let body = serde_json::to_string(&e.body()).expect("error bodies serialize");
    assert!(body.contains("\"error\""));
    let param = match e {
        ApiError::BadRequest { param, .. } => param.as_deref(),
        _ => None,
    };
    signature(&["err", status.as_str(), first_segment(param)])
}

fn check_plan(g: &GenerationPlan, prompt_len: usize) {
    g.sampling
        .validate()
        .expect("accepted sampling parameters pass the engine's check");
    for i in 0..g.n.min(4) {
        let s = g.sampling_for(i);
        s.validate_for_vocab(VOCAB_SIZE)
            .expect("accepted parameters pass the engine's admission check");
    }
    assert!(g.n >= 1 && g.n <= 16);
    assert!(g.stop.len() <= 16 && g.stop.iter().all(|s| !s.is_empty()));
    assert!(g
        .stop_token_ids
        .iter()
        .all(|&id| (id as usize) < VOCAB_SIZE));
    if let Some(m) = g.max_tokens {
        assert!(m >= 1 && m >= g.min_tokens && m <= 4096, "{m}");
    }
    if let Ok(m) = g.max_tokens_for(prompt_len, 4096) {
        assert!(m >= 1 && prompt_len + m <= 4096);
    }
    let _ = g.engine_stop_ids(&[151_645]);
}

impl Target for Request {
    fn name(&self) -> &'static str {
        "request"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        let chat = [
            json!({"model": "m", "messages": [{"role": "user", "content": "Hello"}]}),
            json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "a"}]}],
                "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "n": 2,
                "stop": ["\n\n", "END"], "stop_token_ids": [151645], "seed": 42, "presence_penalty": 0.5,
                "frequency_penalty": -0.5, "repetition_penalty": 1.1, "logit_bias": {"100": 5.0},
                "logprobs": true, "top_logprobs": 3, "stream": true,
                "stream_options": {"include_usage": true, "continuous_usage_stats": true},
                "cache_salt": "tenant", "ignore_eos": true, "min_tokens": 2}),
            json!({"messages": [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"}],
                "tools": [{"type": "function", "function": {"name": "w", "description": "d", "parameters": {"type": "object"}}}],
                "tool_choice": "auto", "parallel_tool_calls": false,
                "chat_template_kwargs": {"enable_thinking": false}, "reasoning_effort": "none"}),
        ];
        let completion = [
            json!({"prompt": "Hello", "max_tokens": 8}),
            json!({"prompt": [[1, 2, 3], [4, 5]], "n": 3, "logprobs": 2, "echo": false, "best_of": 3,
                "stop": "x", "include_stop_str_in_output": true, "skip_special_tokens": false}),
        ];
        chat.iter()
            .map(|v| [&[0u8][..], v.to_string().as_bytes()].concat())
            .chain(
                completion
                    .iter()
                    .map(|v| [&[1u8][..], v.to_string().as_bytes()].concat()),
            )
            .collect()
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        let mut words: Vec<Vec<u8>> = FIELDS
            .iter()
            .map(|f| format!("\"{f}\":").into_bytes())
            .collect();
        for w in [
            "null",
            "true",
            "false",
            "-1",
            "0",
            "1e400",
            "1e39",
            "-0.0",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "4294967296",
            "\"\"",
            "[]",
            "{}",
            "[[",
            "\"\\ud800\"",
            "\"\\u0000\"",
            "\"none\"",
            "\"required\"",
            "\"function\"",
            "\"text\"",
            "\"json_object\"",
            "\"developer\"",
            "\"tool\"",
            "{\"type\":\"function\",\"function\":{\"name\":\"w\"}}",
        ] {
            words.push(w.as_bytes().to_vec());
        }
        words
    }

    fn generate(&self, u: &mut Unstructured<'_>) -> Option<Vec<u8>> {
        let endpoint: u8 = u.int_in_range(0..=1).ok()?;
        let mut body = Map::new();
        let n: usize = u.int_in_range(0..=12).ok()?;
        for _ in 0..n {
            let field = FIELDS[u.choose_index(FIELDS.len()).ok()?];
            body.insert(field.into(), super::json_value(u, 3)?);
        }
        if endpoint == 0 && u.ratio(4, 5).ok()? {
            body.insert("messages".into(), super::messages(u)?);
        } else if endpoint == 1 && u.ratio(4, 5).ok()? {
            body.insert("prompt".into(), super::json_value(u, 2)?);
        }
        Some([&[endpoint][..], Value::Object(body).to_string().as_bytes()].concat())
    }

    fn run(&self, input: &[u8]) -> u64 {
        let Some((&selector, body)) = input.split_first() else {
            return 0;
        };
        let limits = limits();
        if selector % 2 == 0 {
            let req = match parse_request::<ChatCompletionRequest>(body) {
                Ok(req) => req,
                Err(e) => return signature(&["parse", first_segment(e.param.as_deref())]),
            };
            match validate_chat(&req, &limits) {
                Ok(plan) => {
                    check_plan(&plan.generation, body.len() % 5000);
                    assert!(!plan.messages.is_empty());
                    signature(&["chat ok", &plan.generation.n.to_string()])
                }
                Err(e) => check_error(&e),
            }
        } else {
            let req = match parse_request::<CompletionRequest>(body) {
                Ok(req) => req,
                Err(e) => return signature(&["parse", first_segment(e.param.as_deref())]),
            };
            match validate_completion(&req, &limits) {
                Ok(plan) => {
                    check_plan(&plan.generation, body.len() % 5000);
                    signature(&["completion ok"])
                }
                Err(e) => check_error(&e),
            }
        }
    }
}
