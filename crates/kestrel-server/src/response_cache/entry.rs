//! What one cache entry holds, and its bytes. An entry is the engine's output for every choice
//! of a response, not its text: the token ids (with their logprobs when the request asked), how
//! each choice ended and its usage. A hit feeds these events through the same driver, output
//! processor and framing as a live answer ([`super::replay`]), so a replayed stream has the
//! shapes of a live one (reasoning, content and tool-call deltas, fresh tool-call ids) whether
//! the entry came from a streamed request or not.
//!
//! The bytes are JSON with a format version; an entry that does not decode, or names a token
//! outside the vocabulary, is refused (treated as a miss), never replayed.

use kestrel_engine::{EngineEvent, FinishReason, TokenLogprobs, Usage};
use serde::{Deserialize, Serialize};

/// Bumped with any change to the fields below (the key's version changes with it).
const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedResponse {
    v: u32,
    pub choices: Vec<CachedChoice>,
}

/// One choice: its tokens in order, then how it finished.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedChoice {
    pub tokens: Vec<u32>,
    /// One per token, when the request asked for logprobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<CachedLogprobs>,
    pub finish: CachedFinish,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedLogprobs {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedFinish {
    /// `stop`, `length` or `abort` (the engine's `FinishReason`).
    pub reason: CachedReason,
    /// The stop token that ended a `stop` finish, if a token did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_token: Option<u32>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CachedReason {
    #[default]
    Stop,
    Length,
    Abort,
}

/// Why stored bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("the entry does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("the entry has format version {0}, this server reads {FORMAT_VERSION}")]
    Version(u32),
    #[error("the entry has {found} choices, the request {expected}")]
    Choices { found: usize, expected: usize },
    #[error("the entry has token id {0}, outside the vocabulary")]
    Token(u32),
    #[error("the entry has {logprobs} logprobs for {tokens} tokens")]
    Logprobs { tokens: usize, logprobs: usize },
}

impl CachedResponse {
    pub fn new(choices: Vec<CachedChoice>) -> Self {
        Self {
            v: FORMAT_VERSION,
            choices,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain structs with string keys always serialize")
    }

    /// The entry, checked against the request it is to answer.
    pub fn decode(bytes: &[u8], num_choices: usize, vocab_size: usize) -> Result<Self, EntryError> {
        let entry: Self = serde_json::from_slice(bytes)?;
        if entry.v != FORMAT_VERSION {
            return Err(EntryError::Version(entry.v));
        }
        if entry.choices.len() != num_choices {
            return Err(EntryError::Choices {
                found: entry.choices.len(),
                expected: num_choices,
            });
        }
        for c in &entry.choices {
            let in_vocab = |id: &u32| (*id as usize) < vocab_size;
            let ids = c.tokens.iter().chain(&c.finish.stop_token).chain(
                c.logprobs
                    .iter()
                    .flat_map(|lp| lp.top.iter().map(|(id, _)| id)),
            );
            if let Some(&bad) = ids.clone().find(|id| !in_vocab(id)) {
                return Err(EntryError::Token(bad));
            }
            if !c.logprobs.is_empty() && c.logprobs.len() != c.tokens.len() {
                return Err(EntryError::Logprobs {
                    tokens: c.tokens.len(),
                    logprobs: c.logprobs.len(),
                });
            }
        }
        Ok(entry)
    }
}

impl CachedChoice {
    /// Records one engine event of this choice.
    pub fn push(&mut self, event: &EngineEvent) {
        match event {
            EngineEvent::Token { id, logprobs } => {
                self.tokens.push(*id);
                if let Some(lp) = logprobs {
                    self.logprobs.push(CachedLogprobs {
                        logprob: lp.logprob,
                        top: lp.top.clone(),
                    });
                }
            }
            EngineEvent::Finished { reason, usage } => {
                let (reason, stop_token) = match reason {
                    FinishReason::Stop { token } => (CachedReason::Stop, *token),
                    FinishReason::Length => (CachedReason::Length, None),
                    FinishReason::Abort => (CachedReason::Abort, None),
                };
                self.finish = CachedFinish {
                    reason,
                    stop_token,
                    prompt_tokens: usage.prompt_tokens,
                    completion_tokens: usage.completion_tokens,
                    cached_tokens: usage.cached_tokens,
                };
            }
            // An errored response is never stored; the recorder is dropped with it.
            EngineEvent::Error { .. } => {}
        }
    }

    /// The engine events this choice was recorded from, in order.
    pub fn events(self) -> Vec<EngineEvent> {
        let mut logprobs = self.logprobs.into_iter();
        let mut events: Vec<EngineEvent> = self
            .tokens
            .into_iter()
            .map(|id| EngineEvent::Token {
                id,
                logprobs: logprobs.next().map(|lp| TokenLogprobs {
                    logprob: lp.logprob,
                    top: lp.top,
                }),
            })
            .collect();
        let f = self.finish;
        events.push(EngineEvent::Finished {
            reason: match f.reason {
                CachedReason::Stop => FinishReason::Stop {
                    token: f.stop_token,
                },
                CachedReason::Length => FinishReason::Length,
                CachedReason::Abort => FinishReason::Abort,
            },
            usage: Usage {
                prompt_tokens: f.prompt_tokens,
                completion_tokens: f.completion_tokens,
                cached_tokens: f.cached_tokens,
            },
        });
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(events: &[EngineEvent]) -> CachedChoice {
        let mut c = CachedChoice::default();
        for e in events {
            c.push(e);
        }
        c
    }

    fn token(id: u32, logprob: Option<f32>) -> EngineEvent {
        EngineEvent::Token {
            id,
            logprobs: logprob.map(|logprob| TokenLogprobs {
                logprob,
                top: vec![(id, logprob), (3, -2.5)],
            }),
        }
    }

    fn finished(reason: FinishReason) -> EngineEvent {
        EngineEvent::Finished {
            reason,
            usage: Usage {
                prompt_tokens: 11,
                completion_tokens: 3,
                cached_tokens: 16,
            },
        }
    }

    fn same(a: &[EngineEvent], b: &[EngineEvent]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn events_round_trip_through_the_bytes() {
        let cases = [
            vec![
                token(5, None),
                token(6, None),
                finished(FinishReason::Stop { token: Some(9) }),
            ],
            vec![
                token(5, Some(-0.25)),
                token(7, Some(-1e-7)),
                finished(FinishReason::Length),
            ],
            vec![token(1, None), finished(FinishReason::Abort)],
            vec![finished(FinishReason::Stop { token: None })],
        ];
        for events in cases {
            let entry = CachedResponse::new(vec![recorded(&events)]);
            let back = CachedResponse::decode(&entry.encode(), 1, 100).unwrap();
            assert_eq!(back, entry);
            let replayed = back.choices.into_iter().next().unwrap().events();
            assert!(same(&replayed, &events), "{replayed:?} != {events:?}");
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        let good = CachedResponse::new(vec![recorded(&[
            token(5, None),
            finished(FinishReason::Length),
        ])]);
        let bytes = good.encode();
        assert!(CachedResponse::decode(&bytes, 1, 6).is_ok());
        assert!(matches!(
            CachedResponse::decode(&bytes, 1, 5),
            Err(EntryError::Token(5))
        ));
        assert!(matches!(
            CachedResponse::decode(&bytes, 2, 6),
            Err(EntryError::Choices { .. })
        ));
        assert!(matches!(
            CachedResponse::decode(&bytes[..bytes.len() - 1], 1, 6),
            Err(EntryError::Decode(_))
        ));
        assert!(matches!(
            CachedResponse::decode(b"not json", 1, 6),
            Err(EntryError::Decode(_))
        ));
        let mut other = good.clone();
        other.v = 99;
        assert!(matches!(
            CachedResponse::decode(&other.encode(), 1, 6),
            Err(EntryError::Version(99))
        ));
        let mut short = good;
        short.choices[0].logprobs.push(CachedLogprobs {
            logprob: 0.0,
            top: Vec::new(),
        });
        short.choices[0].tokens.push(1);
        short.choices[0].tokens.push(2);
        assert!(matches!(
            CachedResponse::decode(&short.encode(), 1, 6),
            Err(EntryError::Logprobs { .. })
        ));
    }
}
