//! The malformed-request battery, over a real loopback connection: broken JSON, wrong types,
//! invalid UTF-8, huge and negative numbers, empty and oversized fields, unknown roles, tool
//! calls without functions, 10 MB bodies, 100k messages, deeply nested JSON, header floods and
//! broken HTTP. Every case gets a 4xx that names the problem (the field in OpenAI's `param`, or
//! the message; HTTP-level refusals by their status), the server stays up, and a normal request
//! right after each one succeeds.

mod common;

use std::time::{Duration, Instant};

use common::server::{engine, exchange, post_bytes, spawn, RawResponse};
use kestrel_engine::EngineConfig;
use kestrel_server::ServerConfig;
use serde_json::{json, Value};

/// What a refusal must say.
enum Names {
    /// OpenAI's error body with this `param`.
    Param(&'static str),
    /// OpenAI's error body whose message contains this.
    Message(&'static str),
    /// Refused before routing (by the HTTP layer): the status says it.
    Status,
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
    names: Names,
}

fn chat_with(extra: Value) -> Vec<u8> {
    let mut body = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    post_bytes("/v1/chat/completions", body.to_string().as_bytes())
}

fn chat_raw(body: &[u8]) -> Vec<u8> {
    post_bytes("/v1/chat/completions", body)
}

fn completion_with(extra: Value) -> Vec<u8> {
    let mut body = json!({"prompt": [1, 2, 3], "max_tokens": 2});
    for (k, v) in extra.as_object().expect("object") {
        body[k] = v.clone();
    }
    post_bytes("/v1/completions", body.to_string().as_bytes())
}

fn tool(function: Value) -> Value {
    json!({"tools": [{"type": "function", "function": function}]})
}

fn case(name: &'static str, request: Vec<u8>, status: u16, names: Names) -> Case {
    Case {
        name,
        request,
        status,
        names,
    }
}

fn cases() -> Vec<Case> {
    use Names::{Message, Param, Status};
    let weather = json!({"name": "get_weather", "parameters": {"type": "object"}});
    let mut headers_flood = b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\n".to_vec();
    for i in 0..2000 {
        headers_flood.extend_from_slice(format!("X-Flood-{i}: {i}\r\n").as_bytes());
    }
    headers_flood.extend_from_slice(b"Connection: close\r\n\r\n");
    let huge_header = format!(
        "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(2 << 20)
    )
    .into_bytes();
    let ten_mb = json!({"messages": [{"role": "user", "content": "word ".repeat(2 << 20)}]});
    let many_messages: Vec<Value> = (0..100_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi"}))
        .collect();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    vec![
        // Not JSON, or not the right JSON.
        case("broken JSON", chat_raw(b"{not json"), 400, Message("not valid JSON")),
        case("empty body", chat_raw(b""), 400, Message("not valid JSON")),
        case("trailing garbage", chat_raw(br#"{"messages":[]} x"#), 400, Message("not valid JSON")),
        case("invalid UTF-8 in a string", chat_raw(b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}"), 400, Message("not valid JSON")),
        case("overlong UTF-8", chat_raw(b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}"), 400, Message("not valid JSON")),
        case("lone surrogate escape", chat_raw(br#"{"messages":[{"role":"user","content":"\ud800"}]}"#), 400, Message("not valid JSON")),
        case("NaN literal", chat_raw(br#"{"messages":[{"role":"user","content":"x"}],"temperature":NaN}"#), 400, Message("not valid JSON")),
        case("top-level array", chat_raw(b"[1,2,3]"), 400, Message("invalid request body")),
        case("top-level null", chat_raw(b"null"), 400, Message("invalid request body")),
        case("deeply nested JSON", chat_raw(format!(r#"{{"messages":[],"tool_choice":{deep}}}"#).as_bytes()), 400, Message("nested too deeply")),
        // Messages.
        case("missing messages", chat_raw(br#"{"max_tokens":2}"#), 400, Message("messages")),
        case("messages not an array", chat_with(json!({"messages": "hi"})), 400, Param("messages")),
        case("empty messages", chat_with(json!({"messages": []})), 400, Param("messages")),
        case("message without role", chat_with(json!({"messages": [{"content": "x"}]})), 400, Param("messages[0]")),
        case("role of the wrong type", chat_with(json!({"messages": [{"role": 5, "content": "x"}]})), 400, Param("messages[0].role")),
        case("unknown role", chat_with(json!({"messages": [{"role": "wizard", "content": "x"}]})), 400, Param("messages[0].role")),
        case("content of the wrong type", chat_with(json!({"messages": [{"role": "user", "content": 5}]})), 400, Param("messages[0].content")),
        case("image content part", chat_with(json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})), 400, Param("messages[0].content[0]")),
        case("tool_calls not an array", chat_with(json!({"messages": [{"role": "assistant", "content": null, "tool_calls": {"id": 1}}]})), 400, Param("messages[0].tool_calls")),
        case("100k messages", post_bytes("/v1/chat/completions", json!({"messages": many_messages}).to_string().as_bytes()), 400, Param("messages")),
        case("10 MB message", post_bytes("/v1/chat/completions", ten_mb.to_string().as_bytes()), 400, Param("messages")),
        // Numbers: wrong types, negative, zero, huge, out of range.
        case("max_tokens a string", chat_with(json!({"max_tokens": "ten"})), 400, Param("max_tokens")),
        case("max_tokens negative", chat_with(json!({"max_tokens": -1})), 400, Param("max_tokens")),
        case("max_tokens zero", chat_with(json!({"max_tokens": 0})), 400, Param("max_tokens")),
        case("max_tokens 10^12", chat_with(json!({"max_tokens": 1_000_000_000_000u64})), 400, Param("max_tokens")),
        case("max_tokens 10^30", chat_raw(br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":1e30}"#), 400, Param("max_tokens")),
        case("max_tokens past u64", chat_raw(br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551617}"#), 400, Param("max_tokens")),
        case("max_tokens 10^400", chat_raw(br#"{"messages":[{"role":"user","content":"x"}],"max_tokens":1e400}"#), 400, Message("not valid JSON")),
        case("temperature negative", chat_with(json!({"temperature": -1.0})), 400, Param("temperature")),
        case("temperature past f32", chat_raw(br#"{"messages":[{"role":"user","content":"x"}],"temperature":1e39}"#), 400, Param("temperature")),
        case("top_p zero", chat_with(json!({"top_p": 0.0})), 400, Param("top_p")),
        case("top_p above one", chat_with(json!({"top_p": 1.5})), 400, Param("top_p")),
        case("top_k below -1", chat_with(json!({"top_k": -5})), 400, Param("top_k")),
        case("min_p above one", chat_with(json!({"min_p": 2.0})), 400, Param("min_p")),
        case("presence_penalty out of range", chat_with(json!({"presence_penalty": 3.0})), 400, Param("presence_penalty")),
        case("repetition_penalty zero", chat_with(json!({"repetition_penalty": 0.0})), 400, Param("repetition_penalty")),
        case("n zero", chat_with(json!({"n": 0})), 400, Param("n")),
        case("n huge", chat_with(json!({"n": 1000})), 400, Param("n")),
        case("seed a string", chat_with(json!({"seed": "abc"})), 400, Param("seed")),
        case("min_tokens above max_tokens", chat_with(json!({"min_tokens": 5})), 400, Param("min_tokens")),
        case("max_tokens and max_completion_tokens disagree", chat_with(json!({"max_completion_tokens": 3})), 400, Param("max_completion_tokens")),
        case("prompt too long for the context", chat_with(json!({"messages": [{"role": "user", "content": "word ".repeat(400)}]})), 400, Param("messages")),
        // Other fields.
        case("logit_bias key not a token id", chat_with(json!({"logit_bias": {"abc": 1}})), 400, Param("logit_bias")),
        case("logit_bias value out of range", chat_with(json!({"logit_bias": {"5": 1000}})), 400, Param("logit_bias")),
        case("logit_bias token out of the vocabulary", chat_with(json!({"logit_bias": {"999999999": 1}})), 400, Param("logit_bias")),
        case("too many stop strings", chat_with(json!({"stop": vec!["x"; 17]})), 400, Param("stop")),
        case("empty stop string", chat_with(json!({"stop": [""]})), 400, Param("stop")),
        case("oversized stop string", chat_with(json!({"stop": ["x".repeat(5000)]})), 400, Param("stop")),
        case("stop of the wrong type", chat_with(json!({"stop": 5})), 400, Param("stop")),
        case("stop_token_ids negative", chat_with(json!({"stop_token_ids": [-1]})), 400, Param("stop_token_ids[0]")),
        case("stop_token_ids out of the vocabulary", chat_with(json!({"stop_token_ids": [999_999_999]})), 400, Param("stop_token_ids")),
        case("top_logprobs too many", chat_with(json!({"logprobs": true, "top_logprobs": 50})), 400, Param("top_logprobs")),
        case("top_logprobs without logprobs", chat_with(json!({"top_logprobs": 2})), 400, Param("top_logprobs")),
        case("cache_salt empty", chat_with(json!({"cache_salt": ""})), 400, Param("cache_salt")),
        case("cache_salt of the wrong type", chat_with(json!({"cache_salt": 5})), 400, Param("cache_salt")),
        case("response_format of an unknown type", chat_with(json!({"response_format": {"type": "xml"}})), 400, Param("response_format.type")),
        case("json_schema without its object", chat_with(json!({"response_format": {"type": "json_schema"}})), 400, Param("response_format.json_schema")),
        case("json_schema schema not a schema", chat_with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": 5}}})), 400, Param("response_format.json_schema.schema")),
        case("json_schema that does not compile", chat_with(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "frobnicate"}}}}}})), 400, Param("response_format.json_schema.schema")),
        case("guided_regex that does not compile", chat_with(json!({"guided_regex": "(unclosed"})), 400, Param("guided_regex")),
        case("guided_choice empty", chat_with(json!({"guided_choice": []})), 400, Param("guided_choice")),
        case("guided_grammar that does not compile", chat_with(json!({"guided_grammar": "start: undefined_rule"})), 400, Param("guided_grammar")),
        case("two structured-output fields", chat_with(json!({"guided_regex": "a", "response_format": {"type": "json_object"}})), 400, Param("guided_regex")),
        case("structured_outputs with two constraints", chat_with(json!({"structured_outputs": {"regex": "a", "choice": ["b"]}})), 400, Param("structured_outputs")),
        case("structured_outputs with an unknown key", chat_with(json!({"structured_outputs": {"ebnf": "x"}})), 400, Param("structured_outputs.ebnf")),
        case("thinking_budget negative", chat_with(json!({"thinking_budget": -5})), 400, Param("thinking_budget")),
        case("thinking_budget on completions", completion_with(json!({"thinking_budget": 5})), 400, Param("thinking_budget")),
        case("thinking switches contradict", chat_with(json!({"enable_thinking": true, "reasoning_effort": "none"})), 400, Message("contradict")),
        case("unknown reasoning_effort", chat_with(json!({"reasoning_effort": "extreme"})), 400, Param("reasoning_effort")),
        case("enable_thinking not a boolean", chat_with(json!({"chat_template_kwargs": {"enable_thinking": "yes"}})), 400, Param("chat_template_kwargs.enable_thinking")),
        case("unknown model", chat_with(json!({"model": "gpt-4"})), 404, Message("gpt-4")),
        // Tools.
        case("tools not an array", chat_with(json!({"tools": "nope"})), 400, Param("tools")),
        case("tool without a function", chat_with(json!({"tools": [{"type": "function"}]})), 400, Param("tools[0]")),
        case("function without a name", chat_with(tool(json!({"description": "no name"}))), 400, Param("tools[0].function")),
        case("empty function name", chat_with(tool(json!({"name": " "}))), 400, Param("tools[0].function.name")),
        case("parameters not a schema", chat_with(tool(json!({"name": "f", "parameters": 3}))), 400, Param("tools[0].function.parameters")),
        case("tool of another type", chat_with(json!({"tools": [{"type": "retrieval", "function": weather}]})), 400, Param("tools[0].type")),
        case("strict tool under auto", chat_with(tool(json!({"name": "f", "strict": true}))), 400, Param("tools[0].function.strict")),
        case("tool_choice unknown", chat_with(json!({"tool_choice": "sometimes"})), 400, Param("tool_choice")),
        case("tool_choice required without tools", chat_with(json!({"tool_choice": "required"})), 400, Param("tool_choice")),
        case("forced tool call with a response_format", chat_with(json!({"tool_choice": "required", "tools": [{"type": "function", "function": weather}], "response_format": {"type": "json_object"}})), 400, Param("tool_choice")),
        case("tool_choice names a missing function", chat_with(json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [{"type": "function", "function": weather}]})), 400, Param("tool_choice")),
        // Completions.
        case("prompt an object", completion_with(json!({"prompt": {"x": 1}})), 400, Param("prompt")),
        case("prompt with a negative id", completion_with(json!({"prompt": [1, -2]})), 400, Param("prompt")),
        case("prompt id out of the vocabulary", completion_with(json!({"prompt": [999_999_999]})), 400, Param("prompt")),
        case("prompt an empty list", completion_with(json!({"prompt": []})), 400, Param("prompt")),
        case("prompt an empty string", completion_with(json!({"prompt": ""})), 400, Param("prompt")),
        case("prompt an empty id list", completion_with(json!({"prompt": [[]]})), 400, Param("prompt")),
        case("too many prompts times n", completion_with(json!({"prompt": vec!["a"; 40], "n": 16})), 400, Param("prompt")),
        case("echo", completion_with(json!({"echo": true})), 400, Param("echo")),
        case("suffix", completion_with(json!({"suffix": "x"})), 400, Param("suffix")),
        case("best_of other than n", completion_with(json!({"best_of": 3})), 400, Param("best_of")),
        case("legacy logprobs too many", completion_with(json!({"logprobs": 50})), 400, Param("logprobs")),
        // Tokenizer routes.
        case("tokenize with neither prompt nor messages", post_bytes("/tokenize", b"{}"), 400, Message("exactly one")),
        case("detokenize an id out of the vocabulary", post_bytes("/detokenize", br#"{"tokens":[999999999]}"#), 400, Param("tokens")),
        case("detokenize tokens not a list", post_bytes("/detokenize", br#"{"tokens":"abc"}"#), 400, Param("tokens")),
        // HTTP itself.
        case("header flood", headers_flood, 431, Status),
        case("one 2 MB header", huge_header, 431, Status),
        case("garbage request line", b"GARBAGE\r\n\r\n".to_vec(), 400, Status),
        case("bad Content-Length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n".to_vec(), 400, Status),
        case("bad chunk size", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n".to_vec(), 400, Message("request body")),
        case("unknown route", post_bytes("/v2/nothing", b"{}"), 404, Message("/v2/nothing")),
        case("wrong method", b"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405, Status),
    ]
}

fn check(case: &Case, response: &RawResponse) {
    let name = case.name;
    assert_eq!(
        response.status,
        case.status,
        "{name}: {:?}",
        String::from_utf8_lossy(&response.body[..response.body.len().min(500)])
    );
    if matches!(case.names, Names::Status) {
        return;
    }
    let body = response.json();
    let error = &body["error"];
    for field in ["message", "type", "param", "code"] {
        assert!(error.get(field).is_some(), "{name}: no `{field}` in {body}");
    }
    assert_eq!(error["code"], case.status, "{name}: {body}");
    match case.names {
        Names::Param(param) => {
            let got = error["param"].as_str().unwrap_or("");
            assert!(
                got == param
                    || got.starts_with(&format!("{param}."))
                    || got.starts_with(&format!("{param}[")),
                "{name}: param {got:?}, want {param:?}: {body}"
            );
        }
        Names::Message(needle) => {
            let message = error["message"].as_str().unwrap_or("");
            assert!(
                message.contains(needle),
                "{name}: {message:?} lacks {needle:?}"
            );
        }
        Names::Status => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_a_4xx_naming_the_problem_and_the_server_keeps_serving() {
    let server = spawn(
        engine(EngineConfig {
            max_model_len: 256,
            num_blocks: 64,
            ..EngineConfig::default()
        }),
        ServerConfig::default(),
    )
    .await;
    let normal = completion_with(json!({"max_tokens": 1}));
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    for case in &cases {
        let started = Instant::now();
        let response = tokio::time::timeout(
            Duration::from_secs(120),
            exchange(server.addr, &case.request),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: no answer within 120 s", case.name));
        let took = started.elapsed();
        check(case, &response);
        // The server is still up and serving.
        let after = exchange(server.addr, &normal).await;
        assert_eq!(after.status, 200, "after {}: {:?}", case.name, after.json());
        assert_eq!(after.json()["choices"][0]["finish_reason"], "length");
        if took > Duration::from_secs(1) {
            eprintln!("{}: {took:?}", case.name);
        }
    }
    eprintln!("{} malformed requests refused", cases.len());
}
