//! The per-sequence output control beside the sampler: in the reasoning phase (thinking on)
//! every token is free until the reasoning's end token, which a thinking budget forces once the
//! budget is spent; then the grammar's matcher gives the allowed tokens of each step as a
//! bitmask over the vocabulary (`[vocab.div_ceil(32)]` words), and advances with each sampled
//! token.
//!
//! Invariants: the mask always describes the next token to sample (it is recomputed by
//! [`OutputControl::prepare`] after every [`OutputControl::advance`], or after a
//! [`OutputControl::consume`] before the next sampling: the engine computes it on a worker
//! thread while the next step's forward runs); when the grammar may end
//! here, the sequence's stop tokens are allowed too, so the model can finish with its own
//! end-of-turn token; when the grammar can take no more tokens the sequence is complete
//! ([`Advance::Complete`], `finish_reason: "stop"`); a mask that allows nothing, or a parser
//! error, is [`Advance::Failed`], never free text.

use std::fmt;

use llguidance::Matcher;

use super::grammar::Grammar;

/// The reasoning phase of a thinking model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thinking {
    /// Forced as the first token when set (`<think>`, when the prompt has not opened the
    /// reasoning itself).
    pub start_token: Option<u32>,
    /// The token that ends the reasoning (`</think>`).
    pub end_token: u32,
    /// Most reasoning tokens before `end_token` is forced; `None` is no limit.
    pub budget: Option<usize>,
}

/// What the engine enforces on one sequence's output.
#[derive(Clone, Debug, Default)]
pub struct OutputConstraint {
    /// The answer's grammar (after the reasoning when `thinking` is set).
    pub grammar: Option<Grammar>,
    /// Set when the output starts with free reasoning.
    pub thinking: Option<Thinking>,
}

impl OutputConstraint {
    /// Whether it constrains anything (a reasoning phase without a budget does not).
    pub fn is_active(&self) -> bool {
        self.grammar.is_some() || self.thinking.is_some_and(|t| t.budget.is_some())
    }
}

/// What a sampled token did to the control.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Advance {
    /// More tokens may follow; the mask is ready.
    Continue,
    /// The grammar is complete: the sequence ends here.
    Complete,
    /// The constraint can no longer be satisfied (or the parser failed).
    Failed(String),
}

struct Reasoning {
    /// Still to be forced before the reasoning starts.
    start_token: Option<u32>,
    end_token: u32,
    /// Reasoning tokens left before `end_token` is forced.
    left: Option<usize>,
}

/// One sequence's structured-output state.
pub struct OutputControl {
    matcher: Option<Matcher>,
    /// `Some` while the output is in its reasoning phase.
    reasoning: Option<Reasoning>,
    /// The grammar's end-of-sequence id (allowed when the grammar may end).
    eos: u32,
    /// The sequence's stop tokens, allowed wherever the grammar's end is.
    stop_tokens: Vec<u32>,
    /// `[vocab.div_ceil(32)]` allowed tokens of the next step.
    mask: Vec<u32>,
    /// Whether `mask` applies to the next step (free otherwise).
    masked: bool,
    /// A token was consumed and the next mask is not computed yet ([`Self::consume`]).
    stale: bool,
    /// The outcome of a deferred [`Self::prepare`] that ended the output (its step's sample
    /// is not to be taken).
    deferred: Option<Advance>,
}

impl fmt::Debug for OutputControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputControl")
            .field("grammar", &self.matcher.is_some())
            .field("reasoning", &self.reasoning.is_some())
            .field("masked", &self.masked)
            .finish()
    }
}

impl OutputControl {
    /// A control over a vocabulary of `vocab_size`, its first mask not computed yet (call
    /// [`Self::prepare`]).
    pub fn new(constraint: OutputConstraint, stop_tokens: &[u32], vocab_size: usize) -> Self {
        let vocab = constraint
            .grammar
            .as_ref()
            .map_or(vocab_size, |g| g.vocab_size.max(vocab_size));
        let (matcher, eos) = match constraint.grammar {
            Some(g) => {
                let eos = g.parser.token_env.tok_trie().eos_token();
                (Some(Matcher::new(Ok(g.parser))), eos)
            }
            None => (None, u32::MAX),
        };
        Self {
            matcher,
            reasoning: constraint.thinking.map(|t| Reasoning {
                start_token: t.start_token,
                end_token: t.end_token,
                left: t.budget,
            }),
            eos,
            stop_tokens: stop_tokens.to_vec(),
            mask: vec![0; vocab.div_ceil(32)],
            masked: false,
            stale: false,
            deferred: None,
        }
    }

    /// The allowed tokens of the next step, `None` when it is free.
    pub fn mask(&self) -> Option<&[u32]> {
        self.masked.then_some(&self.mask[..])
    }

    /// Whether the answer's grammar is being enforced (the reasoning, if any, is over).
    pub fn in_grammar(&self) -> bool {
        self.reasoning.is_none() && self.matcher.is_some()
    }

    /// The number of words of a mask (a multiple of 32 tokens covering the vocabulary).
    pub fn num_words(&self) -> usize {
        self.mask.len()
    }

    /// Whether a token was consumed and the next step's mask still has to be computed.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Takes a sampled (and appended) token and prepares the next step's mask.
    pub fn advance(&mut self, token: u32) -> Advance {
        match self.consume(token) {
            Advance::Continue => self.prepare(),
            done => done,
        }
    }

    /// Takes a sampled (and appended) token; the next mask is left to [`Self::prepare`] or
    /// [`Self::prepare_deferred`] (the engine computes it while the next forward runs).
    pub fn consume(&mut self, token: u32) -> Advance {
        self.masked = false;
        if let Some(r) = &mut self.reasoning {
            if r.start_token.take().is_some() {
                // The forced opening tag: not a reasoning token.
            } else if token == r.end_token {
                self.reasoning = None;
            } else if let Some(left) = &mut r.left {
                *left = left.saturating_sub(1);
            }
            self.stale = true;
            return Advance::Continue;
        }
        let Some(m) = &mut self.matcher else {
            return Advance::Continue;
        };
        if let Err(e) = m.consume_token(token) {
            return Advance::Failed(format!("structured output: {e}"));
        }
        if m.is_error() {
            return Advance::Failed(format!(
                "structured output: {}",
                m.get_error().unwrap_or_default()
            ));
        }
        if m.is_stopped() {
            return Advance::Complete;
        }
        self.stale = true;
        Advance::Continue
    }

    /// [`Self::prepare`] for a step already launched: an outcome that ends the output is kept
    /// for [`Self::take_deferred`] (the step samples with every token allowed, and that sample
    /// is dropped).
    pub fn prepare_deferred(&mut self) {
        match self.prepare() {
            Advance::Continue => {}
            done => self.deferred = Some(done),
        }
    }

    /// The outcome a deferred [`Self::prepare`] ended the output with.
    pub fn take_deferred(&mut self) -> Option<Advance> {
        self.deferred.take()
    }

    /// Computes the mask of the next step from the current state.
    pub fn prepare(&mut self) -> Advance {
        self.masked = false;
        self.stale = false;
        if let Some(r) = &self.reasoning {
            if let Some(forced) = r.start_token.or((r.left == Some(0)).then_some(r.end_token)) {
                self.mask.fill(0);
                set_bit(&mut self.mask, forced);
                self.masked = true;
            }
            return Advance::Continue;
        }
        let Some(m) = &mut self.matcher else {
            return Advance::Continue;
        };
        if m.is_stopped() {
            return Advance::Complete;
        }
        let vob = match m.compute_mask() {
            Ok(v) => v,
            Err(e) => return Advance::Failed(format!("structured output: {e}")),
        };
        let words = vob.as_slice();
        let n = words.len().min(self.mask.len());
        self.mask[..n].copy_from_slice(&words[..n]);
        self.mask[n..].fill(0);
        if vob.is_allowed(self.eos) {
            for &t in &self.stop_tokens {
                set_bit(&mut self.mask, t);
            }
        }
        if self.mask.iter().all(|&w| w == 0) {
            return Advance::Failed("structured output: no token can continue the output".into());
        }
        self.masked = true;
        Advance::Continue
    }
}

fn set_bit(mask: &mut [u32], t: u32) {
    if let Some(w) = mask.get_mut(t as usize / 32) {
        *w |= 1 << (t % 32);
    }
}

#[cfg(test)]
mod tests {
    use super::super::grammar::{GrammarCompiler, GrammarSpec};
    use super::*;

    /// Bytes 0..256 as single tokens, a few multi-byte ones, and a special end token (299)
    /// in a vocabulary of 300.
    fn compiler() -> GrammarCompiler {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for w in ["true", "false", "{\"", "\": ", "\"}", "yes", "no"] {
            words.push(w.as_bytes().to_vec());
        }
        words.resize(299, Vec::new());
        words.push(b"\xFF<|end|>".to_vec());
        GrammarCompiler::new(words, 299, 300).expect("token table")
    }

    fn allowed(c: &OutputControl) -> Vec<u32> {
        let m = c.mask().expect("masked");
        (0..300u32)
            .filter(|&t| m[t as usize / 32] & (1 << (t % 32)) != 0)
            .collect()
    }

    #[test]
    fn consume_leaves_the_mask_to_a_later_prepare() {
        let g = compiler()
            .compile(&GrammarSpec::Regex("[0-9]+".into()))
            .unwrap();
        let constraint = OutputConstraint {
            grammar: Some(g),
            thinking: None,
        };
        let mut c = OutputControl::new(constraint, &[299], 300);
        assert_eq!(c.prepare(), Advance::Continue);
        assert!(!c.is_stale());
        assert_eq!(c.consume(b'7' as u32), Advance::Continue);
        assert!(c.is_stale() && c.mask().is_none(), "no mask until prepared");
        c.prepare_deferred();
        assert!(!c.is_stale());
        assert_eq!(c.take_deferred(), None);
        let mut digits: Vec<u32> = (b'0'..=b'9').map(u32::from).collect();
        digits.push(299);
        assert_eq!(allowed(&c), digits);
        assert_eq!(c.num_words(), 300usize.div_ceil(32));
    }

    #[test]
    fn a_deferred_mask_that_allows_nothing_is_kept_as_the_outcome() {
        // "ab" where no token spells "b": after "a" nothing can continue.
        let words = vec![b"a".to_vec(), b"\xFF<|end|>".to_vec()];
        let g = GrammarCompiler::new(words, 1, 2)
            .expect("token table")
            .compile(&GrammarSpec::Regex("ab".into()))
            .unwrap();
        let constraint = OutputConstraint {
            grammar: Some(g),
            thinking: None,
        };
        let mut c = OutputControl::new(constraint, &[1], 2);
        assert_eq!(c.prepare(), Advance::Continue);
        assert_eq!(c.consume(0), Advance::Continue);
        c.prepare_deferred();
        assert!(
            c.mask().is_none(),
            "the row samples free, and its sample is dropped"
        );
        assert!(matches!(c.take_deferred(), Some(Advance::Failed(_))));
        assert_eq!(c.take_deferred(), None, "taken once");
    }

    #[test]
    fn choice_allows_its_strings_and_completes() {
        let g = compiler()
            .compile(&GrammarSpec::Choice(vec!["yes".into(), "no".into()]))
            .unwrap();
        let mut c = OutputControl::new(
            OutputConstraint {
                grammar: Some(g),
                thinking: None,
            },
            &[299],
            300,
        );
        assert_eq!(c.prepare(), Advance::Continue);
        let first = allowed(&c);
        assert!(first.contains(&(b'y' as u32)) && first.contains(&(b'n' as u32)));
        assert!(first.contains(&261) && first.contains(&262), "{first:?}");
        assert!(!first.contains(&(b'x' as u32)) && !first.contains(&299));
        assert_eq!(c.advance(261), Advance::Complete);
    }

    #[test]
    fn thinking_is_free_then_forced_by_the_budget_then_constrained() {
        let g = compiler()
            .compile(&GrammarSpec::Regex("[0-9]+".into()))
            .unwrap();
        let mut c = OutputControl::new(
            OutputConstraint {
                grammar: Some(g),
                thinking: Some(Thinking {
                    start_token: Some(b'<' as u32),
                    end_token: 298,
                    budget: Some(2),
                }),
            },
            &[299],
            300,
        );
        assert_eq!(c.prepare(), Advance::Continue);
        assert_eq!(allowed(&c), [b'<' as u32]);
        assert_eq!(c.advance(b'<' as u32), Advance::Continue);
        assert!(c.mask().is_none());
        assert_eq!(c.advance(b'a' as u32), Advance::Continue);
        assert!(c.mask().is_none());
        assert_eq!(c.advance(b'b' as u32), Advance::Continue);
        assert_eq!(allowed(&c), [298]);
        assert_eq!(c.advance(298), Advance::Continue);
        assert!(c.in_grammar());
        let digits: Vec<u32> = (b'0'..=b'9').map(u32::from).collect();
        assert_eq!(allowed(&c), digits);
        assert_eq!(c.advance(b'4' as u32), Advance::Continue);
        // Accepting: more digits or the stop token.
        let mut with_stop = digits.clone();
        with_stop.push(299);
        assert_eq!(allowed(&c), with_stop);
    }

    #[test]
    fn schema_errors_say_why() {
        let c = compiler();
        let e = c
            .compile(&GrammarSpec::JsonSchema(
                serde_json::json!({"type": "nonsense"}),
            ))
            .unwrap_err();
        assert!(!e.0.is_empty());
        let e = c.compile(&GrammarSpec::Regex("(".into())).unwrap_err();
        assert!(!e.0.is_empty());
        assert!(c.compile(&GrammarSpec::Choice(vec![])).is_err());
    }
}
