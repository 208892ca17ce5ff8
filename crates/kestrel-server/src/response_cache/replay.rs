//! A hit, answered: each cached choice's engine events (its tokens, then how it finished) go
//! through a fresh output processor and the same driver as a live answer, so the response has
//! exactly the shapes a live one has: the role chunk, reasoning and content deltas, tool-call
//! deltas with fresh ids, a stop string cut where it was, the finish chunk, and the usage of the
//! original generation. Nothing reaches the engine.

use futures::stream::{self, StreamExt};
use tokio::sync::mpsc;

use super::entry::CachedResponse;
use crate::generation::{drive, Choice, ChoiceEvent};
use crate::output::OutputProcessor;
use crate::stream::UsageTally;

/// The driver's event channel and the usage tally for `hit`, an entry holding `prompts.len() × n`
/// choices (checked when it was decoded); `processor(prompt)` builds each choice's output
/// processor, as for [`crate::submit::submit`].
pub fn replay(
    response_id: &str,
    prompts: &[Vec<u32>],
    n: usize,
    hit: CachedResponse,
    mut processor: impl FnMut(&[u32]) -> OutputProcessor,
) -> (mpsc::Receiver<ChoiceEvent>, UsageTally) {
    let choices = hit
        .choices
        .into_iter()
        .enumerate()
        .map(|(index, cached)| Choice {
            request_id: format!("{response_id}-{index}"),
            events: stream::iter(cached.events()).boxed(),
            processor: processor(&prompts[index / n]),
        })
        .collect();
    let tally = UsageTally::new(prompts.iter().map(Vec::len).collect(), n);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive(choices, None, tx, None));
    (rx, tally)
}
