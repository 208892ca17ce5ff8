//! Structured output, request side: the fields that ask for a grammar (OpenAI's
//! `response_format`, vLLM's `structured_outputs` object and its older `guided_json` /
//! `guided_regex` / `guided_choice` / `guided_grammar`, and a forced tool call), checked into
//! one [`GrammarRequest`] that names the field it came from; and, once the prompt is rendered,
//! the compiled [`OutputConstraint`] the engine enforces (the grammar, and the reasoning phase
//! before it when thinking is on, with its budget).
//!
//! Every problem is a 400 naming the field: two fields asking for grammars, an unknown
//! `response_format.type`, a schema or regex that does not compile. Nothing falls back to
//! free text.

use kestrel_engine::{GrammarSpec, OutputConstraint, Thinking};
use kestrel_protocol::{SamplingOptions, Tool};
use kestrel_text::reasoning::PromptThinking;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::state::Model;

/// A request's grammar and the field that asked for it (for errors).
#[derive(Clone, Debug, PartialEq)]
pub struct GrammarRequest {
    pub spec: GrammarSpec,
    pub param: String,
}

impl GrammarRequest {
    fn new(spec: GrammarSpec, param: &str) -> Self {
        Self {
            spec,
            param: param.to_string(),
        }
    }

    /// The grammar as JSON, for the response cache's key.
    pub fn key_json(&self) -> Value {
        let data = match &self.spec {
            GrammarSpec::JsonSchema(s) => s.clone(),
            GrammarSpec::JsonObject => Value::Null,
            GrammarSpec::Regex(r) => Value::String(r.clone()),
            GrammarSpec::Lark(g) => Value::String(g.clone()),
            GrammarSpec::Choice(c) => json!(c),
        };
        json!({"kind": self.spec.kind(), "data": data})
    }
}

fn bad(param: &str, message: String) -> ApiError {
    ApiError::BadRequest {
        message: format!("`{param}`: {message}"),
        param: Some(param.to_string()),
    }
}

/// A JSON schema given as an object or as a JSON string holding one (vLLM accepts both).
fn schema_value(v: &Value, param: &str) -> Result<Value, ApiError> {
    let schema = match v {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| bad(param, format!("not a JSON schema: {e}")))?
        }
        other => other.clone(),
    };
    if !schema.is_object() && !schema.is_boolean() {
        return Err(bad(
            param,
            format!("a JSON schema must be an object, got {schema}"),
        ));
    }
    Ok(schema)
}

fn string_list(v: &Value, param: &str) -> Result<Vec<String>, ApiError> {
    let list: Vec<String> = serde_json::from_value(v.clone())
        .map_err(|_| bad(param, "must be an array of strings".into()))?;
    if list.is_empty() {
        return Err(bad(param, "must not be empty".into()));
    }
    Ok(list)
}

fn string(v: &Value, param: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(bad(param, "must be a non-empty string".into())),
    }
}

/// OpenAI's `response_format`: `text` (nothing), `json_object` (any object; llama.cpp's
/// `schema` beside it is honoured) or `json_schema` with `json_schema.schema`.
fn response_format(format: &Value) -> Result<Option<GrammarRequest>, ApiError> {
    let Some(obj) = format.as_object() else {
        return Err(bad("response_format", "must be an object".into()));
    };
    match obj.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(match obj.get("schema") {
            Some(s) => GrammarRequest::new(
                GrammarSpec::JsonSchema(schema_value(s, "response_format.schema")?),
                "response_format.schema",
            ),
            None => GrammarRequest::new(GrammarSpec::JsonObject, "response_format"),
        })),
        Some("json_schema") => {
            let param = "response_format.json_schema";
            let Some(js) = obj.get("json_schema").and_then(Value::as_object) else {
                return Err(bad(
                    param,
                    "`response_format` of type \"json_schema\" needs a `json_schema` object".into(),
                ));
            };
            if let Some(name) = js.get("name") {
                if !name.is_string() {
                    return Err(bad(
                        "response_format.json_schema.name",
                        "must be a string".into(),
                    ));
                }
            }
            if js
                .get("strict")
                .is_some_and(|s| !s.is_boolean() && !s.is_null())
            {
                return Err(bad(
                    "response_format.json_schema.strict",
                    "must be a boolean".into(),
                ));
            }
            let spec = match js.get("schema") {
                // OpenAI allows leaving the schema out: any JSON object.
                None | Some(Value::Null) => GrammarSpec::JsonObject,
                Some(s) => {
                    GrammarSpec::JsonSchema(schema_value(s, "response_format.json_schema.schema")?)
                }
            };
            Ok(Some(GrammarRequest::new(
                spec,
                "response_format.json_schema.schema",
            )))
        }
        Some(other) => Err(bad(
            "response_format.type",
            format!("must be \"text\", \"json_object\" or \"json_schema\", got {other:?}"),
        )),
        None => Err(bad("response_format.type", "is missing".into())),
    }
}

/// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`,
/// `json_object`.
fn structured_outputs(so: &Value) -> Result<Option<GrammarRequest>, ApiError> {
    let Some(obj) = so.as_object() else {
        return Err(bad("structured_outputs", "must be an object".into()));
    };
    let mut found: Vec<GrammarRequest> = Vec::new();
    for (key, v) in obj {
        if v.is_null() {
            continue;
        }
        let param = format!("structured_outputs.{key}");
        let spec = match key.as_str() {
            "json" => GrammarSpec::JsonSchema(schema_value(v, &param)?),
            "regex" => GrammarSpec::Regex(string(v, &param)?),
            "choice" => GrammarSpec::Choice(string_list(v, &param)?),
            "grammar" => GrammarSpec::Lark(string(v, &param)?),
            "json_object" => match v {
                Value::Bool(true) => GrammarSpec::JsonObject,
                Value::Bool(false) => continue,
                _ => return Err(bad(&param, "must be a boolean".into())),
            },
            // Options of vLLM's that change nothing here.
            "disable_fallback" | "disable_any_whitespace" | "disable_additional_properties"
            | "whitespace_pattern" => continue,
            other => {
                return Err(bad(
                    &param,
                    format!(
                        "unsupported key {other:?}; expected one of json, regex, choice, grammar, json_object"
                    ),
                ))
            }
        };
        found.push(GrammarRequest::new(spec, &param));
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(bad(
            "structured_outputs",
            format!(
                "set exactly one constraint, got {}",
                found
                    .iter()
                    .map(|g| g.param.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The grammar the shared request fields ask for: at most one of `response_format`,
/// `structured_outputs` and the `guided_*` fields.
pub fn from_options(o: &SamplingOptions) -> Result<Option<GrammarRequest>, ApiError> {
    let mut found: Vec<GrammarRequest> = Vec::new();
    if let Some(f) = &o.response_format {
        found.extend(response_format(f)?);
    }
    if let Some(so) = &o.structured_outputs {
        found.extend(structured_outputs(so)?);
    }
    if let Some(v) = &o.guided_json {
        found.push(GrammarRequest::new(
            GrammarSpec::JsonSchema(schema_value(v, "guided_json")?),
            "guided_json",
        ));
    }
    if let Some(v) = &o.guided_regex {
        found.push(GrammarRequest::new(
            GrammarSpec::Regex(string(v, "guided_regex")?),
            "guided_regex",
        ));
    }
    if let Some(v) = &o.guided_choice {
        found.push(GrammarRequest::new(
            GrammarSpec::Choice(string_list(v, "guided_choice")?),
            "guided_choice",
        ));
    }
    if let Some(v) = &o.guided_grammar {
        found.push(GrammarRequest::new(
            GrammarSpec::Lark(string(v, "guided_grammar")?),
            "guided_grammar",
        ));
    }
    if found.len() > 1 {
        let second = &found[1].param;
        return Err(bad(
            second,
            format!(
                "only one structured-output constraint per request; `{}` is set already",
                found[0].param
            ),
        ));
    }
    Ok(found.pop())
}

/// The grammar of a forced tool call (`tool_choice: "required"` or a named function): the
/// Hermes wrapper Qwen's template teaches, `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`,
/// whose arguments follow the tool's `parameters` schema; one call, or several separated by a
/// newline when `parallel` allows. `None` for `auto`, `none` or no choice.
pub fn tool_grammar(
    tools: &[Tool],
    choice: Option<&Value>,
    parallel: bool,
) -> Option<GrammarRequest> {
    let forced: Vec<&Tool> = match choice? {
        Value::String(s) if s == "required" => tools.iter().collect(),
        Value::Object(_) => {
            let name = choice?.pointer("/function/name")?.as_str()?;
            tools.iter().filter(|t| t.function.name == name).collect()
        }
        _ => return None,
    };
    if forced.is_empty() {
        return None;
    }
    let calls: Vec<Value> = forced
        .iter()
        .map(|t| {
            let params = t
                .function
                .parameters
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            let mut props = Map::new();
            props.insert("name".into(), json!({"const": t.function.name}));
            props.insert("arguments".into(), params);
            json!({
                "type": "object",
                "properties": props,
                "required": ["name", "arguments"],
                "additionalProperties": false
            })
        })
        .collect();
    let schema = if calls.len() == 1 {
        calls.into_iter().next().expect("one")
    } else {
        json!({"anyOf": calls})
    };
    let mut schema = schema;
    schema.as_object_mut().expect("an object").insert(
        "x-guidance".into(),
        json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
    );
    let repeat = if parallel { " (\"\\n\" call)*" } else { "" };
    let lark = format!(
        "start: call{repeat}\ncall: \"<tool_call>\\n\" args \"\\n</tool_call>\"\nargs: %json {schema}\n"
    );
    Some(GrammarRequest::new(GrammarSpec::Lark(lark), "tool_choice"))
}

/// `thinking_budget` (or vLLM's `thinking_token_budget`), falling back to the server's default.
pub fn thinking_budget(
    o: &SamplingOptions,
    default: Option<usize>,
) -> Result<Option<usize>, ApiError> {
    let (param, v) = match (o.thinking_budget, o.thinking_token_budget) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "thinking_token_budget",
                "set `thinking_budget` or `thinking_token_budget`, not both".into(),
            ))
        }
        (Some(v), None) => ("thinking_budget", v),
        (None, Some(v)) => ("thinking_token_budget", v),
        (None, None) => return Ok(default),
    };
    match v {
        // vLLM: -1 is no budget.
        -1 => Ok(None),
        v if v >= 0 => Ok(Some(v as usize)),
        v => Err(bad(
            param,
            format!("must be >= 0 (or -1 for none), got {v}"),
        )),
    }
}

/// Compiles the request's grammar for `model` and adds the reasoning phase: when thinking is
/// on (the template's switch) and the vocabulary has `<think>`/`</think>`, the grammar starts
/// after `</think>`, and `<think>` is forced first unless the prompt already opened it.
pub fn constraint(
    model: &Model,
    grammar: Option<&GrammarRequest>,
    thinking_on: bool,
    thinking_budget: Option<usize>,
    prompt_ids: &[u32],
) -> Result<OutputConstraint, ApiError> {
    let grammar = match grammar {
        None => None,
        Some(g) => {
            let compiler = model.grammar_compiler().map_err(|message| {
                ApiError::bad_request(None, format!("structured output is unavailable: {message}"))
            })?;
            Some(
                compiler
                    .compile(&g.spec)
                    .map_err(|e| bad(&g.param, format!("invalid {}: {e}", g.spec.kind())))?,
            )
        }
    };
    let thinking = match model.think_tokens {
        Some(t) if thinking_on && (grammar.is_some() || thinking_budget.is_some()) => {
            Some(Thinking {
                start_token: match t.prompt_thinking(prompt_ids) {
                    PromptThinking::Open => None,
                    PromptThinking::Closed | PromptThinking::Absent => Some(t.think_start_id),
                },
                end_token: t.think_end_id,
                budget: thinking_budget,
            })
        }
        _ => None,
    };
    Ok(OutputConstraint { grammar, thinking })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(json: Value) -> SamplingOptions {
        serde_json::from_value(json).expect("options")
    }

    #[test]
    fn each_field_maps_to_its_grammar() {
        let schema = json!({"type": "object"});
        let cases = [
            (json!({"response_format": {"type": "text"}}), None),
            (
                json!({"response_format": {"type": "json_object"}}),
                Some(GrammarSpec::JsonObject),
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}}),
                Some(GrammarSpec::JsonSchema(schema.clone())),
            ),
            (
                json!({"structured_outputs": {"regex": "a+"}}),
                Some(GrammarSpec::Regex("a+".into())),
            ),
            (
                json!({"structured_outputs": {"choice": ["a", "b"]}}),
                Some(GrammarSpec::Choice(vec!["a".into(), "b".into()])),
            ),
            (
                json!({"guided_json": "{\"type\": \"object\"}"}),
                Some(GrammarSpec::JsonSchema(schema.clone())),
            ),
            (
                json!({"guided_grammar": "start: \"x\""}),
                Some(GrammarSpec::Lark("start: \"x\"".into())),
            ),
        ];
        for (o, want) in cases {
            let got = from_options(&opts(o.clone())).expect("valid");
            assert_eq!(got.map(|g| g.spec), want, "{o}");
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (
                json!({"response_format": {"type": "xml"}}),
                "response_format.type",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
            ),
            (
                json!({"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}),
                "response_format.json_schema.schema",
            ),
            (json!({"guided_choice": []}), "guided_choice"),
            (json!({"guided_regex": 5}), "guided_regex"),
            (
                json!({"structured_outputs": {"regex": "a", "choice": ["b"]}}),
                "structured_outputs",
            ),
            (
                json!({"structured_outputs": {"ebnf": "x"}}),
                "structured_outputs.ebnf",
            ),
            (
                json!({"response_format": {"type": "json_object"}, "guided_regex": "a"}),
                "guided_regex",
            ),
        ];
        for (o, param) in cases {
            match from_options(&opts(o.clone())) {
                Err(ApiError::BadRequest { param: p, message }) => {
                    assert_eq!(p.as_deref(), Some(param), "{o}: {message}");
                }
                other => panic!("{o}: expected a 400, got {other:?}"),
            }
        }
        assert!(thinking_budget(&opts(json!({"thinking_budget": -3})), None).is_err());
        assert_eq!(
            thinking_budget(&opts(json!({"thinking_token_budget": 5})), Some(9)).unwrap(),
            Some(5)
        );
        assert_eq!(thinking_budget(&opts(json!({})), Some(9)).unwrap(), Some(9));
    }

    #[test]
    fn forced_tool_calls_wrap_the_parameters_schema() {
        let tools: Vec<Tool> = serde_json::from_value(json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "noop"}}
        ]))
        .unwrap();
        assert!(tool_grammar(&tools, Some(&json!("auto")), true).is_none());
        assert!(tool_grammar(&tools, None, true).is_none());
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        let g = tool_grammar(&tools, Some(&named), false).expect("forced");
        let GrammarSpec::Lark(lark) = &g.spec else {
            panic!("{g:?}")
        };
        assert!(
            lark.contains("get_weather") && !lark.contains("noop"),
            "{lark}"
        );
        assert!(!lark.contains(")*"), "{lark}");
        let g = tool_grammar(&tools, Some(&json!("required")), true).expect("forced");
        let GrammarSpec::Lark(lark) = &g.spec else {
            panic!("{g:?}")
        };
        assert!(lark.contains("anyOf") && lark.contains("noop") && lark.contains(")*"));
    }
}
