//! Random-weight models with the exact shapes of real Qwen3, Qwen2-architecture (Qwen1.5),
//! Llama 3.2 and Phi-3 checkpoints, for benchmarks and tests (values do not change speed). Written as a Hugging Face directory (safetensors +
//! config.json) or as a GGUF file with llama.cpp's metadata; a real tokenizer directory can be
//! attached so the model is usable end to end (the GGUF then carries the `tokenizer.ggml.*`
//! vocabulary and the chat template).

use std::io::{BufWriter, Write};
use std::path::Path;

use kestrel_backend::WeightFormat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::config::{Arch, ModelConfig, RopeScaling};
use crate::error::{ModelError, Result};
use crate::gguf::GgufValue;
use crate::gguf_writer::{write_gguf, TensorSpec};
use crate::source::gguf_name;

/// Shapes of the published Qwen3 dense checkpoints (from their `config.json`).
pub fn qwen3_config(size: &str) -> Option<ModelConfig> {
    let (hidden, inter, layers, heads, kv) = match size {
        "tiny" => (64, 128, 2, 4, 2),
        "0.6b" => (1024, 3072, 28, 16, 8),
        "1.7b" => (2048, 6144, 28, 16, 8),
        "4b" => (2560, 9728, 36, 32, 8),
        "8b" => (4096, 12288, 36, 32, 8),
        _ => return None,
    };
    Some(ModelConfig {
        arch: Arch::Qwen3,
        vocab_size: 151_936,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: if size == "tiny" { 16 } else { 128 },
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 40_960,
        tie_word_embeddings: size != "8b",
    })
}

/// Shapes of Qwen2-architecture checkpoints: `tiny` (for tests) and `1.8b`, Qwen1.5-1.8B (from
/// its `config.json`: no GQA, untied embeddings, biases on q, k and v).
pub fn qwen2_config(size: &str) -> Option<ModelConfig> {
    let (hidden, inter, layers, heads, kv, head_dim, tied, max_pos) = match size {
        "tiny" => (64, 128, 2, 4, 2, 16, true, 32_768),
        "1.8b" => (2048, 5504, 24, 16, 16, 128, false, 32_768),
        _ => return None,
    };
    Some(ModelConfig {
        arch: Arch::Qwen2,
        vocab_size: 151_936,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim,
        rms_norm_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: max_pos,
        tie_word_embeddings: tied,
    })
}

/// Shapes of Llama checkpoints: `tiny` (for tests) and `1b`, Llama-3.2-1B (from its
/// `config.json`: GQA 32/8, tied embeddings, `llama3` RoPE scaling to 128k).
pub fn llama_config(size: &str) -> Option<ModelConfig> {
    let (vocab, hidden, inter, layers, heads, kv) = match size {
        "tiny" => (512, 64, 128, 2, 4, 2),
        "1b" => (128_256, 2048, 8192, 16, 32, 8),
        _ => return None,
    };
    Some(ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        },
        max_position_embeddings: 131_072,
        tie_word_embeddings: true,
    })
}

/// Shapes of Phi-3 checkpoints: `tiny` (for tests) and `mini-4k`, Phi-3-mini-4k-instruct
/// (from its `config.json`: no GQA, head_dim 96, untied embeddings, no RoPE scaling).
pub fn phi3_config(size: &str) -> Option<ModelConfig> {
    let (vocab, hidden, inter, layers, heads) = match size {
        "tiny" => (512, 64, 128, 2, 4),
        "mini-4k" => (32_064, 3072, 8192, 32, 32),
        _ => return None,
    };
    Some(ModelConfig {
        arch: Arch::Phi3,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: hidden / heads,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: RopeScaling::None,
        max_position_embeddings: 4096,
        tie_word_embeddings: false,
    })
}

/// The model config of `kestrel synth --arch {arch} --size {size}`.
pub fn config_for(arch: Arch, size: &str) -> Option<ModelConfig> {
    match arch {
        Arch::Qwen3 => qwen3_config(size),
        Arch::Qwen2 => qwen2_config(size),
        Arch::Llama => llama_config(size),
        Arch::Phi3 => phi3_config(size),
    }
}

/// The sizes [`config_for`] knows for `arch`.
pub fn sizes_for(arch: Arch) -> &'static str {
    match arch {
        Arch::Qwen3 => "tiny, 0.6b, 1.7b, 4b, 8b",
        Arch::Qwen2 => "tiny, 1.8b",
        Arch::Llama => "tiny, 1b",
        Arch::Phi3 => "tiny, mini-4k",
    }
}

/// `(hf_name, rows, cols)` of every tensor of a checkpoint, `rows == None` for vectors.
pub fn tensor_shapes(c: &ModelConfig) -> Vec<(String, Option<usize>, usize)> {
    let (h, q, kv, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        Some(c.vocab_size),
        h,
    )];
    for i in 0..c.num_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        out.push((p("input_layernorm.weight"), None, h));
        if c.arch == Arch::Phi3 {
            out.push((p("self_attn.qkv_proj.weight"), Some(q + 2 * kv), h));
        } else {
            out.push((p("self_attn.q_proj.weight"), Some(q), h));
            out.push((p("self_attn.k_proj.weight"), Some(kv), h));
            out.push((p("self_attn.v_proj.weight"), Some(kv), h));
        }
        out.push((p("self_attn.o_proj.weight"), Some(h), q));
        match c.arch {
            Arch::Qwen3 => {
                out.push((p("self_attn.q_norm.weight"), None, c.head_dim));
                out.push((p("self_attn.k_norm.weight"), None, c.head_dim));
            }
            Arch::Qwen2 => {
                out.push((p("self_attn.q_proj.bias"), None, q));
                out.push((p("self_attn.k_proj.bias"), None, kv));
                out.push((p("self_attn.v_proj.bias"), None, kv));
            }
            Arch::Llama | Arch::Phi3 => {}
        }
        out.push((p("post_attention_layernorm.weight"), None, h));
        if c.arch == Arch::Phi3 {
            out.push((p("mlp.gate_up_proj.weight"), Some(2 * inter), h));
        } else {
            out.push((p("mlp.gate_proj.weight"), Some(inter), h));
            out.push((p("mlp.up_proj.weight"), Some(inter), h));
        }
        out.push((p("mlp.down_proj.weight"), Some(h), inter));
    }
    out.push(("model.norm.weight".to_string(), None, h));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), Some(c.vocab_size), h));
    }
    out
}

/// Fills `buf` with tensor `name`'s random values in `format`: norms are 1 (so activations keep a
/// sane scale), everything else uniform in ±1/sqrt(cols).
fn fill_tensor(
    name: &str,
    cols: usize,
    format: WeightFormat,
    rng: &mut ChaCha8Rng,
    buf: &mut [u8],
) {
    let is_norm = name.contains("norm");
    let bound = 1.0 / (cols as f32).sqrt();
    let mut next = || {
        if is_norm {
            1.0f32
        } else {
            rng.gen_range(-bound..bound)
        }
    };
    match format {
        WeightFormat::F32 => buf
            .chunks_exact_mut(4)
            .for_each(|b| b.copy_from_slice(&next().to_le_bytes())),
        WeightFormat::F16 => buf
            .chunks_exact_mut(2)
            .for_each(|b| b.copy_from_slice(&half::f16::from_f32(next()).to_le_bytes())),
        WeightFormat::BF16 => buf
            .chunks_exact_mut(2)
            .for_each(|b| b.copy_from_slice(&half::bf16::from_f32(next()).to_le_bytes())),
        other => unreachable!("synth writes float formats only, not {other:?}"),
    }
}

/// Norms stay F32 in GGUF files, as llama.cpp's converter writes them.
fn tensor_format(rows: Option<usize>, dtype: WeightFormat, gguf: bool) -> WeightFormat {
    if gguf && rows.is_none() {
        WeightFormat::F32
    } else {
        dtype
    }
}

/// The `rope_scaling` object of a `config.json` (`null` for none).
fn hf_rope_scaling_json(c: &ModelConfig) -> Value {
    match &c.rope_scaling {
        RopeScaling::None => Value::Null,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
            "high_freq_factor": high_freq_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_position_embeddings,
            attention_factor,
        } => json!({
            "type": "longrope", "short_factor": short_factor, "long_factor": long_factor,
            "original_max_position_embeddings": original_max_position_embeddings,
            "attention_factor": attention_factor,
        }),
        // GGUF-only form: written as `llama3` cannot be recovered, so as explicit factors.
        RopeScaling::Factors(f) => json!({
            "type": "longrope", "short_factor": f, "long_factor": f,
            "original_max_position_embeddings": c.max_position_embeddings,
            "attention_factor": 1.0,
        }),
    }
}

pub fn hf_config_json(c: &ModelConfig, dtype: WeightFormat) -> Value {
    let (bos, eos) = match c.arch {
        Arch::Qwen3 | Arch::Qwen2 => (151_643, 151_645),
        Arch::Llama => (128_000, 128_009),
        Arch::Phi3 => (1, 32_000),
    };
    json!({
        "architectures": [c.arch.hf_class()],
        "model_type": c.arch.name(),
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "rope_scaling": hf_rope_scaling_json(c),
        "max_position_embeddings": c.max_position_embeddings,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": false,
        "use_sliding_window": false,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "torch_dtype": match dtype { WeightFormat::BF16 => "bfloat16", WeightFormat::F16 => "float16", _ => "float32" },
    })
}

/// The tensors llama.cpp's converter adds for scaled RoPE, `(gguf_name, values)`: `llama3`
/// as per-pair divisors of the frequencies (`rope_freqs.weight`), `longrope` as its two
/// factor sets.
pub fn gguf_rope_tensors(c: &ModelConfig) -> Vec<(String, Vec<f32>)> {
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    match &c.rope_scaling {
        RopeScaling::None => vec![],
        RopeScaling::Llama3 { .. } => {
            let scaled = c.rope_inv_freq().expect("llama3 has a table");
            let d = c.head_dim as f64;
            let divisors = scaled
                .iter()
                .enumerate()
                .map(|(i, &f)| (c.rope_theta.powf(-((2 * i) as f64) / d) / f as f64) as f32)
                .collect();
            vec![("rope_freqs.weight".into(), divisors)]
        }
        RopeScaling::Factors(f) => vec![("rope_freqs.weight".into(), f32s(f))],
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        } => vec![
            ("rope_factors_long.weight".into(), f32s(long_factor)),
            ("rope_factors_short.weight".into(), f32s(short_factor)),
        ],
    }
}

/// Writes a Hugging Face directory: config.json, model.safetensors (streamed), tokenizer files.
pub fn write_safetensors_dir(
    c: &ModelConfig,
    dtype: WeightFormat,
    seed: u64,
    out: &Path,
    tokenizer_dir: Option<&Path>,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| ModelError::file(out, e))?;
    let cfg_path = out.join("config.json");
    let cfg_text =
        serde_json::to_string_pretty(&hf_config_json(c, dtype)).expect("config serializes");
    std::fs::write(&cfg_path, cfg_text).map_err(|e| ModelError::file(&cfg_path, e))?;
    let st_name = match dtype {
        WeightFormat::F32 => "F32",
        WeightFormat::F16 => "F16",
        WeightFormat::BF16 => "BF16",
        other => {
            return Err(ModelError::file(
                out,
                format!("safetensors synth supports f32/f16/bf16, not {other:?}"),
            ))
        }
    };
    let shapes = tensor_shapes(c);
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, rows, cols) in &shapes {
        let len = rows.unwrap_or(1) * dtype.row_bytes(*cols);
        let shape: Vec<usize> = rows.iter().copied().chain([*cols]).collect();
        header.insert(
            name.clone(),
            json!({"dtype": st_name, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let mut header = serde_json::to_string(&header).expect("header serializes");
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let path = out.join("model.safetensors");
    let io = |e: std::io::Error| ModelError::file(&path, e);
    let mut w = BufWriter::with_capacity(1 << 22, std::fs::File::create(&path).map_err(io)?);
    w.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    w.write_all(header.as_bytes()).map_err(io)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buf = Vec::new();
    for (name, rows, cols) in &shapes {
        buf.clear();
        buf.resize(rows.unwrap_or(1) * dtype.row_bytes(*cols), 0);
        fill_tensor(name, *cols, dtype, &mut rng, &mut buf);
        w.write_all(&buf).map_err(io)?;
    }
    w.flush().map_err(io)?;
    if let Some(tok) = tokenizer_dir {
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            let src = tok.join(f);
            if src.exists() {
                std::fs::copy(&src, out.join(f)).map_err(|e| ModelError::file(&src, e))?;
            }
        }
    }
    Ok(())
}

/// The `tokenizer.ggml.*` metadata llama.cpp writes for a Qwen2-style BPE `tokenizer.json`,
/// the token list padded to the model's `vocab_size` with `[PAD{id}]` entries of type UNUSED
/// (5), as `convert_hf_to_gguf.py` does (llama.cpp checks the embedding's rows against it).
pub fn gguf_tokenizer_metadata(dir: &Path, vocab_size: usize) -> Result<Vec<(String, GgufValue)>> {
    let tj = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj).map_err(|e| ModelError::file(&tj, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::file(&tj, e))?;
    let vocab = v["model"]["vocab"]
        .as_object()
        .ok_or_else(|| ModelError::file(&tj, "no model.vocab (not a BPE tokenizer)"))?;
    let mut tokens: Vec<(u32, String, i32)> = vocab
        .iter()
        .filter_map(|(t, id)| id.as_u64().map(|id| (id as u32, t.clone(), 1)))
        .collect();
    for a in v["added_tokens"].as_array().into_iter().flatten() {
        if let (Some(id), Some(content)) = (a["id"].as_u64(), a["content"].as_str()) {
            let ty = if a["special"].as_bool().unwrap_or(false) {
                3
            } else {
                4
            };
            tokens.retain(|(i, _, _)| *i != id as u32);
            tokens.push((id as u32, content.to_string(), ty));
        }
    }
    tokens.sort_by_key(|t| t.0);
    // Ids must be dense for a GGUF vocabulary.
    if tokens.iter().enumerate().any(|(i, t)| t.0 as usize != i) {
        return Err(ModelError::file(&tj, "token ids are not contiguous from 0"));
    }
    // A tokenizer larger than the model (Qwen's 151k tokens on a random Llama-3.2-1B or
    // Phi-3-mini for a benchmark) is cut to the model's vocabulary: later ids go, with the
    // merges that need them, so every id the tokenizer produces has an embedding row.
    let cut = tokens.len() > vocab_size;
    tokens.truncate(vocab_size);
    for id in tokens.len()..vocab_size {
        tokens.push((id as u32, format!("[PAD{id}]"), 5));
    }
    let kept: std::collections::HashSet<&str> = if cut {
        tokens.iter().map(|t| t.1.as_str()).collect()
    } else {
        Default::default()
    };
    let merges: Vec<GgufValue> = v["model"]["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let (a, b) = match m {
                Value::String(s) => s.split_once(' ')?,
                Value::Array(p) => (p.first()?.as_str()?, p.get(1)?.as_str()?),
                _ => return None,
            };
            let usable = !cut
                || (kept.contains(a) && kept.contains(b) && kept.contains(&*format!("{a}{b}")));
            usable.then(|| GgufValue::Str(format!("{a} {b}")))
        })
        .collect();
    let id_of = |content: &str| tokens.iter().find(|t| t.1 == content).map(|t| t.0);
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            GgufValue::Str("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            GgufValue::Str("qwen2".into()),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            GgufValue::Array(tokens.iter().map(|t| GgufValue::Str(t.1.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            GgufValue::Array(tokens.iter().map(|t| GgufValue::I32(t.2)).collect()),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            GgufValue::Array(merges),
        ),
    ];
    let cfg_path = dir.join("tokenizer_config.json");
    if let Ok(text) = std::fs::read_to_string(&cfg_path) {
        let cfg: Value = serde_json::from_str(&text).map_err(|e| ModelError::file(&cfg_path, e))?;
        let tok_str = |k: &str| match &cfg[k] {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        for (key, field) in [
            ("eos", "eos_token"),
            ("padding", "pad_token"),
            ("bos", "bos_token"),
        ] {
            if let Some(id) = tok_str(field).and_then(|t| id_of(&t)) {
                md.push((format!("tokenizer.ggml.{key}_token_id"), GgufValue::U32(id)));
            }
        }
        md.push((
            "tokenizer.ggml.add_bos_token".into(),
            GgufValue::Bool(false),
        ));
        if let Some(t) = cfg["chat_template"].as_str() {
            md.push((
                "tokenizer.chat_template".into(),
                GgufValue::Str(t.to_string()),
            ));
        }
    }
    Ok(md)
}

/// llama.cpp's GGUF metadata for a model: `general.*` (with llama.cpp's
/// `general.file_type` code), the `{arch}.*` hyperparameters and, with a tokenizer directory,
/// the `tokenizer.ggml.*` vocabulary and chat template.
pub fn gguf_metadata(
    c: &ModelConfig,
    file_type: u32,
    name: &str,
    tokenizer_dir: Option<&Path>,
) -> Result<Vec<(String, GgufValue)>> {
    let arch = c.arch.name();
    let k = |s: &str| format!("{arch}.{s}");
    let mut md = vec![
        (
            "general.architecture".to_string(),
            GgufValue::Str(arch.into()),
        ),
        ("general.name".to_string(), GgufValue::Str(name.into())),
        ("general.file_type".to_string(), GgufValue::U32(file_type)),
        (k("block_count"), GgufValue::U32(c.num_layers as u32)),
        (
            k("context_length"),
            GgufValue::U32(c.max_position_embeddings as u32),
        ),
        (k("embedding_length"), GgufValue::U32(c.hidden_size as u32)),
        (
            k("feed_forward_length"),
            GgufValue::U32(c.intermediate_size as u32),
        ),
        (
            k("attention.head_count"),
            GgufValue::U32(c.num_heads as u32),
        ),
        (
            k("attention.head_count_kv"),
            GgufValue::U32(c.num_kv_heads as u32),
        ),
        (k("attention.key_length"), GgufValue::U32(c.head_dim as u32)),
        (
            k("attention.value_length"),
            GgufValue::U32(c.head_dim as u32),
        ),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(c.rms_norm_eps),
        ),
        (k("rope.freq_base"), GgufValue::F32(c.rope_theta as f32)),
        (k("rope.dimension_count"), GgufValue::U32(c.head_dim as u32)),
    ];
    if let RopeScaling::LongRope {
        original_max_position_embeddings,
        attention_factor,
        ..
    } = &c.rope_scaling
    {
        md.push((
            k("rope.scaling.original_context_length"),
            GgufValue::U32(*original_max_position_embeddings as u32),
        ));
        md.push((
            k("rope.scaling.attn_factor"),
            GgufValue::F32(*attention_factor as f32),
        ));
    }
    if let Some(dir) = tokenizer_dir {
        md.extend(gguf_tokenizer_metadata(dir, c.vocab_size)?);
    }
    Ok(md)
}

/// Writes a GGUF file with llama.cpp's tensor names and `{arch}.*` metadata.
pub fn write_gguf_model(
    c: &ModelConfig,
    dtype: WeightFormat,
    seed: u64,
    out: &Path,
    tokenizer_dir: Option<&Path>,
) -> Result<()> {
    let ftype = match dtype {
        WeightFormat::F32 => 0u32,
        WeightFormat::F16 => 1,
        WeightFormat::BF16 => 32,
        other => {
            return Err(ModelError::file(
                out,
                format!("GGUF synth writes f32/f16/bf16 (quantize with llama.cpp), not {other:?}"),
            ))
        }
    };
    // No architecture in the name: llama.cpp sets Phi-3 token attributes when `general.name`
    // says "phi3", which fails on a borrowed (Qwen) vocabulary.
    let md = gguf_metadata(c, ftype, "kestrel synth (random weights)", tokenizer_dir)?;
    let shapes = tensor_shapes(c);
    let rope = gguf_rope_tensors(c);
    // Random values need no q/k permutation: any order is as random as another.
    let specs: Vec<TensorSpec> = shapes
        .iter()
        .map(|(name, rows, cols)| {
            let g = gguf_name(name).expect("every synthesized tensor has a GGUF name");
            TensorSpec::new(g, tensor_format(*rows, dtype, true), *rows, *cols)
        })
        .chain(
            rope.iter()
                .map(|(name, v)| TensorSpec::new(name, WeightFormat::F32, None, v.len())),
        )
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    write_gguf(out, &md, &specs, |i, buf| match shapes.get(i) {
        Some((name, rows, cols)) => fill_tensor(
            name,
            *cols,
            tensor_format(*rows, dtype, true),
            &mut rng,
            buf,
        ),
        None => buf.copy_from_slice(bytemuck::cast_slice(&rope[i - shapes.len()].1)),
    })
}
