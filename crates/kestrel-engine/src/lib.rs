//! The engine: requests become sequences, the scheduler plans each step under a token budget,
//! the KV cache manager hands out paged blocks (with automatic prefix caching), and the engine
//! thread runs the steps on a [`kestrel_model::ModelRunner`]. No HTTP and no kernels: tensors
//! stay behind `kestrel-model`, sampling happens on the backend.

pub mod generation_config;

pub mod batching_policy;
pub mod block_hash;
pub mod block_pool;
pub mod engine;
pub mod handle;
pub mod kv_cache_manager;
pub mod metrics;
pub mod request;
pub mod sampling_state;
pub mod scheduler;
pub mod sequence;
pub mod speculative;
pub mod structured;

pub use batching_policy::BatchingPolicy;
pub use engine::{start_engine, BatchInvariance, EngineConfig, EngineError};
pub use handle::{EngineHandle, RequestStream, SubmitError};
pub use kestrel_backend::sampling::{SamplingError, MAX_TOP_LOGPROBS, MIN_LOGPROB};
pub use kestrel_backend::{SamplingParams, TokenLogprobs};
pub use metrics::EngineMetrics;
pub use request::{EngineEvent, EngineRequest, FinishReason, Usage};
pub use speculative::{SpeculativeConfig, SpeculativeConfigError};
pub use structured::{
    Grammar, GrammarCompiler, GrammarError, GrammarSpec, OutputConstraint, Thinking,
};
