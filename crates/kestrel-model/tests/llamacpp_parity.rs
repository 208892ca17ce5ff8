//! Greedy decoding on the real Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0 / Q8_0 / Q4_K / Q6_K
//! tensors, fetched by `scripts/fetch-fixtures.sh`) equals llama.cpp's on the same file, token
//! for token over 32 steps (goldens by `scripts/golden/make_llamacpp_goldens.py`).

use std::path::{Path, PathBuf};

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::KvDtype;
use kestrel_model::{ModelFiles, QwenModel};
use serde_json::Value;

mod common;

fn gguf_path() -> PathBuf {
    let p = common::fixtures_dir().join("qwen2.5-coder-0.5b-instruct.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-fixtures.sh",
        p.display()
    );
    p
}

#[test]
fn greedy_continuations_equal_llama_cpp() {
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/llamacpp/qwen2.5-coder-0.5b-instruct.json");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(golden_path).unwrap()).unwrap();
    let files = ModelFiles::open(&gguf_path()).unwrap();
    let backend = CpuBackend::new();
    let model = QwenModel::load(&backend, files.config().clone(), files.weights()).unwrap();
    let cases = golden["cases"].as_array().unwrap();
    assert!(cases.len() >= 3);
    for case in cases {
        let ids = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let (prompt, want) = (ids("prompt_ids"), ids("output_ids"));
        let got = common::greedy(&backend, &model, &prompt, want.len(), KvDtype::F16);
        assert_eq!(
            got,
            want,
            "case {:?}",
            case.get("user").or(case.get("prompt_text"))
        );
    }
}
