//! Resolving `--model`: a local Hugging Face directory, a local `.gguf` file, or a Hugging Face
//! model id (`Qwen/Qwen3-1.7B`) fetched with `hf-hub` into the standard HF cache
//! (`$HF_HOME/hub`, shared with Python tools) with a progress bar, and reused from the cache
//! without network afterwards. `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN` and `HF_HUB_OFFLINE` are
//! honoured as the Python client honours them.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;

use crate::error::{ModelError, Result};

/// Files a Hugging Face model directory needs besides its weights.
const REQUIRED: &[&str] = &["config.json", "tokenizer.json", "tokenizer_config.json"];
const OPTIONAL: &[&str] = &["generation_config.json"];
const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// What the user passed as `--model`.
#[derive(Debug, PartialEq, Eq)]
pub enum ModelSpec {
    Local(PathBuf),
    HubId(String),
}

impl ModelSpec {
    pub fn parse(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.exists() {
            return Ok(ModelSpec::Local(path.to_path_buf()));
        }
        let looks_local = spec.ends_with(".gguf")
            || spec.starts_with('/')
            || spec.starts_with('.')
            || spec.starts_with('~')
            || spec.matches('/').count() != 1;
        let valid_id = spec.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !part.starts_with('.')
        });
        if looks_local || !valid_id {
            return Err(ModelError::file(
                path,
                "no such file or directory (expected a Hugging Face model directory, a .gguf file, or a model id like Qwen/Qwen3-1.7B)",
            ));
        }
        Ok(ModelSpec::HubId(spec.to_string()))
    }
}

/// Returns a local path for `spec`, downloading a hub model into the HF cache when needed.
pub fn resolve(spec: &str) -> Result<PathBuf> {
    match ModelSpec::parse(spec)? {
        ModelSpec::Local(p) => Ok(p),
        ModelSpec::HubId(id) => fetch(&id),
    }
}

fn hub_error(id: &str, detail: impl std::fmt::Display) -> ModelError {
    ModelError::Hub {
        model_id: id.to_string(),
        detail: format!(
            "{detail}. To run without network, pass a local model directory (config.json + *.safetensors + tokenizer files) \
             or a .gguf file to --model, or pre-populate the Hugging Face cache"
        ),
    }
}

/// The cached snapshot directory of `id` if every needed file is already there.
fn cached(id: &str) -> Option<PathBuf> {
    let repo = Cache::from_env().model(id.to_string());
    for f in REQUIRED {
        repo.get(f)?;
    }
    let config = repo.get("config.json")?;
    let weights_ok = match repo.get(INDEX) {
        Some(index) => shard_names(&index)
            .ok()?
            .iter()
            .all(|s| repo.get(s).is_some()),
        None => repo.get(SINGLE).is_some(),
    };
    weights_ok
        .then(|| config.parent().map(Path::to_path_buf))
        .flatten()
}

fn shard_names(index: &Path) -> std::result::Result<Vec<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or("no weight_map")?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn fetch(id: &str) -> Result<PathBuf> {
    if let Some(dir) = cached(id) {
        return Ok(dir);
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        return Err(hub_error(
            id,
            "not in the Hugging Face cache and HF_HUB_OFFLINE is set",
        ));
    }
    let api = ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| hub_error(id, e))?;
    let repo = api.model(id.to_string());
    let get = |f: &str| {
        repo.get(f)
            .map_err(|e| hub_error(id, format!("could not download {f}: {e}")))
    };
    let config = get(REQUIRED[0])?;
    for f in &REQUIRED[1..] {
        get(f)?;
    }
    for f in OPTIONAL {
        // Absent on many repos; a missing optional file is not an error.
        let _ = repo.get(f);
    }
    match repo.get(INDEX) {
        Ok(index) => {
            for shard in shard_names(&index).map_err(|e| hub_error(id, format!("{INDEX}: {e}")))? {
                get(&shard)?;
            }
        }
        Err(_) => {
            get(SINGLE)?;
        }
    }
    config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_error(id, "cache path has no parent"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_classified() {
        assert_eq!(
            ModelSpec::parse("Qwen/Qwen3-1.7B").unwrap(),
            ModelSpec::HubId("Qwen/Qwen3-1.7B".into())
        );
        assert!(ModelSpec::parse("./missing-dir").is_err());
        assert!(ModelSpec::parse("/no/such/model.gguf").is_err());
        assert!(ModelSpec::parse("missing.gguf").is_err());
        assert!(ModelSpec::parse("a/b/c").is_err());
        let dir = std::env::temp_dir();
        assert_eq!(
            ModelSpec::parse(dir.to_str().unwrap()).unwrap(),
            ModelSpec::Local(dir)
        );
    }
}
