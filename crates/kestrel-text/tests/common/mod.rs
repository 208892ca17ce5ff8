//! Shared helpers of the fixture-based tests: where the fetched fixtures live, loading the
//! real tokenizers, and a minimal GGUF metadata reader (test-only: the crate itself never
//! parses GGUF, it takes a `GgufVocab`).

#![allow(dead_code)] // each test binary uses a different subset

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kestrel_text::{GgufVocab, Tokenizer};

pub const QWEN25_GGUF: &str = "qwen2.5-coder-0.5b-instruct.gguf";

/// `$KESTREL_FIXTURES`, else `$HOME/.cache/kestrel/fixtures`.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("KESTREL_FIXTURES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").expect("HOME is set (or set KESTREL_FIXTURES)");
            PathBuf::from(home).join(".cache/kestrel/fixtures")
        }
    }
}

/// A file under the fixture directory; fails the test (never skips it) when it is missing.
pub fn require_fixture(relative: &str) -> PathBuf {
    let path = fixture_dir().join(relative);
    assert!(
        path.exists(),
        "missing fixture {}: run scripts/fetch-fixtures.sh (it fetches into $KESTREL_FIXTURES, \
         default ~/.cache/kestrel/fixtures)",
        path.display()
    );
    path
}

/// A committed golden file under the workspace's `tests/fixtures/`.
pub fn golden_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(relative)
}

/// The real Qwen3 tokenizer (tokenizer.json + tokenizer_config.json), loaded once.
pub fn qwen3_tokenizer() -> Arc<Tokenizer> {
    static TOKENIZER: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            require_fixture("qwen3-tokenizer/tokenizer.json");
            require_fixture("qwen3-tokenizer/tokenizer_config.json");
            Arc::new(
                Tokenizer::from_dir(fixture_dir().join("qwen3-tokenizer"))
                    .expect("load the Qwen3 tokenizer"),
            )
        })
        .clone()
}

/// The vocabulary of the real Qwen2.5-Coder GGUF, read once.
pub fn qwen25_gguf_vocab() -> &'static GgufVocab {
    static VOCAB: OnceLock<GgufVocab> = OnceLock::new();
    VOCAB.get_or_init(|| read_gguf_vocab(&require_fixture(QWEN25_GGUF)))
}

/// The tokenizer built from the Qwen2.5-Coder GGUF's vocabulary, built once.
pub fn qwen25_gguf_tokenizer() -> Arc<Tokenizer> {
    static TOKENIZER: OnceLock<Arc<Tokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| {
            Arc::new(
                Tokenizer::from_gguf_vocab(qwen25_gguf_vocab()).expect("build the GGUF tokenizer"),
            )
        })
        .clone()
}

/// A GGUF metadata value (only what tokenizer metadata uses is kept).
#[derive(Debug)]
enum Meta {
    Int(i64),
    Bool(bool),
    Str(String),
    Ints(Vec<i64>),
    Strs(Vec<String>),
    Other,
}

/// Reads the `tokenizer.*` metadata of a GGUF file (v2/v3 layout, little-endian).
pub fn read_gguf_vocab(path: &Path) -> GgufVocab {
    let file = File::open(path).unwrap_or_else(|err| panic!("open {}: {err}", path.display()));
    let mut r = BufReader::with_capacity(1 << 20, file);
    assert_eq!(
        &read_bytes(&mut r, 4),
        b"GGUF",
        "{} is not a GGUF file",
        path.display()
    );
    let version = read_u32(&mut r);
    assert!(
        version >= 2,
        "GGUF version {version} is not supported by this test reader"
    );
    let _num_tensors = read_u64(&mut r);
    let num_kv = read_u64(&mut r);
    let mut vocab = GgufVocab::default();
    for _ in 0..num_kv {
        let key = read_string(&mut r);
        let value_type = read_u32(&mut r);
        let value = read_value(&mut r, value_type);
        match (key.as_str(), value) {
            ("tokenizer.ggml.model", Meta::Str(s)) => vocab.model = s,
            ("tokenizer.ggml.pre", Meta::Str(s)) => vocab.pre = Some(s),
            ("tokenizer.ggml.tokens", Meta::Strs(v)) => vocab.tokens = v,
            ("tokenizer.ggml.token_type", Meta::Ints(v)) => {
                vocab.token_types = v.into_iter().map(|t| t as i32).collect()
            }
            ("tokenizer.ggml.merges", Meta::Strs(v)) => vocab.merges = v,
            ("tokenizer.ggml.bos_token_id", Meta::Int(i)) => vocab.bos_token_id = Some(i as u32),
            ("tokenizer.ggml.eos_token_id", Meta::Int(i)) => vocab.eos_token_id = Some(i as u32),
            ("tokenizer.ggml.padding_token_id", Meta::Int(i)) => {
                vocab.padding_token_id = Some(i as u32)
            }
            ("tokenizer.ggml.add_bos_token", Meta::Bool(b)) => vocab.add_bos_token = Some(b),
            ("tokenizer.chat_template", Meta::Str(s)) => vocab.chat_template = Some(s),
            _ => {}
        }
    }
    vocab
}

fn read_value(r: &mut impl Read, value_type: u32) -> Meta {
    match value_type {
        0 => Meta::Int(read_bytes(r, 1)[0] as i64),
        1 => Meta::Int(read_bytes(r, 1)[0] as i8 as i64),
        2 => Meta::Int(u16::from_le_bytes(read_array(r)) as i64),
        3 => Meta::Int(i16::from_le_bytes(read_array(r)) as i64),
        4 => Meta::Int(read_u32(r) as i64),
        5 => Meta::Int(i32::from_le_bytes(read_array(r)) as i64),
        6 => {
            read_bytes(r, 4);
            Meta::Other
        }
        7 => Meta::Bool(read_bytes(r, 1)[0] != 0),
        8 => Meta::Str(read_string(r)),
        9 => {
            let item_type = read_u32(r);
            let len = read_u64(r) as usize;
            match item_type {
                8 => Meta::Strs((0..len).map(|_| read_string(r)).collect()),
                _ => {
                    let items: Vec<Meta> = (0..len).map(|_| read_value(r, item_type)).collect();
                    let ints: Option<Vec<i64>> = items
                        .iter()
                        .map(|m| if let Meta::Int(i) = m { Some(*i) } else { None })
                        .collect();
                    ints.map_or(Meta::Other, Meta::Ints)
                }
            }
        }
        10 | 11 => Meta::Int(read_u64(r) as i64),
        12 => {
            read_bytes(r, 8);
            Meta::Other
        }
        other => panic!("unknown GGUF metadata type {other}"),
    }
}

fn read_bytes(r: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).expect("GGUF metadata is truncated");
    buf
}

fn read_array<const N: usize>(r: &mut impl Read) -> [u8; N] {
    let mut buf = [0; N];
    r.read_exact(&mut buf).expect("GGUF metadata is truncated");
    buf
}

fn read_u32(r: &mut impl Read) -> u32 {
    u32::from_le_bytes(read_array(r))
}

fn read_u64(r: &mut impl Read) -> u64 {
    u64::from_le_bytes(read_array(r))
}

fn read_string(r: &mut impl Read) -> String {
    let len = read_u64(r) as usize;
    String::from_utf8(read_bytes(r, len)).expect("GGUF strings are UTF-8")
}
