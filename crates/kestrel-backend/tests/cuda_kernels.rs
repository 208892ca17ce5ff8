//! The CUDA kernels compile: NVRTC (the library alone, no GPU needed) compiles `kernels.cu`
//! for every architecture the backend supports and every kernel is in the PTX. CI runs this
//! with the `nvidia-cuda-nvrtc` wheel's library (`scripts/fetch-nvrtc.sh`) and
//! `KESTREL_REQUIRE_NVRTC=1`, so a syntax error in a kernel fails CI; elsewhere, without the
//! library, it prints why it is skipped.
#![cfg(feature = "cuda")]

use kestrel_backend::cuda::kernels::{compile, nvrtc_present, Kernel};

#[test]
fn every_kernel_compiles_for_ampere_hopper_and_blackwell() {
    if !nvrtc_present() {
        if std::env::var_os("KESTREL_REQUIRE_NVRTC").is_some_and(|v| v == "1") {
            panic!("KESTREL_REQUIRE_NVRTC=1 but libnvrtc.so.13 is not on the library path");
        }
        eprintln!("skipped: no NVRTC library (run scripts/fetch-nvrtc.sh and set LD_LIBRARY_PATH)");
        return;
    }
    for (major, minor) in [(8, 0), (8, 9), (9, 0), (10, 0)] {
        let ptx = compile(major, minor)
            .unwrap_or_else(|e| panic!("sm_{major}{minor}: {e}"))
            .to_src();
        assert!(
            ptx.contains(&format!(".target sm_{major}{minor}")),
            "sm_{major}{minor}: PTX for another target"
        );
        for k in Kernel::ALL {
            assert!(
                ptx.contains(&format!(".entry {}(", k.name())),
                "sm_{major}{minor}: kernel `{}` missing from the PTX",
                k.name()
            );
        }
    }
}
