//! Every fuzz target for a short budget, as part of `cargo test` (CI): `KESTREL_FUZZ_SECS`
//! seconds each (default 3), fixed seed, no crash allowed. `scripts/fuzz.sh` runs the long
//! budgets.

use kestrel_fuzz::{fuzz, targets, Budget};

#[test]
fn every_target_runs_without_a_crash() {
    let secs: f64 = std::env::var("KESTREL_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut failures = Vec::new();
    for target in targets::all() {
        let r = fuzz(target.as_ref(), &Budget::secs(secs), 1, None);
        eprintln!(
            "{}: {} execs, {} outcomes, corpus {}, {} crashes",
            r.target,
            r.execs,
            r.signatures,
            r.corpus,
            r.crashes.len()
        );
        assert!(r.execs > 0, "{} ran nothing", r.target);
        assert!(
            r.signatures > 1,
            "{} saw a single outcome: the generator is stuck",
            r.target
        );
        for c in r.crashes {
            failures.push(format!(
                "{}: {} (input, {} bytes: {:?})",
                r.target,
                c.message,
                c.input.len(),
                String::from_utf8_lossy(&c.input[..c.input.len().min(300)])
            ));
        }
    }
    assert!(failures.is_empty(), "crashes:\n{}", failures.join("\n"));
}

/// The harness finds a planted bug: a target that panics on one byte pattern.
#[test]
fn the_harness_catches_a_planted_crash() {
    struct Planted;
    impl kestrel_fuzz::Target for Planted {
        fn name(&self) -> &'static str {
            "planted"
        }
        fn seeds(&self) -> Vec<Vec<u8>> {
            vec![b"FUZ".to_vec()]
        }
        fn dictionary(&self) -> Vec<Vec<u8>> {
            vec![b"Z!".to_vec()]
        }
        fn run(&self, input: &[u8]) -> u64 {
            if input.windows(4).any(|w| w == b"FUZZ") && input.contains(&b'!') {
                panic!("planted bug");
            }
            input.len() as u64
        }
    }
    let r = fuzz(&Planted, &Budget::secs(10.0), 3, None);
    assert_eq!(r.crashes.len(), 1, "{} execs", r.execs);
    assert!(r.crashes[0].message.contains("planted bug"));
}
