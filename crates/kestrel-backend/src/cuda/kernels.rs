//! The CUDA kernels: `kernels.cu` compiled by NVRTC at start-up for the GPU's own
//! architecture (`sm_XY` from its compute capability), loaded as one module, and looked up by
//! name into a table indexed by [`Kernel`]. [`compile`] needs only the NVRTC library, not a
//! GPU, so CI compiles every kernel with the `nvidia-cuda-nvrtc` wheel's library.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{BackendError, Result};

/// The kernels' source.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every kernel of [`SOURCE`], in the order of [`Kernels::funcs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Embedding,
    RmsNorm,
    AddBias,
    RopeNeox,
    WriteKv,
    CopyKv,
    PagedAttention,
    SiluMul,
    AddAssign,
    GatherRows,
    ResolvePlaceholders,
    CastF32,
    SampleRows,
}

impl Kernel {
    pub const ALL: [Kernel; 13] = [
        Kernel::Embedding,
        Kernel::RmsNorm,
        Kernel::AddBias,
        Kernel::RopeNeox,
        Kernel::WriteKv,
        Kernel::CopyKv,
        Kernel::PagedAttention,
        Kernel::SiluMul,
        Kernel::AddAssign,
        Kernel::GatherRows,
        Kernel::ResolvePlaceholders,
        Kernel::CastF32,
        Kernel::SampleRows,
    ];

    /// The `extern "C"` name in [`SOURCE`].
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Embedding => "embedding",
            Kernel::RmsNorm => "rms_norm",
            Kernel::AddBias => "add_bias",
            Kernel::RopeNeox => "rope_neox",
            Kernel::WriteKv => "write_kv",
            Kernel::CopyKv => "copy_kv",
            Kernel::PagedAttention => "paged_attention",
            Kernel::SiluMul => "silu_mul",
            Kernel::AddAssign => "add_assign",
            Kernel::GatherRows => "gather_rows",
            Kernel::ResolvePlaceholders => "resolve_placeholders",
            Kernel::CastF32 => "cast_f32",
            Kernel::SampleRows => "sample_rows",
        }
    }
}

/// Whether the NVRTC library can be loaded (it is opened at run time, never linked).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Compiles [`SOURCE`] to PTX for `sm_{major}{minor}`.
pub fn compile(major: i32, minor: i32) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(BackendError::Device(
            "the NVRTC library (libnvrtc.so.13) is not on the library path: install the CUDA \
             toolkit or the `nvidia-cuda-nvrtc` wheel and add its lib folder to LD_LIBRARY_PATH"
                .into(),
        ));
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture=compute_{major}{minor}"),
            "--std=c++17".into(),
        ],
        name: Some("kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(SOURCE, opts)
        .map_err(|e| BackendError::Device(format!("NVRTC failed to compile the kernels: {e:?}")))
}

/// The loaded module's functions, indexed by [`Kernel`].
pub struct Kernels {
    funcs: Vec<CudaFunction>,
}

impl Kernels {
    /// Compiles for the context's device and loads every kernel.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| BackendError::Device(format!("compute capability: {e}")))?;
        let ptx = compile(major, minor)?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| BackendError::Device(format!("loading the kernels' PTX: {e}")))?;
        let funcs = Kernel::ALL
            .iter()
            .map(|k| {
                module.load_function(k.name()).map_err(|e| {
                    BackendError::Device(format!("kernel `{}` not in the module: {e}", k.name()))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { funcs })
    }

    pub fn get(&self, k: Kernel) -> &CudaFunction {
        &self.funcs[k as usize]
    }
}
