//! Shared set-up of the server's integration tests: the tiny random-weight Qwen3 with the real
//! Qwen3 tokenizer (needs the fixture from `scripts/fetch-fixtures.sh`).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

pub fn fixtures() -> PathBuf {
    std::env::var_os("KESTREL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/kestrel/fixtures")
        })
}

/// The tiny random-weight Qwen3 (f32) with the real tokenizer, written once per test binary.
pub fn tiny_model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tok_dir = fixtures().join("qwen3-tokenizer");
        assert!(
            tok_dir.join("tokenizer.json").exists(),
            "missing the Qwen3 tokenizer fixture at {}: run scripts/fetch-fixtures.sh (or set KESTREL_FIXTURES)",
            tok_dir.display()
        );
        let dir = tempfile::tempdir().expect("temp dir").keep();
        let config = kestrel_model::synth::qwen3_config("tiny").expect("tiny config");
        kestrel_model::synth::write_safetensors_dir(
            &config,
            kestrel_backend::WeightFormat::F32,
            7,
            &dir,
            Some(&tok_dir),
        )
        .expect("write tiny model");
        dir
    })
}

pub mod redis;
pub mod server;
