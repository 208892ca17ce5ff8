//! The conformance suite of the engine stack: every case is a generic body run on each compiled
//! backend (`backend_tests!`), so a new backend answers the same questions as the CPU:
//!
//! - `parity`: logits against Hugging Face `transformers` on tiny random Qwen3 / Qwen2 models,
//!   greedy continuations against `transformers` and against llama.cpp on the real GGUF, with
//!   the engine generating (the same path as the server);
//! - `invariance`: a sequence's tokens do not depend on what shares its steps, on how its
//!   prefill is chunked, on a prefix-cache hit, on preemption, or on async scheduling; seeded
//!   sampling reproduces across batch compositions;
//! - `real_model`: the same guarantees on the real GGUF, through its quantized kernels.
//!
//! The backend's own ops and sampler are checked in `kestrel-backend/tests/{ops,sampling}.rs`.

mod common;
mod invariance;
mod parity;
mod real_model;
mod speculative;
