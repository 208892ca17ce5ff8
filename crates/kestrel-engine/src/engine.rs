//! The engine thread: sole owner of the model, the KV cache and the scheduler (vLLM v1's
//! `EngineCore`). Its loop: take commands (submit / abort; block on the channel when there is
//! nothing to do) → drop sequences whose stream is gone → `schedule()` → one flat `BatchInput` →
//! `model.forward` (logits only for sequences that reach their last token) → sample → append →
//! emit events → free the blocks of finished sequences at once.
//!
//! A panic or a model error in a step fails every in-flight sequence with
//! [`EngineEvent::Error`], marks the engine unhealthy and ends the thread: nothing waits forever
//! (streams whose sender is gone return `None`).

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kestrel_backend::{Backend, BatchInput, KvDtype};
use kestrel_model::{KvCache, QwenModel};
use rand::Rng;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::handle::{Command, EngineHandle, Shared, Submission};
use crate::metrics::{EngineMetrics, RequestTimes};
use crate::request::{EngineEvent, FinishReason, Usage};
use crate::sampler::{Sampler, SamplerScratch};
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerOutput};
use crate::sequence::{SeqId, Sequence};

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
    /// Most prefill tokens one sequence gets per step (vLLM's `long_prefill_token_threshold`);
    /// 0 is no cap beyond the budget. A small cap keeps a long newcomer from stalling the
    /// running decodes, at the cost of the newcomer's own time to first token.
    pub long_prefill_token_threshold: usize,
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
            long_prefill_token_threshold: 0,
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

/// Starts the engine thread, which owns model, KV cache and scheduler. Returns the handle.
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
    let kv = KvCache::new(
        &backend,
        &model.config,
        c.num_blocks,
        c.block_size,
        c.kv_dtype,
    )?;
    let scheduler = Scheduler::new(SchedulerConfig {
        max_num_seqs: c.max_num_seqs,
        max_num_batched_tokens: c.max_num_batched_tokens,
        block_size: c.block_size,
        num_blocks: c.num_blocks,
        enable_prefix_caching: c.enable_prefix_caching,
        long_prefill_token_threshold: c.long_prefill_token_threshold,
    });
    let (commands, rx) = tokio::sync::mpsc::unbounded_channel();
    let metrics = Arc::new(EngineMetrics::new(&config));
    metrics.set_kv_blocks(c.num_blocks, c.num_blocks);
    let shared = Arc::new(Shared {
        vocab_size: model.config.vocab_size,
        config,
        healthy: AtomicBool::new(true),
        num_queued: AtomicUsize::new(0),
        next_seq_id: AtomicU64::new(0),
        metrics,
    });
    let core = EngineCore {
        backend,
        model,
        kv,
        scheduler,
        clients: HashMap::new(),
        by_request_id: HashMap::new(),
        shared: shared.clone(),
        commands: rx,
        scratch: SamplerScratch::default(),
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

struct EngineCore<B: Backend> {
    backend: B,
    model: QwenModel<B>,
    kv: KvCache<B>,
    scheduler: Scheduler,
    clients: HashMap<SeqId, Client>,
    by_request_id: HashMap<String, Vec<SeqId>>,
    shared: Arc<Shared>,
    commands: UnboundedReceiver<Command>,
    scratch: SamplerScratch,
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
            if self.scheduler.is_idle() {
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
            if self.scheduler.is_idle() {
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
            request,
            events,
            arrival,
        } = s;
        let engine_seed = rand::thread_rng().gen();
        let sampler = match Sampler::new(
            request.sampling.clone(),
            &request.prompt_ids,
            self.shared.vocab_size,
            engine_seed,
        ) {
            Ok(sampler) => sampler,
            Err(e) => {
                self.shared.num_queued.fetch_sub(1, Ordering::AcqRel);
                let _ = events.send(EngineEvent::Error { message: e.message });
                return;
            }
        };
        self.by_request_id
            .entry(request.request_id.clone())
            .or_default()
            .push(seq_id);
        self.scheduler.add(Sequence::new(
            seq_id,
            request,
            sampler,
            self.shared.config.max_model_len,
        ));
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

    /// One engine step.
    fn step(&mut self) -> Result<(), kestrel_model::ModelError> {
        let out = self.scheduler.schedule();
        self.record_schedule(&out);
        if out.scheduled.is_empty() {
            // Cannot happen while the cache holds `max_model_len` tokens (checked at start), but
            // never spin: fail the head of the queue instead.
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
            self.update_gauges();
            return Ok(());
        }
        let batch = self.build_batch(&out);
        self.shared.metrics.record_iteration(batch.input_ids.len());
        let mut logits = self.model.forward(&self.backend, &batch, &mut self.kv)?;

        // Sample, one row per sequence that reached its last token, in batch order.
        let vocab = logits.vocab;
        let mut sampled = Vec::with_capacity(logits.rows);
        for (row, s) in out.scheduled.iter().filter(|s| s.sample).enumerate() {
            let seq = self
                .scheduler
                .seq_mut(s.seq_id)
                .expect("scheduled sequences exist");
            let row = &mut logits.data[row * vocab..(row + 1) * vocab];
            if seq.stop_tokens_masked() {
                // vLLM's min_tokens: stop tokens cannot be sampled yet.
                for &t in &seq.stop_token_ids {
                    row[t as usize] = f32::NEG_INFINITY;
                }
            }
            sampled.push(seq.sampler.sample(row, &mut self.scratch));
        }
        let ids: Vec<u32> = sampled.iter().map(|s| s.token).collect();
        let outcomes = self.scheduler.update_from_output(&out, &ids);

        let now = Instant::now();
        let m = self.shared.metrics.clone();
        let mut logprobs: HashMap<SeqId, _> = out
            .scheduled
            .iter()
            .filter(|s| s.sample)
            .map(|s| s.seq_id)
            .zip(sampled.into_iter().map(|s| s.logprobs))
            .collect();
        for o in outcomes {
            m.generation_tokens.fetch_add(1, Ordering::Relaxed);
            let client = self
                .clients
                .get_mut(&o.seq_id)
                .expect("every sequence has a client");
            client.first_token.get_or_insert(now);
            match client.last_token {
                None => m.time_to_first_token.observe(now - client.arrival),
                Some(t) => m.inter_token_latency.observe(now - t),
            }
            client.last_token = Some(now);
            if o.appended {
                let event = EngineEvent::Token {
                    id: o.token,
                    logprobs: logprobs.remove(&o.seq_id).flatten(),
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
        self.update_gauges();
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

    /// The flat batch of a step: each scheduled sequence's new tokens, positions and slots;
    /// logits only for the sequences that sample.
    fn build_batch(&self, out: &SchedulerOutput) -> BatchInput {
        let bs = self.shared.config.block_size;
        let mut b = BatchInput {
            block_size: bs,
            query_start_loc: vec![0],
            ..Default::default()
        };
        for s in &out.scheduled {
            let seq = self
                .scheduler
                .seq(s.seq_id)
                .expect("scheduled sequences exist");
            // [num_blocks_of_seq]
            let table: Vec<u32> = self
                .scheduler
                .kv()
                .block_table(s.seq_id)
                .iter()
                .map(|b| b.0)
                .collect();
            let start = s.num_computed_tokens;
            for (pos, &tok) in (start..).zip(&seq.tokens[start..start + s.num_new_tokens]) {
                b.input_ids.push(tok);
                b.positions.push(pos as u32);
                b.slot_mapping
                    .push((table[pos / bs] as usize * bs + pos % bs) as u32);
            }
            b.query_start_loc.push(b.input_ids.len() as u32);
            b.seq_lens.push((start + s.num_new_tokens) as u32);
            b.block_tables.push(table);
            if s.sample {
                b.logits_indices.push(b.input_ids.len() as u32 - 1);
            }
        }
        b
    }
}
