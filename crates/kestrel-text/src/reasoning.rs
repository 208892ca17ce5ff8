//! Qwen3 reasoning parser: splits generated output into `reasoning` (the `<think>` block) and
//! `content` (the answer), streaming or all at once.
//!
//! The parser works on token ids with their decoded text deltas; the caller detokenizes. Qwen3's
//! `<think>`, `</think>` and `<tool_call>` are single added tokens, so the decisions are made on
//! ids, as vLLM's `qwen3` reasoning parser does. Semantics follow vLLM's
//! (`vllm/reasoning/qwen3_reasoning_parser.py` with the `reasoning` output field): no
//! whitespace trimming, the tag tokens are never emitted in either stream, a `<tool_call>`
//! token ends reasoning implicitly (its text goes to content, where the tool-call parser finds
//! it), and a run cut before `</think>` is all reasoning.
//!
//! Where generation starts is decided from the rendered prompt ([`PromptThinking`]), not from the
//! request flag (vLLM #53284):
//! - the prompt's last `<think>` is not followed by `</think>` → generation starts in reasoning;
//! - otherwise (no `<think>` in the prompt, or the prompt closed it, as `enable_thinking=false`
//!   renders `<think>\n\n</think>\n\n`) output is content, unless the model's very first
//!   non-empty output is `<think>` itself, which opens reasoning. A closed block in the prompt
//!   does not mean "thinking off": Qwen3's template keeps the closed `<think>` blocks of the
//!   current agent turn's earlier tool-call steps in the history, after which the model opens
//!   its own `<think>` again.
//!
//! Secondary path, text only: for tokenizers where the tags are not single tokens, a `</think>`
//! that arrives as text inside reasoning still ends it (also when split across deltas, e.g. `'<'`
//! then `'/think>'`: a suffix that may start the tag is held back), and output that starts with
//! the text `<think>` opens reasoning. Text tags elsewhere are kept as text.
//!
//! Invariant (tested): for any output and any split into deltas, the concatenation of the
//! streamed `reasoning` / `content` pieces, [`ReasoningParser::finish`] included, equals what
//! [`split_reasoning`] returns for the whole output. Empty strings are reported as `None`.

use serde::{Deserialize, Serialize};

type TokenId = u32;

const THINK_START: &str = "<think>";
const THINK_END: &str = "</think>";

/// Ids of the tags the parser acts on, looked up by the caller in its tokenizer
/// (`<think>`, `</think>`, `<tool_call>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThinkTokens {
    pub think_start_id: TokenId,
    pub think_end_id: TokenId,
    /// `None` when the tokenizer has no `<tool_call>` token: reasoning then only ends at `</think>`.
    pub tool_call_start_id: Option<TokenId>,
}

impl ThinkTokens {
    /// Qwen3's ids (also Qwen2.5's vocabulary for `<tool_call>`).
    pub const QWEN3: ThinkTokens = ThinkTokens {
        think_start_id: 151_667,
        think_end_id: 151_668,
        tool_call_start_id: Some(151_657),
    };

    fn marker(&self, id: TokenId) -> Option<Marker> {
        if id == self.think_start_id {
            Some(Marker::ThinkStart)
        } else if id == self.think_end_id {
            Some(Marker::ThinkEnd)
        } else if Some(id) == self.tool_call_start_id {
            Some(Marker::ToolCallStart)
        } else {
            None
        }
    }

    /// Where the rendered prompt leaves the think block: decided by the last `<think>` /
    /// `</think>` id in it (the same backward scan as vLLM's `is_reasoning_end`).
    pub fn prompt_thinking(&self, prompt_ids: &[TokenId]) -> PromptThinking {
        for &id in prompt_ids.iter().rev() {
            if id == self.think_start_id {
                return PromptThinking::Open;
            }
            if id == self.think_end_id {
                return PromptThinking::Closed;
            }
        }
        PromptThinking::Absent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Marker {
    ThinkStart,
    ThinkEnd,
    ToolCallStart,
}

impl Marker {
    fn tag(self) -> &'static str {
        match self {
            Marker::ThinkStart => THINK_START,
            Marker::ThinkEnd => THINK_END,
            Marker::ToolCallStart => "<tool_call>",
        }
    }

    /// A tag token's text delta as `(text released before the tag, the tag's own text)`. An
    /// incremental detokenizer can release held-back bytes (an unfinished UTF-8 sequence, as
    /// `\u{FFFD}`) together with the tag; that part is ordinary output, not the tag.
    fn split_delta(self, text: &str) -> (&str, &str) {
        match text.strip_suffix(self.tag()) {
            Some(before) => (before, self.tag()),
            None => (text, ""),
        }
    }
}

/// The state of the think block at the end of the rendered prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptThinking {
    /// The last `<think>` is unclosed: generation starts inside reasoning.
    Open,
    /// The last think block is closed (`enable_thinking=false`, or history): content, unless
    /// the model opens `<think>` first.
    Closed,
    /// No `<think>` in the prompt: content, unless the model opens `<think>` first.
    Absent,
}

/// One streamed step. Both fields are set when the end of reasoning falls inside the delta.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningDelta {
    pub reasoning: Option<String>,
    pub content: Option<String>,
}

impl ReasoningDelta {
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_none() && self.content.is_none()
    }
}

/// The whole output, split. `None` where the part is empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningSplit {
    pub reasoning: Option<String>,
    pub content: Option<String>,
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag` (a tag that may
/// still be completed by the next delta). Tags are ASCII and start with `<`, so the cut is
/// always on a char boundary.
fn partial_tag_suffix(text: &str, tag: &str) -> usize {
    let max = text.len().min(tag.len() - 1);
    (1..=max)
        .rev()
        .find(|&n| text.as_bytes().ends_with(&tag.as_bytes()[..n]))
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Nothing non-empty generated yet; a leading `<think>` (id, or text) opens reasoning.
    AwaitOpen,
    Reasoning,
    Content,
}

/// Streaming parser for one sequence.
#[derive(Clone, Debug)]
pub struct ReasoningParser {
    tokens: ThinkTokens,
    state: State,
    /// Text held back because it may be the start of a text tag: a prefix of `<think>` in
    /// `AwaitOpen`, a suffix that may start `</think>` in `Reasoning`. Empty in `Content`.
    held: String,
}

impl ReasoningParser {
    /// A parser for output generated after `prompt_ids` (the rendered, tokenized prompt).
    pub fn new(tokens: ThinkTokens, prompt_ids: &[TokenId]) -> Self {
        Self::with_prompt_thinking(tokens, tokens.prompt_thinking(prompt_ids))
    }

    pub fn with_prompt_thinking(tokens: ThinkTokens, prompt: PromptThinking) -> Self {
        let state = match prompt {
            PromptThinking::Open => State::Reasoning,
            PromptThinking::Closed | PromptThinking::Absent => State::AwaitOpen,
        };
        Self {
            tokens,
            state,
            held: String::new(),
        }
    }

    /// True once reasoning has ended (or never started and the output is content).
    pub fn in_content(&self) -> bool {
        self.state == State::Content
    }

    /// Feeds one generated token and its text delta.
    pub fn push(&mut self, token_id: TokenId, text: &str) -> ReasoningDelta {
        let mut reasoning = String::new();
        let mut content = String::new();
        match self.tokens.marker(token_id) {
            None => self.push_text(text, &mut reasoning, &mut content),
            Some(marker) => {
                let (before, tag) = marker.split_delta(text);
                self.push_text(before, &mut reasoning, &mut content);
                self.push_marker(marker, tag, &mut reasoning, &mut content);
            }
        }
        ReasoningDelta {
            reasoning: non_empty(reasoning),
            content: non_empty(content),
        }
    }

    fn push_text(&mut self, text: &str, reasoning: &mut String, content: &mut String) {
        match self.state {
            State::AwaitOpen => {
                self.held.push_str(text);
                if let Some(rest) = self.held.strip_prefix(THINK_START) {
                    let rest = rest.to_owned();
                    self.held.clear();
                    self.state = State::Reasoning;
                    self.reasoning_text(&rest, reasoning, content);
                } else if !THINK_START.starts_with(self.held.as_str()) {
                    content.push_str(&std::mem::take(&mut self.held));
                    self.state = State::Content;
                }
            }
            State::Reasoning => self.reasoning_text(text, reasoning, content),
            State::Content => content.push_str(text),
        }
    }

    /// A tag token; `tag` is its own text (empty when the detokenizer gave none).
    fn push_marker(
        &mut self,
        marker: Marker,
        tag: &str,
        reasoning: &mut String,
        content: &mut String,
    ) {
        match (self.state, marker) {
            (State::AwaitOpen, Marker::ThinkStart) if self.held.is_empty() => {
                self.state = State::Reasoning
            }
            (State::AwaitOpen, Marker::ThinkStart | Marker::ThinkEnd) => {
                content.push_str(&std::mem::take(&mut self.held));
                self.state = State::Content;
            }
            (State::AwaitOpen, Marker::ToolCallStart) => {
                content.push_str(&std::mem::take(&mut self.held));
                content.push_str(tag);
                self.state = State::Content;
            }
            // A repeated `<think>` inside reasoning is dropped; held text stays contiguous.
            (State::Reasoning, Marker::ThinkStart) => {}
            (State::Reasoning, Marker::ThinkEnd) => {
                reasoning.push_str(&std::mem::take(&mut self.held));
                self.state = State::Content;
            }
            (State::Reasoning, Marker::ToolCallStart) => {
                reasoning.push_str(&std::mem::take(&mut self.held));
                content.push_str(tag);
                self.state = State::Content;
            }
            (State::Content, Marker::ThinkStart | Marker::ThinkEnd) => {}
            (State::Content, Marker::ToolCallStart) => content.push_str(tag),
        }
    }

    /// Reasoning-state text: looks for a text `</think>` across the held suffix and `text`.
    fn reasoning_text(&mut self, text: &str, reasoning: &mut String, content: &mut String) {
        self.held.push_str(text);
        if let Some(at) = self.held.find(THINK_END) {
            reasoning.push_str(&self.held[..at]);
            content.push_str(&self.held[at + THINK_END.len()..]);
            self.held.clear();
            self.state = State::Content;
        } else {
            let keep = partial_tag_suffix(&self.held, THINK_END);
            let cut = self.held.len() - keep;
            reasoning.push_str(&self.held[..cut]);
            self.held.drain(..cut);
        }
    }

    /// End of generation (stop, length or abort): releases held-back text to the stream it
    /// belongs to. A run cut inside reasoning stays reasoning.
    pub fn finish(&mut self) -> ReasoningDelta {
        let held = std::mem::take(&mut self.held);
        let delta = match self.state {
            State::Reasoning => ReasoningDelta {
                reasoning: non_empty(held),
                content: None,
            },
            State::AwaitOpen | State::Content => ReasoningDelta {
                reasoning: None,
                content: non_empty(held),
            },
        };
        if self.state == State::AwaitOpen {
            self.state = State::Content;
        }
        delta
    }
}

/// Non-streaming split of a whole output, given as `(token_id, text_delta)` pairs.
pub fn split_reasoning(
    tokens: &ThinkTokens,
    prompt_ids: &[TokenId],
    output: &[(TokenId, &str)],
) -> ReasoningSplit {
    split_reasoning_from(tokens, tokens.prompt_thinking(prompt_ids), output)
}

/// [`split_reasoning`] with the prompt state already known.
///
/// Written independently of the streaming state machine (whole-string partitions, as vLLM's
/// non-streaming path does) so that the two check each other.
pub fn split_reasoning_from(
    tokens: &ThinkTokens,
    prompt: PromptThinking,
    output: &[(TokenId, &str)],
) -> ReasoningSplit {
    let items = items(tokens, output);
    // Where reasoning text begins: (index into `items`, bytes of that item's text to skip).
    let start = match prompt {
        PromptThinking::Open => Some((0, 0)),
        PromptThinking::Closed | PromptThinking::Absent => {
            match items.iter().position(|item| *item != Item::Text("")) {
                None => None,
                Some(i) => match items[i] {
                    Item::Marker(Marker::ThinkStart, _) => Some((i + 1, 0)),
                    Item::Marker(..) => None,
                    Item::Text(_) => {
                        // Text fallback: the leading run of plain text starts with `<think>`.
                        let run: String = items[i..].iter().map_while(Item::text).collect();
                        run.starts_with(THINK_START)
                            .then(|| skip_bytes(&items, i, THINK_START.len()))
                    }
                },
            }
        }
    };
    let Some((first, skip)) = start else {
        return ReasoningSplit {
            reasoning: None,
            content: non_empty(content_text(&items[..])),
        };
    };
    // The reasoning run: plain text (and dropped `<think>`s) up to `</think>` or `<tool_call>`.
    let mut run = String::new();
    let mut stop = items.len();
    for (i, item) in items.iter().enumerate().skip(first) {
        match *item {
            Item::Text(text) => run.push_str(if i == first { &text[skip..] } else { text }),
            Item::Marker(Marker::ThinkStart, _) => {}
            Item::Marker(Marker::ThinkEnd | Marker::ToolCallStart, _) => {
                stop = i;
                break;
            }
        }
    }
    let rest = content_text(&items[stop..]);
    match run.split_once(THINK_END) {
        Some((reasoning, after)) => ReasoningSplit {
            reasoning: non_empty(reasoning.to_owned()),
            // `<think>` ids the run skipped after the text tag are dropped, as content drops them.
            content: non_empty(format!("{after}{rest}")),
        },
        None => ReasoningSplit {
            reasoning: non_empty(run),
            content: non_empty(rest),
        },
    }
}

/// The output as plain text and tag tokens (a tag's delta split as [`Marker::split_delta`] does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item<'a> {
    Text(&'a str),
    /// A tag token and its own text.
    Marker(Marker, &'a str),
}

impl<'a> Item<'a> {
    fn text(&self) -> Option<&'a str> {
        match *self {
            Item::Text(text) => Some(text),
            Item::Marker(..) => None,
        }
    }
}

fn items<'a>(tokens: &ThinkTokens, output: &[(TokenId, &'a str)]) -> Vec<Item<'a>> {
    let mut items = Vec::with_capacity(output.len());
    for &(id, text) in output {
        match tokens.marker(id) {
            None => items.push(Item::Text(text)),
            Some(marker) => {
                let (before, tag) = marker.split_delta(text);
                items.push(Item::Text(before));
                items.push(Item::Marker(marker, tag));
            }
        }
    }
    items
}

/// (item, byte offset) just after `n` bytes of plain text starting at item `i`.
fn skip_bytes(items: &[Item<'_>], mut i: usize, mut n: usize) -> (usize, usize) {
    while let Some(text) = items
        .get(i)
        .and_then(Item::text)
        .filter(|text| n > 0 && n >= text.len())
    {
        n -= text.len();
        i += 1;
    }
    (i, n)
}

/// Content: all text except that of the think tags.
fn content_text(items: &[Item<'_>]) -> String {
    items
        .iter()
        .map(|item| match *item {
            Item::Text(text) | Item::Marker(Marker::ToolCallStart, text) => text,
            Item::Marker(Marker::ThinkStart | Marker::ThinkEnd, _) => "",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const Q: ThinkTokens = ThinkTokens::QWEN3;
    const THINK: TokenId = 151_667;
    const END: TokenId = 151_668;
    const TOOL: TokenId = 151_657;
    const TOOL_END: TokenId = 151_658;
    const IM_START: TokenId = 151_644;
    const NL2: TokenId = 271; // "\n\n"
    const TEXT: TokenId = 1_000; // any plain token

    /// Streams `output` token by token and concatenates the pieces, checking that no delta
    /// carries an empty string.
    fn stream(
        tokens: ThinkTokens,
        prompt: PromptThinking,
        output: &[(TokenId, &str)],
    ) -> (ReasoningSplit, Vec<ReasoningDelta>) {
        let mut parser = ReasoningParser::with_prompt_thinking(tokens, prompt);
        let mut deltas: Vec<ReasoningDelta> = output
            .iter()
            .map(|(id, text)| parser.push(*id, text))
            .collect();
        deltas.push(parser.finish());
        let (mut reasoning, mut content) = (String::new(), String::new());
        for d in &deltas {
            assert_ne!(d.reasoning.as_deref(), Some(""), "empty reasoning delta");
            assert_ne!(d.content.as_deref(), Some(""), "empty content delta");
            reasoning.push_str(d.reasoning.as_deref().unwrap_or(""));
            content.push_str(d.content.as_deref().unwrap_or(""));
        }
        (
            ReasoningSplit {
                reasoning: non_empty(reasoning),
                content: non_empty(content),
            },
            deltas,
        )
    }

    fn both(
        tokens: ThinkTokens,
        prompt_ids: &[TokenId],
        output: &[(TokenId, &str)],
    ) -> ReasoningSplit {
        let batch = split_reasoning(&tokens, prompt_ids, output);
        let (streamed, _) = stream(tokens, tokens.prompt_thinking(prompt_ids), output);
        assert_eq!(streamed, batch, "streaming and batch disagree");
        batch
    }

    fn split(reasoning: Option<&str>, content: Option<&str>) -> ReasoningSplit {
        ReasoningSplit {
            reasoning: reasoning.map(str::to_owned),
            content: content.map(str::to_owned),
        }
    }

    /// Qwen3 hybrid template, thinking on: the prompt ends with the bare generation header, no tag.
    const PROMPT_PLAIN: &[TokenId] = &[
        IM_START, 872, 198, 9707, 151_645, 198, IM_START, 77_091, 198,
    ];
    /// Thinking-only templates (Qwen3-*-Thinking-2507) end the prompt with `<think>\n`.
    const PROMPT_OPEN: &[TokenId] = &[IM_START, 77_091, 198, THINK, 198];
    /// `enable_thinking=false` renders `<think>\n\n</think>\n\n`.
    const PROMPT_NO_THINK: &[TokenId] = &[IM_START, 77_091, 198, THINK, NL2, END, NL2];

    #[test]
    fn prompt_state_is_decided_by_the_last_tag() {
        assert_eq!(Q.prompt_thinking(PROMPT_PLAIN), PromptThinking::Absent);
        assert_eq!(Q.prompt_thinking(PROMPT_OPEN), PromptThinking::Open);
        assert_eq!(Q.prompt_thinking(PROMPT_NO_THINK), PromptThinking::Closed);
        // History with a closed block, then a new generation prompt: still closed, but the
        // model may open its own block (next test).
        let history = [PROMPT_NO_THINK, &[151_645, IM_START, 77_091, 198]].concat();
        assert_eq!(Q.prompt_thinking(&history), PromptThinking::Closed);
    }

    #[test]
    fn model_opened_think_block_then_answer() {
        let output = [
            (THINK, "<think>"),
            (198, "\n"),
            (32_313, "Okay"),
            (11, ","),
            (279, " the user"),
            (198, "\n"),
            (END, "</think>"),
            (NL2, "\n\n"),
            (9707, "Hello"),
            (0, "!"),
            (151_645, ""),
        ];
        assert_eq!(
            both(Q, PROMPT_PLAIN, &output),
            split(Some("\nOkay, the user\n"), Some("\n\nHello!"))
        );
        // After a closed block in the history the model opening `<think>` is still reasoning.
        assert_eq!(
            both(Q, PROMPT_NO_THINK, &output),
            split(Some("\nOkay, the user\n"), Some("\n\nHello!"))
        );
    }

    #[test]
    fn prompt_opened_think_block() {
        let output = [
            (TEXT, "9.11 vs 9.8"),
            (TEXT, "?\n"),
            (END, "</think>"),
            (NL2, "\n\n"),
            (TEXT, "9.8 is larger."),
        ];
        assert_eq!(
            both(Q, PROMPT_OPEN, &output),
            split(Some("9.11 vs 9.8?\n"), Some("\n\n9.8 is larger."))
        );
    }

    #[test]
    fn enable_thinking_false_is_all_content() {
        let output = [(TEXT, "Hello"), (TEXT, " there"), (151_645, "")];
        assert_eq!(
            both(Q, PROMPT_NO_THINK, &output),
            split(None, Some("Hello there"))
        );
        assert_eq!(
            both(Q, PROMPT_PLAIN, &output),
            split(None, Some("Hello there"))
        );
    }

    #[test]
    fn cut_off_reasoning_is_all_reasoning() {
        let output = [(TEXT, "Let me"), (TEXT, " count: 1, 2"), (TEXT, ", 3 <")];
        assert_eq!(
            both(Q, PROMPT_OPEN, &output),
            split(Some("Let me count: 1, 2, 3 <"), None)
        );
        let opened = [(THINK, "<think>"), (TEXT, "\nHmm")];
        assert_eq!(both(Q, PROMPT_PLAIN, &opened), split(Some("\nHmm"), None));
        assert_eq!(
            both(Q, PROMPT_PLAIN, &[(THINK, "<think>")]),
            split(None, None)
        );
    }

    #[test]
    fn think_then_tool_call_goes_to_content() {
        let output = [
            (THINK, "<think>"),
            (TEXT, "\nI need the weather.\n"),
            (END, "</think>"),
            (NL2, "\n\n"),
            (TOOL, "<tool_call>"),
            (198, "\n"),
            (
                TEXT,
                r#"{"name": "get_weather", "arguments": {"city": "Paris"}}"#,
            ),
            (198, "\n"),
            (TOOL_END, "</tool_call>"),
        ];
        assert_eq!(
            both(Q, PROMPT_PLAIN, &output),
            split(
                Some("\nI need the weather.\n"),
                Some(
                    "\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
                )
            )
        );
    }

    #[test]
    fn tool_call_token_ends_reasoning_implicitly() {
        let output = [
            (TEXT, "I should call it"),
            (TOOL, "<tool_call>"),
            (TEXT, "\n{}\n"),
            (TOOL_END, "</tool_call>"),
        ];
        assert_eq!(
            both(Q, PROMPT_OPEN, &output),
            split(
                Some("I should call it"),
                Some("<tool_call>\n{}\n</tool_call>")
            )
        );
        // Without a `<tool_call>` id the token is plain text and reasoning continues.
        let no_tool = ThinkTokens {
            tool_call_start_id: None,
            ..Q
        };
        assert_eq!(
            both(no_tool, PROMPT_OPEN, &output),
            split(Some("I should call it<tool_call>\n{}\n</tool_call>"), None)
        );
    }

    #[test]
    fn tags_are_never_emitted_and_later_tags_are_dropped() {
        let output = [
            (THINK, "<think>"),
            (TEXT, "a"),
            (THINK, "<think>"),
            (TEXT, "b"),
            (END, "</think>"),
            (TEXT, "c"),
            (END, "</think>"),
            (THINK, "<think>"),
            (TEXT, "d"),
        ];
        assert_eq!(
            both(Q, PROMPT_PLAIN, &output),
            split(Some("ab"), Some("cd"))
        );
        // A stray `</think>` first under a closed prompt is dropped; the rest is content.
        assert_eq!(
            both(Q, PROMPT_NO_THINK, &[(END, "</think>"), (TEXT, "x")]),
            split(None, Some("x"))
        );
    }

    /// An incremental detokenizer can release held bytes together with a tag token's text.
    #[test]
    fn text_released_with_a_tag_token_is_kept() {
        let output = [
            (TEXT, "thoughts "),
            (END, "\u{FFFD}</think>"),
            (TEXT, "answer"),
        ];
        assert_eq!(
            both(Q, PROMPT_OPEN, &output),
            split(Some("thoughts \u{FFFD}"), Some("answer"))
        );
        let output = [(TEXT, "hmm"), (TOOL, "!<tool_call>"), (TEXT, "{}")];
        assert_eq!(
            both(Q, PROMPT_OPEN, &output),
            split(Some("hmm!"), Some("<tool_call>{}"))
        );
        // A tag token decoded to nothing (special tokens skipped) still acts on its id.
        assert_eq!(
            both(
                Q,
                PROMPT_PLAIN,
                &[(THINK, ""), (TEXT, "a"), (END, ""), (TEXT, "b")]
            ),
            split(Some("a"), Some("b"))
        );
    }

    #[test]
    fn end_inside_a_delta_carries_both() {
        let (_, deltas) = stream(Q, PromptThinking::Open, &[(TEXT, "done</think>\n\nAnswer")]);
        assert_eq!(
            deltas[0],
            ReasoningDelta {
                reasoning: Some("done".into()),
                content: Some("\n\nAnswer".into())
            }
        );
    }

    /// Text-only fallback: `</think>` split across deltas as `'<'` + `'/think>'`
    /// (tenstorrent/tt-inference-server #4386 leaked reasoning into content this way).
    #[test]
    fn text_end_tag_split_across_deltas() {
        let output = [
            (TEXT, "Let me think"),
            (TEXT, "<"),
            (TEXT, "/think>"),
            (TEXT, "\n\nAnswer"),
        ];
        assert_eq!(
            both(Q, PROMPT_OPEN, &output),
            split(Some("Let me think"), Some("\n\nAnswer"))
        );
        let (_, deltas) = stream(Q, PromptThinking::Open, &output);
        assert_eq!(deltas[0].reasoning.as_deref(), Some("Let me think"));
        assert!(
            deltas[1].is_empty() && deltas[2].is_empty(),
            "the partial tag is held, not emitted: {deltas:?}"
        );
        assert_eq!(
            deltas[3],
            ReasoningDelta {
                reasoning: None,
                content: Some("\n\nAnswer".into())
            }
        );
        // A held `<` that does not become the tag is released as reasoning.
        let output = [(TEXT, "a <"), (TEXT, " b")];
        let (_, deltas) = stream(Q, PromptThinking::Open, &output);
        assert_eq!(deltas[0].reasoning.as_deref(), Some("a "));
        assert_eq!(deltas[1].reasoning.as_deref(), Some("< b"));
    }

    #[test]
    fn text_start_tag_opens_reasoning() {
        let output = [(TEXT, "<th"), (TEXT, "ink>\nhmm</th"), (TEXT, "ink>ok")];
        assert_eq!(
            both(Q, PROMPT_PLAIN, &output),
            split(Some("\nhmm"), Some("ok"))
        );
        // Not the first output: text stays content.
        assert_eq!(
            both(Q, PROMPT_PLAIN, &[(TEXT, "x<think>y</think>z")]),
            split(None, Some("x<think>y</think>z"))
        );
        assert_eq!(
            both(Q, PROMPT_PLAIN, &[(TEXT, "<th"), (TEXT, "at")]),
            split(None, Some("<that"))
        );
        assert_eq!(
            both(Q, PROMPT_PLAIN, &[(TEXT, "<th")]),
            split(None, Some("<th"))
        );
    }

    /// Every split point of realistic outputs, as text only and with the tags as tokens.
    #[test]
    fn every_split_point_of_fixed_outputs() {
        let texts = [
            (
                PromptThinking::Open,
                "Okay, 9.11 < 9.8?</think>\n\n9.8 is larger.",
            ),
            (PromptThinking::Absent, "<think>\nabc</think>\n\nanswer <b>"),
            (PromptThinking::Closed, "plain answer </think> kept"),
            (PromptThinking::Open, "no end, cut off at </thi"),
        ];
        for (prompt, text) in texts {
            let whole = split_reasoning_from(&Q, prompt, &[(TEXT, text)]);
            let bounds: Vec<usize> = (0..=text.len())
                .filter(|&i| text.is_char_boundary(i))
                .collect();
            for &a in &bounds {
                for &b in bounds.iter().filter(|&&b| b >= a) {
                    let output = [(TEXT, &text[..a]), (TEXT, &text[a..b]), (TEXT, &text[b..])];
                    assert_eq!(
                        stream(Q, prompt, &output).0,
                        whole,
                        "split at {a},{b} of {text:?}"
                    );
                    assert_eq!(
                        split_reasoning_from(&Q, prompt, &output),
                        whole,
                        "batch split at {a},{b}"
                    );
                }
            }
        }
    }

    fn piece() -> impl Strategy<Value = (TokenId, String)> {
        prop_oneof![
            2 => Just((THINK, "<think>".to_owned())),
            2 => Just((END, "</think>".to_owned())),
            1 => Just((TOOL, "<tool_call>".to_owned())),
            1 => Just((THINK, String::new())),
            1 => Just((END, "é</think>".to_owned())),
            1 => Just((THINK, "<<think>".to_owned())),
            1 => Just((TOOL, "x<tool_call>".to_owned())),
            1 => Just((END, "odd".to_owned())),
            8 => proptest::sample::select(vec!["<", "/", "think", ">", "</think>", "<think>", "a", "é", "\n", " ", "", "</", "<th", "ink>"])
                .prop_map(|s| (TEXT, s.to_owned())),
        ]
    }

    fn prompt_state() -> impl Strategy<Value = PromptThinking> {
        prop_oneof![
            Just(PromptThinking::Open),
            Just(PromptThinking::Closed),
            Just(PromptThinking::Absent)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Token by token, streaming equals the batch split, for any mix of tag tokens and text.
        #[test]
        fn streaming_equals_batch(prompt in prompt_state(), pieces in proptest::collection::vec(piece(), 0..24)) {
            let output: Vec<(TokenId, &str)> = pieces.iter().map(|(id, s)| (*id, s.as_str())).collect();
            let (streamed, _) = stream(Q, prompt, &output);
            prop_assert_eq!(streamed, split_reasoning_from(&Q, prompt, &output));
        }

        /// Text in random chunks gives the same split as the text in one piece.
        #[test]
        fn text_chunking_does_not_matter(
            prompt in prompt_state(),
            parts in proptest::collection::vec(proptest::sample::select(vec!["<think>", "</think>", "<", "/think>", "x", "é", "\n\n", "<th"]), 0..12),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let text: String = parts.concat();
            let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(text.len() + 1)).filter(|&i| text.is_char_boundary(i)).collect();
            bounds.extend([0, text.len()]);
            bounds.sort_unstable();
            let output: Vec<(TokenId, &str)> = bounds.windows(2).map(|w| (TEXT, &text[w[0]..w[1]])).collect();
            let whole = split_reasoning_from(&Q, prompt, &[(TEXT, text.as_str())]);
            prop_assert_eq!(stream(Q, prompt, &output).0, whole.clone());
            prop_assert_eq!(split_reasoning_from(&Q, prompt, &output), whole);
        }
    }
}
