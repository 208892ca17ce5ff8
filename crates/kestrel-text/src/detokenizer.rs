//! Incremental detokenization: one token id in, the new text (if any) out.
//!
//! Decoding each token alone is wrong twice over: a byte-level token can hold half of a
//! UTF-8 character (CJK and emoji are often split over 2-3 tokens), and some decoders make a
//! token's text depend on its neighbours. So, as `tokenizers`' `DecodeStream` (and vLLM/TGI's
//! prefix-offset scheme) does, we decode a short window of recent ids and emit what it adds
//! beyond the text already emitted, holding the text back while it ends in U+FFFD (an
//! incomplete character). We drive `tokenizers::step_decode_stream` (the state-passing form of
//! `DecodeStream::step`) so the detokenizer owns its state and an `Arc` of the tokenizer, and
//! can live in a request for as long as it likes.
//!
//! Invariant: the deltas of `push` followed by `flush` concatenate to
//! `tokenizer.decode(all_ids, skip_special_tokens)`; a delta never ends in a character that
//! the next token could still complete.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tokenizer::{TokenId, Tokenizer};

/// Streaming decoder for one sequence.
#[derive(Debug, Clone)]
pub struct Detokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    /// The decode window: the ids of the last emitted chunk, then those not yet emitted.
    ids: Vec<TokenId>,
    /// `decode(ids[..prefix_index])`: the already-emitted text of the window.
    prefix: String,
    prefix_index: usize,
    num_tokens: usize,
}

impl Detokenizer {
    pub fn new(tokenizer: Arc<Tokenizer>, skip_special_tokens: bool) -> Self {
        Self {
            tokenizer,
            skip_special_tokens,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
            num_tokens: 0,
        }
    }

    /// Adds one generated token; returns the text it completes, or `None` while the text is
    /// held back (an incomplete character, or a skipped special token).
    pub fn push(&mut self, id: TokenId) -> Result<Option<String>> {
        self.num_tokens += 1;
        tokenizers::step_decode_stream(
            self.tokenizer.inner(),
            vec![id],
            self.skip_special_tokens,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(Error::tokenizer)
    }

    /// Adds several tokens; returns their text (possibly empty).
    pub fn push_all(&mut self, ids: &[TokenId]) -> Result<String> {
        let mut text = String::new();
        for &id in ids {
            if let Some(delta) = self.push(id)? {
                text.push_str(&delta);
            }
        }
        Ok(text)
    }

    /// Ends the stream: releases text held back because it ended in U+FFFD (the output really
    /// ends in an invalid or incomplete character).
    pub fn flush(&mut self) -> Result<Option<String>> {
        let text = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        let Some(rest) = text.strip_prefix(self.prefix.as_str()) else {
            return Err(Error::Tokenizer(format!(
                "detokenizer: decoding the window {:?} gave {text:?}, which does not extend the emitted {:?}",
                self.ids, self.prefix
            )));
        };
        if rest.is_empty() {
            return Ok(None);
        }
        let rest = rest.to_owned();
        self.prefix = text;
        self.prefix_index = self.ids.len();
        Ok(Some(rest))
    }

    /// Tokens pushed so far.
    pub fn num_tokens(&self) -> usize {
        self.num_tokens
    }

    pub fn skip_special_tokens(&self) -> bool {
        self.skip_special_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::GgufVocab;

    /// Byte-level tokens for the three bytes of "中" (E4 B8 AD), one token each, plus `a`
    /// and a control token.
    fn tokenizer() -> Arc<Tokenizer> {
        let tokens = ["ä", "¸", "Ń", "a", "<|im_end|>"]; // byte-level chars of E4, B8, AD
        let vocab = GgufVocab {
            model: "gpt2".into(),
            pre: Some("qwen2".into()),
            tokens: tokens.iter().map(|t| t.to_string()).collect(),
            token_types: vec![1, 1, 1, 1, 3],
            ..GgufVocab::default()
        };
        Arc::new(Tokenizer::from_gguf_vocab(&vocab).unwrap())
    }

    #[test]
    fn holds_back_split_characters() {
        let tok = tokenizer();
        assert_eq!(tok.decode(&[0, 1, 2], false).unwrap(), "中");
        let mut detok = Detokenizer::new(tok, false);
        assert_eq!(detok.push(3).unwrap().as_deref(), Some("a"));
        assert_eq!(detok.push(0).unwrap(), None);
        assert_eq!(detok.push(1).unwrap(), None);
        assert_eq!(detok.push(2).unwrap().as_deref(), Some("中"));
        assert_eq!(detok.push(4).unwrap().as_deref(), Some("<|im_end|>"));
        assert_eq!(detok.flush().unwrap(), None);
        assert_eq!(detok.num_tokens(), 5);
    }

    #[test]
    fn skips_special_tokens_when_asked() {
        let mut detok = Detokenizer::new(tokenizer(), true);
        assert_eq!(detok.push(4).unwrap(), None);
        assert_eq!(detok.push(3).unwrap().as_deref(), Some("a"));
        assert_eq!(detok.push(4).unwrap(), None);
        assert_eq!(detok.push(3).unwrap().as_deref(), Some("a"));
    }

    #[test]
    fn flush_releases_an_incomplete_tail() {
        let tok = tokenizer();
        let mut detok = Detokenizer::new(tok.clone(), false);
        assert_eq!(detok.push_all(&[3, 0, 1]).unwrap(), "a");
        let tail = detok.flush().unwrap();
        assert_eq!(
            format!("a{}", tail.unwrap()),
            tok.decode(&[3, 0, 1], false).unwrap()
        );
        assert_eq!(detok.flush().unwrap(), None);
    }
}
