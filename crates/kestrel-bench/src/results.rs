//! The whole benchmark as one serializable value: what was measured against what, and every
//! run with every request's timings. `--output results.json` writes it as is; the Markdown and
//! HTML reports are views of it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::client::Endpoint;
use crate::driver::RunResult;
use crate::error::{Error, Result};
use crate::stats::Slo;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    /// Free-form name of what was measured (e.g. the server), shown in every table row.
    pub label: Option<String>,
    pub base_url: String,
    pub model: String,
    pub endpoint: Endpoint,
    /// `random`, `builtin` or the JSONL path.
    pub dataset: String,
    pub ignore_eos: bool,
    pub slo: Slo,
    /// Seconds since the Unix epoch when the benchmark started.
    pub started_at_unix_s: u64,
    /// The command line that made this report.
    pub command: Option<String>,
    pub runs: Vec<RunResult>,
}

impl BenchReport {
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a report always serializes");
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    pub fn read_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Dataset {
            path: path.to_owned(),
            line: e.line(),
            message: e.to_string(),
        })
    }
}
