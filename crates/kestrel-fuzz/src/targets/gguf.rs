//! A GGUF file from untrusted bytes: header, metadata, tensor infos, every weight's byte range,
//! the model config, and the vocabulary turned into a tokenizer (the fields `kestrel serve`
//! reads, as `crates/kestrel/src/load.rs` reads them), which then encodes and decodes text.
//! llama.cpp fuzzes its GGUF loader for the same reason: model files come from anywhere.
//!
//! Invariants: nothing panics; an accepted weight's byte range is exactly `rows` rows of its
//! format and lies inside the file; an accepted tokenizer's ids are inside its vocabulary.

use arbitrary::Unstructured;
use kestrel_backend::WeightFormat;
use kestrel_model::gguf::{GgufFile, GgufValue};
use kestrel_model::gguf_writer::{write_gguf, TensorSpec};
use kestrel_model::synth::gguf_metadata;
use kestrel_model::{Arch, ModelConfig};
use kestrel_text::{GgufVocab, Tokenizer};

use crate::{signature, Target};

pub struct Gguf;

fn config(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        vocab_size: 12,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 16,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: kestrel_model::RopeScaling::None,
        max_position_embeddings: 128,
        tie_word_embeddings: true,
    }
}

/// A byte-level BPE vocabulary of twelve tokens, Qwen's specials included.
fn tokenizer_metadata() -> Vec<(String, GgufValue)> {
    let tokens = [
        "a",
        "b",
        "c",
        "Ġ",
        "ab",
        "Ġa",
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<think>",
        "</think>",
        "<tool_call>",
    ];
    let types = [1, 1, 1, 1, 1, 1, 3, 3, 3, 4, 4, 4];
    let strs =
        |v: &[&str]| GgufValue::Array(v.iter().map(|s| GgufValue::Str((*s).into())).collect());
    vec![
        ("tokenizer.ggml.model".into(), GgufValue::Str("gpt2".into())),
        ("tokenizer.ggml.pre".into(), GgufValue::Str("qwen2".into())),
        ("tokenizer.ggml.tokens".into(), strs(&tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(types.iter().map(|&t| GgufValue::I32(t)).collect()),
        ),
        ("tokenizer.ggml.merges".into(), strs(&["a b", "Ġ a"])),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(8)),
        ("tokenizer.ggml.padding_token_id".into(), GgufValue::U32(6)),
        ("tokenizer.ggml.add_bos_token".into(), GgufValue::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            GgufValue::Str("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}".into()),
        ),
    ]
}

/// A whole small model file: every tensor of a one-layer model, some quantized.
fn seed_file(arch: Arch, format: WeightFormat) -> Vec<u8> {
    let c = config(arch);
    let mut md = gguf_metadata(&c, 0, "fuzz seed", None).expect("metadata");
    md.extend(tokenizer_metadata());
    let specs: Vec<TensorSpec> = kestrel_model::synth::tensor_shapes(&c)
        .into_iter()
        .map(|(name, rows, cols)| {
            let name = kestrel_model::source::gguf_name(&name).expect("GGUF name");
            let f = if rows.is_some() {
                format
            } else {
                WeightFormat::F32
            };
            TensorSpec::new(name, f, rows, cols)
        })
        .collect();
    let path = std::env::temp_dir().join(format!(
        "kestrel-fuzz-seed-{}-{:?}-{}.gguf",
        std::process::id(),
        arch,
        format.name()
    ));
    write_gguf(&path, &md, &specs, |i, buf| {
        for (j, b) in buf.iter_mut().enumerate() {
            *b = (i * 31 + j * 7) as u8 & 0x3f;
        }
    })
    .expect("write seed");
    let bytes = std::fs::read(&path).expect("read seed");
    let _ = std::fs::remove_file(&path);
    bytes
}

/// The vocabulary as `kestrel serve` reads it from a GGUF file.
fn vocab(g: &GgufFile) -> Option<Result<GgufVocab, String>> {
    let model = g.get_str("tokenizer.ggml.model").ok()?;
    let id = |k: &str| g.get_u64(k).ok().map(|v| v as u32);
    Some((|| {
        Ok(GgufVocab {
            model: model.to_string(),
            pre: g.get_str("tokenizer.ggml.pre").ok().map(str::to_owned),
            tokens: g.get_str_array("tokenizer.ggml.tokens")?,
            token_types: g
                .get_i64_array("tokenizer.ggml.token_type")?
                .into_iter()
                .map(|t| t as i32)
                .collect(),
            merges: g.get_str_array("tokenizer.ggml.merges").unwrap_or_default(),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            padding_token_id: id("tokenizer.ggml.padding_token_id"),
            add_bos_token: g.get_bool("tokenizer.ggml.add_bos_token").ok(),
            chat_template: g.get_str("tokenizer.chat_template").ok().map(str::to_owned),
        })
    })())
}

fn first_words(message: &str) -> String {
    message.chars().take(60).collect()
}

impl Target for Gguf {
    fn name(&self) -> &'static str {
        "gguf"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![
            seed_file(Arch::Qwen3, WeightFormat::F16),
            seed_file(Arch::Qwen2, WeightFormat::Q8_0),
            seed_file(Arch::Qwen3, WeightFormat::Q4_0),
        ]
    }

    fn dictionary(&self) -> Vec<Vec<u8>> {
        let mut words: Vec<Vec<u8>> = vec![b"GGUF".to_vec(), vec![3, 0, 0, 0], vec![2, 0, 0, 0]];
        for key in [
            "general.architecture",
            "general.alignment",
            "qwen3.embedding_length",
            "qwen3.attention.head_count",
            "qwen3.attention.key_length",
            "qwen3.vocab_size",
            "qwen3.block_count",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.model",
            "tokenizer.chat_template",
            "token_embd.weight",
        ] {
            let mut w = (key.len() as u64).to_le_bytes().to_vec();
            w.extend_from_slice(key.as_bytes());
            words.push(w);
        }
        // Value type tags (u32) and ggml type ids.
        for t in [0u32, 4, 6, 7, 8, 9, 10, 12, 13, 14, 30, 99] {
            words.push(t.to_le_bytes().to_vec());
        }
        words
    }

    fn generate(&self, u: &mut Unstructured<'_>) -> Option<Vec<u8>> {
        // A header with hostile counts, then whatever follows.
        let mut out = b"GGUF".to_vec();
        out.extend_from_slice(&u.int_in_range(1u32..=4).ok()?.to_le_bytes());
        out.extend_from_slice(&u.arbitrary::<u64>().ok()?.min(64).to_le_bytes());
        out.extend_from_slice(&u.arbitrary::<u64>().ok()?.min(64).to_le_bytes());
        let rest: &[u8] = u.arbitrary().ok()?;
        out.extend_from_slice(rest);
        Some(out)
    }

    fn run(&self, input: &[u8]) -> u64 {
        let g = match GgufFile::from_bytes("fuzz.gguf", input.to_vec()) {
            Ok(g) => g,
            Err(e) => return signature(&["open", &first_words(&e.to_string())]),
        };
        let mut sig = vec![format!("tensors {}", g.tensors.len().min(3))];
        for t in &g.tensors {
            match g.weight(&t.name) {
                Ok(w) => {
                    assert_eq!(
                        w.bytes.len(),
                        w.rows * w.format.row_bytes(w.cols),
                        "weight `{}`: byte range and shape disagree",
                        t.name
                    );
                    assert!(w.bytes.len() <= input.len());
                    sig.push(format!("weight ok {}", w.format.name()));
                }
                Err(e) => sig.push(first_words(&e.to_string())),
            }
        }
        match ModelConfig::from_gguf(&g) {
            Ok(c) => {
                let valid = c.validate(std::path::Path::new("fuzz.gguf")).is_ok();
                sig.push(format!("config valid {valid}"));
            }
            Err(e) => sig.push(first_words(&e.to_string())),
        }
        match vocab(&g) {
            None => sig.push("no vocab".into()),
            Some(Err(e)) => sig.push(first_words(&e)),
            Some(Ok(v)) => match Tokenizer::from_gguf_vocab(&v) {
                Ok(tok) => {
                    let vocab_size = tok.vocab_size();
                    for text in ["ab a c", "<think>x</think><|im_end|>", "é🦀\n"] {
                        if let Ok(ids) = tok.encode(text, true) {
                            assert!(
                                ids.iter().all(|&id| (id as usize) < vocab_size),
                                "ids outside the vocabulary of {vocab_size}: {ids:?}"
                            );
                            let _ = tok.decode(&ids, false);
                        }
                    }
                    let _ = tok.eos_token_ids();
                    let _ = tok.max_token_bytes();
                    sig.push("tokenizer ok".into());
                }
                Err(e) => sig.push(first_words(&e.to_string())),
            },
        }
        let parts: Vec<&str> = sig.iter().map(String::as_str).collect();
        signature(&parts)
    }
}
