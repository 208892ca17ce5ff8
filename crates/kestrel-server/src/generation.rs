//! Drives the engine streams of one HTTP request (one per choice, `n` or batched prompts) and
//! turns their events into [`ChoiceEvent`]s on a channel. The moment the receiver is gone (the
//! client disconnected and the response body was dropped) this task returns, without waiting for
//! the next token, dropping every `RequestStream`: the engine aborts the sequences and frees
//! their blocks at its next command poll, before the step after the one running.
//!
//! [`drive`] is called in the handler and spawned: it takes the request's access-log record
//! and span when called, so its tokens reach the access line and its log lines carry the
//! request id.

use std::future::Future;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use kestrel_engine::{EngineEvent, EngineHandle, FinishReason, RequestStream};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::access_log::{self, RequestRecord};
use crate::output::{OutputProcessor, Piece};

/// One choice being generated.
pub struct Choice {
    pub request_id: String,
    pub stream: RequestStream,
    pub processor: OutputProcessor,
}

#[derive(Clone, Debug)]
pub struct Finish {
    pub finish_reason: &'static str,
    /// vLLM's `stop_reason`: the stop string or stop token id that ended the choice.
    pub stop_reason: Option<serde_json::Value>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

#[derive(Debug)]
pub enum ChoiceEvent {
    /// The text that `num_tokens` new tokens of choice `index` produced (0 tokens: text held
    /// back until the end); it may be empty.
    Piece {
        index: usize,
        piece: Piece,
        num_tokens: usize,
    },
    Done(usize, Finish),
    /// The engine failed; the response ends.
    Error(String),
}

struct ChoiceState {
    request_id: String,
    processor: OutputProcessor,
    num_tokens: usize,
    finished: bool,
    /// A stop string matched at this many tokens; the choice ends when the engine confirms
    /// the abort (its last event carries the usage, cached tokens included).
    stopped: Option<(String, usize)>,
}

pub fn drive(
    choices: Vec<Choice>,
    engine: EngineHandle,
    tx: mpsc::Sender<ChoiceEvent>,
) -> impl Future<Output = ()> + Send + 'static {
    let (record, span) = access_log::current();
    drive_streams(choices, engine, tx, record).instrument(span)
}

async fn drive_streams(
    choices: Vec<Choice>,
    engine: EngineHandle,
    tx: mpsc::Sender<ChoiceEvent>,
    record: Option<Arc<RequestRecord>>,
) {
    let mut states = Vec::with_capacity(choices.len());
    let mut streams = Vec::with_capacity(choices.len());
    for (index, c) in choices.into_iter().enumerate() {
        states.push(ChoiceState {
            request_id: c.request_id,
            processor: c.processor,
            num_tokens: 0,
            finished: false,
            stopped: None,
        });
        let events = stream::unfold(
            c.stream,
            |mut s| async move { s.recv().await.map(|e| (e, s)) },
        );
        streams.push(events.map(move |e| (index, e)).boxed());
    }
    let mut merged = stream::select_all(streams);
    loop {
        let (index, event) = tokio::select! {
            _ = tx.closed() => return,
            next = merged.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        let state = &mut states[index];
        if state.finished {
            continue;
        }
        let mut out = Vec::new();
        match event {
            EngineEvent::Token { .. } if state.stopped.is_some() => {}
            EngineEvent::Token { id, logprobs } => {
                state.num_tokens += 1;
                if let Some(r) = &record {
                    r.token();
                }
                match state.processor.push(id, logprobs) {
                    Ok(piece) => {
                        let stop = piece.stop.clone();
                        out.push(ChoiceEvent::Piece {
                            index,
                            piece,
                            num_tokens: 1,
                        });
                        if let Some(stop) = stop {
                            // A stop string is the server's decision: end the sequence now.
                            state.stopped = Some((stop, state.num_tokens));
                            engine.abort(&state.request_id);
                        }
                    }
                    Err(e) => out.push(ChoiceEvent::Error(e.to_string())),
                }
            }
            EngineEvent::Finished { usage, .. } if state.stopped.is_some() => {
                state.finished = true;
                let (stop, num_tokens) = state.stopped.take().expect("checked by the guard");
                out.push(ChoiceEvent::Done(
                    index,
                    Finish {
                        finish_reason: "stop",
                        stop_reason: Some(stop.into()),
                        prompt_tokens: usage.prompt_tokens,
                        completion_tokens: num_tokens,
                        cached_tokens: usage.cached_tokens,
                    },
                ));
            }
            EngineEvent::Finished { reason, usage } => {
                state.finished = true;
                match state.processor.finish() {
                    Ok(piece) => {
                        let stop = piece.stop.clone();
                        if !piece.is_empty() {
                            out.push(ChoiceEvent::Piece {
                                index,
                                piece,
                                num_tokens: 0,
                            });
                        }
                        let (finish_reason, stop_reason) = match (stop, reason) {
                            (Some(s), _) => ("stop", Some(s.into())),
                            (None, FinishReason::Stop { token }) => ("stop", token.map(Into::into)),
                            (None, other) => (other.as_str(), None),
                        };
                        out.push(ChoiceEvent::Done(
                            index,
                            Finish {
                                finish_reason,
                                stop_reason,
                                prompt_tokens: usage.prompt_tokens,
                                completion_tokens: usage.completion_tokens,
                                cached_tokens: usage.cached_tokens,
                            },
                        ));
                    }
                    Err(e) => out.push(ChoiceEvent::Error(e.to_string())),
                }
            }
            EngineEvent::Error { message } => out.push(ChoiceEvent::Error(message)),
        }
        for event in out {
            match (&event, &record) {
                (ChoiceEvent::Done(_, f), Some(r)) => {
                    r.finished(f.prompt_tokens, f.completion_tokens)
                }
                (ChoiceEvent::Error(message), _) => {
                    tracing::warn!(error = %message, "generation failed")
                }
                _ => {}
            }
            let fatal = matches!(event, ChoiceEvent::Error(_));
            if tx.send(event).await.is_err() || fatal {
                return;
            }
        }
    }
    if states.iter().any(|s| !s.finished) {
        let _ = tx
            .send(ChoiceEvent::Error(
                "the engine stopped before the generation finished".into(),
            ))
            .await;
    }
}
