//! The tokenizer rebuilt from the real Qwen2.5-Coder GGUF vocabulary must tokenize like the
//! real Qwen3 `tokenizer.json`: both models share one byte-level BPE (vocabulary and merges)
//! for ordinary text. Their added tokens differ past id 151664 (Qwen3 adds `<think>`,
//! `<tool_response>`, ...), so those are checked by lookup. The GGUF tokenizer is also
//! compared id for id with `transformers`' own GGUF conversion in `template_goldens.rs`.
//! Like llama.cpp, the GGUF tokenizer does not normalize: `tokenizer.json` applies NFC first,
//! so the comparison feeds it NFC text, and decomposed text is checked against llama.cpp's ids.

mod common;

use proptest::prelude::*;

const TEXTS: &[&str] = &[
    "Hello, world! This is a test.",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX'S DOG'LL JUMP.",
    "I'm sure they've said we'd go; you're right, it's John's and we'll see.",
    "fn main() {\n    let x: Vec<u32> = (0..10).map(|i| i * 2).collect();\n    println!(\"{x:?}\");\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n\n\nclass A:\n    pass\r\n",
    "    leading spaces, trailing spaces    \n\n\n   \t  mixed\u{a0}nbsp",
    "numbers: 1234567890 3.14159 -42 1e-7 0x1F 2024-02-29",
    "你好，世界！今天天气很好。我们去公园散步吧。",
    "日本語のテキスト、カタカナとひらがな。한국어 텍스트입니다.",
    "Emoji: 🦀🦀🦀 👍🏽 👨‍👩‍👧 🇫🇷 ☀️🌧️ ❤️‍🔥",
    "Ελληνικά, русский текст, العربية, עברית, हिन्दी, ไทย",
    "precomposed: é Å ñ (what NFC makes of e\u{301} A\u{30a} n\u{303})",
    "JSON: {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call><|endoftext|><|fim_prefix|>x<|fim_suffix|>y<|fim_middle|>",
    "<|im_start|<|im_end|> <| im_start |> partial specials",
    "",
    " ",
    "\n",
    "a",
];

/// What `tokenizer.json`'s NFC normalizer makes of `s`.
fn nfc(s: &str) -> String {
    let mut n = tokenizers::NormalizedString::from(s);
    n.nfc();
    n.get().to_string()
}

#[test]
fn decomposed_text_is_not_normalized_as_in_llama_cpp() {
    // llama-cpp-python 0.3.36 on the same GGUF: " e\u{301} café" → [384, 53839, 51950].
    let gguf = common::qwen25_gguf_tokenizer();
    assert_eq!(
        gguf.encode(" e\u{301} caf\u{e9}", false).unwrap(),
        vec![384, 53839, 51950]
    );
}

#[test]
fn gguf_tokenizer_matches_tokenizer_json_on_ordinary_text() {
    let gguf = common::qwen25_gguf_tokenizer();
    let hf = common::qwen3_tokenizer();
    for text in TEXTS {
        let want = hf.encode(text, false).unwrap();
        assert_eq!(gguf.encode(&nfc(text), false).unwrap(), want, "{text:?}");
        assert_eq!(
            gguf.encode(&nfc(text), true).unwrap(),
            want,
            "no BOS for Qwen: {text:?}"
        );
        assert_eq!(
            gguf.decode(&want, false).unwrap(),
            hf.decode(&want, false).unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn special_tokens_sit_at_their_ids() {
    let gguf = common::qwen25_gguf_tokenizer();
    let hf = common::qwen3_tokenizer();
    for (token, id) in [
        ("<|endoftext|>", 151643),
        ("<|im_start|>", 151644),
        ("<|im_end|>", 151645),
        ("<tool_call>", 151657),
        ("</tool_call>", 151658),
        ("<|file_sep|>", 151664),
    ] {
        assert_eq!(gguf.token_to_id(token), Some(id), "GGUF {token}");
        assert_eq!(hf.token_to_id(token), Some(id), "Qwen3 {token}");
        assert_eq!(gguf.id_to_token(id).as_deref(), Some(token));
        assert_eq!(gguf.encode(token, false).unwrap(), vec![id]);
    }
    // Only Qwen3 has the thinking and tool-response tokens; in the Qwen2.5 GGUF those ids are padding.
    for (token, id) in [
        ("<tool_response>", 151665),
        ("</tool_response>", 151666),
        ("<think>", 151667),
        ("</think>", 151668),
    ] {
        assert_eq!(hf.token_to_id(token), Some(id), "Qwen3 {token}");
        assert_eq!(hf.encode(&format!("a{token}b"), false).unwrap()[1], id);
        assert_eq!(gguf.token_to_id(token), None, "GGUF {token}");
    }
    assert!(
        gguf.is_special_id(151644) && !gguf.is_special_id(151657),
        "control vs user-defined"
    );
    assert!(hf.is_special_id(151644) && !hf.is_special_id(151667));
    assert_eq!(
        gguf.decode(&[151644, 9707, 151657], true).unwrap(),
        "Hello<tool_call>"
    );
}

#[test]
fn stop_ids_special_tokens_and_sizes() {
    let gguf = common::qwen25_gguf_tokenizer();
    let hf = common::qwen3_tokenizer();
    assert_eq!(gguf.eos_token_ids(), vec![151645, 151643]);
    assert_eq!(hf.eos_token_ids(), vec![151645, 151643]);
    assert_eq!(
        gguf.vocab_size(),
        151_936,
        "the GGUF keeps its [PAD] tokens"
    );
    assert_eq!(hf.vocab_size(), 151_669);
    assert_eq!(hf.special_tokens().eos_token.as_deref(), Some("<|im_end|>"));
    assert_eq!(
        hf.special_tokens().pad_token.as_deref(),
        Some("<|endoftext|>")
    );
    assert_eq!(hf.special_tokens().bos_token, None);
    assert_eq!(
        gguf.special_tokens().bos_token.as_deref(),
        Some("<|endoftext|>")
    );
    assert_eq!(gguf.bos_token_id(), Some(151643));
    assert_eq!(hf.pad_token_id(), Some(151643));
}

fn mixed_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "Z",
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        "'s",
        "'LL",
        "1",
        "42",
        "é",
        "e\u{301}",
        "中",
        "文",
        "の",
        "한",
        "🦀",
        "👍🏽",
        "\u{200d}",
        "️",
        "!",
        "...",
        "{",
        "}",
        "_",
        "->",
        "<",
        "|",
        ">",
        "<|im_end|>",
        "<tool_call>",
        "ß",
        "İ",
        "\u{a0}",
    ]);
    proptest::collection::vec(pieces, 0..30).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn gguf_and_json_tokenizers_agree_on_random_text(text in mixed_text(), raw in any::<String>()) {
        let gguf = common::qwen25_gguf_tokenizer();
        let hf = common::qwen3_tokenizer();
        for s in [&text, &raw] {
            let ids = hf.encode(s, false).unwrap();
            prop_assert_eq!(gguf.encode(&nfc(s), false).unwrap(), ids.clone(), "{:?}", s);
            prop_assert_eq!(gguf.decode(&ids, false).unwrap(), hf.decode(&ids, false).unwrap());
        }
    }
}
