//! The paged KV cache storage: one K and one V buffer per layer, each
//! `[num_blocks, block_size, num_kv_heads, head_dim]`, sized from a memory budget rather than
//! from a maximum batch. Which blocks belong to which sequence is the engine's business; this
//! type only owns the memory.

use kestrel_backend::{Backend, KvDtype, KvLayout};

use crate::config::ModelConfig;
use crate::error::Result;

pub struct KvCache<B: Backend> {
    pub layout: KvLayout,
    /// `[num_layers]`.
    pub layers: Vec<B::KvLayer>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(
        backend: &B,
        config: &ModelConfig,
        num_blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> Result<Self> {
        let layout = KvLayout {
            num_blocks,
            block_size,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            dtype,
        };
        let layers = (0..config.num_layers)
            .map(|_| backend.alloc_kv_layer(layout))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Self { layout, layers })
    }

    /// How many blocks fit in `bytes` for this model (at least one).
    pub fn blocks_for_budget(
        config: &ModelConfig,
        block_size: usize,
        dtype: KvDtype,
        bytes: usize,
    ) -> usize {
        let per_block = KvLayout {
            num_blocks: 1,
            block_size,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
            dtype,
        }
        .bytes_per_layer()
            * config.num_layers;
        (bytes / per_block.max(1)).max(1)
    }
}
