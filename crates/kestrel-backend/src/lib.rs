//! The compute boundary of Kestrel.
//!
//! [`Backend`] is the set of operations the model forward needs, over buffers the model never
//! looks inside: activations ([`Backend::Tensor`]), weights in any storage format
//! ([`Backend::Weight`]), the step's batch ([`Backend::Batch`]), the paged KV cache
//! ([`Backend::KvLayer`]) and the step's sampling buffers ([`Backend::Sampling`]). Model code is
//! written once against this trait; the CPU backend is always built, accelerators live behind
//! cargo features inside this crate only (see [`device`]).
//!
//! # The contract
//! - **Start-up.** Every buffer a step touches is allocated once, sized for the largest step:
//!   activation tensors (`alloc_tensor(max_rows, cols)`), the batch and sampling buffers, the KV
//!   cache. Ops write into tensors given to them (`out`), which take the op's row count; nothing
//!   inside a step allocates device memory.
//! - **A step.** The host fills a [`BatchInput`] and a [`SamplingBatch`] and uploads them
//!   (`upload_batch`, `upload_sampling`); then one [`Backend::run_step`] call runs the whole
//!   forward and `sample` (on the device: logits never leave it) under [`StepOptions`]. A
//!   device backend may enqueue the step and return before it finishes, and may capture a
//!   decode step into a graph and replay it (`StepOptions::graph_tokens`).
//! - **Synchronization.** The host reads a step's results with [`Backend::read_sampled`], which
//!   waits for that step. Between `run_step` and `read_sampled` the host is free to schedule the
//!   next step; steps run in the order they were launched, so the next step may read the
//!   previous one's sampled ids on the device (placeholder input ids, see [`batch`]).
//! - **Ownership.** The backend owns device memory and kernels; the model owns the order of ops
//!   and the workspace; the engine owns scheduling, the KV block tables and the sampling state
//!   of each sequence (history, seed, position), which it writes into the step's batches.

pub mod batch;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod device;
pub mod error;
pub mod sampling;
pub mod testing;
pub mod weight;

pub use batch::{BatchInput, KvCopy, PLACEHOLDER};
pub use cpu::quant::WeightFormat;
pub use device::{with_backend, BackendVisitor, DeviceChoice, DeviceKind, MemoryInfo};
pub use error::{BackendError, Result};
pub use sampling::{SampleOutput, SamplingBatch, SamplingParams, TokenLogprobs};
pub use weight::{HostBytes, HostWeight};

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvDtype {
    /// Exact; used for f32 checkpoints and the `transformers` parity tests.
    F32,
    /// Half the memory; llama.cpp's default cache type, used for GGUF and 16-bit checkpoints.
    F16,
}

impl KvDtype {
    pub fn size_bytes(self) -> usize {
        match self {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        }
    }
}

/// Geometry of the paged KV cache of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLayout {
    pub num_blocks: usize,
    pub block_size: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub dtype: KvDtype,
}

impl KvLayout {
    /// Bytes of K plus V storage for one layer.
    pub fn bytes_per_layer(&self) -> usize {
        2 * self.num_blocks
            * self.block_size
            * self.num_kv_heads
            * self.head_dim
            * self.dtype.size_bytes()
    }
}

/// Attention shape shared by every layer of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Softmax scale, `1 / sqrt(head_dim)` for Qwen.
    pub scale: f32,
}

/// Rotary embedding of one model (NeoX layout: within a head, element `i` pairs with
/// `i + head_dim/2`, rotated by `pos * inv_freq[i]`, and both are multiplied by `scale`).
#[derive(Debug)]
pub struct Rope<'a, W> {
    pub head_dim: usize,
    /// Base of the default frequencies `inv_freq[i] = theta^(-2i/head_dim)`.
    pub theta: f64,
    /// Per-pair inverse frequencies `[1, head_dim / 2]` (f32) that replace the default ones:
    /// scaled RoPE (Llama 3's `llama3`, Phi-3's `longrope`) computes them once at load.
    pub inv_freq: Option<&'a W>,
    /// Factor on cos and sin (the attention factor of `longrope`); 1 otherwise.
    pub scale: f32,
}

impl<W> Clone for Rope<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W> Copy for Rope<'_, W> {}

/// The largest step a batch buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_tokens: usize,
    pub max_seqs: usize,
    /// Block-table entries of all sequences together.
    pub max_blocks: usize,
}

/// How one step runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepOptions {
    /// Batch-invariant kernels: every row's result is the same function of that row's inputs
    /// whatever else is in the batch and however many rows there are (one reduction order for
    /// every batch size). Deterministic (greedy or seeded) requests need it to reproduce.
    pub batch_invariant: bool,
    /// A decode-only step of this many tokens, which a graph-capturing backend may record once
    /// per size and replay; `None` runs the step eagerly. Ignored by the CPU backend.
    pub graph_tokens: Option<usize>,
}

/// Operations of one compute device. Shapes are `[rows, cols]` row-major; ops write their
/// result into `out`, which takes the op's row count (and must have the capacity).
pub trait Backend: Send + Sync + 'static {
    /// Activations, f32, `[rows ≤ capacity, cols]`.
    type Tensor: Send + Sync;
    /// A weight matrix `[rows, cols]` or vector `[1, cols]` in its storage format.
    type Weight: Send + Sync;
    /// The step's batch (ids, positions, slot mapping, block tables), persistent across steps.
    type Batch: Send + Sync;
    /// K and V storage of one layer, `[num_blocks, block_size, num_kv_heads, head_dim]` each.
    type KvLayer: Send + Sync;
    /// The step's sampling parameters and sampled ids, persistent across steps.
    type Sampling: Send + Sync;

    /// Human-readable device description, for logs.
    fn describe(&self) -> String;
    fn kind(&self) -> DeviceKind;
    /// Memory of the device (host RAM for the CPU), for sizing the KV cache.
    fn memory_info(&self) -> MemoryInfo;

    /// Makes a host weight resident on the device (may keep a reference to mapped bytes).
    fn load_weight(&self, weight: HostWeight) -> Result<Self::Weight>;
    /// [`Self::load_weight`] for a matrix whose rows are only gathered, never multiplied (an
    /// untied token embedding): a backend may keep it without the layout its matmul kernels
    /// want.
    fn load_embedding(&self, weight: HostWeight) -> Result<Self::Weight> {
        self.load_weight(weight)
    }
    /// An activation buffer of up to `max_rows` rows (starts with 0 rows).
    fn alloc_tensor(&self, max_rows: usize, cols: usize) -> Result<Self::Tensor>;
    fn alloc_batch(&self, limits: BatchLimits) -> Result<Self::Batch>;
    /// Allocates one layer of zeroed KV cache.
    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<Self::KvLayer>;
    /// Sampling buffers for up to `max_rows` logit rows over a vocabulary of `vocab`.
    fn alloc_sampling(&self, max_rows: usize, vocab: usize) -> Result<Self::Sampling>;

    /// Copies the step's batch to the device (checked against the buffer's limits).
    fn upload_batch(&self, host: &BatchInput, dev: &mut Self::Batch) -> Result<()>;
    /// Copies the step's sampling parameters to the device.
    fn upload_sampling(&self, host: &SamplingBatch, dev: &mut Self::Sampling) -> Result<()>;

    /// Replaces the batch's placeholder ids by the ids `prev` sampled (the previous step).
    fn resolve_placeholders(&self, batch: &mut Self::Batch, prev: &Self::Sampling) -> Result<()>;
    /// `table [vocab, hidden]`, batch ids `[num_tokens]` → `out [num_tokens, hidden]`.
    fn embedding(
        &self,
        table: &Self::Weight,
        batch: &Self::Batch,
        out: &mut Self::Tensor,
    ) -> Result<()>;
    /// RMSNorm of every group of `weight.cols` values of `x [rows, cols]` (cols a multiple of
    /// the weight's length: per-head norm when `cols = heads * head_dim`) → `out [rows, cols]`.
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        weight: &Self::Weight,
        eps: f32,
        out: &mut Self::Tensor,
    ) -> Result<()>;
    /// [`Backend::rms_norm`] in place.
    fn rms_norm_inplace(&self, x: &mut Self::Tensor, weight: &Self::Weight, eps: f32)
        -> Result<()>;
    /// `x [n, k] · wᵀ` with `w [m, k]` → `out [n, m]`.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight, out: &mut Self::Tensor) -> Result<()>;
    /// `x · wᵢᵀ → outᵢ` for several weights that read the same input (Q/K/V, gate/up).
    /// Backends may share work between them; the CPU packs `x` once.
    fn matmul_many(
        &self,
        x: &Self::Tensor,
        ws: &[&Self::Weight],
        outs: &mut [&mut Self::Tensor],
    ) -> Result<()>;
    /// `x [n, m] += bias [1, m]` broadcast over rows.
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight) -> Result<()>;
    /// Rotary embedding, NeoX layout (halves rotated), in place on `x [num_tokens, heads * head_dim]`
    /// at the batch positions.
    fn rope(
        &self,
        x: &mut Self::Tensor,
        batch: &Self::Batch,
        rope: Rope<'_, Self::Weight>,
    ) -> Result<()>;
    /// Writes `k, v [num_tokens, num_kv_heads * head_dim]` into the cache at the batch slot mapping.
    fn write_kv(
        &self,
        cache: &mut Self::KvLayer,
        k: &Self::Tensor,
        v: &Self::Tensor,
        batch: &Self::Batch,
    ) -> Result<()>;
    /// Copies the batch's [`BatchInput::kv_copies`] (slots of one block into another) in
    /// `cache`. The model calls it in every layer after [`Backend::write_kv`] and before
    /// [`Backend::attention`]; a step without copies issues nothing.
    fn copy_kv(&self, cache: &mut Self::KvLayer, batch: &Self::Batch) -> Result<()>;
    /// Causal paged attention over the varlen batch: `q [num_tokens, num_heads * head_dim]` →
    /// `out [num_tokens, num_heads * head_dim]`. Each token sees its sequence's keys up to its
    /// position.
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvLayer,
        batch: &Self::Batch,
        shape: AttnShape,
        out: &mut Self::Tensor,
    ) -> Result<()>;
    /// `out = silu(gate) * up`, all `[n, m]`.
    fn silu_mul(
        &self,
        gate: &Self::Tensor,
        up: &Self::Tensor,
        out: &mut Self::Tensor,
    ) -> Result<()>;
    /// `x += y`, same shape.
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// Rows of `x` at the batch's `logits_indices` → `out [num_logits, cols]`.
    fn gather_logit_rows(
        &self,
        x: &Self::Tensor,
        batch: &Self::Batch,
        out: &mut Self::Tensor,
    ) -> Result<()>;
    /// Samples one token per row of `logits [rows, vocab]` with the uploaded parameters (see
    /// [`sampling`] for the semantics); the ids (and requested logprobs) stay in `sampling`
    /// until [`Backend::read_sampled`].
    fn sample(&self, logits: &Self::Tensor, sampling: &mut Self::Sampling) -> Result<()>;

    /// Waits for the step that sampled into `sampling` and copies its results to the host.
    fn read_sampled(&self, sampling: &Self::Sampling, out: &mut SampleOutput) -> Result<()>;
    /// Sets `out` to `data [rows, out's cols]` from the host. For tests and debugging.
    fn from_host(&self, data: &[f32], rows: usize, out: &mut Self::Tensor) -> Result<()>;
    /// Copies a tensor to the host (`out` is replaced): `(rows, cols)`. For tests and debugging.
    fn to_host(&self, x: &Self::Tensor, out: &mut Vec<f32>) -> Result<(usize, usize)>;

    /// Runs one forward step's sequence of ops. The CPU backend runs it on one of its compute
    /// threads (an op too small to split runs there inline instead of a round trip through the
    /// pool's queue) with the kernels `opts` asks for; a device backend enqueues it, or replays
    /// a graph recorded for `opts.graph_tokens` without calling `step` (so `step` must issue
    /// the same ops whenever the options are the same, reading everything else from the
    /// persistent buffers).
    fn run_step<E: Send>(
        &self,
        opts: StepOptions,
        step: impl FnOnce() -> std::result::Result<(), E> + Send,
    ) -> std::result::Result<(), E>
    where
        Self: Sized;
}
