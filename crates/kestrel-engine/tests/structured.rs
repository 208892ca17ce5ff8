//! Structured output through the engine thread on the tiny random Qwen3 fixture (vocabulary of
//! 320) with a synthetic byte-level token table: whatever the random model prefers, the output
//! follows the JSON schema, regex or choice, ends as a stop when the grammar is complete,
//! greedy or sampled, beside unconstrained sequences in the same steps, with and without async
//! scheduling; thinking is free until `</think>`, which the budget forces; a constraint that
//! cannot be completed within `max_tokens` ends as `Length`, never as a stop.

use std::path::PathBuf;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::KvDtype;
use kestrel_engine::{
    start_engine, EngineConfig, EngineEvent, EngineHandle, EngineRequest, FinishReason,
    GrammarCompiler, GrammarSpec, OutputConstraint, RequestStream, SamplingParams, Thinking,
};
use kestrel_model::{ModelFiles, QwenModel};
use serde_json::{json, Value};

const VOCAB: usize = 320;
const THINK_END: u32 = 318;
const END: u32 = 319;

/// Bytes as tokens 0..256, some multi-byte tokens, `</think>` and an end token (special).
fn token_table() -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    for w in [
        "true", "false", "red", "green", "blue", "{\"", "\": ", "\", \"", "\"}", "ok", "color",
        "\"n\": ", "12", "99", "abc", "-", ", ",
    ] {
        words.push(w.as_bytes().to_vec());
    }
    words.resize(THINK_END as usize, Vec::new());
    words.push(b"\xFF</think>".to_vec());
    words.push(b"\xFF<|end|>".to_vec());
    words
}

fn text(tokens: &[u32]) -> String {
    let table = token_table();
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|&t| {
            let w = &table[t as usize];
            if w.first() == Some(&0xFF) {
                w[1..].to_vec()
            } else {
                w.clone()
            }
        })
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn compiler() -> GrammarCompiler {
    GrammarCompiler::new(token_table(), END, VOCAB).expect("token table")
}

fn engine(async_scheduling: bool) -> EngineHandle {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/qwen3-tiny-tied");
    let backend = CpuBackend::new();
    let files = ModelFiles::open(&dir).expect("fixture");
    let model = QwenModel::load(&backend, files.config().clone(), files.weights()).expect("load");
    let config = EngineConfig {
        max_num_seqs: 16,
        max_num_batched_tokens: 512,
        max_model_len: 256,
        num_blocks: 64,
        kv_dtype: KvDtype::F32,
        async_scheduling,
        ..EngineConfig::default()
    };
    start_engine(backend, model, config).expect("engine starts")
}

fn request(
    id: &str,
    seed: Option<u64>,
    max_tokens: usize,
    constraint: OutputConstraint,
) -> EngineRequest {
    EngineRequest {
        request_id: id.into(),
        prompt_ids: (0..12u32)
            .map(|i| (i * 37 + id.len() as u32 * 11) % 300)
            .collect(),
        sampling: match seed {
            None => SamplingParams::greedy(),
            Some(s) => SamplingParams {
                temperature: 1.0,
                seed: Some(s),
                ..SamplingParams::default()
            },
        },
        max_tokens,
        min_tokens: 0,
        stop_token_ids: vec![END],
        cache_salt: None,
        constraint,
    }
}

fn grammar(spec: GrammarSpec) -> OutputConstraint {
    OutputConstraint {
        grammar: Some(compiler().compile(&spec).expect("compiles")),
        thinking: None,
    }
}

fn collect(stream: &mut RequestStream) -> (Vec<u32>, FinishReason) {
    let mut tokens = Vec::new();
    while let Some(event) = stream.blocking_recv() {
        match event {
            EngineEvent::Token { id, .. } => tokens.push(id),
            EngineEvent::Finished { reason, .. } => return (tokens, reason),
            EngineEvent::Error { message } => panic!("engine error: {message}"),
        }
    }
    panic!("stream ended without a Finished event");
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "color": {"enum": ["red", "green", "blue"]},
            "n": {"type": "integer", "minimum": 0, "maximum": 99}
        },
        "required": ["ok", "color", "n"],
        "additionalProperties": false
    })
}

fn check_schema_output(v: &Value) {
    assert!(v["ok"].is_boolean(), "{v}");
    assert!(
        ["red", "green", "blue"].contains(&v["color"].as_str().unwrap_or("")),
        "{v}"
    );
    let n = v["n"].as_i64().expect("integer n");
    assert!((0..=99).contains(&n), "{v}");
    assert_eq!(v.as_object().unwrap().len(), 3, "{v}");
}

#[test]
fn outputs_follow_schema_regex_and_choice() {
    for async_scheduling in [false, true] {
        let handle = engine(async_scheduling);
        let mut streams = Vec::new();
        let seeds = [None, Some(1), Some(2), Some(3), Some(4)];
        for (i, seed) in seeds.iter().enumerate() {
            let id = format!("json{i}");
            let r = request(&id, *seed, 96, grammar(GrammarSpec::JsonSchema(schema())));
            streams.push(("json", handle.submit(r).expect("submit")));
            let r = request(
                &format!("rx{i}"),
                *seed,
                32,
                grammar(GrammarSpec::Regex("[a-c]{3}-[0-9]{2}".into())),
            );
            streams.push(("regex", handle.submit(r).expect("submit")));
            let r = request(
                &format!("choice{i}"),
                *seed,
                32,
                grammar(GrammarSpec::Choice(vec!["red".into(), "blue moon".into()])),
            );
            streams.push(("choice", handle.submit(r).expect("submit")));
            // Unconstrained neighbours in the same steps.
            let r = request(&format!("free{i}"), *seed, 20, OutputConstraint::default());
            streams.push(("free", handle.submit(r).expect("submit")));
        }
        let mut free_masked = 0;
        for (kind, mut s) in streams {
            let (tokens, reason) = collect(&mut s);
            let out = text(&tokens);
            match kind {
                "json" => {
                    assert!(
                        matches!(reason, FinishReason::Stop { .. }),
                        "{out:?} {reason:?}"
                    );
                    let v: Value = serde_json::from_str(&out)
                        .unwrap_or_else(|e| panic!("invalid JSON {out:?}: {e}"));
                    check_schema_output(&v);
                }
                "regex" => {
                    assert!(matches!(reason, FinishReason::Stop { .. }), "{out:?}");
                    let b = out.as_bytes();
                    assert_eq!(b.len(), 6, "{out:?}");
                    assert!(b[..3].iter().all(|c| (b'a'..=b'c').contains(c)), "{out:?}");
                    assert_eq!(b[3], b'-');
                    assert!(b[4..].iter().all(u8::is_ascii_digit), "{out:?}");
                }
                "choice" => {
                    assert!(out == "red" || out == "blue moon", "{out:?}");
                    assert!(matches!(reason, FinishReason::Stop { .. }));
                }
                _ => {
                    // The random model's free output is mostly unprintable bytes: no mask
                    // leaked into it.
                    free_masked += usize::from(tokens.iter().all(|&t| t < 128));
                }
            }
        }
        assert!(free_masked < seeds.len(), "free sequences look constrained");
    }
}

#[test]
fn thinking_is_free_until_the_budget_forces_its_end() {
    let handle = engine(false);
    for seed in [None, Some(7), Some(8)] {
        let constraint = OutputConstraint {
            grammar: Some(
                compiler()
                    .compile(&GrammarSpec::JsonSchema(schema()))
                    .expect("compiles"),
            ),
            thinking: Some(Thinking {
                start_token: None,
                end_token: THINK_END,
                budget: Some(6),
            }),
        };
        let r = request("think", seed, 120, constraint);
        let (tokens, reason) = collect(&mut handle.submit(r).expect("submit"));
        let end = tokens
            .iter()
            .position(|&t| t == THINK_END)
            .expect("</think> forced");
        assert!(end <= 6, "reasoning of {end} tokens over a budget of 6");
        let answer = text(&tokens[end + 1..]);
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("invalid JSON {answer:?}: {e}"));
        check_schema_output(&v);
        assert!(matches!(reason, FinishReason::Stop { .. }));
    }
}

#[test]
fn a_constraint_cut_short_ends_as_length() {
    let handle = engine(false);
    let r = request("short", None, 4, grammar(GrammarSpec::JsonSchema(schema())));
    let (tokens, reason) = collect(&mut handle.submit(r).expect("submit"));
    assert_eq!(reason, FinishReason::Length);
    assert_eq!(tokens.len(), 4);
    assert!(serde_json::from_str::<Value>(&text(&tokens)).is_err());
}
