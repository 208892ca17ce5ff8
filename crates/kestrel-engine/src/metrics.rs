//! Engine metrics: gauges, counters and histograms kept in atomics (written by the engine
//! thread, read by anyone through [`crate::handle::EngineHandle::metrics`]) and rendered as
//! Prometheus text. Names are vLLM's (`vllm:num_requests_running` → `kestrel:num_requests_running`,
//! same suffixes and labels), so vLLM dashboards and HPA rules carry over by changing the prefix.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::request::FinishReason;

/// A Prometheus histogram with fixed bucket bounds (seconds); sum kept in microseconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// `[bounds.len() + 1]` non-cumulative counts; the last is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    pub fn sum_secs(&self) -> f64 {
        self.sum_us.load(Relaxed) as f64 * 1e-6
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = self
                .bounds
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_secs());
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

// Bucket bounds as vLLM's `metrics/loggers.py`.
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

/// All engine metrics. Gauges are set by the engine after every step.
#[derive(Debug)]
pub struct EngineMetrics {
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
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
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
        }
    }
}

impl EngineMetrics {
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
            1.0 - free as f64 / total as f64
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

    /// Prometheus text exposition format (0.0.4), every series labelled `model_name`.
    pub fn render_prometheus(&self, model_name: &str) -> String {
        let model = model_name.replace('\\', "\\\\").replace('"', "\\\"");
        let labels = format!("model_name=\"{model}\"");
        let mut out = String::new();
        let mut scalar = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP kestrel:{name} {help}\n# TYPE kestrel:{name} {kind}"
            );
            let _ = writeln!(out, "kestrel:{name}{{{labels}}} {value}");
        };
        let get = |a: &AtomicU64| a.load(Relaxed).to_string();
        scalar(
            "num_requests_running",
            "gauge",
            "Number of requests in model execution batches.",
            get(&self.num_requests_running),
        );
        scalar(
            "num_requests_waiting",
            "gauge",
            "Number of requests waiting to be processed.",
            get(&self.num_requests_waiting),
        );
        scalar(
            "kv_cache_usage_perc",
            "gauge",
            "KV-cache usage. 1 means 100 percent usage.",
            self.kv_cache_usage().to_string(),
        );
        scalar(
            "num_kv_cache_blocks",
            "gauge",
            "Total KV-cache blocks.",
            get(&self.num_kv_blocks_total),
        );
        scalar(
            "num_free_kv_cache_blocks",
            "gauge",
            "Free KV-cache blocks (including cached, evictable ones).",
            get(&self.num_kv_blocks_free),
        );
        scalar(
            "prefix_cache_queries_total",
            "counter",
            "Prefix cache queries, in terms of number of queried tokens.",
            get(&self.prefix_cache_queries),
        );
        scalar(
            "prefix_cache_hits_total",
            "counter",
            "Prefix cache hits, in terms of number of cached tokens.",
            get(&self.prefix_cache_hits),
        );
        scalar(
            "num_preemptions_total",
            "counter",
            "Cumulative number of preemptions from the engine.",
            get(&self.num_preemptions),
        );
        scalar(
            "prompt_tokens_total",
            "counter",
            "Number of prefill tokens processed.",
            get(&self.prompt_tokens),
        );
        scalar(
            "generation_tokens_total",
            "counter",
            "Number of generation tokens processed.",
            get(&self.generation_tokens),
        );
        let name = "kestrel:request_success_total";
        let _ = writeln!(
            out,
            "# HELP {name} Count of finished requests, by finish reason.\n# TYPE {name} counter"
        );
        for (reason, a) in [
            ("stop", &self.finished_stop),
            ("length", &self.finished_length),
            ("abort", &self.finished_abort),
            ("error", &self.finished_error),
        ] {
            let _ = writeln!(
                out,
                "{name}{{finished_reason=\"{reason}\",{labels}}} {}",
                a.load(Relaxed)
            );
        }
        for (h, name, help) in [
            (
                &self.time_to_first_token,
                "time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
            ),
            (
                &self.inter_token_latency,
                "inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
            ),
            (
                &self.e2e_request_latency,
                "e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
            ),
            (
                &self.request_queue_time,
                "request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
            ),
        ] {
            h.render(&mut out, &format!("kestrel:{name}"), help, &labels);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_vllm_names_and_cumulative_buckets() {
        let m = EngineMetrics::default();
        m.time_to_first_token.observe(Duration::from_millis(3));
        m.time_to_first_token.observe(Duration::from_secs(1000));
        m.count_finished(FinishReason::Length);
        m.set_kv_blocks(10, 5);
        let text = m.render_prometheus("qwen");
        assert!(text.contains("kestrel:num_requests_running{model_name=\"qwen\"} 0"));
        assert!(text.contains("kestrel:kv_cache_usage_perc{model_name=\"qwen\"} 0.5"));
        assert!(text.contains(
            "kestrel:request_success_total{finished_reason=\"length\",model_name=\"qwen\"} 1"
        ));
        assert!(text.contains(
            "kestrel:time_to_first_token_seconds_bucket{model_name=\"qwen\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "kestrel:time_to_first_token_seconds_bucket{model_name=\"qwen\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("kestrel:time_to_first_token_seconds_count{model_name=\"qwen\"} 2"));
    }
}
