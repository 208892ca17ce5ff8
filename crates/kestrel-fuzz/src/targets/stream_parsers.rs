//! The stream parsers a response goes through, under random chunking: the reasoning split (on
//! token ids, `<think>` / `</think>` / `<tool_call>` markers among text tokens), the Hermes
//! tool-call parser over the content, and the stop-string matcher.
//!
//! Invariants: nothing panics; streaming equals the whole-output parse, and neither depends on
//! how the text is cut into deltas; tool-call deltas arrive in OpenAI's order (the first delta
//! of a call has its id and name, the rest only argument fragments); the text a stop matcher
//! lets through never contains a stop string (unless asked to include the one that matched).

use arbitrary::Unstructured;
use kestrel_text::reasoning::{split_reasoning_from, PromptThinking, ReasoningParser, ThinkTokens};
use kestrel_text::tool_calls::{
    parse_tool_calls, ParsedToolCalls, ToolCall, ToolCallIdGenerator, ToolCallParser,
};
use kestrel_text::StopMatcher;

use crate::{signature, Target};

pub struct StreamParsers;

const Q: ThinkTokens = ThinkTokens::QWEN3;
const TEXT: u32 = 1;

const FRAGMENTS: &[&str] = &[
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<",
    "/",
    "think",
    ">",
    "</",
    "<th",
    "ink>",
    "_call>",
    "</tool",
    "\n",
    " ",
    "é",
    "你",
    "🦀",
    "a",
    "Hi",
    "{",
    "}",
    "\"",
    "{\"name\": \"f\", \"arguments\": {\"a\": [1, \"x y\"]}}",
    "{\"name\": \"g\"}",
    "{bad",
    "\"arguments\": ",
    "{\"name\": \"h\", \"arguments\": \"{\\\"q\\\": 1}\"}",
    "null",
    "[",
    "]",
];

/// Cuts `text` at the given positions (rounded down to char boundaries).
fn chunk<'t>(text: &'t str, cuts: &[usize]) -> Vec<&'t str> {
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut i = c % (text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            i
        })
        .collect();
    bounds.extend([0, text.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    bounds.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn stream_reasoning(prompt: PromptThinking, output: &[(u32, &str)]) -> (String, String) {
    let mut parser = ReasoningParser::with_prompt_thinking(Q, prompt);
    let (mut reasoning, mut content) = (String::new(), String::new());
    let mut deltas: Vec<_> = output
        .iter()
        .map(|&(id, text)| parser.push(id, text))
        .collect();
    deltas.push(parser.finish());
    for d in deltas {
        assert_ne!(d.reasoning.as_deref(), Some(""), "an empty reasoning delta");
        assert_ne!(d.content.as_deref(), Some(""), "an empty content delta");
        reasoning.push_str(d.reasoning.as_deref().unwrap_or(""));
        content.push_str(d.content.as_deref().unwrap_or(""));
    }
    (reasoning, content)
}

/// Streams `deltas` through the tool-call parser and rebuilds content and calls from the
/// OpenAI-shaped deltas, checking their order.
fn stream_tools(deltas: &[&str], seed: u64) -> ParsedToolCalls {
    let mut parser = ToolCallParser::new(ToolCallIdGenerator::new(seed));
    let mut out: Vec<_> = deltas.iter().map(|d| parser.push(d)).collect();
    out.push(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<ToolCall> = Vec::new();
    for delta in &out {
        assert_ne!(delta.content.as_deref(), Some(""), "an empty content delta");
        content.push_str(delta.content.as_deref().unwrap_or(""));
        for d in &delta.tool_calls {
            if d.index == calls.len() {
                calls.push(ToolCall {
                    id: d.id.clone().expect("a call's first delta has its id"),
                    name: d
                        .function
                        .name
                        .clone()
                        .expect("a call's first delta has its name"),
                    arguments: d.function.arguments.clone().unwrap_or_default(),
                });
            } else {
                assert_eq!(d.index + 1, calls.len(), "tool-call deltas out of order");
                assert!(d.id.is_none() && d.function.name.is_none());
                calls[d.index]
                    .arguments
                    .push_str(d.function.arguments.as_deref().unwrap_or(""));
            }
        }
    }
    ParsedToolCalls {
        content: (!content.is_empty()).then_some(content),
        tool_calls: calls,
    }
}

fn stop_stream(stops: &[String], include: bool, deltas: &[&str]) -> (String, Option<String>) {
    let mut m = StopMatcher::new(stops.iter().cloned(), include);
    let mut text = String::new();
    let mut stopped = None;
    for d in deltas {
        let r = m.push(d);
        text.push_str(&r.text_to_emit);
        if r.stopped.is_some() {
            assert!(stopped.is_none(), "stopped twice");
            stopped = r.stopped;
        }
    }
    if stopped.is_none() {
        text.push_str(&m.flush());
    }
    (text, stopped)
}

fn cuts(u: &mut Unstructured<'_>) -> Option<Vec<usize>> {
    let n = u.int_in_range(0..=12).ok()?;
    (0..n).map(|_| u.arbitrary::<usize>().ok()).collect()
}

impl StreamParsers {
    fn check(&self, u: &mut Unstructured<'_>) -> Option<u64> {
        let prompt = match u.int_in_range(0..=2).ok()? {
            0 => PromptThinking::Open,
            1 => PromptThinking::Closed,
            _ => PromptThinking::Absent,
        };
        // The output: marker tokens among text tokens.
        let n = u.int_in_range(0..=24).ok()?;
        let mut pieces: Vec<(u32, String)> = Vec::with_capacity(n);
        for _ in 0..n {
            pieces.push(match u.int_in_range(0..=9).ok()? {
                0 => (Q.think_start_id, "<think>".into()),
                1 => (Q.think_end_id, "</think>".into()),
                2 => (
                    Q.tool_call_start_id.expect("Qwen3 has it"),
                    "<tool_call>".into(),
                ),
                3 => (TEXT, super::text(u, 3)?),
                _ => (
                    TEXT,
                    FRAGMENTS[u.choose_index(FRAGMENTS.len()).ok()?].into(),
                ),
            });
        }
        let output: Vec<(u32, &str)> = pieces.iter().map(|(id, s)| (*id, s.as_str())).collect();
        let whole = split_reasoning_from(&Q, prompt, &output);
        let (reasoning, content) = stream_reasoning(prompt, &output);
        assert_eq!(
            (
                whole.reasoning.clone().unwrap_or_default(),
                whole.content.clone().unwrap_or_default()
            ),
            (reasoning.clone(), content.clone()),
            "streamed reasoning split differs from the whole-output split of {output:?}"
        );
        // The same output with each run of text tokens cut elsewhere.
        let mut rechunked: Vec<(u32, String)> = Vec::new();
        let mut run = String::new();
        for (id, text) in &pieces {
            if *id == TEXT {
                run.push_str(text);
                continue;
            }
            for c in chunk(&run, &cuts(u)?) {
                rechunked.push((TEXT, c.to_string()));
            }
            run.clear();
            rechunked.push((*id, text.clone()));
        }
        for c in chunk(&run, &cuts(u)?) {
            rechunked.push((TEXT, c.to_string()));
        }
        let output2: Vec<(u32, &str)> = rechunked.iter().map(|(id, s)| (*id, s.as_str())).collect();
        assert_eq!(
            stream_reasoning(prompt, &output2),
            (reasoning.clone(), content.clone()),
            "the reasoning split depends on how text is cut: {output:?} vs {output2:?}"
        );

        // Tool calls over the content, in random chunks, against the whole-content parse.
        let seed: u64 = u.arbitrary().ok()?;
        let batch = parse_tool_calls(&content, &mut ToolCallIdGenerator::new(seed));
        let streamed = stream_tools(&chunk(&content, &cuts(u)?), seed);
        assert_eq!(
            streamed, batch,
            "streamed tool calls differ for {content:?}"
        );

        // Stop strings over the whole text, in random chunks.
        let text: String = pieces.iter().map(|(_, s)| s.as_str()).collect();
        let num_stops = u.int_in_range(0..=3).ok()?;
        let stops: Vec<String> = (0..num_stops)
            .map(|_| Some(FRAGMENTS[u.choose_index(FRAGMENTS.len()).ok()?].to_string()))
            .collect::<Option<_>>()?;
        let include: bool = u.arbitrary().ok()?;
        let one = stop_stream(&stops, include, &[&text]);
        let many = stop_stream(&stops, include, &chunk(&text, &cuts(u)?));
        assert_eq!(
            one, many,
            "stop matching depends on chunking: {text:?} {stops:?}"
        );
        let (emitted, stopped) = one;
        let body = match (&stopped, include) {
            (Some(stop), true) => emitted
                .strip_suffix(stop.as_str())
                .expect("ends with its stop"),
            _ => emitted.as_str(),
        };
        for stop in &stops {
            assert!(
                !body.contains(stop.as_str()),
                "emitted text {body:?} holds stop string {stop:?}"
            );
        }
        // Outcome: the prompt state, which parts came out, how many calls, whether and how a
        // stop string matched.
        Some(signature(&[
            &format!("{prompt:?}"),
            if reasoning.is_empty() {
                "-"
            } else {
                "reasoning"
            },
            if content.is_empty() { "-" } else { "content" },
            if batch.content.is_some() { "text" } else { "-" },
            ["calls 0", "calls 1", "calls 2", "calls 3+"][batch.tool_calls.len().min(3)],
            match (&stopped, include) {
                (None, _) => "-",
                (Some(_), false) => "stopped",
                (Some(_), true) => "stopped, included",
            },
            &format!("pieces {}", pieces.len().min(8)),
        ]))
    }
}

impl Target for StreamParsers {
    fn name(&self) -> &'static str {
        "stream_parsers"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        (0u8..8)
            .map(|i| {
                (0..256)
                    .map(|j: u32| (j as u8).wrapping_mul(31).wrapping_add(i * 17))
                    .collect()
            })
            .collect()
    }

    fn run(&self, input: &[u8]) -> u64 {
        self.check(&mut Unstructured::new(input)).unwrap_or(0)
    }
}
