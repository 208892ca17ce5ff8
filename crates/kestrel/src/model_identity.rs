//! What the response cache calls the served model: a SHA-256 of its files plus the settings that
//! change its arithmetic (in-situ quantization, device kind, KV cache type, kernel mode), so two
//! replicas share cached answers exactly when they would compute the same ones, and a server
//! restarted on other weights never serves the old model's answers. Computed at start-up, only
//! when `--response-cache` is on: reading the files again costs about a second per GB (they
//! were just loaded, so they come from the page cache).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use kestrel_backend::{DeviceKind, KvDtype};
use kestrel_engine::BatchInvariance;
use sha2::{Digest, Sha256};

/// The settings beyond the files that change a model's outputs.
pub struct Numerics {
    pub quantization: Option<String>,
    pub device: DeviceKind,
    pub kv_dtype: KvDtype,
    pub batch_invariance: BatchInvariance,
}

/// `weights-sha256:<hex>;quantization:…;device:…;kv:…;kernels:…`.
pub fn model_identity(path: &Path, numerics: &Numerics) -> Result<String> {
    let start = Instant::now();
    let files = model_files(path)?;
    let mut sha = Sha256::new();
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    for file in &files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let len = std::fs::metadata(file)
            .with_context(|| format!("reading {}", file.display()))?
            .len();
        // Name and length first, so no two file sets hash alike by concatenation.
        sha.update((name.len() as u64).to_le_bytes());
        sha.update(name.as_bytes());
        sha.update(len.to_le_bytes());
        let mut f = File::open(file).with_context(|| format!("opening {}", file.display()))?;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", file.display()))?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            bytes += n as u64;
        }
    }
    let digest: String = sha.finalize().iter().map(|b| format!("{b:02x}")).collect();
    tracing::info!(
        files = files.len(),
        gib = bytes as f64 / (1u64 << 30) as f64,
        seconds = start.elapsed().as_secs_f64(),
        "model digest for the response cache"
    );
    Ok(format!(
        "weights-sha256:{digest};quantization:{};device:{};kv:{:?};kernels:{}",
        numerics.quantization.as_deref().unwrap_or("none"),
        numerics.device.name(),
        numerics.kv_dtype,
        // `auto` and `on` both run greedy and seeded requests (the cached ones) on the
        // batch-invariant kernels.
        match numerics.batch_invariance {
            BatchInvariance::Off => "fast",
            BatchInvariance::Auto | BatchInvariance::On => "invariant",
        }
    ))
}

/// A `.gguf` file, or a directory's weights, configs, tokenizer and template files, by name.
fn model_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "safetensors" | "json" | "jinja" | "model"))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numerics() -> Numerics {
        Numerics {
            quantization: None,
            device: DeviceKind::Cpu,
            kv_dtype: KvDtype::F16,
            batch_invariance: BatchInvariance::Auto,
        }
    }

    #[test]
    fn identity_follows_the_files_and_the_numerics() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("model.safetensors"), b"weights").unwrap();
        std::fs::write(dir.path().join("README.md"), b"ignored").unwrap();
        let base = model_identity(dir.path(), &numerics()).unwrap();
        assert!(base.starts_with("weights-sha256:"), "{base}");
        assert_eq!(model_identity(dir.path(), &numerics()).unwrap(), base);
        // Files that are not the model do not count.
        std::fs::write(dir.path().join("README.md"), b"changed").unwrap();
        assert_eq!(model_identity(dir.path(), &numerics()).unwrap(), base);
        // Weights, configs and every numerics setting do.
        std::fs::write(dir.path().join("model.safetensors"), b"weightz").unwrap();
        let other_weights = model_identity(dir.path(), &numerics()).unwrap();
        assert_ne!(other_weights, base);
        let mut seen = vec![other_weights.clone()];
        let variants = [
            Numerics {
                quantization: Some("q8_0".into()),
                ..numerics()
            },
            Numerics {
                kv_dtype: KvDtype::F32,
                ..numerics()
            },
            Numerics {
                batch_invariance: BatchInvariance::Off,
                ..numerics()
            },
        ];
        for n in variants {
            let id = model_identity(dir.path(), &n).unwrap();
            assert!(!seen.contains(&id), "{id}");
            seen.push(id);
        }
        // `on` and `auto` run cached requests on the same kernels.
        let on = Numerics {
            batch_invariance: BatchInvariance::On,
            ..numerics()
        };
        assert_eq!(model_identity(dir.path(), &on).unwrap(), other_weights);
    }
}
