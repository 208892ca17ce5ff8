//! The request driver: releases prompts at their arrival times, holds each one until a
//! concurrency slot is free, sends it on its own task and collects the records.
//!
//! One dispatcher releases requests strictly in order (a request never overtakes an earlier
//! one for a slot), so client-side queueing is FIFO and shows up as `queue_ms`, not as TTFT.
//! Warm-up requests run first at the same concurrency and are not measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Semaphore};

use crate::arrivals::arrival_times_ms;
use crate::client::Client;
use crate::dataset::Prompt;
use crate::record::RequestRecord;
use crate::stats::{summarize, RunMetrics, Slo};

/// How one run offers load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Most requests in flight; `None` = unlimited.
    pub max_concurrency: Option<usize>,
    /// Poisson arrival rate in requests/s; `None` = all at once.
    pub request_rate: Option<f64>,
    pub seed: u64,
}

/// One run: what was offered, what it measured, and every request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub spec: RunSpec,
    pub metrics: RunMetrics,
    pub num_warmup: usize,
    pub warmup_errors: usize,
    pub requests: Vec<RequestRecord>,
}

/// Runs `warmup` (unmeasured) and then `prompts` against `client`. `on_done` sees each measured
/// record as it completes (for a progress bar).
pub async fn run(
    client: &Arc<Client>,
    spec: &RunSpec,
    warmup: &[Prompt],
    prompts: &[Prompt],
    slo: &Slo,
    on_done: &mut dyn FnMut(&RequestRecord),
) -> RunResult {
    let warmup_errors = if warmup.is_empty() {
        0
    } else {
        let times = vec![0.0; warmup.len()];
        let (records, _) = drive(client, warmup, &times, spec.max_concurrency, &mut |_| {}).await;
        records.iter().filter(|r| !r.ok()).count()
    };
    let times = arrival_times_ms(prompts.len(), spec.request_rate, spec.seed);
    let (requests, duration_ms) =
        drive(client, prompts, &times, spec.max_concurrency, on_done).await;
    RunResult {
        spec: *spec,
        metrics: summarize(&requests, duration_ms, slo),
        num_warmup: warmup.len(),
        warmup_errors,
        requests,
    }
}

/// Sends `prompts[i]` at `times_ms[i]` (or later, when no slot is free); returns the records in
/// prompt order and the wall time from start to the last completion.
async fn drive(
    client: &Arc<Client>,
    prompts: &[Prompt],
    times_ms: &[f64],
    max_concurrency: Option<usize>,
    on_done: &mut dyn FnMut(&RequestRecord),
) -> (Vec<RequestRecord>, f64) {
    let n = prompts.len();
    let slots = max_concurrency.map(|c| Arc::new(Semaphore::new(c.max(1))));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Instant::now();

    // The dispatcher owns the last sender besides the tasks' clones: if a task died without
    // reporting, the channel still closes and the collector stops instead of hanging.
    let dispatch = async move {
        for (i, (prompt, &at_ms)) in prompts.iter().zip(times_ms).enumerate() {
            tokio::time::sleep_until((start + Duration::from_secs_f64(at_ms / 1000.0)).into())
                .await;
            let permit = match &slots {
                Some(s) => Some(
                    Arc::clone(s)
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                ),
                None => None,
            };
            let client = Arc::clone(client);
            let prompt = prompt.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let record = client.send(&prompt, start, i, at_ms).await;
                drop(permit);
                // The receiver outlives every sender: it waits for exactly `n` records.
                let _ = tx.send(record);
            });
        }
    };
    let collect = async {
        let mut records = Vec::with_capacity(n);
        while records.len() < n {
            let Some(record) = rx.recv().await else {
                break;
            };
            on_done(&record);
            records.push(record);
        }
        records
    };
    let ((), mut records) = tokio::join!(dispatch, collect);
    records.sort_by_key(|r| r.index);
    let end_ms = records
        .iter()
        .map(RequestRecord::end_ms)
        .fold(0.0, f64::max);
    (records, end_ms)
}
