//! Chat-template rendering with hostile messages and tools: a generated conversation goes
//! through the server's parsing and validation (which normalizes messages and checks tools),
//! then through the real Qwen3 and Qwen2.5 templates (the sources the template goldens were
//! made with, `tests/fixtures/templates/`).
//!
//! Invariants: nothing panics; a render fails only as the template's own refusal or a render
//! error (both 400s in the server), never anything else; a rendered prompt holds every user
//! message's text verbatim (message text is data, never template code).

use arbitrary::Unstructured;
use kestrel_protocol::{parse_request, ChatCompletionRequest};
use kestrel_server::validate::{validate_chat, Limits};
use kestrel_text::{ChatTemplate, TemplateInput};
use serde_json::{json, Map, Value};

use crate::{signature, Target};

pub struct ChatTemplateTarget {
    templates: Vec<(&'static str, ChatTemplate)>,
}

fn template_of(golden: &str) -> ChatTemplate {
    let v: Value = serde_json::from_str(golden).expect("template golden is JSON");
    let source = v["chat_template"]
        .as_str()
        .expect("golden has chat_template");
    ChatTemplate::new(source).expect("the golden template compiles")
}

impl ChatTemplateTarget {
    pub fn new() -> Self {
        Self {
            templates: vec![
                (
                    "qwen3",
                    template_of(include_str!(
                        "../../../../tests/fixtures/templates/qwen3.json"
                    )),
                ),
                (
                    "qwen2.5",
                    template_of(include_str!(
                        "../../../../tests/fixtures/templates/qwen2.5.json"
                    )),
                ),
            ],
        }
    }
}

impl Default for ChatTemplateTarget {
    fn default() -> Self {
        Self::new()
    }
}

fn limits() -> Limits {
    Limits {
        served_model_name: "m".into(),
        max_n: 16,
        max_model_len: 4096,
        vocab_size: 151_936,
        default_sampling: Default::default(),
        thinking_budget: None,
    }
}

impl Target for ChatTemplateTarget {
    fn name(&self) -> &'static str {
        "chat_template"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        [
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
            json!({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nb"}, {"role": "user", "content": "c"}],
                "chat_template_kwargs": {"enable_thinking": false}}),
            json!({"messages": [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": null, "reasoning_content": "r",
                 "tool_calls": [{"id": "c", "type": "function", "function": {"name": "w", "arguments": "{\"city\": \"P\"}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "sunny"}],
                "tools": [{"type": "function", "function": {"name": "w", "description": "d",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
        ]
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect()
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        [
            "\"role\":",
            "\"content\":",
            "\"tool_calls\":",
            "\"tools\":",
            "\"reasoning_content\":",
            "\"user\"",
            "\"assistant\"",
            "\"tool\"",
            "\"system\"",
            "<think>",
            "</think>",
            "<tool_call>",
            "{{",
            "{%",
            "null",
            "\"enable_thinking\":",
        ]
        .iter()
        .map(|w| w.as_bytes().to_vec())
        .collect()
    }

    fn generate(&self, u: &mut Unstructured<'_>) -> Option<Vec<u8>> {
        let mut body = Map::new();
        body.insert("messages".into(), super::messages(u)?);
        if u.arbitrary().ok()? {
            body.insert("tools".into(), super::tools(u)?);
        }
        if u.arbitrary().ok()? {
            let flag = if u.ratio(4, 5).ok()? {
                json!(u.arbitrary::<bool>().ok()?)
            } else {
                super::json_value(u, 1)?
            };
            body.insert(
                "chat_template_kwargs".into(),
                json!({"enable_thinking": flag}),
            );
        }
        if u.ratio(1, 4).ok()? {
            body.insert(
                "add_generation_prompt".into(),
                json!(u.arbitrary::<bool>().ok()?),
            );
        }
        Some(Value::Object(body).to_string().into_bytes())
    }

    fn run(&self, input: &[u8]) -> u64 {
        let req = match parse_request::<ChatCompletionRequest>(input) {
            Ok(req) => req,
            Err(e) => return signature(&["parse", e.param.as_deref().unwrap_or("")]),
        };
        let plan = match validate_chat(&req, &limits()) {
            Ok(plan) => plan,
            Err(e) => {
                assert!(e.status().is_client_error(), "{e}");
                return signature(&[
                    "invalid",
                    &e.to_string().chars().take(40).collect::<String>(),
                ]);
            }
        };
        let mut sig = Vec::new();
        for (name, template) in &self.templates {
            let rendered = template.render(&TemplateInput {
                messages: &plan.messages,
                tools: plan.tools.as_deref(),
                add_generation_prompt: plan.add_generation_prompt,
                chat_template_kwargs: Some(&plan.chat_template_kwargs),
            });
            match rendered {
                Ok(text) => {
                    for m in plan.messages.iter().filter(|m| m["role"] == "user") {
                        let content = m["content"].as_str().expect("normalized content is text");
                        assert!(
                            text.contains(content),
                            "{name}: user text {content:?} is not in the prompt {text:?}"
                        );
                    }
                    sig.push(format!("{name} ok"));
                }
                Err(e) => {
                    assert!(
                        matches!(
                            e,
                            kestrel_text::Error::TemplateRaised(_)
                                | kestrel_text::Error::TemplateRender(_)
                                | kestrel_text::Error::TemplateInput(_)
                        ),
                        "{name}: {e}"
                    );
                    sig.push(format!(
                        "{name} {}",
                        e.to_string().chars().take(50).collect::<String>()
                    ));
                }
            }
        }
        let parts: Vec<&str> = sig.iter().map(String::as_str).collect();
        signature(&parts)
    }
}
