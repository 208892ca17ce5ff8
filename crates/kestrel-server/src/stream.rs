//! The response side both endpoints share: usage accounting over choices and prompts
//! ([`UsageTally`]), the one SSE state machine ([`sse_response`]: head, deltas, one finish per
//! choice, the usage chunk, `[DONE]`; an engine error goes in-band and ends the stream) and the
//! non-streaming collector ([`collect`]). An endpoint only says what its chunks look like
//! ([`Framing`]): chat sends `chat.completion.chunk`s with a role chunk first, as vLLM and
//! OpenAI do; completions send `text_completion` objects.
//!
//! Every event is JSON produced by `serde_json` (never text pasted around a message), so a
//! client's JSON parser never meets a malformed event.

use std::convert::Infallible;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use kestrel_protocol::{PromptTokensDetails, Usage};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::generation::{ChoiceEvent, Finish};
use crate::output::Piece;

/// Token counts of one response: `n` choices for each of its prompts (choice `index` belongs to
/// prompt `index / n`).
#[derive(Clone, Debug)]
pub struct UsageTally {
    n: usize,
    prompt_lens: Vec<usize>,
    /// Per choice: tokens so far, then the engine's final count.
    completion: Vec<usize>,
    /// Per choice: its prefix-cache hit, once finished.
    cached: Vec<Option<usize>>,
}

impl UsageTally {
    pub fn new(prompt_lens: Vec<usize>, n: usize) -> Self {
        let num_choices = prompt_lens.len() * n;
        Self {
            n,
            prompt_lens,
            completion: vec![0; num_choices],
            cached: vec![None; num_choices],
        }
    }

    pub fn num_choices(&self) -> usize {
        self.completion.len()
    }

    fn prompt_len(&self, index: usize) -> usize {
        self.prompt_lens[index / self.n]
    }

    pub fn add_tokens(&mut self, index: usize, num_tokens: usize) {
        self.completion[index] += num_tokens;
    }

    pub fn finish(&mut self, index: usize, finish: &Finish) {
        self.completion[index] = finish.completion_tokens;
        self.cached[index] = Some(finish.cached_tokens);
    }

    /// One choice's usage so far (vLLM's `continuous_usage_stats`: the prompt and that choice's
    /// tokens).
    pub fn choice(&self, index: usize) -> Usage {
        let prompt_tokens = self.prompt_len(index);
        let completion_tokens = self.completion[index];
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
        }
    }

    /// The response's usage. Each prompt counts once for its `n` choices (vLLM); its cached
    /// tokens are the smallest prefix hit among those choices, which is what the cache held
    /// before the request (a later choice also finds the blocks an earlier one just computed),
    /// so `cached_tokens` never exceeds `prompt_tokens`.
    pub fn total(&self) -> Usage {
        let prompt_tokens: usize = self.prompt_lens.iter().sum();
        let completion_tokens: usize = self.completion.iter().sum();
        let cached_tokens: usize = self
            .prompt_lens
            .iter()
            .enumerate()
            .map(|(p, &len)| {
                let hits = &self.cached[p * self.n..(p + 1) * self.n];
                hits.iter().flatten().min().copied().unwrap_or(0).min(len)
            })
            .sum();
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }),
        }
    }
}

/// How one endpoint frames its stream. `usage` is `Some` on every chunk with vLLM's
/// `stream_options.continuous_usage_stats`.
pub trait Framing: Send + 'static {
    type Chunk: Serialize;
    /// Sent before any token (chat: the role chunk of every choice).
    fn head(&mut self, num_choices: usize, usage: Option<Usage>) -> Option<Self::Chunk>;
    /// New output of choice `index`; `None` when there is nothing to send.
    fn delta(&mut self, index: usize, piece: Piece, usage: Option<Usage>) -> Option<Self::Chunk>;
    /// The last chunk of choice `index`, with its `finish_reason`.
    fn finish(&mut self, index: usize, finish: &Finish, usage: Option<Usage>) -> Self::Chunk;
    /// `stream_options.include_usage`: the chunk with no choices and the whole usage.
    fn usage(&mut self, usage: Usage) -> Self::Chunk;
}

/// One SSE event carrying `value` as JSON. Serializing the response types cannot fail (string
/// map keys, derived serializers); should it ever, the event is an OpenAI error object, itself
/// built by `serde_json`, so every event stays valid JSON.
pub fn sse_json<T: Serialize>(value: &T) -> Event {
    Event::default().data(json_text(value))
}

/// `value` as JSON text, or an OpenAI error object if it does not serialize.
fn json_text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .unwrap_or_else(|e| {
            error_value(ApiError::Internal(format!(
                "could not serialize a response chunk: {e}"
            )))
        })
        .to_string()
}

/// An in-band error event (the HTTP status was sent with the first chunk).
pub fn sse_error(message: String) -> Event {
    Event::default().data(error_value(ApiError::Internal(message)).to_string())
}

fn error_value(error: ApiError) -> serde_json::Value {
    let body = error.body();
    serde_json::json!({
        "error": {
            "message": body.error.message,
            "type": body.error.kind,
            "param": body.error.param,
            "code": body.error.code,
        }
    })
}

enum Phase {
    Head,
    Body,
    Done,
}

struct StreamState<F: Framing> {
    framing: F,
    rx: mpsc::Receiver<ChoiceEvent>,
    tally: UsageTally,
    include_usage: bool,
    continuous_usage: bool,
    phase: Phase,
}

impl<F: Framing> StreamState<F> {
    /// The events of the next step; `None` once `[DONE]` was sent.
    async fn next(&mut self) -> Option<Vec<Event>> {
        let usage = |st: &Self, index: usize| st.continuous_usage.then(|| st.tally.choice(index));
        match self.phase {
            Phase::Done => None,
            Phase::Head => {
                self.phase = Phase::Body;
                let n = self.tally.num_choices();
                let head_usage = usage(self, 0).map(|mut u| {
                    u.completion_tokens = 0;
                    u.total_tokens = u.prompt_tokens;
                    u
                });
                Some(
                    self.framing
                        .head(n, head_usage)
                        .iter()
                        .map(sse_json)
                        .collect(),
                )
            }
            Phase::Body => Some(match self.rx.recv().await {
                Some(ChoiceEvent::Piece {
                    index,
                    piece,
                    num_tokens,
                }) => {
                    self.tally.add_tokens(index, num_tokens);
                    let usage = usage(self, index);
                    self.framing
                        .delta(index, piece, usage)
                        .iter()
                        .map(sse_json)
                        .collect()
                }
                Some(ChoiceEvent::Done(index, finish)) => {
                    self.tally.finish(index, &finish);
                    let usage = usage(self, index);
                    vec![sse_json(&self.framing.finish(index, &finish, usage))]
                }
                Some(ChoiceEvent::Error(message)) => {
                    // The HTTP status is already sent: the error goes in-band, no usage follows,
                    // and the stream ends (the driver stops after an error).
                    self.include_usage = false;
                    vec![sse_error(message)]
                }
                None => {
                    self.phase = Phase::Done;
                    let mut tail = Vec::new();
                    if self.include_usage {
                        let usage = self.tally.total();
                        tail.push(sse_json(&self.framing.usage(usage)));
                    }
                    tail.push(Event::default().data("[DONE]"));
                    tail
                }
            }),
        }
    }
}

/// The SSE response of a streaming request: the framing's chunks as the driver's events arrive,
/// then the usage chunk (`include_usage`) and `data: [DONE]`.
pub fn sse_response<F: Framing>(
    framing: F,
    rx: mpsc::Receiver<ChoiceEvent>,
    tally: UsageTally,
    include_usage: bool,
    continuous_usage: bool,
) -> Response {
    let state = StreamState {
        framing,
        rx,
        tally,
        include_usage,
        continuous_usage,
        phase: Phase::Head,
    };
    let body = stream::unfold(state, |mut st| async move {
        let events = st.next().await?;
        Some((stream::iter(events), st))
    })
    .flatten();
    Sse::new(body.map(Ok::<_, Infallible>)).into_response()
}

/// One choice of a non-streaming response: all its output and how it ended.
#[derive(Debug)]
pub struct Collected {
    pub piece: Piece,
    pub finish: Finish,
}

/// Collects every choice of a non-streaming request (in index order); an engine error fails the
/// whole request with a 500.
pub async fn collect(
    mut rx: mpsc::Receiver<ChoiceEvent>,
    tally: &mut UsageTally,
) -> Result<Vec<Collected>, ApiError> {
    let n = tally.num_choices();
    let mut pieces: Vec<Piece> = vec![Piece::default(); n];
    let mut finishes: Vec<Option<Finish>> = vec![None; n];
    while let Some(event) = rx.recv().await {
        match event {
            ChoiceEvent::Piece {
                index,
                piece,
                num_tokens,
            } => {
                tally.add_tokens(index, num_tokens);
                let c = &mut pieces[index];
                c.reasoning.push_str(&piece.reasoning);
                c.content.push_str(&piece.content);
                c.tool_calls.extend(piece.tool_calls);
                c.logprobs.extend(piece.logprobs);
            }
            ChoiceEvent::Done(index, finish) => {
                tally.finish(index, &finish);
                finishes[index] = Some(finish);
            }
            ChoiceEvent::Error(message) => return Err(ApiError::Internal(message)),
        }
    }
    pieces
        .into_iter()
        .zip(finishes)
        .map(|(piece, finish)| {
            let finish = finish
                .ok_or_else(|| ApiError::Internal("a choice ended without finishing".into()))?;
            Ok(Collected { piece, finish })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(completion_tokens: usize, cached_tokens: usize) -> Finish {
        Finish {
            finish_reason: "length",
            stop_reason: None,
            prompt_tokens: 0,
            completion_tokens,
            cached_tokens,
        }
    }

    #[test]
    fn prompts_count_once_and_cached_never_exceeds_them() {
        // Two prompts (40 and 10 tokens), n = 3. The later choices of the first prompt found its
        // blocks just computed by the first one.
        let mut t = UsageTally::new(vec![40, 10], 3);
        for (i, cached) in [0, 32, 32, 0, 0, 0].into_iter().enumerate() {
            t.finish(i, &finish(5, cached));
        }
        let u = t.total();
        assert_eq!(u.prompt_tokens, 50);
        assert_eq!(u.completion_tokens, 30);
        assert_eq!(u.total_tokens, 80);
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, 0);
        // Warm: every choice found 32 cached tokens of the first prompt.
        let mut t = UsageTally::new(vec![40, 10], 3);
        for i in 0..6 {
            t.finish(i, &finish(5, if i < 3 { 32 } else { 0 }));
        }
        assert_eq!(t.total().prompt_tokens_details.unwrap().cached_tokens, 32);
        assert!(t.total().prompt_tokens_details.unwrap().cached_tokens <= t.total().prompt_tokens);
    }

    #[test]
    fn continuous_usage_counts_tokens_per_choice() {
        let mut t = UsageTally::new(vec![7], 2);
        t.add_tokens(1, 1);
        t.add_tokens(1, 1);
        assert_eq!(t.choice(0).completion_tokens, 0);
        assert_eq!(t.choice(1).completion_tokens, 2);
        assert_eq!(t.choice(1).total_tokens, 9);
        // The engine's count wins at the end (it includes a sampled stop token).
        t.finish(1, &finish(3, 0));
        assert_eq!(t.choice(1).completion_tokens, 3);
    }

    /// A value whose serialization fails.
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom(
                "a \"quoted\" failure\nwith a newline",
            ))
        }
    }

    #[test]
    fn every_event_is_json_even_when_serialization_fails() {
        let text = json_text(&Unserializable);
        let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(
            back["error"]["message"]
                .as_str()
                .unwrap()
                .contains("\"quoted\" failure\nwith"),
            "{text}"
        );
        assert_eq!(back["error"]["type"], "server_error");
        assert!(!text.contains('\n'), "one data line: {text}");
        assert_eq!(
            json_text(&serde_json::json!({"a": "b\"c"})),
            r#"{"a":"b\"c"}"#
        );
    }
}
