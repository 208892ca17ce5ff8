//! Fuzzing on the stable toolchain. `cargo-fuzz` needs nightly; this harness needs nothing but
//! `cargo test` / `cargo run`: a mutational fuzzer in the style of libFuzzer (bit flips, byte
//! edits, interesting values, dictionary words, splices) with structure-aware generators
//! (`arbitrary`'s [`Unstructured`]) per target, a corpus that keeps inputs reaching an outcome
//! not seen before (each target names its outcome: an error kind, a parse path), and panics
//! caught and kept as crash inputs. It has no coverage instrumentation; the outcome signatures
//! stand in for it.
//!
//! Targets ([`targets::all`]): request JSON → validation → sampling parameters; the GGUF header,
//! metadata, weights and vocabulary; the safetensors header; chat-template rendering with
//! hostile messages and tools; the reasoning, tool-call and stop-string stream parsers under
//! random chunking. A target's `run` panics on a bug: a panic in the code under test, or a
//! broken invariant it asserts.
//!
//! Runs are deterministic for a seed: `kestrel-fuzz --seed S` replays the same inputs.

pub mod targets;

use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One fuzz target.
pub trait Target: Sync {
    fn name(&self) -> &'static str;
    /// Valid inputs to start from.
    fn seeds(&self) -> Vec<Vec<u8>>;
    /// Words worth splicing into inputs (JSON keys, tags, magic numbers).
    fn dictionary(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }
    /// An input built from scratch out of raw entropy; `None` when the target has no generator.
    fn generate(&self, _u: &mut Unstructured<'_>) -> Option<Vec<u8>> {
        None
    }
    /// Runs one input: panics on a bug, else returns a signature of the outcome (inputs with a
    /// new signature join the corpus).
    fn run(&self, input: &[u8]) -> u64;
}

/// A panic, with the input that caused it.
#[derive(Clone, Debug)]
pub struct Crash {
    pub message: String,
    pub input: Vec<u8>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub target: &'static str,
    pub execs: u64,
    pub elapsed: Duration,
    pub corpus: usize,
    pub signatures: usize,
    /// One per distinct panic message.
    pub crashes: Vec<Crash>,
    /// The slowest single input.
    pub slowest: Duration,
}

#[derive(Clone, Debug)]
pub struct Budget {
    pub time: Duration,
    /// Stop after this many executions (whichever comes first).
    pub max_execs: u64,
}

impl Budget {
    pub fn secs(secs: f64) -> Self {
        Self {
            time: Duration::from_secs_f64(secs),
            max_execs: u64::MAX,
        }
    }
}

thread_local! {
    /// The message of the last panic on this thread, captured instead of printed.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
    static CAPTURING: RefCell<bool> = const { RefCell::new(false) };
}

/// Routes panics on fuzzing threads into [`LAST_PANIC`]; others print as usual.
fn install_panic_capture() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(|c| *c.borrow()) {
                let payload = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{payload}{at}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs one input, catching a panic as a [`Crash`].
pub fn run_one(target: &dyn Target, input: &[u8]) -> Result<u64, Crash> {
    install_panic_capture();
    CAPTURING.with(|c| *c.borrow_mut() = true);
    let result = catch_unwind(AssertUnwindSafe(|| target.run(input)));
    CAPTURING.with(|c| *c.borrow_mut() = false);
    result.map_err(|_| Crash {
        message: LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic".into()),
        input: input.to_vec(),
    })
}

/// Values that break size and sign arithmetic, little-endian.
const INTERESTING: &[&[u8]] = &[
    &[0],
    &[0xff],
    &[0x7f],
    &[0x80],
    &[0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0x7f],
    &[0, 0, 0, 0x80],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
    &[0, 0, 0, 0, 0, 0, 0, 0x80],
    &[0, 0, 0, 0, 1, 0, 0, 0],
    &[0x10, 0, 0, 0, 0, 0, 0, 0],
];

struct Mutator {
    rng: ChaCha8Rng,
    dictionary: Vec<Vec<u8>>,
    max_len: usize,
}

impl Mutator {
    fn range(&mut self, len: usize) -> (usize, usize) {
        let a = self.rng.gen_range(0..=len);
        let b = self.rng.gen_range(a..=len.min(a + 64));
        (a, b)
    }

    /// One to eight random edits of `input`, `other` available for splicing.
    fn mutate(&mut self, mut data: Vec<u8>, other: &[u8]) -> Vec<u8> {
        let edits = 1 << self.rng.gen_range(0..4);
        for _ in 0..edits {
            let len = data.len();
            match self.rng.gen_range(0..10) {
                0 if len > 0 => {
                    let i = self.rng.gen_range(0..len);
                    data[i] ^= 1 << self.rng.gen_range(0..8);
                }
                1 if len > 0 => {
                    let i = self.rng.gen_range(0..len);
                    data[i] = self.rng.gen();
                }
                2 => {
                    let (a, b) = self.range(len);
                    data.drain(a..b);
                }
                3 => {
                    let at = self.rng.gen_range(0..=len);
                    let n = self.rng.gen_range(1..16);
                    let bytes: Vec<u8> = (0..n).map(|_| self.rng.gen()).collect();
                    data.splice(at..at, bytes);
                }
                4 if len > 0 => {
                    // Duplicate a range (repetition finds length and count bugs).
                    let (a, b) = self.range(len);
                    let chunk = data[a..b].to_vec();
                    let at = self.rng.gen_range(0..=len);
                    data.splice(at..at, chunk);
                }
                5 => {
                    let v = INTERESTING[self.rng.gen_range(0..INTERESTING.len())];
                    let at = self.rng.gen_range(0..=len);
                    let end = (at + v.len()).min(len);
                    data.splice(at..end, v.iter().copied());
                }
                6 | 7 if !self.dictionary.is_empty() => {
                    let word =
                        self.dictionary[self.rng.gen_range(0..self.dictionary.len())].clone();
                    let at = self.rng.gen_range(0..=len);
                    if self.rng.gen_bool(0.5) {
                        data.splice(at..at, word);
                    } else {
                        let end = (at + word.len()).min(len);
                        data.splice(at..end, word);
                    }
                }
                8 if !other.is_empty() => {
                    // Splice: our head, the other input's tail.
                    let cut = self.rng.gen_range(0..=len);
                    let from = self.rng.gen_range(0..other.len());
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
                _ if len > 1 => {
                    // Swap two ranges' bytes.
                    let i = self.rng.gen_range(0..len);
                    let j = self.rng.gen_range(0..len);
                    data.swap(i, j);
                }
                _ => data.push(self.rng.gen()),
            }
        }
        data.truncate(self.max_len);
        data
    }
}

/// Most inputs a corpus keeps (the seeds always stay).
const MAX_CORPUS: usize = 4096;

/// Fuzzes `target` for `budget`; panics are collected, not raised. With `crash_dir`, each
/// distinct crash input is written there as `<target>-<n>.bin`.
pub fn fuzz(
    target: &dyn Target,
    budget: &Budget,
    seed: u64,
    crash_dir: Option<&PathBuf>,
) -> Report {
    let started = Instant::now();
    let mut mutator = Mutator {
        rng: ChaCha8Rng::seed_from_u64(seed),
        dictionary: target.dictionary(),
        max_len: 1 << 20,
    };
    let mut corpus = target.seeds();
    let num_seeds = corpus.len();
    let mut signatures = HashSet::new();
    let mut report = Report {
        target: target.name(),
        ..Report::default()
    };
    let mut crash_messages = HashSet::new();
    let mut entropy = vec![0u8; 4096];
    // Seeds first, as they are.
    let mut pending: Vec<Vec<u8>> = corpus.clone();
    while started.elapsed() < budget.time && report.execs < budget.max_execs {
        let input = match pending.pop() {
            Some(input) => input,
            None => match mutator.rng.gen_range(0..10) {
                0 => {
                    let n = mutator.rng.gen_range(0..512);
                    (0..n).map(|_| mutator.rng.gen()).collect()
                }
                1..=3 => {
                    let n = mutator.rng.gen_range(16..entropy.len());
                    mutator.rng.fill(&mut entropy[..n]);
                    let mut u = Unstructured::new(&entropy[..n]);
                    match target.generate(&mut u) {
                        Some(input) => input,
                        None => continue,
                    }
                }
                _ if !corpus.is_empty() => {
                    let a = corpus[mutator.rng.gen_range(0..corpus.len())].clone();
                    let b = corpus[mutator.rng.gen_range(0..corpus.len())].clone();
                    mutator.mutate(a, &b)
                }
                _ => continue,
            },
        };
        let t = Instant::now();
        let outcome = run_one(target, &input);
        report.slowest = report.slowest.max(t.elapsed());
        report.execs += 1;
        match outcome {
            Ok(signature) => {
                if signatures.insert(signature) {
                    if corpus.len() >= MAX_CORPUS {
                        let i = mutator.rng.gen_range(num_seeds..corpus.len());
                        corpus[i] = input;
                    } else {
                        corpus.push(input);
                    }
                }
            }
            Err(crash) => {
                if crash_messages.insert(crash.message.clone()) {
                    if let Some(dir) = crash_dir {
                        let _ = std::fs::create_dir_all(dir);
                        let path =
                            dir.join(format!("{}-{}.bin", target.name(), report.crashes.len()));
                        let _ = std::fs::write(path, &crash.input);
                    }
                    report.crashes.push(crash);
                }
            }
        }
    }
    report.elapsed = started.elapsed();
    report.corpus = corpus.len();
    report.signatures = signatures.len();
    report
}

/// A stable 64-bit signature of an outcome description (FNV-1a), with digits dropped so that
/// offsets and sizes in messages do not count as new outcomes.
pub fn signature(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().filter(|b| !b.is_ascii_digit()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}
