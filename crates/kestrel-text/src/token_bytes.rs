//! Each token id's bytes, for grammar engines that work on bytes (llguidance's token trie):
//! byte-level BPE vocabularies (GPT-2, Qwen) spell every byte with a printable character, and
//! this undoes that spelling through GPT-2's byte-to-unicode table. Added tokens are their
//! literal content; special ones get llguidance's `0xFF` marker in front, so that no grammar
//! can spell them out of text.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The marker byte in front of a special token's bytes (`toktrie::TokTrie::SPECIAL_TOKEN_MARKER`).
pub const SPECIAL_TOKEN_MARKER: u8 = 0xFF;

/// GPT-2's `bytes_to_unicode`, inverted: printable Latin-1 bytes stand for themselves, the
/// others for the code points from U+0100 on, in byte order.
fn unicode_to_byte() -> HashMap<char, u8> {
    let self_mapped = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 0x100u32;
    (0..=255u8)
        .map(|b| {
            if self_mapped(b) {
                (b as char, b)
            } else {
                let c = char::from_u32(next).expect("U+0100.. are chars");
                next += 1;
                (c, b)
            }
        })
        .collect()
}

/// `[vocab_size]` bytes of each id of a byte-level BPE tokenizer (empty for ids it lacks).
pub fn token_bytes(tokenizer: &tokenizers::Tokenizer) -> Result<Vec<Vec<u8>>> {
    let table = unicode_to_byte();
    let added = tokenizer.get_added_vocabulary();
    let decoder = added.get_added_tokens_decoder();
    let vocab_size = tokenizer.get_vocab_size(true);
    let mut out = Vec::with_capacity(vocab_size);
    for id in 0..vocab_size as u32 {
        if let Some(t) = decoder.get(&id) {
            let mut bytes = Vec::with_capacity(t.content.len() + 1);
            if t.special {
                bytes.push(SPECIAL_TOKEN_MARKER);
            }
            bytes.extend_from_slice(t.content.as_bytes());
            out.push(bytes);
            continue;
        }
        let Some(token) = tokenizer.id_to_token(id) else {
            out.push(Vec::new());
            continue;
        };
        let bytes = token
            .chars()
            .map(|c| table.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| {
                Error::Tokenizer(format!(
                    "token {id} ({token:?}) is not byte-level BPE; structured output needs a byte-level vocabulary"
                ))
            })?;
        out.push(bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection_with_gpt2_spellings() {
        let t = unicode_to_byte();
        assert_eq!(t.len(), 256);
        assert_eq!(t[&'Ġ'], b' ');
        assert_eq!(t[&'Ċ'], b'\n');
        assert_eq!(t[&'a'], b'a');
        let mut bytes: Vec<u8> = t.values().copied().collect();
        bytes.sort();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
    }
}
