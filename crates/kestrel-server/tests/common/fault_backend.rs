//! The CPU backend with two test hooks: a step counter (every forward step prepares one batch)
//! and an armed panic, raised by the step the countdown reaches. Every op, `matmul_many` and
//! `run_step` included, goes to the CPU backend's own implementation, so the steps run exactly
//! as in production until the panic.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use kestrel_backend::cpu::CpuBackend;
use kestrel_backend::{AttnShape, Backend, BatchInput, HostWeight, KvLayout, Result};

/// Shared with the test: how many steps ran, and when to panic.
#[derive(Default)]
pub struct Hooks {
    pub steps: AtomicU64,
    /// Steps left before the panicking one (negative: never).
    pub panic_in: AtomicI64,
}

impl Hooks {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            steps: AtomicU64::new(0),
            panic_in: AtomicI64::new(-1),
        })
    }

    pub fn steps(&self) -> u64 {
        self.steps.load(Ordering::Acquire)
    }

    /// The `n`-th step from now (0: the next one) panics.
    pub fn arm_panic(&self, n: i64) {
        self.panic_in.store(n, Ordering::Release);
    }
}

pub struct FaultBackend {
    inner: CpuBackend,
    hooks: Arc<Hooks>,
}

impl FaultBackend {
    pub fn new(hooks: Arc<Hooks>) -> Self {
        Self {
            inner: CpuBackend::new(),
            hooks,
        }
    }
}

impl Backend for FaultBackend {
    type Tensor = <CpuBackend as Backend>::Tensor;
    type Weight = <CpuBackend as Backend>::Weight;
    type Batch = <CpuBackend as Backend>::Batch;
    type KvLayer = <CpuBackend as Backend>::KvLayer;

    fn describe(&self) -> String {
        format!("fault-injecting {}", self.inner.describe())
    }
    fn load_weight(&self, weight: HostWeight) -> Result<Self::Weight> {
        self.inner.load_weight(weight)
    }
    fn prepare_batch(&self, batch: &BatchInput) -> Result<Self::Batch> {
        self.hooks.steps.fetch_add(1, Ordering::AcqRel);
        if self.hooks.panic_in.fetch_sub(1, Ordering::AcqRel) == 0 {
            panic!("injected engine panic");
        }
        self.inner.prepare_batch(batch)
    }
    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<Self::KvLayer> {
        self.inner.alloc_kv_layer(layout)
    }
    fn to_host(&self, x: &Self::Tensor) -> Result<(usize, usize, Vec<f32>)> {
        self.inner.to_host(x)
    }
    fn embedding(&self, table: &Self::Weight, batch: &Self::Batch) -> Result<Self::Tensor> {
        self.inner.embedding(table, batch)
    }
    fn rms_norm(&self, x: &Self::Tensor, weight: &Self::Weight, eps: f32) -> Result<Self::Tensor> {
        self.inner.rms_norm(x, weight, eps)
    }
    fn matmul(&self, x: &Self::Tensor, w: &Self::Weight) -> Result<Self::Tensor> {
        self.inner.matmul(x, w)
    }
    fn matmul_many(&self, x: &Self::Tensor, ws: &[&Self::Weight]) -> Result<Vec<Self::Tensor>> {
        self.inner.matmul_many(x, ws)
    }
    fn add_bias(&self, x: &mut Self::Tensor, bias: &Self::Weight) -> Result<()> {
        self.inner.add_bias(x, bias)
    }
    fn rope(
        &self,
        x: &mut Self::Tensor,
        batch: &Self::Batch,
        head_dim: usize,
        theta: f64,
    ) -> Result<()> {
        self.inner.rope(x, batch, head_dim, theta)
    }
    fn write_kv(
        &self,
        cache: &mut Self::KvLayer,
        k: &Self::Tensor,
        v: &Self::Tensor,
        batch: &Self::Batch,
    ) -> Result<()> {
        self.inner.write_kv(cache, k, v, batch)
    }
    fn attention(
        &self,
        q: &Self::Tensor,
        cache: &Self::KvLayer,
        batch: &Self::Batch,
        shape: AttnShape,
    ) -> Result<Self::Tensor> {
        self.inner.attention(q, cache, batch, shape)
    }
    fn silu_mul(&self, gate: &Self::Tensor, up: &Self::Tensor) -> Result<Self::Tensor> {
        self.inner.silu_mul(gate, up)
    }
    fn add_assign(&self, x: &mut Self::Tensor, y: &Self::Tensor) -> Result<()> {
        self.inner.add_assign(x, y)
    }
    fn gather_logit_rows(&self, x: &Self::Tensor, batch: &Self::Batch) -> Result<Self::Tensor> {
        self.inner.gather_logit_rows(x, batch)
    }
    fn run_step<R: Send>(&self, step: impl FnOnce() -> R + Send) -> R {
        self.inner.run_step(step)
    }
}
