//! The incremental detokenizer against the real Qwen3 tokenizer: for any id sequence the
//! deltas (plus `flush`) concatenate to `decode(all_ids)`, and for real text (CJK and emoji,
//! whose bytes are split over several byte-level tokens) no delta contains a U+FFFD from a
//! character cut in two.

mod common;

use kestrel_text::Detokenizer;
use proptest::prelude::*;

fn stream(ids: &[u32], skip_special_tokens: bool) -> (Vec<String>, String) {
    let mut detok = Detokenizer::new(common::qwen3_tokenizer(), skip_special_tokens);
    let mut deltas = Vec::new();
    for &id in ids {
        if let Some(delta) = detok.push(id).expect("push") {
            assert!(!delta.is_empty(), "a delta is never empty");
            deltas.push(delta);
        }
    }
    let tail = detok.flush().expect("flush").unwrap_or_default();
    (deltas, tail)
}

#[test]
fn cjk_and_emoji_come_out_whole() {
    let tok = common::qwen3_tokenizer();
    let text = "你好世界 🦀👨‍👩‍👧 한국어 <think>思考</think> done";
    let ids = tok.encode(text, false).unwrap();
    let pieces: Vec<String> = ids
        .iter()
        .map(|&id| tok.decode(&[id], false).unwrap())
        .collect();
    assert!(
        pieces.iter().any(|p| p.contains('\u{fffd}')),
        "some token holds part of a character: {pieces:?}"
    );
    let (deltas, tail) = stream(&ids, false);
    assert_eq!(deltas.concat(), text);
    assert!(deltas.iter().all(|d| !d.contains('\u{fffd}')), "{deltas:?}");
    assert_eq!(tail, "");
    let (deltas, _) = stream(&ids, true);
    assert_eq!(deltas.concat(), tok.decode(&ids, true).unwrap());
}

fn unicode_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        " the",
        "\n",
        "中",
        "文字",
        "の",
        "한",
        "🦀",
        "👍🏽",
        "👨‍👩‍👧",
        "🇯🇵",
        "é",
        "ñ",
        "ß",
        "\u{fffd}",
        "<|im_end|>",
        "<think>",
        "</think>",
        "<tool_call>",
        "{\"a\": 1}",
        "  ",
        "ض",
        "क्षि",
    ]);
    proptest::collection::vec(pieces, 0..40).prop_map(|p| p.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary ids, anywhere in the vocabulary (partial-byte tokens, special tokens, ...).
    #[test]
    fn deltas_join_to_the_full_decode_for_random_ids(
        ids in proptest::collection::vec(0u32..151_669, 0..48),
        skip in any::<bool>(),
    ) {
        let tok = common::qwen3_tokenizer();
        let (deltas, tail) = stream(&ids, skip);
        prop_assert_eq!(deltas.concat() + &tail, tok.decode(&ids, skip).unwrap());
    }

    /// Ids biased to the byte-level tokens of single bytes and short multi-byte fragments
    /// (the low ids), where characters are most often cut.
    #[test]
    fn deltas_join_to_the_full_decode_for_byte_tokens(
        ids in proptest::collection::vec(prop_oneof![0u32..256, 256u32..2000, 151_643u32..151_669], 0..64),
    ) {
        let tok = common::qwen3_tokenizer();
        let (deltas, tail) = stream(&ids, false);
        prop_assert_eq!(deltas.concat() + &tail, tok.decode(&ids, false).unwrap());
    }

    /// Real text: every delta is whole characters, and together they are the text.
    #[test]
    fn encoded_text_streams_back_without_replacement_characters(text in unicode_text()) {
        let tok = common::qwen3_tokenizer();
        let ids = tok.encode(&text, false).unwrap();
        let (deltas, tail) = stream(&ids, false);
        prop_assert_eq!(deltas.concat() + &tail, text.clone());
        // The only U+FFFD in the deltas are the text's own, never a character cut in two.
        let emitted = deltas.iter().chain([&tail]).map(|d| d.matches('\u{fffd}').count()).sum::<usize>();
        prop_assert_eq!(emitted, text.matches('\u{fffd}').count(), "deltas: {:?}", deltas);
    }
}
