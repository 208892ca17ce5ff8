//! Engine metrics: gauges, counters and histograms kept in atomics, written by the engine
//! thread where the events happen and read by anyone through
//! [`crate::handle::EngineHandle::metrics`]. [`EngineMetrics::families`] exposes them under
//! vLLM v1's names, types and labels (`vllm/v1/metrics/loggers.py`, `PrometheusStatLogger`),
//! so the routers and autoscalers that read vLLM (the Gateway API Inference Extension's and
//! llm-d's endpoint pickers, vLLM's production-stack router, KEDA) read Kestrel unchanged;
//! Kestrel's own series are named `kestrel_*`.
//!
//! Per-request timings follow vLLM's `RequestStateStats`: queued = scheduled − arrival,
//! prefill = first token − scheduled, decode = last token − first token, inference = last
//! token − scheduled, e2e = finish − arrival.

mod exposition;
mod histogram;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

pub use histogram::{buckets_1_2_5, Histogram};

use crate::engine::EngineConfig;
use crate::request::FinishReason;
use crate::speculative::SpecDecodingStats;

// Bucket bounds as vLLM's `PrometheusStatLogger`.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
const ITERATION_TOKEN_BUCKETS: &[f64] = &[
    1.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0,
];

/// The KV cache's geometry, for `vllm:cache_config_info` (routers size prefix-aware routing
/// from `block_size` and `num_gpu_blocks`).
#[derive(Clone, Debug, Default)]
pub struct CacheInfo {
    pub block_size: usize,
    pub num_blocks: usize,
    pub enable_prefix_caching: bool,
    /// vLLM's `cache_dtype` spelling (`auto`, `fp16`, `fp32`).
    pub cache_dtype: String,
}

/// When one request reached each phase (vLLM's `RequestStateStats`).
#[derive(Clone, Copy, Debug)]
pub struct RequestTimes {
    pub arrival: Instant,
    /// First scheduled (left the waiting queue).
    pub scheduled: Option<Instant>,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
}

/// All engine metrics. Gauges are set by the engine after every step.
#[derive(Debug)]
pub struct EngineMetrics {
    pub cache_info: CacheInfo,
    pub num_requests_running: AtomicU64,
    pub num_requests_waiting: AtomicU64,
    /// Fraction of KV blocks in use, `f64` bits (0.0 ..= 1.0).
    kv_cache_usage_bits: AtomicU64,
    pub num_kv_blocks_total: AtomicU64,
    pub num_kv_blocks_free: AtomicU64,
    /// Prompt tokens looked up in the prefix cache, and those found (vLLM counts tokens).
    pub prefix_cache_queries: AtomicU64,
    pub prefix_cache_hits: AtomicU64,
    pub num_preemptions: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    pub finished_abort: AtomicU64,
    /// Sequences failed by an engine error.
    pub finished_error: AtomicU64,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub request_queue_time: Histogram,
    pub request_prefill_time: Histogram,
    pub request_decode_time: Histogram,
    pub request_inference_time: Histogram,
    pub request_prompt_tokens: Histogram,
    pub request_generation_tokens: Histogram,
    /// Tokens computed per engine step (prefill chunks + decode tokens).
    pub iteration_tokens: Histogram,
    /// Speculative decoding counters (vLLM's `SpecDecodingProm`), exposed only when
    /// speculative decoding is configured.
    pub spec_decode: Option<SpecDecodeMetrics>,
}

/// vLLM's `spec_decode_*` counters.
#[derive(Debug)]
pub struct SpecDecodeMetrics {
    /// Verifications (a sequence's drafts of one step).
    pub num_drafts: AtomicU64,
    pub num_draft_tokens: AtomicU64,
    pub num_accepted_tokens: AtomicU64,
    /// `[num_speculative_tokens]` accepted drafts at each draft position.
    pub num_accepted_tokens_per_pos: Vec<AtomicU64>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self::new(&EngineConfig::default())
    }
}

impl EngineMetrics {
    pub fn new(config: &EngineConfig) -> Self {
        let token_buckets = buckets_1_2_5(config.max_model_len);
        Self {
            cache_info: CacheInfo {
                block_size: config.block_size,
                num_blocks: config.num_blocks,
                enable_prefix_caching: config.enable_prefix_caching,
                cache_dtype: match config.kv_dtype {
                    kestrel_backend::KvDtype::F16 => "fp16",
                    kestrel_backend::KvDtype::F32 => "fp32",
                }
                .into(),
            },
            num_requests_running: AtomicU64::new(0),
            num_requests_waiting: AtomicU64::new(0),
            kv_cache_usage_bits: AtomicU64::new(0f64.to_bits()),
            num_kv_blocks_total: AtomicU64::new(0),
            num_kv_blocks_free: AtomicU64::new(0),
            prefix_cache_queries: AtomicU64::new(0),
            prefix_cache_hits: AtomicU64::new(0),
            num_preemptions: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            finished_stop: AtomicU64::new(0),
            finished_length: AtomicU64::new(0),
            finished_abort: AtomicU64::new(0),
            finished_error: AtomicU64::new(0),
            time_to_first_token: Histogram::new(TTFT_BUCKETS),
            inter_token_latency: Histogram::new(ITL_BUCKETS),
            e2e_request_latency: Histogram::new(REQUEST_BUCKETS),
            request_queue_time: Histogram::new(REQUEST_BUCKETS),
            request_prefill_time: Histogram::new(REQUEST_BUCKETS),
            request_decode_time: Histogram::new(REQUEST_BUCKETS),
            request_inference_time: Histogram::new(REQUEST_BUCKETS),
            request_prompt_tokens: Histogram::new(&token_buckets),
            request_generation_tokens: Histogram::new(&token_buckets),
            iteration_tokens: Histogram::new(ITERATION_TOKEN_BUCKETS),
            spec_decode: config.speculative.as_ref().map(|s| SpecDecodeMetrics {
                num_drafts: AtomicU64::new(0),
                num_draft_tokens: AtomicU64::new(0),
                num_accepted_tokens: AtomicU64::new(0),
                num_accepted_tokens_per_pos: (0..s.num_speculative_tokens)
                    .map(|_| AtomicU64::new(0))
                    .collect(),
            }),
        }
    }

    /// Adds one step's speculative decoding counts.
    pub(crate) fn record_spec_decoding(&self, stats: &SpecDecodingStats) {
        let Some(m) = &self.spec_decode else {
            return;
        };
        m.num_drafts.fetch_add(stats.num_drafts, Relaxed);
        m.num_draft_tokens
            .fetch_add(stats.num_draft_tokens, Relaxed);
        m.num_accepted_tokens
            .fetch_add(stats.num_accepted_tokens, Relaxed);
        for (c, &n) in m
            .num_accepted_tokens_per_pos
            .iter()
            .zip(&stats.num_accepted_tokens_per_pos)
        {
            c.fetch_add(n, Relaxed);
        }
    }

    /// Fraction of KV cache blocks in use (0.0 ..= 1.0).
    pub fn kv_cache_usage(&self) -> f64 {
        f64::from_bits(self.kv_cache_usage_bits.load(Relaxed))
    }

    pub(crate) fn set_kv_blocks(&self, total: usize, free: usize) {
        self.num_kv_blocks_total.store(total as u64, Relaxed);
        self.num_kv_blocks_free.store(free as u64, Relaxed);
        let usage = if total == 0 {
            0.0
        } else {
            (1.0 - free as f64 / total as f64).clamp(0.0, 1.0)
        };
        self.kv_cache_usage_bits.store(usage.to_bits(), Relaxed);
    }

    pub(crate) fn count_finished(&self, reason: FinishReason) {
        match reason {
            FinishReason::Stop { .. } => &self.finished_stop,
            FinishReason::Length => &self.finished_length,
            FinishReason::Abort => &self.finished_abort,
        }
        .fetch_add(1, Relaxed);
    }

    /// Tokens computed by one engine step (vLLM's `iteration_tokens_total`).
    pub(crate) fn record_iteration(&self, num_tokens: usize) {
        self.iteration_tokens.observe_value(num_tokens as f64);
    }

    /// Everything recorded when a sequence ends: its finish reason, token counts and phase
    /// times. A sequence aborted before it was scheduled has no prefill or decode time.
    pub(crate) fn record_finished(
        &self,
        reason: FinishReason,
        num_prompt_tokens: usize,
        num_generation_tokens: usize,
        t: RequestTimes,
    ) {
        let now = Instant::now();
        self.count_finished(reason);
        self.e2e_request_latency.observe(now - t.arrival);
        self.request_prompt_tokens
            .observe_value(num_prompt_tokens as f64);
        self.request_generation_tokens
            .observe_value(num_generation_tokens as f64);
        if let Some(scheduled) = t.scheduled {
            let last = t.last_token.unwrap_or(now);
            self.request_inference_time.observe(last - scheduled);
            if let Some(first) = t.first_token {
                self.request_prefill_time.observe(first - scheduled);
                self.request_decode_time.observe(last - first);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phase_times_come_from_the_timestamps() {
        let m = EngineMetrics::default();
        let arrival = Instant::now();
        let t = RequestTimes {
            arrival,
            scheduled: Some(arrival + Duration::from_millis(100)),
            first_token: Some(arrival + Duration::from_millis(400)),
            last_token: Some(arrival + Duration::from_millis(1400)),
        };
        m.record_finished(FinishReason::Length, 10, 20, t);
        assert_eq!(m.finished_length.load(Relaxed), 1);
        assert!((m.request_prefill_time.sum() - 0.3).abs() < 1e-9);
        assert!((m.request_decode_time.sum() - 1.0).abs() < 1e-9);
        assert!((m.request_inference_time.sum() - 1.3).abs() < 1e-9);
        assert_eq!(m.request_prompt_tokens.sum(), 10.0);
        assert_eq!(m.request_generation_tokens.sum(), 20.0);

        // Aborted while waiting: no phase times, still counted.
        m.record_finished(
            FinishReason::Abort,
            5,
            0,
            RequestTimes {
                arrival,
                scheduled: None,
                first_token: None,
                last_token: None,
            },
        );
        assert_eq!(m.request_prefill_time.count(), 1);
        assert_eq!(m.e2e_request_latency.count(), 2);
    }

    #[test]
    fn kv_usage_stays_in_range() {
        let m = EngineMetrics::default();
        m.set_kv_blocks(10, 5);
        assert_eq!(m.kv_cache_usage(), 0.5);
        m.set_kv_blocks(0, 0);
        assert_eq!(m.kv_cache_usage(), 0.0);
    }
}
