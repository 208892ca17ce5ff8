//! `kestrel-fuzz`: runs the fuzz targets for a time budget each and prints executions, corpus
//! and crashes per target (exit status 1 if any target crashed). `scripts/fuzz.sh` runs it.
//!
//! ```text
//! kestrel-fuzz [--secs N] [--seed S] [--crash-dir DIR] [TARGET ...]
//! kestrel-fuzz --repro FILE TARGET
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kestrel_fuzz::{fuzz, run_one, targets, Budget};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut secs, mut seed, mut crash_dir, mut repro) = (10.0, 0u64, None, None);
    let mut names = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--secs" => secs = value("--secs")?.parse().context("--secs")?,
            "--seed" => seed = value("--seed")?.parse().context("--seed")?,
            "--crash-dir" => crash_dir = Some(PathBuf::from(value("--crash-dir")?)),
            "--repro" => repro = Some(PathBuf::from(value("--repro")?)),
            "-h" | "--help" => {
                println!("kestrel-fuzz [--secs N] [--seed S] [--crash-dir DIR] [TARGET ...]\nkestrel-fuzz --repro FILE TARGET");
                return Ok(());
            }
            other if other.starts_with('-') => bail!("unknown flag {other}"),
            other => names.push(other.to_string()),
        }
    }
    let all = targets::all();
    let known: Vec<&str> = all.iter().map(|t| t.name()).collect();
    for name in &names {
        if !known.contains(&name.as_str()) {
            bail!("unknown target {name}; targets: {}", known.join(", "));
        }
    }
    let chosen: Vec<_> = all
        .iter()
        .filter(|t| names.is_empty() || names.iter().any(|n| n == t.name()))
        .collect();

    if let Some(path) = repro {
        let input = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let [target] = chosen.as_slice() else {
            bail!("--repro needs exactly one target");
        };
        return match run_one(target.as_ref(), &input) {
            Ok(signature) => {
                println!("{}: no crash (outcome {signature:016x})", target.name());
                Ok(())
            }
            Err(crash) => bail!("{}: {}", target.name(), crash.message),
        };
    }

    println!(
        "{:<15} {:>10} {:>9} {:>7} {:>8} {:>10} {:>8}",
        "target", "execs", "execs/s", "corpus", "outcomes", "slowest", "crashes"
    );
    let mut crashed = false;
    for target in chosen {
        let r = fuzz(
            target.as_ref(),
            &Budget::secs(secs),
            seed,
            crash_dir.as_ref(),
        );
        println!(
            "{:<15} {:>10} {:>9.0} {:>7} {:>8} {:>9.1?} {:>8}",
            r.target,
            r.execs,
            r.execs as f64 / r.elapsed.as_secs_f64(),
            r.corpus,
            r.signatures,
            r.slowest,
            r.crashes.len()
        );
        for c in &r.crashes {
            crashed = true;
            println!("  crash: {} ({} byte input)", c.message, c.input.len());
        }
    }
    if crashed {
        std::process::exit(1);
    }
    Ok(())
}
