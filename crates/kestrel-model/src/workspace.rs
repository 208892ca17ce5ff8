//! Every activation buffer of a forward step, allocated once at start-up for the largest step
//! (`max_tokens` tokens, `max_logits` logit rows) and reused by every step, so that a step
//! allocates nothing. Buffers are shared between layers: a layer's ops overwrite the previous
//! layer's values in place of holding a tensor per op.

use kestrel_backend::Backend;

use crate::config::ModelConfig;
use crate::error::Result;

pub struct Workspace<B: Backend> {
    /// `[num_tokens, hidden]` the residual stream.
    pub(crate) x: B::Tensor,
    /// `[num_tokens, hidden]` the normed input of attention and of the MLP.
    pub(crate) h: B::Tensor,
    /// `[num_tokens, num_heads * head_dim]`
    pub(crate) q: B::Tensor,
    /// `[num_tokens, num_kv_heads * head_dim]`
    pub(crate) k: B::Tensor,
    pub(crate) v: B::Tensor,
    /// `[num_tokens, num_heads * head_dim]`
    pub(crate) attn: B::Tensor,
    /// `[num_tokens, hidden]` the output of `o_proj`, then of `down_proj`.
    pub(crate) o: B::Tensor,
    /// `[num_tokens, intermediate]`
    pub(crate) gate: B::Tensor,
    pub(crate) up: B::Tensor,
    pub(crate) act: B::Tensor,
    /// `[num_logits, hidden]` the rows whose logits are wanted.
    pub(crate) last: B::Tensor,
    /// `[num_logits, vocab]`
    pub(crate) logits: B::Tensor,
    pub max_tokens: usize,
    pub max_logits: usize,
}

impl<B: Backend> Workspace<B> {
    pub fn new(backend: &B, c: &ModelConfig, max_tokens: usize, max_logits: usize) -> Result<Self> {
        let t = |cols: usize| backend.alloc_tensor(max_tokens, cols);
        let l = |cols: usize| backend.alloc_tensor(max_logits, cols);
        Ok(Self {
            x: t(c.hidden_size)?,
            h: t(c.hidden_size)?,
            q: t(c.q_dim())?,
            k: t(c.kv_dim())?,
            v: t(c.kv_dim())?,
            attn: t(c.q_dim())?,
            o: t(c.hidden_size)?,
            gate: t(c.intermediate_size)?,
            up: t(c.intermediate_size)?,
            act: t(c.intermediate_size)?,
            last: l(c.hidden_size)?,
            logits: l(c.vocab_size)?,
            max_tokens,
            max_logits,
        })
    }

    /// The last step's logits `[num_logits, vocab]`.
    pub fn logits(&self) -> &B::Tensor {
        &self.logits
    }

    /// Bytes the workspace takes at its largest (f32 activations).
    pub fn bytes(c: &ModelConfig, max_tokens: usize, max_logits: usize) -> usize {
        let per_token =
            4 * c.hidden_size + 2 * c.q_dim() + 2 * c.kv_dim() + 3 * c.intermediate_size;
        4 * (max_tokens * per_token + max_logits * (c.hidden_size + c.vocab_size))
    }
}
