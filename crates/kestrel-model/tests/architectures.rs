//! Llama and Phi-3 beside Qwen: `kestrel synth` writes both in safetensors and GGUF with their
//! real shapes and llama.cpp's metadata, the conversion to GGUF (llama.cpp's converter layout:
//! Llama's q/k rows permuted, scaled RoPE as factor tensors, Phi-3's fused tensors kept) gives
//! the safetensors model's logits back, quantized conversions load, and a checkpoint that lacks
//! a tensor of its architecture is an error that names the tensor.

use std::path::Path;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::{BatchInput, KvDtype, StepOptions, WeightFormat};
use kestrel_model::gguf::GgufFile;
use kestrel_model::quantize::write_gguf_from_hf;
use kestrel_model::synth::{
    config_for, gguf_rope_tensors, llama_config, phi3_config, tensor_shapes, write_gguf_model,
    write_safetensors_dir,
};
use kestrel_model::{
    Arch, DecoderModel, ModelConfig, ModelFiles, ModelRunner, RopeScaling, RunnerConfig,
    WeightSource,
};

const BLOCK: usize = 16;

/// Every position's logits for `prompt`, `[len * vocab]`.
fn logits(config: &ModelConfig, weights: &dyn WeightSource, prompt: &[u32]) -> Vec<f32> {
    let backend = CpuBackend::new();
    let model = DecoderModel::load(&backend, config.clone(), weights).unwrap();
    let blocks = prompt.len().div_ceil(BLOCK);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let runner_config = RunnerConfig::sized(prompt.len(), blocks, KvDtype::F32);
    let mut runner = ModelRunner::new(backend, model, runner_config).unwrap();
    let mut batch = BatchInput::from_sequences(&[(prompt, 0, &table)], BLOCK);
    batch.logits_indices = (0..prompt.len() as u32).collect();
    let mut out = Vec::new();
    runner
        .logits(&batch, StepOptions::default(), &mut out)
        .unwrap();
    out
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The tiny test configs: Llama with `llama3` scaling (its default), and Phi-3 with and without
/// `longrope` (a 256 context over an original 32, so the long factors apply).
fn tiny_configs() -> Vec<ModelConfig> {
    let mut llama = llama_config("tiny").unwrap();
    if let RopeScaling::Llama3 {
        original_max_position_embeddings,
        ..
    } = &mut llama.rope_scaling
    {
        // Puts some pairs of head_dim 16 into the smoothed band.
        *original_max_position_embeddings = 64;
    }
    llama.rope_theta = 10_000.0;
    let mut untied = llama.clone();
    untied.tie_word_embeddings = false;
    let phi3 = phi3_config("tiny").unwrap();
    let longrope = ModelConfig {
        max_position_embeddings: 256,
        rope_scaling: RopeScaling::LongRope {
            short_factor: vec![1.0, 1.1, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0],
            long_factor: vec![1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0],
            original_max_position_embeddings: 32,
            attention_factor: 1.2,
        },
        ..phi3.clone()
    };
    vec![llama, untied, phi3, longrope]
}

fn converts_back(dir: &Path, c: &ModelConfig) {
    write_safetensors_dir(c, WeightFormat::F32, 9, dir, None).unwrap();
    let st = ModelFiles::open(dir).unwrap();
    assert_eq!(st.config(), c, "config.json reads back");
    let gguf_path = dir.join("model.gguf");
    write_gguf_from_hf(&st, None, &gguf_path).unwrap();
    let gguf = ModelFiles::open(&gguf_path).unwrap();
    let g = gguf.config();
    assert_eq!(
        (
            g.arch,
            g.hidden_size,
            g.num_heads,
            g.num_kv_heads,
            g.head_dim
        ),
        (
            c.arch,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.head_dim
        )
    );
    assert_eq!(g.tie_word_embeddings, c.tie_word_embeddings);
    assert_eq!(g.rope_scale(), c.rope_scale());
    // llama3 comes back as llama.cpp's frequency divisors: the same table up to f32 rounding.
    match (c.rope_inv_freq(), g.rope_inv_freq()) {
        (None, None) => {}
        (Some(want), Some(got)) => assert!(max_abs_diff(&want, &got) <= 1e-6, "{got:?}"),
        (want, got) => panic!("rope table {want:?} became {got:?}"),
    }
    let prompt: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % 512).collect();
    let want = logits(c, st.weights(), &prompt);
    let got = logits(g, gguf.weights(), &prompt);
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = max_abs_diff(&want, &got);
    assert!(
        diff <= 1e-5 * scale,
        "{:?}: GGUF logits differ by {diff}",
        c.arch
    );
}

#[test]
fn gguf_conversion_gives_the_safetensors_logits() {
    for c in tiny_configs() {
        let tmp = tempfile::tempdir().unwrap();
        converts_back(tmp.path(), &c);
    }
}

#[test]
fn llama_q_and_k_are_stored_permuted_as_llama_cpp_does() {
    let tmp = tempfile::tempdir().unwrap();
    let c = &tiny_configs()[0];
    write_safetensors_dir(c, WeightFormat::F32, 3, tmp.path(), None).unwrap();
    let st = ModelFiles::open(tmp.path()).unwrap();
    let path = tmp.path().join("model.gguf");
    write_gguf_from_hf(&st, None, &path).unwrap();
    let gguf = GgufFile::open(&path).unwrap();
    // Raw GGUF row 1 of head 0 is checkpoint row head_dim / 2 (the first rotated partner).
    let hf = st
        .weights()
        .get("model.layers.0.self_attn.k_proj.weight")
        .unwrap();
    let raw = gguf.weight("blk.0.attn_k.weight").unwrap();
    let rb = WeightFormat::F32.row_bytes(c.hidden_size);
    let half = c.head_dim / 2;
    assert_eq!(
        &raw.bytes.as_slice()[rb..2 * rb],
        &hf.bytes.as_slice()[half * rb..(half + 1) * rb]
    );
    // v is not permuted.
    let hf_v = st
        .weights()
        .get("model.layers.0.self_attn.v_proj.weight")
        .unwrap();
    let raw_v = gguf.weight("blk.0.attn_v.weight").unwrap();
    assert_eq!(raw_v.bytes.as_slice(), hf_v.bytes.as_slice());
}

#[test]
fn quantized_conversions_load_and_stay_close() {
    for c in &tiny_configs()[..3] {
        let tmp = tempfile::tempdir().unwrap();
        write_safetensors_dir(c, WeightFormat::F32, 4, tmp.path(), None).unwrap();
        let st = ModelFiles::open(tmp.path()).unwrap();
        let prompt: Vec<u32> = (0..20u32).map(|i| (i * 13 + 5) % 512).collect();
        let want = logits(c, st.weights(), &prompt);
        let path = tmp.path().join("q8.gguf");
        write_gguf_from_hf(&st, Some(WeightFormat::Q8_0), &path).unwrap();
        let q8 = ModelFiles::open(&path).unwrap();
        let w = q8
            .weights()
            .get("model.layers.0.mlp.down_proj.weight")
            .unwrap();
        assert_eq!(w.format, WeightFormat::Q8_0);
        let got = logits(q8.config(), q8.weights(), &prompt);
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = max_abs_diff(&want, &got);
        assert!(diff <= 0.05 * scale, "{:?}: Q8_0 off by {diff}", c.arch);
    }
}

#[test]
fn synth_writes_real_shapes_that_load() {
    let llama = config_for(Arch::Llama, "1b").unwrap();
    assert_eq!(
        (
            llama.vocab_size,
            llama.hidden_size,
            llama.num_layers,
            llama.num_kv_heads
        ),
        (128_256, 2048, 16, 8)
    );
    let phi3 = config_for(Arch::Phi3, "mini-4k").unwrap();
    assert_eq!(
        (
            phi3.vocab_size,
            phi3.hidden_size,
            phi3.num_layers,
            phi3.head_dim
        ),
        (32_064, 3072, 32, 96)
    );
    // Phi-3 stores q, k, v and gate, up fused.
    let names: Vec<String> = tensor_shapes(&phi3).into_iter().map(|t| t.0).collect();
    assert!(names.contains(&"model.layers.31.self_attn.qkv_proj.weight".to_string()));
    assert!(names.contains(&"model.layers.0.mlp.gate_up_proj.weight".to_string()));
    assert!(!names.iter().any(|n| n.contains("q_proj")));
    // The tiny ones in GGUF, as `kestrel synth --format gguf` writes them, load and run.
    for c in [llama_config("tiny").unwrap(), phi3_config("tiny").unwrap()] {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("m.gguf");
        write_gguf_model(&c, WeightFormat::F16, 1, &path, None).unwrap();
        let files = ModelFiles::open(&path).unwrap();
        assert_eq!(files.config().arch, c.arch);
        let gguf = GgufFile::open(&path).unwrap();
        for (name, values) in gguf_rope_tensors(&c) {
            assert_eq!(
                gguf.tensor_info(&name).map(|t| t.dims.clone()),
                Some(vec![values.len() as u64]),
                "{name}"
            );
        }
        let out = logits(files.config(), files.weights(), &[1, 2, 3]);
        assert!(out.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn a_missing_tensor_of_the_architecture_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let phi3 = phi3_config("tiny").unwrap();
    write_safetensors_dir(&phi3, WeightFormat::F32, 2, tmp.path(), None).unwrap();
    let files = ModelFiles::open(tmp.path()).unwrap();
    // Phi-3 weights read as Llama: no separate q_proj.
    let as_llama = ModelConfig {
        arch: Arch::Llama,
        rope_scaling: RopeScaling::None,
        ..phi3.clone()
    };
    let backend = CpuBackend::new();
    let err = DecoderModel::load(&backend, as_llama, files.weights())
        .err()
        .expect("no q_proj")
        .to_string();
    assert!(
        err.contains("model.layers.0.self_attn.q_proj.weight"),
        "{err}"
    );
    // A fused tensor of the wrong size names itself and its shape.
    let wider = ModelConfig {
        intermediate_size: 160,
        ..phi3
    };
    let err = DecoderModel::load(&backend, wider, files.weights())
        .err()
        .expect("wrong shape")
        .to_string();
    assert!(err.contains("mlp.gate_up_proj.weight"), "{err}");
}

/// A byte-level BPE tokenizer larger than the model is cut to the model's vocabulary, with the
/// merges that need a dropped token, so a random Phi-3 or Llama can borrow Qwen's tokenizer.
#[test]
fn a_larger_tokenizer_is_cut_to_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let tokenizer = serde_json::json!({
        "model": {
            "type": "BPE",
            "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4, "bc": 5},
            "merges": ["a b", ["ab", "c"], "b c"],
        },
        "added_tokens": [{"id": 6, "content": "<|end|>", "special": true}],
    });
    std::fs::write(
        tmp.path().join("tokenizer.json"),
        serde_json::to_string(&tokenizer).unwrap(),
    )
    .unwrap();
    let md = kestrel_model::synth::gguf_tokenizer_metadata(tmp.path(), 4).unwrap();
    let get = |k: &str| md.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let strs = |k: &str| match get(k) {
        Some(kestrel_model::gguf::GgufValue::Array(items)) => items
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(strs("tokenizer.ggml.tokens"), ["a", "b", "c", "ab"]);
    assert_eq!(strs("tokenizer.ggml.merges"), ["a b"]);
    // A model with room for every token keeps them all and pads.
    let md = kestrel_model::synth::gguf_tokenizer_metadata(tmp.path(), 9).unwrap();
    let tokens = match &md
        .iter()
        .find(|(k, _)| k == "tokenizer.ggml.tokens")
        .unwrap()
        .1
    {
        kestrel_model::gguf::GgufValue::Array(items) => items.len(),
        _ => 0,
    };
    assert_eq!(tokens, 9);
}
