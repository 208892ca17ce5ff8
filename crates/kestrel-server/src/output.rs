//! Token ids of one choice → text pieces: incremental detokenization, stop strings (held-back
//! prefixes), the reasoning split (on token ids) and, when streaming with tools, the tool-call
//! parser over the content. The same processor serves streaming and non-streaming responses,
//! so both see exactly the same text.

use std::sync::Arc;

use kestrel_engine::TokenLogprobs;
use kestrel_text::reasoning::{ReasoningParser, ThinkTokens};
use kestrel_text::tool_calls::{ToolCallDelta, ToolCallIdGenerator, ToolCallParser};
use kestrel_text::{Detokenizer, StopMatcher, Tokenizer};

use crate::error::ApiError;

/// An id that is never a think/tool marker: text flushed at the end has no token of its own.
const NO_TOKEN: u32 = u32::MAX;

/// What one step adds to a choice.
#[derive(Clone, Debug, Default)]
pub struct Piece {
    pub reasoning: String,
    pub content: String,
    pub tool_calls: Vec<ToolCallDelta>,
    /// `(token id, its logprobs)` of the tokens this piece came from.
    pub logprobs: Vec<(u32, TokenLogprobs)>,
    /// A stop string matched: the choice ends here.
    pub stop: Option<String>,
}

impl Piece {
    pub fn is_empty(&self) -> bool {
        self.reasoning.is_empty()
            && self.content.is_empty()
            && self.tool_calls.is_empty()
            && self.logprobs.is_empty()
    }

    fn append(&mut self, other: Piece) {
        self.reasoning.push_str(&other.reasoning);
        self.content.push_str(&other.content);
        self.tool_calls.extend(other.tool_calls);
        self.logprobs.extend(other.logprobs);
        if self.stop.is_none() {
            self.stop = other.stop;
        }
    }
}

pub struct OutputProcessor {
    detok: Detokenizer,
    stop: StopMatcher,
    reasoning: Option<ReasoningParser>,
    tools: Option<ToolCallParser>,
}

impl OutputProcessor {
    /// `think`: split reasoning, deciding from the rendered prompt's ids; `tools`: run the
    /// streaming tool-call parser over the content.
    pub fn new(
        tokenizer: Arc<Tokenizer>,
        skip_special_tokens: bool,
        stop: &[String],
        include_stop_str_in_output: bool,
        think: Option<(ThinkTokens, &[u32])>,
        tools: Option<ToolCallIdGenerator>,
    ) -> Self {
        Self {
            detok: Detokenizer::new(tokenizer, skip_special_tokens),
            stop: StopMatcher::new(stop.iter().cloned(), include_stop_str_in_output),
            reasoning: think.map(|(tokens, prompt)| ReasoningParser::new(tokens, prompt)),
            tools: tools.map(ToolCallParser::new),
        }
    }

    pub fn push(&mut self, id: u32, logprobs: Option<TokenLogprobs>) -> Result<Piece, ApiError> {
        let text = self.detok.push(id)?.unwrap_or_default();
        let stopped = self.stop.push(&text);
        let mut piece = self.split(id, &stopped.text_to_emit);
        piece.logprobs.extend(logprobs.map(|lp| (id, lp)));
        if let Some(stop) = stopped.stopped {
            piece.stop = Some(stop);
            piece.append(self.finish_parsers());
        }
        Ok(piece)
    }

    /// End of generation: releases everything held back.
    pub fn finish(&mut self) -> Result<Piece, ApiError> {
        let mut piece = Piece::default();
        if !self.stop.is_stopped() {
            let text = self.detok.flush()?.unwrap_or_default();
            let mut stopped = self.stop.push(&text);
            if stopped.stopped.is_none() {
                stopped.text_to_emit.push_str(&self.stop.flush());
            }
            piece = self.split(NO_TOKEN, &stopped.text_to_emit);
            piece.stop = stopped.stopped;
        }
        piece.append(self.finish_parsers());
        Ok(piece)
    }

    fn split(&mut self, id: u32, text: &str) -> Piece {
        let (reasoning, content) = match &mut self.reasoning {
            Some(parser) => {
                let d = parser.push(id, text);
                (
                    d.reasoning.unwrap_or_default(),
                    d.content.unwrap_or_default(),
                )
            }
            None => (String::new(), text.to_string()),
        };
        let (content, tool_calls) = match &mut self.tools {
            Some(parser) if !content.is_empty() => {
                let d = parser.push(&content);
                (d.content.unwrap_or_default(), d.tool_calls)
            }
            _ => (content, Vec::new()),
        };
        Piece {
            reasoning,
            content,
            tool_calls,
            ..Piece::default()
        }
    }

    fn finish_parsers(&mut self) -> Piece {
        let mut piece = Piece::default();
        if let Some(parser) = &mut self.reasoning {
            let d = parser.finish();
            piece.reasoning = d.reasoning.unwrap_or_default();
            piece.content = d.content.unwrap_or_default();
        }
        if let Some(parser) = &mut self.tools {
            let mut d = if piece.content.is_empty() {
                Default::default()
            } else {
                parser.push(&piece.content)
            };
            let end = parser.finish();
            let mut content = d.content.take().unwrap_or_default();
            content.push_str(&end.content.unwrap_or_default());
            piece.content = content;
            piece.tool_calls = d.tool_calls;
            piece.tool_calls.extend(end.tool_calls);
        }
        piece
    }
}
