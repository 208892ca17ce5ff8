//! Which instruction set the CPU kernels use, decided once per process.
//!
//! The fastest set this CPU supports is picked at first use. `KESTREL_CPU_ISA` narrows it:
//! `scalar` forces the portable kernels, `avx2` the AVX2 ones on an AVX-512 machine (tests and
//! benchmarks run every path this way), `avx512` asks for AVX-512 (falling back, with a
//! warning, where the CPU lacks it). Each level includes the ones below it: an AVX-512 machine
//! runs the AVX2 kernels of every op that has no AVX-512 version.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust; the reference every SIMD kernel is tested against.
    Scalar,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX2's set plus AVX-512 F, BW, VL and VNNI (the interleaved quantized kernels).
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2+fma+f16c",
            Isa::Avx512 => "avx512f+bw+vl+vnni",
        }
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Isa::Avx512;
        }
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
            Some("avx2") if best >= Isa::Avx2 => Isa::Avx2,
            Some("avx512") if best >= Isa::Avx512 => Isa::Avx512,
            Some(other) => {
                eprintln!(
                    "warning: KESTREL_CPU_ISA={other} is not available here (auto|avx512|avx2|scalar); using {}",
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
    isa() >= Isa::Avx2
}

/// Whether the AVX-512 kernels run.
#[inline]
pub fn avx512() -> bool {
    isa() >= Isa::Avx512
}

/// How far ahead of the read front the matrix-vector (decode) kernels prefetch their weight
/// stream. Decode reads every weight once per token; with only the hardware prefetchers a
/// thread keeps too few cache-line misses in flight and a quantized matvec on a 2-core EPYC
/// reached about half of the machine's read bandwidth. Measured with
/// `examples/matmul_bench.rs` (`q8_0 1 65536 2048`): 0 B → 7.6 GB/s, 4 KiB → 10.2, 8 KiB → 14.1,
/// 12 KiB → 12.8. Prefetches past the end of a buffer are harmless hints (they never fault).
pub const STREAM_PREFETCH_BYTES: usize = 8192;
