//! The engine's metrics as Prometheus metric families, under vLLM v1's names, types, help
//! texts and labels (`model_name`, `engine`), plus the older names that routers still read
//! (`vllm:gpu_cache_usage_perc`, `vllm:gpu_prefix_cache_{queries,hits}_total` for vLLM's
//! production-stack router; `vllm:time_per_output_token_seconds` for dashboards made before
//! vLLM 0.10 renamed it `inter_token_latency`). Kestrel's own series are `kestrel_*`.
//! Encoding is the `prometheus` crate's text format 0.0.4, the one vLLM's Python client writes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};

use super::{EngineMetrics, Histogram};

/// vLLM labels every series with the engine's index; one process here is one engine.
const ENGINE_INDEX: &str = "0";

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.into());
    f.set_help(help.into());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

/// Builds the families of one scrape; `labels` go on every series.
struct Families {
    labels: Vec<LabelPair>,
    out: Vec<MetricFamily>,
}

impl Families {
    fn metric(&self, extra: &[(&str, &str)]) -> Metric {
        let mut labels = self.labels.clone();
        labels.extend(extra.iter().map(|(n, v)| label(n, v)));
        Metric::from_label(labels)
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let mut m = self.metric(&[]);
        let mut g = proto::Gauge::default();
        g.set_value(value);
        m.set_gauge(g);
        self.out
            .push(family(name, help, MetricType::GAUGE, vec![m]));
    }

    fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        let m = self.counter_metric(&[], value);
        self.out
            .push(family(name, help, MetricType::COUNTER, vec![m]));
    }

    fn counter_metric(&self, extra: &[(&str, &str)], value: &AtomicU64) -> Metric {
        let mut m = self.metric(extra);
        let mut c = proto::Counter::default();
        c.set_value(value.load(Relaxed) as f64);
        m.set_counter(c);
        m
    }

    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        let mut m = self.metric(&[]);
        m.set_histogram(h.to_proto());
        self.out
            .push(family(name, help, MetricType::HISTOGRAM, vec![m]));
    }
}

impl EngineMetrics {
    /// Every engine series of one scrape, labelled `model_name` (the served name) and `engine`.
    pub fn families(&self, model_name: &str) -> Vec<MetricFamily> {
        let mut f = Families {
            labels: vec![
                label("model_name", model_name),
                label("engine", ENGINE_INDEX),
            ],
            out: Vec::with_capacity(40),
        };
        let load = |a: &AtomicU64| a.load(Relaxed) as f64;

        // Scheduler state.
        f.gauge(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            load(&self.num_requests_running),
        );
        f.gauge(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            load(&self.num_requests_waiting),
        );
        let usage = self.kv_cache_usage();
        f.gauge(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            usage,
        );
        f.gauge(
            "vllm:gpu_cache_usage_perc",
            "GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            usage,
        );

        // vLLM's info metric: a gauge fixed at 1 whose labels carry the cache configuration.
        let c = &self.cache_info;
        let (block_size, num_blocks) = (c.block_size.to_string(), c.num_blocks.to_string());
        let mut info = Metric::from_label(vec![
            label("block_size", &block_size),
            label("cache_dtype", &c.cache_dtype),
            label(
                "enable_prefix_caching",
                if c.enable_prefix_caching {
                    "True"
                } else {
                    "False"
                },
            ),
            label("engine", ENGINE_INDEX),
            label("model_name", model_name),
            label("num_cpu_blocks", "0"),
            label("num_gpu_blocks", &num_blocks),
        ]);
        let mut one = proto::Gauge::default();
        one.set_value(1.0);
        info.set_gauge(one);
        f.out.push(family(
            "vllm:cache_config_info",
            "Information of the LLMEngine CacheConfig",
            MetricType::GAUGE,
            vec![info],
        ));

        // Counters.
        f.counter(
            "vllm:prefix_cache_queries_total",
            "Prefix cache queries, in terms of number of queried tokens.",
            &self.prefix_cache_queries,
        );
        f.counter(
            "vllm:prefix_cache_hits_total",
            "Prefix cache hits, in terms of number of cached tokens.",
            &self.prefix_cache_hits,
        );
        f.counter(
            "vllm:gpu_prefix_cache_queries_total",
            "GPU prefix cache queries, in terms of number of queried tokens. DEPRECATED: Use vllm:prefix_cache_queries instead.",
            &self.prefix_cache_queries,
        );
        f.counter(
            "vllm:gpu_prefix_cache_hits_total",
            "GPU prefix cache hits, in terms of number of cached tokens. DEPRECATED: Use vllm:prefix_cache_hits instead.",
            &self.prefix_cache_hits,
        );
        f.counter(
            "vllm:num_preemptions_total",
            "Cumulative number of preemption from the engine.",
            &self.num_preemptions,
        );
        f.counter(
            "vllm:prompt_tokens_total",
            "Number of prefill tokens processed.",
            &self.prompt_tokens,
        );
        f.counter(
            "vllm:generation_tokens_total",
            "Number of generation tokens processed.",
            &self.generation_tokens,
        );
        if let Some(spec) = &self.spec_decode {
            // vLLM's `SpecDecodingProm` names (the client library appends `_total`).
            f.counter(
                "vllm:spec_decode_num_drafts_total",
                "Number of spec decoding drafts.",
                &spec.num_drafts,
            );
            f.counter(
                "vllm:spec_decode_num_draft_tokens_total",
                "Number of draft tokens.",
                &spec.num_draft_tokens,
            );
            f.counter(
                "vllm:spec_decode_num_accepted_tokens_total",
                "Number of accepted tokens.",
                &spec.num_accepted_tokens,
            );
            let per_pos = spec
                .num_accepted_tokens_per_pos
                .iter()
                .enumerate()
                .map(|(pos, n)| f.counter_metric(&[("position", &pos.to_string())], n))
                .collect();
            f.out.push(family(
                "vllm:spec_decode_num_accepted_tokens_per_pos_total",
                "Accepted tokens per draft position.",
                MetricType::COUNTER,
                per_pos,
            ));
        }
        let by_reason = [
            ("stop", &self.finished_stop),
            ("length", &self.finished_length),
            ("abort", &self.finished_abort),
            ("error", &self.finished_error),
        ]
        .into_iter()
        .map(|(reason, n)| f.counter_metric(&[("finished_reason", reason)], n))
        .collect();
        f.out.push(family(
            "vllm:request_success_total",
            "Count of successfully processed requests.",
            MetricType::COUNTER,
            by_reason,
        ));

        // Histograms.
        for (name, help, h) in [
            (
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                &self.time_to_first_token,
            ),
            (
                "vllm:inter_token_latency_seconds",
                "Histogram of inter-token latency in seconds.",
                &self.inter_token_latency,
            ),
            (
                "vllm:time_per_output_token_seconds",
                "Histogram of time per output token in seconds. DEPRECATED: Use vllm:inter_token_latency_seconds instead.",
                &self.inter_token_latency,
            ),
            (
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                &self.e2e_request_latency,
            ),
            (
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                &self.request_queue_time,
            ),
            (
                "vllm:request_inference_time_seconds",
                "Histogram of time spent in RUNNING phase for request.",
                &self.request_inference_time,
            ),
            (
                "vllm:request_prefill_time_seconds",
                "Histogram of time spent in PREFILL phase for request.",
                &self.request_prefill_time,
            ),
            (
                "vllm:request_decode_time_seconds",
                "Histogram of time spent in DECODE phase for request.",
                &self.request_decode_time,
            ),
            (
                "vllm:request_prompt_tokens",
                "Number of prefill tokens processed.",
                &self.request_prompt_tokens,
            ),
            (
                "vllm:request_generation_tokens",
                "Number of generation tokens processed.",
                &self.request_generation_tokens,
            ),
            (
                "vllm:iteration_tokens_total",
                "Histogram of number of tokens per engine_step.",
                &self.iteration_tokens,
            ),
        ] {
            f.histogram(name, help, h);
        }

        // Kestrel's own.
        f.gauge(
            "kestrel_kv_cache_blocks",
            "KV-cache blocks in the pool.",
            load(&self.num_kv_blocks_total),
        );
        f.gauge(
            "kestrel_kv_cache_free_blocks",
            "Free KV-cache blocks, including cached ones that can be evicted.",
            load(&self.num_kv_blocks_free),
        );
        f.out
    }

    /// The text exposition of [`EngineMetrics::families`] alone.
    pub fn render_prometheus(&self, model_name: &str) -> String {
        // Only fails for a family without a name or series, which `families` never builds.
        prometheus::TextEncoder::new()
            .encode_to_string(&self.families(model_name))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::EngineMetrics;
    use crate::request::FinishReason;
    use std::time::Duration;

    #[test]
    fn renders_vllm_names_labels_and_cumulative_buckets() {
        let m = EngineMetrics::default();
        m.time_to_first_token.observe(Duration::from_millis(3));
        m.time_to_first_token.observe(Duration::from_secs(1000));
        m.count_finished(FinishReason::Length);
        m.set_kv_blocks(10, 5);
        let text = m.render_prometheus("q\"wen");
        let labels = "model_name=\"q\\\"wen\",engine=\"0\"";
        for line in [
            "# TYPE vllm:num_requests_running gauge".to_string(),
            format!("vllm:num_requests_running{{{labels}}} 0"),
            format!("vllm:kv_cache_usage_perc{{{labels}}} 0.5"),
            format!("vllm:gpu_cache_usage_perc{{{labels}}} 0.5"),
            "# TYPE vllm:request_success_total counter".to_string(),
            format!("vllm:request_success_total{{{labels},finished_reason=\"length\"}} 1"),
            "# TYPE vllm:time_to_first_token_seconds histogram".to_string(),
            format!("vllm:time_to_first_token_seconds_bucket{{{labels},le=\"0.005\"}} 1"),
            format!("vllm:time_to_first_token_seconds_bucket{{{labels},le=\"+Inf\"}} 2"),
            format!("vllm:time_to_first_token_seconds_count{{{labels}}} 2"),
            "vllm:cache_config_info{block_size=\"16\",cache_dtype=\"fp16\",enable_prefix_caching=\"True\",engine=\"0\",model_name=\"q\\\"wen\",num_cpu_blocks=\"0\",num_gpu_blocks=\"1024\"} 1".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in\n{text}");
        }
    }

    #[test]
    fn spec_decode_counters_only_when_configured() {
        assert!(!EngineMetrics::default()
            .render_prometheus("m")
            .contains("spec_decode"));
        let config = crate::engine::EngineConfig {
            speculative: Some(
                crate::SpeculativeConfig::from_json(
                    r#"{"method": "ngram", "num_speculative_tokens": 3}"#,
                )
                .unwrap(),
            ),
            ..Default::default()
        };
        let m = EngineMetrics::new(&config);
        let mut stats = crate::speculative::SpecDecodingStats::default();
        stats.observe(3, 2);
        stats.observe(2, 0);
        m.record_spec_decoding(&stats);
        let text = m.render_prometheus("m");
        let labels = "model_name=\"m\",engine=\"0\"";
        for line in [
            "# TYPE vllm:spec_decode_num_drafts_total counter".to_string(),
            format!("vllm:spec_decode_num_drafts_total{{{labels}}} 2"),
            format!("vllm:spec_decode_num_draft_tokens_total{{{labels}}} 5"),
            format!("vllm:spec_decode_num_accepted_tokens_total{{{labels}}} 2"),
            format!(
                "vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position=\"0\"}} 1"
            ),
            format!(
                "vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position=\"1\"}} 1"
            ),
            format!(
                "vllm:spec_decode_num_accepted_tokens_per_pos_total{{{labels},position=\"2\"}} 0"
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }
}
