//! The async side of the engine: [`EngineHandle`] (cloned into every HTTP handler) sends
//! commands to the engine thread over a channel, and each submitted sequence gets a
//! [`RequestStream`] of its events. No engine state is shared: only the command channel, a few
//! atomics (health, queue length) and the metrics.
//!
//! Admission control happens here, at once: a prompt that cannot fit is `TooLong`, a full
//! waiting queue is `QueueFull` (the server answers 503 with `Retry-After`), never a wait.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::engine::EngineConfig;
use crate::metrics::EngineMetrics;
use crate::request::{EngineEvent, EngineRequest};
use crate::sequence::SeqId;

/// Why a request was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the engine's queue is full; retry in {retry_after_secs} s")]
    QueueFull { retry_after_secs: u64 },
    #[error(
        "this model's maximum context length is {max_model_len} tokens, but the request asks for {prompt} prompt tokens + {max_tokens} max_tokens"
    )]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        max_model_len: usize,
    },
    #[error("the engine is not running")]
    EngineDead,
    #[error("{0}")]
    Invalid(String),
}

/// A message to the engine thread.
pub(crate) enum Command {
    Submit(Box<Submission>),
    /// Abort by the caller's id (every live sequence with that id).
    Abort(String),
    /// Abort one sequence whose stream was dropped.
    AbortSeq(SeqId),
}

pub(crate) struct Submission {
    pub seq_id: SeqId,
    pub request: EngineRequest,
    pub events: UnboundedSender<EngineEvent>,
    pub arrival: Instant,
}

/// State shared by the handle and the engine thread (all of it atomics or immutable).
pub(crate) struct Shared {
    pub config: EngineConfig,
    pub vocab_size: usize,
    pub healthy: AtomicBool,
    /// Submitted sequences not yet scheduled for the first time (bounded by `max_queued_requests`).
    pub num_queued: AtomicUsize,
    pub next_seq_id: AtomicU64,
    pub metrics: Arc<EngineMetrics>,
}

/// Cheap to clone; every clone talks to the same engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) shared: Arc<Shared>,
    pub(crate) commands: UnboundedSender<Command>,
}

impl EngineHandle {
    /// Queues a request; never blocks. A full queue (`max_queued_requests`) →
    /// [`SubmitError::QueueFull`]; prompt + `max_tokens` over `max_model_len` →
    /// [`SubmitError::TooLong`]; a dead engine → [`SubmitError::EngineDead`].
    pub fn submit(&self, request: EngineRequest) -> Result<RequestStream, SubmitError> {
        let shared = &self.shared;
        if !self.is_healthy() {
            return Err(SubmitError::EngineDead);
        }
        self.check(&request)?;
        let max_queued = shared.config.max_queued_requests;
        if shared
            .num_queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_queued).then_some(n + 1)
            })
            .is_err()
        {
            return Err(SubmitError::QueueFull {
                retry_after_secs: 1,
            });
        }
        let seq_id = SeqId(shared.next_seq_id.fetch_add(1, Ordering::Relaxed));
        let (events, rx) = tokio::sync::mpsc::unbounded_channel();
        let request_id = request.request_id.clone();
        let submission = Submission {
            seq_id,
            request,
            events,
            arrival: Instant::now(),
        };
        if self
            .commands
            .send(Command::Submit(Box::new(submission)))
            .is_err()
        {
            shared.num_queued.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::EngineDead);
        }
        Ok(RequestStream {
            request_id,
            seq_id,
            rx,
            commands: self.commands.clone(),
            done: false,
        })
    }

    fn check(&self, r: &EngineRequest) -> Result<(), SubmitError> {
        let max_model_len = self.shared.config.max_model_len;
        if r.prompt_ids.is_empty() {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        if r.max_tokens == 0 {
            return Err(SubmitError::Invalid(
                "`max_tokens` must be at least 1".into(),
            ));
        }
        if r.prompt_ids.len().saturating_add(r.max_tokens) > max_model_len {
            return Err(SubmitError::TooLong {
                prompt: r.prompt_ids.len(),
                max_tokens: r.max_tokens,
                max_model_len,
            });
        }
        let vocab = self.shared.vocab_size;
        if let Some(id) = r
            .prompt_ids
            .iter()
            .chain(&r.stop_token_ids)
            .find(|&&id| id as usize >= vocab)
        {
            return Err(SubmitError::Invalid(format!(
                "token id {id} is out of range (vocabulary of {vocab})"
            )));
        }
        r.sampling
            .validate_for_vocab(vocab)
            .map_err(|e| SubmitError::Invalid(e.message))
    }

    /// Aborts every live sequence submitted with this id (it ends with `FinishReason::Abort`).
    /// Unknown or finished ids are ignored.
    pub fn abort(&self, request_id: &str) {
        let _ = self.commands.send(Command::Abort(request_id.to_string()));
    }

    pub fn metrics(&self) -> Arc<EngineMetrics> {
        self.shared.metrics.clone()
    }

    /// False after the engine thread died (a panic or a model error); `/health` answers 503.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// The model's vocabulary size (the logits' width).
    pub fn vocab_size(&self) -> usize {
        self.shared.vocab_size
    }

    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }
}

/// Receives the events of one sequence. Dropping it aborts the sequence (client disconnect),
/// freeing its KV blocks within one engine step.
pub struct RequestStream {
    request_id: String,
    seq_id: SeqId,
    rx: UnboundedReceiver<EngineEvent>,
    commands: UnboundedSender<Command>,
    /// A last event (`Finished` / `Error`) was received.
    done: bool,
}

impl RequestStream {
    /// The next event; `None` after the last one (or if the engine went away).
    pub async fn recv(&mut self) -> Option<EngineEvent> {
        if self.done {
            return None;
        }
        let event = self.rx.recv().await;
        self.observe(&event);
        event
    }

    /// As [`RequestStream::recv`], for threads outside an async runtime (panics inside one).
    pub fn blocking_recv(&mut self) -> Option<EngineEvent> {
        if self.done {
            return None;
        }
        let event = self.rx.blocking_recv();
        self.observe(&event);
        event
    }

    fn observe(&mut self, event: &Option<EngineEvent>) {
        if matches!(
            event,
            None | Some(EngineEvent::Finished { .. } | EngineEvent::Error { .. })
        ) {
            self.done = true;
        }
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::AbortSeq(self.seq_id));
        }
    }
}
