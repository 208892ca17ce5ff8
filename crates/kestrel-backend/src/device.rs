//! Which device runs the model, chosen at run time (`--device cpu|cuda|auto`).
//!
//! The engine and the model are generic over [`Backend`]; [`with_backend`] opens the chosen
//! device and hands its backend to a [`BackendVisitor`], so every compiled backend gets its own
//! monomorphized engine and `cfg(feature = "cuda")` never leaves this crate. Without the `cuda`
//! feature, asking for CUDA is an error that says how to build with it; `auto` picks the best
//! device that is compiled in and present, and says so in the log line of the caller.

use std::fmt;
use std::str::FromStr;

use crate::cpu::CpuBackend;
#[cfg(not(feature = "cuda"))]
use crate::error::BackendError;
use crate::error::Result;
use crate::Backend;

/// A kind of compute device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }

    /// Whether its memory is separate from the host's (weights and KV are sized from its own).
    pub fn is_accelerator(self) -> bool {
        self != DeviceKind::Cpu
    }
}

/// What `--device` asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The best device compiled in and present.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => Err(format!("unknown device {other:?} (auto, cpu or cuda)")),
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceChoice::Auto => "auto",
            DeviceChoice::Cpu => "cpu",
            DeviceChoice::Cuda => "cuda",
        })
    }
}

/// Memory of a device in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryInfo {
    pub total: usize,
    /// Available now (for the CPU: the kernel's `MemAvailable`).
    pub free: usize,
}

/// Code that runs on whichever backend was chosen: [`with_backend`] calls `visit` with it.
pub trait BackendVisitor {
    type Output;
    fn visit<B: Backend + Clone>(self, backend: B) -> Self::Output;
}

/// The devices this build can use, best first.
pub fn compiled_devices() -> &'static [DeviceKind] {
    #[cfg(feature = "cuda")]
    return &[DeviceKind::Cuda, DeviceKind::Cpu];
    #[cfg(not(feature = "cuda"))]
    &[DeviceKind::Cpu]
}

/// Opens the device `choice` names and runs `visitor` on its backend. `Auto` falls back to the
/// CPU when no accelerator is compiled in or present.
pub fn with_backend<V: BackendVisitor>(choice: DeviceChoice, visitor: V) -> Result<V::Output> {
    match choice {
        DeviceChoice::Cpu => Ok(visitor.visit(CpuBackend::new())),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Ok(visitor.visit(crate::cuda::CudaBackend::open(0)?)),
        #[cfg(feature = "cuda")]
        DeviceChoice::Auto => match crate::cuda::CudaBackend::open(0) {
            Ok(b) => Ok(visitor.visit(b)),
            Err(e) => {
                *FALLBACK.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                Ok(visitor.visit(CpuBackend::new()))
            }
        },
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Auto => Ok(visitor.visit(CpuBackend::new())),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda => Err(BackendError::Device(
            "this build of kestrel has no CUDA support; rebuild with `--features cuda`".into(),
        )),
    }
}

/// Why `--device auto` fell back to the CPU in a build with an accelerator compiled in.
static FALLBACK: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The reason the last `auto` choice fell back to the CPU, for the caller's log line; `None`
/// when it did not (or no accelerator is compiled in).
pub fn fallback_reason() -> Option<String> {
    FALLBACK.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Describe;
    impl BackendVisitor for Describe {
        type Output = DeviceKind;
        fn visit<B: Backend + Clone>(self, backend: B) -> DeviceKind {
            backend.kind()
        }
    }

    #[test]
    fn choices_parse_and_resolve() {
        assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda));
        assert!("tpu".parse::<DeviceChoice>().unwrap_err().contains("tpu"));
        assert_eq!(
            with_backend(DeviceChoice::Cpu, Describe).unwrap(),
            DeviceKind::Cpu
        );
        assert_eq!(
            with_backend(DeviceChoice::Auto, Describe).unwrap(),
            *compiled_devices()
                .first()
                .expect("the CPU is always compiled")
        );
        if !compiled_devices().contains(&DeviceKind::Cuda) {
            let err = with_backend(DeviceChoice::Cuda, Describe)
                .unwrap_err()
                .to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
