//! The response cache's part in one request, decided between rendering the prompt and
//! submitting it: whether the request may use the cache at all, its key, the lookup, and what
//! the handler gets back: a hit to replay, or a recorder to hand the engine's answer to, and the
//! `X-Kestrel-Cache` value for the response.
//!
//! Only a request whose answer is a function of it is looked up or stored: greedy or seeded
//! sampling (the engine runs those on batch-invariant kernels, so they give the same tokens in
//! any batch) and exactly one choice. A sampled request without a seed is a `bypass`: serving
//! one sampled answer to every caller would turn a distribution into a constant.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

use super::directives::CacheDirectives;
use super::entry::CachedResponse;
use super::key::{CacheKey, ChatFields, Endpoint, KeyInput, Tenant};
use super::recorder::Recorder;
use crate::state::{AppState, Model};
use crate::validate::GenerationPlan;

pub static X_KESTREL_CACHE: HeaderName = HeaderName::from_static("x-kestrel-cache");

/// What the cache did for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Answered from the cache.
    Hit,
    /// Looked up, not found (or the store failed): answered by the model.
    Miss,
    /// Not looked up: the answer is not a function of the request, or the request opted out.
    Bypass,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// The checked request, as the key needs it.
#[derive(Clone, Copy, Debug)]
pub struct LookupRequest<'a> {
    pub endpoint: Endpoint,
    pub prompts: &'a [Vec<u32>],
    pub generation: &'a GenerationPlan,
    pub chat: Option<ChatFields<'a>>,
}

/// The outcome of [`look_up`].
#[derive(Default)]
pub struct Lookup {
    /// `None` when the server has no response cache (no header is sent).
    status: Option<CacheStatus>,
    hit: Option<CachedResponse>,
    recorder: Option<Recorder>,
}

impl Lookup {
    pub fn status(&self) -> Option<CacheStatus> {
        self.status
    }

    /// The cached answer to replay.
    pub fn take_hit(&mut self) -> Option<CachedResponse> {
        self.hit.take()
    }

    /// What records the engine's answer for the cache.
    pub fn take_recorder(&mut self) -> Option<Recorder> {
        self.recorder.take()
    }

    /// Adds `X-Kestrel-Cache` to the response.
    pub fn mark(&self, response: &mut Response) {
        if let Some(status) = self.status {
            response.headers_mut().insert(
                X_KESTREL_CACHE.clone(),
                HeaderValue::from_static(status.as_str()),
            );
        }
    }
}

pub async fn look_up(
    state: &AppState,
    model: &Model,
    directives: &CacheDirectives,
    request: LookupRequest<'_>,
) -> Lookup {
    let Some(cache) = state.response_cache.clone() else {
        return Lookup::default();
    };
    let gen = request.generation;
    let num_choices = request.prompts.len() * gen.n;
    let usable = gen.cache
        && (directives.read || directives.write)
        && gen.sampling.is_deterministic()
        && num_choices == 1;
    // A prompt that does not fit is refused by the submit path with the field to blame.
    let max_tokens: Option<Vec<usize>> = request
        .prompts
        .iter()
        .map(|p| gen.max_tokens_for(p.len(), model.max_model_len).ok())
        .collect();
    let (Some(identity), Some(max_tokens), true) = (&model.identity, max_tokens, usable) else {
        cache.metrics.bypasses.inc();
        return Lookup {
            status: Some(CacheStatus::Bypass),
            ..Lookup::default()
        };
    };
    let engine_stop_ids = gen.engine_stop_ids(&model.eos_token_ids);
    let key = CacheKey::of(&KeyInput {
        model: identity,
        endpoint: request.endpoint,
        prompts: request.prompts,
        max_tokens: &max_tokens,
        engine_stop_ids: &engine_stop_ids,
        generation: gen,
        chat: request.chat,
        tenant: Tenant {
            api_key: directives.api_key.as_deref(),
            cache_salt: gen.cache_salt.as_deref(),
        },
    });
    let hit = if directives.read {
        cache
            .get(&key, num_choices, model.tokenizer.vocab_size())
            .await
    } else {
        cache.metrics.bypasses.inc();
        None
    };
    let status = match (&hit, directives.read) {
        (Some(_), _) => CacheStatus::Hit,
        (None, true) => CacheStatus::Miss,
        (None, false) => CacheStatus::Bypass,
    };
    let recorder = (hit.is_none() && directives.write)
        .then(|| Recorder::new(Arc::clone(&cache), key, num_choices));
    Lookup {
        status: Some(status),
        hit,
        recorder,
    }
}
