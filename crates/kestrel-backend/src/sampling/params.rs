//! What a request asks of the sampler, with OpenAI's defaults and range checks whose messages
//! name the request field (as TGI's router does).

type TokenId = u32;

/// Most `top_logprobs` a request may ask for (OpenAI's and vLLM's default limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Temperatures below this are greedy (vLLM's `_SAMPLING_EPS`).
pub const GREEDY_TEMPERATURE: f32 = 1e-5;
/// Logprobs are clamped to this, as vLLM reports `-inf` (JSON has no infinity).
pub const MIN_LOGPROB: f32 = -9999.0;

/// Sampling parameters of one sequence. Defaults are the OpenAI ones (temperature 1, nothing
/// cut).
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

    /// Whether the answer is a function of the request alone: greedy, or seeded. Such
    /// requests get batch-invariant kernels by default, so that they reproduce in any batch.
    pub fn is_deterministic(&self) -> bool {
        self.is_greedy() || self.seed.is_some()
    }

    /// Whether any penalty needs the sequence's token history.
    pub fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }

    /// Range checks, with messages that name the field.
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

    /// [`Self::validate`] plus the checks that need the vocabulary size.
    pub fn validate_for_vocab(&self, vocab_size: usize) -> Result<(), SamplingError> {
        self.validate()?;
        if let Some(&(id, _)) = self
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab_size)
        {
            return Err(invalid(
                "logit_bias",
                format!("`logit_bias` token id {id} is out of range (vocabulary of {vocab_size})"),
            ));
        }
        Ok(())
    }
}
