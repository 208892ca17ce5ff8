//! `kestrel-bench`: a serving benchmark for any OpenAI-compatible endpoint (kestrel, vLLM,
//! llama.cpp's server, SGLang, ...). It knows HTTP and the OpenAI wire format, never an engine.
//!
//! The path of a benchmark, one file each: `dataset`/`builtin` make prompts, `arrivals` times
//! them, `driver` releases them under a concurrency limit, `client` sends one and times its
//! stream (decoded by `sse`) into a `record`, `stats` turns records into metrics (with
//! `percentile`), and `results`/`markdown`/`html` report them.

pub mod arrivals;
pub mod builtin;
pub mod client;
pub mod dataset;
pub mod driver;
pub mod error;
pub mod html;
pub mod markdown;
pub mod percentile;
pub mod record;
pub mod results;
pub mod sse;
pub mod stats;
pub mod tokens;

pub use builtin::{builtin_prompts, AnswerClass};
pub use client::{Client, Endpoint, Target};
pub use dataset::{Prompt, PromptBody};
pub use driver::{run, RunResult, RunSpec};
pub use error::{Error, Result};
pub use record::{ErrorKind, RequestRecord, TokenSource};
pub use results::BenchReport;
pub use stats::{RunMetrics, Slo};
pub use tokens::TokenCounter;
