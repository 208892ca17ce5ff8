//! Conformance of a backend's ops (every case runs on each compiled backend): each op against a
//! naive host reference on random data with odd sizes, the batch-invariant kernels (a row gives
//! the same bits alone and in any batch), the paged attention over scrambled block tables with
//! GQA and chunked prefill, the KV copies of partial prefix-cache hits, placeholder resolution,
//! and outputs without room failing cleanly.

use kestrel_backend::cpu::quant::{dequantize_row, quantize_row};
use kestrel_backend::{
    AttnShape, Backend, BatchInput, BatchLimits, HostBytes, HostWeight, KvCopy, KvDtype, KvLayout,
    Rope, SampleOutput, SamplingBatch, SamplingParams, StepOptions, WeightFormat,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

/// A weight in `format` from f32 values, and the values it really holds (after rounding).
fn weight<B: Backend>(
    b: &B,
    format: WeightFormat,
    rows: usize,
    cols: usize,
    vals: &[f32],
) -> (B::Weight, Vec<f32>) {
    let rb = format.row_bytes(cols);
    let mut bytes = vec![0u8; rows * rb];
    let mut held = vec![0.0; rows * cols];
    for r in 0..rows {
        quantize_row(
            format,
            &vals[r * cols..(r + 1) * cols],
            &mut bytes[r * rb..(r + 1) * rb],
        );
        dequantize_row(
            format,
            &bytes[r * rb..(r + 1) * rb],
            &mut held[r * cols..(r + 1) * cols],
        );
    }
    let w = b
        .load_weight(HostWeight {
            name: "w".into(),
            format,
            rows,
            cols,
            bytes: HostBytes::from_vec(bytes),
        })
        .unwrap();
    (w, held)
}

fn tensor<B: Backend>(b: &B, rows: usize, cols: usize, data: &[f32]) -> B::Tensor {
    let mut t = b.alloc_tensor(rows.max(1), cols).unwrap();
    b.from_host(data, rows, &mut t).unwrap();
    t
}

fn host<B: Backend>(b: &B, t: &B::Tensor) -> Vec<f32> {
    let mut v = Vec::new();
    b.to_host(t, &mut v).unwrap();
    v
}

fn batch<B: Backend>(b: &B, input: &BatchInput) -> B::Batch {
    let mut dev = b
        .alloc_batch(BatchLimits {
            max_tokens: input.num_tokens().max(1),
            max_seqs: input.num_seqs().max(1),
            max_blocks: input.block_tables.len().max(1),
        })
        .unwrap();
    b.upload_batch(input, &mut dev).unwrap();
    dev
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// Runs `f` as a step with the given kernels.
fn in_step<B: Backend>(b: &B, invariant: bool, f: impl FnOnce() + Send) {
    let opts = StepOptions {
        batch_invariant: invariant,
        graph_tokens: None,
    };
    b.run_step(opts, || {
        f();
        Ok::<(), ()>(())
    })
    .unwrap();
}

fn matmul_matches_reference_and_invariant_rows_match_alone<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(1);
    for format in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::BF16,
        WeightFormat::Q8_0,
        WeightFormat::Q4_0,
        WeightFormat::Q5_0,
        WeightFormat::Q4_K,
        WeightFormat::Q6_K,
    ] {
        let (m, k) = (45, 512);
        let (w, held) = weight(&b, format, m, k, &random(&mut rng, m * k, 1.0));
        let n = 70;
        let x = random(&mut rng, n * k, 1.0);
        let xt = tensor(&b, n, k, &x);
        let want: Vec<f32> = (0..n * m)
            .map(|idx| {
                let (i, j) = (idx / m, idx % m);
                (0..k).map(|t| x[i * k + t] * held[j * k + t]).sum()
            })
            .collect();
        let quantized = !matches!(
            format,
            WeightFormat::F32 | WeightFormat::F16 | WeightFormat::BF16
        );
        // Quantized formats also quantize the activations (8-bit): ~1% of the row norm.
        let tol = if quantized {
            0.02 * (k as f32).sqrt()
        } else {
            1e-4 * (k as f32).sqrt()
        };
        for invariant in [false, true] {
            let mut out = b.alloc_tensor(n, m).unwrap();
            in_step(&b, invariant, || b.matmul(&xt, &w, &mut out).unwrap());
            let got = host(&b, &out);
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= tol,
                    "{format:?} invariant={invariant}: {g} vs {e}"
                );
            }
            if invariant {
                for i in [0, 13, 69] {
                    let xi = tensor(&b, 1, k, &x[i * k..(i + 1) * k]);
                    let mut oi = b.alloc_tensor(1, m).unwrap();
                    in_step(&b, true, || b.matmul(&xi, &w, &mut oi).unwrap());
                    let alone = host(&b, &oi);
                    assert!(
                        alone
                            .iter()
                            .zip(&got[i * m..(i + 1) * m])
                            .all(|(a, g)| a.to_bits() == g.to_bits()),
                        "{format:?}: row {i} alone differs from the batch"
                    );
                }
            }
        }
    }
}

fn matmul_many_equals_one_matmul_per_weight<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(2);
    let k = 256;
    let ws: Vec<_> = [
        (WeightFormat::F16, 40),
        (WeightFormat::Q8_0, 24),
        (WeightFormat::Q4_K, 8),
    ]
    .into_iter()
    .map(|(f, m)| (weight(&b, f, m, k, &random(&mut rng, m * k, 1.0)).0, m))
    .collect();
    for n in [1, 9, 70] {
        let xt = tensor(&b, n, k, &random(&mut rng, n * k, 1.0));
        let mut outs: Vec<B::Tensor> = ws
            .iter()
            .map(|(_, m)| b.alloc_tensor(n, *m).unwrap())
            .collect();
        let refs: Vec<&B::Weight> = ws.iter().map(|(w, _)| w).collect();
        {
            let mut out_refs: Vec<&mut B::Tensor> = outs.iter_mut().collect();
            b.matmul_many(&xt, &refs, &mut out_refs).unwrap();
        }
        for ((w, m), got) in ws.iter().zip(&outs) {
            let mut one = b.alloc_tensor(n, *m).unwrap();
            b.matmul(&xt, w, &mut one).unwrap();
            assert_eq!(host(&b, got), host(&b, &one), "n = {n}");
        }
    }
}

fn an_output_without_room_is_an_error<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(3);
    let (w, _) = weight(&b, WeightFormat::F32, 8, 32, &random(&mut rng, 8 * 32, 1.0));
    let xt = tensor(&b, 4, 32, &random(&mut rng, 4 * 32, 1.0));
    let mut small = b.alloc_tensor(2, 8).unwrap();
    let err = b.matmul(&xt, &w, &mut small).unwrap_err().to_string();
    assert!(err.contains("capacity"), "{err}");
    let mut wrong = b.alloc_tensor(4, 9).unwrap();
    let err = b.matmul(&xt, &w, &mut wrong).unwrap_err().to_string();
    assert!(err.contains("matmul"), "{err}");
}

fn row_ops_match_reference<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(4);
    let (n, heads, d) = (5, 3, 64);
    let cols = heads * d;
    let x = random(&mut rng, n * cols, 2.0);
    let xt = tensor(&b, n, cols, &x);
    // RMSNorm over whole rows and per head.
    for g in [cols, d] {
        let wv = random(&mut rng, g, 1.0);
        let (w, _) = weight(&b, WeightFormat::F32, 1, g, &wv);
        let want: Vec<f32> = x
            .chunks(g)
            .flat_map(|grp| {
                let inv = 1.0 / (grp.iter().map(|v| v * v).sum::<f32>() / g as f32 + 1e-6).sqrt();
                grp.iter()
                    .zip(&wv)
                    .map(move |(v, wi)| v * inv * wi)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut out = b.alloc_tensor(n, cols).unwrap();
        b.rms_norm(&xt, &w, 1e-6, &mut out).unwrap();
        assert_close(&host(&b, &out), &want, 1e-5, "rms_norm");
        let mut inplace = tensor(&b, n, cols, &x);
        b.rms_norm_inplace(&mut inplace, &w, 1e-6).unwrap();
        assert_close(&host(&b, &inplace), &want, 1e-5, "rms_norm_inplace");
    }
    // Bias, residual add, SiLU·up.
    let bias = random(&mut rng, cols, 1.0);
    let (bw, _) = weight(&b, WeightFormat::F32, 1, cols, &bias);
    let mut t = tensor(&b, n, cols, &x);
    b.add_bias(&mut t, &bw).unwrap();
    let want: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % cols])
        .collect();
    assert_close(&host(&b, &t), &want, 1e-6, "add_bias");
    let y = random(&mut rng, n * cols, 2.0);
    let yt = tensor(&b, n, cols, &y);
    b.add_assign(&mut t, &yt).unwrap();
    let want: Vec<f32> = want.iter().zip(&y).map(|(a, c)| a + c).collect();
    assert_close(&host(&b, &t), &want, 1e-6, "add_assign");
    let mut out = b.alloc_tensor(n, cols).unwrap();
    b.silu_mul(&xt, &yt, &mut out).unwrap();
    let want: Vec<f32> = x
        .iter()
        .zip(&y)
        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
        .collect();
    assert_close(&host(&b, &out), &want, 1e-5, "silu_mul");
    // Rotary embedding (NeoX halves) at the batch positions.
    let positions = [0u32, 7, 31, 100, 4095];
    let mut input = BatchInput::new(16);
    for &p in &positions {
        let table: Vec<u32> = (0..=p / 16).collect();
        input.push_seq([1], p as usize, &table, true);
    }
    let dev = batch(&b, &input);
    // Default frequencies, then per-pair ones (scaled RoPE) with a factor on cos and sin.
    let table: Vec<f32> = (0..d / 2).map(|i| 0.9f32.powi(i as i32) / 3.0).collect();
    let (tw, _) = weight(&b, WeightFormat::F32, 1, d / 2, &table);
    for (inv_freq, scale) in [(None, 1.0f32), (Some(&tw), 1.19)] {
        let mut r = tensor(&b, n, cols, &x);
        let rope = Rope {
            head_dim: d,
            theta: 1e6,
            inv_freq,
            scale,
        };
        b.rope(&mut r, &dev, rope).unwrap();
        let mut want = x.clone();
        for (row, &p) in want.chunks_mut(cols).zip(&positions) {
            for head in row.chunks_mut(d) {
                for i in 0..d / 2 {
                    let f = match inv_freq {
                        Some(_) => table[i] as f64,
                        None => 1e6f64.powf(-((2 * i) as f64) / d as f64),
                    };
                    let a = p as f64 * f;
                    let (c, s) = (a.cos() as f32 * scale, a.sin() as f32 * scale);
                    let (u, v) = (head[i], head[i + d / 2]);
                    head[i] = u * c - v * s;
                    head[i + d / 2] = v * c + u * s;
                }
            }
        }
        assert_close(&host(&b, &r), &want, 1e-5, "rope");
    }
    // A table of the wrong length is an error naming the op.
    let (short, _) = weight(&b, WeightFormat::F32, 1, d / 4, &table[..d / 4]);
    let mut r = tensor(&b, n, cols, &x);
    let rope = Rope {
        head_dim: d,
        theta: 1e6,
        inv_freq: Some(&short),
        scale: 1.0,
    };
    let err = b.rope(&mut r, &dev, rope).unwrap_err().to_string();
    assert!(err.contains("rope"), "{err}");
    // The logit rows of the batch (each sequence's last token).
    let mut rows = b.alloc_tensor(n, cols).unwrap();
    b.gather_logit_rows(&xt, &dev, &mut rows).unwrap();
    assert_eq!(host(&b, &rows), x);
}

fn embedding_gathers_dequantized_rows<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(5);
    for format in [
        WeightFormat::F32,
        WeightFormat::F16,
        WeightFormat::Q8_0,
        WeightFormat::Q6_K,
    ] {
        let (vocab, hidden) = (50, 256);
        let (table, held) = weight(
            &b,
            format,
            vocab,
            hidden,
            &random(&mut rng, vocab * hidden, 1.0),
        );
        let ids = [3u32, 49, 0, 3];
        let input = BatchInput::from_sequences(&[(&ids, 0, &[0])], 16);
        let mut out = b.alloc_tensor(4, hidden).unwrap();
        b.embedding(&table, &batch(&b, &input), &mut out).unwrap();
        let want: Vec<f32> = ids
            .iter()
            .flat_map(|&i| held[i as usize * hidden..(i as usize + 1) * hidden].to_vec())
            .collect();
        assert_eq!(host(&b, &out), want, "{format:?}");
    }
}

/// Naive causal attention of one query row against keys/values `[pos + 1][kv_heads * d]`.
fn reference_attention(
    q: &[f32],
    keys: &[Vec<f32>],
    values: &[Vec<f32>],
    shape: AttnShape,
) -> Vec<f32> {
    let d = shape.head_dim;
    let group = shape.num_heads / shape.num_kv_heads;
    let mut out = vec![0.0; shape.num_heads * d];
    for h in 0..shape.num_heads {
        let off = (h / group) * d;
        let qh = &q[h * d..(h + 1) * d];
        let scores: Vec<f64> = keys
            .iter()
            .map(|k| {
                qh.iter()
                    .zip(&k[off..off + d])
                    .map(|(a, b)| f64::from(a * b))
                    .sum::<f64>()
                    * f64::from(shape.scale)
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = w.iter().sum();
        for (wj, v) in w.iter().zip(values) {
            for (o, x) in out[h * d..(h + 1) * d].iter_mut().zip(&v[off..off + d]) {
                *o += (wj / total * f64::from(*x)) as f32;
            }
        }
    }
    out
}

fn paged_attention_matches_reference<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(6);
    let shape = AttnShape {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        scale: 0.125,
    };
    let kv_w = shape.num_kv_heads * shape.head_dim;
    let q_w = shape.num_heads * shape.head_dim;
    for dtype in [KvDtype::F32, KvDtype::F16] {
        let layout = KvLayout {
            num_blocks: 12,
            block_size: 16,
            num_kv_heads: shape.num_kv_heads,
            head_dim: shape.head_dim,
            dtype,
        };
        let mut cache = b.alloc_kv_layer(layout).unwrap();
        // Two sequences on scrambled blocks: a 37-token prompt, and a 20-token chunk after 10
        // cached tokens (written by an earlier step).
        let tables: [Vec<u32>; 2] = [vec![7, 2, 9], vec![4, 0]];
        let lens = [37usize, 30];
        let round = |v: Vec<f32>| -> Vec<f32> {
            match dtype {
                KvDtype::F32 => v,
                KvDtype::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
            }
        };
        let keys: Vec<Vec<Vec<f32>>> = lens
            .iter()
            .map(|&l| (0..l).map(|_| round(random(&mut rng, kv_w, 1.0))).collect())
            .collect();
        let values: Vec<Vec<Vec<f32>>> = lens
            .iter()
            .map(|&l| (0..l).map(|_| round(random(&mut rng, kv_w, 1.0))).collect())
            .collect();
        // The earlier step: sequence 1's first 10 tokens.
        let mut early = BatchInput::new(16);
        early.push_seq([0; 10], 0, &tables[1], false);
        let k0: Vec<f32> = keys[1][..10].concat();
        let v0: Vec<f32> = values[1][..10].concat();
        b.write_kv(
            &mut cache,
            &tensor(&b, 10, kv_w, &k0),
            &tensor(&b, 10, kv_w, &v0),
            &batch(&b, &early),
        )
        .unwrap();
        let mut step = BatchInput::new(16);
        step.push_seq([0; 37], 0, &tables[0], true);
        step.push_seq([0; 20], 10, &tables[1], true);
        let k: Vec<f32> = [keys[0].concat(), keys[1][10..].concat()].concat();
        let v: Vec<f32> = [values[0].concat(), values[1][10..].concat()].concat();
        let q = random(&mut rng, 57 * q_w, 1.0);
        let dev = batch(&b, &step);
        b.write_kv(
            &mut cache,
            &tensor(&b, 57, kv_w, &k),
            &tensor(&b, 57, kv_w, &v),
            &dev,
        )
        .unwrap();
        let qt = tensor(&b, 57, q_w, &q);
        let mut want = Vec::new();
        for (t, (s, pos)) in (0..37)
            .map(|p| (0, p))
            .chain((10..30).map(|p| (1, p)))
            .enumerate()
        {
            let qrow = &q[t * q_w..(t + 1) * q_w];
            let qrow: Vec<f32> = match dtype {
                KvDtype::F32 => qrow.to_vec(),
                // ggml's arithmetic rounds the query to f16 over an f16 cache.
                KvDtype::F16 => round(qrow.to_vec()),
            };
            want.extend(reference_attention(
                &qrow,
                &keys[s][..=pos],
                &values[s][..=pos],
                shape,
            ));
        }
        let tol = match dtype {
            KvDtype::F32 => 1e-5,
            KvDtype::F16 => 4e-3,
        };
        let mut outs = Vec::new();
        for invariant in [false, true] {
            let mut out = b.alloc_tensor(57, q_w).unwrap();
            in_step(&b, invariant, || {
                b.attention(&qt, &cache, &dev, shape, &mut out).unwrap()
            });
            let got = host(&b, &out);
            assert_close(
                &got,
                &want,
                tol,
                &format!("{dtype:?} invariant={invariant}"),
            );
            outs.push(got);
        }
        // Batch-invariant: each token alone (a one-token sequence) gives the same bits.
        for t in [0usize, 36, 40, 56] {
            let (s, pos) = if t < 37 { (0, t) } else { (1, t - 37 + 10) };
            let mut one = BatchInput::new(16);
            one.push_seq([0], pos, &tables[s], true);
            let qi = tensor(&b, 1, q_w, &q[t * q_w..(t + 1) * q_w]);
            let mut out = b.alloc_tensor(1, q_w).unwrap();
            let dev1 = batch(&b, &one);
            in_step(&b, true, || {
                b.attention(&qi, &cache, &dev1, shape, &mut out).unwrap()
            });
            let alone = host(&b, &out);
            assert!(
                alone
                    .iter()
                    .zip(&outs[1][t * q_w..(t + 1) * q_w])
                    .all(|(a, g)| a.to_bits() == g.to_bits()),
                "{dtype:?}: token {t} alone differs from its chunk"
            );
        }
    }
}

/// A partial prefix-cache hit: sequence B shares A's first 20 tokens, block 3 whole and 4
/// slots of block 5, which the step copies into B's own block 8 while A's chunk writes those
/// very slots in the same step (so the copy must follow the write). B's attention then reads
/// A's keys through its own table.
fn kv_copies_follow_the_steps_writes_and_feed_attention<B: Backend + Clone>(b: B) {
    let mut rng = StdRng::seed_from_u64(8);
    let shape = AttnShape {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 64,
        scale: 0.125,
    };
    let kv_w = shape.num_kv_heads * shape.head_dim;
    let q_w = shape.num_heads * shape.head_dim;
    let layout = KvLayout {
        num_blocks: 10,
        block_size: 16,
        num_kv_heads: shape.num_kv_heads,
        head_dim: shape.head_dim,
        dtype: KvDtype::F32,
    };
    let mut cache = b.alloc_kv_layer(layout).unwrap();
    let (table_a, table_b) = ([3u32, 5], [3u32, 8]);
    let keys: Vec<Vec<f32>> = (0..22).map(|_| random(&mut rng, kv_w, 1.0)).collect();
    let values: Vec<Vec<f32>> = (0..22).map(|_| random(&mut rng, kv_w, 1.0)).collect();
    // An earlier step: A's first 16 tokens (block 3).
    let mut early = BatchInput::new(16);
    early.push_seq([0; 16], 0, &table_a, false);
    b.write_kv(
        &mut cache,
        &tensor(&b, 16, kv_w, &keys[..16].concat()),
        &tensor(&b, 16, kv_w, &values[..16].concat()),
        &batch(&b, &early),
    )
    .unwrap();
    // This step: A's tokens 16..20 (block 5), and B's 20 and 21 after its partial hit.
    let mut step = BatchInput::new(16);
    step.push_seq([0; 4], 16, &table_a, true);
    step.push_seq([0; 2], 20, &table_b, true);
    step.kv_copies.push(KvCopy {
        src_block: 5,
        dst_block: 8,
        num_tokens: 4,
    });
    step.validate(10, 1, 0).unwrap();
    let dev = batch(&b, &step);
    b.write_kv(
        &mut cache,
        &tensor(&b, 6, kv_w, &keys[16..22].concat()),
        &tensor(&b, 6, kv_w, &values[16..22].concat()),
        &dev,
    )
    .unwrap();
    b.copy_kv(&mut cache, &dev).unwrap();
    let q = random(&mut rng, 6 * q_w, 1.0);
    let mut out = b.alloc_tensor(6, q_w).unwrap();
    in_step(&b, false, || {
        b.attention(&tensor(&b, 6, q_w, &q), &cache, &dev, shape, &mut out)
            .unwrap()
    });
    // A's tokens see A's keys; B's token at position p sees A's 20 and then its own.
    let mut want = Vec::new();
    for (t, pos) in (16..22).enumerate() {
        want.extend(reference_attention(
            &q[t * q_w..(t + 1) * q_w],
            &keys[..=pos],
            &values[..=pos],
            shape,
        ));
    }
    assert_close(&host(&b, &out), &want, 1e-5, "attention after the copy");
    // A copy that names a block outside the cache is an error, not a write out of bounds.
    let mut bad = step.clone();
    bad.kv_copies[0].dst_block = 10;
    assert!(bad.validate(10, 1, 0).is_err());
    let dev_bad = batch(&b, &bad);
    assert!(b.copy_kv(&mut cache, &dev_bad).is_err());
}

fn placeholders_take_the_previous_steps_samples<B: Backend + Clone>(b: B) {
    let vocab = 6;
    let logits = [0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 9.0];
    let lt = tensor(&b, 2, vocab, &logits);
    let mut prev = b.alloc_sampling(2, vocab).unwrap();
    let mut params = SamplingBatch::default();
    for _ in 0..2 {
        params.push(&SamplingParams::greedy(), 0, 0, std::iter::empty(), &[]);
    }
    b.upload_sampling(&params, &mut prev).unwrap();
    b.sample(&lt, &mut prev).unwrap();
    let mut out = SampleOutput::default();
    b.read_sampled(&prev, &mut out).unwrap();
    assert_eq!(out.tokens, [2, 5]);
    let mut input = BatchInput::new(16);
    input.push_seq([1, 0], 0, &[0], true);
    input.push_seq([0], 3, &[1], true);
    input.set_prev_sampled(1, 1);
    input.set_prev_sampled(2, 0);
    input.validate(2, vocab, 2).unwrap();
    let mut dev = batch(&b, &input);
    b.resolve_placeholders(&mut dev, &prev).unwrap();
    let (table, _) = weight(
        &b,
        WeightFormat::F32,
        vocab,
        8,
        &(0..vocab * 8).map(|i| (i / 8) as f32).collect::<Vec<_>>(),
    );
    let mut emb = b.alloc_tensor(3, 8).unwrap();
    b.embedding(&table, &dev, &mut emb).unwrap();
    let ids: Vec<f32> = host(&b, &emb).chunks(8).map(|r| r[0]).collect();
    assert_eq!(ids, [1.0, 5.0, 2.0]);
}

kestrel_backend::backend_tests!(
    matmul_matches_reference_and_invariant_rows_match_alone,
    matmul_many_equals_one_matmul_per_weight,
    an_output_without_room_is_an_error,
    row_ops_match_reference,
    embedding_gathers_dequantized_rows,
    paged_attention_matches_reference,
    kv_copies_follow_the_steps_writes_and_feed_attention,
    placeholders_take_the_previous_steps_samples,
);
