//! The fuzz targets, and the structure-aware generators they share (hostile JSON values, chat
//! messages, text that looks like markup).

mod chat_template;
mod gguf;
mod request;
mod safetensors;
mod stream_parsers;

use arbitrary::Unstructured;
use serde_json::{json, Map, Value};

use crate::Target;

pub use chat_template::ChatTemplateTarget;
pub use gguf::Gguf;
pub use request::Request;
pub use safetensors::Safetensors;
pub use stream_parsers::StreamParsers;

/// Every target, in the order the script runs them.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(Request),
        Box::new(Gguf),
        Box::new(Safetensors),
        Box::new(ChatTemplateTarget::new()),
        Box::new(StreamParsers),
    ]
}

/// Pieces of text that mean something to a parser or a template somewhere.
const TEXT_PIECES: &[&str] = &[
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "\"",
    "\\",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\u{0}",
    "é",
    "你好",
    "🦀",
    "\u{202e}",
    "\u{feff}",
    "\u{1100}\u{1161}",
    "ＡＢ",
    "e\u{0301}",
    "<",
    ">",
    "/",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "tool",
    "user",
    "assistant",
    "system",
    "{\"name\": \"f\", \"arguments\": {\"a\": 1}}",
    "raise_exception",
    "{{ raise_exception('x') }}",
];

/// Text from markup pieces, ASCII and arbitrary characters.
pub fn text(u: &mut Unstructured<'_>, max_parts: usize) -> Option<String> {
    let n = u.int_in_range(0..=max_parts).ok()?;
    let mut s = String::new();
    for _ in 0..n {
        match u.int_in_range(0..=3).ok()? {
            0 | 1 => s.push_str(TEXT_PIECES[u.choose_index(TEXT_PIECES.len()).ok()?]),
            2 => s.push(u.arbitrary::<char>().ok()?),
            _ => {
                let len = u.int_in_range(0..=12).ok()?;
                for _ in 0..len {
                    s.push(char::from(u.int_in_range(0x20u8..=0x7e).ok()?));
                }
            }
        }
    }
    Some(s)
}

/// Any JSON value, nested up to `depth`, with numbers at the edges of every type.
pub fn json_value(u: &mut Unstructured<'_>, depth: u32) -> Option<Value> {
    let kind = u.int_in_range(0..=if depth == 0 { 5 } else { 7 }).ok()?;
    Some(match kind {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary().ok()?),
        2 => {
            const EDGES: &[i64] = &[
                0,
                1,
                -1,
                2,
                16,
                17,
                255,
                256,
                4096,
                151_935,
                151_936,
                i32::MAX as i64,
                i64::MAX,
                i64::MIN,
            ];
            if u.arbitrary().ok()? {
                json!(EDGES[u.choose_index(EDGES.len()).ok()?])
            } else {
                json!(u.arbitrary::<i64>().ok()?)
            }
        }
        3 => json!(u.arbitrary::<u64>().ok()?),
        4 => {
            const EDGES: &[f64] = &[
                0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.0, -2.0, 1e-40, 1e39, -1e39, 1e308, 100.0,
                -100.0, 100.5,
            ];
            let x = if u.arbitrary().ok()? {
                EDGES[u.choose_index(EDGES.len()).ok()?]
            } else {
                u.arbitrary::<f64>().ok()?
            };
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        5 => Value::String(text(u, 6)?),
        6 => {
            let n = u.int_in_range(0..=4).ok()?;
            Value::Array(
                (0..n)
                    .map(|_| json_value(u, depth - 1))
                    .collect::<Option<_>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4).ok()?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(text(u, 2)?, json_value(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

/// A chat message list: mostly well-formed, with hostile roles, content and tool calls.
pub fn messages(u: &mut Unstructured<'_>) -> Option<Value> {
    const ROLES: &[&str] = &[
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "wizard",
        "",
    ];
    let n = u.int_in_range(0..=6).ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut m = Map::new();
        let role = ROLES[u.choose_index(ROLES.len()).ok()?];
        m.insert("role".into(), json!(role));
        let content = match u.int_in_range(0..=5).ok()? {
            0 => Value::Null,
            1 => {
                json!([{"type": "text", "text": text(u, 4)?}, {"type": "text", "text": text(u, 2)?}])
            }
            2 => json_value(u, 2)?,
            _ => json!(text(u, 8)?),
        };
        m.insert("content".into(), content);
        if role == "assistant" && u.ratio(1, 3).ok()? {
            let arguments = match u.int_in_range(0..=2).ok()? {
                0 => json!(json_value(u, 2)?.to_string()),
                1 => json!(text(u, 4)?),
                _ => json_value(u, 2)?,
            };
            m.insert(
                "tool_calls".into(),
                json!([{"id": text(u, 1)?, "type": "function", "function": {"name": text(u, 2)?, "arguments": arguments}}]),
            );
        }
        if role == "assistant" && u.ratio(1, 3).ok()? {
            m.insert("reasoning_content".into(), json!(text(u, 4)?));
        }
        if role == "tool" && u.arbitrary().ok()? {
            m.insert("tool_call_id".into(), json!(text(u, 1)?));
        }
        if u.ratio(1, 8).ok()? {
            m.insert("name".into(), json!(text(u, 2)?));
        }
        out.push(Value::Object(m));
    }
    Some(Value::Array(out))
}

/// A tool list: function names, descriptions and parameter schemas of any shape.
pub fn tools(u: &mut Unstructured<'_>) -> Option<Value> {
    let n = u.int_in_range(0..=3).ok()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let parameters = if u.ratio(3, 4).ok()? {
            json!({"type": "object", "properties": {text(u, 1)?: {"type": "string", "description": text(u, 3)?}}, "required": [text(u, 1)?]})
        } else {
            json_value(u, 3)?
        };
        out.push(json!({"type": "function", "function": {
            "name": text(u, 2)?, "description": text(u, 6)?, "parameters": parameters}}));
    }
    Some(Value::Array(out))
}
