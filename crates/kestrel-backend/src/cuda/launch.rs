//! How the backend issues work to its stream: every kernel launch and GEMM goes through
//! [`Launcher`], which launches it and, while a step is being fingerprinted, also hashes what
//! it launched (kernel, grid, and every argument: device pointers and scalars).
//!
//! The fingerprint is how CUDA graphs stay correct: a captured decode step is replaced by a
//! graph recorded earlier only when its ops are exactly those the graph holds (same buffers,
//! same sizes, same scalars). The model's step alternates two sampling buffers and sometimes
//! resolves placeholder ids, so one batch size has a few graphs; each is instantiated once.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};

use super::kernels::{Kernel, Kernels};
use crate::error::{BackendError, Result};

/// One kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer or a 64-bit integer.
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
}

impl Arg {
    fn bits(self) -> u64 {
        match self {
            Arg::U64(v) => v,
            Arg::I32(v) => v as u32 as u64,
            Arg::F32(v) => v.to_bits() as u64,
            Arg::F64(v) => v.to_bits(),
        }
    }
}

/// The device address of a buffer (event tracking is off: nothing to wait for).
pub fn ptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _sync) = s.device_ptr(stream);
    p
}

/// Launches kernels on the backend's one stream, or fingerprints them.
pub struct Launcher {
    pub stream: Arc<CudaStream>,
    kernels: Kernels,
    fingerprint: Mutex<Option<DefaultHasher>>,
}

impl Launcher {
    pub fn new(stream: Arc<CudaStream>, kernels: Kernels) -> Self {
        Self {
            stream,
            kernels,
            fingerprint: Mutex::new(None),
        }
    }

    /// Starts hashing what is launched.
    pub fn begin_fingerprint(&self) {
        *self.fingerprint.lock().expect("fingerprint lock") = Some(DefaultHasher::new());
    }

    /// Stops hashing; returns the hash of everything issued since [`Self::begin_fingerprint`].
    pub fn end_fingerprint(&self) -> u64 {
        self.fingerprint
            .lock()
            .expect("fingerprint lock")
            .take()
            .map_or(0, |h| h.finish())
    }

    /// Hashes an issued op's `parts` when fingerprinting.
    pub fn note(&self, tag: &str, parts: &[u64]) {
        if let Some(h) = self.fingerprint.lock().expect("fingerprint lock").as_mut() {
            tag.hash(h);
            parts.hash(h);
        }
    }

    /// Launches `k` on a `grid` of blocks of `block` threads.
    pub fn launch(&self, k: Kernel, grid: (u32, u32, u32), block: u32, args: &[Arg]) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let mut parts = Vec::with_capacity(args.len() + 4);
        parts.extend([grid.0 as u64, grid.1 as u64, grid.2 as u64, block as u64]);
        parts.extend(args.iter().map(|a| a.bits()));
        self.note(k.name(), &parts);
        let f = self.kernels.get(k);
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::U64(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
                Arg::F64(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's parameters in `kernels.cu` (each op
        // builds it next to the kernel's signature), and every pointer is a live buffer of
        // the size the kernel indexes (checked by the op against the tensors' shapes).
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| BackendError::Device(format!("launching `{}`: {e}", k.name())))
    }

    /// A one-dimensional grid-stride launch over `n` elements.
    pub fn launch_elems(&self, k: Kernel, n: usize, args: &[Arg]) -> Result<()> {
        const BLOCK: u32 = 256;
        let blocks = n.div_ceil(BLOCK as usize).clamp(1, 65_535) as u32;
        if n == 0 {
            return Ok(());
        }
        self.launch(k, (blocks, 1, 1), BLOCK, args)
    }
}
