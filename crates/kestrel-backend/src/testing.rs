//! One conformance suite for every backend: [`backend_tests!`](crate::backend_tests) turns a
//! list of generic test bodies (`fn name<B: Backend + Clone>(backend: B)`) into one `#[test]`
//! per body and compiled backend, in modules named after the device (`cpu::name`,
//! `cuda::name`), as candle runs each test body on every device. A backend that is compiled in
//! but absent at run time (no GPU) prints why its tests are skipped instead of passing silently.

/// Instantiates generic test bodies on every compiled backend.
///
/// ```ignore
/// fn matmul_matches_reference<B: Backend + Clone>(b: B) { ... }
/// kestrel_backend::backend_tests!(matmul_matches_reference);
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::cpu::CpuBackend::new());
                }
            )*
        }
        $crate::__backend_tests_cuda!($($name),*);
    };
}

/// The CUDA half of [`backend_tests!`]: each body on GPU 0, or a printed reason to skip when
/// this machine has no usable GPU (`KESTREL_REQUIRE_CUDA=1` turns the skip into a failure).
#[cfg(feature = "cuda")]
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_tests_cuda {
    ($($name:ident),*) => {
        mod cuda {
            $(
                #[test]
                fn $name() {
                    match $crate::cuda::CudaBackend::open(0) {
                        Ok(b) => super::$name(b),
                        Err(e) => {
                            if std::env::var_os("KESTREL_REQUIRE_CUDA").is_some_and(|v| v == "1") {
                                panic!("KESTREL_REQUIRE_CUDA=1 but the GPU cannot be used: {e}");
                            }
                            eprintln!("skipped: no usable GPU ({e})");
                        }
                    }
                }
            )*
        }
    };
}

/// The CUDA half of [`backend_tests!`]; empty without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_tests_cuda {
    ($($name:ident),*) => {};
}

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sampling::{SampleOutput, SamplingBatch};
use crate::{
    AttnShape, Backend, BackendError, BatchInput, BatchLimits, DeviceKind, HostWeight, KvLayout,
    MemoryInfo, Result, StepOptions,
};

/// How [`FaultyBackend`] fails the step it was told to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The step's upload returns an error (a device error).
    Error,
    /// The step panics inside [`Backend::run_step`] (a bug in a kernel).
    Panic,
}

/// A backend that forwards every operation to `inner` and fails one chosen step, for tests of
/// what the engine and the server do when a device fails. Clones share the countdown.
#[derive(Clone)]
pub struct FaultyBackend<B> {
    pub inner: B,
    /// Steps to let through before the failing one; negative: never fail.
    countdown: Arc<AtomicI64>,
    /// Steps uploaded so far.
    steps: Arc<AtomicU64>,
    fault: Fault,
}

impl<B: Backend> FaultyBackend<B> {
    pub fn new(inner: B, fault: Fault) -> Self {
        Self {
            inner,
            countdown: Arc::new(AtomicI64::new(-1)),
            steps: Arc::new(AtomicU64::new(0)),
            fault,
        }
    }

    /// Fails the step after the next `steps` ones.
    pub fn fail_after(&self, steps: i64) {
        self.countdown.store(steps, Ordering::Release);
    }

    /// How many steps were uploaded (every step uploads one batch).
    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Acquire)
    }

    /// Whether this step is the failing one (counts the step).
    fn this_step_fails(&self) -> bool {
        self.countdown.fetch_sub(1, Ordering::AcqRel) == 0
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    type Tensor = B::Tensor;
    type Weight = B::Weight;
    type Batch = B::Batch;
    type KvLayer = B::KvLayer;
    type Sampling = B::Sampling;

    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }
    fn kind(&self) -> DeviceKind {
        self.inner.kind()
    }
    fn memory_info(&self) -> MemoryInfo {
        self.inner.memory_info()
    }
    fn load_weight(&self, weight: HostWeight) -> Result<Self::Weight> {
        self.inner.load_weight(weight)
    }
    fn load_embedding(&self, weight: HostWeight) -> Result<Self::Weight> {
        self.inner.load_embedding(weight)
    }
    fn alloc_tensor(&self, max_rows: usize, cols: usize) -> Result<Self::Tensor> {
        self.inner.alloc_tensor(max_rows, cols)
    }
    fn alloc_batch(&self, limits: BatchLimits) -> Result<Self::Batch> {
        self.inner.alloc_batch(limits)
    }
    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<Self::KvLayer> {
        self.inner.alloc_kv_layer(layout)
    }
    fn alloc_sampling(&self, max_rows: usize, vocab: usize) -> Result<Self::Sampling> {
        self.inner.alloc_sampling(max_rows, vocab)
    }
    fn upload_batch(&self, host: &BatchInput, dev: &mut Self::Batch) -> Result<()> {
        self.steps.fetch_add(1, Ordering::AcqRel);
        if self.fault == Fault::Error && self.this_step_fails() {
            return Err(BackendError::Device("injected device failure".into()));
        }
        self.inner.upload_batch(host, dev)
    }
    fn upload_sampling(&self, host: &SamplingBatch, dev: &mut Self::Sampling) -> Result<()> {
        self.inner.upload_sampling(host, dev)
    }
    fn resolve_placeholders(&self, batch: &mut Self::Batch, prev: &Self::Sampling) -> Result<()> {
        self.inner.resolve_placeholders(batch, prev)
    }
    fn embedding(&self, t: &Self::Weight, b: &Self::Batch, out: &mut Self::Tensor) -> Result<()> {
        self.inner.embedding(t, b, out)
    }
    fn rms_norm(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        eps: f32,
        out: &mut Self::Tensor,
    ) -> Result<()> {
        self.inner.rms_norm(x, w, eps, out)
    }
    fn rms_norm_inplace(&self, x: &mut Self::Tensor, w: &Self::Weight, eps: f32) -> Result<()> {
        self.inner.rms_norm_inplace(x, w, eps)
    }
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight, out: &mut Self::Tensor) -> Result<()> {
        self.inner.matmul(x, w, out)
    }
    fn matmul_many(
        &self,
        x: &Self::Tensor,
        ws: &[&Self::Weight],
        outs: &mut [&mut Self::Tensor],
    ) -> Result<()> {
        self.inner.matmul_many(x, ws, outs)
    }
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight) -> Result<()> {
        self.inner.add_bias(x, bias)
    }
    fn rope(
        &self,
        x: &mut Self::Tensor,
        b: &Self::Batch,
        rope: crate::Rope<'_, Self::Weight>,
    ) -> Result<()> {
        self.inner.rope(x, b, rope)
    }
    fn write_kv(
        &self,
        cache: &mut Self::KvLayer,
        k: &Self::Tensor,
        v: &Self::Tensor,
        b: &Self::Batch,
    ) -> Result<()> {
        self.inner.write_kv(cache, k, v, b)
    }
    fn copy_kv(&self, cache: &mut Self::KvLayer, b: &Self::Batch) -> Result<()> {
        self.inner.copy_kv(cache, b)
    }
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvLayer,
        b: &Self::Batch,
        shape: AttnShape,
        out: &mut Self::Tensor,
    ) -> Result<()> {
        self.inner.attention(q, cache, b, shape, out)
    }
    fn silu_mul(&self, g: &Self::Tensor, u: &Self::Tensor, out: &mut Self::Tensor) -> Result<()> {
        self.inner.silu_mul(g, u, out)
    }
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()> {
        self.inner.add_assign(x, y)
    }
    fn gather_logit_rows(
        &self,
        x: &Self::Tensor,
        b: &Self::Batch,
        out: &mut Self::Tensor,
    ) -> Result<()> {
        self.inner.gather_logit_rows(x, b, out)
    }
    fn sample(&self, logits: &Self::Tensor, s: &mut Self::Sampling) -> Result<()> {
        self.inner.sample(logits, s)
    }
    fn read_sampled(&self, s: &Self::Sampling, out: &mut SampleOutput) -> Result<()> {
        self.inner.read_sampled(s, out)
    }
    fn from_host(&self, data: &[f32], rows: usize, out: &mut Self::Tensor) -> Result<()> {
        self.inner.from_host(data, rows, out)
    }
    fn to_host(&self, x: &Self::Tensor, out: &mut Vec<f32>) -> Result<(usize, usize)> {
        self.inner.to_host(x, out)
    }
    fn run_step<E: Send>(
        &self,
        opts: StepOptions,
        step: impl FnOnce() -> std::result::Result<(), E> + Send,
    ) -> std::result::Result<(), E> {
        if self.fault == Fault::Panic && self.this_step_fails() {
            panic!("injected kernel panic");
        }
        self.inner.run_step(opts, step)
    }
}
