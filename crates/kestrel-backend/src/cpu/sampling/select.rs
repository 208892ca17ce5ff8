//! Turning one row of logits into one token: the raw row with banned tokens masked, penalties
//! and bias, then greedy argmax or temperature, top-k, top-p, min-p and one draw (the order and
//! the definition of the draw are in [`crate::sampling`]).
//!
//! Nothing here sorts the whole vocabulary: top-k is a buffered partial selection
//! (`select_nth_unstable_by` on a small buffer behind a running threshold), top-p collects the
//! tokens above a logit threshold that widens until they hold enough mass and sorts only
//! those. The vocabulary-sized buffers live in a [`RowScratch`] per thread.

use std::cmp::Ordering;

use super::vector::{
    collect_at_or_above, exp_all, exp_nonpos, mass_at_or_above, max_of, sum_of, LANES,
};
use crate::sampling::RowParams;

/// Vocabulary-sized work buffers of one thread's sampling.
#[derive(Clone, Debug, Default)]
pub struct RowScratch {
    /// `[vocab]` the processed logits, then divided by the temperature.
    pub(super) logits: Vec<f32>,
    /// `[vocab]` `exp(logit - max)` by token id; valid for the candidates (for all when
    /// `all_weights`).
    weights: Vec<f32>,
    all_weights: bool,
    /// Candidate token ids (a subset of the vocabulary).
    pub(super) idx: Vec<u32>,
    /// `(logit, id)` working copy for top-p selection.
    pairs: Vec<(f32, u32)>,
}

impl RowScratch {
    /// Room for a vocabulary of `vocab` tokens, so that no row ever grows a buffer.
    pub fn reserve(&mut self, vocab: usize) {
        self.logits.reserve(vocab.saturating_sub(self.logits.len()));
        self.weights
            .reserve(vocab.saturating_sub(self.weights.len()));
        self.idx.reserve(vocab.saturating_sub(self.idx.len()));
        self.pairs.reserve(vocab.saturating_sub(self.pairs.len()));
    }
}

/// Which tokens survived the truncations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Candidates {
    All,
    /// `idx[..n]`, in no particular (but deterministic) order.
    Subset(usize),
}

/// `l` := the raw row with NaN as `-inf`, the banned tokens and the tokens outside the
/// `allowed` bitmask (if any) at `-inf`. The mask is read a word at a time: a zero word
/// clears 32 logits, a full one skips them.
pub(super) fn masked_row(raw: &[f32], banned: &[u32], allowed: Option<&[u32]>, l: &mut Vec<f32>) {
    l.clear();
    l.extend(
        raw.iter()
            .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x }),
    );
    for &t in banned {
        l[t as usize] = f32::NEG_INFINITY;
    }
    if let Some(words) = allowed {
        for (chunk, &word) in l.chunks_mut(32).zip(words) {
            match word {
                u32::MAX => {}
                0 => chunk.fill(f32::NEG_INFINITY),
                w => {
                    for (bit, x) in chunk.iter_mut().enumerate() {
                        if w & (1 << bit) == 0 {
                            *x = f32::NEG_INFINITY;
                        }
                    }
                }
            }
        }
        let covered = (words.len() * 32).min(l.len());
        l[covered..].fill(f32::NEG_INFINITY);
    }
}

/// Whether `allowed` (a bitmask, `None` for all) allows token `t`.
pub(super) fn is_allowed(allowed: Option<&[u32]>, t: u32) -> bool {
    allowed.is_none_or(|w| {
        w.get(t as usize / 32)
            .is_some_and(|&word| word & (1 << (t % 32)) != 0)
    })
}

/// Penalties (vLLM's `apply_penalties`: repetition over prompt + output, then frequency and
/// presence over the output) and the logit bias, in place. `history` is `(token, output count)`
/// for each distinct token of the sequence (count 0: prompt only).
pub(super) fn apply_penalties(
    p: &RowParams,
    history: (&[u32], &[u32]),
    bias: (&[u32], &[f32]),
    l: &mut [f32],
) {
    let r = p.repetition_penalty;
    for (&t, &count) in history.0.iter().zip(history.1) {
        let x = &mut l[t as usize];
        if r != 1.0 {
            *x = if *x > 0.0 { *x / r } else { *x * r };
        }
        if count > 0 {
            *x -= p.frequency_penalty * count as f32 + p.presence_penalty;
        }
    }
    for (&t, &b) in bias.0.iter().zip(bias.1) {
        l[t as usize] += b;
    }
}

/// Temperature, then top-k, top-p, min-p. Leaves the candidates and their weights in `s`;
/// returns them with the weights' total, or `None` without a finite max.
pub(super) fn candidates(p: &RowParams, s: &mut RowScratch) -> Option<(Candidates, f64)> {
    if p.temperature != 1.0 {
        let inv_t = 1.0 / p.temperature;
        s.logits.iter_mut().for_each(|x| *x *= inv_t);
    }
    let l = &s.logits[..];
    let max = max_of(l);
    if !max.is_finite() {
        return None;
    }
    let v = l.len();
    let w = &mut s.weights;
    w.resize(v, 0.0);
    s.all_weights = false;
    let mut cands = Candidates::All;
    let top_k = p.top_k as usize;
    if top_k > 0 && top_k < v {
        top_k_into(l, top_k, &mut s.idx);
        cands = Candidates::Subset(top_k);
    }
    if p.top_p < 1.0 {
        let n = match cands {
            Candidates::Subset(n) => {
                let mut total = 0.0;
                for &i in &s.idx[..n] {
                    w[i as usize] = exp_nonpos(l[i as usize] - max);
                    total += f64::from(w[i as usize]);
                }
                top_p_select(
                    l,
                    w,
                    &mut s.idx[..n],
                    f64::from(p.top_p) * total,
                    &mut s.pairs,
                )
            }
            Candidates::All => {
                let total = exp_all(l, max, w);
                s.all_weights = true;
                top_p_over_all(
                    l,
                    max,
                    w,
                    f64::from(p.top_p) * total,
                    &mut s.idx,
                    &mut s.pairs,
                )
            }
        };
        cands = Candidates::Subset(n);
    }
    if p.min_p > 0.0 {
        // p_i >= min_p * p_max  <=>  l_i >= max + ln(min_p): no exponentials needed.
        let threshold = max + p.min_p.ln();
        cands = Candidates::Subset(match cands {
            Candidates::Subset(n) => {
                let mut kept = 0;
                for j in 0..n {
                    let id = s.idx[j];
                    if l[id as usize] >= threshold {
                        s.idx[kept] = id;
                        kept += 1;
                    }
                }
                kept
            }
            Candidates::All => {
                collect_at_or_above(l, threshold, &mut s.idx);
                s.idx.len()
            }
        });
    }
    let total = match cands {
        Candidates::All => {
            s.all_weights = true;
            exp_all(l, max, w)
        }
        Candidates::Subset(n) => {
            let mut total = 0.0;
            for &i in &s.idx[..n] {
                let i = i as usize;
                if !s.all_weights {
                    w[i] = exp_nonpos(l[i] - max);
                }
                total += f64::from(w[i]);
            }
            total
        }
    };
    Some((cands, total))
}

/// Inverse CDF at `u · total` over the candidates in increasing id order (the subset is
/// sorted first, so the choice is defined without reference to how it was selected).
pub(super) fn draw(s: &mut RowScratch, cands: Candidates, total: f64, u: f64) -> u32 {
    let target = u * total;
    if let Candidates::Subset(n) = cands {
        s.idx[..n].sort_unstable();
    }
    let w = &s.weights;
    let mut acc = 0.0;
    match cands {
        Candidates::All => {
            // Whole blocks are skipped on their sum; the block holding the target is scanned.
            const BLOCK: usize = 256;
            for (b, block) in w[..s.logits.len()].chunks(BLOCK).enumerate() {
                let sum = sum_of(block);
                if acc + sum <= target {
                    acc += sum;
                    continue;
                }
                for (j, &x) in block.iter().enumerate() {
                    acc += f64::from(x);
                    if acc > target && x > 0.0 {
                        return (b * BLOCK + j) as u32;
                    }
                }
            }
            // Rounding left `acc` a hair short of `target`: the last weighted token wins.
            w.iter()
                .rposition(|&x| x > 0.0)
                .expect("the top token has weight 1") as u32
        }
        Candidates::Subset(n) => {
            let mut last = None;
            for &i in &s.idx[..n] {
                let x = w[i as usize];
                if x > 0.0 {
                    acc += f64::from(x);
                    last = Some(i);
                    if acc > target {
                        break;
                    }
                }
            }
            last.expect("the top token is always a candidate")
        }
    }
}

/// Most likely first, ties by lower id: the order of top-k and top-p.
pub(super) fn by_logit_desc(l: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b))
}

/// Puts the ids of the `k` largest logits (ties by lower id) into `idx`, unordered, for
/// `0 < k < l.len()`. One pass keeps a buffer of contenders behind a threshold (the k-th best
/// so far); when the buffer fills, `select_nth_unstable_by` cuts it back to `k`. Later ids lose
/// ties, so a contender must be strictly above the threshold, and a whole block of lanes with
/// nothing above it costs one vector compare.
pub(super) fn top_k_into(l: &[f32], k: usize, idx: &mut Vec<u32>) {
    debug_assert!(k > 0 && k < l.len());
    let cap = (2 * k).max(k + 64);
    idx.clear();
    let mut threshold = f32::NEG_INFINITY;
    let mut have_threshold = false;
    for (c, chunk) in l.chunks(4 * LANES).enumerate() {
        if have_threshold && max_of(chunk) <= threshold {
            continue;
        }
        for (j, &x) in chunk.iter().enumerate() {
            // NaN never contends.
            if have_threshold && x.partial_cmp(&threshold) != Some(Ordering::Greater) {
                continue;
            }
            idx.push((c * 4 * LANES + j) as u32);
            if idx.len() == cap {
                idx.select_nth_unstable_by(k - 1, by_logit_desc(l));
                idx.truncate(k);
                threshold = l[idx[k - 1] as usize];
                have_threshold = true;
            }
        }
    }
    if idx.len() > k {
        idx.select_nth_unstable_by(k - 1, by_logit_desc(l));
        idx.truncate(k);
    }
}

/// Top-p by weighted quickselect: reorders `idx` so that its first `n` entries are the top-p
/// set (every token whose mass ranked above it, in the top-p order, is below `target`) and
/// returns `n`. Works on `(logit, id)` pairs copied into `pairs`, so comparisons read
/// contiguous memory. Expected O(len); only ranges of at most 64 are sorted. Returns
/// `idx.len()` when the whole slice is kept.
fn top_p_select(
    l: &[f32],
    w: &[f32],
    idx: &mut [u32],
    target: f64,
    pairs: &mut Vec<(f32, u32)>,
) -> usize {
    fn cmp(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
        b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
    }
    pairs.clear();
    pairs.extend(idx.iter().map(|&i| (l[i as usize], i)));
    let weight_of = |pair: &(f32, u32)| f64::from(w[pair.1 as usize]);
    let (mut lo, mut hi) = (0, pairs.len());
    // Mass of everything ranked above `pairs[lo]`; all of it is kept.
    let mut above = 0.0f64;
    let n = loop {
        if hi - lo <= 64 {
            pairs[lo..hi].sort_unstable_by(cmp);
            let mut n = hi;
            for (j, pair) in pairs.iter().enumerate().take(hi).skip(lo) {
                if above >= target && j > 0 {
                    n = j;
                    break;
                }
                above += weight_of(pair);
            }
            break n;
        }
        let mid = lo + (hi - lo) / 2;
        pairs[lo..hi].select_nth_unstable_by(mid - lo, cmp);
        let upper: f64 = pairs[lo..mid].iter().map(weight_of).sum();
        if above + upper >= target {
            // The pivot and all below it are out; the cut is inside the upper half.
            hi = mid;
        } else {
            above += upper + weight_of(&pairs[mid]);
            lo = mid + 1;
        }
    };
    for (slot, &(_, id)) in idx.iter_mut().zip(pairs.iter()) {
        *slot = id;
    }
    n
}

/// Top-p over the whole vocabulary: the tokens within `margin` of the max logit form a set
/// closed upwards in the top-p order, so once they hold `target` mass the top-p set lies inside
/// them. The margin widens (4, 8, 16, ... nats; one vectorized mass pass each) until the set
/// holds enough, which is then collected and handed to [`top_p_select`]. `w` holds every
/// token's weight.
fn top_p_over_all(
    l: &[f32],
    max: f32,
    w: &[f32],
    target: f64,
    idx: &mut Vec<u32>,
    pairs: &mut Vec<(f32, u32)>,
) -> usize {
    for margin in [4.0, 8.0, 16.0, 32.0, 64.0, f32::INFINITY] {
        let threshold = max - margin; // -inf for the last: everything
        if margin.is_finite() && mass_at_or_above(l, w, threshold) < target {
            continue;
        }
        collect_at_or_above(l, threshold, idx);
        let n = top_p_select(l, w, idx, target, pairs);
        // Keeping the whole set without reaching the target is rounding: widen, unless at the end.
        if n < idx.len() || !margin.is_finite() {
            return n;
        }
    }
    idx.len()
}
