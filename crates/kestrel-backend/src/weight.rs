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
    /// The owner again when it is a read-only file mapping, whose pages can be given back.
    mapping: Option<Arc<memmap2::Mmap>>,
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
        (end <= (*owner).as_ref().len()).then_some(Self {
            owner,
            mapping: None,
            offset,
            len,
        })
    }

    /// Bytes `offset..offset + len` of a read-only file mapping; fails if the range is outside
    /// it. Such bytes can [`release_resident`](Self::release_resident) their pages.
    pub fn mapped(mapping: Arc<memmap2::Mmap>, offset: usize, len: usize) -> Option<Self> {
        let mut bytes = Self::new(mapping.clone(), offset, len)?;
        bytes.mapping = Some(mapping);
        Some(bytes)
    }

    /// Drops this range's pages from the process's resident memory when the bytes come from a
    /// file mapping (the whole pages inside the range; the page cache keeps the file). For a
    /// weight that the backend has copied into its own layout: later reads, if any, fault the
    /// pages back in from the file. Does nothing for owned buffers.
    pub fn release_resident(&self) {
        let Some(map) = &self.mapping else { return };
        const PAGE: usize = 4096;
        let base = map.as_ptr() as usize;
        let start = (base + self.offset).next_multiple_of(PAGE) - base;
        let end = ((base + self.offset + self.len) / PAGE * PAGE).saturating_sub(base);
        if end > start {
            // SAFETY: the mapping is a read-only (shared) file mapping: `MADV_DONTNEED` only
            // drops this process's page-table entries, and the next access reads the same
            // file contents again, so no reference into the range observes a change.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// Takes ownership of a buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Self {
            owner: Arc::new(bytes),
            mapping: None,
            offset: 0,
            len,
        }
    }

    /// Bytes `offset..offset + len` of these bytes, sharing the owner (no copy); `None` when
    /// the range is outside them.
    pub fn slice(&self, offset: usize, len: usize) -> Option<Self> {
        let end = offset.checked_add(len)?;
        (end <= self.len).then(|| Self {
            owner: self.owner.clone(),
            mapping: self.mapping.clone(),
            offset: self.offset + offset,
            len,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn released_file_pages_read_back_the_same_bytes() {
        let data: Vec<u8> = (0..5 * 4096 + 123).map(|i| (i * 7 % 251) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        // SAFETY: a private temporary file that nothing else writes.
        let map = Arc::new(unsafe { memmap2::Mmap::map(&file) }.unwrap());
        let bytes = HostBytes::mapped(map, 100, 4 * 4096 + 7).unwrap();
        assert_eq!(bytes.as_slice(), &data[100..100 + 4 * 4096 + 7]);
        bytes.release_resident();
        assert_eq!(bytes.as_slice(), &data[100..100 + 4 * 4096 + 7]);
        assert!(HostBytes::mapped(bytes.mapping.clone().unwrap(), 4096 * 5, 124).is_none());
    }

    #[test]
    fn releasing_an_owned_buffer_keeps_its_bytes() {
        let bytes = HostBytes::from_vec(vec![9u8; 3 * 4096]);
        bytes.release_resident();
        assert!(bytes.as_slice().iter().all(|&b| b == 9));
    }
}
