//! Quantizing float checkpoints: in place at load and written out as GGUF. The GGUF file holds
//! exactly the bytes in-situ quantization produces (so both give the same logits), every
//! matrix is in the target format while norms keep full precision, and the quantized model
//! stays close to the float one.

use std::path::Path;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::{BatchInput, KvDtype, StepOptions, WeightFormat};
use kestrel_model::quantize::{write_quantized_gguf, QuantizedSource};
use kestrel_model::synth::{qwen3_config, tensor_shapes, write_safetensors_dir};
use kestrel_model::{ModelFiles, ModelRunner, QwenModel, RunnerConfig, WeightSource};

const BLOCK: usize = 16;

/// Every position's logits for `prompt`, `[len * vocab]`.
fn logits(files: &ModelFiles, weights: &dyn WeightSource, prompt: &[u32]) -> Vec<f32> {
    let backend = CpuBackend::new();
    let model = QwenModel::load(&backend, files.config().clone(), weights).unwrap();
    let blocks = prompt.len().div_ceil(BLOCK);
    let table: Vec<u32> = (0..blocks as u32).collect();
    let config = RunnerConfig::sized(prompt.len(), blocks, KvDtype::F32);
    let mut runner = ModelRunner::new(backend, model, config).unwrap();
    let mut batch = BatchInput::from_sequences(&[(prompt, 0, &table)], BLOCK);
    batch.logits_indices = (0..prompt.len() as u32).collect();
    let mut out = Vec::new();
    runner
        .logits(&batch, StepOptions::default(), &mut out)
        .unwrap();
    out
}

/// A random f32 Qwen3 whose rows are whole Q4_K super-blocks (256 columns).
fn synth_dir(dir: &Path) -> ModelFiles {
    let mut c = qwen3_config("tiny").unwrap();
    c.hidden_size = 256;
    c.intermediate_size = 512;
    c.head_dim = 64;
    c.vocab_size = 300;
    write_safetensors_dir(&c, WeightFormat::F32, 5, dir, None).unwrap();
    ModelFiles::open(dir).unwrap()
}

fn rms(v: &[f32]) -> f32 {
    (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt()
}

#[test]
fn quantized_gguf_equals_in_situ_quantization() {
    let tmp = tempfile::tempdir().unwrap();
    let files = synth_dir(&tmp.path().join("st"));
    let prompt: Vec<u32> = (0..70u32).map(|i| (i * 37 + 11) % 300).collect();
    let float = logits(&files, files.weights(), &prompt);
    let mut errors = Vec::new();
    for target in [WeightFormat::Q8_0, WeightFormat::Q4_K] {
        let in_situ = QuantizedSource::new(files.weights(), target);
        for (name, rows, _) in tensor_shapes(files.config()) {
            let w = in_situ.get(&name).unwrap();
            let want = if rows.is_some() {
                target
            } else {
                WeightFormat::F32
            };
            assert_eq!(w.format, want, "{name} under {target:?}");
        }
        let gguf_path = tmp.path().join(format!("{}.gguf", target.name()));
        write_quantized_gguf(&files, target, &gguf_path).unwrap();
        let gguf = ModelFiles::open(&gguf_path).unwrap();
        assert_eq!(gguf.config(), files.config());
        for (name, _, _) in tensor_shapes(files.config()) {
            let (a, b) = (
                in_situ.get(&name).unwrap(),
                gguf.weights().get(&name).unwrap(),
            );
            assert_eq!(a.format, b.format, "{name}");
            assert!(
                a.bytes.as_slice() == b.bytes.as_slice(),
                "{name}: bytes differ"
            );
        }
        let q = logits(&files, &in_situ, &prompt);
        let from_file = logits(&gguf, gguf.weights(), &prompt);
        assert_eq!(q, from_file, "{target:?}: same bytes, same logits");
        // Close to the float model: relative RMS error of the logits, the 4-bit format looser.
        let rel = rms(&q.iter().zip(&float).map(|(a, b)| a - b).collect::<Vec<_>>()) / rms(&float);
        let tol = if target == WeightFormat::Q8_0 {
            0.03
        } else {
            0.3
        };
        eprintln!("{target:?}: relative RMS error {rel}");
        assert!(rel <= tol, "{target:?}: relative RMS error {rel}");
        errors.push(rel);
        assert_ne!(q, float, "{target:?} changed nothing");
    }
    assert!(
        errors[0] < errors[1],
        "8-bit is closer than 4-bit: {errors:?}"
    );
}

#[test]
fn matrices_that_are_not_whole_blocks_stay_float() {
    // The 64-wide tiny fixture: Q8_0 (32) applies, Q4_K (256) does not.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf/qwen3-tiny-tied");
    let files = ModelFiles::open(&dir).unwrap();
    let name = "model.layers.0.mlp.up_proj.weight";
    let q8 = QuantizedSource::new(files.weights(), WeightFormat::Q8_0);
    assert_eq!(q8.get(name).unwrap().format, WeightFormat::Q8_0);
    let q4 = QuantizedSource::new(files.weights(), WeightFormat::Q4_K);
    assert_eq!(q4.get(name).unwrap().format, WeightFormat::F32);
}

#[test]
fn a_gguf_source_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let files = synth_dir(&tmp.path().join("st"));
    let first = tmp.path().join("a.gguf");
    write_quantized_gguf(&files, WeightFormat::Q8_0, &first).unwrap();
    let gguf = ModelFiles::open(&first).unwrap();
    let err = write_quantized_gguf(&gguf, WeightFormat::Q4_K, &tmp.path().join("b.gguf"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("llama-quantize"), "{err}");
}
