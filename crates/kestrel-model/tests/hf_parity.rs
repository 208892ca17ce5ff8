//! Logits parity with Hugging Face `transformers` on tiny random Qwen3 / Qwen2 models
//! (fixtures made by `scripts/golden/make_hf_goldens.py`): every position's logits within 1e-4
//! of the max |logit|, and 32-token greedy continuations identical. The bf16 fixture's goldens
//! were computed in f32 from the bf16-rounded weights, which is exactly what this engine does
//! with bf16 weights (exact widening, f32 arithmetic), so the same tolerance applies.
//!
//! Also the invariances the batching engine relies on: chunked prefill equals whole prefill,
//! and a batch of several sequences equals each one alone.

use std::path::{Path, PathBuf};

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::{BatchInput, KvDtype};
use kestrel_model::{KvCache, ModelFiles, QwenModel};
use safetensors::SafeTensors;
use serde_json::Value;

mod common;

use common::BLOCK;

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/hf")
        .join(name)
}

struct Golden {
    prompts: Vec<Vec<u32>>,
    greedy: Vec<Vec<u32>>,
    /// `[len_i * vocab]` per prompt.
    logits: Vec<Vec<f32>>,
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn golden(name: &str) -> Golden {
    let dir = fixture_dir(name);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let prompts = ids(&meta["prompts"]);
    let logits = (0..prompts.len())
        .map(|i| {
            let t = st.tensor(&format!("logits.{i}")).unwrap();
            t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        })
        .collect();
    Golden {
        prompts,
        greedy: ids(&meta["greedy"]),
        logits,
    }
}

fn load(name: &str) -> (CpuBackend, QwenModel<CpuBackend>) {
    let files = ModelFiles::open(&fixture_dir(name)).unwrap();
    let backend = CpuBackend::new();
    let model = QwenModel::load(&backend, files.config().clone(), files.weights()).unwrap();
    (backend, model)
}

/// Logits at every position of `prompt`, prefilled in chunks of `chunk` tokens.
fn all_logits(
    backend: &CpuBackend,
    model: &QwenModel<CpuBackend>,
    prompt: &[u32],
    chunk: usize,
) -> Vec<f32> {
    let blocks = prompt.len().div_ceil(BLOCK);
    // A scrambled block table: blocks need not be contiguous or ordered.
    let table: Vec<u32> = (0..blocks as u32).rev().map(|b| b + 3).collect();
    let mut kv = KvCache::new(backend, &model.config, blocks + 3, BLOCK, KvDtype::F32).unwrap();
    let mut out = Vec::new();
    for (i, part) in prompt.chunks(chunk).enumerate() {
        let mut batch = BatchInput::from_sequences(&[(part, i * chunk, &table)], BLOCK);
        batch.logits_indices = (0..part.len() as u32).collect();
        out.extend(model.forward(backend, &batch, &mut kv).unwrap().data);
    }
    out
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max |diff| {worst} > 1e-4 × {scale}"
    );
}

fn check_model(name: &str) {
    let g = golden(name);
    let (backend, model) = load(name);
    for (i, prompt) in g.prompts.iter().enumerate() {
        let got = all_logits(&backend, &model, prompt, usize::MAX);
        assert_close(
            &got,
            &g.logits[i],
            &format!("{name} prompt {i} (len {})", prompt.len()),
        );
        let out = common::greedy(&backend, &model, prompt, 32, KvDtype::F32);
        assert_eq!(out, g.greedy[i], "{name} prompt {i}: greedy continuation");
    }
}

#[test]
fn qwen3_tied_matches_transformers() {
    check_model("qwen3-tiny-tied");
}

#[test]
fn qwen3_untied_matches_transformers() {
    check_model("qwen3-tiny-untied");
}

#[test]
fn qwen2_tied_matches_transformers() {
    check_model("qwen2-tiny-tied");
}

#[test]
fn qwen2_untied_matches_transformers() {
    check_model("qwen2-tiny-untied");
}

#[test]
fn qwen3_bf16_weights_match_transformers_on_the_same_rounded_weights() {
    check_model("qwen3-tiny-tied-bf16");
}

#[test]
fn chunked_prefill_equals_whole_prefill() {
    let (backend, model) = load("qwen3-tiny-tied");
    let prompt: Vec<u32> = (0..70u32).map(|i| (i * 37 + 11) % 320).collect();
    let whole = all_logits(&backend, &model, &prompt, usize::MAX);
    for chunk in [1, 5, 16, 33] {
        let chunked = all_logits(&backend, &model, &prompt, chunk);
        assert_close(&chunked, &whole, &format!("chunk {chunk}"));
    }
}

#[test]
fn a_batch_of_sequences_equals_each_alone() {
    let (backend, model) = load("qwen2-tiny-untied");
    let prompts: Vec<Vec<u32>> = [3usize, 19, 40]
        .iter()
        .map(|&n| (0..n as u32).map(|i| (i * 13 + n as u32) % 257).collect())
        .collect();
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| all_logits(&backend, &model, p, usize::MAX))
        .collect();
    // All three in one flat batch, each with its own blocks.
    let mut next_block = 0u32;
    let tables: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let n = p.len().div_ceil(BLOCK) as u32;
            next_block += n;
            (next_block - n..next_block).collect()
        })
        .collect();
    let seqs: Vec<(&[u32], usize, &[u32])> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| (&p[..], 0, &t[..]))
        .collect();
    let mut batch = BatchInput::from_sequences(&seqs, BLOCK);
    batch.logits_indices = (0..batch.num_tokens() as u32).collect();
    let mut kv = KvCache::new(
        &backend,
        &model.config,
        next_block as usize,
        BLOCK,
        KvDtype::F32,
    )
    .unwrap();
    let batched = model.forward(&backend, &batch, &mut kv).unwrap().data;
    let mut offset = 0;
    for (p, want) in prompts.iter().zip(&alone) {
        let n = p.len() * model.config.vocab_size;
        assert_close(
            &batched[offset..offset + n],
            want,
            &format!("sequence of {}", p.len()),
        );
        offset += n;
    }
}

#[test]
fn a_bad_batch_is_an_error_not_a_crash() {
    let (backend, model) = load("qwen3-tiny-tied");
    let mut kv = KvCache::new(&backend, &model.config, 2, BLOCK, KvDtype::F32).unwrap();
    // Block 5 does not exist in a 2-block cache.
    let batch = BatchInput::from_sequences(&[(&[1, 2, 3], 0, &[5])], BLOCK);
    let err = model
        .forward(&backend, &batch, &mut kv)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the cache"), "{err}");
    // A token id past the vocabulary.
    let batch = BatchInput::from_sequences(&[(&[1, 999], 0, &[0])], BLOCK);
    let err = model
        .forward(&backend, &batch, &mut kv)
        .unwrap_err()
        .to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
}

#[test]
fn sharded_checkpoints_load_like_single_files() {
    // Split the fixture's tensors over two shards with a `model.safetensors.index.json`.
    let src = fixture_dir("qwen2-tiny-tied");
    let tmp = std::env::temp_dir().join(format!("kestrel-sharded-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(src.join("config.json"), tmp.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().cloned().collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = part
            .iter()
            .map(|n| (n.clone(), st.tensor(n).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, &None, &tmp.join(&file)).unwrap();
        for n in part {
            weight_map.insert(n.clone(), Value::String(file.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(tmp.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let backend = CpuBackend::new();
    let files = ModelFiles::open(&tmp).unwrap();
    let sharded = QwenModel::load(&backend, files.config().clone(), files.weights()).unwrap();
    let (_, single) = load("qwen2-tiny-tied");
    let prompt: Vec<u32> = (0..20).collect();
    let a = all_logits(&backend, &sharded, &prompt, usize::MAX);
    let b = all_logits(&backend, &single, &prompt, usize::MAX);
    assert_eq!(a, b);
    std::fs::remove_dir_all(&tmp).unwrap();
}
