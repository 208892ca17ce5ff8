//! The step's sampling on the device: the [`RowParams`] of each logit row and the flat
//! penalty / bias / banned lists in persistent buffers (grown, outside a step, when a step
//! needs more), the vocabulary-sized work rows of the `sample_rows` kernel, and the sampled
//! ids and logprobs, which are the only data a step copies back to the host: the step itself
//! enqueues their copy into pinned host memory right after the kernel, so reading them waits
//! for that step only, not for the steps launched after it.

use std::sync::Arc;

use cudarc::driver::result as raw;
use cudarc::driver::{CudaSlice, CudaStream};

use super::buffers::zeros;
use super::launch::{ptr, Arg, Launcher};
use crate::error::{BackendError, Result};
use crate::sampling::{RowParams, SampleOutput, SamplingBatch, MAX_TOP_LOGPROBS};

fn dev_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("{what}: {e}"))
}

// `kernels.cu` mirrors `RowParams` field by field: a change there must change both.
const _: () = assert!(std::mem::size_of::<RowParams>() == 80);

/// A device list that grows (reallocates) when an upload needs more room.
struct List<T> {
    buf: CudaSlice<T>,
    len: usize,
}

impl<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits> List<T> {
    fn new(stream: &Arc<CudaStream>, cap: usize) -> Result<Self> {
        Ok(Self {
            buf: zeros(stream, cap, "a sampling list")?,
            len: 0,
        })
    }

    fn upload(&mut self, stream: &Arc<CudaStream>, host: &[T]) -> Result<()> {
        if host.len() > self.buf.len() {
            self.buf = zeros(stream, host.len().next_power_of_two(), "a sampling list")?;
        }
        if !host.is_empty() {
            stream
                .memcpy_htod(host, &mut self.buf.slice_mut(..host.len()))
                .map_err(|e| dev_err("uploading sampling parameters", e))?;
        }
        self.len = host.len();
        Ok(())
    }
}

/// Page-locked host memory, the target of asynchronous copies.
struct Pinned<T: Copy> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: plain host memory owned by this value; access is through `&self`/`&mut self`.
unsafe impl<T: Copy + Send> Send for Pinned<T> {}
unsafe impl<T: Copy + Sync> Sync for Pinned<T> {}

impl<T: Copy> Pinned<T> {
    fn new(stream: &CudaStream, len: usize) -> Result<Self> {
        let len = len.max(1);
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| dev_err("binding the GPU context", e))?;
        // SAFETY: allocates `len` elements of page-locked memory, freed in `drop`.
        let ptr = unsafe { raw::malloc_host(len * std::mem::size_of::<T>(), 0) }
            .map_err(|e| dev_err("allocating pinned host memory", e))?;
        // SAFETY: zero is a valid bit pattern for the plain numbers stored here.
        unsafe { std::ptr::write_bytes(ptr as *mut u8, 0, len * std::mem::size_of::<T>()) };
        Ok(Self {
            ptr: ptr as *mut T,
            len,
        })
    }

    fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialized elements owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Copy> Drop for Pinned<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by `malloc_host` in `new`.
        let _ = unsafe { raw::free_host(self.ptr as *mut std::ffi::c_void) };
    }
}

/// Enqueues `dst[..n] = src[..n]` on `stream`.
fn copy_back<T: Copy>(
    stream: &CudaStream,
    src: &CudaSlice<T>,
    dst: &mut Pinned<T>,
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = ptr(src, stream);
    // SAFETY: `src` holds at least `n` elements (the buffers are sized alike) and `dst` is
    // page-locked memory that lives as long as the sampling buffers; the host reads it only
    // after the step's event.
    unsafe { raw::memcpy_dtoh_async(&mut dst.as_mut_slice()[..n], p, stream.cu_stream()) }
        .map_err(|e| dev_err("copying sampled ids to the host", e))
}

pub struct CudaSampling {
    params: CudaSlice<u8>,
    penalty_tokens: List<u32>,
    penalty_counts: List<u32>,
    bias_tokens: List<u32>,
    bias_values: List<f32>,
    banned: List<u32>,
    allowed_words: List<u32>,
    /// `[max_rows, vocab]` processed logits and candidate flags.
    work: CudaSlice<f32>,
    keep: CudaSlice<u8>,
    pub tokens: CudaSlice<u32>,
    logprobs: CudaSlice<f32>,
    top_ids: CudaSlice<u32>,
    top_lps: CudaSlice<f32>,
    host_tokens: Pinned<u32>,
    host_logprobs: Pinned<f32>,
    host_top_ids: Pinned<u32>,
    host_top_lps: Pinned<f32>,
    /// The uploaded rows (the host needs `num_logprobs` to unpack the results).
    rows: Vec<RowParams>,
    /// The backend's number of the step that last sampled here.
    pub step: u64,
    max_rows: usize,
    pub vocab: usize,
}

impl CudaSampling {
    pub fn new(stream: &Arc<CudaStream>, max_rows: usize, vocab: usize) -> Result<Self> {
        let r = max_rows.max(1);
        Ok(Self {
            params: zeros(
                stream,
                r * std::mem::size_of::<RowParams>(),
                "sampling rows",
            )?,
            penalty_tokens: List::new(stream, r * 256)?,
            penalty_counts: List::new(stream, r * 256)?,
            bias_tokens: List::new(stream, r * 16)?,
            bias_values: List::new(stream, r * 16)?,
            banned: List::new(stream, r * 16)?,
            allowed_words: List::new(stream, r * vocab.div_ceil(32))?,
            work: zeros(stream, r * vocab, "sampling work rows")?,
            keep: zeros(stream, r * vocab, "sampling candidate flags")?,
            tokens: zeros(stream, r, "sampled ids")?,
            logprobs: zeros(stream, r, "sampled logprobs")?,
            top_ids: zeros(stream, r * MAX_TOP_LOGPROBS, "top logprob ids")?,
            top_lps: zeros(stream, r * MAX_TOP_LOGPROBS, "top logprobs")?,
            host_tokens: Pinned::new(stream, r)?,
            host_logprobs: Pinned::new(stream, r)?,
            host_top_ids: Pinned::new(stream, r * MAX_TOP_LOGPROBS)?,
            host_top_lps: Pinned::new(stream, r * MAX_TOP_LOGPROBS)?,
            rows: Vec::with_capacity(r),
            step: u64::MAX,
            max_rows,
            vocab,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn upload(&mut self, stream: &Arc<CudaStream>, host: &SamplingBatch) -> Result<()> {
        if host.num_rows() > self.max_rows {
            return Err(BackendError::Batch(format!(
                "{} sampling rows exceed the step limit of {}",
                host.num_rows(),
                self.max_rows
            )));
        }
        host.validate(self.vocab)?;
        let bytes: &[u8] = bytemuck::cast_slice(&host.rows);
        if !bytes.is_empty() {
            stream
                .memcpy_htod(bytes, &mut self.params.slice_mut(..bytes.len()))
                .map_err(|e| dev_err("uploading sampling rows", e))?;
        }
        self.penalty_tokens.upload(stream, &host.penalty_tokens)?;
        self.penalty_counts.upload(stream, &host.penalty_counts)?;
        self.bias_tokens.upload(stream, &host.bias_tokens)?;
        self.bias_values.upload(stream, &host.bias_values)?;
        self.banned.upload(stream, &host.banned_tokens)?;
        self.allowed_words.upload(stream, &host.allowed_words)?;
        self.rows.clear();
        self.rows.extend_from_slice(&host.rows);
        Ok(())
    }

    /// The `sample_rows` arguments after `logits`, in the kernel's order.
    pub fn kernel_args(&self, stream: &CudaStream) -> [Arg; 14] {
        [
            Arg::U64(ptr(&self.work, stream)),
            Arg::U64(ptr(&self.keep, stream)),
            Arg::U64(ptr(&self.params, stream)),
            Arg::U64(ptr(&self.penalty_tokens.buf, stream)),
            Arg::U64(ptr(&self.penalty_counts.buf, stream)),
            Arg::U64(ptr(&self.bias_tokens.buf, stream)),
            Arg::U64(ptr(&self.bias_values.buf, stream)),
            Arg::U64(ptr(&self.banned.buf, stream)),
            Arg::U64(ptr(&self.allowed_words.buf, stream)),
            Arg::I32(self.vocab as i32),
            Arg::U64(ptr(&self.tokens, stream)),
            Arg::U64(ptr(&self.logprobs, stream)),
            Arg::U64(ptr(&self.top_ids, stream)),
            Arg::U64(ptr(&self.top_lps, stream)),
        ]
    }

    /// Enqueues the copy of the results to pinned host memory (after the kernel), noting
    /// for a graph's fingerprint which copies the step makes.
    pub fn enqueue_copy_back(&mut self, launcher: &Launcher) -> Result<()> {
        let stream = &*launcher.stream;
        let n = self.rows.len();
        let with_logprobs = self.rows.iter().any(|r| r.num_logprobs >= 0);
        launcher.note(
            "copy_back",
            &[
                n as u64,
                with_logprobs as u64,
                self.host_tokens.ptr as u64,
                self.host_logprobs.ptr as u64,
            ],
        );
        copy_back(stream, &self.tokens, &mut self.host_tokens, n)?;
        if with_logprobs {
            copy_back(stream, &self.logprobs, &mut self.host_logprobs, n)?;
            copy_back(
                stream,
                &self.top_ids,
                &mut self.host_top_ids,
                n * MAX_TOP_LOGPROBS,
            )?;
            copy_back(
                stream,
                &self.top_lps,
                &mut self.host_top_lps,
                n * MAX_TOP_LOGPROBS,
            )?;
        }
        Ok(())
    }

    /// Unpacks the results of the last step that sampled here into `out`; the caller has
    /// waited for that step.
    pub fn read(&self, out: &mut SampleOutput) {
        let n = self.rows.len();
        out.clear();
        out.top_start.push(0);
        out.tokens
            .extend_from_slice(&self.host_tokens.as_slice()[..n]);
        let with_logprobs = self.rows.iter().any(|r| r.num_logprobs >= 0);
        let (ids, lps) = (self.host_top_ids.as_slice(), self.host_top_lps.as_slice());
        for (i, r) in self.rows.iter().enumerate() {
            out.logprobs.push(if r.num_logprobs >= 0 && with_logprobs {
                self.host_logprobs.as_slice()[i]
            } else {
                0.0
            });
            let k = (r.num_logprobs.max(0) as usize).min(self.vocab);
            let base = i * MAX_TOP_LOGPROBS;
            out.top
                .extend((0..k).map(|j| (ids[base + j], lps[base + j])));
            out.top_start.push(out.top.len() as u32);
        }
    }
}
