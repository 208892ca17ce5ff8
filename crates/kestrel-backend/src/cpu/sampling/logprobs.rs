//! Logprobs of a row, from the raw model distribution (the log-softmax of the logits as the
//! model produced them, banned tokens at `-inf`, before penalties, bias, temperature and
//! truncation). That is vLLM's default (`--logprobs-mode raw_logprobs`): it does not depend on
//! the sampling parameters, so two requests' logprobs compare, and an excluded token still
//! gets a finite value. `-inf` is reported as vLLM's -9999.

use super::select::{by_logit_desc, top_k_into};
use super::vector::{exp_sum, max_of};
use crate::sampling::MIN_LOGPROB;

/// `log Σ exp(l)` of a row (its max when nothing is finite).
pub(super) fn log_sum_exp(l: &[f32]) -> f64 {
    let max = max_of(l);
    if max.is_finite() {
        f64::from(max) + exp_sum(l, max).ln()
    } else {
        f64::from(max)
    }
}

/// The logprob of a raw logit `x` given the row's [`log_sum_exp`].
pub(super) fn logprob(x: f32, lse: f64) -> f32 {
    let lp = (f64::from(x) - lse) as f32;
    if lp.is_nan() {
        MIN_LOGPROB
    } else {
        lp.max(MIN_LOGPROB)
    }
}

/// The `top.len()` most likely tokens of `l` (most likely first, ties by lower id) with their
/// logprobs, into `top`.
pub(super) fn top_logprobs(l: &[f32], lse: f64, idx: &mut Vec<u32>, top: &mut [(u32, f32)]) {
    let n = top.len();
    if n == 0 {
        return;
    }
    if n < l.len() {
        top_k_into(l, n, idx);
    } else {
        idx.clear();
        idx.extend(0..l.len() as u32);
    }
    idx.sort_unstable_by(by_logit_desc(l));
    for (slot, &id) in top.iter_mut().zip(idx.iter()) {
        *slot = (id, logprob(l[id as usize], lse));
    }
}
