//! Helpers shared by this crate's integration tests.

use std::path::PathBuf;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::{BatchInput, KvDtype};
use kestrel_model::{KvCache, QwenModel};

pub const BLOCK: usize = 16;

/// `${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}`, filled by `scripts/fetch-fixtures.sh`.
#[allow(dead_code)]
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("KESTREL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                .join(".cache/kestrel/fixtures")
        })
}

/// `n` greedy tokens after `prompt` (prefill in one step, then one token per step), written
/// directly against the model: the engine crate sits above this one.
pub fn greedy(
    backend: &CpuBackend,
    model: &QwenModel<CpuBackend>,
    prompt: &[u32],
    n: usize,
    dtype: KvDtype,
) -> Vec<u32> {
    let blocks = (prompt.len() + n).div_ceil(BLOCK);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let mut kv = KvCache::new(backend, &model.config, blocks, BLOCK, dtype).unwrap();
    let mut logits = model
        .forward(
            backend,
            &BatchInput::from_sequences(&[(prompt, 0, &table)], BLOCK),
            &mut kv,
        )
        .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let row = logits.row(0);
        let next = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b }) as u32;
        out.push(next);
        let pos = prompt.len() + out.len() - 1;
        logits = model
            .forward(
                backend,
                &BatchInput::from_sequences(&[(&[next], pos, &table)], BLOCK),
                &mut kv,
            )
            .unwrap();
    }
    out
}
