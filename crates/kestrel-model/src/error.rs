//! Errors of model loading and execution. Every variant names the file or weight involved so a
//! bad model input reads as one line: which file, what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("weight `{name}` not found in {source_desc}")]
    MissingWeight { name: String, source_desc: String },
    #[error("weight `{name}` in {source_desc}: {detail}")]
    BadWeight {
        name: String,
        source_desc: String,
        detail: String,
    },
    #[error("model `{model_id}`: {detail}")]
    Hub { model_id: String, detail: String },
    /// A step the runner cannot take (a caller's bug, reported rather than run).
    #[error("model step: {0}")]
    Step(String),
    #[error(transparent)]
    Backend(#[from] kestrel_backend::BackendError),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub fn file(path: impl Into<PathBuf>, detail: impl std::fmt::Display) -> Self {
        Self::File {
            path: path.into(),
            detail: detail.to_string(),
        }
    }
    pub fn config(path: impl Into<PathBuf>, detail: impl std::fmt::Display) -> Self {
        Self::Config {
            path: path.into(),
            detail: detail.to_string(),
        }
    }
}
