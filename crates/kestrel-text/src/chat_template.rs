//! Chat template rendering, matching `transformers`' `apply_chat_template(..., tokenize=False)`
//! byte for byte (checked against its renders of the real Qwen3 and Qwen2.5 templates in
//! `tests/fixtures/templates/`).
//!
//! What `transformers` (5.x, `utils/chat_template_utils.py`) does, and what we do the same:
//! - Jinja2 with `trim_blocks` and `lstrip_blocks`, `keep_trailing_newline` off, loop controls;
//!   minijinja with Python's string/dict methods from `minijinja_contrib::pycompat`
//!   (`.startswith`, `.split`, `.items()`, ...). Negative-step slices (`messages[::-1]`)
//!   are native in minijinja 2, so templates are rendered exactly as written.
//! - `tojson` is `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//!   sort_keys=False)`; `raise_exception(msg)` fails the render; `strftime_now(fmt)`.
//! - `{{ value }}` prints Python's `str(value)` (`None`, `True`, `{'a': 1}`).
//! - Messages are normalised first: keys whose value is `null` are dropped (so a `null`
//!   `content` is *undefined* to the template, not `None`), and a message's reasoning
//!   (`reasoning_content`, `thinking` or `reasoning`, first non-null) is exposed under both
//!   `thinking` and `reasoning_content`.
//! - Context: `messages`, `tools`, `documents` (always none), `add_generation_prompt`, the
//!   tokenizer's special tokens (`bos_token`, `eos_token`, ...), then the request's
//!   `chat_template_kwargs` (e.g. `enable_thinking`), which override the special tokens.
//!
//! The rendered text is tokenized with `add_special_tokens = false`, as `transformers` does.

mod pyfmt;
mod strftime;

use minijinja::value::{Kwargs, Value as JinjaValue};
use minijinja::{Environment, ErrorKind};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

const TEMPLATE_NAME: &str = "chat_template";

/// Context variables a request's `chat_template_kwargs` may not replace (Python would fail
/// with "got multiple values for keyword argument").
const RESERVED_VARIABLES: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

/// The names a message's reasoning is passed under; the first is what chat templates read.
/// Same order as `transformers`' `_REASONING_FIELDS`.
const REASONING_FIELDS: [&str; 3] = ["reasoning_content", "thinking", "reasoning"];

/// What one render needs from the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TemplateInput<'a> {
    /// OpenAI-style messages: `role`, `content` (string, null or a list of parts),
    /// `reasoning_content`, `tool_calls`, `tool_call_id`, `name`, ...
    pub messages: &'a [Value],
    /// Tool definitions (JSON schema objects) or `None`.
    pub tools: Option<&'a [Value]>,
    pub add_generation_prompt: bool,
    /// Extra template variables (`enable_thinking`, ...), merged last.
    pub chat_template_kwargs: Option<&'a Map<String, Value>>,
}

/// A compiled chat template and the variables every render gets (special tokens).
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    globals: Map<String, Value>,
}

/// The error `raise_exception` attaches, so a render failure can tell a template's own
/// rejection of the input apart from a template bug.
#[derive(Debug)]
struct RaisedException(String);

impl std::fmt::Display for RaisedException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedException {}

impl ChatTemplate {
    /// Compiles a template.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            out.write_str(&pyfmt::py_str(value))
                .map_err(minijinja::Error::from)
        });
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", |format: &str| {
            strftime::strftime_now(format)
        });
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|err| Error::TemplateSyntax(describe(&err)))?;
        Ok(Self {
            env,
            source,
            globals: Map::new(),
        })
    }

    /// The tokenizer's default chat template, with its special tokens as variables.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Result<Self> {
        let source = tokenizer.chat_template().ok_or(Error::NoChatTemplate)?;
        Ok(Self::new(source)?.with_globals(tokenizer.special_tokens_map()))
    }

    /// Variables every render sees (e.g. [`Tokenizer::special_tokens_map`]); a request's
    /// `chat_template_kwargs` override them.
    pub fn with_globals(mut self, globals: Map<String, Value>) -> Self {
        self.globals = globals;
        self
    }

    /// Renders a conversation into the prompt text.
    pub fn render(&self, input: &TemplateInput<'_>) -> Result<String> {
        if input.messages.is_empty() {
            return Err(Error::TemplateInput(
                "cannot apply the chat template to an empty conversation".into(),
            ));
        }
        let mut context = Map::new();
        context.insert(
            "messages".into(),
            Value::Array(normalize_messages(input.messages)?),
        );
        context.insert(
            "tools".into(),
            input
                .tools
                .map_or(Value::Null, |tools| Value::Array(tools.to_vec())),
        );
        context.insert("documents".into(), Value::Null);
        context.insert(
            "add_generation_prompt".into(),
            Value::Bool(input.add_generation_prompt),
        );
        for (key, value) in &self.globals {
            if !RESERVED_VARIABLES.contains(&key.as_str()) {
                context.insert(key.clone(), value.clone());
            }
        }
        for (key, value) in input.chat_template_kwargs.into_iter().flatten() {
            if RESERVED_VARIABLES.contains(&key.as_str()) {
                return Err(Error::TemplateInput(format!(
                    "chat_template_kwargs may not set `{key}`, which the server passes itself"
                )));
            }
            context.insert(key.clone(), value.clone());
        }

        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|err| Error::TemplateRender(describe(&err)))?;
        template
            .render(JinjaValue::from_serialize(&context))
            .map_err(|err| match find_raised(&err) {
                Some(message) => Error::TemplateRaised(message),
                None => Error::TemplateRender(describe(&err)),
            })
    }

    /// The template text.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Mirrors `transformers`' `_normalize_chat_messages` and `_alias_reasoning_fields`.
fn normalize_messages(messages: &[Value]) -> Result<Vec<Value>> {
    messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let Value::Object(fields) = message else {
                return Err(Error::TemplateInput(format!(
                    "messages[{i}] must be an object, got {message}"
                )));
            };
            let fields: Map<String, Value> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let reasoning = REASONING_FIELDS
                .iter()
                .find_map(|name| fields.get(*name))
                .cloned();
            let Some(reasoning) = reasoning else {
                return Ok(Value::Object(fields));
            };
            // Python: {"thinking": reasoning, **message, "reasoning_content": reasoning}
            let mut aliased = Map::new();
            aliased.insert("thinking".into(), reasoning.clone());
            aliased.extend(fields);
            aliased.insert("reasoning_content".into(), reasoning);
            Ok(Value::Object(aliased))
        })
        .collect()
}

/// The `tojson` filter: `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
/// sort_keys=False)`, arguments positional or by keyword as in Python.
fn tojson(
    value: &JinjaValue,
    ensure_ascii: Option<JinjaValue>,
    indent: Option<JinjaValue>,
    kwargs: Kwargs,
) -> std::result::Result<JinjaValue, minijinja::Error> {
    let arg = |positional: Option<JinjaValue>,
               name: &str|
     -> std::result::Result<Option<JinjaValue>, minijinja::Error> {
        match positional {
            Some(value) => Ok(Some(value)),
            None => kwargs.get::<Option<JinjaValue>>(name),
        }
    };
    let mut options = pyfmt::JsonOptions::default();
    if let Some(v) = arg(ensure_ascii, "ensure_ascii")? {
        options.ensure_ascii = v.is_true();
    }
    options.indent = match arg(indent, "indent")? {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => match v.as_str() {
            Some(unit) => Some(unit.to_owned()),
            None => Some(" ".repeat(usize::try_from(v)?)),
        },
    };
    if let Some(v) = kwargs.get::<Option<JinjaValue>>("separators")? {
        if !v.is_none() {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .unwrap_or_default();
            let [item, key]: [String; 2] = parts.try_into().map_err(|_| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: separators must be two strings",
                )
            })?;
            options.separators = Some((item, key));
        }
    }
    if let Some(v) = kwargs.get::<Option<JinjaValue>>("sort_keys")? {
        options.sort_keys = v.is_true();
    }
    kwargs.assert_all_used()?;
    pyfmt::json_dumps(value, &options).map(JinjaValue::from_safe_string)
}

fn raise_exception(message: String) -> std::result::Result<JinjaValue, minijinja::Error> {
    Err(
        minijinja::Error::new(ErrorKind::InvalidOperation, message.clone())
            .with_source(RaisedException(message)),
    )
}

fn find_raised(err: &minijinja::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if let Some(raised) = current.downcast_ref::<RaisedException>() {
            return Some(raised.0.clone());
        }
        source = current.source();
    }
    None
}

/// A minijinja error with its cause chain on one line.
fn describe(err: &minijinja::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(source: &str, messages: Value) -> Result<String> {
        let messages = messages.as_array().cloned().unwrap_or_default();
        ChatTemplate::new(source)?.render(&TemplateInput {
            messages: &messages,
            ..TemplateInput::default()
        })
    }

    #[test]
    fn negative_step_slices_reverse_without_rewriting() {
        let out = render(
            "{% for m in messages[::-1] %}{{ m.content }}{% endfor %}",
            json!([{"content": "a"}, {"content": "b"}, {"content": "c"}]),
        );
        assert_eq!(out.unwrap(), "cba");
        let out = render(
            "{{ messages[0].content[::-1] }}|{{ messages[0].content[-2:] }}",
            json!([{"content": "héllo"}]),
        );
        assert_eq!(out.unwrap(), "olléh|lo");
    }

    #[test]
    fn python_string_methods_and_whitespace_control() {
        let source = "{%- for m in messages %}\n  {%- if m.content.startswith('<x>') and m.content.endswith('</x>') %}\n    {{- m.content.split('</x>')[0].lstrip('<x>').rstrip('\\n') }}\n  {%- endif %}\n{%- endfor %}\n";
        assert_eq!(
            render(
                source,
                json!([{"content": "<x>hi\n</x>"}, {"content": "no"}])
            )
            .unwrap(),
            "hi"
        );
        // trim_blocks eats the newline after a block tag; lstrip_blocks the indentation before it.
        let out = render("{% if true %}\n    a\n    {% endif %}\nb\n", json!([{}])).unwrap();
        assert_eq!(
            out, "    a\nb",
            "the template's single trailing newline is dropped too"
        );
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let out = render(
            "{{ messages[0].args | tojson }}|{{ messages[0].args | tojson(indent=2) }}",
            json!([{"args": {"b": [1, 2.0], "a": "é<>&"}}]),
        );
        assert_eq!(out.unwrap(), "{\"b\": [1, 2.0], \"a\": \"é<>&\"}|{\n  \"b\": [\n    1,\n    2.0\n  ],\n  \"a\": \"é<>&\"\n}");
        let out = render(
            "{{ messages[0].args | tojson(separators=(',', ':'), sort_keys=true) }}",
            json!([{"args": {"b": 1, "a": null}}]),
        );
        assert_eq!(out.unwrap(), "{\"a\":null,\"b\":1}");
    }

    #[test]
    fn printing_follows_python_str() {
        let out = render("{{ messages[0].x }} {{ messages[0].t }} {{ messages[0].l }} [{{ messages[0].missing }}] {{ 1e-7 }}", json!([{"x": null, "t": true, "l": ["a", 1, null]}]));
        // `x` is null, so it is dropped from the message and prints as undefined.
        assert_eq!(out.unwrap(), " True ['a', 1, None] [] 1e-07");
    }

    #[test]
    fn null_keys_are_dropped_and_reasoning_is_aliased() {
        let source = "{% for m in messages %}{{ m.content is defined }} {{ m.reasoning_content }} {{ m.thinking }} {{ m | list }};{% endfor %}";
        let out = render(
            source,
            json!([{"role": "assistant", "content": null, "reasoning": "r"}, {"role": "user", "content": "u"}]),
        );
        assert_eq!(
            out.unwrap(),
            "False r r ['thinking', 'role', 'reasoning', 'reasoning_content'];True   ['role', 'content'];"
        );
    }

    #[test]
    fn kwargs_and_globals_reach_the_template() {
        let template = ChatTemplate::new("{{ eos_token }} {{ enable_thinking }} {{ add_generation_prompt }} {{ tools | length }}")
            .unwrap()
            .with_globals(json!({"eos_token": "<|im_end|>", "pad_token": "P"}).as_object().cloned().unwrap());
        let messages = [json!({"role": "user", "content": "hi"})];
        let tools = [json!({"type": "function"})];
        let kwargs = json!({"enable_thinking": false})
            .as_object()
            .cloned()
            .unwrap();
        let input = TemplateInput {
            messages: &messages,
            tools: Some(&tools),
            add_generation_prompt: true,
            chat_template_kwargs: Some(&kwargs),
        };
        assert_eq!(template.render(&input).unwrap(), "<|im_end|> False True 1");
        let reserved = json!({"messages": []}).as_object().cloned().unwrap();
        let input = TemplateInput {
            chat_template_kwargs: Some(&reserved),
            ..input
        };
        assert!(matches!(
            template.render(&input),
            Err(Error::TemplateInput(_))
        ));
    }

    #[test]
    fn errors_are_reported() {
        assert!(matches!(
            ChatTemplate::new("{% if %}"),
            Err(Error::TemplateSyntax(_))
        ));
        let raised = render(
            "{{ raise_exception('Only user and assistant roles') }}",
            json!([{}]),
        );
        match raised {
            Err(Error::TemplateRaised(message)) => {
                assert_eq!(message, "Only user and assistant roles")
            }
            other => panic!("expected TemplateRaised, got {other:?}"),
        }
        let err = render(
            "{{ messages[0].content.missing_attr.x }}",
            json!([{"content": "a"}]),
        );
        assert!(matches!(err, Err(Error::TemplateRender(_))), "{err:?}");
        assert!(matches!(
            render("x", json!([])),
            Err(Error::TemplateInput(_))
        ));
        assert!(matches!(
            render("x", json!(["not an object"])),
            Err(Error::TemplateInput(_))
        ));
    }

    #[test]
    fn strftime_now_and_namespace_work() {
        let out = render("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ strftime_now('%Y') | length }}", json!([{}, {}]));
        assert_eq!(out.unwrap(), "2 4");
    }

    #[test]
    fn loop_controls_are_enabled() {
        let out = render("{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.c }}{% endfor %}", json!([{"c": 1}, {"c": 2}]));
        assert_eq!(out.unwrap(), "1");
    }
}
