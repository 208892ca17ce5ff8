//! Reusable buffers of the CPU kernels, so that a step allocates nothing once warm.
//!
//! - [`StepScratch`] holds an op's own buffers (quantized or packed activations, task lists),
//!   one set per backend, taken by the op for its duration. They grow to the largest step seen
//!   and stay.
//! - [`with_task_scratch`] lends each pool thread its own buffers for the tasks of a parallel
//!   loop (a GEMM task's widened weights, an attention task's scores). A task takes them out of
//!   the thread-local slot and puts them back, so even a nested use (a thread stealing another
//!   task while one is open) only costs a fresh set, never a double borrow.

use std::cell::Cell;
use std::ops::Range;

/// Buffers of one op, owned by the backend.
#[derive(Default)]
pub(super) struct StepScratch {
    /// Activation rows converted to a weight's dot-product format.
    pub acts: Vec<u8>,
    /// Activations packed for the GEMM micro-kernel.
    pub packed: Vec<f32>,
    /// `(weight, first row, rows)` GEMM tasks.
    pub tasks: Vec<(usize, usize, usize)>,
    /// `(sequence, tokens)` attention query tiles.
    pub tiles: Vec<(usize, Range<usize>)>,
    /// Tokens whose attention takes the per-token pass.
    pub row_tokens: Vec<usize>,
    /// Activations of the interleaved (AVX-512 VNNI) quantized kernels.
    pub interleaved: super::quant::vnni::Buffers,
}

/// Buffers of one parallel task, one set per thread.
#[derive(Default)]
pub(super) struct TaskScratch {
    /// A GEMM task's widened weight slice and one row being widened.
    pub bpack: Vec<f32>,
    pub widened: Vec<f32>,
    /// A GEMM task's output tiles, as f32 lanes of `__m256` vectors.
    pub acc: Vec<f32>,
    /// Per-token attention: scores and the query rounded through f16.
    pub scores: Vec<f32>,
    pub q16: Vec<f32>,
    /// Tiled attention.
    #[cfg(target_arch = "x86_64")]
    pub tile: super::attention_tiled::TileScratch,
    /// Sampling of one row.
    pub sample: super::sampling::RowScratch,
}

thread_local! {
    static TASK: Cell<Option<Box<TaskScratch>>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's task buffers.
pub(super) fn with_task_scratch<R>(f: impl FnOnce(&mut TaskScratch) -> R) -> R {
    let mut s = take_task_scratch();
    let r = f(&mut s);
    put_task_scratch(s);
    r
}

/// Runs `f` on every thread of the pool with its task buffers, so that the buffers a step needs
/// are grown at start-up rather than by whichever thread first steals a big task.
pub(super) fn on_every_thread(f: impl Fn(&mut TaskScratch) + Sync) {
    rayon::broadcast(|_| with_task_scratch(&f));
}

/// This thread's task buffers (a fresh set if they are out); give them back with
/// [`put_task_scratch`]. For kernels whose body must not sit in a closure (a closure does not
/// inherit its function's `target_feature`s).
pub(super) fn take_task_scratch() -> Box<TaskScratch> {
    TASK.with(|c| c.take()).unwrap_or_default()
}

pub(super) fn put_task_scratch(s: Box<TaskScratch>) {
    TASK.with(|c| c.set(Some(s)));
}

/// The first `n` elements of `v`, grown (zero-filled) when it is shorter. The contents are
/// whatever the last user left.
pub(super) fn prefix(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}
