//! Host-side weights as the loaders hand them to a backend: a name, a storage format, a
//! `[rows, cols]` shape (PyTorch convention: `[out_features, in_features]`) and the raw bytes,
//! which may live inside a memory-mapped file shared by many weights.

use std::sync::Arc;

use crate::error::{BackendError, Result};
use crate::WeightFormat;

/// A byte range inside a shared owner (an `Mmap`, a `Vec<u8>`, ...), so that a weight can point
/// into a mapped file without copying it.
#[derive(Clone)]
pub struct HostBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    offset: usize,
    len: usize,
}

impl HostBytes {
    /// Bytes `offset..offset + len` of `owner`; fails if the range is outside it.
    pub fn new(
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    ) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= (*owner).as_ref().len()).then_some(Self { owner, offset, len })
    }

    /// Takes ownership of a buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Self {
            owner: Arc::new(bytes),
            offset: 0,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.offset..self.offset + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One weight tensor on the host, before it is made resident on a device.
#[derive(Clone)]
pub struct HostWeight {
    /// Checkpoint name, for error messages.
    pub name: String,
    pub format: WeightFormat,
    /// `[rows, cols]`; a vector is `[1, cols]`.
    pub rows: usize,
    pub cols: usize,
    pub bytes: HostBytes,
}

impl HostWeight {
    /// Checks that the byte length matches format and shape.
    pub fn validate(&self) -> Result<()> {
        let err = |detail: String| BackendError::Weight {
            name: self.name.clone(),
            detail,
        };
        if self.cols % self.format.block_len() != 0 {
            return Err(err(format!(
                "{} columns is not a multiple of the {} block length {}",
                self.cols,
                self.format.name(),
                self.format.block_len()
            )));
        }
        let expected = self.rows * self.format.row_bytes(self.cols);
        if self.bytes.len() != expected {
            return Err(err(format!(
                "{} bytes for a {}x{} {} tensor, expected {expected}",
                self.bytes.len(),
                self.rows,
                self.cols,
                self.format.name()
            )));
        }
        Ok(())
    }
}
