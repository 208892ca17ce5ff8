//! The CUDA backend: [`Backend`] on one NVIDIA GPU through `cudarc`, which opens the driver,
//! cuBLAS and NVRTC at run time (nothing is linked), so a binary built with `--features cuda`
//! still starts on a machine without them and `--device auto` falls back to the CPU.
//!
//! - One context and one stream; every op is enqueued on it and returns at once. Event
//!   tracking is off: the one stream orders everything, and the host waits only in
//!   [`Backend::read_sampled`] (on the event of the step it reads) and in the debugging copies.
//! - Kernels come from `kernels.cu`, compiled by NVRTC at start-up for the device
//!   ([`kernels`]); GEMMs go to cuBLAS ([`gemm`]).
//! - Decode steps (`StepOptions::graph_tokens`) run as CUDA graphs: the step's ops are first
//!   fingerprinted ([`launch`]); a graph recorded for the same fingerprint is replayed, else
//!   the step is captured into a new one. Prefill runs eagerly.
//! - Activations are f32; weights f32, f16 or bf16 (quantized GGUF weights are dequantized to
//!   f16 at load); the KV cache f32 or f16.

pub mod batch;
pub mod buffers;
pub mod gemm;
pub mod graphs;
pub mod kernels;
pub mod launch;
pub mod sampling;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream};

use self::batch::CudaBatch;
use self::buffers::{zeros, CudaKvLayer, CudaTensor, CudaWeight, DT_F32};
use self::gemm::GemmArgs;
use self::graphs::Graphs;
use self::kernels::{Kernel, Kernels};
use self::launch::{ptr, Arg, Launcher};
use self::sampling::CudaSampling;
use crate::error::{shape_err, BackendError, Result};
use crate::sampling::{SampleOutput, SamplingBatch};
use crate::{
    AttnShape, Backend, BatchInput, BatchLimits, DeviceKind, HostWeight, KvLayout, MemoryInfo,
    StepOptions,
};

fn dev_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("{what}: {e}"))
}

struct Inner {
    ctx: Arc<CudaContext>,
    launcher: Launcher,
    blas: CudaBlas,
    /// Half-precision copy of a GEMM's activations, as long as the largest tensor.
    half: Mutex<CudaSlice<u16>>,
    /// cuBLAS's workspace, set once so that GEMMs allocate nothing (and can be captured).
    _workspace: CudaSlice<u8>,
    /// Recorded decode steps.
    graphs: Mutex<Graphs>,
    /// Graphs are off after a capture failed (later steps run eagerly), or with
    /// `KESTREL_CUDA_GRAPHS=0`.
    graphs_enabled: AtomicBool,
    /// Why graphs were turned off, reported by the next read.
    graph_error: Mutex<Option<String>>,
    /// Completion events of the last steps, by step number.
    events: Mutex<VecDeque<(u64, CudaEvent)>>,
    steps: AtomicU64,
    /// The number of the step being issued inside `run_step`; `u64::MAX` outside.
    current: AtomicU64,
    name: String,
    capability: (i32, i32),
}

/// Clears the current step number when a step ends (or fails).
struct ResetOnDrop<'a>(&'a AtomicU64);

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(u64::MAX, Ordering::Relaxed);
    }
}

/// One NVIDIA GPU. Clones share the device.
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<Inner>,
}

/// Bytes of cuBLAS's workspace.
const CUBLAS_WORKSPACE: usize = 32 << 20;

impl CudaBackend {
    /// Whether the CUDA driver library can be loaded and sees at least one device.
    pub fn available() -> std::result::Result<usize, String> {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver (libcuda.so) on this machine".into());
        }
        match CudaContext::device_count() {
            Ok(n) if n > 0 => Ok(n as usize),
            Ok(_) => Err("the CUDA driver sees no GPU".into()),
            Err(e) => Err(format!("the CUDA driver failed to start: {e}")),
        }
    }

    /// Opens GPU `ordinal`: context, stream, cuBLAS, and the kernels compiled for it.
    pub fn open(ordinal: usize) -> Result<Self> {
        Self::available().map_err(BackendError::Device)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| dev_err("opening the GPU", e))?;
        // SAFETY: called before any buffer exists; the backend uses one stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| dev_err("creating a stream", e))?;
        let kernels = Kernels::load(&ctx)?;
        let blas = CudaBlas::new(stream.clone()).map_err(|e| dev_err("opening cuBLAS", e))?;
        let workspace: CudaSlice<u8> = zeros(&stream, CUBLAS_WORKSPACE, "the cuBLAS workspace")?;
        // SAFETY: the workspace outlives the handle (both live in `Inner`, the handle is
        // dropped first as it is declared first... and cuBLAS only uses it on `stream`).
        let status = unsafe {
            cudarc::cublas::sys::cublasSetWorkspace_v2(
                *blas.handle(),
                ptr(&workspace, &stream) as *mut std::ffi::c_void,
                CUBLAS_WORKSPACE,
            )
        };
        if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(BackendError::Device(format!(
                "setting the cuBLAS workspace: {status:?}"
            )));
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let capability = ctx
            .compute_capability()
            .map_err(|e| dev_err("compute capability", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                half: Mutex::new(zeros(&stream, 1, "the half activation buffer")?),
                launcher: Launcher::new(stream, kernels),
                blas,
                _workspace: workspace,
                graphs: Mutex::new(Graphs::default()),
                graphs_enabled: AtomicBool::new(
                    std::env::var_os("KESTREL_CUDA_GRAPHS").is_none_or(|v| v != "0"),
                ),
                graph_error: Mutex::new(None),
                events: Mutex::new(VecDeque::new()),
                steps: AtomicU64::new(0),
                current: AtomicU64::new(u64::MAX),
                ctx,
                name,
                capability,
            }),
        })
    }

    fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.launcher.stream
    }

    fn l(&self) -> &Launcher {
        &self.inner.launcher
    }

    fn p(&self, t: &CudaTensor) -> Arg {
        Arg::U64(t.ptr(self.stream()))
    }

    /// `x` as the GEMM input for a weight of `dtype`: itself (f32) or its half cast.
    fn gemm_input(&self, x: &CudaTensor, dtype: i32) -> Result<u64> {
        if dtype == DT_F32 {
            return Ok(x.ptr(self.stream()));
        }
        let half = self.inner.half.lock().expect("half buffer lock");
        if half.len() < x.len() {
            return Err(shape_err(
                "matmul",
                format!(
                    "activations of {} values exceed the half buffer of {}",
                    x.len(),
                    half.len()
                ),
            ));
        }
        let dst = ptr(&*half, self.stream());
        self.l().launch_elems(
            Kernel::CastF32,
            x.len(),
            &[
                self.p(x),
                Arg::U64(dst),
                Arg::I32(dtype),
                Arg::U64(x.len() as u64),
            ],
        )?;
        Ok(dst)
    }

    fn check_matmul(x: &CudaTensor, w: &CudaWeight, out: &mut CudaTensor) -> Result<()> {
        if x.cols != w.cols {
            return Err(shape_err(
                "matmul",
                format!("x [{}, {}] · w [{}, {}]ᵀ", x.rows, x.cols, w.rows, w.cols),
            ));
        }
        out.set_rows("matmul", x.rows, w.rows)
    }

    fn record_step_event(&self, step: u64) -> Result<()> {
        let ev = self
            .stream()
            .record_event(None)
            .map_err(|e| dev_err("recording a step event", e))?;
        let mut events = self.inner.events.lock().expect("events lock");
        events.push_back((step, ev));
        while events.len() > 8 {
            events.pop_front();
        }
        Ok(())
    }

    /// The NVRTC-compiled architecture, `(major, minor)`.
    pub fn capability(&self) -> (i32, i32) {
        self.inner.capability
    }

    /// Graphs recorded so far (for tests and logs).
    pub fn num_graphs(&self) -> usize {
        self.inner.graphs.lock().expect("graphs lock").len()
    }
}

impl Backend for CudaBackend {
    type Tensor = CudaTensor;
    type Weight = CudaWeight;
    type Batch = CudaBatch;
    type KvLayer = CudaKvLayer;
    type Sampling = CudaSampling;

    fn describe(&self) -> String {
        let (major, minor) = self.inner.capability;
        let mem = self.memory_info();
        format!(
            "CUDA {} (sm_{major}{minor}, {:.1} GiB): NVRTC kernels, cuBLAS GEMMs, decode in \
             CUDA graphs{}",
            self.inner.name,
            mem.total as f64 / (1u64 << 30) as f64,
            if self.inner.graphs_enabled.load(Ordering::Relaxed) {
                ""
            } else {
                " (off)"
            }
        )
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn memory_info(&self) -> MemoryInfo {
        let (free, total) = self.inner.ctx.mem_get_info().unwrap_or((0, 0));
        MemoryInfo { total, free }
    }

    fn load_weight(&self, weight: HostWeight) -> Result<CudaWeight> {
        CudaWeight::load(self.stream(), weight)
    }

    fn alloc_tensor(&self, max_rows: usize, cols: usize) -> Result<CudaTensor> {
        let t = CudaTensor::new(self.stream(), max_rows, cols)?;
        let mut half = self.inner.half.lock().expect("half buffer lock");
        if half.len() < max_rows * cols {
            *half = zeros(self.stream(), max_rows * cols, "the half activation buffer")?;
        }
        Ok(t)
    }

    fn alloc_batch(&self, limits: BatchLimits) -> Result<CudaBatch> {
        CudaBatch::new(self.stream(), limits)
    }

    fn alloc_kv_layer(&self, layout: KvLayout) -> Result<CudaKvLayer> {
        CudaKvLayer::zeros(self.stream(), layout)
    }

    fn alloc_sampling(&self, max_rows: usize, vocab: usize) -> Result<CudaSampling> {
        CudaSampling::new(self.stream(), max_rows, vocab)
    }

    fn upload_batch(&self, host: &BatchInput, dev: &mut CudaBatch) -> Result<()> {
        dev.fill(self.stream(), host)
    }

    fn upload_sampling(&self, host: &SamplingBatch, dev: &mut CudaSampling) -> Result<()> {
        dev.upload(self.stream(), host)
    }

    fn resolve_placeholders(&self, batch: &mut CudaBatch, prev: &CudaSampling) -> Result<()> {
        let n = batch.num_prev;
        if n == 0 {
            return Ok(());
        }
        let s = self.stream();
        self.l().launch(
            Kernel::ResolvePlaceholders,
            ((n as u32).div_ceil(256), 1, 1),
            256,
            &[
                Arg::U64(batch.ids_ptr(s)),
                Arg::U64(ptr(&batch.prev_sampled, s)),
                Arg::I32(n as i32),
                Arg::U64(ptr(&prev.tokens, s)),
            ],
        )
    }

    fn embedding(&self, table: &CudaWeight, batch: &CudaBatch, out: &mut CudaTensor) -> Result<()> {
        out.set_rows("embedding", batch.num_tokens, table.cols)?;
        self.l().launch(
            Kernel::Embedding,
            (batch.num_tokens as u32, 1, 1),
            256,
            &[
                Arg::U64(table.ptr(self.stream())),
                Arg::I32(table.dtype),
                Arg::U64(batch.ids_ptr(self.stream())),
                self.p(out),
                Arg::I32(table.cols as i32),
            ],
        )
    }

    fn rms_norm(
        &self,
        x: &CudaTensor,
        weight: &CudaWeight,
        eps: f32,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let g = weight.cols;
        if !weight.is_vector() || g == 0 || x.cols % g != 0 {
            return Err(shape_err(
                "rms_norm",
                format!("x [{}, {}] with a norm weight of {g}", x.rows, x.cols),
            ));
        }
        out.set_rows("rms_norm", x.rows, x.cols)?;
        self.l().launch(
            Kernel::RmsNorm,
            ((x.rows * (x.cols / g)) as u32, 1, 1),
            256,
            &[
                self.p(x),
                Arg::U64(weight.ptr(self.stream())),
                Arg::I32(weight.dtype),
                self.p(out),
                Arg::I32(g as i32),
                Arg::F32(eps),
            ],
        )
    }

    fn rms_norm_inplace(&self, x: &mut CudaTensor, weight: &CudaWeight, eps: f32) -> Result<()> {
        let g = weight.cols;
        if !weight.is_vector() || g == 0 || x.cols % g != 0 {
            return Err(shape_err(
                "rms_norm",
                format!("x [{}, {}] with a norm weight of {g}", x.rows, x.cols),
            ));
        }
        self.l().launch(
            Kernel::RmsNorm,
            ((x.rows * (x.cols / g)) as u32, 1, 1),
            256,
            &[
                self.p(x),
                Arg::U64(weight.ptr(self.stream())),
                Arg::I32(weight.dtype),
                self.p(x),
                Arg::I32(g as i32),
                Arg::F32(eps),
            ],
        )
    }

    fn matmul(&self, x: &CudaTensor, w: &CudaWeight, out: &mut CudaTensor) -> Result<()> {
        Self::check_matmul(x, w, out)?;
        let xin = self.gemm_input(x, w.dtype)?;
        gemm::gemm(
            &self.inner.blas,
            self.l(),
            &GemmArgs {
                w: w.ptr(self.stream()),
                w_dtype: w.dtype,
                x: xin,
                out: out.ptr(self.stream()),
                n: x.rows,
                m: w.rows,
                k: w.cols,
            },
        )
    }

    fn matmul_many(
        &self,
        x: &CudaTensor,
        ws: &[&CudaWeight],
        outs: &mut [&mut CudaTensor],
    ) -> Result<()> {
        if ws.len() != outs.len() {
            return Err(shape_err(
                "matmul_many",
                format!("{} weights, {} outputs", ws.len(), outs.len()),
            ));
        }
        // The activations are cast once when every weight has the same type.
        let shared = ws
            .first()
            .filter(|w0| ws.iter().all(|w| w.dtype == w0.dtype))
            .map(|w0| self.gemm_input(x, w0.dtype))
            .transpose()?;
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            Self::check_matmul(x, w, out)?;
            let xin = match shared {
                Some(p) => p,
                None => self.gemm_input(x, w.dtype)?,
            };
            gemm::gemm(
                &self.inner.blas,
                self.l(),
                &GemmArgs {
                    w: w.ptr(self.stream()),
                    w_dtype: w.dtype,
                    x: xin,
                    out: out.ptr(self.stream()),
                    n: x.rows,
                    m: w.rows,
                    k: w.cols,
                },
            )?;
        }
        Ok(())
    }

    fn add_bias(&self, x: &mut CudaTensor, bias: &CudaWeight) -> Result<()> {
        if !bias.is_vector() || bias.cols != x.cols {
            return Err(shape_err(
                "add_bias",
                format!("x [{}, {}] + bias of {}", x.rows, x.cols, bias.cols),
            ));
        }
        self.l().launch_elems(
            Kernel::AddBias,
            x.len(),
            &[
                self.p(x),
                Arg::U64(bias.ptr(self.stream())),
                Arg::I32(bias.dtype),
                Arg::U64(x.len() as u64),
                Arg::I32(x.cols as i32),
            ],
        )
    }

    fn rope(
        &self,
        x: &mut CudaTensor,
        batch: &CudaBatch,
        rope: crate::Rope<'_, CudaWeight>,
    ) -> Result<()> {
        let head_dim = rope.head_dim;
        if x.rows != batch.num_tokens
            || head_dim % 2 != 0
            || head_dim == 0
            || x.cols % head_dim != 0
        {
            return Err(shape_err(
                "rope",
                format!(
                    "x [{}, {}], {} positions, head_dim {head_dim}",
                    x.rows, x.cols, batch.num_tokens
                ),
            ));
        }
        let (inv_ptr, inv_dtype, has_inv) = match rope.inv_freq {
            None => (0, 0, 0),
            Some(w) if w.is_vector() && w.cols == head_dim / 2 => {
                (w.ptr(self.stream()), w.dtype, 1)
            }
            Some(w) => {
                return Err(shape_err(
                    "rope",
                    format!(
                        "inverse frequencies [{}, {}] for head_dim {head_dim}",
                        w.rows, w.cols
                    ),
                ))
            }
        };
        self.l().launch(
            Kernel::RopeNeox,
            (x.rows as u32, 1, 1),
            128,
            &[
                self.p(x),
                Arg::U64(ptr(&batch.positions, self.stream())),
                Arg::I32(x.cols as i32),
                Arg::I32(head_dim as i32),
                Arg::F64(rope.theta),
                Arg::U64(inv_ptr),
                Arg::I32(inv_dtype),
                Arg::I32(has_inv),
                Arg::F32(rope.scale),
            ],
        )
    }

    fn write_kv(
        &self,
        cache: &mut CudaKvLayer,
        k: &CudaTensor,
        v: &CudaTensor,
        batch: &CudaBatch,
    ) -> Result<()> {
        let l = cache.layout;
        let width = l.num_kv_heads * l.head_dim;
        if k.cols != width || v.cols != width || k.rows != batch.num_tokens || v.rows != k.rows {
            return Err(shape_err(
                "write_kv",
                format!(
                    "k [{}, {}], v [{}, {}] into a cache of width {width} for {} tokens",
                    k.rows, k.cols, v.rows, v.cols, batch.num_tokens
                ),
            ));
        }
        let s = self.stream();
        self.l().launch_elems(
            Kernel::WriteKv,
            k.len(),
            &[
                self.p(k),
                self.p(v),
                Arg::U64(ptr(&batch.slot_mapping, s)),
                Arg::U64(ptr(&cache.k, s)),
                Arg::U64(ptr(&cache.v, s)),
                Arg::I32(cache.dtype()),
                Arg::I32(k.rows as i32),
                Arg::I32(width as i32),
            ],
        )
    }

    fn copy_kv(&self, cache: &mut CudaKvLayer, batch: &CudaBatch) -> Result<()> {
        let l = cache.layout;
        let copies = &batch.host_kv_copies;
        if copies.is_empty() {
            return Ok(());
        }
        if let Some(c) = copies.iter().find(|c| {
            c.src_block as usize >= l.num_blocks
                || c.dst_block as usize >= l.num_blocks
                || c.src_block == c.dst_block
                || c.num_tokens as usize > l.block_size
        }) {
            return Err(BackendError::Batch(format!(
                "KV copy of {} slots from block {} to block {} in a cache of {} blocks of {}",
                c.num_tokens, c.src_block, c.dst_block, l.num_blocks, l.block_size
            )));
        }
        let row_bytes = l.num_kv_heads * l.head_dim * l.dtype.size_bytes();
        let grid_x = (l.block_size * row_bytes).div_ceil(256).clamp(1, 65_535) as u32;
        let s = self.stream();
        self.l().launch(
            Kernel::CopyKv,
            (grid_x, copies.len() as u32, 1),
            256,
            &[
                Arg::U64(ptr(&cache.k, s)),
                Arg::U64(ptr(&cache.v, s)),
                Arg::U64(ptr(&batch.kv_copies, s)),
                Arg::I32(l.block_size as i32),
                Arg::U64(row_bytes as u64),
            ],
        )
    }

    fn attention(
        &self,
        q: &CudaTensor,
        cache: &CudaKvLayer,
        batch: &CudaBatch,
        shape: AttnShape,
        out: &mut CudaTensor,
    ) -> Result<()> {
        let l = cache.layout;
        if q.cols != shape.num_heads * shape.head_dim
            || q.rows != batch.num_tokens
            || l.head_dim != shape.head_dim
            || l.num_kv_heads != shape.num_kv_heads
            || shape.num_kv_heads == 0
            || shape.num_heads % shape.num_kv_heads != 0
            || shape.head_dim > 256
        {
            return Err(shape_err(
                "attention",
                format!(
                    "q [{}, {}] for {shape:?} over a cache of {l:?} (head_dim at most 256)",
                    q.rows, q.cols
                ),
            ));
        }
        out.set_rows("attention", q.rows, q.cols)?;
        let s = self.stream();
        self.l().launch(
            Kernel::PagedAttention,
            (q.rows as u32, shape.num_heads as u32, 1),
            128,
            &[
                self.p(q),
                Arg::U64(ptr(&cache.k, s)),
                Arg::U64(ptr(&cache.v, s)),
                Arg::I32(cache.dtype()),
                Arg::U64(ptr(&batch.query_start_loc, s)),
                Arg::U64(ptr(&batch.block_tables, s)),
                Arg::U64(ptr(&batch.block_table_start, s)),
                Arg::U64(ptr(&batch.positions, s)),
                self.p(out),
                Arg::I32(batch.num_seqs as i32),
                Arg::I32(shape.num_heads as i32),
                Arg::I32(shape.num_kv_heads as i32),
                Arg::I32(shape.head_dim as i32),
                Arg::I32(batch.block_size as i32),
                Arg::F32(shape.scale),
            ],
        )
    }

    fn silu_mul(&self, gate: &CudaTensor, up: &CudaTensor, out: &mut CudaTensor) -> Result<()> {
        if gate.rows != up.rows || gate.cols != up.cols {
            return Err(shape_err(
                "silu_mul",
                format!(
                    "gate [{}, {}], up [{}, {}]",
                    gate.rows, gate.cols, up.rows, up.cols
                ),
            ));
        }
        out.set_rows("silu_mul", gate.rows, gate.cols)?;
        self.l().launch_elems(
            Kernel::SiluMul,
            gate.len(),
            &[
                self.p(gate),
                self.p(up),
                self.p(out),
                Arg::U64(gate.len() as u64),
            ],
        )
    }

    fn add_assign(&self, x: &mut CudaTensor, y: &CudaTensor) -> Result<()> {
        if x.rows != y.rows || x.cols != y.cols {
            return Err(shape_err(
                "add_assign",
                format!("x [{}, {}] += y [{}, {}]", x.rows, x.cols, y.rows, y.cols),
            ));
        }
        self.l().launch_elems(
            Kernel::AddAssign,
            x.len(),
            &[self.p(x), self.p(y), Arg::U64(x.len() as u64)],
        )
    }

    fn gather_logit_rows(
        &self,
        x: &CudaTensor,
        batch: &CudaBatch,
        out: &mut CudaTensor,
    ) -> Result<()> {
        out.set_rows("gather_logit_rows", batch.num_logits, x.cols)?;
        self.l().launch(
            Kernel::GatherRows,
            (batch.num_logits as u32, 1, 1),
            256,
            &[
                self.p(x),
                Arg::U64(ptr(&batch.logits_indices, self.stream())),
                self.p(out),
                Arg::I32(x.cols as i32),
            ],
        )
    }

    fn sample(&self, logits: &CudaTensor, sampling: &mut CudaSampling) -> Result<()> {
        let rows = sampling.num_rows();
        if logits.rows != rows || logits.cols != sampling.vocab {
            return Err(shape_err(
                "sample",
                format!(
                    "logits [{}, {}] for {rows} sampling rows over a vocabulary of {}",
                    logits.rows, logits.cols, sampling.vocab
                ),
            ));
        }
        let mut args = vec![self.p(logits)];
        args.extend(sampling.kernel_args(self.stream()));
        self.l()
            .launch(Kernel::SampleRows, (rows as u32, 1, 1), 1024, &args)?;
        sampling.enqueue_copy_back(self.l())?;
        sampling.step = self.inner.current.load(Ordering::Relaxed);
        Ok(())
    }

    fn read_sampled(&self, sampling: &CudaSampling, out: &mut SampleOutput) -> Result<()> {
        if let Some(e) = self
            .inner
            .graph_error
            .lock()
            .expect("graph error lock")
            .take()
        {
            return Err(BackendError::Device(format!("a decode graph failed: {e}")));
        }
        // The step's own event when it is still known, else the whole stream.
        let waited = {
            let events = self.inner.events.lock().expect("events lock");
            events
                .iter()
                .find(|(n, _)| *n == sampling.step)
                .map(|(_, e)| e.synchronize())
        };
        match waited {
            Some(r) => r.map_err(|e| dev_err("waiting for a step", e))?,
            None => self
                .stream()
                .synchronize()
                .map_err(|e| dev_err("waiting for the GPU", e))?,
        }
        sampling.read(out);
        Ok(())
    }

    fn from_host(&self, data: &[f32], rows: usize, out: &mut CudaTensor) -> Result<()> {
        if data.len() != rows * out.cols {
            return Err(shape_err(
                "from_host",
                format!("{} values for {rows} rows of {}", data.len(), out.cols),
            ));
        }
        out.set_rows("from_host", rows, out.cols)?;
        if data.is_empty() {
            return Ok(());
        }
        self.stream()
            .memcpy_htod(data, &mut out.data.slice_mut(..data.len()))
            .map_err(|e| dev_err("copying to the device", e))?;
        Ok(())
    }

    fn to_host(&self, x: &CudaTensor, out: &mut Vec<f32>) -> Result<(usize, usize)> {
        out.clear();
        out.resize(x.len(), 0.0);
        if !out.is_empty() {
            self.stream()
                .memcpy_dtoh(&x.data.slice(..x.len()), &mut out[..])
                .map_err(|e| dev_err("copying to the host", e))?;
            self.stream()
                .synchronize()
                .map_err(|e| dev_err("copying to the host", e))?;
        }
        Ok((x.rows, x.cols))
    }

    fn run_step<E: Send>(
        &self,
        opts: StepOptions,
        step: impl FnOnce() -> std::result::Result<(), E> + Send,
    ) -> std::result::Result<(), E> {
        let n = self.inner.steps.fetch_add(1, Ordering::Relaxed);
        self.inner.current.store(n, Ordering::Relaxed);
        let graphed = opts
            .graph_tokens
            .filter(|_| self.inner.graphs_enabled.load(Ordering::Relaxed));
        let _current = ResetOnDrop(&self.inner.current);
        match graphed {
            None => step()?,
            Some(tokens) => {
                let mut graphs = self.inner.graphs.lock().expect("graphs lock");
                match graphs.run(self.l(), tokens, step) {
                    Ok(r) => {
                        r?;
                    }
                    Err(e) => {
                        // A graph that cannot be captured or launched leaves the stream's work
                        // undone: later steps run eagerly, and this one reports through the
                        // next read, which finds the stream in error.
                        self.inner.graphs_enabled.store(false, Ordering::Relaxed);
                        *self.inner.graph_error.lock().expect("graph error lock") =
                            Some(e.to_string());
                    }
                }
            }
        }
        // A failed event record surfaces in `read_sampled` as a stream wait instead.
        let _ = self.record_step_event(n);
        Ok(())
    }
}
