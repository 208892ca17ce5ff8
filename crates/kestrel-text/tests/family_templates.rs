//! The Llama 3.2 and Phi-3.5 chat templates (llama.cpp's copies of the published files) render
//! byte for byte as `transformers` renders them, for a few conversations: user only, system and
//! multi-turn, no generation prompt, tools (Llama). Goldens made by
//! scripts/golden/make_family_template_goldens.py into tests/fixtures/templates/.

mod common;

use kestrel_text::{ChatTemplate, TemplateInput};
use serde_json::Value;

fn check(name: &str) {
    let path = common::golden_path(&format!("templates/{name}.json"));
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let template = ChatTemplate::new(golden["template"].as_str().unwrap()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 3, "{name}: {} cases", cases.len());
    for case in cases {
        let messages = case["messages"].as_array().unwrap();
        let tools = case["tools"].as_array().map(|t| t.as_slice());
        let kwargs = case["kwargs"].as_object().unwrap();
        let input = TemplateInput {
            messages,
            tools,
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            chat_template_kwargs: Some(kwargs),
        };
        let got = template.render(&input).unwrap();
        assert_eq!(
            got,
            case["text"].as_str().unwrap(),
            "{name}: case {}",
            case["name"]
        );
    }
}

#[test]
fn llama_3_2_template_renders_as_transformers() {
    check("llama3.2");
}

#[test]
fn phi_3_5_template_renders_as_transformers() {
    check("phi3.5");
}
