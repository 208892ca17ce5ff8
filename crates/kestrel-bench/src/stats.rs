//! From the records of one run to its metrics: latency distributions over the successful
//! requests, throughput over the run's wall time, goodput against SLOs, and failures by kind.
//!
//! Definitions (vLLM `bench serve` where it has one):
//! - TTFT: request sent → first chunk with generated text (reasoning or answer, whitespace too).
//! - TPOT: `(e2e - ttft) / (output_tokens - 1)` per request, requests with > 1 token.
//! - ITL: gaps between consecutive content-bearing chunks, pooled over all requests.
//! - Queue: scheduled arrival → sent (client-side waiting for a concurrency slot), never in TTFT.
//! - Duration: run start → the last request's end; throughput = successful work / duration.
//! - Goodput: successful requests meeting every given SLO (TTFT ≤, TPOT ≤), per second.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::percentile::Summary;
use crate::record::{RequestRecord, TokenSource};

/// Service-level objectives for goodput; `None` fields are not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some()
    }

    /// Whether a successful request meets every objective (a missing measurement fails it).
    pub fn met_by(&self, r: &RequestRecord) -> bool {
        let within = |limit: Option<f64>, value: Option<f64>| match limit {
            None => true,
            Some(l) => value.is_some_and(|v| v <= l),
        };
        r.ok()
            && within(self.ttft_ms, r.ttft_ms)
            // One-token answers have no TPOT; they cannot violate it.
            && (r.output_tokens.unwrap_or(0) <= 1 || within(self.tpot_ms, r.tpot_ms()))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    pub num_requests: usize,
    pub num_ok: usize,
    pub num_errors: usize,
    /// Failures by `ErrorKind::name()`.
    pub errors: BTreeMap<String, usize>,
    /// Successful requests that ended after a finish_reason without `data: [DONE]`.
    pub num_missing_done: usize,
    pub duration_s: f64,
    pub requests_per_s: f64,
    pub output_tokens: usize,
    pub prompt_tokens: Option<usize>,
    /// Aggregate output tokens per second of successful requests.
    pub output_tok_per_s: f64,
    /// `None` when no SLO was given.
    pub goodput_req_per_s: Option<f64>,
    pub num_slo_met: Option<usize>,
    /// How output tokens were counted: the worst source used by any successful request.
    pub token_source: Option<TokenSource>,
    pub ttft_ms: Summary,
    pub tpot_ms: Summary,
    pub itl_ms: Summary,
    pub e2e_ms: Summary,
    pub queue_ms: Summary,
    pub first_reasoning_ms: Summary,
    pub first_visible_ms: Summary,
    /// Per-request output tokens / e2e seconds.
    pub request_tok_per_s: Summary,
    pub output_tokens_per_request: Summary,
}

/// Metrics of one run. `duration_ms` is the run's wall time.
pub fn summarize(records: &[RequestRecord], duration_ms: f64, slo: &Slo) -> RunMetrics {
    let ok: Vec<&RequestRecord> = records.iter().filter(|r| r.ok()).collect();
    let mut errors = BTreeMap::new();
    for r in records {
        if let Some(kind) = &r.error {
            *errors.entry(kind.name()).or_insert(0) += 1;
        }
    }
    let duration_s = duration_ms / 1000.0;
    let per_s = |x: f64| {
        if duration_s > 0.0 {
            x / duration_s
        } else {
            0.0
        }
    };
    let output_tokens: usize = ok.iter().filter_map(|r| r.output_tokens).sum();
    let prompt_tokens = ok
        .iter()
        .map(|r| r.prompt_tokens)
        .sum::<Option<usize>>()
        .filter(|_| !ok.is_empty());
    let of = |f: &dyn Fn(&RequestRecord) -> Option<f64>| {
        Summary::of(&ok.iter().filter_map(|r| f(r)).collect::<Vec<_>>())
    };
    let itl: Vec<f64> = ok.iter().flat_map(|r| r.itl_ms()).collect();
    let num_slo_met = slo
        .is_set()
        .then(|| ok.iter().filter(|r| slo.met_by(r)).count());
    RunMetrics {
        num_requests: records.len(),
        num_ok: ok.len(),
        num_errors: records.len() - ok.len(),
        errors,
        num_missing_done: ok.iter().filter(|r| r.missing_done).count(),
        duration_s,
        requests_per_s: per_s(ok.len() as f64),
        output_tokens,
        prompt_tokens,
        output_tok_per_s: per_s(output_tokens as f64),
        goodput_req_per_s: num_slo_met.map(|n| per_s(n as f64)),
        num_slo_met,
        token_source: ok.iter().filter_map(|r| r.token_source).max(),
        ttft_ms: of(&|r| r.ttft_ms),
        tpot_ms: of(&|r| r.tpot_ms()),
        itl_ms: Summary::of(&itl),
        e2e_ms: of(&|r| r.e2e_ms),
        queue_ms: of(&|r| Some(r.queue_ms())),
        first_reasoning_ms: of(&|r| r.first_reasoning_ms),
        first_visible_ms: of(&|r| r.first_visible_ms),
        request_tok_per_s: of(&|r| r.output_tok_per_s()),
        output_tokens_per_request: of(&|r| r.output_tokens.map(|n| n as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ErrorKind;

    fn rec(ttft: f64, chunks: &[f64], e2e: f64, tokens: usize) -> RequestRecord {
        RequestRecord {
            ttft_ms: Some(ttft),
            chunk_ms: chunks.to_vec(),
            e2e_ms: Some(e2e),
            output_tokens: Some(tokens),
            token_source: Some(TokenSource::Usage),
            ..RequestRecord::default()
        }
    }

    #[test]
    fn metrics_of_a_small_run() {
        let mut records = vec![
            rec(10.0, &[10.0, 30.0, 50.0], 50.0, 3), // tpot 20, itl 20 20
            rec(20.0, &[20.0, 60.0], 60.0, 2),       // tpot 40, itl 40
            RequestRecord {
                error: Some(ErrorKind::Http(500)),
                ..RequestRecord::default()
            },
            RequestRecord {
                error: Some(ErrorKind::Timeout),
                ..rec(5.0, &[5.0], 1000.0, 1)
            },
        ];
        records[1].scheduled_ms = 0.0;
        records[1].sent_ms = 7.0;
        let slo = Slo {
            ttft_ms: Some(15.0),
            tpot_ms: Some(30.0),
        };
        let m = summarize(&records, 2000.0, &slo);
        assert_eq!((m.num_requests, m.num_ok, m.num_errors), (4, 2, 2));
        assert_eq!(m.errors["http_500"], 1);
        assert_eq!(m.errors["timeout"], 1);
        assert_eq!(m.output_tokens, 5);
        assert_eq!(m.output_tok_per_s, 2.5);
        assert_eq!(m.requests_per_s, 1.0);
        assert_eq!(m.ttft_ms.p50, Some(15.0));
        assert_eq!(m.tpot_ms.mean, Some(30.0));
        assert_eq!(m.itl_ms.count, 3);
        assert_eq!(m.itl_ms.max, Some(40.0));
        assert_eq!(m.queue_ms.max, Some(7.0));
        assert_eq!(m.num_slo_met, Some(1));
        assert_eq!(m.goodput_req_per_s, Some(0.5));
        assert_eq!(m.prompt_tokens, None);
        assert!(summarize(&records, 2000.0, &Slo::default())
            .goodput_req_per_s
            .is_none());
    }
}
