//! Sampling on the CPU: the [`crate::sampling`] semantics over a step's logit rows, one row per
//! parallel task, each with its thread's [`RowScratch`]. The parameters and the results live
//! in a [`CpuSampling`] that is refilled every step without allocating.

mod logprobs;
mod select;
mod vector;

use rayon::prelude::*;

pub use select::RowScratch;

use super::scratch::with_task_scratch;
use super::tensor::CpuTensor;
use crate::error::{shape_err, BackendError, Result};
use crate::sampling::{philox, RowParams, SampleOutput, SamplingBatch, MAX_TOP_LOGPROBS};

/// A step's sampling parameters and results on the CPU.
pub struct CpuSampling {
    pub(crate) params: SamplingBatch,
    pub(crate) out: SampleOutput,
    /// `[max_rows][MAX_TOP_LOGPROBS]` top logprobs as the tasks write them, compacted into
    /// `out` afterwards.
    top_rows: Vec<(u32, f32)>,
    max_rows: usize,
    vocab: usize,
}

impl CpuSampling {
    pub fn new(max_rows: usize, vocab: usize) -> Self {
        let mut out = SampleOutput::default();
        out.tokens.reserve(max_rows);
        out.logprobs.reserve(max_rows);
        out.top_start.reserve(max_rows + 1);
        out.top.reserve(max_rows * MAX_TOP_LOGPROBS);
        let mut params = SamplingBatch::default();
        params.rows.reserve(max_rows);
        Self {
            params,
            out,
            top_rows: vec![(0, 0.0); max_rows * MAX_TOP_LOGPROBS],
            max_rows,
            vocab,
        }
    }

    /// Takes the step's parameters (checked against the buffers' limits and the vocabulary).
    pub fn upload(&mut self, host: &SamplingBatch) -> Result<()> {
        if host.num_rows() > self.max_rows {
            return Err(BackendError::Batch(format!(
                "{} sampling rows exceed the step limit of {}",
                host.num_rows(),
                self.max_rows
            )));
        }
        host.validate(self.vocab)?;
        let p = &mut self.params;
        p.rows.clear();
        p.rows.extend_from_slice(&host.rows);
        for (dst, src) in [
            (&mut p.penalty_tokens, &host.penalty_tokens),
            (&mut p.penalty_counts, &host.penalty_counts),
            (&mut p.bias_tokens, &host.bias_tokens),
            (&mut p.banned_tokens, &host.banned_tokens),
        ] {
            dst.clear();
            dst.extend_from_slice(src);
        }
        p.bias_values.clear();
        p.bias_values.extend_from_slice(&host.bias_values);
        p.allowed_words.clear();
        p.allowed_words.extend_from_slice(&host.allowed_words);
        Ok(())
    }

    /// The ids the last [`sample`] drew.
    pub fn sampled(&self) -> &[u32] {
        &self.out.tokens
    }
}

/// One token per row of `logits [rows, vocab]`, written into `s.out`.
pub fn sample(logits: &CpuTensor, s: &mut CpuSampling) -> Result<()> {
    let rows = s.params.num_rows();
    if logits.rows != rows || logits.cols != s.vocab {
        return Err(shape_err(
            "sample",
            format!(
                "logits [{}, {}] for {rows} sampling rows over a vocabulary of {}",
                logits.rows, logits.cols, s.vocab
            ),
        ));
    }
    let CpuSampling {
        params,
        out,
        top_rows,
        ..
    } = s;
    out.clear();
    out.tokens.resize(rows, 0);
    out.logprobs.resize(rows, 0.0);
    let params = &*params;
    out.tokens
        .par_iter_mut()
        .zip(out.logprobs.par_iter_mut())
        .zip(top_rows.par_chunks_mut(MAX_TOP_LOGPROBS))
        .enumerate()
        .for_each(|(i, ((token, logprob), top))| {
            with_task_scratch(|scratch| {
                (*token, *logprob) = sample_row(
                    logits.row(i),
                    &params.rows[i],
                    params,
                    top,
                    &mut scratch.sample,
                );
            })
        });
    out.top_start.push(0);
    for (i, r) in params.rows.iter().enumerate() {
        let n = top_len(r, s.vocab);
        out.top
            .extend_from_slice(&top_rows[i * MAX_TOP_LOGPROBS..i * MAX_TOP_LOGPROBS + n]);
        out.top_start.push(out.top.len() as u32);
    }
    Ok(())
}

/// How many top logprobs a row reports.
fn top_len(r: &RowParams, vocab: usize) -> usize {
    (r.num_logprobs.max(0) as usize).min(vocab)
}

/// One row: `(token, its raw logprob or 0)`, the top logprobs into `top`.
fn sample_row(
    raw: &[f32],
    p: &RowParams,
    lists: &SamplingBatch,
    top: &mut [(u32, f32)],
    s: &mut RowScratch,
) -> (u32, f32) {
    let range = |a: u32, b: u32| a as usize..b as usize;
    let banned = &lists.banned_tokens[range(p.banned_start, p.banned_end)];
    let allowed = lists.allowed(p);
    select::masked_row(raw, banned, allowed, &mut s.logits);
    let lse = (p.num_logprobs >= 0).then(|| {
        let lse = logprobs::log_sum_exp(&s.logits);
        let n = top_len(p, raw.len());
        logprobs::top_logprobs(&s.logits, lse, &mut s.idx, &mut top[..n]);
        lse
    });
    // The raw (masked) logit of the sampled token, before the penalties change the row.
    let raw_of = |t: u32| {
        let x = raw[t as usize];
        if x.is_nan() || banned.contains(&t) || !select::is_allowed(allowed, t) {
            f32::NEG_INFINITY
        } else {
            x
        }
    };
    select::apply_penalties(
        p,
        (
            &lists.penalty_tokens[range(p.penalty_start, p.penalty_end)],
            &lists.penalty_counts[range(p.penalty_start, p.penalty_end)],
        ),
        (
            &lists.bias_tokens[range(p.bias_start, p.bias_end)],
            &lists.bias_values[range(p.bias_start, p.bias_end)],
        ),
        &mut s.logits,
    );
    let token = if p.is_greedy() {
        vector::argmax(&s.logits)
    } else {
        match select::candidates(p, s) {
            Some((cands, total)) => {
                let u = philox::uniform(p.seed, p.position, 0);
                select::draw(s, cands, total, u)
            }
            // No finite maximum (all -inf, or a +inf logit): the argmax is the only sane pick.
            None => vector::argmax(&s.logits),
        }
    };
    let logprob = lse.map_or(0.0, |lse| logprobs::logprob(raw_of(token), lse));
    (token, logprob)
}

#[cfg(test)]
mod tests;
