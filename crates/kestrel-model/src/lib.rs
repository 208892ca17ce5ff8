//! Qwen3 / Qwen2 / Llama / Phi-3 models: configuration, weight sources (safetensors directories, GGUF files,
//! the Hugging Face Hub), the paged KV cache, the forward pass written once over the
//! [`kestrel_backend::Backend`] trait, its workspace, and the runner that owns all of them on
//! the device and turns a step's batch into sampled ids. Quantization is a property of each
//! weight, never a second copy of the model.

pub mod config;
pub mod decoder;
pub mod error;
pub mod gguf;
pub mod gguf_writer;
pub mod hub;
pub mod kv_cache;
pub mod quantize;
pub mod runner;
pub mod safetensors_source;
pub mod source;
pub mod synth;
pub mod workspace;

pub use config::{Arch, ModelConfig, RopeScaling};
pub use decoder::DecoderModel;
pub use error::{ModelError, Result};
pub use kv_cache::KvCache;
/// The name the engine, server and CLI know the decoder by (it was Qwen-only once).
pub type QwenModel<B> = DecoderModel<B>;
pub use runner::{ModelRunner, RunnerConfig};
pub use source::{ModelFiles, WeightSource};
pub use workspace::Workspace;
