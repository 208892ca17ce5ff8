//! The Markdown tables printed on stdout: one row per run. Milliseconds with one decimal,
//! `-` where a metric has no samples. Failures are listed under the tables by kind, and an
//! estimated token count (no `usage`, no tokenizer) is flagged, so nothing is silently wrong.

use std::fmt::Write;

use crate::driver::RunResult;
use crate::record::TokenSource;
use crate::results::BenchReport;

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn concurrency(run: &RunResult) -> String {
    run.spec
        .max_concurrency
        .map_or("inf".into(), |c| c.to_string())
}

fn rate(run: &RunResult) -> String {
    run.spec
        .request_rate
        .map_or("inf".into(), |r| format!("{r}"))
}

/// Latency and throughput, then time-to-first-output details, then failures and notes.
pub fn render(report: &BenchReport) -> String {
    // A `|` inside a cell would end it: escape it as GitHub Markdown does.
    let label = report
        .label
        .clone()
        .unwrap_or_else(|| report.model.clone())
        .replace('|', "\\|");
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| label | concurrency | rate | ok/total | req/s | out tok/s | TTFT p50 | TTFT p90 | TTFT p95 | TTFT p99 | TPOT p50 | ITL p50 | ITL p99 | E2E p50 | E2E p99 | tok/s/req p50 | goodput req/s |"
    );
    let _ = writeln!(s, "|{}", "---|".repeat(17));
    for run in &report.runs {
        let m = &run.metrics;
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {}/{} | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            concurrency(run),
            rate(run),
            m.num_ok,
            m.num_requests,
            m.requests_per_s,
            m.output_tok_per_s,
            ms(m.ttft_ms.p50),
            ms(m.ttft_ms.p90),
            ms(m.ttft_ms.p95),
            ms(m.ttft_ms.p99),
            ms(m.tpot_ms.p50),
            ms(m.itl_ms.p50),
            ms(m.itl_ms.p99),
            ms(m.e2e_ms.p50),
            ms(m.e2e_ms.p99),
            ms(m.request_tok_per_s.p50),
            m.goodput_req_per_s
                .map_or("-".into(), |g| format!("{g:.2}")),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| label | concurrency | queue p50 | queue p99 | first token p50 | first reasoning p50 | first visible answer p50 | first visible answer p95 | out tokens/req p50 |"
    );
    let _ = writeln!(s, "|{}", "---|".repeat(9));
    for run in &report.runs {
        let m = &run.metrics;
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |",
            concurrency(run),
            ms(m.queue_ms.p50),
            ms(m.queue_ms.p99),
            ms(m.ttft_ms.p50),
            ms(m.first_reasoning_ms.p50),
            ms(m.first_visible_ms.p50),
            ms(m.first_visible_ms.p95),
            ms(m.output_tokens_per_request.p50),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "All times in ms. {}", notes(report));
    for run in &report.runs {
        let m = &run.metrics;
        if m.num_errors > 0 || run.warmup_errors > 0 {
            let kinds: Vec<String> = m.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(
                s,
                "- concurrency {}: {} failed ({}){}",
                concurrency(run),
                m.num_errors,
                kinds.join(", "),
                if run.warmup_errors > 0 {
                    format!("; {} warm-up requests failed", run.warmup_errors)
                } else {
                    String::new()
                }
            );
        }
        if m.num_missing_done > 0 {
            let _ = writeln!(
                s,
                "- concurrency {}: {} streams ended without `data: [DONE]` after a finish_reason",
                concurrency(run),
                m.num_missing_done
            );
        }
    }
    s
}

/// How tokens were counted, the one thing a reader of the table must know to trust tok/s.
pub fn notes(report: &BenchReport) -> String {
    let worst = report
        .runs
        .iter()
        .filter_map(|r| r.metrics.token_source)
        .max();
    match worst {
        Some(TokenSource::Usage) => "Output tokens from the server's `usage`.".into(),
        Some(TokenSource::MaxTokens) => {
            "Output tokens: the server sent no `usage`; answers that stopped for `length` count as their `max_tokens`.".into()
        }
        Some(TokenSource::Tokenizer) => {
            "Output tokens counted by re-tokenizing the streamed text (`--tokenizer`): the server sent no `usage`.".into()
        }
        Some(TokenSource::Chunks) => {
            "Output tokens ESTIMATED as one per streamed chunk: the server sent no `usage` and no `--tokenizer` was given.".into()
        }
        None => "No request succeeded.".into(),
    }
}
