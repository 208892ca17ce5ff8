//! Which instruction set the CPU kernels use, decided once per process.
//!
//! The fastest set this CPU supports is picked at first use; `KESTREL_CPU_ISA=scalar` forces
//! the portable kernels (tests use it to run the model parity checks on every path) and
//! `KESTREL_CPU_ISA=avx2` requires AVX2 (falling back to scalar, with a warning, when absent).

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust; the reference every SIMD kernel is tested against.
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
        }
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        return Isa::Avx2;
    }
    Isa::Scalar
}

/// The kernels' instruction set: detected, then narrowed by `KESTREL_CPU_ISA`.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detect();
        match std::env::var("KESTREL_CPU_ISA").ok().as_deref() {
            None | Some("") | Some("auto") => best,
            Some("scalar") => Isa::Scalar,
            Some("avx2") if best == Isa::Avx2 => Isa::Avx2,
            Some(other) => {
                eprintln!(
                    "warning: KESTREL_CPU_ISA={other} is not available here (auto|avx2|scalar); using {}",
                    best.name()
                );
                best
            }
        }
    })
}

/// Whether the AVX2 kernels run (the CPU has them and they are not switched off).
#[inline]
pub fn avx2() -> bool {
    isa() == Isa::Avx2
}

/// How far ahead of the read front the matrix-vector (decode) kernels prefetch their weight
/// stream. Decode reads every weight once per token; with only the hardware prefetchers a
/// thread keeps too few cache-line misses in flight and a quantized matvec on a 2-core EPYC
/// reached about half of the machine's read bandwidth. Measured with
/// `examples/matmul_bench.rs` (`q8_0 1 65536 2048`): 0 B → 7.6 GB/s, 4 KiB → 10.2, 8 KiB → 14.1,
/// 12 KiB → 12.8. Prefetches past the end of a buffer are harmless hints (they never fault).
pub const STREAM_PREFETCH_BYTES: usize = 8192;
