//! One step's sampling input and output in flat, device-friendly form: a [`RowParams`] per
//! logit row (plain data, copied to a device in one go) whose ranges index shared flat lists
//! of penalty history, logit bias, banned tokens and allowed-token bitmasks (structured
//! output); and a [`SampleOutput`] of sampled ids
//! plus logprobs for the rows that asked. Both are refilled every step without allocating once
//! their capacity has grown to the largest step.

use super::params::SamplingParams;

/// Sampling parameters of one logit row. `*_start..*_end` index the [`SamplingBatch`] lists.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RowParams {
    /// Philox key: the request's seed (or one the engine drew for it).
    pub seed: u64,
    /// Philox counter: the position of the token being sampled in its sequence.
    pub position: u64,
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub repetition_penalty: f32,
    /// `0` keeps all tokens.
    pub top_k: u32,
    /// `-1`: no logprobs; otherwise how many top logprobs besides the sampled token's.
    pub num_logprobs: i32,
    pub penalty_start: u32,
    pub penalty_end: u32,
    pub bias_start: u32,
    pub bias_end: u32,
    pub banned_start: u32,
    pub banned_end: u32,
    /// `mask_start..mask_end` indexes [`SamplingBatch::allowed_words`]; an empty range
    /// allows every token.
    pub mask_start: u32,
    pub mask_end: u32,
}

impl RowParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature < super::GREEDY_TEMPERATURE || self.top_k == 1
    }
}

/// The sampling side of one step, one row per logit row, in logit-row order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingBatch {
    pub rows: Vec<RowParams>,
    /// `(token, output count)` of every token in a row's prompt + output (count 0: prompt
    /// only); filled only for rows with a penalty.
    pub penalty_tokens: Vec<u32>,
    pub penalty_counts: Vec<u32>,
    /// `logit_bias` entries, applied in order.
    pub bias_tokens: Vec<u32>,
    pub bias_values: Vec<f32>,
    /// Tokens that cannot be sampled at this step (stop tokens before `min_tokens`).
    pub banned_tokens: Vec<u32>,
    /// Allowed-token bitmasks of the rows that have one (a grammar's next-token set): bit
    /// `t % 32` of word `t / 32` of a row's range allows token `t`; tokens past the range are
    /// disallowed.
    pub allowed_words: Vec<u32>,
}

impl SamplingBatch {
    pub fn clear(&mut self) {
        self.rows.clear();
        self.penalty_tokens.clear();
        self.penalty_counts.clear();
        self.bias_tokens.clear();
        self.bias_values.clear();
        self.banned_tokens.clear();
        self.allowed_words.clear();
    }

    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    /// Appends a row sampling the token at `position` of a sequence seeded with `seed`.
    /// `history` is `(token, output count)` for the sequence's distinct tokens (read only when
    /// a penalty is set); `banned` tokens get `-inf`.
    pub fn push(
        &mut self,
        params: &SamplingParams,
        seed: u64,
        position: u64,
        history: impl IntoIterator<Item = (u32, u32)>,
        banned: &[u32],
    ) {
        let penalty_start = self.penalty_tokens.len() as u32;
        if params.has_penalties() {
            for (t, c) in history {
                self.penalty_tokens.push(t);
                self.penalty_counts.push(c);
            }
        }
        let bias_start = self.bias_tokens.len() as u32;
        for &(t, b) in &params.logit_bias {
            self.bias_tokens.push(t);
            self.bias_values.push(b);
        }
        let banned_start = self.banned_tokens.len() as u32;
        self.banned_tokens.extend_from_slice(banned);
        self.rows.push(RowParams {
            seed,
            position,
            temperature: params.temperature,
            top_p: params.top_p,
            min_p: params.min_p,
            presence_penalty: params.presence_penalty,
            frequency_penalty: params.frequency_penalty,
            repetition_penalty: params.repetition_penalty,
            top_k: params.top_k.min(u32::MAX as usize) as u32,
            num_logprobs: params.logprobs.map_or(-1, |n| n as i32),
            penalty_start,
            penalty_end: self.penalty_tokens.len() as u32,
            bias_start,
            bias_end: self.bias_tokens.len() as u32,
            banned_start,
            banned_end: self.banned_tokens.len() as u32,
            mask_start: 0,
            mask_end: 0,
        });
    }

    /// Restricts the last pushed row to the tokens whose bits are set in `words` (bit `t % 32`
    /// of word `t / 32`). A row whose mask allows nothing samples as if every logit were
    /// `-inf` (the lowest id); the engine never asks for that.
    pub fn restrict_last_row(&mut self, words: &[u32]) {
        let start = self.allowed_words.len() as u32;
        self.allowed_words.extend_from_slice(words);
        let row = self
            .rows
            .last_mut()
            .expect("restrict_last_row follows a push");
        row.mask_start = start;
        row.mask_end = self.allowed_words.len() as u32;
    }

    /// Reserves `num_words` mask words for the last pushed row, all tokens allowed, to be
    /// written after the step's forward has started ([`Self::mask_words_mut`]): a grammar
    /// computes its mask while the forward pass runs. Returns the words' offset.
    pub fn reserve_mask_last_row(&mut self, num_words: usize) -> usize {
        let start = self.allowed_words.len();
        self.allowed_words.resize(start + num_words, u32::MAX);
        let row = self
            .rows
            .last_mut()
            .expect("reserve_mask_last_row follows a push");
        row.mask_start = start as u32;
        row.mask_end = self.allowed_words.len() as u32;
        start
    }

    /// The mask words reserved at `start` by [`Self::reserve_mask_last_row`].
    pub fn mask_words_mut(&mut self, start: usize, num_words: usize) -> &mut [u32] {
        &mut self.allowed_words[start..start + num_words]
    }

    /// Row `row`'s allowed-token mask, `None` when every token is allowed.
    pub fn allowed(&self, row: &RowParams) -> Option<&[u32]> {
        (row.mask_end > row.mask_start)
            .then(|| &self.allowed_words[row.mask_start as usize..row.mask_end as usize])
    }

    /// Checks the ranges and that every token id lies in a vocabulary of `vocab`.
    pub fn validate(&self, vocab: usize) -> crate::Result<()> {
        let bad = |m: String| Err(crate::BackendError::Batch(m));
        let in_vocab = |ids: &[u32]| ids.iter().all(|&t| (t as usize) < vocab);
        if self.penalty_tokens.len() != self.penalty_counts.len()
            || self.bias_tokens.len() != self.bias_values.len()
        {
            return bad("sampling lists of different lengths".into());
        }
        if !in_vocab(&self.penalty_tokens)
            || !in_vocab(&self.bias_tokens)
            || !in_vocab(&self.banned_tokens)
        {
            return bad(format!(
                "a sampling token id is outside the vocabulary of {vocab}"
            ));
        }
        for (i, r) in self.rows.iter().enumerate() {
            let ok = |s: u32, e: u32, len: usize| s <= e && e as usize <= len;
            if !ok(r.penalty_start, r.penalty_end, self.penalty_tokens.len())
                || !ok(r.bias_start, r.bias_end, self.bias_tokens.len())
                || !ok(r.banned_start, r.banned_end, self.banned_tokens.len())
                || !ok(r.mask_start, r.mask_end, self.allowed_words.len())
            {
                return bad(format!("sampling row {i}: ranges outside the lists"));
            }
            if r.num_logprobs > super::MAX_TOP_LOGPROBS as i32 {
                return bad(format!("sampling row {i}: {} top logprobs", r.num_logprobs));
            }
        }
        Ok(())
    }
}

/// Logprobs of one sampled position, from the raw model distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    /// The `n` most likely tokens, most likely first, ties by lower id.
    pub top: Vec<(u32, f32)>,
}

/// What a step's sampling returns to the host.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleOutput {
    /// `[num_rows]` sampled ids.
    pub tokens: Vec<u32>,
    /// `[num_rows]` the sampled token's raw logprob (0 for rows that did not ask).
    pub logprobs: Vec<f32>,
    /// Top logprobs of every row that asked, concatenated.
    pub top: Vec<(u32, f32)>,
    /// `[num_rows + 1]` start of each row's entries in `top`.
    pub top_start: Vec<u32>,
}

impl SampleOutput {
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.logprobs.clear();
        self.top.clear();
        self.top_start.clear();
    }

    /// Row `i`'s logprobs when its parameters asked for them.
    pub fn token_logprobs(&self, i: usize, params: &RowParams) -> Option<TokenLogprobs> {
        (params.num_logprobs >= 0).then(|| TokenLogprobs {
            logprob: self.logprobs[i],
            top: self.top[self.top_start[i] as usize..self.top_start[i + 1] as usize].to_vec(),
        })
    }
}
