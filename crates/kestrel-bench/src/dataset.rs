//! Prompts to send: synthetic (`random`), the built-in question set (`builtin`, see
//! `builtin.rs`) or a JSONL file. A prompt is either plain text (completions, or one user message
//! for chat) or a full message list (chat only), with an optional per-prompt `max_tokens`.
//!
//! `random` prompts are made of common English words, each about one token in the Qwen
//! vocabulary, so `--input-len` is approximate without a tokenizer. Every prompt starts with its
//! own index so no two share a prefix beyond the chat template (prefix caches see no free hits).

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptBody {
    Text(String),
    Messages(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prompt {
    pub body: PromptBody,
    pub max_tokens: Option<u32>,
    /// Expected answer length class, for reports (`short`, `medium`, `long`).
    pub class: Option<String>,
}

impl Prompt {
    pub fn text(text: impl Into<String>, max_tokens: Option<u32>) -> Self {
        Prompt {
            body: PromptBody::Text(text.into()),
            max_tokens,
            class: None,
        }
    }

    /// The chat `messages` array for this prompt.
    pub fn messages(&self) -> Vec<Value> {
        match &self.body {
            PromptBody::Text(t) => vec![serde_json::json!({"role": "user", "content": t})],
            PromptBody::Messages(m) => m.clone(),
        }
    }

    /// The completions `prompt` string; `None` for a message list.
    pub fn completion_text(&self) -> Option<&str> {
        match &self.body {
            PromptBody::Text(t) => Some(t),
            PromptBody::Messages(_) => None,
        }
    }

    /// A copy made distinct from the original by a leading `(label) ` tag.
    fn variant(&self, label: &str) -> Prompt {
        let tag = |s: &str| format!("({label}) {s}");
        let mut p = self.clone();
        match &mut p.body {
            PromptBody::Text(t) => *t = tag(t),
            PromptBody::Messages(msgs) => {
                if let Some(content) = msgs
                    .iter_mut()
                    .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
                    .filter_map(|m| m.get_mut("content"))
                    .find(|c| c.is_string())
                {
                    *content = Value::String(tag(content.as_str().unwrap_or_default()));
                }
            }
        }
        p
    }
}

/// `n` prompts taken in order from `set`, going round again as often as needed; the k-th
/// repetition is tagged `(k) ` so that repeats are distinct requests, not prefix-cache hits.
pub fn cycle(set: &[Prompt], n: usize) -> Vec<Prompt> {
    if set.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            let k = i / set.len();
            let p = &set[i % set.len()];
            if k == 0 {
                p.clone()
            } else {
                p.variant(&k.to_string())
            }
        })
        .collect()
}

/// `n` warm-up prompts from `set`, tagged `(warmup k)` so they never share a prefix with the
/// measured ones.
pub fn warmup(set: &[Prompt], n: usize) -> Vec<Prompt> {
    if set.is_empty() {
        return Vec::new();
    }
    (0..n)
        .map(|i| set[i % set.len()].variant(&format!("warmup {i}")))
        .collect()
}

/// Lengths drawn uniformly from `[len·(1-r), len·(1+r)]` (vLLM's `--random-range-ratio`), at least 1.
fn spread(rng: &mut ChaCha8Rng, len: usize, range_ratio: f64) -> usize {
    let r = range_ratio.clamp(0.0, 1.0);
    let lo = ((len as f64) * (1.0 - r)).round().max(1.0) as usize;
    let hi = ((len as f64) * (1.0 + r)).round().max(lo as f64) as usize;
    rng.gen_range(lo..=hi)
}

/// `n` synthetic prompts of about `input_len` words with `max_tokens` about `output_len`.
pub fn random_prompts(
    n: usize,
    input_len: usize,
    output_len: usize,
    range_ratio: f64,
    seed: u64,
) -> Vec<Prompt> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let words = spread(&mut rng, input_len, range_ratio);
            let out = spread(&mut rng, output_len, range_ratio);
            let mut text = format!("{i}:");
            for _ in 0..words.saturating_sub(2) {
                text.push(' ');
                text.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
            }
            Prompt::text(text, Some(out as u32))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlLine {
    prompt: Option<String>,
    messages: Option<Vec<Value>>,
    max_tokens: Option<u32>,
    class: Option<String>,
}

/// One `{"prompt": ...}` or `{"messages": [...]}` object per line, each with optional
/// `max_tokens` and `class`; blank lines are skipped.
pub fn load_jsonl(path: &Path) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let bad = |line: usize, message: String| Error::Dataset {
        path: path.to_owned(),
        line,
        message,
    };
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed: JsonlLine =
            serde_json::from_str(line).map_err(|e| bad(i + 1, e.to_string()))?;
        let body = match (parsed.prompt, parsed.messages) {
            (Some(p), None) => PromptBody::Text(p),
            (None, Some(m)) if !m.is_empty() => PromptBody::Messages(m),
            (None, Some(_)) => return Err(bad(i + 1, "`messages` is empty".into())),
            _ => {
                return Err(bad(
                    i + 1,
                    "expected exactly one of `prompt` or `messages`".into(),
                ))
            }
        };
        prompts.push(Prompt {
            body,
            max_tokens: parsed.max_tokens,
            class: parsed.class,
        });
    }
    if prompts.is_empty() {
        return Err(bad(0, "no prompts in the file".into()));
    }
    Ok(prompts)
}

/// Common English words; each is a single token (with its leading space) in Qwen's BPE.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so", "no", "time", "people", "water",
    "house", "world", "school", "river", "city", "music", "light", "money", "story", "system",
    "market", "power", "game", "night", "table", "paper", "road", "field", "garden", "window",
    "green", "small", "large", "early", "simple", "strong", "happy", "quick", "open", "new", "old",
    "good", "long", "high", "little", "great", "right", "make", "take", "find", "give", "think",
    "work", "call", "write", "read", "learn", "build", "move",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_seeded_and_within_spread() {
        let a = random_prompts(20, 100, 50, 0.2, 7);
        assert_eq!(a, random_prompts(20, 100, 50, 0.2, 7));
        assert_ne!(a, random_prompts(20, 100, 50, 0.2, 8));
        for p in &a {
            let words = p.completion_text().unwrap().split(' ').count();
            assert!((79..=120).contains(&words), "{words} words");
            assert!((40..=60).contains(&p.max_tokens.unwrap()));
        }
        let fixed = random_prompts(3, 10, 5, 0.0, 1);
        assert!(fixed.iter().all(|p| p.max_tokens == Some(5)));
    }

    #[test]
    fn cycle_tags_repeats() {
        let set = vec![Prompt::text("a", None), Prompt::text("b", Some(3))];
        let got = cycle(&set, 5);
        let texts: Vec<_> = got.iter().map(|p| p.completion_text().unwrap()).collect();
        assert_eq!(texts, ["a", "b", "(1) a", "(1) b", "(2) a"]);
        assert_eq!(got[3].max_tokens, Some(3));
    }

    #[test]
    fn jsonl_prompt_and_messages() {
        let dir = std::env::temp_dir().join(format!("kestrel-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"hi\", \"max_tokens\": 4}\n\n{\"messages\": [{\"role\": \"user\", \"content\": \"yo\"}]}\n",
        )
        .unwrap();
        let got = load_jsonl(&path).unwrap();
        assert_eq!(got[0], Prompt::text("hi", Some(4)));
        assert_eq!(got[1].messages()[0]["content"], "yo");
        assert_eq!(got[1].completion_text(), None);
        assert_eq!(cycle(&got, 4)[3].messages()[0]["content"], "(1) yo");

        std::fs::write(&path, "{\"prompt\": \"a\"}\n{\"max_tokens\": 1}\n").unwrap();
        let err = load_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
