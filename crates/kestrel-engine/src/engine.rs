//! The engine thread: sole owner of the model runner (model, KV cache, device buffers) and the
//! scheduler (vLLM v1's `EngineCore`). Its loop: take commands (submit / abort; block on the
//! channel when there is nothing to do) → drop sequences whose stream is gone → `schedule()` →
//! fill the step's `BatchInput` and `SamplingBatch` (buffers reused every step) → launch the
//! step on the runner (forward + sampling on the device; only ids come back) → apply the
//! sampled ids → emit events → free the blocks of finished sequences at once.
//!
//! With async scheduling (on devices that run a step asynchronously) the next step is
//! scheduled and launched before the previous one's ids are back: a sequence decoding in step
//! N gets its step N+1 input from step N's samples on the device (a placeholder id), and
//! step N's results are applied while step N+1 runs. Sequences whose next step needs their
//! last token on the host (penalties, a structured-output grammar whose mask follows from it)
//! make the loop wait instead.
//!
//! Structured output: each constrained sequence's [`crate::structured::OutputControl`] takes
//! its sampled token as it is applied; the allowed-token mask of its next step (llguidance,
//! tens of microseconds to a few milliseconds for a JSON schema over a 150k vocabulary) is
//! computed on a worker thread while that step's forward runs
//! ([`ModelRunner::launch_late_masks`]), written into the step's sampling rows, and applied by
//! the backend to the logits. The next step itself waits for the token (async scheduling is
//! off while a grammar is active): the mask follows from it.
//!
//! Kernels: a step runs batch-invariant kernels when a sequence in it asks for reproducible
//! output (greedy or seeded, by default), so such a sequence gets the same logits whatever
//! shares its steps. Its prefix-cache blocks live in a namespace of their own, so a cache hit
//! also reads KV computed by the same kernels.
//!
//! Speculative decoding (`--speculative-config`, see [`crate::speculative`]): before each
//! schedule, every running sequence that decodes with its last token known and without
//! penalties or structured output proposes prompt-lookup drafts; the step verifies them with
//! a logit row per draft plus one, and the scheduler keeps the accepted ones. Proposing needs
//! the last token on the host, so speculation turns async scheduling's overlap off.
//!
//! A panic or a model error in a step fails every in-flight sequence with
//! [`EngineEvent::Error`], marks the engine unhealthy and ends the thread: nothing waits forever
//! (streams whose sender is gone return `None`).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kestrel_backend::{
    Backend, BatchInput, KvCopy, KvDtype, SampleOutput, SamplingBatch, StepOptions,
};
use kestrel_model::{ModelRunner, QwenModel, RunnerConfig};
use rand::Rng;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::batching_policy::{BatchingPolicy, PrefillLimits};
use crate::block_hash::CacheSalt;
use crate::handle::{Command, EngineHandle, Shared, Submission};
use crate::metrics::{EngineMetrics, RequestTimes};
use crate::request::{EngineEvent, FinishReason, Usage};
use crate::sampling_state::SequenceSampling;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerOutput, TokenOutcome};
use crate::sequence::{SeqId, Sequence};
use crate::speculative::{self, SpecDecodingStats, SpeculativeConfig};
use crate::structured::{Advance, OutputControl};

/// When steps use batch-invariant kernels (`--batch-invariant`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchInvariance {
    /// For steps holding a greedy or seeded request, so that those reproduce in any batch and
    /// on a prefix-cache hit; other steps take the fastest kernels.
    #[default]
    Auto,
    /// Every step (vLLM's `VLLM_BATCH_INVARIANT=1`).
    On,
    /// Never: the fastest kernels; outputs may depend on the batch.
    Off,
}

impl std::str::FromStr for BatchInvariance {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" | "true" | "1" => Ok(Self::On),
            "off" | "false" | "0" => Ok(Self::Off),
            other => Err(format!(
                "unknown batch invariance {other:?} (auto, on or off)"
            )),
        }
    }
}

/// Engine limits and cache geometry (the server's `--max-num-seqs` etc.).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most sequences running at once (vLLM default 256).
    pub max_num_seqs: usize,
    /// Token budget of one step: prefill chunks + decode tokens (2048 on CPU).
    pub max_num_batched_tokens: usize,
    /// Prompt + output limit of one sequence; must fit in the KV cache.
    pub max_model_len: usize,
    /// Tokens per KV block (16).
    pub block_size: usize,
    /// KV cache blocks (from `--kv-cache-memory` via `KvCache::blocks_for_budget`).
    pub num_blocks: usize,
    /// Automatic prefix caching (on by default).
    pub enable_prefix_caching: bool,
    /// Most submitted sequences waiting for their first step; more are `QueueFull`.
    pub max_queued_requests: usize,
    pub kv_dtype: KvDtype,
    /// How a step's budget is shared between decodes and prefills (`batching_policy.rs`).
    pub batching_policy: BatchingPolicy,
    /// vLLM's `long_prefill_token_threshold`: prompts with more tokens left are long, and one
    /// sequence's prefill chunk per step is at most this. 0 is automatic: under the latency
    /// policy 4 % of `max_model_len` (64 to a quarter of the budget), applied while anything
    /// decodes; under the throughput policy no cap. A value set here caps every step.
    pub long_prefill_token_threshold: usize,
    /// Most sequences prefilling in one step under the latency policy (vLLM's
    /// `max_num_partial_prefills`, 1).
    pub max_num_partial_prefills: usize,
    /// Most of those whose prompt left is long (vLLM's `max_long_partial_prefills`, 1).
    pub max_long_partial_prefills: usize,
    /// Split prompts over steps (on); off, a prompt is prefilled whole in one step, so
    /// `max_num_batched_tokens` must be at least `max_model_len`.
    pub enable_chunked_prefill: bool,
    pub batch_invariance: BatchInvariance,
    /// Schedule step N+1 while step N runs (vLLM's `--async-scheduling`).
    pub async_scheduling: bool,
    /// Speculative decoding (vLLM's `--speculative-config`); `None` is off.
    pub speculative: Option<SpeculativeConfig>,
}

/// Most draft tokens verified in one step (each takes a logit row of the vocabulary's size).
const MAX_SPEC_TOKENS_PER_STEP: usize = 256;

impl EngineConfig {
    /// Most draft tokens verified in one step (0 without speculative decoding).
    pub fn max_num_spec_tokens(&self) -> usize {
        self.speculative.as_ref().map_or(0, |s| {
            max_num_spec_tokens(
                self.max_num_seqs,
                self.max_num_batched_tokens,
                s.num_speculative_tokens,
            )
        })
    }

    /// Most logit rows in one step: one per sequence, plus one per draft.
    pub fn max_num_logits(&self) -> usize {
        self.max_num_seqs + self.max_num_spec_tokens()
    }
}

/// Most draft tokens verified in one step for these limits and `num_speculative_tokens`.
pub fn max_num_spec_tokens(
    max_num_seqs: usize,
    max_num_batched_tokens: usize,
    num_speculative_tokens: usize,
) -> usize {
    (max_num_seqs * num_speculative_tokens)
        .min(max_num_batched_tokens)
        .min(MAX_SPEC_TOKENS_PER_STEP)
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            max_model_len: 4096,
            block_size: 16,
            num_blocks: 1024,
            enable_prefix_caching: true,
            max_queued_requests: 1024,
            kv_dtype: KvDtype::F16,
            batching_policy: BatchingPolicy::Latency,
            long_prefill_token_threshold: 0,
            max_num_partial_prefills: 1,
            max_long_partial_prefills: 1,
            enable_chunked_prefill: true,
            batch_invariance: BatchInvariance::Auto,
            async_scheduling: false,
            speculative: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Model(#[from] kestrel_model::ModelError),
    #[error("could not start the engine thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Starts the engine thread, which owns the runner (model, KV cache) and the scheduler.
pub fn start_engine<B: Backend>(
    backend: B,
    model: QwenModel<B>,
    config: EngineConfig,
) -> Result<EngineHandle, EngineError> {
    let c = &config;
    let invalid = |m: String| Err(EngineError::InvalidConfig(m));
    if c.block_size == 0
        || c.max_num_seqs == 0
        || c.max_num_batched_tokens == 0
        || c.max_model_len == 0
    {
        return invalid(
            "block_size, max_num_seqs, max_num_batched_tokens and max_model_len must be positive"
                .into(),
        );
    }
    if c.max_num_partial_prefills == 0 || c.max_long_partial_prefills == 0 {
        return invalid(
            "max_num_partial_prefills and max_long_partial_prefills must be positive".into(),
        );
    }
    if c.max_long_partial_prefills > c.max_num_partial_prefills {
        return invalid(format!(
            "max_long_partial_prefills {} exceeds max_num_partial_prefills {}",
            c.max_long_partial_prefills, c.max_num_partial_prefills
        ));
    }
    if !c.enable_chunked_prefill && c.max_num_batched_tokens < c.max_model_len {
        return invalid(format!(
            "without chunked prefill a prompt is prefilled in one step: max_num_batched_tokens {} must be at least max_model_len {}",
            c.max_num_batched_tokens, c.max_model_len
        ));
    }
    if c.max_model_len > model.config.max_position_embeddings {
        return invalid(format!(
            "max_model_len {} exceeds the model's context of {} tokens",
            c.max_model_len, model.config.max_position_embeddings
        ));
    }
    if c.num_blocks * c.block_size < c.max_model_len {
        return invalid(format!(
            "the KV cache holds {} tokens ({} blocks of {}), fewer than max_model_len {}; give it more memory or lower max_model_len",
            c.num_blocks * c.block_size,
            c.num_blocks,
            c.block_size,
            c.max_model_len
        ));
    }
    let vocab_size = model.config.vocab_size;
    let max_num_spec_tokens = c.max_num_spec_tokens();
    let runner = ModelRunner::new(
        backend,
        model,
        RunnerConfig {
            max_num_tokens: c.max_num_batched_tokens,
            max_num_seqs: c.max_num_seqs,
            max_num_logits: c.max_num_logits(),
            num_blocks: c.num_blocks,
            block_size: c.block_size,
            max_blocks_per_seq: c.max_model_len.div_ceil(c.block_size),
            kv_dtype: c.kv_dtype,
        },
    )?;
    let scheduler = Scheduler::new(SchedulerConfig {
        max_num_seqs: c.max_num_seqs,
        max_num_batched_tokens: c.max_num_batched_tokens,
        block_size: c.block_size,
        num_blocks: c.num_blocks,
        enable_prefix_caching: c.enable_prefix_caching,
        prefill: PrefillLimits::resolve(
            c.batching_policy,
            c.long_prefill_token_threshold,
            c.max_model_len,
            c.max_num_batched_tokens,
            c.max_num_partial_prefills,
            c.max_long_partial_prefills,
            c.enable_chunked_prefill,
        ),
        max_num_spec_tokens,
    });
    let (commands, rx) = tokio::sync::mpsc::unbounded_channel();
    let metrics = Arc::new(EngineMetrics::new(&config));
    metrics.set_kv_blocks(c.num_blocks, c.num_blocks);
    let block_size = c.block_size;
    let shared = Arc::new(Shared {
        vocab_size,
        config,
        healthy: AtomicBool::new(true),
        num_queued: AtomicUsize::new(0),
        next_seq_id: AtomicU64::new(0),
        metrics,
    });
    let core = EngineCore {
        runner,
        scheduler,
        clients: HashMap::new(),
        by_request_id: HashMap::new(),
        shared: shared.clone(),
        commands: rx,
        batch: BatchInput::new(block_size),
        sampling: SamplingBatch::default(),
        sampled: SampleOutput::default(),
        outcomes: Vec::new(),
        in_flight: None,
        prev_rows: HashMap::new(),
        late_masks: Vec::new(),
        running_ids: Vec::new(),
        spec_stats: SpecDecodingStats::default(),
    };
    std::thread::Builder::new()
        .name("kestrel-engine".into())
        .spawn(move || core.run())?;
    Ok(EngineHandle { shared, commands })
}

/// The engine's view of a sequence's client: where its events go, and its timestamps.
struct Client {
    events: UnboundedSender<EngineEvent>,
    arrival: Instant,
    /// Still counted in `Shared::num_queued` (never scheduled yet).
    queued: bool,
    /// First scheduled, and first token: the phase times of its metrics.
    scheduled: Option<Instant>,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

/// A launched step whose results are not applied yet.
struct InFlight {
    plan: SchedulerOutput,
    /// The step's sampling parameters (for reading requested logprobs).
    sampling: SamplingBatch,
}

struct EngineCore<B: Backend> {
    runner: ModelRunner<B>,
    scheduler: Scheduler,
    clients: HashMap<SeqId, Client>,
    by_request_id: HashMap<String, Vec<SeqId>>,
    shared: Arc<Shared>,
    commands: UnboundedReceiver<Command>,
    /// The step being built; reused every step.
    batch: BatchInput,
    sampling: SamplingBatch,
    sampled: SampleOutput,
    outcomes: Vec<TokenOutcome>,
    in_flight: Option<InFlight>,
    /// Sampling row of each sequence in the step in flight (placeholders read it).
    prev_rows: HashMap<SeqId, u32>,
    /// The step's rows whose grammar mask is computed while its forward runs: the sequence
    /// and the offset of the words reserved in `sampling`.
    late_masks: Vec<(SeqId, usize)>,
    /// Scratch list of the running sequences (drafting).
    running_ids: Vec<SeqId>,
    /// Scratch for the scheduler's speculative decoding counts.
    spec_stats: SpecDecodingStats,
}

/// Marks the engine unhealthy when the thread ends, however it ends.
struct HealthGuard(Arc<Shared>);

impl Drop for HealthGuard {
    fn drop(&mut self) {
        self.0.healthy.store(false, Ordering::Release);
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl<B: Backend> EngineCore<B> {
    fn run(mut self) {
        let _guard = HealthGuard(self.shared.clone());
        loop {
            if self.scheduler.is_idle() && self.in_flight.is_none() {
                // Nothing to compute: sleep on the channel. `None`: every handle and stream is gone.
                match self.commands.blocking_recv() {
                    Some(cmd) => self.handle(cmd),
                    None => return,
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                self.handle(cmd);
            }
            self.abort_disconnected();
            if self.scheduler.is_idle() && self.in_flight.is_none() {
                self.update_gauges();
                continue;
            }
            let message = match catch_unwind(AssertUnwindSafe(|| self.step())) {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => format!("engine step failed: {e}"),
                Err(p) => format!("engine step panicked: {}", panic_message(p.as_ref())),
            };
            self.fail_all(&message);
            return;
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(s) => self.add(*s),
            Command::Abort(request_id) => {
                for id in self
                    .by_request_id
                    .get(&request_id)
                    .cloned()
                    .unwrap_or_default()
                {
                    self.finish(id, FinishReason::Abort);
                }
            }
            Command::AbortSeq(id) => self.finish(id, FinishReason::Abort),
        }
    }

    fn add(&mut self, s: Submission) {
        let Submission {
            seq_id,
            mut request,
            events,
            arrival,
        } = s;
        let constraint = std::mem::take(&mut request.constraint);
        let control = if constraint.is_active() {
            let mut control =
                OutputControl::new(constraint, &request.stop_token_ids, self.shared.vocab_size);
            let problem = match control.prepare() {
                Advance::Continue => None,
                Advance::Complete => {
                    Some("structured output: the grammar allows only an empty output".to_string())
                }
                Advance::Failed(message) => Some(message),
            };
            if let Some(message) = problem {
                self.shared.num_queued.fetch_sub(1, Ordering::AcqRel);
                let _ = events.send(EngineEvent::Error { message });
                return;
            }
            Some(control)
        } else {
            None
        };
        let invariant = match self.shared.config.batch_invariance {
            BatchInvariance::On => true,
            BatchInvariance::Off => false,
            BatchInvariance::Auto => request.sampling.is_deterministic(),
        };
        // Requests without a seed draw one here (Philox is keyed by it).
        let sampling = SequenceSampling::new(
            request.sampling.clone(),
            &request.prompt_ids,
            rand::thread_rng().gen(),
        );
        self.by_request_id
            .entry(request.request_id.clone())
            .or_default()
            .push(seq_id);
        let separate = self.shared.config.batch_invariance == BatchInvariance::Auto && invariant;
        let mut seq = Sequence::new(
            seq_id,
            request,
            sampling,
            self.shared.config.max_model_len,
            invariant,
        );
        seq.control = control;
        if separate {
            // Under `Auto` the two kinds of kernels compute different KV for the same tokens:
            // the invariant steps' blocks are a tenant of their own.
            seq.cache_salt = Some(CacheSalt::for_kernels(
                seq.cache_salt.as_ref(),
                "batch-invariant",
            ));
        }
        self.scheduler.add(seq);
        self.clients.insert(
            seq_id,
            Client {
                events,
                arrival,
                queued: true,
                scheduled: None,
                first_token: None,
                last_token: None,
            },
        );
    }

    /// Aborts sequences whose `RequestStream` was dropped without its abort reaching us.
    fn abort_disconnected(&mut self) {
        let gone: Vec<SeqId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.finish(id, FinishReason::Abort);
        }
    }

    /// Ends a sequence: frees its blocks, sends its last event, records its metrics.
    fn finish(&mut self, id: SeqId, reason: FinishReason) {
        let Some(seq) = self.scheduler.finish(id) else {
            return;
        };
        let client = self
            .clients
            .remove(&id)
            .expect("every sequence has a client");
        self.forget(&seq.request_id, id, &client);
        let usage = Usage {
            prompt_tokens: seq.num_prompt_tokens,
            completion_tokens: seq.num_completion_tokens(),
            cached_tokens: seq.num_cached_tokens.unwrap_or(0),
        };
        let m = &self.shared.metrics;
        let times = RequestTimes {
            arrival: client.arrival,
            scheduled: client.scheduled,
            first_token: client.first_token,
            last_token: client.last_token,
        };
        m.record_finished(reason, usage.prompt_tokens, usage.completion_tokens, times);
        // Gauges first, so that whoever sees the last event also sees the freed blocks.
        self.update_gauges();
        let _ = client.events.send(EngineEvent::Finished { reason, usage });
    }

    fn forget(&mut self, request_id: &str, id: SeqId, client: &Client) {
        if client.queued {
            self.shared.num_queued.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(ids) = self.by_request_id.get_mut(request_id) {
            ids.retain(|&s| s != id);
            if ids.is_empty() {
                self.by_request_id.remove(request_id);
            }
        }
    }

    /// Fails every in-flight sequence (and every queued submission) with `message`.
    fn fail_all(&mut self, message: &str) {
        self.shared.healthy.store(false, Ordering::Release);
        let ids: Vec<SeqId> = self.clients.keys().copied().collect();
        for id in ids {
            let client = self.clients.remove(&id).expect("listed above");
            let _ = client.events.send(EngineEvent::Error {
                message: message.to_string(),
            });
            self.shared
                .metrics
                .finished_error
                .fetch_add(1, Ordering::Relaxed);
            if client.queued {
                self.shared.num_queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.commands.close();
        while let Ok(cmd) = self.commands.try_recv() {
            if let Command::Submit(s) = cmd {
                self.shared.num_queued.fetch_sub(1, Ordering::AcqRel);
                let _ = s.events.send(EngineEvent::Error {
                    message: message.to_string(),
                });
            }
        }
    }

    fn update_gauges(&self) {
        let m = &self.shared.metrics;
        m.num_requests_running
            .store(self.scheduler.num_running() as u64, Ordering::Relaxed);
        m.num_requests_waiting
            .store(self.scheduler.num_waiting() as u64, Ordering::Relaxed);
        let kv = self.scheduler.kv();
        m.set_kv_blocks(kv.num_blocks(), kv.num_free_blocks());
    }

    /// Whether the next step may be scheduled before the one in flight returns: every running
    /// sequence's next step must be buildable without its last token on the host (penalties
    /// read it, and so does a grammar mask).
    fn may_overlap(&self) -> bool {
        self.shared.config.async_scheduling
            && self.shared.config.speculative.is_none()
            && self
                .scheduler
                .running()
                .all(|seq| !seq.sampling.params.has_penalties() && seq.control.is_none())
    }

    /// One engine iteration: schedule and launch a step, and apply the previous one's results
    /// (before the launch unless the two may overlap).
    fn step(&mut self) -> Result<(), kestrel_model::ModelError> {
        if self.in_flight.is_some() && !self.may_overlap() {
            self.complete_in_flight()?;
        }
        self.propose_drafts();
        let out = self.scheduler.schedule();
        self.record_schedule(&out);
        let launched = if out.scheduled.is_empty() {
            None
        } else {
            self.build_step(&out);
            let invariant = out.scheduled.iter().any(|s| {
                self.scheduler
                    .seq(s.seq_id)
                    .is_some_and(|seq| seq.batch_invariant)
            });
            // A replayed graph issues only the ops it recorded: a step with KV copies runs eagerly.
            let decode_only =
                self.batch.num_tokens() == self.batch.num_seqs() && self.batch.kv_copies.is_empty();
            let opts = StepOptions {
                batch_invariant: invariant,
                graph_tokens: decode_only.then_some(self.batch.num_tokens()),
            };
            if self.late_masks.is_empty() {
                self.runner.launch(&self.batch, &self.sampling, opts)?;
            } else {
                self.launch_late_masks(opts)?;
            }
            self.shared
                .metrics
                .record_iteration(self.batch.num_tokens());
            Some(InFlight {
                plan: out,
                sampling: std::mem::take(&mut self.sampling),
            })
        };
        // The previous step's results, while this one runs.
        let had_in_flight = self.in_flight.is_some();
        if had_in_flight {
            self.complete_in_flight()?;
        }
        match launched {
            Some(step) => {
                self.prev_rows.clear();
                // A sequence's last row (a verification has one per draft, plus one).
                let mut row = 0;
                for s in step.plan.scheduled.iter().filter(|s| s.sample) {
                    row += 1 + s.num_spec_tokens;
                    self.prev_rows.insert(s.seq_id, row as u32 - 1);
                }
                self.in_flight = Some(step);
                if !self.shared.config.async_scheduling {
                    self.complete_in_flight()?;
                }
            }
            // With a step in flight, an empty plan only waited for its results.
            None if !had_in_flight => self.fail_unschedulable(),
            None => {}
        }
        self.update_gauges();
        Ok(())
    }

    /// Proposes prompt-lookup drafts for every running sequence that decodes next with its
    /// last token known, may speculate (no penalties, no structured output, drafting not
    /// paused) and has room: a verification emits at most its drafts plus one token, none past
    /// `max_tokens` or the model length.
    fn propose_drafts(&mut self) {
        let Some(spec) = &self.shared.config.speculative else {
            return;
        };
        let max_model_len = self.shared.config.max_model_len;
        if spec
            .disable_by_batch_size
            .is_some_and(|n| self.scheduler.num_running() >= n)
        {
            return;
        }
        self.running_ids.clear();
        self.running_ids
            .extend_from_slice(self.scheduler.running_ids());
        for &id in &self.running_ids {
            let seq = self.scheduler.seq_mut(id).expect("running sequences exist");
            seq.spec_tokens.clear();
            if seq.num_pending > 0
                || !seq.is_decoding()
                || seq.control.is_some()
                || seq.sampling.params.has_penalties()
            {
                continue;
            }
            let room = (seq.max_tokens.saturating_sub(seq.num_output_tokens()))
                .min(max_model_len.saturating_sub(seq.num_tokens()))
                .saturating_sub(1);
            let k = spec.num_speculative_tokens.min(room);
            if k == 0 || !seq.draft.may_draft() {
                continue;
            }
            speculative::propose(
                &seq.tokens,
                spec.prompt_lookup_min,
                spec.prompt_lookup_max,
                k,
                &mut seq.spec_tokens,
            );
        }
    }

    /// Nothing could be scheduled with nothing in flight. Cannot happen while the cache holds
    /// `max_model_len` tokens (checked at start), but never spin: fail the head of the queue.
    fn fail_unschedulable(&mut self) {
        let head = self.scheduler.seq_ids().next();
        if let Some(id) = head {
            let client = self
                .clients
                .remove(&id)
                .expect("every sequence has a client");
            let seq = self.scheduler.finish(id).expect("listed above");
            self.forget(&seq.request_id, id, &client);
            let message = "the sequence does not fit in the KV cache".to_string();
            let _ = client.events.send(EngineEvent::Error { message });
        }
    }

    /// Waits for the step in flight and applies its sampled ids: appends, events, finishes.
    fn complete_in_flight(&mut self) -> Result<(), kestrel_model::ModelError> {
        let Some(step) = self.in_flight.take() else {
            return Ok(());
        };
        self.runner.wait(&mut self.sampled)?;
        self.scheduler
            .update_from_output(&step.plan, &self.sampled.tokens, &mut self.outcomes);
        if self.shared.config.speculative.is_some() {
            self.scheduler.take_spec_stats(&mut self.spec_stats);
            self.shared.metrics.record_spec_decoding(&self.spec_stats);
        }
        let now = Instant::now();
        let m = self.shared.metrics.clone();
        let outcomes = std::mem::take(&mut self.outcomes);
        for o in &outcomes {
            m.generation_tokens.fetch_add(1, Ordering::Relaxed);
            let Some(client) = self.clients.get_mut(&o.seq_id) else {
                // Aborted by an earlier token of the same verification (its stream was gone).
                continue;
            };
            client.first_token.get_or_insert(now);
            match client.last_token {
                None => m.time_to_first_token.observe(now - client.arrival),
                Some(t) => m.inter_token_latency.observe(now - t),
            }
            client.last_token = Some(now);
            if o.appended {
                let row = o.row;
                let event = EngineEvent::Token {
                    id: o.token,
                    logprobs: self.sampled.token_logprobs(row, &step.sampling.rows[row]),
                };
                if client.events.send(event).is_err() {
                    self.finish(o.seq_id, FinishReason::Abort);
                    continue;
                }
            }
            if let Some(reason) = o.finish {
                self.finish(o.seq_id, reason);
            }
        }
        self.outcomes = outcomes;
        // The step's sampling buffers come back for reuse.
        self.sampling = step.sampling;
        Ok(())
    }

    fn record_schedule(&mut self, out: &SchedulerOutput) {
        let m = self.shared.metrics.clone();
        m.num_preemptions
            .fetch_add(out.preempted.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        for &(id, num_cached) in &out.admitted {
            let seq = self.scheduler.seq(id).expect("admitted sequences exist");
            m.prefix_cache_queries
                .fetch_add(seq.num_tokens() as u64, Ordering::Relaxed);
            m.prefix_cache_hits
                .fetch_add(num_cached as u64, Ordering::Relaxed);
            let client = self
                .clients
                .get_mut(&id)
                .expect("every sequence has a client");
            if client.queued {
                client.queued = false;
                client.scheduled = Some(now);
                self.shared.num_queued.fetch_sub(1, Ordering::AcqRel);
                m.request_queue_time.observe(now - client.arrival);
                m.prompt_tokens
                    .fetch_add(seq.num_prompt_tokens as u64, Ordering::Relaxed);
            }
        }
    }

    /// Launches a step whose grammar masks are computed on a worker thread while its forward
    /// runs; the sampling waits for them. A mask that ends the output (the grammar cannot go
    /// on) leaves its row free and is taken up when the step's sample is applied.
    fn launch_late_masks(&mut self, opts: StepOptions) -> Result<(), kestrel_model::ModelError> {
        let Self {
            runner,
            scheduler,
            batch,
            sampling,
            late_masks,
            ..
        } = self;
        let mut jobs: Vec<(&mut OutputControl, usize)> = scheduler
            .seqs_mut()
            .filter_map(|seq| {
                let (_, start) = late_masks.iter().find(|(id, _)| *id == seq.id)?;
                Some((seq.control.as_mut()?, *start))
            })
            .collect();
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("kestrel-grammar".into())
                .spawn_scoped(scope, move || {
                    for (control, _) in &mut jobs {
                        control.prepare_deferred();
                    }
                    jobs
                })
                .map_err(|e| {
                    kestrel_model::ModelError::Step(format!("starting the grammar worker: {e}"))
                })?;
            runner.launch_late_masks(batch, sampling, opts, |sampling| {
                let jobs = worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                for (control, start) in jobs {
                    if let Some(mask) = control.mask() {
                        sampling
                            .mask_words_mut(start, mask.len())
                            .copy_from_slice(mask);
                    }
                }
            })
        })
    }

    /// Fills the step's batch and sampling rows: each scheduled sequence's new tokens (the
    /// pending one as a placeholder for the step in flight's sample), positions and slots, and
    /// a sampling row for the sequences that sample.
    fn build_step(&mut self, out: &SchedulerOutput) {
        let bs = self.shared.config.block_size;
        self.batch.clear();
        self.batch.block_size = bs;
        self.sampling.clear();
        self.late_masks.clear();
        self.batch
            .kv_copies
            .extend(out.kv_copies.iter().map(|c| KvCopy {
                src_block: c.src.0,
                dst_block: c.dst.0,
                num_tokens: c.num_tokens as u32,
            }));
        let mut table: Vec<u32> = Vec::new();
        for s in &out.scheduled {
            let seq = self
                .scheduler
                .seq(s.seq_id)
                .expect("scheduled sequences exist");
            table.clear();
            table.extend(
                self.scheduler
                    .kv()
                    .block_table(s.seq_id)
                    .iter()
                    .map(|b| b.0),
            );
            let start = s.num_computed_tokens;
            let end = start + s.num_new_tokens;
            let known = seq.num_tokens();
            let first_token = self.batch.num_tokens();
            // Known tokens, then the drafts being verified (or the pending token's placeholder).
            let drafts = &seq.spec_tokens[..s.num_spec_tokens];
            let tokens = (start..end).map(|p| match p.checked_sub(known) {
                None => seq.tokens[p],
                Some(d) => drafts.get(d).copied().unwrap_or(0),
            });
            let num_rows = if s.sample { 1 + s.num_spec_tokens } else { 0 };
            self.batch.push_seq_rows(tokens, start, &table, num_rows);
            if s.num_spec_tokens > 0 {
                // Row `j` samples the token after draft `j` (row 0: after the last token).
                debug_assert_eq!(end, known + s.num_spec_tokens, "drafts follow known tokens");
                for j in 0..=s.num_spec_tokens {
                    let position = known + j;
                    let banned: &[u32] = if seq.stop_tokens_masked_at(position) {
                        &seq.stop_token_ids
                    } else {
                        &[]
                    };
                    self.sampling.push(
                        &seq.sampling.params,
                        seq.sampling.seed,
                        position as u64,
                        std::iter::empty(),
                        banned,
                    );
                }
                continue;
            }
            if end > known {
                // The token a launched step is sampling: its id comes from that step's row.
                debug_assert_eq!(end, known + 1, "at most one pending token per sequence");
                let row = *self
                    .prev_rows
                    .get(&s.seq_id)
                    .expect("a pending token comes from the step in flight");
                self.batch
                    .set_prev_sampled(first_token + (known - start), row as usize);
            }
            if s.sample {
                let banned: &[u32] = if seq.stop_tokens_masked() {
                    &seq.stop_token_ids
                } else {
                    &[]
                };
                self.sampling.push(
                    &seq.sampling.params,
                    seq.sampling.seed,
                    end as u64,
                    seq.sampling.history().iter().copied(),
                    banned,
                );
                match &seq.control {
                    Some(c) if c.is_stale() => {
                        let start = self.sampling.reserve_mask_last_row(c.num_words());
                        self.late_masks.push((s.seq_id, start));
                    }
                    Some(c) => {
                        if let Some(mask) = c.mask() {
                            self.sampling.restrict_last_row(mask);
                        }
                    }
                    None => {}
                }
            }
        }
    }
}
