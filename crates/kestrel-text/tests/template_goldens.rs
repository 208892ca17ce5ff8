//! Chat template renders and their token ids must equal `transformers`' for every golden
//! conversation (tests/fixtures/templates/*.json, made by
//! scripts/golden/make_template_goldens.py from the real Qwen3 and Qwen2.5 files).
//!
//! `KESTREL_TEMPLATE_GOLDENS=DIR` reads `qwen3.json` and `qwen2.5.json` from DIR instead of
//! tests/fixtures/templates, to check conversations that are not committed:
//!
//! ```text
//! /opt/ref/bin/python scripts/golden/make_template_goldens.py --cases my-cases.json --out-dir DIR
//! KESTREL_TEMPLATE_GOLDENS=DIR cargo test -p kestrel-text --test template_goldens
//! ```
//!
//! The committed goldens must hold at least 12 cases; a DIR given this way, at least one.

mod common;

use kestrel_text::{ChatTemplate, TemplateInput, Tokenizer};
use serde_json::Value;

/// `$KESTREL_TEMPLATE_GOLDENS`, when set and non-empty.
fn goldens_override() -> Option<std::path::PathBuf> {
    std::env::var_os("KESTREL_TEMPLATE_GOLDENS")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
}

fn load_goldens(name: &str) -> Value {
    let path = match goldens_override() {
        Some(dir) => dir.join(name),
        None => common::golden_path(&format!("templates/{name}")),
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "read {}: {err} (made by scripts/golden/make_template_goldens.py)",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("golden file is JSON")
}

/// Where two strings first differ, with some context, for readable failures.
fn first_difference(got: &str, want: &str) -> String {
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(40);
    let context = |s: &str| {
        String::from_utf8_lossy(&s.as_bytes()[from.min(s.len())..(at + 40).min(s.len())])
            .into_owned()
    };
    format!(
        "first difference at byte {at}:\n   got: {:?}\n  want: {:?}",
        context(got),
        context(want)
    )
}

/// Renders and tokenizes every case; collects all mismatches before failing.
fn check_goldens(file: &str, tokenizer: &Tokenizer, template_source: &str) -> usize {
    let goldens = load_goldens(file);
    assert_eq!(
        goldens["chat_template"].as_str(),
        Some(template_source),
        "{file} was made from a different chat template than the fixture's; re-run scripts/fetch-fixtures.sh \
         and scripts/golden/make_template_goldens.py"
    );
    let template = ChatTemplate::new(template_source)
        .expect("the real template compiles")
        .with_globals(tokenizer.special_tokens_map());
    let cases = goldens["cases"].as_array().expect("cases");
    let min_cases = if goldens_override().is_some() { 1 } else { 12 };
    assert!(
        cases.len() >= min_cases,
        "{file}: only {} cases",
        cases.len()
    );

    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let messages = case["messages"].as_array().expect("messages").clone();
        let tools = case["tools"].as_array().cloned();
        let kwargs = case["chat_template_kwargs"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let input = TemplateInput {
            messages: &messages,
            tools: tools.as_deref(),
            add_generation_prompt: case["add_generation_prompt"]
                .as_bool()
                .expect("add_generation_prompt"),
            chat_template_kwargs: Some(&kwargs),
        };
        let rendered = template.render(&input);
        match (case.get("error"), rendered) {
            (Some(_), Err(_)) => {}
            (Some(want), Ok(got)) => failures.push(format!(
                "{name}: transformers fails ({want}) but we rendered {got:?}"
            )),
            (None, Err(err)) => failures.push(format!("{name}: render failed: {err}")),
            (None, Ok(got)) => {
                let want = case["rendered"].as_str().expect("rendered");
                if got != want {
                    failures.push(format!(
                        "{name}: render differs; {}",
                        first_difference(&got, want)
                    ));
                    continue;
                }
                let want_ids: Vec<u32> =
                    serde_json::from_value(case["token_ids"].clone()).expect("token_ids");
                let ids = tokenizer.encode(&got, false).expect("encode");
                if ids != want_ids {
                    let at = ids
                        .iter()
                        .zip(&want_ids)
                        .position(|(a, b)| a != b)
                        .unwrap_or(ids.len().min(want_ids.len()));
                    failures.push(format!(
                        "{name}: token ids differ at {at}: got {:?}, want {:?}",
                        &ids[at..(at + 8).min(ids.len())],
                        &want_ids[at..(at + 8).min(want_ids.len())]
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn qwen3_template_and_tokenizer_match_transformers() {
    let tokenizer = common::qwen3_tokenizer();
    let source = tokenizer
        .chat_template()
        .expect("Qwen3 tokenizer_config.json has a chat template")
        .to_owned();
    check_goldens("qwen3.json", &tokenizer, &source);
}

#[test]
fn qwen25_gguf_template_and_tokenizer_match_transformers() {
    let tokenizer = common::qwen25_gguf_tokenizer();
    let source = tokenizer
        .chat_template()
        .expect("the GGUF has tokenizer.chat_template")
        .to_owned();
    check_goldens("qwen2.5.json", &tokenizer, &source);
}

#[test]
fn from_tokenizer_uses_the_default_template_and_special_tokens() {
    let tokenizer = common::qwen3_tokenizer();
    let template = ChatTemplate::from_tokenizer(&tokenizer).expect("template");
    let messages = [serde_json::json!({"role": "user", "content": "hi"})];
    let input = TemplateInput {
        messages: &messages,
        add_generation_prompt: true,
        ..TemplateInput::default()
    };
    assert_eq!(
        template.render(&input).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}
