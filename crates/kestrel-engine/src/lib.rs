//! The engine side of a request: sampling and the generation loop over the model.
//! No HTTP and no kernels: tensors stay behind `kestrel-model`.

pub mod generate;
pub mod generation_config;
pub mod sampler;

pub mod block_hash;
pub mod block_pool;
pub mod engine;
pub mod handle;
pub mod kv_cache_manager;
pub mod metrics;
pub mod request;
pub mod scheduler;
pub mod sequence;

pub use engine::{start_engine, EngineConfig, EngineError};
pub use handle::{EngineHandle, RequestStream, SubmitError};
pub use metrics::EngineMetrics;
pub use request::{EngineEvent, EngineRequest, FinishReason, Usage};
pub use sampler::{SamplingParams, TokenLogprobs};
