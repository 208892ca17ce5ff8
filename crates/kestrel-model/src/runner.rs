//! The model runner (vLLM's `ModelRunner`): the owner of everything a step touches on the
//! device (the model, its workspace, the KV cache, the batch and sampling buffers), and the
//! one place that turns a host batch into sampled ids.
//!
//! A step is [`ModelRunner::launch`] (validate and upload the batch and sampling parameters,
//! then one [`Backend::run_step`] running the forward and the sampling) and
//! [`ModelRunner::wait`] (the sampled ids back on the host); [`ModelRunner::launch_late_masks`]
//! splits the forward from the sampling so that a grammar's masks are computed meanwhile. Up
//! to two steps may be in flight:
//! the caller may launch step N+1, whose placeholder input ids are step N's sampled ids, before
//! it waits for step N; each in-flight step has its own sampling buffers.

use std::collections::VecDeque;

use kestrel_backend::{
    Backend, BatchInput, BatchLimits, KvDtype, SampleOutput, SamplingBatch, StepOptions,
};

use crate::decoder::DecoderModel;
use crate::error::{ModelError, Result};
use crate::kv_cache::KvCache;
use crate::workspace::Workspace;

/// The sizes a runner is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunnerConfig {
    /// Most tokens in one step (the token budget).
    pub max_num_tokens: usize,
    /// Most sequences in one step.
    pub max_num_seqs: usize,
    /// Most logit rows in one step.
    pub max_num_logits: usize,
    pub num_blocks: usize,
    pub block_size: usize,
    /// Most blocks one sequence holds (`max_model_len / block_size`, rounded up).
    pub max_blocks_per_seq: usize,
    pub kv_dtype: KvDtype,
}

impl RunnerConfig {
    /// A runner for steps of up to `max_tokens` tokens (every one of them may want logits)
    /// over a cache of `num_blocks` 16-token blocks: tests and one-off runs.
    pub fn sized(max_tokens: usize, num_blocks: usize, kv_dtype: KvDtype) -> Self {
        Self {
            max_num_tokens: max_tokens,
            max_num_seqs: max_tokens,
            max_num_logits: max_tokens,
            num_blocks,
            block_size: 16,
            max_blocks_per_seq: num_blocks,
            kv_dtype,
        }
    }
}

pub struct ModelRunner<B: Backend> {
    backend: B,
    model: DecoderModel<B>,
    ws: Workspace<B>,
    kv: KvCache<B>,
    batch: B::Batch,
    /// Two sets, used by alternate steps.
    sampling: [B::Sampling; 2],
    /// Sampling set of the next step to launch.
    next: usize,
    /// Sampling sets of the launched steps not yet waited for, oldest first.
    in_flight: VecDeque<usize>,
    /// Logit rows of the last launched step (what its successor's placeholders may read).
    prev_rows: usize,
    config: RunnerConfig,
}

impl<B: Backend> ModelRunner<B> {
    pub fn new(backend: B, model: DecoderModel<B>, config: RunnerConfig) -> Result<Self> {
        let c = &model.config;
        let ws = Workspace::new(&backend, c, config.max_num_tokens, config.max_num_logits)?;
        let kv = KvCache::new(
            &backend,
            c,
            config.num_blocks,
            config.block_size,
            config.kv_dtype,
        )?;
        let batch = backend.alloc_batch(BatchLimits {
            max_tokens: config.max_num_tokens,
            max_seqs: config.max_num_seqs,
            max_blocks: config.max_num_seqs * config.max_blocks_per_seq,
        })?;
        let sampling = [
            backend.alloc_sampling(config.max_num_logits, c.vocab_size)?,
            backend.alloc_sampling(config.max_num_logits, c.vocab_size)?,
        ];
        Ok(Self {
            backend,
            model,
            ws,
            kv,
            batch,
            sampling,
            next: 0,
            in_flight: VecDeque::new(),
            prev_rows: 0,
            config,
        })
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn model(&self) -> &DecoderModel<B> {
        &self.model
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    pub fn num_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Checks and uploads a step, then runs (or enqueues) its forward and sampling.
    pub fn launch(
        &mut self,
        batch: &BatchInput,
        sampling: &SamplingBatch,
        opts: StepOptions,
    ) -> Result<()> {
        self.check_step(batch, sampling.num_rows())?;
        let b = &self.backend;
        let cur = self.next;
        b.upload_batch(batch, &mut self.batch)?;
        b.upload_sampling(sampling, &mut self.sampling[cur])?;
        let has_placeholders = !batch.prev_sampled.is_empty();
        let Self {
            model,
            ws,
            kv,
            batch: dev_batch,
            sampling: sets,
            ..
        } = self;
        let [s0, s1] = sets;
        let (cur_set, prev_set) = if cur == 0 { (s0, &*s1) } else { (s1, &*s0) };
        b.run_step(opts, || -> Result<()> {
            if has_placeholders {
                b.resolve_placeholders(dev_batch, prev_set)?;
            }
            model.forward(b, ws, dev_batch, kv)?;
            b.sample(&ws.logits, cur_set)?;
            Ok(())
        })?;
        self.finish_launch(cur, sampling.num_rows());
        Ok(())
    }

    /// [`Self::launch`] for a step whose allowed-token masks are computed while its forward
    /// runs: the forward is run (or enqueued) first, then `late` completes `sampling` (it
    /// writes the masks reserved with [`SamplingBatch::reserve_mask_last_row`]; on the CPU it
    /// runs once the forward is done, on a device while the device computes it), then the
    /// sampling parameters are uploaded and the sampling runs (or is enqueued) after the
    /// forward.
    pub fn launch_late_masks(
        &mut self,
        batch: &BatchInput,
        sampling: &mut SamplingBatch,
        opts: StepOptions,
        late: impl FnOnce(&mut SamplingBatch),
    ) -> Result<()> {
        self.check_step(batch, sampling.num_rows())?;
        let b = &self.backend;
        let cur = self.next;
        b.upload_batch(batch, &mut self.batch)?;
        let has_placeholders = !batch.prev_sampled.is_empty();
        {
            let Self {
                model,
                ws,
                kv,
                batch: dev_batch,
                sampling: sets,
                ..
            } = self;
            let prev_set = &sets[1 - cur];
            b.run_step(opts, || -> Result<()> {
                if has_placeholders {
                    b.resolve_placeholders(dev_batch, prev_set)?;
                }
                model.forward(b, ws, dev_batch, kv)
            })?;
        }
        late(sampling);
        b.upload_sampling(sampling, &mut self.sampling[cur])?;
        let (ws, set) = (&self.ws, &mut self.sampling[cur]);
        let eager = StepOptions {
            graph_tokens: None,
            ..opts
        };
        b.run_step(eager, || b.sample(&ws.logits, set))?;
        self.finish_launch(cur, sampling.num_rows());
        Ok(())
    }

    /// The checks before a launch; a step's sampling rows must match its logit rows.
    fn check_step(&self, batch: &BatchInput, sampling_rows: usize) -> Result<()> {
        if self.in_flight.len() == 2 {
            return Err(ModelError::Step(
                "two steps are in flight: wait for the oldest first".into(),
            ));
        }
        let vocab = self.model.config.vocab_size;
        let prev_rows = if batch.prev_sampled.is_empty() {
            0
        } else if self.in_flight.is_empty() && self.prev_rows == 0 {
            return Err(ModelError::Step(
                "placeholder ids without a previous step".into(),
            ));
        } else {
            self.prev_rows
        };
        batch.validate(self.config.num_blocks, vocab, prev_rows)?;
        if batch.num_logits() != sampling_rows {
            return Err(ModelError::Step(format!(
                "{} logit rows but {} sampling rows",
                batch.num_logits(),
                sampling_rows
            )));
        }
        Ok(())
    }

    fn finish_launch(&mut self, set: usize, rows: usize) {
        self.in_flight.push_back(set);
        self.next = 1 - set;
        self.prev_rows = rows;
    }

    /// Waits for the oldest launched step and copies its sampled ids (and logprobs) to `out`.
    pub fn wait(&mut self, out: &mut SampleOutput) -> Result<()> {
        let set = self
            .in_flight
            .pop_front()
            .ok_or_else(|| ModelError::Step("no step in flight".into()))?;
        self.backend.read_sampled(&self.sampling[set], out)?;
        Ok(())
    }

    /// [`Self::launch`] then [`Self::wait`].
    pub fn execute(
        &mut self,
        batch: &BatchInput,
        sampling: &SamplingBatch,
        opts: StepOptions,
        out: &mut SampleOutput,
    ) -> Result<()> {
        self.launch(batch, sampling, opts)?;
        self.wait(out)
    }

    /// Runs a step's forward without sampling and copies its logits (`[num_logits, vocab]`,
    /// row-major) to `out`: for tests and debugging; serving never reads logits on the host.
    pub fn logits(
        &mut self,
        batch: &BatchInput,
        opts: StepOptions,
        out: &mut Vec<f32>,
    ) -> Result<(usize, usize)> {
        if !self.in_flight.is_empty() {
            return Err(ModelError::Step("logits() needs no step in flight".into()));
        }
        batch.validate(self.config.num_blocks, self.model.config.vocab_size, 0)?;
        let b = &self.backend;
        b.upload_batch(batch, &mut self.batch)?;
        let Self {
            model,
            ws,
            kv,
            batch: dev_batch,
            ..
        } = self;
        b.run_step(opts, || model.forward(b, ws, dev_batch, kv))?;
        self.prev_rows = 0;
        Ok(b.to_host(&self.ws.logits, out)?)
    }
}
