//! The pre-norm decoder of every supported architecture (Qwen3, Qwen2, Llama, Phi-3), written
//! once over the backend trait; the architectures differ only in which weights they have.
//!
//! Per layer: `x += o_proj(attn(rope(norm_q(q)), rope(norm_k(k)), v))` then
//! `x += down(silu(gate(h)) * up(h))` with pre-RMSNorms; Qwen3 adds per-head RMSNorm on q and k
//! before rotary embedding, Qwen2 adds bias to the q, k and v projections, Phi-3 stores q, k, v
//! as one `qkv_proj` and gate, up as one `gate_up_proj` (split by rows at load, without a copy).
//! Scaled RoPE (Llama 3's `llama3`, Phi-3's `longrope`) is a table of per-pair frequencies
//! computed once at load. Logits are computed only for the batch's `logits_indices` rows.

use kestrel_backend::{AttnShape, Backend, HostBytes, HostWeight, Rope, WeightFormat};

use crate::config::{Arch, ModelConfig};
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::source::WeightSource;
use crate::workspace::Workspace;

struct Layer<B: Backend> {
    /// `[1, hidden]`
    input_layernorm: B::Weight,
    /// `[num_heads * head_dim, hidden]`
    q_proj: B::Weight,
    /// `[num_kv_heads * head_dim, hidden]`
    k_proj: B::Weight,
    /// `[num_kv_heads * head_dim, hidden]`
    v_proj: B::Weight,
    /// `[hidden, num_heads * head_dim]`
    o_proj: B::Weight,
    /// `[1, num_heads * head_dim]`, `[1, kv_dim]`, `[1, kv_dim]`, `[1, hidden]` when present.
    q_bias: Option<B::Weight>,
    k_bias: Option<B::Weight>,
    v_bias: Option<B::Weight>,
    o_bias: Option<B::Weight>,
    /// `[1, head_dim]` (Qwen3 only).
    q_norm: Option<B::Weight>,
    k_norm: Option<B::Weight>,
    /// `[1, hidden]`
    post_attention_layernorm: B::Weight,
    /// `[intermediate, hidden]`, `[intermediate, hidden]`, `[hidden, intermediate]`
    gate_proj: B::Weight,
    up_proj: B::Weight,
    down_proj: B::Weight,
}

pub struct DecoderModel<B: Backend> {
    pub config: ModelConfig,
    /// `[1, head_dim / 2]` f32 inverse frequencies of scaled RoPE; `None` for the default.
    rope_inv_freq: Option<B::Weight>,
    /// `[vocab, hidden]`
    embed_tokens: B::Weight,
    layers: Vec<Layer<B>>,
    /// `[1, hidden]`
    norm: B::Weight,
    /// `[vocab, hidden]`; `None` when tied to `embed_tokens`.
    lm_head: Option<B::Weight>,
}

/// Host weight `name`, its shape checked.
fn host(src: &dyn WeightSource, name: &str, rows: usize, cols: usize) -> Result<HostWeight> {
    let w = src.get(name)?;
    if (w.rows, w.cols) != (rows, cols) {
        return Err(crate::error::ModelError::BadWeight {
            name: name.to_string(),
            source_desc: src.describe(),
            detail: format!("shape [{}, {}], expected [{rows}, {cols}]", w.rows, w.cols),
        });
    }
    Ok(w)
}

/// Loads weight `name` and checks its shape.
fn load<B: Backend>(
    b: &B,
    src: &dyn WeightSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<B::Weight> {
    Ok(b.load_weight(host(src, name, rows, cols)?)?)
}

/// Loads fused weight `name` (`[sum(parts), cols]`) as one weight per block of rows, each
/// pointing into the same bytes (rows are whole quantization blocks in every format).
fn load_split<B: Backend>(
    b: &B,
    src: &dyn WeightSource,
    name: &str,
    parts: &[usize],
    cols: usize,
) -> Result<Vec<B::Weight>> {
    let w = host(src, name, parts.iter().sum(), cols)?;
    let row_bytes = w.format.row_bytes(cols);
    let mut first = 0;
    let mut out = Vec::with_capacity(parts.len());
    for &rows in parts {
        let bytes = w
            .bytes
            .slice(first * row_bytes, rows * row_bytes)
            .expect("rows inside the checked shape");
        out.push(b.load_weight(HostWeight {
            name: format!("{name}[{first}..{}]", first + rows),
            format: w.format,
            rows,
            cols,
            bytes,
        })?);
        first += rows;
    }
    Ok(out)
}

fn load_opt<B: Backend>(
    b: &B,
    src: &dyn WeightSource,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Option<B::Weight>> {
    if src.contains(name) {
        load(b, src, name, rows, cols).map(Some)
    } else {
        Ok(None)
    }
}

impl<B: Backend> DecoderModel<B> {
    pub fn load(backend: &B, config: ModelConfig, src: &dyn WeightSource) -> Result<Self> {
        let c = &config;
        let (h, q, kv, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let p = |s: &str| format!("model.layers.{i}.{s}");
            let qk_norm = c.arch == Arch::Qwen3;
            let norm = |s: &str| -> Result<Option<B::Weight>> {
                if qk_norm {
                    load(backend, src, &p(s), 1, c.head_dim).map(Some)
                } else {
                    Ok(None)
                }
            };
            let fused = c.arch == Arch::Phi3;
            let (q_proj, k_proj, v_proj) = if fused {
                let [q_proj, k_proj, v_proj]: [B::Weight; 3] = load_split(
                    backend,
                    src,
                    &p("self_attn.qkv_proj.weight"),
                    &[q, kv, kv],
                    h,
                )?
                .try_into()
                .ok()
                .expect("three parts");
                (q_proj, k_proj, v_proj)
            } else {
                (
                    load(backend, src, &p("self_attn.q_proj.weight"), q, h)?,
                    load(backend, src, &p("self_attn.k_proj.weight"), kv, h)?,
                    load(backend, src, &p("self_attn.v_proj.weight"), kv, h)?,
                )
            };
            let (gate_proj, up_proj) = if fused {
                let [gate, up]: [B::Weight; 2] = load_split(
                    backend,
                    src,
                    &p("mlp.gate_up_proj.weight"),
                    &[inter, inter],
                    h,
                )?
                .try_into()
                .ok()
                .expect("two parts");
                (gate, up)
            } else {
                (
                    load(backend, src, &p("mlp.gate_proj.weight"), inter, h)?,
                    load(backend, src, &p("mlp.up_proj.weight"), inter, h)?,
                )
            };
            layers.push(Layer {
                input_layernorm: load(backend, src, &p("input_layernorm.weight"), 1, h)?,
                q_proj,
                k_proj,
                v_proj,
                o_proj: load(backend, src, &p("self_attn.o_proj.weight"), h, q)?,
                q_bias: load_opt(backend, src, &p("self_attn.q_proj.bias"), 1, q)?,
                k_bias: load_opt(backend, src, &p("self_attn.k_proj.bias"), 1, kv)?,
                v_bias: load_opt(backend, src, &p("self_attn.v_proj.bias"), 1, kv)?,
                o_bias: load_opt(backend, src, &p("self_attn.o_proj.bias"), 1, h)?,
                q_norm: norm("self_attn.q_norm.weight")?,
                k_norm: norm("self_attn.k_norm.weight")?,
                post_attention_layernorm: load(
                    backend,
                    src,
                    &p("post_attention_layernorm.weight"),
                    1,
                    h,
                )?,
                gate_proj,
                up_proj,
                down_proj: load(backend, src, &p("mlp.down_proj.weight"), h, inter)?,
            });
        }
        let rope_inv_freq = match c.rope_inv_freq() {
            None => None,
            Some(table) => Some(backend.load_weight(HostWeight {
                name: "rope inverse frequencies".into(),
                format: WeightFormat::F32,
                rows: 1,
                cols: table.len(),
                bytes: HostBytes::from_vec(bytemuck::cast_slice(&table).to_vec()),
            })?),
        };
        // A separate head is used whenever the checkpoint has one (some tied configs still ship
        // it); then the embedding's rows are only looked up.
        let tied = c.tie_word_embeddings && !src.contains("lm_head.weight");
        let embed = host(src, "model.embed_tokens.weight", c.vocab_size, h)?;
        let embed_tokens = if tied {
            backend.load_weight(embed)?
        } else {
            backend.load_embedding(embed)?
        };
        let lm_head = if tied {
            None
        } else {
            Some(load(backend, src, "lm_head.weight", c.vocab_size, h)?)
        };
        let norm = load(backend, src, "model.norm.weight", 1, h)?;
        Ok(Self {
            config,
            rope_inv_freq,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// One forward step over the uploaded batch: writes the batch's K/V into `kv` and leaves
    /// the logits of its `logits_indices` rows in `ws.logits` (`[num_logits, vocab]`).
    pub fn forward(
        &self,
        backend: &B,
        ws: &mut Workspace<B>,
        batch: &B::Batch,
        kv: &mut KvCache<B>,
    ) -> Result<()> {
        let c = &self.config;
        let shape = AttnShape {
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        let eps = c.rms_norm_eps;
        let rope = Rope {
            head_dim: c.head_dim,
            theta: c.rope_theta,
            inv_freq: self.rope_inv_freq.as_ref(),
            scale: c.rope_scale(),
        };
        let Workspace {
            x,
            h,
            q,
            k,
            v,
            attn,
            o,
            gate,
            up,
            act,
            last,
            logits,
            ..
        } = ws;
        // [num_tokens, hidden]
        backend.embedding(&self.embed_tokens, batch, x)?;
        for (layer, cache) in self.layers.iter().zip(kv.layers.iter_mut()) {
            // [num_tokens, hidden]
            backend.rms_norm(x, &layer.input_layernorm, eps, h)?;
            // [num_tokens, num_heads * head_dim], [num_tokens, kv_dim], [num_tokens, kv_dim]
            backend.matmul_many(
                h,
                &[&layer.q_proj, &layer.k_proj, &layer.v_proj],
                &mut [&mut *q, &mut *k, &mut *v],
            )?;
            if let Some(bias) = &layer.q_bias {
                backend.add_bias(q, bias)?;
            }
            if let Some(bias) = &layer.k_bias {
                backend.add_bias(k, bias)?;
            }
            if let Some(bias) = &layer.v_bias {
                backend.add_bias(v, bias)?;
            }
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                backend.rms_norm_inplace(q, qn, eps)?;
                backend.rms_norm_inplace(k, kn, eps)?;
            }
            backend.rope(q, batch, rope)?;
            backend.rope(k, batch, rope)?;
            backend.write_kv(cache, k, v, batch)?;
            // Partial prefix-cache hits: slots of cached blocks into the sequences' own.
            backend.copy_kv(cache, batch)?;
            // [num_tokens, num_heads * head_dim]
            backend.attention(q, cache, batch, shape, attn)?;
            // [num_tokens, hidden]
            backend.matmul(attn, &layer.o_proj, o)?;
            if let Some(bias) = &layer.o_bias {
                backend.add_bias(o, bias)?;
            }
            backend.add_assign(x, o)?;
            backend.rms_norm(x, &layer.post_attention_layernorm, eps, h)?;
            // [num_tokens, intermediate]
            backend.matmul_many(
                h,
                &[&layer.gate_proj, &layer.up_proj],
                &mut [&mut *gate, &mut *up],
            )?;
            backend.silu_mul(gate, up, act)?;
            // [num_tokens, hidden]
            backend.matmul(act, &layer.down_proj, o)?;
            backend.add_assign(x, o)?;
        }
        // [num_logits, hidden] → [num_logits, vocab]
        backend.gather_logit_rows(x, batch, last)?;
        backend.rms_norm_inplace(last, &self.norm, eps)?;
        backend.matmul(
            last,
            self.lm_head.as_ref().unwrap_or(&self.embed_tokens),
            logits,
        )?;
        Ok(())
    }
}
