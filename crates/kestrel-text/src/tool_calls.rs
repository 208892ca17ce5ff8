//! Tool-call parser for the Hermes format of Qwen3 dense and Qwen2.5 models:
//! `<tool_call>\n{"name": "...", "arguments": {...}}\n</tool_call>`, possibly several per answer,
//! possibly after some text. It runs on the *content* text only (after the reasoning parser),
//! streaming ([`ToolCallParser`]) or all at once ([`parse_tool_calls`]).
//!
//! Decisions:
//! - A call is emitted once its `</tool_call>` has arrived and its JSON is valid: first a delta
//!   with `id`, `type: "function"`, `function.name` and `function.arguments: ""`, then one delta
//!   with the whole arguments string. Streaming argument fragments as they are generated (vLLM's
//!   hermes parser) would commit to a call before knowing the JSON is valid; here malformed JSON
//!   inside `<tool_call>…</tool_call>`, or a call left unterminated at the end of generation,
//!   stays as content text, never dropped and never half-emitted.
//! - `arguments` is the model's own JSON text for the `arguments` value with insignificant
//!   whitespace removed: key order, number spelling and escapes are kept as generated (no
//!   re-serialization). A missing `arguments` is `{}`.
//! - Text outside calls is content, except whitespace-only text that borders a call (the `\n`
//!   between calls, the `\n\n` after `</think>` before a call): that is Hermes framing, dropped
//!   so that an answer that is only tool calls has `content: None`. Streaming holds such
//!   whitespace until it knows what follows.
//!
//! Invariant (tested): for any split of the text into deltas, the streamed content concatenates
//! to the batch content and the streamed deltas rebuild the batch calls, ids included when both
//! use generators with the same seed.

use serde::{Deserialize, Serialize};

const TOOL_START: &str = "<tool_call>";
const TOOL_END: &str = "</tool_call>";

/// Whether tool-call parsing runs for a request: only when it offers tools and `tool_choice` is
/// not `"none"` (`tool_choice` is the request's raw JSON value, absent meaning `"auto"`).
pub fn tool_parsing_enabled(num_tools: usize, tool_choice: Option<&serde_json::Value>) -> bool {
    num_tools > 0 && tool_choice.and_then(|c| c.as_str()) != Some("none")
}

/// A complete call, non-streaming. The server renders it as OpenAI's
/// `{"id", "type": "function", "function": {"name", "arguments"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Compact JSON text of the arguments.
    pub arguments: String,
}

/// OpenAI's streamed `tool_calls[]` element. Each delta is meant to go out in order (one per
/// chunk is the safe shape for clients that merge by `index`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub function: FunctionCallDelta,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// One streamed step: content text and/or tool-call deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolParseDelta {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCallDelta>,
}

impl ToolParseDelta {
    pub fn is_empty(&self) -> bool {
        self.content.is_none() && self.tool_calls.is_empty()
    }
}

/// The whole content text, parsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedToolCalls {
    /// `None` when empty.
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// Call ids `call_` + 24 alphanumerics, from a SplitMix64 stream the caller seeds (a random seed
/// per request in the server, a fixed one in tests).
#[derive(Clone, Debug)]
pub struct ToolCallIdGenerator {
    state: u64,
}

impl ToolCallIdGenerator {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn next_id(&mut self) -> String {
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(29);
        id.push_str("call_");
        for _ in 0..3 {
            // 62^8 < 2^64: eight digits per draw.
            let mut x = self.next_u64();
            for _ in 0..8 {
                id.push(ALPHABET[(x % 62) as usize] as char);
                x /= 62;
            }
        }
        id
    }
}

fn is_blank(s: &str) -> bool {
    s.chars().all(char::is_whitespace)
}

/// `(name, compact arguments)` when `body` (the text between the tags) is a valid Hermes call:
/// a JSON object with a non-empty string `name` and at most one `name` and `arguments` member.
fn parse_call_body(body: &str) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let name = value.as_object()?.get("name")?.as_str()?;
    if name.is_empty() {
        return None;
    }
    let compact = minify_json(body.trim());
    let members = object_members(&compact)?;
    let count = |key: &str| members.iter().filter(|(k, _)| k == key).count();
    if count("name") != 1 || count("arguments") > 1 {
        return None;
    }
    let arguments = members
        .iter()
        .find(|(k, _)| k == "arguments")
        .map_or("{}", |(_, v)| v)
        .to_owned();
    Some((name.to_owned(), arguments))
}

/// Removes whitespace outside strings from valid JSON text.
fn minify_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
            in_string = c == '"';
        }
    }
    out
}

/// End (exclusive) of the string starting at `bytes[at] == b'"'`.
fn string_end(bytes: &[u8], mut at: usize) -> Option<usize> {
    at += 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return Some(at + 1),
            _ => at += 1,
        }
    }
    None
}

/// End (exclusive) of the JSON value starting at `at` in minified, valid JSON.
fn value_end(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => string_end(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => Some(
            at + bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))
                .unwrap_or(bytes.len() - at),
        ),
    }
}

/// Top-level members of a minified, valid JSON object: (decoded key, raw value text).
fn object_members(json: &str) -> Option<Vec<(String, &str)>> {
    let bytes = json.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    let mut i = 1;
    if bytes.get(i) == Some(&b'}') {
        return Some(members);
    }
    loop {
        let key_end = string_end(bytes, i)?;
        let key: String = serde_json::from_str(&json[i..key_end]).ok()?;
        i = key_end + 1; // the ':'
        let end = value_end(bytes, i)?;
        members.push((key, &json[i..end]));
        match bytes.get(end)? {
            b',' => i = end + 1,
            _ => return Some(members),
        }
    }
}

fn header_delta(index: usize, id: String, name: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: Some(id),
        kind: Some("function".to_owned()),
        function: FunctionCallDelta {
            name: Some(name),
            arguments: Some(String::new()),
        },
    }
}

fn arguments_delta(index: usize, arguments: String) -> ToolCallDelta {
    ToolCallDelta {
        index,
        id: None,
        kind: None,
        function: FunctionCallDelta {
            name: None,
            arguments: Some(arguments),
        },
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_tag_suffix(text: &str, tag: &str) -> usize {
    let max = text.len().min(tag.len() - 1);
    (1..=max)
        .rev()
        .find(|&n| text.as_bytes().ends_with(&tag.as_bytes()[..n]))
        .unwrap_or(0)
}

/// Streaming parser over the content text deltas of one choice.
#[derive(Clone, Debug)]
pub struct ToolCallParser {
    ids: ToolCallIdGenerator,
    in_call: bool,
    /// Outside a call: a held suffix that may start `<tool_call>`. Inside: the call body so far.
    pending: String,
    /// Whitespace-only start of the current text segment, held until we know whether it
    /// borders a call.
    held_blank: String,
    /// The current segment (text between calls) has had non-whitespace text.
    segment_has_text: bool,
    /// The current segment follows a parsed call.
    after_call: bool,
    num_calls: usize,
}

impl ToolCallParser {
    pub fn new(ids: ToolCallIdGenerator) -> Self {
        Self {
            ids,
            in_call: false,
            pending: String::new(),
            held_blank: String::new(),
            segment_has_text: false,
            after_call: false,
            num_calls: 0,
        }
    }

    /// Number of calls emitted so far (the next call's `index`).
    pub fn num_calls(&self) -> usize {
        self.num_calls
    }

    /// Feeds one content text delta.
    pub fn push(&mut self, text: &str) -> ToolParseDelta {
        let mut content = String::new();
        let mut calls = Vec::new();
        // Where to resume the search for `</tool_call>`: earlier body text cannot hold a whole tag.
        let mut search_from = self.pending.len().saturating_sub(TOOL_END.len() - 1);
        let mut buf = std::mem::take(&mut self.pending);
        buf.push_str(text);
        while !buf.is_char_boundary(search_from) {
            search_from -= 1;
        }
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            if self.in_call {
                match rest[search_from..].find(TOOL_END) {
                    Some(at) => {
                        let at = search_from + at;
                        self.close_call(&rest[..at], &mut content, &mut calls);
                        self.in_call = false;
                        pos += at + TOOL_END.len();
                        search_from = 0;
                    }
                    None => {
                        self.pending = rest.to_owned();
                        break;
                    }
                }
            } else if let Some(at) = rest.find(TOOL_START) {
                self.content_text(&rest[..at], &mut content);
                self.in_call = true;
                pos += at + TOOL_START.len();
                search_from = 0;
            } else {
                let cut = rest.len() - partial_tag_suffix(rest, TOOL_START);
                self.content_text(&rest[..cut], &mut content);
                self.pending = rest[cut..].to_owned();
                break;
            }
        }
        ToolParseDelta {
            content: (!content.is_empty()).then_some(content),
            tool_calls: calls,
        }
    }

    /// End of generation: an unterminated call and any held text become content; whitespace
    /// after the last call is dropped.
    pub fn finish(&mut self) -> ToolParseDelta {
        let mut content = String::new();
        let pending = std::mem::take(&mut self.pending);
        if self.in_call {
            self.in_call = false;
            self.content_text(&format!("{TOOL_START}{pending}"), &mut content);
        } else {
            self.content_text(&pending, &mut content);
        }
        let blank = std::mem::take(&mut self.held_blank);
        if !self.after_call {
            content.push_str(&blank);
        }
        ToolParseDelta {
            content: (!content.is_empty()).then_some(content),
            tool_calls: Vec::new(),
        }
    }

    fn content_text(&mut self, text: &str, content: &mut String) {
        if text.is_empty() {
            return;
        }
        if !self.segment_has_text {
            if is_blank(text) {
                self.held_blank.push_str(text);
                return;
            }
            content.push_str(&std::mem::take(&mut self.held_blank));
            self.segment_has_text = true;
        }
        content.push_str(text);
    }

    fn close_call(&mut self, body: &str, content: &mut String, calls: &mut Vec<ToolCallDelta>) {
        match parse_call_body(body) {
            Some((name, arguments)) => {
                self.held_blank.clear();
                self.segment_has_text = false;
                self.after_call = true;
                let index = self.num_calls;
                self.num_calls += 1;
                calls.push(header_delta(index, self.ids.next_id(), name));
                calls.push(arguments_delta(index, arguments));
            }
            None => self.content_text(&format!("{TOOL_START}{body}{TOOL_END}"), content),
        }
    }
}

/// Non-streaming parse of the whole content text. Written as whole-string scanning,
/// independently of [`ToolCallParser`], so the two check each other.
pub fn parse_tool_calls(text: &str, ids: &mut ToolCallIdGenerator) -> ParsedToolCalls {
    enum Piece<'a> {
        Text(&'a str),
        Call,
    }
    let mut pieces = Vec::new();
    let mut tool_calls = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let Some(open) = text[pos..].find(TOOL_START).map(|at| pos + at) else {
            pieces.push(Piece::Text(&text[pos..]));
            break;
        };
        let body_start = open + TOOL_START.len();
        let Some(close) = text[body_start..].find(TOOL_END).map(|at| body_start + at) else {
            pieces.push(Piece::Text(&text[pos..]));
            break;
        };
        let after = close + TOOL_END.len();
        match parse_call_body(&text[body_start..close]) {
            Some((name, arguments)) => {
                pieces.push(Piece::Text(&text[pos..open]));
                pieces.push(Piece::Call);
                tool_calls.push(ToolCall {
                    id: ids.next_id(),
                    name,
                    arguments,
                });
            }
            None => pieces.push(Piece::Text(&text[pos..after])),
        }
        pos = after;
    }
    // Segments: the text between calls. Blank segments next to a call are framing.
    let mut content = String::new();
    let mut segment = String::new();
    let mut left_is_call = false;
    for piece in pieces {
        match piece {
            Piece::Text(t) => segment.push_str(t),
            Piece::Call => {
                if !is_blank(&segment) {
                    content.push_str(&segment);
                }
                segment.clear();
                left_is_call = true;
            }
        }
    }
    if !(left_is_call && is_blank(&segment)) {
        content.push_str(&segment);
    }
    ParsedToolCalls {
        content: (!content.is_empty()).then_some(content),
        tool_calls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reasoning::{split_reasoning, ReasoningParser, ThinkTokens};
    use proptest::prelude::*;

    const SEED: u64 = 7;

    /// Streams `deltas` and rebuilds content and calls from the OpenAI-shaped deltas.
    fn stream(deltas: &[&str]) -> ParsedToolCalls {
        let mut parser = ToolCallParser::new(ToolCallIdGenerator::new(SEED));
        let mut out: Vec<ToolParseDelta> = deltas.iter().map(|d| parser.push(d)).collect();
        out.push(parser.finish());
        let mut content = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        for delta in &out {
            assert_ne!(delta.content.as_deref(), Some(""));
            content.push_str(delta.content.as_deref().unwrap_or(""));
            for d in &delta.tool_calls {
                if d.index == calls.len() {
                    assert_eq!(d.kind.as_deref(), Some("function"));
                    assert_eq!(
                        d.function.arguments.as_deref(),
                        Some(""),
                        "the header carries empty arguments"
                    );
                    calls.push(ToolCall {
                        id: d.id.clone().expect("first delta has the id"),
                        name: d.function.name.clone().expect("first delta has the name"),
                        arguments: String::new(),
                    });
                } else {
                    assert_eq!(d.index + 1, calls.len(), "deltas arrive in index order");
                    assert!(d.id.is_none() && d.kind.is_none() && d.function.name.is_none());
                    calls[d.index]
                        .arguments
                        .push_str(d.function.arguments.as_deref().expect("argument fragment"));
                }
            }
        }
        ParsedToolCalls {
            content: (!content.is_empty()).then_some(content),
            tool_calls: calls,
        }
    }

    fn both(text: &str) -> ParsedToolCalls {
        let batch = parse_tool_calls(text, &mut ToolCallIdGenerator::new(SEED));
        assert_eq!(
            stream(&[text]),
            batch,
            "streaming (one delta) and batch disagree"
        );
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(
            stream(&chars),
            batch,
            "streaming (char by char) and batch disagree"
        );
        batch
    }

    fn names_args(parsed: &ParsedToolCalls) -> Vec<(&str, &str)> {
        parsed
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect()
    }

    #[test]
    fn single_call_after_reasoning() {
        let text = "\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";
        let parsed = both(text);
        assert_eq!(parsed.content, None, "framing whitespace is not content");
        assert_eq!(
            names_args(&parsed),
            [("get_weather", r#"{"city":"Paris","unit":"celsius"}"#)]
        );
        assert!(
            parsed.tool_calls[0].id.starts_with("call_") && parsed.tool_calls[0].id.len() == 29
        );
    }

    #[test]
    fn two_calls_with_text_before() {
        let text = concat!(
            "Let me check both cities.\n",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n",
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Tokyo\", \"days\": [1, 2.50, 1e3]}}\n</tool_call>"
        );
        let parsed = both(text);
        assert_eq!(
            parsed.content.as_deref(),
            Some("Let me check both cities.\n")
        );
        assert_eq!(
            names_args(&parsed),
            [
                ("get_weather", r#"{"city":"Paris"}"#),
                ("get_weather", r#"{"city":"Tokyo","days":[1,2.50,1e3]}"#)
            ]
        );
        assert_ne!(parsed.tool_calls[0].id, parsed.tool_calls[1].id);
    }

    #[test]
    fn arguments_keep_key_order_strings_and_escapes() {
        let text = "<tool_call>\n{\"arguments\": {\"z\": \"a b\\\" }\", \"a\": {\"k\": null, \"t\": true}, \"u\": \"\\u00e9 é\"}, \"name\": \"f\"}\n</tool_call>";
        let parsed = both(text);
        assert_eq!(
            names_args(&parsed),
            [(
                "f",
                r#"{"z":"a b\" }","a":{"k":null,"t":true},"u":"\u00e9 é"}"#
            )]
        );
        let args: serde_json::Value =
            serde_json::from_str(&parsed.tool_calls[0].arguments).expect("valid JSON");
        assert_eq!(args["z"], "a b\" }");
        // No arguments member: `{}`; a string value is passed as its JSON text (as vLLM does).
        assert_eq!(
            names_args(&both("<tool_call>{\"name\": \"now\"}</tool_call>")),
            [("now", "{}")]
        );
        assert_eq!(
            names_args(&both(
                "<tool_call>{\"name\": \"g\", \"arguments\": \"{}\"}</tool_call>"
            )),
            [("g", "\"{}\"")]
        );
    }

    #[test]
    fn malformed_calls_stay_content() {
        let bad = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}\n</tool_call>";
        assert_eq!(
            both(bad),
            ParsedToolCalls {
                content: Some(bad.to_owned()),
                tool_calls: vec![]
            }
        );
        for body in [
            "[1]",
            "{\"arguments\": {}}",
            "{\"name\": \"\"}",
            "{\"name\": 3}",
            "{\"name\": \"f\", \"name\": \"g\"}",
            "{\"name\": \"f\"} x",
            "",
        ] {
            let text = format!("<tool_call>{body}</tool_call>");
            assert_eq!(
                both(&text).content.as_deref(),
                Some(text.as_str()),
                "{body}"
            );
        }
        // A malformed call between good ones: the good ones parse, the bad one is content,
        // and the whitespace next to it is kept since it is no longer framing.
        let text = "<tool_call>{\"name\": \"a\"}</tool_call>\n<tool_call>{oops}</tool_call>\n<tool_call>{\"name\": \"b\"}</tool_call>";
        let parsed = both(text);
        assert_eq!(
            parsed.content.as_deref(),
            Some("\n<tool_call>{oops}</tool_call>\n")
        );
        assert_eq!(names_args(&parsed), [("a", "{}"), ("b", "{}")]);
    }

    #[test]
    fn unterminated_call_at_the_end_is_content() {
        let text = "Sure.\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"x\": 1}}";
        assert_eq!(
            both(text),
            ParsedToolCalls {
                content: Some(text.to_owned()),
                tool_calls: vec![]
            }
        );
        assert_eq!(both("<tool_call>").content.as_deref(), Some("<tool_call>"));
        assert_eq!(
            both("ends with <tool_ca").content.as_deref(),
            Some("ends with <tool_ca")
        );
    }

    #[test]
    fn text_after_a_call_is_content() {
        let parsed = both("<tool_call>{\"name\": \"a\"}</tool_call>\nDone.");
        assert_eq!(parsed.content.as_deref(), Some("\nDone."));
        let parsed = both("\n\n<tool_call>{\"name\": \"a\"}</tool_call>\nDone.");
        assert_eq!(
            parsed.content.as_deref(),
            Some("\nDone."),
            "blank before the call is framing"
        );
        assert_eq!(
            both("  \n").content.as_deref(),
            Some("  \n"),
            "blank content without calls is kept"
        );
        assert_eq!(both("").content, None);
    }

    #[test]
    fn streamed_deltas_have_the_openai_shape() {
        let mut parser = ToolCallParser::new(ToolCallIdGenerator::new(SEED));
        assert!(parser.push("<tool_call>\n{\"name\": \"f\", ").is_empty());
        let delta = parser.push("\"arguments\": {\"x\": 1}}\n</tool_call>");
        let json = serde_json::to_value(&delta.tool_calls).expect("serializable");
        let id = ToolCallIdGenerator::new(SEED).next_id();
        assert_eq!(
            json,
            serde_json::json!([
                {"index": 0, "id": id, "type": "function", "function": {"name": "f", "arguments": ""}},
                {"index": 0, "function": {"arguments": "{\"x\":1}"}}
            ])
        );
        assert_eq!(parser.num_calls(), 1);
        assert!(parser.finish().is_empty());
    }

    #[test]
    fn ids_are_seeded_and_distinct() {
        let a: Vec<String> = {
            let mut g = ToolCallIdGenerator::new(1);
            (0..100).map(|_| g.next_id()).collect()
        };
        let mut g = ToolCallIdGenerator::new(1);
        assert!(a.iter().all(|id| *id == g.next_id()));
        let unique: std::collections::HashSet<&String> = a.iter().collect();
        assert_eq!(unique.len(), a.len());
        assert_ne!(ToolCallIdGenerator::new(2).next_id(), a[0]);
        assert!(a
            .iter()
            .all(|id| id[5..].chars().all(|c| c.is_ascii_alphanumeric())));
    }

    #[test]
    fn tool_parsing_switch() {
        use serde_json::json;
        assert!(!tool_parsing_enabled(0, None));
        assert!(tool_parsing_enabled(2, None));
        assert!(tool_parsing_enabled(2, Some(&json!("auto"))));
        assert!(tool_parsing_enabled(2, Some(&json!("required"))));
        assert!(tool_parsing_enabled(
            1,
            Some(&json!({"type": "function", "function": {"name": "f"}}))
        ));
        assert!(!tool_parsing_enabled(2, Some(&json!("none"))));
    }

    /// Reasoning parser then tool parser on token ids, as the server chains them.
    #[test]
    fn think_then_tool_call_through_both_parsers() {
        let q = ThinkTokens::QWEN3;
        let output: [(u32, &str); 9] = [
            (151_667, "<think>"),
            (1, "\nThe user wants the weather.\n"),
            (151_668, "</think>"),
            (271, "\n\n"),
            (151_657, "<tool_call>"),
            (198, "\n"),
            (
                1,
                "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
            ),
            (198, "\n"),
            (151_658, "</tool_call>"),
        ];
        let split = split_reasoning(&q, &[], &output);
        assert_eq!(
            split.reasoning.as_deref(),
            Some("\nThe user wants the weather.\n")
        );
        let parsed = parse_tool_calls(
            split.content.as_deref().unwrap_or(""),
            &mut ToolCallIdGenerator::new(SEED),
        );
        assert_eq!(parsed.content, None);
        assert_eq!(
            names_args(&parsed),
            [("get_weather", r#"{"city":"Paris"}"#)]
        );

        let mut reasoning = ReasoningParser::new(q, &[]);
        let mut tools = ToolCallParser::new(ToolCallIdGenerator::new(SEED));
        let mut streamed = Vec::new();
        for (id, text) in output {
            if let Some(content) = reasoning.push(id, text).content {
                streamed.extend(tools.push(&content).tool_calls);
            }
        }
        assert!(reasoning.finish().is_empty());
        assert!(tools.finish().is_empty());
        assert_eq!(streamed.len(), 2);
        assert_eq!(streamed[0].id.as_ref(), Some(&parsed.tool_calls[0].id));
        assert_eq!(
            streamed[1].function.arguments.as_deref(),
            Some(r#"{"city":"Paris"}"#)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Content text in random chunks: same content, calls and ids as the batch parser.
        #[test]
        fn streaming_equals_batch(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "<tool_call>", "</tool_call>", "\n", " ", "Hi é", "<", "</tool", "_call>",
                "{\"name\": \"f\", \"arguments\": {\"a\": [1, \"x y\"]}}", "{\"name\": \"g\"}", "{bad", "}",
                "<tool_call>\n{\"name\": \"h\", \"arguments\": {}}\n</tool_call>", "<tool_call>{x}</tool_call>",
            ]), 0..16),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..10),
        ) {
            let text: String = parts.concat();
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).filter(|&i| text.is_char_boundary(i)).collect();
            bounds.extend([0, text.len()]);
            bounds.sort_unstable();
            let deltas: Vec<&str> = bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect();
            let batch = parse_tool_calls(&text, &mut ToolCallIdGenerator::new(SEED));
            prop_assert_eq!(stream(&deltas), batch.clone());
            // Nothing is lost: the content plus the calls' source covers all non-blank text.
            let content_len = batch.content.as_deref().map_or(0, |c| c.trim().len());
            prop_assert!(!batch.tool_calls.is_empty() || content_len == text.trim().len());
        }
    }

    /// Every two-way split of a realistic answer.
    #[test]
    fn every_split_point_of_a_two_call_answer() {
        let text = "Checking.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"q\": \"x</tool_call>\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"b\", \"arguments\": {}}\n</tool_call>";
        let batch = parse_tool_calls(text, &mut ToolCallIdGenerator::new(SEED));
        // The first call's string holds a closing tag: the call ends there and is malformed.
        assert_eq!(batch.tool_calls.len(), 1);
        for a in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            assert_eq!(stream(&[&text[..a], &text[a..]]), batch, "split at {a}");
        }
    }
}
