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
/// vLLM reports `-inf` logprobs as this (JSON has no infinity).
const MIN_LOGPROB: f32 = -9999.0;

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
        Self { temperature: 0.0, ..Self::default() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature < GREEDY_TEMPERATURE || self.top_k == 1
    }

    /// Range checks, with messages that name the field (as TGI's router does).
    pub fn validate(&self) -> Result<(), SamplingError> {
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return Err(invalid("temperature", format!("`temperature` must be >= 0, got {t}")));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(invalid("top_p", format!("`top_p` must be in (0, 1], got {p}")));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(invalid("min_p", format!("`min_p` must be in [0, 1], got {m}")));
        }
        for (param, v) in [("presence_penalty", self.presence_penalty), ("frequency_penalty", self.frequency_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(invalid(param, format!("`{param}` must be in [-2, 2], got {v}")));
            }
        }
        let r = self.repetition_penalty;
        if !(r.is_finite() && r > 0.0) {
            return Err(invalid("repetition_penalty", format!("`repetition_penalty` must be > 0, got {r}")));
        }
        if let Some(&(id, b)) = self.logit_bias.iter().find(|(_, b)| !(-100.0..=100.0).contains(b)) {
            return Err(invalid("logit_bias", format!("`logit_bias` values must be in [-100, 100], got {b} for token {id}")));
        }
        if let Some(n) = self.logprobs.filter(|&n| n > MAX_TOP_LOGPROBS) {
            return Err(invalid("top_logprobs", format!("`top_logprobs` must be at most {MAX_TOP_LOGPROBS}, got {n}")));
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
    /// [vocab] `exp(logit - max)` when every token is a candidate; else per candidate.
    weights: Vec<f32>,
    /// Candidate token ids (a subset of the vocabulary).
    idx: Vec<u32>,
}

/// Which tokens survived the truncations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Candidates {
    /// Every token; `weights[i]` belongs to token `i`.
    All,
    /// `idx[..n]`; `weights[j]` belongs to `idx[j]`.
    Subset(usize),
}

/// Most likely first, ties by lower id: the order of top-k and top-p.
fn by_logit_desc(l: &[f32]) -> impl Fn(&u32, &u32) -> Ordering + '_ {
    move |&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b))
}

/// Argmax, ties to the lowest id (NaN never wins).
fn argmax(l: &[f32]) -> TokenId {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in l.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as TokenId
}

fn max_logit(l: &[f32]) -> f32 {
    l.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Puts the ids of the `k` largest logits (ties by lower id) into `idx`, unordered, for
/// `0 < k < l.len()`. One pass keeps a buffer of contenders behind a threshold (the k-th best
/// so far); when the buffer fills, `select_nth_unstable_by` cuts it back to `k`. Later ids lose
/// ties, so a contender must be strictly above the threshold: most tokens cost one comparison.
fn top_k_into(l: &[f32], k: usize, idx: &mut Vec<u32>) {
    debug_assert!(k > 0 && k < l.len());
    let cap = (2 * k).max(k + 1024);
    idx.clear();
    let mut threshold = f32::NEG_INFINITY;
    let mut have_threshold = false;
    for (i, &x) in l.iter().enumerate() {
        if have_threshold && !(x > threshold) {
            continue;
        }
        idx.push(i as u32);
        if idx.len() == cap {
            idx.select_nth_unstable_by(k - 1, by_logit_desc(l));
            idx.truncate(k);
            threshold = l[idx[k - 1] as usize];
            have_threshold = true;
        }
    }
    if idx.len() > k {
        idx.select_nth_unstable_by(k - 1, by_logit_desc(l));
        idx.truncate(k);
    }
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
    pub fn new(params: SamplingParams, prompt_ids: &[TokenId], vocab_size: usize, engine_seed: u64) -> Result<Self, SamplingError> {
        params.validate()?;
        if let Some(&(id, _)) = params.logit_bias.iter().find(|(id, _)| *id as usize >= vocab_size) {
            return Err(invalid("logit_bias", format!("`logit_bias` token id {id} is out of range (vocabulary of {vocab_size})")));
        }
        let mut sampler = Self {
            rng: ChaCha8Rng::seed_from_u64(params.seed.unwrap_or(engine_seed)),
            seen_bits: if params.repetition_penalty != 1.0 { vec![0; vocab_size.div_ceil(64)] } else { Vec::new() },
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
        assert_eq!(logits.len(), self.vocab_size, "logits row must be vocab-sized");
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
        let logprobs = self.params.logprobs.map(|n| raw_logprobs(logits, token, n, &mut scratch.idx));
        SampledToken { token, logprobs }
    }

    /// Copies the logits into `l` (NaN as -inf), then penalties and bias.
    fn process(&self, raw: &[f32], l: &mut Vec<f32>) {
        l.clear();
        l.extend(raw.iter().map(|&x| if x.is_nan() { f32::NEG_INFINITY } else { x }));
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

    /// Temperature, then top-k, top-p, min-p. Leaves the candidates and their unnormalized
    /// weights in `s`; returns them with the weights' total, or `None` without a finite max.
    fn candidates(&self, s: &mut SamplerScratch) -> Option<(Candidates, f64)> {
        let p = &self.params;
        let l = &mut s.logits;
        if p.temperature != 1.0 {
            let inv_t = 1.0 / p.temperature;
            l.iter_mut().for_each(|x| *x *= inv_t);
        }
        let l = &s.logits[..];
        let max = max_logit(l);
        if !max.is_finite() {
            return None;
        }
        let v = l.len();
        let mut cands = Candidates::All;
        if p.top_k > 0 && p.top_k < v {
            top_k_into(l, p.top_k, &mut s.idx);
            cands = Candidates::Subset(p.top_k);
        }
        if p.top_p < 1.0 {
            let n = match cands {
                Candidates::Subset(n) => {
                    let c = &mut s.idx[..n];
                    c.sort_unstable_by(by_logit_desc(l));
                    let total: f64 = c.iter().map(|&i| f64::from((l[i as usize] - max).exp())).sum();
                    top_p_prefix(l, max, c, f64::from(p.top_p) * total).unwrap_or(n)
                }
                Candidates::All => top_p_over_all(l, max, p.top_p, &mut s.weights, &mut s.idx),
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
                    s.idx.clear();
                    s.idx.extend((0..v as u32).filter(|&i| l[i as usize] >= threshold));
                    s.idx.len()
                }
            });
        }
        let w = &mut s.weights;
        w.clear();
        let total = match cands {
            Candidates::All => {
                w.extend(l.iter().map(|&x| (x - max).exp()));
                w.iter().map(|&x| f64::from(x)).sum()
            }
            Candidates::Subset(n) => {
                w.extend(s.idx[..n].iter().map(|&i| (l[i as usize] - max).exp()));
                w.iter().map(|&x| f64::from(x)).sum()
            }
        };
        Some((cands, total))
    }

    /// One uniform draw, inverse CDF over the candidates in their (deterministic) order.
    fn draw(&mut self, s: &SamplerScratch, cands: Candidates, total: f64) -> TokenId {
        let target = self.rng.gen::<f64>() * total;
        let mut acc = 0.0;
        let mut last = None;
        for (j, &w) in s.weights.iter().enumerate() {
            if w > 0.0 {
                acc += f64::from(w);
                last = Some(j);
                if acc > target {
                    break;
                }
            }
        }
        // Rounding can leave `acc` a hair short of `target`: the last weighted candidate wins.
        let j = last.expect("the top token always has weight 1");
        match cands {
            Candidates::All => j as TokenId,
            Candidates::Subset(_) => s.idx[j],
        }
    }
}

/// Length of the top-p prefix of `sorted` (most likely first): token `j` is kept while the mass
/// before it is below `target`. `None` when the whole slice is kept without reaching it.
fn top_p_prefix(l: &[f32], max: f32, sorted: &[u32], target: f64) -> Option<usize> {
    let mut cum = 0.0;
    for (j, &i) in sorted.iter().enumerate() {
        if cum >= target && j > 0 {
            return Some(j);
        }
        cum += f64::from((l[i as usize] - max).exp());
    }
    None
}

/// Top-p over the whole vocabulary without sorting it: collect the tokens within `margin` of
/// the max logit, widening the margin until they hold `top_p` of the mass, then sort only those.
/// The collected set is closed upwards in the top-p order (a threshold on the logit), so the
/// top-p prefix lies inside it as soon as it holds enough mass. Returns the prefix length in `idx`.
fn top_p_over_all(l: &[f32], max: f32, top_p: f32, weights: &mut Vec<f32>, idx: &mut Vec<u32>) -> usize {
    weights.clear();
    weights.extend(l.iter().map(|&x| (x - max).exp()));
    let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
    let target = f64::from(top_p) * total;
    let mut margin = 4.0f32;
    loop {
        let threshold = max - margin;
        // Past ~104 nats every weight underflows to 0 in f32: take everything.
        let all = margin > 110.0;
        idx.clear();
        let mut mass = 0.0;
        for (i, (&x, &w)) in l.iter().zip(weights.iter()).enumerate() {
            if all || x >= threshold {
                idx.push(i as u32);
                mass += f64::from(w);
            }
        }
        if mass >= target || all {
            idx.sort_unstable_by(by_logit_desc(l));
            if let Some(n) = top_p_prefix(l, max, idx, target) {
                return n;
            }
            if all {
                return idx.len();
            }
        }
        margin *= 2.0;
    }
}

/// Log-softmax of the raw logits: the sampled token's value and the `n` best.
fn raw_logprobs(raw: &[f32], token: TokenId, n: usize, idx: &mut Vec<u32>) -> TokenLogprobs {
    let max = raw.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    let lse = if max.is_finite() {
        let sum: f64 = raw.iter().map(|&x| f64::from((x - max).exp())).filter(|w| !w.is_nan()).sum();
        f64::from(max) + sum.ln()
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
    TokenLogprobs { logprob: logprob(token), top }
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
        let l: Vec<f32> = processed.iter().map(|&x| if p.temperature != 1.0 { x * inv_t } else { x }).collect();
        let max = max_logit(&l);
        let mut order: Vec<u32> = (0..l.len() as u32).collect();
        order.sort_by(by_logit_desc(&l));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        if p.top_p < 1.0 {
            let w: Vec<f64> = order.iter().map(|&i| f64::from((l[i as usize] - max).exp())).collect();
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
        SamplingParams { temperature, top_k, top_p, min_p, ..SamplingParams::default() }
    }

    #[test]
    fn validate_names_the_field() {
        let cases: [(SamplingParams, &str, &str); 9] = [
            (SamplingParams { top_p: 1.5, ..Default::default() }, "top_p", "`top_p` must be in (0, 1], got 1.5"),
            (SamplingParams { top_p: 0.0, ..Default::default() }, "top_p", "`top_p` must be in (0, 1], got 0"),
            (SamplingParams { temperature: -0.1, ..Default::default() }, "temperature", "`temperature` must be >= 0, got -0.1"),
            (SamplingParams { temperature: f32::NAN, ..Default::default() }, "temperature", "`temperature` must be >= 0, got NaN"),
            (SamplingParams { min_p: 1.1, ..Default::default() }, "min_p", "`min_p` must be in [0, 1], got 1.1"),
            (SamplingParams { presence_penalty: 2.5, ..Default::default() }, "presence_penalty", "`presence_penalty` must be in [-2, 2], got 2.5"),
            (SamplingParams { frequency_penalty: -3.0, ..Default::default() }, "frequency_penalty", "`frequency_penalty` must be in [-2, 2], got -3"),
            (SamplingParams { repetition_penalty: 0.0, ..Default::default() }, "repetition_penalty", "`repetition_penalty` must be > 0, got 0"),
            (SamplingParams { logprobs: Some(21), ..Default::default() }, "top_logprobs", "`top_logprobs` must be at most 20, got 21"),
        ];
        for (p, param, message) in cases {
            assert_eq!(p.validate(), Err(SamplingError { param, message: message.to_owned() }));
        }
        let bias = SamplingParams { logit_bias: vec![(3, 150.0)], ..Default::default() };
        assert_eq!(bias.validate().expect_err("out of range").param, "logit_bias");
        let oob = SamplingParams { logit_bias: vec![(10, 1.0)], ..Default::default() };
        let err = Sampler::new(oob, &[], 10, 0).expect_err("token 10 of a 10-token vocabulary");
        assert_eq!(err.param, "logit_bias");
        assert!(SamplingParams::default().validate().is_ok() && SamplingParams::greedy().validate().is_ok());
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
                4.0 / 2.0 + 3.0,                // prompt: divided, then biased
                -4.0 * 2.0 - 0.25 * 1.0 - 0.5, // negative: multiplied; once in output
                2.0 / 2.0 - 0.25 * 2.0 - 0.5,  // twice in output
                1.0,                           // never seen
                1.0 - 1.0,                     // bias only
            ]
        );
    }

    #[test]
    fn greedy_is_argmax_with_ties_to_the_lowest_id() {
        let logits = [0.5, 3.0, -1.0, 3.0, 2.9];
        for p in [SamplingParams::greedy(), SamplingParams { top_k: 1, ..Default::default() }, SamplingParams { temperature: 1e-6, ..Default::default() }] {
            let mut sampler = Sampler::new(p, &[], 5, 9).expect("valid");
            let mut s = SamplerScratch::default();
            for _ in 0..10 {
                assert_eq!(sampler.sample(&logits, &mut s).token, 1);
            }
        }
        // Greedy sees the penalties and the bias.
        let p = SamplingParams { logit_bias: vec![(4, 0.2)], ..SamplingParams::greedy() };
        let mut sampler = Sampler::new(p, &[], 5, 0).expect("valid");
        assert_eq!(sampler.sample(&logits, &mut SamplerScratch::default()).token, 4);
    }

    #[test]
    fn top_k_selection_matches_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (v, k) in [(10, 3), (5_000, 1), (5_000, 7), (5_000, 2_000), (151_936, 20), (151_936, 1_500)] {
            // Coarse values make ties at the boundary common.
            let l: Vec<f32> = (0..v).map(|_| (rng.gen::<f32>() * 64.0).floor() / 8.0).collect();
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
        let logits: Vec<f32> = (0..v).map(|_| rng.gen::<f32>() * 12.0 - 4.0 + if rng.gen::<f32>() < 0.001 { 8.0 } else { 0.0 }).collect();
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
            assert_eq!(sampler_candidates(&sampler, &logits), reference_candidates(&p, &logits), "{p:?}");
        }
    }

    #[test]
    fn logprobs_are_the_raw_log_softmax() {
        let logits = [1.0f32, 3.0, 3.0, -2.0, f32::NEG_INFINITY];
        let p = SamplingParams { temperature: 0.5, logprobs: Some(3), logit_bias: vec![(0, 50.0)], ..Default::default() };
        let mut sampler = Sampler::new(p, &[], 5, 1).expect("valid");
        let out = sampler.sample(&logits, &mut SamplerScratch::default());
        assert_eq!(out.token, 0, "the bias makes token 0 certain");
        let lse = (1f64.exp() + 2.0 * 3f64.exp() + (-2f64).exp()).ln();
        let lp = out.logprobs.expect("requested");
        assert!((f64::from(lp.logprob) - (1.0 - lse)).abs() < 1e-6, "raw logprob, not the biased one");
        let top: Vec<u32> = lp.top.iter().map(|(id, _)| *id).collect();
        assert_eq!(top, [1, 2, 0], "most likely first, ties by id");
        assert!((f64::from(lp.top[0].1) - (3.0 - lse)).abs() < 1e-6);
        // `-inf` is reported as vLLM's -9999.
        let p = SamplingParams { logprobs: Some(5), ..SamplingParams::greedy() };
        let mut sampler = Sampler::new(p, &[], 5, 1).expect("valid");
        let lp = sampler.sample(&logits, &mut SamplerScratch::default()).logprobs.expect("requested");
        assert_eq!(lp.top[4], (4, MIN_LOGPROB));
        let p = SamplingParams { logprobs: Some(0), ..SamplingParams::greedy() };
        let mut sampler = Sampler::new(p, &[], 5, 1).expect("valid");
        assert!(sampler.sample(&logits, &mut SamplerScratch::default()).logprobs.expect("requested").top.is_empty());
    }

    #[test]
    fn degenerate_logits_do_not_panic() {
        let mut s = SamplerScratch::default();
        for logits in [[f32::NEG_INFINITY; 4], [f32::NAN, 1.0, f32::NAN, 0.0], [0.0, f32::INFINITY, 1.0, f32::INFINITY]] {
            let mut sampler = Sampler::new(params(1.0, 0, 0.9, 0.1), &[], 4, 0).expect("valid");
            let token = sampler.sample(&logits, &mut s).token;
            assert!(token < 4);
            if logits[1].is_infinite() && logits[1] > 0.0 {
                assert_eq!(token, 1);
            }
            if logits[0].is_nan() {
                assert_ne!(token, 0, "NaN is never sampled");
            }
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
