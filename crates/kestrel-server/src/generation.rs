//! Drives the engine streams of one HTTP request (one per choice, `n` or batched prompts) and
//! turns their events into [`ChoiceEvent`]s on a channel. The moment the receiver is gone (the
//! client disconnected and the response body was dropped) this task returns, without waiting for
//! the next token, dropping every `RequestStream`: the engine aborts the sequences and frees
//! their blocks at its next command poll, before the step after the one running.
//!
//! [`drive`] is called in the handler and spawned: it takes the request's access-log record
//! and span when called, so its tokens reach the access line and its log lines carry the
//! request id.
//!
//! A choice's events come from the engine ([`Choice::live`]) or from a response-cache entry
//! (`response_cache::replay`): both go through this same driver, so a cached answer is framed
//! exactly like a live one. With a [`Recorder`], the engine's events are recorded and stored in
//! the response cache once every choice finished normally and the client is still there; the
//! store completes before the response ends, so a client that sees the end of an answer finds
//! it in the cache.

use std::future::Future;
use std::sync::Arc;

use futures::stream::{self, BoxStream, StreamExt};
use kestrel_engine::{EngineEvent, EngineHandle, FinishReason, RequestStream};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::access_log::{self, RequestRecord};
use crate::output::{OutputProcessor, Piece};
use crate::response_cache::Recorder;

/// One choice being generated.
pub struct Choice {
    pub request_id: String,
    /// The engine's events for this choice; dropping them (a live stream) aborts the sequence.
    pub events: BoxStream<'static, EngineEvent>,
    pub processor: OutputProcessor,
}

impl Choice {
    /// A choice the engine generates.
    pub fn live(request_id: String, stream: RequestStream, processor: OutputProcessor) -> Self {
        let events = stream::unfold(
            stream,
            |mut s| async move { s.recv().await.map(|e| (e, s)) },
        );
        Self {
            request_id,
            events: events.boxed(),
            processor,
        }
    }
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

/// `engine`: where a stop string's abort goes (`None` for a replayed answer, which has no
/// sequence); `recorder`: stores the answer in the response cache when it ends normally.
pub fn drive(
    choices: Vec<Choice>,
    engine: Option<EngineHandle>,
    tx: mpsc::Sender<ChoiceEvent>,
    recorder: Option<Recorder>,
) -> impl Future<Output = ()> + Send + 'static {
    let (record, span) = access_log::current();
    drive_streams(choices, engine, tx, record, recorder).instrument(span)
}

async fn drive_streams(
    choices: Vec<Choice>,
    engine: Option<EngineHandle>,
    tx: mpsc::Sender<ChoiceEvent>,
    record: Option<Arc<RequestRecord>>,
    mut recorder: Option<Recorder>,
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
        streams.push(c.events.map(move |e| (index, e)).boxed());
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
        if let Some(r) = &mut recorder {
            r.observe(index, &event);
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
                            if let Some(engine) = &engine {
                                engine.abort(&state.request_id);
                            }
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
                (ChoiceEvent::Done(_, f), record) => {
                    if let Some(r) = record {
                        r.finished(f.prompt_tokens, f.completion_tokens);
                    }
                    // An abort is not the answer: never cached.
                    if let (Some(rec), "abort") = (&mut recorder, f.finish_reason) {
                        rec.discard();
                    }
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
        return;
    }
    // Every choice finished; a client that went away meanwhile does not get its answer stored.
    if let Some(r) = recorder {
        if !tx.is_closed() {
            r.complete().await;
        }
    }
}
