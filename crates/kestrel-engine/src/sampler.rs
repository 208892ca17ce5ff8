//! Per-sequence sampling: greedy, temperature, top-k, top-p, min-p, repetition / presence /
//! frequency penalties, logit bias, per-request seed, logprobs.
//!
//! Order of the transforms (penalties as vLLM's `apply_penalties`, warpers in `transformers`'
//! order):
//! 1. repetition penalty over every token of prompt + output (positive logits divided, negative
//!    multiplied), then frequency (× output count) and presence (if in output) subtracted;
//! 2. logit bias added (after the penalties, so a bias is exactly what the user asked for; vLLM
//!    v1 adds it before);
//! 3. greedy when `temperature < 1e-5` or `top_k == 1`: argmax, ties to the lowest id;
//! 4. temperature; 5. top-k; 6. top-p on the distribution renormalized after top-k; 7. min-p
//!    (relative to the top token, so it commutes with renormalization; vLLM v1 applies it before
//!    top-k/top-p, which differs only when top-p is also set); 8. one uniform draw over what is left.
//!
//! Logprobs are those of the **raw model distribution** (log-softmax of the logits as the model
//! produced them, before penalties, bias, temperature and truncation). That is vLLM's default
//! (`--logprobs-mode raw_logprobs`); it does not depend on the sampling parameters, so two
//! requests' logprobs compare, and an excluded token still gets a finite value.
//!
//! Invariants: a [`Sampler`] owns its RNG (ChaCha8, seeded from the request's `seed` or an
//! engine-supplied one), so a sequence's tokens never depend on what else is in the batch; one
//! non-greedy step consumes exactly one draw. Nothing here sorts the whole vocabulary: top-k is a
//! buffered partial selection (`select_nth_unstable_by` on a small buffer behind a running
//! threshold), top-p collects the tokens above a logit threshold that widens until they hold
//! enough mass and sorts only those. Big buffers live in a [`SamplerScratch`] that the engine
//! thread reuses for every sequence, so a step allocates nothing (and a sequence costs kilobytes,
//! not a vocabulary-sized buffer).

use std::cmp::Ordering;
use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type TokenId = u32;

/// Most `top_logprobs` a request may ask for (OpenAI's and vLLM's default limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Temperatures below this are greedy (vLLM's `_SAMPLING_EPS`).
const GREEDY_TEMPERATURE: f32 = 1e-5;
/// Logprobs are clamped to this, as vLLM reports `-inf` (JSON has no infinity).
pub const MIN_LOGPROB: f32 = -9999.0;

/// What a request asks of the sampler. Defaults are the OpenAI ones (temperature 1, nothing cut).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// `0` (below 1e-5) is greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; `0` keeps all, `1` is greedy.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose mass reaches `top_p`; `1` keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` × the most likely one; `0` keeps all.
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `1` is off; `> 1` discourages any token already in the prompt or output.
    pub repetition_penalty: f32,
    /// Added to the logits after the penalties; applied per entry, in order.
    pub logit_bias: Vec<(TokenId, f32)>,
    pub seed: Option<u64>,
    /// `Some(n)`: return the sampled token's logprob and the `n` most likely tokens' (`top_logprobs`).
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
        }
    }
}

/// A parameter out of range; `param` is the request field, for OpenAI's `error.param`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SamplingError {
    pub param: &'static str,
    pub message: String,
}

fn invalid(param: &'static str, message: String) -> SamplingError {
    SamplingError { param, message }
}

impl SamplingParams {
    /// Greedy decoding with otherwise default parameters.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE || self.top_k == 1
    }

    /// Range checks, with messages that name the field (as TGI's router does).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(invalid(
                "temperature",
                format!("`temperature` must be >= 0, got {t}"),
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid(
                "top_p",
                format!("`top_p` must be in (0, 1], got {p}"),
            ));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(invalid(
                "min_p",
                format!("`min_p` must be in [0, 1], got {m}"),
            ));
        }
        for (param, v) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(invalid(
                    param,
                    format!("`{param}` must be in [-2, 2], got {v}"),
                ));
            }
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(invalid(
                "repetition_penalty",
                format!("`repetition_penalty` must be > 0, got {r}"),
            ));
        }
        if let Some(&(id, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !(-100.0..=100.0).contains(b))
        {
            return Err(invalid(
                "logit_bias",
                format!("`logit_bias` values must be in [-100, 100], got {b} for token {id}"),
            ));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(invalid(
                "top_logprobs",
                format!("`top_logprobs` must be at most {MAX_TOP_LOGPROBS}, got {n}"),
            ));
        }
        Ok(())
    }
}

/// Logprobs of one sampled position, from the raw model distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// The `n` most likely tokens, most likely first, ties by lower id.
    pub top: Vec<(TokenId, f32)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SampledToken {
    pub token: TokenId,
    pub logprobs: Option<TokenLogprobs>,
}

/// Vocabulary-sized work buffers, owned by the engine thread and lent to each sampler in turn.
#[derive(Clone, Debug, Default)]
pub struct SamplerScratch {
    /// [vocab] the processed logits, then divided by the temperature.
    logits: Vec<f32>,
    /// [vocab] `exp(logit - max)` by token id; valid for the candidates (for all when
    /// `all_weights`).
    weights: Vec<f32>,
    all_weights: bool,
    /// Candidate token ids (a subset of the vocabulary).
    idx: Vec<u32>,
    /// `(logit, id)` working copy for top-p selection.
    pairs: Vec<(f32, u32)>,
}

/// Which tokens survived the truncations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Candidates {
    All,
    /// `idx[..n]`, in no particular (but deterministic) order.
    Subset(usize),
}

// ---- Vocabulary-wide kernels: branch-free inner loops over fixed-width lanes, so that they
// ---- vectorize; the vocabulary is 151,936 wide and these run once per sequence per step.

const LANES: usize = 16;

/// e^x for x <= 0 (a weight relative to the max logit): Cephes' `expf` polynomial, about 1e-7
/// relative error, 0 below -87 (and for -inf). Branch-free and without float-to-int casts, so
/// loops over it vectorize (7x faster than `f32::exp` over the vocabulary).
#[inline(always)]
fn exp_nonpos(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer in the mantissa
    let underflow = x < -87.0;
    let x = if underflow { -87.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let nf = t - ROUND; // round(x / ln 2)
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - nf * 0.693_359_4 - nf * -2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 0.166_666_65)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    let scale = f32::from_bits((n.wrapping_add(127) as u32) << 23);
    if underflow {
        0.0
    } else {
        e * scale
    }
}

/// Largest value; NaN is ignored (it never compares greater).
fn max_of(l: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = l.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    lanes
        .iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Argmax, ties to the lowest id.
fn argmax(l: &[f32]) -> TokenId {
    let max = max_of(l);
    l.iter().position(|&x| x == max).unwrap_or(0) as TokenId
}

/// Sum of `w`: f32 lanes within blocks of 1,024, f64 across blocks (vectorizes; the error is
/// far below what sampling can see).
fn sum_of(w: &[f32]) -> f64 {
    w.chunks(1024)
        .map(|block| {
            let mut lanes = [0.0f32; LANES];
            let chunks = block.chunks_exact(LANES);
            let tail = chunks.remainder();
            for chunk in chunks {
                for (s, &x) in lanes.iter_mut().zip(chunk) {
                    *s += x;
                }
            }
            lanes.iter().chain(tail).map(|&x| f64::from(x)).sum::<f64>()
        })
        .sum()
}

#[inline(always)]
fn weight(x: f32, max: f32) -> f32 {
    let y = x - max;
    if y.is_nan() {
        0.0
    } else {
        exp_nonpos(y)
    }
}

#[inline(always)]
fn fill_weights(l: &[f32], max: f32, w: &mut [f32]) {
    for (out, &x) in w.iter_mut().zip(l) {
        *out = weight(x, max);
    }
}

/// [`fill_weights`] compiled for AVX2: the same operations (Rust never fuses a multiply and an
/// add on its own), so the same bits, on twice the lanes of the SSE2 baseline.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_weights_avx2(l: &[f32], max: f32, w: &mut [f32]) {
    fill_weights(l, max, w);
}

/// Sets `w[i] = exp(l[i] - max)` for every token (NaN counts as 0).
fn fill_weights_dispatch(l: &[f32], max: f32, w: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { fill_weights_avx2(l, max, w) };
        return;
    }
    fill_weights(l, max, w);
}

/// Fills `w[i] = exp(l[i] - max)` for every token (NaN counts as 0) and returns the sum.
fn exp_all(l: &[f32], max: f32, w: &mut [f32]) -> f64 {
    fill_weights_dispatch(l, max, w);
    sum_of(&w[..l.len()])
}

/// `Σ exp(l[i] - max)` without keeping the weights (NaN counts as 0).
fn exp_sum(l: &[f32], max: f32) -> f64 {
    let mut block = [0.0f32; 1024];
    l.chunks(1024)
        .map(|c| {
            fill_weights_dispatch(c, max, &mut block);
            sum_of(&block[..c.len()])
        })
        .sum()
}

/// Most likely first, ties by lower id: the order of top-k and top-p.
fn by_logit_desc(l: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b))
}

/// Puts the ids of the `k` largest logits (ties by lower id) into `idx`, unordered, for
/// `0 < k < l.len()`. One pass keeps a buffer of contenders behind a threshold (the k-th best
/// so far); when the buffer fills, `select_nth_unstable_by` cuts it back to `k`. Later ids lose
/// ties, so a contender must be strictly above the threshold, and a whole block of lanes with
/// nothing above it costs one vector compare.
fn top_k_into(l: &[f32], k: usize, idx: &mut Vec<u32>) {
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

/// One sequence's sampler: its parameters, its RNG and the token history the penalties need.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    vocab_size: usize,
    /// Bitset over the vocabulary of tokens in prompt + output (repetition penalty only).
    seen_bits: Vec<u64>,
    /// The same tokens as a list, to touch only them.
    seen: Vec<TokenId>,
    /// Output token counts (presence / frequency penalties only).
    output_counts: HashMap<TokenId, u32>,
}

impl Sampler {
    /// Validates `params` against a vocabulary of `vocab_size` logits. The RNG is seeded from
    /// `params.seed`, else from `engine_seed` (a random value the engine draws per sequence).
    /// For `n > 1` choices of one request, pass `seed + index` per choice, as vLLM does.
    pub fn new(
        params: SamplingParams,
        prompt_ids: &[TokenId],
        vocab_size: usize,
        engine_seed: u64,
    ) -> Result<Self, SamplingError> {
        params.validate()?;
        if let Some(&(id, _)) = params
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab_size)
        {
            return Err(invalid(
                "logit_bias",
                format!("`logit_bias` token id {id} is out of range (vocabulary of {vocab_size})"),
            ));
        }
        let mut sampler = Self {
            rng: ChaCha8Rng::seed_from_u64(params.seed.unwrap_or(engine_seed)),
            seen_bits: if params.repetition_penalty != 1.0 {
                vec![0; vocab_size.div_ceil(64)]
            } else {
                Vec::new()
            },
            seen: Vec::new(),
            output_counts: HashMap::new(),
            params,
            vocab_size,
        };
        for &id in prompt_ids {
            sampler.mark_seen(id);
        }
        Ok(sampler)
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    fn mark_seen(&mut self, id: TokenId) {
        let i = id as usize;
        if self.seen_bits.is_empty() || i >= self.vocab_size {
            return;
        }
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if self.seen_bits[word] & bit == 0 {
            self.seen_bits[word] |= bit;
            self.seen.push(id);
        }
    }

    /// Records a token appended to the output; the penalties of later steps count it. The
    /// engine calls this for every generated token (sampled or not), after [`Sampler::sample`].
    pub fn push_output_token(&mut self, id: TokenId) {
        self.mark_seen(id);
        if self.params.presence_penalty != 0.0 || self.params.frequency_penalty != 0.0 {
            *self.output_counts.entry(id).or_insert(0) += 1;
        }
    }

    /// Picks the next token from one row of logits (`[vocab_size]`, as the model produced them).
    /// Does not record the token: call [`Sampler::push_output_token`] with what is appended.
    pub fn sample(&mut self, logits: &[f32], scratch: &mut SamplerScratch) -> SampledToken {
        assert_eq!(
            logits.len(),
            self.vocab_size,
            "logits row must be vocab-sized"
        );
        self.process(logits, &mut scratch.logits);
        let token = if self.params.is_greedy() {
            argmax(&scratch.logits)
        } else {
            match self.candidates(scratch) {
                Some((candidates, total)) => self.draw(scratch, candidates, total),
                // No finite maximum (all -inf, or a +inf logit): the argmax is the only sane pick.
                None => argmax(&scratch.logits),
            }
        };
        let logprobs = self
            .params
            .logprobs
            .map(|n| raw_logprobs(logits, token, n, &mut scratch.idx));
        SampledToken { token, logprobs }
    }

    /// Copies the logits into `l` (NaN as -inf), then penalties and bias.
    fn process(&self, raw: &[f32], l: &mut Vec<f32>) {
        l.clear();
        l.extend(
            raw.iter()
                .map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x }),
        );
        let p = &self.params;
        if p.repetition_penalty != 1.0 {
            let r = p.repetition_penalty;
            for &id in &self.seen {
                let x = &mut l[id as usize];
                *x = if *x > 0.0 { *x / r } else { *x * r };
            }
        }
        for (&id, &count) in &self.output_counts {
            l[id as usize] -= p.frequency_penalty * count as f32 + p.presence_penalty;
        }
        for &(id, bias) in &p.logit_bias {
            l[id as usize] += bias;
        }
    }

    /// Temperature, then top-k, top-p, min-p. Leaves the candidates and their weights in `s`;
    /// returns them with the weights' total, or `None` without a finite max.
    fn candidates(&self, s: &mut SamplerScratch) -> Option<(Candidates, f64)> {
        let p = &self.params;
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
        if p.top_k > 0 && p.top_k < v {
            top_k_into(l, p.top_k, &mut s.idx);
            cands = Candidates::Subset(p.top_k);
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

    /// One uniform draw, inverse CDF over the candidates in their (deterministic) order.
    fn draw(&mut self, s: &SamplerScratch, cands: Candidates, total: f64) -> TokenId {
        let target = self.rng.gen::<f64>() * total;
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
                            return (b * BLOCK + j) as TokenId;
                        }
                    }
                }
                // Rounding left `acc` a hair short of `target`: the last weighted token wins.
                w.iter()
                    .rposition(|&x| x > 0.0)
                    .expect("the top token has weight 1") as TokenId
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

/// `Σ w[i]` over tokens with `l[i] >= threshold` (vectorizes like [`sum_of`]).
fn mass_at_or_above(l: &[f32], w: &[f32], threshold: f32) -> f64 {
    l.chunks(1024)
        .zip(w.chunks(1024))
        .map(|(lb, wb)| {
            let mut lanes = [0.0f32; LANES];
            for (lc, wc) in lb.chunks(LANES).zip(wb.chunks(LANES)) {
                for ((s, &x), &wi) in lanes.iter_mut().zip(lc).zip(wc) {
                    *s += if x >= threshold { wi } else { 0.0 };
                }
            }
            lanes.iter().map(|&x| f64::from(x)).sum::<f64>()
        })
        .sum()
}

/// Ids of the tokens with `l[i] >= threshold`, skipping blocks with nothing that high.
fn collect_at_or_above(l: &[f32], threshold: f32, idx: &mut Vec<u32>) {
    idx.clear();
    for (c, chunk) in l.chunks(4 * LANES).enumerate() {
        if max_of(chunk) >= threshold {
            let base = c * 4 * LANES;
            idx.extend(
                chunk
                    .iter()
                    .enumerate()
                    .filter(|(_, &x)| x >= threshold)
                    .map(|(j, _)| (base + j) as u32),
            );
        }
    }
}

/// Log-softmax of the raw logits: the sampled token's value and the `n` best.
fn raw_logprobs(raw: &[f32], token: TokenId, n: usize, idx: &mut Vec<u32>) -> TokenLogprobs {
    let max = max_of(raw);
    let lse = if max.is_finite() {
        f64::from(max) + exp_sum(raw, max).ln()
    } else {
        f64::from(max)
    };
    let logprob = |id: u32| {
        let lp = (f64::from(raw[id as usize]) - lse) as f32;
        if lp.is_nan() {
            MIN_LOGPROB
        } else {
            lp.max(MIN_LOGPROB)
        }
    };
    let mut top = Vec::with_capacity(n);
    if n > 0 {
        if n < raw.len() {
            top_k_into(raw, n, idx);
        } else {
            idx.clear();
            idx.extend(0..raw.len() as u32);
        }
        idx.sort_unstable_by(by_logit_desc(raw));
        top.extend(idx.iter().map(|&id| (id, logprob(id))));
    }
    TokenLogprobs {
        logprob: logprob(token),
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    /// Naive reference for the candidate set: sorts the whole vocabulary. Same f32 arithmetic
    /// as the sampler up to the truncations, which it does the obvious way.
    fn reference_candidates(p: &SamplingParams, processed: &[f32]) -> Vec<u32> {
        let inv_t = 1.0 / p.temperature;
        let l: Vec<f32> = processed
            .iter()
            .map(|&x| if p.temperature != 1.0 { x * inv_t } else { x })
            .collect();
        let max = max_of(&l);
        let mut order: Vec<u32> = (0..l.len() as u32).collect();
        order.sort_by(by_logit_desc(&l));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        if p.top_p < 1.0 {
            let w: Vec<f64> = order
                .iter()
                .map(|&i| f64::from(exp_nonpos(l[i as usize] - max)))
                .collect();
            let target = f64::from(p.top_p) * w.iter().sum::<f64>();
            let mut cum = 0.0;
            let keep = w.iter().take_while(|&&x| {
                let kept = cum < target;
                cum += x;
                kept
            });
            let n = keep.count().max(1);
            order.truncate(n);
        }
        if p.min_p > 0.0 {
            order.retain(|&i| l[i as usize] >= max + p.min_p.ln());
        }
        order.sort_unstable();
        order
    }

    fn sampler_candidates(sampler: &Sampler, logits: &[f32]) -> Vec<u32> {
        let mut s = SamplerScratch::default();
        sampler.process(logits, &mut s.logits);
        let (cands, total) = sampler.candidates(&mut s).expect("finite logits");
        assert!(total >= 1.0, "the top token has weight 1");
        let mut ids: Vec<u32> = match cands {
            Candidates::All => (0..logits.len() as u32).collect(),
            Candidates::Subset(n) => s.idx[..n].to_vec(),
        };
        ids.sort_unstable();
        ids
    }

    fn params(temperature: f32, top_k: usize, top_p: f32, min_p: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let exact = f64::from(x).exp();
            worst = worst.max((f64::from(exp_nonpos(x)) - exact).abs() / exact);
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(-88.0), 0.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn penalties_and_bias_follow_vllm() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            logit_bias: vec![(4, -1.0), (0, 3.0)],
            ..Default::default()
        };
        // Prompt has tokens 0 and 1; output has 2 twice and 1 once.
        let mut sampler = Sampler::new(p, &[0, 1, 1], 5, 0).expect("valid");
        for t in [2, 1, 2] {
            sampler.push_output_token(t);
        }
        let mut l = Vec::new();
        sampler.process(&[4.0, -4.0, 2.0, 1.0, 1.0], &mut l);
        assert_eq!(
            l,
            [
                4.0 / 2.0 + 3.0,               // prompt: divided, then biased
                -4.0 * 2.0 - 0.25 * 1.0 - 0.5, // negative: multiplied; once in output
                2.0 / 2.0 - 0.25 * 2.0 - 0.5,  // twice in output
                1.0,                           // never seen
                1.0 - 1.0,                     // bias only
            ]
        );
    }

    #[test]
    fn top_k_selection_matches_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (v, k) in [
            (10, 3),
            (5_000, 1),
            (5_000, 7),
            (5_000, 2_000),
            (151_936, 20),
            (151_936, 1_500),
        ] {
            // Coarse values make ties at the boundary common.
            let l: Vec<f32> = (0..v)
                .map(|_| (rng.gen::<f32>() * 64.0).floor() / 8.0)
                .collect();
            let mut idx = Vec::new();
            top_k_into(&l, k, &mut idx);
            idx.sort_unstable();
            let mut all: Vec<u32> = (0..v as u32).collect();
            all.sort_by(by_logit_desc(&l));
            all.truncate(k);
            all.sort_unstable();
            assert_eq!(idx, all, "v={v} k={k}");
        }
    }

    /// The full Qwen vocabulary with a peaked, realistic-looking distribution: every path of
    /// the candidate selection against the naive full sort.
    #[test]
    fn candidates_match_reference_on_a_full_vocabulary() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let v = 151_936;
        let logits: Vec<f32> = (0..v)
            .map(|_| {
                rng.gen::<f32>() * 12.0 - 4.0 + if rng.gen::<f32>() < 0.001 { 8.0 } else { 0.0 }
            })
            .collect();
        for p in [
            params(1.0, 0, 0.9, 0.0),
            params(0.7, 0, 0.95, 0.0),
            params(2.0, 0, 0.5, 0.0),
            params(0.6, 20, 0.95, 0.0),
            params(1.0, 50, 1.0, 0.0),
            params(1.0, 0, 1.0, 0.05),
            params(1.3, 1_000, 0.8, 0.01),
            params(1.0, 0, 0.999, 0.0),
        ] {
            let sampler = Sampler::new(p.clone(), &[], v, 0).expect("valid");
            assert_eq!(
                sampler_candidates(&sampler, &logits),
                reference_candidates(&p, &logits),
                "{p:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// The candidate set is exactly the naive reference's, ties and all.
        #[test]
        fn candidates_match_reference(
            logits in proptest::collection::vec(prop_oneof![-8.0f32..8.0, proptest::sample::select(vec![-1.0f32, 0.0, 0.5, 2.0])], 1..80),
            temperature in 0.05f32..3.0,
            top_k in 0usize..90,
            top_p in prop_oneof![Just(1.0f32), 0.01f32..1.0],
            min_p in prop_oneof![Just(0.0f32), 0.0f32..1.0],
        ) {
            let p = params(temperature, top_k, top_p, min_p);
            let sampler = Sampler::new(p.clone(), &[], logits.len(), 0).expect("valid");
            prop_assert_eq!(sampler_candidates(&sampler, &logits), reference_candidates(&p, &logits));
        }
    }
}
