//! The compute boundary of Kestrel.
//!
//! [`Backend`] is the set of operations the model forward needs, over buffers the model never
//! looks inside: activations ([`Backend::Tensor`]), weights in any storage format
//! ([`Backend::Weight`]), per-step batch metadata ([`Backend::Batch`]) and the paged KV cache
//! ([`Backend::KvLayer`]). Model code is written once against this trait; the CPU backend is
//! always built, accelerators live behind cargo features inside this crate only.

pub mod batch;
pub mod cpu;
pub mod error;
pub mod weight;

pub use batch::BatchInput;
pub use cpu::quant::WeightFormat;
pub use error::{BackendError, Result};
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

/// Operations of one compute device. Every op that produces a tensor returns a new one;
/// shapes are `[rows, cols]` row-major, described in each method's doc.
pub trait Backend: Send + Sync + 'static {
    /// Activations, f32, `[rows, cols]`.
    type Tensor: Send + Sync;
    /// A weight matrix `[rows, cols]` or vector `[1, cols]` in its storage format.
    type Weight: Send + Sync;
    /// One step's batch metadata (ids, positions, slot mapping, block tables), uploaded once.
    type Batch: Send + Sync;
    /// K and V storage of one layer, `[num_blocks, block_size, num_kv_heads, head_dim]` each.
    type KvLayer: Send + Sync;

    /// Human-readable device description, for logs.
    fn describe(&self) -> String;

    /// Makes a host weight resident on the device (may keep a reference to mapped bytes).
    fn load_weight(&self, weight: HostWeight) -> Result<Self::Weight>;
    /// Uploads one step's flat batch.
    fn prepare_batch(&self, batch: &BatchInput) -> Result<Self::Batch>;
    /// Allocates one layer of zeroed KV cache.
    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<Self::KvLayer>;
    /// Copies a tensor to the host: `(rows, cols, data)`.
    fn to_host(&self, x: &Self::Tensor) -> Result<(usize, usize, Vec<f32>)>;

    /// `table [vocab, hidden]`, batch ids `[num_tokens]` → `[num_tokens, hidden]`.
    fn embedding(&self, table: &Self::Weight, batch: &Self::Batch) -> Result<Self::Tensor>;
    /// RMSNorm of every group of `weight.cols` values of `x [rows, cols]` (cols a multiple of
    /// the weight's length: per-head norm when `cols = heads * head_dim`).
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Weight, eps: f32) -> Result<Self::Tensor>;
    /// `x [n, k] · wᵀ` with `w [m, k]` → `[n, m]`.
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor>;
    /// `x · wᵢᵀ` for several weights that read the same input (Q/K/V, gate/up): one `[n, mᵢ]`
    /// per weight. Backends may share work between them; the CPU packs `x` once.
    fn matmul_many(&self, x: &Self::Tensor, ws: &[&Self::Weight]) -> Result<Vec<Self::Tensor>> {
        ws.iter().map(|w| self.matmul(x, w)).collect()
    }
    /// `x [n, m] += bias [1, m]` broadcast over rows.
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight) -> Result<()>;
    /// Rotary embedding, NeoX layout (halves rotated), in place on `x [num_tokens, heads * head_dim]`
    /// at the batch positions.
    fn rope(
        &self,
        x: &mut Self::Tensor,
        batch: &Self::Batch,
        head_dim: usize,
        theta: f64,
    ) -> Result<()>;
    /// Writes `k, v [num_tokens, num_kv_heads * head_dim]` into the cache at the batch slot mapping.
    fn write_kv(
        &self,
        cache: &mut Self::KvLayer,
        k: &Self::Tensor,
        v: &Self::Tensor,
        batch: &Self::Batch,
    ) -> Result<()>;
    /// Causal paged attention over the varlen batch: `q [num_tokens, num_heads * head_dim]` →
    /// `[num_tokens, num_heads * head_dim]`. Each token sees its sequence's keys up to its position.
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvLayer,
        batch: &Self::Batch,
        shape: AttnShape,
    ) -> Result<Self::Tensor>;
    /// `silu(gate) * up`, both `[n, m]` → `[n, m]`.
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor>;
    /// `x += y`, same shape.
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()>;
    /// Rows of `x` at the batch's `logits_indices` → `[num_logits, cols]`.
    fn gather_logit_rows(&self, x: &Self::Tensor, batch: &Self::Batch) -> Result<Self::Tensor>;

    /// Runs one forward step's sequence of ops. The default calls `step` on this thread; the
    /// CPU backend runs it on one of its compute threads, so that an op too small to split
    /// (most of a decode step's) runs there inline instead of costing a round trip through
    /// the pool's queue while the calling thread sleeps.
    fn run_step<R: Send>(&self, step: impl FnOnce() -> R + Send) -> R
    where
        Self: Sized,
    {
        step()
    }
}
