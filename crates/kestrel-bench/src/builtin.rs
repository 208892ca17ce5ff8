//! The built-in question set: fixed short, medium and long questions in English and Chinese,
//! each tagged with the answer length it asks for. These are the three answer lengths users
//! compare servers by: short (~30 characters), medium (~100) and long (~300).
//!
//! Each class has a default `max_tokens` cap (10 / 30 / 90) sized so that, with `--ignore-eos`,
//! every server produces the same number of tokens per class and the numbers compare directly.

use std::fmt;
use std::str::FromStr;

use crate::dataset::Prompt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnswerClass {
    Short,
    Medium,
    Long,
}

impl AnswerClass {
    pub const ALL: [AnswerClass; 3] = [AnswerClass::Short, AnswerClass::Medium, AnswerClass::Long];

    pub fn name(self) -> &'static str {
        match self {
            AnswerClass::Short => "short",
            AnswerClass::Medium => "medium",
            AnswerClass::Long => "long",
        }
    }

    /// Answer length the questions ask for, in characters.
    pub fn expected_chars(self) -> usize {
        match self {
            AnswerClass::Short => 30,
            AnswerClass::Medium => 100,
            AnswerClass::Long => 300,
        }
    }

    /// Default `max_tokens` cap: about the expected length at ~3 characters per token.
    pub fn default_max_tokens(self) -> u32 {
        match self {
            AnswerClass::Short => 10,
            AnswerClass::Medium => 30,
            AnswerClass::Long => 90,
        }
    }

    fn questions(self) -> &'static [&'static str] {
        match self {
            AnswerClass::Short => SHORT,
            AnswerClass::Medium => MEDIUM,
            AnswerClass::Long => LONG,
        }
    }
}

impl fmt::Display for AnswerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnswerClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "short" => Ok(AnswerClass::Short),
            "medium" => Ok(AnswerClass::Medium),
            "long" => Ok(AnswerClass::Long),
            _ => Err(format!(
                "answer class `{s}` is not one of short, medium, long"
            )),
        }
    }
}

/// The questions of the given classes (all when empty), languages interleaved, each capped at
/// its class's default `max_tokens`.
pub fn builtin_prompts(classes: &[AnswerClass]) -> Vec<Prompt> {
    let classes: &[AnswerClass] = if classes.is_empty() {
        &AnswerClass::ALL
    } else {
        classes
    };
    let mut out = Vec::new();
    for &class in classes {
        for q in class.questions() {
            out.push(Prompt {
                class: Some(class.name().to_string()),
                ..Prompt::text(*q, Some(class.default_max_tokens()))
            });
        }
    }
    out
}

// English and Chinese alternate so that any prefix of a class mixes both languages.
const SHORT: &[&str] = &[
    "What is the capital of France? Answer in a few words.",
    "中国的首都是哪座城市？请简短回答。",
    "How many legs does a spider have? Answer briefly.",
    "水的化学式是什么？只需简短回答。",
    "What is 12 times 12? Reply with a short phrase.",
    "一年有多少个月？请用一句短话回答。",
    "Name the largest planet in the solar system, in one short phrase.",
    "太阳从哪个方向升起？简短回答。",
];

const MEDIUM: &[&str] = &[
    "In two sentences, explain what photosynthesis is.",
    "用两句话解释什么是光合作用。",
    "Briefly describe what a hash table is, in about twenty words.",
    "请用大约五十个字介绍一下大熊猫。",
    "Explain in two sentences why the sky is blue.",
    "用两三句话说明为什么要多喝水。",
    "Give two tips for writing readable code, one sentence each.",
    "简要介绍一下什么是人工智能，不超过两句话。",
];

const LONG: &[&str] = &[
    "Write a paragraph of about sixty words describing a walk along a beach at sunset.",
    "写一段大约一百五十字的短文，介绍长城的历史。",
    "Explain how a CPU executes an instruction, in a paragraph of about sixty words.",
    "请用一段话（约一百五十字）描述秋天的景色。",
    "Describe the water cycle in one paragraph of about sixty words.",
    "用约一百五十字解释计算机是如何存储数据的。",
    "Write a short story of about sixty words about a robot learning to paint.",
    "写一个约一百五十字的小故事，讲一只猫学会了钓鱼。",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_caps() {
        let all = builtin_prompts(&[]);
        assert_eq!(all.len(), 24);
        let long = builtin_prompts(&[AnswerClass::Long]);
        assert!(long
            .iter()
            .all(|p| p.class.as_deref() == Some("long") && p.max_tokens == Some(90)));
        // Both languages in every class.
        for class in AnswerClass::ALL {
            let ps = builtin_prompts(&[class]);
            let has_cjk = |p: &Prompt| p.completion_text().unwrap().chars().any(|c| c > '\u{2e80}');
            assert!(ps.iter().any(has_cjk) && !ps.iter().all(has_cjk));
        }
        assert_eq!("medium".parse::<AnswerClass>(), Ok(AnswerClass::Medium));
        assert!("huge".parse::<AnswerClass>().is_err());
    }
}
