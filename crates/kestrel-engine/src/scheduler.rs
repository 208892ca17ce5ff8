//! The token-budget scheduler of vLLM v1. There is no prefill or decode phase: each sequence
//! has `num_computed_tokens` that catches up with its `num_tokens()`, and each step hands out at
//! most `max_num_batched_tokens` tokens. How they are shared is the batching policy
//! (`batching_policy.rs`): under the latency policy (the default) every decode first, then the
//! prefills of at most `max_num_partial_prefills` sequences, oldest first, within a prefill
//! budget that shrinks as more sequences decode; under the throughput policy running sequences
//! first, oldest first (a decode takes 1, an unfinished prefill what is left of the budget:
//! chunked prefill), then waiting ones in FCFS order (after their prefix-cache hit) while the
//! budget lasts. Prefill chunks and decodes of different sequences share one forward pass. When
//! a running sequence cannot get a block, the newest running sequence not yet scheduled in this
//! step is preempted by recompute (its blocks freed, `num_computed_tokens` back to 0, front of
//! the queue).
//!
//! The output is plain data ([`SchedulerOutput`]); `engine.rs` turns it into a `BatchInput`.
//! As in vLLM, `num_computed_tokens` advances when a step is *scheduled*, and a sampling step
//! leaves a pending token on the sequence until [`Scheduler::update_from_output`] appends it;
//! so the next step can be scheduled while this one runs (async scheduling): a sequence's
//! pending token is then the input of its next decode, read from the previous step's samples.
//!
//! Speculative decoding: a decoding sequence with draft tokens (`Sequence::spec_tokens`, set
//! by the engine before `schedule()`) is scheduled for its last token plus the drafts, which
//! are trimmed to the budget, to `max_num_spec_tokens` per step and to the free blocks (no one
//! is preempted for a draft). [`Scheduler::update_from_output`] then takes one sampled token
//! per verification row, keeps the accepted drafts, rolls `num_computed_tokens` back to the
//! kept tokens and frees the blocks past them.
//!
//! Invariants: a step's tokens ≤ `max_num_batched_tokens`; running sequences ≤ `max_num_seqs`;
//! every sequence is in exactly one of `waiting` / `running` until [`Scheduler::finish`].

use std::collections::{HashMap, VecDeque};

use crate::batching_policy::{BatchingPolicy, PrefillLimits};
use crate::block_pool::BlockId;
use crate::kv_cache_manager::{ComputedBlocks, KvCacheManager};
use crate::request::FinishReason;
use crate::sequence::{SeqId, SeqStatus, Sequence};
use crate::speculative::{num_accepted, SpecDecodingStats};

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    pub enable_prefix_caching: bool,
    /// The batching policy and its prefill limits (automatic values resolved).
    pub prefill: PrefillLimits,
    /// Most draft tokens verified in one step, all sequences together (each takes a logit
    /// row); 0 without speculative decoding.
    pub max_num_spec_tokens: usize,
}

/// One sequence's share of a step: tokens `num_computed_tokens .. num_computed_tokens + num_new_tokens`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledSeq {
    pub seq_id: SeqId,
    /// Tokens with KV before this step.
    pub num_computed_tokens: usize,
    pub num_new_tokens: usize,
    /// The step reaches the sequence's last token, so its logits give the next token.
    pub sample: bool,
    /// The sequence's epoch when scheduled (a preemption since voids the sample).
    pub epoch: u32,
    /// Draft tokens verified (the last `num_spec_tokens` of the new tokens); a sampling
    /// share has `1 + num_spec_tokens` logit rows.
    pub num_spec_tokens: usize,
}

/// What one step computes, plus what changed in the queues.
#[derive(Clone, Debug, Default)]
pub struct SchedulerOutput {
    /// Running sequences first, then newly admitted ones; the order of the flat batch.
    pub scheduled: Vec<ScheduledSeq>,
    pub num_batched_tokens: usize,
    /// Sequences preempted this step (now waiting, KV freed).
    pub preempted: Vec<SeqId>,
    /// Sequences moved from waiting to running this step, with their prefix-cache hit in tokens.
    pub admitted: Vec<(SeqId, usize)>,
    /// KV the step copies before its attention: the partial prefix-cache hits of admitted
    /// sequences (see `kv_cache_manager.rs`).
    pub kv_copies: Vec<BlockCopy>,
}

/// The first `num_tokens` slots of block `src` are copied into block `dst`, in every layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCopy {
    pub src: BlockId,
    pub dst: BlockId,
    pub num_tokens: usize,
}

/// One sampled token after [`Scheduler::update_from_output`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenOutcome {
    pub seq_id: SeqId,
    pub token: u32,
    /// False for a stop token (it ends the sequence and is not part of the output).
    pub appended: bool,
    pub finish: Option<FinishReason>,
    /// The step's sampling row that drew it (for its logprobs).
    pub row: usize,
}

#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    kv: KvCacheManager,
    seqs: HashMap<SeqId, Sequence>,
    waiting: VecDeque<SeqId>,
    /// In admission order: the last is the newest (the one preempted first).
    running: Vec<SeqId>,
    /// Speculative decoding counts since [`Self::take_spec_stats`].
    spec_stats: SpecDecodingStats,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Self {
        let kv = KvCacheManager::new(
            config.num_blocks,
            config.block_size,
            config.enable_prefix_caching,
        );
        Self {
            config,
            kv,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            spec_stats: SpecDecodingStats::default(),
        }
    }

    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    pub fn contains(&self, id: SeqId) -> bool {
        self.seqs.contains_key(&id)
    }

    pub fn seq(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn seq_mut(&mut self, id: SeqId) -> Option<&mut Sequence> {
        self.seqs.get_mut(&id)
    }

    /// Every sequence, mutably, in no particular order.
    pub fn seqs_mut(&mut self) -> impl Iterator<Item = &mut Sequence> + '_ {
        self.seqs.values_mut()
    }

    /// The running sequences, oldest first.
    pub fn running(&self) -> impl Iterator<Item = &Sequence> + '_ {
        self.running.iter().map(|id| &self.seqs[id])
    }

    pub fn seq_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.keys().copied()
    }

    /// The running sequences' ids, oldest first.
    pub fn running_ids(&self) -> &[SeqId] {
        &self.running
    }

    /// Speculative decoding counts of the steps applied since the last call (then cleared).
    pub fn take_spec_stats(&mut self, into: &mut SpecDecodingStats) {
        std::mem::swap(into, &mut self.spec_stats);
        self.spec_stats.clear();
    }

    /// Queues a new sequence at the back (FCFS).
    pub fn add(&mut self, seq: Sequence) {
        assert!(!self.seqs.contains_key(&seq.id), "sequence id reused");
        self.waiting.push_back(seq.id);
        self.seqs.insert(seq.id, seq);
    }

    /// Removes a sequence (finished or aborted, running or waiting) and frees its blocks at once.
    pub fn finish(&mut self, id: SeqId) -> Option<Sequence> {
        let seq = self.seqs.remove(&id)?;
        match seq.status {
            SeqStatus::Running => self.running.retain(|&s| s != id),
            SeqStatus::Waiting => self.waiting.retain(|&s| s != id),
        }
        self.kv.free(id);
        Some(seq)
    }

    /// Preempts the newest running sequence not scheduled in `out` (possibly `for_id`, which is
    /// not scheduled yet): its blocks are freed and it goes to the front of the queue.
    fn preempt_victim(&mut self, out: &mut SchedulerOutput) -> SeqId {
        let pos = self
            .running
            .iter()
            .rposition(|id| !out.scheduled.iter().any(|s| s.seq_id == *id))
            .expect("preempting with nothing unscheduled running");
        let id = self.running.remove(pos);
        self.kv.free(id);
        let seq = self.seqs.get_mut(&id).expect("running sequences exist");
        seq.status = SeqStatus::Waiting;
        seq.num_computed_tokens = 0;
        // The samples of launched steps are void; the sequence resumes from its known tokens.
        seq.num_pending = 0;
        seq.spec_tokens.clear();
        seq.epoch += 1;
        self.waiting.push_front(id);
        out.preempted.push(id);
        id
    }

    /// Allocates `num_new` slots for running sequence `id`, preempting newer unscheduled
    /// sequences while blocks are short. False when `id` itself had to be preempted.
    fn allocate_running(&mut self, out: &mut SchedulerOutput, id: SeqId, num_new: usize) -> bool {
        loop {
            let seq = &self.seqs[&id];
            if self.kv.allocate_slots(
                id,
                &seq.tokens,
                seq.num_computed_tokens,
                num_new,
                &ComputedBlocks::default(),
            ) {
                return true;
            }
            if self.preempt_victim(out) == id {
                return false;
            }
        }
    }

    /// Tokens a running sequence has left to compute (1 for a decode; 0 when its pending token
    /// ends it, so it needs no further step).
    fn num_remaining(&self, id: SeqId) -> usize {
        let seq = &self.seqs[&id];
        if seq.done_by_length_when_pending_land() {
            0
        } else {
            seq.num_tokens_with_pending() + seq.spec_tokens.len() - seq.num_computed_tokens
        }
    }

    /// Whether running sequence `id` decodes next (one token left, drafts aside).
    fn is_decode(&self, id: SeqId) -> bool {
        let seq = &self.seqs[&id];
        !seq.done_by_length_when_pending_land() && seq.is_decoding()
    }

    /// Allocates the decode of running sequence `id`: its last token plus as many of its
    /// drafts as `budget` (≥ 1), `spec_budget` and the free blocks allow (drafts never
    /// preempt anyone); the drafts it cannot take are dropped. Returns the tokens allocated,
    /// or `None` when `id` itself had to be preempted.
    fn allocate_decode(
        &mut self,
        out: &mut SchedulerOutput,
        id: SeqId,
        budget: usize,
        spec_budget: &mut usize,
    ) -> Option<usize> {
        let seq = &self.seqs[&id];
        let num_spec = seq.spec_tokens.len().min(budget - 1).min(*spec_budget);
        if num_spec > 0
            && self.kv.allocate_slots(
                id,
                &seq.tokens,
                seq.num_computed_tokens,
                1 + num_spec,
                &ComputedBlocks::default(),
            )
        {
            let seq = self.seqs.get_mut(&id).expect("running sequences exist");
            seq.spec_tokens.truncate(num_spec);
            *spec_budget -= num_spec;
            return Some(1 + num_spec);
        }
        self.seqs
            .get_mut(&id)
            .expect("running sequences exist")
            .spec_tokens
            .clear();
        self.allocate_running(out, id, 1).then_some(1)
    }

    /// Moves the waiting sequence `waiting[index]` to running with `num_new`
    /// tokens scheduled, if its blocks can be allocated (`computed`: its prefix-cache hit).
    fn admit(
        &mut self,
        out: &mut SchedulerOutput,
        index: usize,
        num_new: usize,
        computed: &ComputedBlocks,
    ) -> bool {
        let id = self.waiting[index];
        let seq = &self.seqs[&id];
        let num_computed = computed.num_tokens;
        if !self
            .kv
            .allocate_slots(id, &seq.tokens, num_computed, num_new, computed)
        {
            return false;
        }
        if let Some(p) = computed.partial {
            out.kv_copies.push(BlockCopy {
                src: p.src,
                dst: self.kv.block_table(id)[computed.blocks.len()],
                num_tokens: p.num_tokens,
            });
        }
        self.waiting.remove(index);
        self.running.push(id);
        let seq = self.seqs.get_mut(&id).expect("waiting sequences exist");
        seq.status = SeqStatus::Running;
        seq.num_computed_tokens = num_computed;
        seq.num_cached_tokens.get_or_insert(num_computed);
        out.admitted.push((id, num_computed));
        self.commit(out, id, num_new);
        true
    }

    /// The prefix-cache hit of waiting sequence `waiting[index]`.
    fn computed_blocks(&mut self, index: usize) -> ComputedBlocks {
        let id = self.waiting[index];
        let seq = &self.seqs[&id];
        self.kv
            .get_computed_blocks(id, &seq.tokens, seq.cache_salt.as_ref())
    }

    /// Records a scheduled share of a step: `num_computed_tokens` advances now, and a
    /// sampling share leaves a pending token.
    fn commit(&mut self, out: &mut SchedulerOutput, id: SeqId, num_new: usize) {
        let seq = self.seqs.get_mut(&id).expect("scheduled sequences exist");
        let num_spec = seq.spec_tokens.len();
        let sample = seq.num_computed_tokens + num_new == seq.num_tokens_with_pending() + num_spec;
        debug_assert!(num_spec == 0 || sample, "drafts are scheduled whole");
        out.scheduled.push(ScheduledSeq {
            seq_id: id,
            num_computed_tokens: seq.num_computed_tokens,
            num_new_tokens: num_new,
            sample,
            epoch: seq.epoch,
            num_spec_tokens: num_spec,
        });
        seq.num_computed_tokens += num_new;
        if sample {
            seq.num_pending += 1;
        }
    }

    /// Plans one step under the configured batching policy.
    pub fn schedule(&mut self) -> SchedulerOutput {
        let mut out = match self.config.prefill.policy {
            BatchingPolicy::Latency => self.schedule_latency(),
            BatchingPolicy::Throughput => self.schedule_throughput(),
        };
        // This step's copies are planned: a block handed out from now on is written by a later
        // step, which runs after this one, so their sources may be freed (and nothing stays
        // pinned when the step finishes the last sequence).
        self.kv.release_pinned();
        out.num_batched_tokens = out.scheduled.iter().map(|s| s.num_new_tokens).sum();
        debug_assert!(out.num_batched_tokens <= self.config.max_num_batched_tokens);
        out
    }

    /// Running sequences oldest first, then waiting ones FCFS, while the budget lasts.
    fn schedule_throughput(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let limits = self.config.prefill;
        let mut budget = self.config.max_num_batched_tokens;
        let mut spec_budget = self.config.max_num_spec_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let num_new = if self.is_decode(id) {
                // Only sequences after `i` (not yet scheduled) or `id` itself are preempted.
                match self.allocate_decode(&mut out, id, budget, &mut spec_budget) {
                    Some(n) => n,
                    None => break,
                }
            } else {
                let num_new = limits.chunk(self.num_remaining(id), budget, false);
                if num_new == 0 {
                    i += 1;
                    continue;
                }
                if !self.allocate_running(&mut out, id, num_new) {
                    break;
                }
                num_new
            };
            self.commit(&mut out, id, num_new);
            budget -= num_new;
            i += 1;
        }
        // Then waiting ones, unless this step had to preempt (no room to grow).
        while out.preempted.is_empty()
            && budget > 0
            && self.running.len() < self.config.max_num_seqs
            && !self.waiting.is_empty()
        {
            let computed = self.computed_blocks(0);
            let seq = &self.seqs[&self.waiting[0]];
            let num_new = limits.chunk(seq.num_tokens() - computed.num_tokens, budget, false);
            if num_new == 0 || !self.admit(&mut out, 0, num_new, &computed) {
                break;
            }
            budget -= num_new;
        }
        out
    }

    /// Decodes first; then the prefills of at most `max_num_partial_prefills` sequences (at most
    /// `max_long_partial_prefills` of them long), running ones before waiting ones, each group
    /// oldest first, within the prefill budget left by the decodes.
    fn schedule_latency(&mut self) -> SchedulerOutput {
        let mut out = SchedulerOutput::default();
        let limits = self.config.prefill;
        let mut budget = self.config.max_num_batched_tokens;

        // Every decode (with its drafts), oldest first.
        let mut spec_budget = self.config.max_num_spec_tokens;
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            if !self.is_decode(id) {
                i += 1;
                continue;
            }
            let Some(num_new) = self.allocate_decode(&mut out, id, budget, &mut spec_budget) else {
                // `id` and everything newer are preempted; older unfinished prefills may still
                // go on below (nothing is admitted this step).
                continue;
            };
            self.commit(&mut out, id, num_new);
            budget -= num_new;
            i += 1;
        }
        let num_decodes = out.scheduled.len();
        let decoding = num_decodes > 0;
        let mut prefill_budget = limits.prefill_budget(budget, num_decodes);
        let mut num_partial = 0;
        let mut num_long = 0;

        // Unfinished prefills of running sequences (chunked or recomputing), oldest first.
        let mut i = 0;
        while i < self.running.len()
            && prefill_budget > 0
            && num_partial < limits.max_num_partial_prefills
        {
            let id = self.running[i];
            let remaining = self.num_remaining(id);
            let long = limits.is_long(remaining);
            if remaining <= 1
                || self.is_decode(id)
                || (long && num_long >= limits.max_long_partial_prefills)
            {
                i += 1;
                continue;
            }
            let num_new = limits.chunk(remaining, prefill_budget, decoding);
            if num_new == 0 {
                i += 1;
                continue;
            }
            if !self.allocate_running(&mut out, id, num_new) {
                // `id` left `running`: `i` is the next sequence now.
                continue;
            }
            self.commit(&mut out, id, num_new);
            prefill_budget -= num_new;
            num_partial += 1;
            num_long += usize::from(long);
            i += 1;
        }

        // Then waiting ones in arrival order (a short prompt may pass a long one that waits
        // for a long-prefill slot), unless this step had to preempt (no room to grow).
        let mut index = 0;
        while out.preempted.is_empty()
            && index < self.waiting.len()
            && prefill_budget > 0
            && num_partial < limits.max_num_partial_prefills
            && self.running.len() < self.config.max_num_seqs
        {
            let computed = self.computed_blocks(index);
            let remaining = self.seqs[&self.waiting[index]].num_tokens() - computed.num_tokens;
            let long = limits.is_long(remaining);
            if long && num_long >= limits.max_long_partial_prefills {
                index += 1;
                continue;
            }
            let num_new = limits.chunk(remaining, prefill_budget, decoding);
            if num_new == 0 || !self.admit(&mut out, index, num_new, &computed) {
                break;
            }
            prefill_budget -= num_new;
            num_partial += 1;
            num_long += usize::from(long);
        }
        out
    }

    /// Applies a finished step: `sampled` (one token per sampling row: `1 + num_spec_tokens`
    /// per `sample` entry of `out.scheduled`, in order) are appended, the first replacing its
    /// sequence's pending token, into `outcomes`. A verification keeps its accepted drafts
    /// and the token after them, in order, until a token ends the sequence (a stop token,
    /// `max_tokens`, the model length); the KV of the rest is dropped. Finished sequences stay
    /// until [`Scheduler::finish`].
    pub fn update_from_output(
        &mut self,
        out: &SchedulerOutput,
        sampled: &[u32],
        outcomes: &mut Vec<TokenOutcome>,
    ) {
        outcomes.clear();
        let mut row = 0;
        for s in out.scheduled.iter().filter(|s| s.sample) {
            let rows = row..row + 1 + s.num_spec_tokens;
            row = rows.end;
            let sampled = &sampled[rows.clone()];
            let Some(seq) = self.seqs.get_mut(&s.seq_id) else {
                // Finished or aborted since it was scheduled: the sample is void.
                continue;
            };
            if seq.epoch != s.epoch {
                // Preempted since it was scheduled: the sample is void.
                continue;
            }
            seq.num_pending -= 1;
            let drafts = std::mem::take(&mut seq.spec_tokens);
            debug_assert_eq!(
                drafts.len(),
                s.num_spec_tokens,
                "drafts kept until verified"
            );
            let accepted = num_accepted(&drafts, sampled);
            for (j, &token) in sampled[..=accepted].iter().enumerate() {
                let (appended, finish) = seq.append_sampled(token);
                outcomes.push(TokenOutcome {
                    seq_id: s.seq_id,
                    token,
                    appended,
                    finish,
                    row: rows.start + j,
                });
                if finish.is_some() {
                    break;
                }
            }
            if !drafts.is_empty() {
                // KV is valid up to the last kept token's predecessor; the rejected drafts'
                // positions are recomputed (overwritten) when the sequence gets there.
                seq.num_computed_tokens = seq.num_computed_tokens.min(seq.num_tokens() - 1);
                seq.draft.observe(drafts.len(), accepted);
                self.spec_stats.observe(drafts.len(), accepted);
                let num_tokens = seq.num_tokens();
                // Reuse the buffer for the next drafts.
                seq.spec_tokens = drafts;
                seq.spec_tokens.clear();
                self.kv.truncate(s.seq_id, num_tokens);
            }
        }
        debug_assert_eq!(row, sampled.len(), "one sampled token per sampling row");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::EngineRequest;
    use crate::sampling_state::SequenceSampling;
    use kestrel_backend::SamplingParams;
    use proptest::prelude::*;

    fn seq(id: u64, prompt_len: usize, max_tokens: usize, stop: Vec<u32>) -> Sequence {
        let prompt: Vec<u32> = (0..prompt_len as u32)
            .map(|t| t % 7 + id as u32 % 3)
            .collect();
        let sampling = SequenceSampling::new(SamplingParams::greedy(), &prompt, 0);
        let req = EngineRequest {
            request_id: format!("r{id}"),
            prompt_ids: prompt,
            sampling: SamplingParams::greedy(),
            max_tokens,
            min_tokens: 0,
            stop_token_ids: stop,
            cache_salt: None,
            constraint: Default::default(),
        };
        Sequence::new(SeqId(id), req, sampling, 1 << 20, false)
    }

    fn config(max_num_seqs: usize, budget: usize, num_blocks: usize) -> SchedulerConfig {
        SchedulerConfig {
            max_num_seqs,
            max_num_batched_tokens: budget,
            block_size: 4,
            num_blocks,
            enable_prefix_caching: true,
            prefill: limits(BatchingPolicy::Throughput, 0),
            max_num_spec_tokens: 0,
        }
    }

    fn limits(policy: BatchingPolicy, threshold: usize) -> PrefillLimits {
        PrefillLimits::resolve(policy, threshold, 64, 64, 1, 1, true)
    }

    /// Runs one step with a fake model that always samples `token`; returns finished ids.
    fn step(s: &mut Scheduler, token: u32) -> (SchedulerOutput, Vec<SeqId>) {
        let out = s.schedule();
        let sampled: Vec<u32> = out
            .scheduled
            .iter()
            .filter(|x| x.sample)
            .flat_map(|x| std::iter::repeat_n(token, 1 + x.num_spec_tokens))
            .collect();
        let mut done = Vec::new();
        let mut outcomes = Vec::new();
        s.update_from_output(&out, &sampled, &mut outcomes);
        for o in outcomes {
            if o.finish.is_some() {
                s.finish(o.seq_id);
                done.push(o.seq_id);
            }
        }
        (out, done)
    }

    /// Gives every decoding sequence `drafts` (as the engine does before `schedule()`).
    fn propose(s: &mut Scheduler, drafts: &[u32]) {
        for id in s.running_ids().to_vec() {
            let seq = s.seq_mut(id).unwrap();
            if seq.num_pending == 0 && seq.is_decoding() {
                seq.spec_tokens = drafts.to_vec();
            }
        }
    }

    #[test]
    fn drafts_are_verified_rolled_back_and_trimmed_to_the_budget() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_num_spec_tokens: 4,
            ..config(8, 64, 64)
        });
        s.add(seq(0, 8, 20, vec![]));
        s.add(seq(1, 8, 20, vec![]));
        step(&mut s, 9); // prefills; both sampled 9: 9 tokens, 8 computed
                         // The model keeps sampling 9: drafts [9, 9, 4, 9] keep two, then 9 replaces the 4.
        propose(&mut s, &[9, 9, 4, 9]);
        let (out, _) = step(&mut s, 9);
        // Four drafts per step in all: seq 0 takes them, seq 1 decodes plainly.
        assert_eq!(
            out.scheduled
                .iter()
                .map(|x| (x.num_new_tokens, x.num_spec_tokens))
                .collect::<Vec<_>>(),
            [(5, 4), (1, 0)]
        );
        let a = s.seq(SeqId(0)).unwrap();
        assert_eq!(a.output(), [9, 9, 9, 9]);
        assert_eq!(a.num_computed_tokens, a.num_tokens() - 1);
        assert!(a.spec_tokens.is_empty());
        // 12 tokens: 3 blocks of 4 hold them; the block of the last draft was freed.
        assert_eq!(s.kv().block_table(SeqId(0)).len(), 3);
        s.kv().pool().check_invariants();
        assert_eq!(s.seq(SeqId(1)).unwrap().output(), [9, 9]);
        let mut stats = SpecDecodingStats::default();
        s.take_spec_stats(&mut stats);
        assert_eq!(
            (
                stats.num_drafts,
                stats.num_draft_tokens,
                stats.num_accepted_tokens
            ),
            (1, 4, 2)
        );
        assert_eq!(stats.num_accepted_tokens_per_pos, [1, 1, 0, 0]);
        // A budget of 2 leaves room for one draft.
        let mut s = Scheduler::new(config(8, 2, 64));
        s.config.max_num_spec_tokens = 8;
        s.add(seq(0, 2, 20, vec![]));
        step(&mut s, 9);
        propose(&mut s, &[9, 9, 9]);
        let (out, _) = step(&mut s, 9);
        assert_eq!(
            (
                out.scheduled[0].num_new_tokens,
                out.scheduled[0].num_spec_tokens
            ),
            (2, 1)
        );
        assert_eq!(s.seq(SeqId(0)).unwrap().output(), [9, 9, 9]);
    }

    #[test]
    fn a_stop_token_inside_accepted_drafts_ends_the_run() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_num_spec_tokens: 8,
            ..config(8, 64, 64)
        });
        s.add(seq(0, 5, 20, vec![7]));
        step(&mut s, 3);
        propose(&mut s, &[3, 7, 3]);
        let out = s.schedule();
        // Rows sample 3, 7 (the stop token, which the draft guessed), 3, 3.
        let mut outcomes = Vec::new();
        s.update_from_output(&out, &[3, 7, 3, 3], &mut outcomes);
        assert_eq!(
            outcomes
                .iter()
                .map(|o| (o.token, o.appended, o.row))
                .collect::<Vec<_>>(),
            [(3, true, 0), (7, false, 1)]
        );
        assert_eq!(
            outcomes[1].finish,
            Some(FinishReason::Stop { token: Some(7) })
        );
        assert_eq!(s.seq(SeqId(0)).unwrap().output(), [3, 3]);
        // `max_tokens` (3) inside the run: the second accepted token ends it.
        let mut s = Scheduler::new(SchedulerConfig {
            max_num_spec_tokens: 8,
            ..config(8, 64, 64)
        });
        s.add(seq(1, 5, 3, vec![]));
        step(&mut s, 3);
        propose(&mut s, &[3, 3, 3, 3]);
        let (_, done) = step(&mut s, 3);
        assert_eq!(done, [SeqId(1)]);
        assert_eq!(s.kv().num_free_blocks(), 64);
    }

    #[test]
    fn chunked_prefill_then_decode_in_one_batch() {
        let mut s = Scheduler::new(config(8, 10, 64));
        s.add(seq(0, 3, 5, vec![]));
        s.add(seq(1, 25, 5, vec![]));
        let (out, _) = step(&mut s, 9);
        // seq 0: whole prompt (3), seq 1: a 7-token chunk.
        assert_eq!(
            out.scheduled
                .iter()
                .map(|x| (x.num_new_tokens, x.sample))
                .collect::<Vec<_>>(),
            [(3, true), (7, false)]
        );
        let (out, _) = step(&mut s, 9);
        // seq 0 decodes 1 token, seq 1 continues its prefill with the other 9.
        assert_eq!(
            out.scheduled
                .iter()
                .map(|x| x.num_new_tokens)
                .collect::<Vec<_>>(),
            [1, 9]
        );
        assert_eq!(s.seq(SeqId(1)).unwrap().num_computed_tokens, 16);
    }

    #[test]
    fn long_prefill_is_capped_per_step() {
        let mut s = Scheduler::new(SchedulerConfig {
            prefill: limits(BatchingPolicy::Throughput, 6),
            ..config(8, 64, 64)
        });
        s.add(seq(0, 3, 5, vec![]));
        s.add(seq(1, 25, 5, vec![]));
        let (out, _) = step(&mut s, 9);
        assert_eq!(
            out.scheduled
                .iter()
                .map(|x| x.num_new_tokens)
                .collect::<Vec<_>>(),
            [3, 6]
        );
        let (out, _) = step(&mut s, 9);
        assert_eq!(
            out.scheduled
                .iter()
                .map(|x| x.num_new_tokens)
                .collect::<Vec<_>>(),
            [1, 6]
        );
    }

    #[test]
    fn preempts_newest_when_blocks_run_out() {
        // 4 blocks of 4 tokens; two sequences of 7 prompt tokens need 2 blocks each, then a third.
        let mut s = Scheduler::new(config(8, 64, 4));
        s.add(seq(0, 7, 10, vec![]));
        s.add(seq(1, 7, 10, vec![]));
        step(&mut s, 1); // both prefilled, 1 token each
        step(&mut s, 1); // token 8 computed: 2 full blocks each
        let (out, _) = step(&mut s, 1); // both need a third block: seq 1 is preempted
        assert_eq!(out.preempted, vec![SeqId(1)]);
        assert_eq!(out.scheduled.len(), 1);
        assert_eq!(s.num_waiting(), 1);
        assert_eq!(s.seq(SeqId(1)).unwrap().num_computed_tokens, 0);
    }

    #[test]
    fn stop_token_finishes_without_appending() {
        let mut s = Scheduler::new(config(8, 64, 64));
        s.add(seq(0, 5, 10, vec![42]));
        let (_, done) = step(&mut s, 42);
        assert_eq!(done, vec![SeqId(0)]);
        assert!(s.is_idle());
        assert_eq!(s.kv().num_free_blocks(), 64);
    }

    #[derive(Clone, Debug)]
    struct Req {
        prompt_len: usize,
        max_tokens: usize,
        arrive_step: usize,
        abort_step: Option<usize>,
    }

    fn req() -> impl Strategy<Value = Req> {
        (
            1usize..40,
            1usize..12,
            0usize..10,
            proptest::option::weighted(0.2, 0usize..30),
        )
            .prop_map(|(prompt_len, max_tokens, arrive_step, abort_step)| Req {
                prompt_len,
                max_tokens,
                arrive_step,
                abort_step,
            })
    }

    proptest! {
        /// The budget and `max_num_seqs` are never exceeded, blocks are never lost, and every
        /// admitted request finishes or is aborted.
        #[test]
        fn budget_respected_and_everything_finishes(
            reqs in proptest::collection::vec(req(), 1..12),
            max_num_seqs in 1usize..5,
            budget in 1usize..48,
            extra_blocks in 0usize..20,
            caching in any::<bool>(),
            threshold in 0usize..8,
            latency in any::<bool>(),
            max_partial in 1usize..4,
            max_long in 1usize..4,
            chunked in proptest::bool::weighted(0.8),
            num_drafts in 0usize..5,
            spec_budget in 0usize..12,
        ) {
            // The cache must hold the longest sequence (the engine checks this at start), and
            // without chunked prefill so must the budget.
            let longest = 40 + 12usize;
            let budget = if chunked { budget } else { budget.max(longest) };
            let num_blocks = longest.div_ceil(4) + extra_blocks;
            let policy = if latency { BatchingPolicy::Latency } else { BatchingPolicy::Throughput };
            let mut s = Scheduler::new(SchedulerConfig {
                enable_prefix_caching: caching,
                prefill: PrefillLimits::resolve(
                    policy,
                    threshold,
                    longest,
                    budget,
                    max_partial,
                    max_long.min(max_partial),
                    chunked,
                ),
                max_num_spec_tokens: spec_budget,
                ..config(max_num_seqs, budget, num_blocks)
            });
            // Drafts the fake model (always 5) accepts in part: 5, 5, 6, 5.
            let drafts = &[5, 5, 6, 5][..num_drafts];
            let mut finished = 0;
            let mut aborted = 0;
            let mut step_no = 0;
            while finished + aborted < reqs.len() {
                prop_assert!(step_no < 5000, "no progress");
                for (i, r) in reqs.iter().enumerate() {
                    if r.arrive_step == step_no {
                        s.add(seq(i as u64, r.prompt_len, r.max_tokens, vec![]));
                    }
                    if r.abort_step == Some(step_no) && s.finish(SeqId(i as u64)).is_some() {
                        aborted += 1;
                    }
                }
                propose(&mut s, drafts);
                let (out, done) = step(&mut s, 5);
                prop_assert!(
                    out.scheduled.iter().map(|x| x.num_spec_tokens).sum::<usize>() <= spec_budget
                );
                prop_assert!(out.num_batched_tokens <= budget);
                prop_assert_eq!(out.num_batched_tokens, out.scheduled.iter().map(|x| x.num_new_tokens).sum::<usize>());
                prop_assert!(out.scheduled.len() <= max_num_seqs);
                prop_assert!(s.num_running() <= max_num_seqs);
                if !s.is_idle() && step_no > 10 {
                    prop_assert!(!out.scheduled.is_empty(), "a step with work scheduled nothing");
                }
                finished += done.len();
                s.kv().pool().check_invariants();
                step_no += 1;
            }
            prop_assert!(s.is_idle());
            prop_assert_eq!(s.kv().num_free_blocks(), num_blocks);
        }
    }
}
