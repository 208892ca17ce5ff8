//! Records the engine's events of an answer being generated and stores them when it ends
//! normally. The driver (`generation::drive`) feeds it every event it processes, tells it when a
//! choice was aborted (never an answer), and calls [`Recorder::complete`] only when every choice
//! finished and the client is still connected; an engine error or a disconnect drops the
//! recorder, and nothing is stored.

use std::sync::Arc;

use kestrel_engine::EngineEvent;

use super::entry::{CachedChoice, CachedResponse};
use super::key::CacheKey;
use super::ResponseCache;

pub struct Recorder {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    choices: Vec<CachedChoice>,
    discarded: bool,
}

impl Recorder {
    pub fn new(cache: Arc<ResponseCache>, key: CacheKey, num_choices: usize) -> Self {
        Self {
            cache,
            key,
            choices: vec![CachedChoice::default(); num_choices],
            discarded: false,
        }
    }

    /// One engine event of choice `index`.
    pub fn observe(&mut self, index: usize, event: &EngineEvent) {
        if let Some(choice) = self.choices.get_mut(index) {
            choice.push(event);
        }
    }

    /// Something ended this answer other than the model (an abort): it is not stored.
    pub fn discard(&mut self) {
        self.discarded = true;
    }

    /// Stores the answer (failures are the cache's to count and log).
    pub async fn complete(self) {
        if self.discarded {
            return;
        }
        let entry = CachedResponse::new(self.choices);
        self.cache.put(&self.key, &entry).await;
    }
}
