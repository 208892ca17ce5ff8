//! CUDA graphs for decode steps. Every decode step is captured from the stream (capture only
//! records: nothing runs) while the [`Launcher`] fingerprints its ops; the captured graph is
//! then either dropped in favour of the executable graph recorded earlier under the same
//! fingerprint, or instantiated and kept. Either way one `cuGraphLaunch` runs the whole step,
//! without the per-kernel launch gaps of eager execution. Prefill steps run eagerly.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use cudarc::driver::result::{graph, stream as raw_stream};
use cudarc::driver::sys::{CUgraphExec, CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaStream;

use super::launch::Launcher;
use crate::error::{BackendError, Result};

fn dev_err(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("{what}: {e}"))
}

/// An instantiated graph.
struct Exec(CUgraphExec);

// SAFETY: an executable graph may be launched from any thread; launches are serialized by the
// `Graphs` owner's lock.
unsafe impl Send for Exec {}

impl Drop for Exec {
    fn drop(&mut self) {
        // SAFETY: instantiated by `Graphs::run` and destroyed once, here.
        let _ = unsafe { graph::exec_destroy(self.0) };
    }
}

/// Executable graphs by (tokens, fingerprint).
#[derive(Default)]
pub struct Graphs {
    execs: HashMap<(usize, u64), Exec>,
}

/// How a graphed step ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// A graph recorded earlier ran it.
    Hit,
    /// It was recorded into a new graph, which ran it.
    Recorded,
}

impl Graphs {
    pub fn len(&self) -> usize {
        self.execs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.execs.is_empty()
    }

    /// Captures `step` (which issues its ops through `launcher`), then launches the graph for
    /// its fingerprint. `step`'s error ends the capture and is returned as the inner result.
    pub fn run<E>(
        &mut self,
        launcher: &Launcher,
        tokens: usize,
        step: impl FnOnce() -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<Replay, E>> {
        let s: &CudaStream = &launcher.stream;
        let cu = s.cu_stream();
        s.context()
            .bind_to_thread()
            .map_err(|e| dev_err("binding the GPU context", e))?;
        // SAFETY: a live stream of the bound context; the capture is ended below on every path.
        unsafe {
            raw_stream::begin_capture(cu, CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        }
        .map_err(|e| dev_err("starting a graph capture", e))?;
        launcher.begin_fingerprint();
        let r = step();
        let fp = launcher.end_fingerprint();
        // SAFETY: the capture begun above.
        let captured = unsafe { raw_stream::end_capture(cu) };
        let g = match captured {
            Ok(g) => g,
            Err(e) => return Err(dev_err("capturing a decode step", e)),
        };
        let destroy = |g: cudarc::driver::sys::CUgraph| {
            if !g.is_null() {
                // SAFETY: the graph returned by the capture, destroyed once.
                let _ = unsafe { graph::destroy(g) };
            }
        };
        if let Err(e) = r {
            destroy(g);
            return Ok(Err(e));
        }
        if g.is_null() {
            return Err(BackendError::Device(
                "the decode step's capture was empty".into(),
            ));
        }
        let key = (tokens, fp);
        let replay = match self.execs.entry(key) {
            Entry::Occupied(_) => {
                destroy(g);
                Replay::Hit
            }
            Entry::Vacant(slot) => {
                // SAFETY: a valid captured graph; the exec is owned by `Exec`.
                let exec = unsafe { graph::instantiate(g, CUgraphInstantiate_flags(0)) };
                destroy(g);
                let exec = exec.map_err(|e| dev_err("instantiating a decode graph", e))?;
                slot.insert(Exec(exec));
                Replay::Recorded
            }
        };
        let exec = &self.execs[&key];
        // SAFETY: a live exec and stream.
        unsafe { graph::launch(exec.0, cu) }.map_err(|e| dev_err("launching a decode graph", e))?;
        Ok(Ok(replay))
    }
}
