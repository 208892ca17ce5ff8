//! The crate's one error type. Failures of individual requests are *not* errors here: they are
//! measurements (see `record::ErrorKind`); this enum is for bad input and broken setup.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}:{line}: {message}")]
    Dataset {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
