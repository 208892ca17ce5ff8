//! Stop strings over the stream of text deltas.
//!
//! The generation stops at the first stop string to *complete* in the output (earliest end;
//! at equal ends, the one that starts first). That is the only rule a streaming matcher can
//! follow without waiting for text that may never come, and it makes the result independent
//! of how the text is cut into deltas.
//!
//! Invariants:
//! - no text at or after the stop is ever emitted (unless `include_stop_str_in_output`, which
//!   emits the stop string itself and nothing after it);
//! - only the longest suffix of the text that is a prefix of some stop string is held back,
//!   and it is released as soon as it can no longer become one (or at `flush`).
//!
//! Stop *token ids* end a sequence in the engine, not here; [`StopTokens`] is the small set it
//! checks.

use crate::tokenizer::TokenId;

/// What one `push` lets through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopResult {
    /// Text that may be sent to the client now.
    pub text_to_emit: String,
    /// The stop string that ended the output, on the push that found it.
    pub stopped: Option<String>,
}

/// Matches a request's stop strings against its output as it streams.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    include_stop_str_in_output: bool,
    /// Text received but not emitted: a suffix that may be the start of a stop string.
    held: String,
    stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings are ignored (they would match before any text).
    pub fn new<S: Into<String>>(
        stops: impl IntoIterator<Item = S>,
        include_stop_str_in_output: bool,
    ) -> Self {
        let mut unique: Vec<String> = Vec::new();
        for stop in stops.into_iter().map(Into::into) {
            if !stop.is_empty() && !unique.contains(&stop) {
                unique.push(stop);
            }
        }
        Self {
            stops: unique,
            include_stop_str_in_output,
            held: String::new(),
            stopped: false,
        }
    }

    /// Feeds the next text delta.
    pub fn push(&mut self, delta: &str) -> StopResult {
        if self.stopped {
            return StopResult::default();
        }
        if self.stops.is_empty() {
            return StopResult {
                text_to_emit: delta.to_owned(),
                stopped: None,
            };
        }
        let mut text = std::mem::take(&mut self.held);
        text.push_str(delta);
        if let Some((start, end, stop)) = first_stop(&text, &self.stops) {
            self.stopped = true;
            text.truncate(if self.include_stop_str_in_output {
                end
            } else {
                start
            });
            return StopResult {
                text_to_emit: text,
                stopped: Some(stop.to_owned()),
            };
        }
        let keep = longest_stop_prefix_suffix(&text, &self.stops);
        self.held = text.split_off(text.len() - keep);
        StopResult {
            text_to_emit: text,
            stopped: None,
        }
    }

    /// Ends the stream (it finished for another reason): releases the held-back text.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string has been found; later pushes emit nothing.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The text currently held back.
    pub fn held(&self) -> &str {
        &self.held
    }
}

/// The first stop string to complete in `text`: `(start, end, stop)` with the smallest
/// `end`, then the smallest `start`.
fn first_stop<'s>(text: &str, stops: &'s [String]) -> Option<(usize, usize, &'s str)> {
    stops
        .iter()
        .filter_map(|stop| {
            text.find(stop.as_str())
                .map(|start| (start, start + stop.len(), stop.as_str()))
        })
        .min_by_key(|&(start, end, _)| (end, start))
}

/// Length in bytes of the longest suffix of `text` that is a proper prefix of a stop string.
fn longest_stop_prefix_suffix(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .filter_map(|stop| {
            (1..stop.len().min(text.len() + 1))
                .rev()
                .find(|&len| stop.is_char_boundary(len) && text.ends_with(&stop[..len]))
        })
        .max()
        .unwrap_or(0)
}

/// The token ids that end a sequence: EOS ids (unless `ignore_eos`) and the request's
/// `stop_token_ids`, which apply even with `ignore_eos` (as in vLLM).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopTokens {
    ids: Vec<TokenId>,
}

impl StopTokens {
    pub fn new(eos_token_ids: &[TokenId], stop_token_ids: &[TokenId], ignore_eos: bool) -> Self {
        let mut ids: Vec<TokenId> = Vec::new();
        let eos = if ignore_eos { &[][..] } else { eos_token_ids };
        for &id in eos.iter().chain(stop_token_ids) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Self { ids }
    }

    pub fn contains(&self, id: TokenId) -> bool {
        self.ids.contains(&id)
    }

    pub fn ids(&self) -> &[TokenId] {
        &self.ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a matcher must produce for the whole output at once.
    fn reference(text: &str, stops: &[String], include: bool) -> (String, Option<String>) {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        match first_stop(text, &stops) {
            Some((start, end, stop)) => (
                text[..if include { end } else { start }].to_owned(),
                Some(stop.to_owned()),
            ),
            None => (text.to_owned(), None),
        }
    }

    fn run(
        stops: &[&str],
        include: bool,
        deltas: &[&str],
    ) -> (Vec<String>, Option<String>, String) {
        let mut matcher = StopMatcher::new(stops.iter().copied(), include);
        let mut out = Vec::new();
        let mut stopped = None;
        for delta in deltas {
            let result = matcher.push(delta);
            out.push(result.text_to_emit);
            stopped = stopped.or(result.stopped);
        }
        (out, stopped, matcher.flush())
    }

    #[test]
    fn holds_back_possible_prefixes_and_releases_them() {
        let (out, stopped, rest) = run(&["</s>"], false, &["Hello <", "/", "x> done <"]);
        assert_eq!(out, ["Hello ", "", "</x> done "]);
        assert_eq!(stopped, None);
        assert_eq!(rest, "<");
    }

    #[test]
    fn stops_across_deltas_and_emits_nothing_after() {
        let (out, stopped, rest) = run(&["STOP"], false, &["abc ST", "OP def", "more"]);
        assert_eq!(out, ["abc ", "", ""]);
        assert_eq!(stopped.as_deref(), Some("STOP"));
        assert_eq!(rest, "");
        let (out, stopped, _) = run(&["STOP"], true, &["abc ST", "OP def"]);
        assert_eq!(out.concat(), "abc STOP");
        assert_eq!(stopped.as_deref(), Some("STOP"));
    }

    #[test]
    fn earliest_completed_stop_wins() {
        let (out, stopped, _) = run(&["xyz", "y"], false, &["axyz"]);
        assert_eq!(
            (out.concat(), stopped.as_deref()),
            ("ax".to_owned(), Some("y"))
        );
        let (out, stopped, _) = run(&["abc", "bc"], false, &["zabc"]);
        assert_eq!(
            (out.concat(), stopped.as_deref()),
            ("z".to_owned(), Some("abc")),
            "same end: longer stop"
        );
    }

    #[test]
    fn multibyte_stops_and_no_stops() {
        let (out, stopped, _) = run(&["。\n"], false, &["你好。", "\n世界"]);
        assert_eq!(
            (out.concat(), stopped.as_deref()),
            ("你好".to_owned(), Some("。\n"))
        );
        let (out, stopped, rest) = run(&[""], false, &["a", "b"]);
        assert_eq!(
            (out.concat(), stopped, rest),
            ("ab".to_owned(), None, String::new())
        );
    }

    #[test]
    fn stop_tokens() {
        let stop = StopTokens::new(&[1, 2], &[2, 7], false);
        assert_eq!(stop.ids(), [1, 2, 7]);
        let ignore = StopTokens::new(&[1, 2], &[7], true);
        assert!(!ignore.contains(1) && ignore.contains(7));
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        // A small alphabet (with a multi-byte character) makes stop hits and near-misses common.
        proptest::collection::vec(
            prop::sample::select(vec!['a', 'b', 'c', ' ', 'é', '中']),
            0..40,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    /// Splits `text` at the given fractions (rounded down to char boundaries).
    fn split_at(text: &str, cuts: &[usize]) -> Vec<String> {
        let boundaries: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|c| boundaries[c % boundaries.len()])
            .collect();
        points.push(0);
        points.push(text.len());
        points.sort_unstable();
        points
            .windows(2)
            .map(|w| text[w[0]..w[1]].to_owned())
            .collect()
    }

    proptest! {
        #[test]
        fn matches_the_whole_text_reference_for_any_split(
            text in text_strategy(),
            stops in proptest::collection::vec(text_strategy().prop_map(|s| s.chars().take(4).collect::<String>()), 1..4),
            cuts in proptest::collection::vec(0usize..1000, 0..12),
            include in any::<bool>(),
        ) {
            let deltas = split_at(&text, &cuts);
            let mut matcher = StopMatcher::new(stops.clone(), include);
            let mut emitted = String::new();
            let mut stopped = None;
            let mut received = String::new();
            for delta in &deltas {
                received.push_str(delta);
                let result = matcher.push(delta);
                emitted.push_str(&result.text_to_emit);
                if result.stopped.is_some() {
                    prop_assert!(stopped.is_none(), "stopped twice");
                    stopped = result.stopped;
                }
                if stopped.is_none() {
                    // Nothing is lost, and only a possible stop prefix is held back.
                    prop_assert_eq!(format!("{emitted}{}", matcher.held()), received.clone());
                    prop_assert_eq!(matcher.held().len(), longest_stop_prefix_suffix(&received, matcher.stops.as_slice()));
                }
                if !include {
                    for stop in stops.iter().filter(|s| !s.is_empty()) {
                        prop_assert!(!emitted.contains(stop.as_str()), "leaked {:?} in {:?}", stop, emitted);
                    }
                }
            }
            emitted.push_str(&matcher.flush());
            let (want_text, want_stop) = reference(&text, &stops, include);
            prop_assert_eq!(emitted, want_text);
            prop_assert_eq!(stopped, want_stop);
        }
    }
}
