//! The batching policies' ordering and budget behaviour, pinned on the scheduler alone (CPU
//! only, no model; a fake model samples a fixed token), in the manner of vLLM's scheduler tests:
//! a burst's first arrival gets its first token after its own prefill, decodes never starve,
//! the prefill budget follows the number of decoding sequences, a burst of prefix-cache hits is
//! admitted one hit per step, arrival order is kept, and the throughput policy keeps the old
//! fill-the-budget behaviour.

use std::collections::HashMap;

use kestrel_engine::batching_policy::{BatchingPolicy, PrefillLimits};
use kestrel_engine::request::EngineRequest;
use kestrel_engine::sampling_state::SequenceSampling;
use kestrel_engine::scheduler::{Scheduler, SchedulerConfig, SchedulerOutput};
use kestrel_engine::sequence::{SeqId, Sequence};
use kestrel_engine::SamplingParams;

const BLOCK: usize = 16;
const MAX_MODEL_LEN: usize = 4096;

/// Knobs of one test scheduler (the engine's defaults unless changed).
#[derive(Clone, Copy)]
struct Knobs {
    policy: BatchingPolicy,
    budget: usize,
    threshold: usize,
    max_partial: usize,
    max_long: usize,
    chunked: bool,
    max_num_seqs: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            policy: BatchingPolicy::Latency,
            budget: 2048,
            threshold: 0,
            max_partial: 1,
            max_long: 1,
            chunked: true,
            max_num_seqs: 256,
        }
    }
}

fn scheduler(k: Knobs) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        max_num_seqs: k.max_num_seqs,
        max_num_batched_tokens: k.budget,
        block_size: BLOCK,
        num_blocks: 4096,
        enable_prefix_caching: true,
        prefill: PrefillLimits::resolve(
            k.policy,
            k.threshold,
            MAX_MODEL_LEN,
            k.budget,
            k.max_partial,
            k.max_long,
            k.chunked,
        ),
        max_num_spec_tokens: 0,
    })
}

/// A sequence whose prompt is `shared` followed by `own` tokens unique to `id`.
fn seq_with_prefix(id: u64, shared: &[u32], own: usize, max_tokens: usize) -> Sequence {
    let mut prompt = shared.to_vec();
    prompt.extend((0..own as u32).map(|t| 1_000_000 + id as u32 * 10_000 + t));
    let sampling = SequenceSampling::new(SamplingParams::greedy(), &prompt, 0);
    let request = EngineRequest {
        request_id: format!("r{id}"),
        prompt_ids: prompt,
        sampling: SamplingParams::greedy(),
        max_tokens,
        min_tokens: 0,
        stop_token_ids: vec![],
        cache_salt: None,
        constraint: Default::default(),
    };
    Sequence::new(SeqId(id), request, sampling, MAX_MODEL_LEN, false)
}

fn seq(id: u64, prompt_len: usize, max_tokens: usize) -> Sequence {
    seq_with_prefix(id, &[], prompt_len, max_tokens)
}

/// Drives a scheduler step by step with a fake model, recording each sequence's first-token
/// step and every step's plan.
#[derive(Default)]
struct Run {
    step: usize,
    first_token: HashMap<SeqId, usize>,
    tokens: HashMap<SeqId, usize>,
    finished: Vec<SeqId>,
}

impl Run {
    fn step(&mut self, s: &mut Scheduler) -> SchedulerOutput {
        self.step += 1;
        let out = s.schedule();
        let sampled: Vec<u32> = out
            .scheduled
            .iter()
            .filter(|x| x.sample)
            .map(|_| 7)
            .collect();
        let mut outcomes = Vec::new();
        s.update_from_output(&out, &sampled, &mut outcomes);
        for o in outcomes {
            self.first_token.entry(o.seq_id).or_insert(self.step);
            *self.tokens.entry(o.seq_id).or_default() += 1;
            if o.finish.is_some() {
                s.finish(o.seq_id);
                self.finished.push(o.seq_id);
            }
        }
        out
    }

    fn until_idle(&mut self, s: &mut Scheduler, budget: usize) -> Vec<SchedulerOutput> {
        let mut plans = Vec::new();
        while !s.is_idle() {
            assert!(self.step < 10_000, "no progress");
            let out = self.step(s);
            assert!(out.num_batched_tokens <= budget, "budget exceeded");
            assert!(
                !out.scheduled.is_empty(),
                "a step with work scheduled nothing"
            );
            plans.push(out);
        }
        plans
    }
}

fn shares(out: &SchedulerOutput) -> Vec<(u64, usize)> {
    out.scheduled
        .iter()
        .map(|s| (s.seq_id.0, s.num_new_tokens))
        .collect()
}

#[test]
fn burst_first_tokens_come_in_arrival_order_after_their_own_prefill() {
    let mut s = scheduler(Knobs::default());
    for id in 0..16 {
        s.add(seq(id, 130, 32));
    }
    let mut run = Run::default();
    let plans = run.until_idle(&mut s, 2048);
    // Step 1 is the first arrival's prefill alone; step k + 1 decodes the k sequences before
    // it, then prefills arrival k.
    assert_eq!(shares(&plans[0]), [(0, 130)]);
    let mut want: Vec<(u64, usize)> = (0..5).map(|id| (id, 1)).collect();
    want.push((5, 130));
    assert_eq!(shares(&plans[5]), want);
    for id in 0..16 {
        assert_eq!(run.first_token[&SeqId(id)], id as usize + 1, "seq {id}");
        assert_eq!(run.tokens[&SeqId(id)], 32);
    }
}

#[test]
fn throughput_policy_prefills_the_whole_burst_in_one_step() {
    let knobs = Knobs {
        policy: BatchingPolicy::Throughput,
        ..Knobs::default()
    };
    let mut s = scheduler(knobs);
    for id in 0..16 {
        s.add(seq(id, 130, 32));
    }
    let mut run = Run::default();
    let plans = run.until_idle(&mut s, 2048);
    // 15 whole prompts (1,950 tokens) and 98 of the 16th fill the first step.
    assert_eq!(plans[0].num_batched_tokens, 2048);
    assert_eq!(plans[0].scheduled.len(), 16);
    for id in 0..15 {
        assert_eq!(run.first_token[&SeqId(id)], 1);
    }
    assert_eq!(run.first_token[&SeqId(15)], 2);
}

#[test]
fn decodes_never_starve_behind_a_long_prompt() {
    let mut s = scheduler(Knobs::default());
    let mut run = Run::default();
    for id in 0..8 {
        s.add(seq(id, 20, 64));
    }
    for _ in 0..8 {
        run.step(&mut s);
    }
    // All 8 decode now; a 3,000-token prompt arrives.
    s.add(seq(100, 3000, 4));
    let threshold = 4096 * 4 / 100;
    let mut chunks = Vec::new();
    while !run.first_token.contains_key(&SeqId(100)) {
        assert!(run.step < 1000, "no progress");
        let alive = (0..8)
            .filter(|&id| !run.finished.contains(&SeqId(id)))
            .count();
        let out = run.step(&mut s);
        // Every running stream gets its token in every step, before any prompt token.
        let decodes = out.scheduled.iter().take_while(|x| x.seq_id.0 < 8).count();
        assert_eq!(decodes, alive);
        assert!(out.scheduled[..decodes]
            .iter()
            .all(|x| x.num_new_tokens == 1));
        chunks.extend(
            out.scheduled
                .iter()
                .filter(|x| x.seq_id.0 == 100)
                .map(|x| x.num_new_tokens),
        );
    }
    // While they decode, the newcomer's chunks are the automatic threshold (163) at most.
    assert_eq!(chunks.len(), 3000usize.div_ceil(threshold));
    assert!(chunks.iter().all(|&c| c <= threshold));
    assert_eq!(chunks.iter().sum::<usize>(), 3000);
}

#[test]
fn prefill_budget_shrinks_as_more_sequences_decode() {
    // Up to 8 prompts per step, so the step's prefill budget is what limits them.
    let knobs = Knobs {
        max_partial: 8,
        max_long: 8,
        ..Knobs::default()
    };
    let threshold = 4096 * 4 / 100;
    for decoders in [0usize, 1, 3, 15] {
        let mut s = scheduler(knobs);
        let mut run = Run::default();
        for id in 0..decoders as u64 {
            s.add(seq(id, 10, 100));
        }
        while (0..decoders as u64).any(|id| !run.first_token.contains_key(&SeqId(id))) {
            run.step(&mut s);
        }
        for id in 0..8 {
            s.add(seq(100 + id, 1000, 4));
        }
        let out = run.step(&mut s);
        let decodes = out.scheduled.iter().filter(|x| x.seq_id.0 < 100).count();
        assert_eq!(decodes, decoders);
        let prefill: usize = out
            .scheduled
            .iter()
            .filter(|x| x.seq_id.0 >= 100)
            .map(|x| x.num_new_tokens)
            .sum();
        let left = 2048 - decoders;
        let want = if decoders == 0 {
            left
        } else {
            (left / (decoders + 1)).max(threshold)
        };
        assert_eq!(prefill, want, "{decoders} decoding");
    }
}

#[test]
fn prefix_hit_burst_is_admitted_one_hit_per_step() {
    let shared: Vec<u32> = (0..1000).map(|t| 500_000 + t).collect();
    let mut s = scheduler(Knobs::default());
    let mut run = Run::default();
    s.add(seq_with_prefix(0, &shared, 16, 8));
    run.until_idle(&mut s, 2048);
    assert_eq!(
        run.first_token[&SeqId(0)],
        1,
        "the cold prompt is one step alone"
    );
    let start = run.step;
    for id in 1..16 {
        s.add(seq_with_prefix(id, &shared, 16, 8));
    }
    let plans = run.until_idle(&mut s, 2048);
    for (k, id) in (1..16u64).enumerate() {
        // Hit `id` is admitted in its own step with the 16 tokens past the shared 1,000 (62
        // cached blocks, then 8 tokens of the cold prompt's 63rd block, copied into its own),
        // and its first token comes from that step.
        let plan = &plans[k];
        assert_eq!(plan.admitted, [(SeqId(id), 1000)]);
        assert_eq!(plan.kv_copies.len(), 1);
        let copy = plan.kv_copies[0];
        assert_eq!(copy.num_tokens, 8);
        assert_eq!(
            copy.src, plans[0].kv_copies[0].src,
            "the cold prompt's block"
        );
        assert_ne!(copy.dst, copy.src);
        let share = plan.scheduled.last().unwrap();
        assert_eq!((share.seq_id, share.num_new_tokens), (SeqId(id), 16));
        assert!(share.sample);
        assert_eq!(run.first_token[&SeqId(id)], start + k + 1);
    }
}

#[test]
fn arrival_order_is_kept_whatever_the_prompt_lengths() {
    let lens = [300, 5, 1200, 40, 90, 700, 1, 2000, 64, 128];
    let mut s = scheduler(Knobs::default());
    for (id, &len) in lens.iter().enumerate() {
        s.add(seq(id as u64, len, 6));
    }
    let mut run = Run::default();
    let plans = run.until_idle(&mut s, 2048);
    for id in 1..lens.len() as u64 {
        assert!(
            run.first_token[&SeqId(id - 1)] < run.first_token[&SeqId(id)],
            "seq {id} got its first token before seq {}",
            id - 1
        );
    }
    // One prefill per step.
    for plan in &plans {
        let prefills = plan
            .scheduled
            .iter()
            .filter(|x| x.num_new_tokens > 1)
            .count();
        assert!(prefills <= 1);
    }
}

#[test]
fn a_short_prompt_may_pass_a_long_one_waiting_for_the_long_slot() {
    let knobs = Knobs {
        max_partial: 2,
        max_long: 1,
        ..Knobs::default()
    };
    let mut s = scheduler(knobs);
    s.add(seq(0, 1000, 4));
    s.add(seq(1, 1000, 4));
    s.add(seq(2, 50, 4));
    let mut run = Run::default();
    let out = run.step(&mut s);
    assert_eq!(shares(&out), [(0, 1000), (2, 50)]);
    let out = run.step(&mut s);
    // Both decode; the second long prompt gets the long slot, capped while they decode.
    assert_eq!(shares(&out), [(0, 1), (2, 1), (1, 163)]);
}

#[test]
fn without_chunked_prefill_a_prompt_is_prefilled_whole() {
    let knobs = Knobs {
        chunked: false,
        budget: 4000,
        ..Knobs::default()
    };
    let mut s = scheduler(knobs);
    s.add(seq(0, 10, 8));
    let mut run = Run::default();
    run.step(&mut s);
    s.add(seq(1, 4000, 4));
    let out = run.step(&mut s);
    // 4,000 tokens do not fit beside the decode: the prompt waits, unsplit.
    assert_eq!(shares(&out), [(0, 1)]);
    let plans = run.until_idle(&mut s, 4000);
    assert!(plans
        .iter()
        .flat_map(|p| &p.scheduled)
        .filter(|x| x.seq_id.0 == 1 && x.num_new_tokens > 1)
        .all(|x| x.num_new_tokens == 4000));
}
