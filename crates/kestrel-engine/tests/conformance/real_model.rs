//! Reproducibility on the real Qwen2.5-Coder-0.5B GGUF, whose quantized weights take other
//! kernels for one row than for many (integer dot products per row; a packed GEMM for batches)
//! and whose prompts take other attention kernels in chunks than one by one. With the default
//! batch invariance, greedy and seeded requests give the same tokens alone, inside a batch of
//! eight, and on a prefix-cache hit as on a miss.

use kestrel_backend::Backend;
use kestrel_engine::{EngineRequest, SamplingParams};
use kestrel_text::Tokenizer;

use crate::common::*;

/// ChatML, as Qwen2.5's template renders a system and a user turn (the Qwen3 tokenizer shares
/// Qwen2.5's vocabulary and its `<|im_start|>` / `<|im_end|>` ids).
fn chat(tok: &Tokenizer, system: &str, user: &str) -> Vec<u32> {
    let text = format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    );
    tok.encode(&text, false).expect("encode")
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_dir(fetched_fixtures().join("qwen3-tokenizer")).expect("tokenizer")
}

const DEFAULT_SYSTEM: &str = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// About a thousand words of plain English, the same every run.
fn long_system_prompt() -> String {
    let words = [
        "the", "river", "carried", "small", "boats", "past", "old", "stone", "houses", "where",
        "people", "kept", "gardens", "of", "herbs", "and", "flowers", "every", "morning", "bakers",
        "opened", "their", "doors", "to", "sell", "bread", "while", "children", "ran", "toward",
        "school", "through", "narrow", "streets", "full", "light", "sound",
    ];
    let mut text = String::from("You are a careful assistant for a town library. ");
    for i in 0..1000usize {
        text.push_str(words[(i * 7 + i / 37) % words.len()]);
        text.push(if i % 13 == 12 { '.' } else { ' ' });
        if i % 13 == 12 {
            text.push(' ');
        }
    }
    text
}

/// Seven other requests to share the steps with: other prompts, greedy and sampled.
fn neighbours(tok: &Tokenizer, system: &str) -> Vec<EngineRequest> {
    [
        "Name an animal.",
        "What is 2 + 3?",
        "Write a haiku about rain.",
        "Say hello in French.",
        "List three fruits.",
        "What is Rust?",
        "Count to five.",
    ]
    .iter()
    .enumerate()
    .map(|(i, q)| {
        let sampling = if i % 2 == 0 {
            SamplingParams::greedy()
        } else {
            SamplingParams {
                temperature: 0.8,
                ..SamplingParams::default()
            }
        };
        request(&format!("n{i}"), chat(tok, system, q), 12, sampling)
    })
    .collect()
}

fn seeded_color_reproduces_alone_in_a_batch_and_on_a_cache_hit<B: Backend + Clone>(b: B) {
    let tok = tokenizer();
    let prompt = chat(&tok, DEFAULT_SYSTEM, "Name a color.");
    let color = |id: &str| {
        request(
            id,
            prompt.clone(),
            16,
            SamplingParams {
                temperature: 1.0,
                seed: Some(7),
                ..SamplingParams::default()
            },
        )
    };
    let handle = engine(b, &real_gguf(), |c| c.max_model_len = 512);
    let cold = run_all(&handle, vec![color("cold")]).remove(0);
    assert_eq!(cold.usage.cached_tokens, 0);
    let hit = run_all(&handle, vec![color("hit")]).remove(0);
    assert_eq!(hit.usage.cached_tokens, (prompt.len() - 1) / BLOCK * BLOCK);
    assert!(hit.usage.cached_tokens > 0);
    assert_eq!(
        hit.tokens, cold.tokens,
        "a prefix-cache hit samples what the miss sampled"
    );
    let mut batch = vec![color("batched")];
    batch.extend(neighbours(&tok, DEFAULT_SYSTEM));
    assert_eq!(
        run_all(&handle, batch)[0].tokens,
        cold.tokens,
        "inside a batch of 8"
    );
}

fn greedy_after_a_long_shared_system_prompt_reproduces<B: Backend + Clone>(b: B) {
    let tok = tokenizer();
    let system = long_system_prompt();
    let prompt = chat(&tok, &system, "Which room of the library is quietest?");
    assert!(prompt.len() > 1000, "{} tokens", prompt.len());
    let handle = engine(b, &real_gguf(), |c| {
        c.max_model_len = 2048;
        c.num_blocks = 512;
        c.max_num_batched_tokens = 2048;
    });
    let ask = |id: &str| greedy(id, prompt.clone(), 16);
    let cold = run_all(&handle, vec![ask("cold")]).remove(0);
    let hit = run_all(&handle, vec![ask("hit")]).remove(0);
    assert!(hit.usage.cached_tokens >= 1000);
    assert_eq!(
        hit.tokens, cold.tokens,
        "the cache hit continues as the cold request did"
    );
    let mut batch = vec![ask("batched")];
    batch.extend(neighbours(&tok, &system));
    assert_eq!(
        run_all(&handle, batch)[0].tokens,
        cold.tokens,
        "inside a batch of 8"
    );
}

kestrel_backend::backend_tests!(
    seeded_color_reproduces_alone_in_a_batch_and_on_a_cache_hit,
    greedy_after_a_long_shared_system_prompt_reproduces,
);
