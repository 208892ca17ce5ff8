//! End-to-end tests of the real `kestrel` binary: `generate` on transformers-made and
//! synthetic models and on the real GGUF (template + tokenizer + model against llama.cpp),
//! `synth` in both formats, and one-line errors for bad model inputs and an unreachable hub.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use kestrel_backend::WeightFormat;
use kestrel_model::gguf::GgufValue;
use kestrel_model::gguf_writer::write_gguf;
use serde_json::Value;

fn kestrel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(args)
        .output()
        .expect("the kestrel binary runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("KESTREL_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME is set"))
                .join(".cache/kestrel/fixtures")
        });
    assert!(
        dir.join("qwen3-tokenizer/tokenizer.json").exists(),
        "fixtures missing in {}: run scripts/fetch-fixtures.sh",
        dir.display()
    );
    dir
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("an id"))
        .collect()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "kestrel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// `kestrel synth` of the tiny f32 Qwen3 with the real tokenizer, in `format`, at `out`.
fn synth_tiny_f32(format: &str, seed: &str, out: &Path) {
    synth_tiny_f32_arch("qwen3", format, seed, out)
}

/// [`synth_tiny_f32`] of architecture `arch` (qwen3 or qwen2).
fn synth_tiny_f32_arch(arch: &str, format: &str, seed: &str, out: &Path) {
    let tok = fixtures_dir().join("qwen3-tokenizer");
    let o = kestrel(&[
        "synth",
        "--arch",
        arch,
        "--size",
        "tiny",
        "--dtype",
        "f32",
        "--format",
        format,
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
        "--tokenizer",
        tok.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A failed run: non-zero exit, one `error:` line naming `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure, got success");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(needle),
        "{err} should mention {needle}"
    );
    err
}

#[test]
fn generate_ids_equal_transformers_greedy() {
    let dir = repo().join("tests/fixtures/hf/qwen3-tiny-untied");
    let golden: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let prompt: Vec<String> = ids(&golden["prompts"][2])
        .iter()
        .map(|i| i.to_string())
        .collect();
    let out = kestrel(&[
        "generate",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &prompt.join(","),
        "--temperature",
        "0",
        "--ignore-eos",
        "--max-tokens",
        "32",
        "--output",
        "ids",
    ]);
    assert_eq!(ids(&stdout_json(&out)), ids(&golden["greedy"][2]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prefill") && err.contains("decode") && err.contains("tok/s"),
        "{err}"
    );
}

#[test]
fn real_gguf_chat_answer_equals_llama_cpp() {
    let gguf = fixtures_dir().join("qwen2.5-coder-0.5b-instruct.gguf");
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo().join("tests/fixtures/llamacpp/qwen2.5-coder-0.5b-instruct.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let case = &golden["cases"][0];
    let out = kestrel(&[
        "generate",
        "--model",
        gguf.to_str().unwrap(),
        "--prompt",
        case["user"].as_str().unwrap(),
        "--temperature",
        "0",
        "--ignore-eos",
        "--max-tokens",
        "32",
        "--output",
        "json",
    ]);
    let v = stdout_json(&out);
    // The GGUF's own chat template and vocabulary give llama.cpp's prompt ids...
    assert_eq!(ids(&v["prompt_ids"]), ids(&case["prompt_ids"]));
    // ...and the model gives its greedy answer.
    assert_eq!(ids(&v["output_ids"]), ids(&case["output_ids"]));
    assert!(
        v["text"].as_str().unwrap().contains("def add"),
        "{}",
        v["text"]
    );
}

#[test]
fn synthetic_model_runs_the_same_in_both_formats() {
    // Qwen2 is also the architecture of Qwen1.5 (`--arch qwen2 --size 1.8b`).
    for arch in ["qwen3", "qwen2"] {
        let tmp = tempfile::tempdir().unwrap();
        let st = tmp.path().join("st");
        let gguf = tmp.path().join("tiny.gguf");
        for (fmt, out) in [("safetensors", &st), ("gguf", &gguf)] {
            synth_tiny_f32_arch(arch, fmt, "3", out);
        }
        let run = |model: &Path| {
            stdout_json(&kestrel(&[
                "generate",
                "--model",
                model.to_str().unwrap(),
                "--prompt",
                "Hello, 你好 👋",
                "--temperature",
                "0",
                "--ignore-eos",
                "--max-tokens",
                "12",
                "--output",
                "json",
                "--kv-cache-dtype",
                "f32",
            ]))
        };
        let (a, b) = (run(&st), run(&gguf));
        assert_eq!(
            a["prompt_ids"], b["prompt_ids"],
            "{arch}: same template and tokenizer from both sources"
        );
        assert_eq!(
            a["output_ids"], b["output_ids"],
            "{arch}: same weights, same greedy tokens"
        );
        assert_eq!(ids(&a["output_ids"]).len(), 12);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn bad_model_inputs_fail_with_one_line_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let gen = |model: &Path| {
        kestrel(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt-ids",
            "1,2,3",
        ])
    };

    // Missing path.
    assert_clean_error(&gen(&tmp.path().join("nope.gguf")), "nope.gguf");

    // Truncated safetensors.
    let dir = tmp.path().join("truncated");
    copy_dir(&repo().join("tests/fixtures/hf/qwen3-tiny-tied"), &dir);
    let st = dir.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_clean_error(&gen(&dir), "model.safetensors");

    // Config missing a required field, and one with a wrong type.
    let dir = tmp.path().join("noconfig");
    copy_dir(&repo().join("tests/fixtures/hf/qwen3-tiny-tied"), &dir);
    let cfg = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("num_hidden_layers");
    v["a_field_from_the_future"] = Value::from(1);
    std::fs::write(&cfg, v.to_string()).unwrap();
    let err = assert_clean_error(&gen(&dir), "config.json");
    assert!(
        err.contains("missing required field `num_hidden_layers`"),
        "{err}"
    );
    v["num_hidden_layers"] = Value::from("three");
    std::fs::write(&cfg, v.to_string()).unwrap();
    assert_clean_error(&gen(&dir), "config.json");

    // GGUF of an unsupported architecture.
    let gemma = tmp.path().join("gemma.gguf");
    let md = vec![(
        "general.architecture".to_string(),
        GgufValue::Str("gemma".into()),
    )];
    write_gguf(&gemma, &md, &[], |_, _| {}).unwrap();
    let err = assert_clean_error(&gen(&gemma), "gemma.gguf");
    assert!(err.contains("`gemma` is not supported"), "{err}");

    // GGUF with a tensor type the engine does not read: a valid synthetic qwen3 file whose
    // embedding is relabelled Q2_K (ggml type 10) in its tensor info.
    let q2k = tmp.path().join("q2k.gguf");
    let cfg = kestrel_model::synth::qwen3_config("tiny").unwrap();
    kestrel_model::synth::write_gguf_model(&cfg, WeightFormat::F32, 0, &q2k, None).unwrap();
    let mut raw = std::fs::read(&q2k).unwrap();
    let name = b"token_embd.weight";
    let at = raw.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    // name, then n_dims (u32) and two u64 dims, then the type id.
    let ty = at + 4 + 16;
    raw[ty..ty + 4].copy_from_slice(&10u32.to_le_bytes());
    std::fs::write(&q2k, raw).unwrap();
    let err = assert_clean_error(&gen(&q2k), "q2k.gguf");
    assert!(
        err.contains("Q2_K") && err.contains("not supported"),
        "{err}"
    );

    // Not a GGUF at all.
    let junk = tmp.path().join("junk.gguf");
    std::fs::write(&junk, b"hello").unwrap();
    assert_clean_error(&gen(&junk), "junk.gguf");
}

#[test]
fn unreachable_hub_fails_fast_naming_the_model() {
    let home = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(["generate", "--model", "Qwen/Qwen3-1.7B", "--prompt", "hi"])
        .env("HF_HOME", home.path())
        // Nothing listens on port 9 of loopback: the connection is refused at once, as when offline.
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
    let err = assert_clean_error(&out, "Qwen/Qwen3-1.7B");
    assert!(
        err.contains("local model directory") && err.contains(".gguf"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args(["generate", "--model", "Qwen/Qwen3-1.7B", "--prompt", "hi"])
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let err = assert_clean_error(&out, "Qwen/Qwen3-1.7B");
    assert!(err.contains("HF_HUB_OFFLINE"), "{err}");
}

#[test]
fn hub_cache_is_reused_offline() {
    // A model laid out as hf-hub caches it: models--org--name/{refs/main, snapshots/<rev>/...}.
    let home = tempfile::tempdir().unwrap();
    let repo_dir = home.path().join("hub/models--test-org--tiny-qwen3");
    let snap = repo_dir.join("snapshots/0123456789abcdef");
    copy_dir(&repo().join("tests/fixtures/hf/qwen3-tiny-tied"), &snap);
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixtures_dir().join("qwen3-tokenizer").join(f), snap.join(f)).unwrap();
    }
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::write(repo_dir.join("refs/main"), "0123456789abcdef").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kestrel"))
        .args([
            "generate",
            "--model",
            "test-org/tiny-qwen3",
            "--prompt-ids",
            "5,6,7",
            "--max-tokens",
            "4",
            "--temperature",
            "0",
            "--ignore-eos",
            "--output",
            "ids",
        ])
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(ids(&stdout_json(&out)).len(), 4);
}

#[test]
fn quantize_writes_a_gguf_that_runs_like_quantizing_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("st");
    synth_tiny_f32("safetensors", "4", &st);
    let gguf = tmp.path().join("tiny-q8_0.gguf");
    let o = kestrel(&[
        "quantize",
        "--model",
        st.to_str().unwrap(),
        "--out",
        gguf.to_str().unwrap(),
        "--type",
        "q8_0",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Q8_0 is 8.5 bits per weight against 32 (the GGUF also carries the 151k-token vocabulary).
    let f32_bytes = std::fs::metadata(st.join("model.safetensors"))
        .unwrap()
        .len();
    let q_bytes = std::fs::metadata(&gguf).unwrap().len();
    assert!(q_bytes * 2 < f32_bytes, "{q_bytes} vs {f32_bytes}");
    let run = |model: &Path, extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Hello",
            "--temperature",
            "0",
            "--ignore-eos",
            "--max-tokens",
            "8",
            "--output",
            "json",
            "--kv-cache-dtype",
            "f32",
        ];
        args.extend_from_slice(extra);
        stdout_json(&kestrel(&args))
    };
    let (file, at_load) = (run(&gguf, &[]), run(&st, &["--quantization", "q8_0"]));
    assert_eq!(
        file["prompt_ids"], at_load["prompt_ids"],
        "the tokenizer travels with the GGUF"
    );
    assert_eq!(file["output_ids"], at_load["output_ids"]);
    let bad = kestrel(&[
        "generate",
        "--model",
        st.to_str().unwrap(),
        "--quantization",
        "q3",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("q8_0"));
}

#[test]
fn bad_speculative_config_fails_at_start_naming_the_field() {
    for (config, needle) in [
        ("{\"method\": \"ngram\"", "not valid JSON"),
        (
            r#"{"method": "medusa2", "num_speculative_tokens": 4}"#,
            "unknown `method` \"medusa2\"",
        ),
        (
            r#"{"method": "ngram", "num_speculative_tokens": 0}"#,
            "`num_speculative_tokens` must be in 1..=16, got 0",
        ),
        (
            r#"{"method": "ngram", "num_speculative_tokens": 99}"#,
            "`num_speculative_tokens` must be in 1..=16, got 99",
        ),
        (
            r#"{"model": "/models/qwen3-0.6b", "num_speculative_tokens": 4}"#,
            "draft model",
        ),
    ] {
        for cmd in ["serve", "generate"] {
            // The flag is checked before the (missing) model is looked at.
            let out = kestrel(&[
                cmd,
                "--model",
                "/nonexistent/model.gguf",
                "--speculative-config",
                config,
            ]);
            assert!(!out.status.success(), "{cmd} {config}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("--speculative-config"), "{cmd}: {err}");
            assert!(err.contains(needle), "{cmd} {config}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}
