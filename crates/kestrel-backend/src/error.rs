//! Errors of backend operations: shape mismatches and unsupported formats are caller bugs or
//! bad model files, reported with the names and sizes involved.

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("shape mismatch in {op}: {detail}")]
    Shape { op: &'static str, detail: String },
    #[error("weight `{name}`: {detail}")]
    Weight { name: String, detail: String },
    #[error("invalid batch: {0}")]
    Batch(String),
    /// A device that cannot be opened or used, or memory that does not fit.
    #[error("{0}")]
    Device(String),
}

pub type Result<T> = std::result::Result<T, BackendError>;

pub(crate) fn shape_err(op: &'static str, detail: impl Into<String>) -> BackendError {
    BackendError::Shape {
        op,
        detail: detail.into(),
    }
}
