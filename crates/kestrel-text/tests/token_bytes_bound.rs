//! `Tokenizer::max_token_bytes` is what the server uses to refuse a prompt too long for the
//! context without tokenizing it: a text of `b` bytes must have at least
//! `b / (4 · max_token_bytes)` tokens (the 4 covers Unicode normalization, which shrinks text
//! at most threefold). Checked on the real Qwen3 and Qwen2.5 (GGUF) tokenizers with the texts
//! that pack the most bytes into a token: the longest vocabulary strings repeated, runs of one
//! character, text that NFC/NFKC shrinks, and random Unicode.

mod common;

use std::sync::Arc;

use kestrel_text::Tokenizer;
use proptest::prelude::*;

fn holds(tok: &Tokenizer, max_token_bytes: usize, text: &str) {
    let tokens = tok.encode(text, false).expect("encode").len();
    assert!(
        tokens * 4 * max_token_bytes >= text.len(),
        "{} bytes in {tokens} tokens (max_token_bytes {max_token_bytes}): {:?}",
        text.len(),
        &text[..text.len().min(80)]
    );
}

fn dense_texts(tok: &Tokenizer) -> Vec<String> {
    // The longest decoded tokens, each repeated.
    let mut longest: Vec<(usize, String)> = (0..tok.vocab_size() as u32)
        .filter_map(|id| tok.decode(&[id], false).ok())
        .map(|t| (t.len(), t))
        .collect();
    longest.sort_by(|a, b| b.0.cmp(&a.0));
    let mut texts: Vec<String> = longest
        .into_iter()
        .take(20)
        .map(|(_, t)| t.repeat(50))
        .collect();
    for c in [" ", "\n", "=", "-", "a", "0", "\t", "한", "ﾠ"] {
        texts.push(c.repeat(5000));
    }
    // Hangul jamo (NFC composes three into one syllable), full-width letters (NFKC: ASCII),
    // combining accents (NFC composes them).
    texts.push("\u{1100}\u{1161}\u{11A8}".repeat(2000));
    texts.push("ＡＢＣ".repeat(2000));
    texts.push("e\u{0301}".repeat(3000));
    texts.push("<|im_start|><|im_end|>".repeat(500));
    texts
}

fn check_tokenizer(tok: Arc<Tokenizer>) {
    let k = tok.max_token_bytes();
    assert!(k >= 16, "implausibly short tokens: {k}");
    for text in dense_texts(&tok) {
        holds(&tok, k, &text);
    }
}

#[test]
fn bound_holds_for_dense_text_qwen3() {
    check_tokenizer(common::qwen3_tokenizer());
}

#[test]
fn bound_holds_for_dense_text_qwen25_gguf() {
    check_tokenizer(common::qwen25_gguf_tokenizer());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn bound_holds_for_random_text(text in "\\PC{0,400}") {
        let tok = common::qwen3_tokenizer();
        let k = tok.max_token_bytes();
        holds(&tok, k, &text);
    }
}
