//! The one submit path of both endpoints: every (prompt, choice) pair becomes one engine request
//! with its own output processor, choice `index = prompt * n + i` (vLLM's layout for batched
//! completions; chat has one prompt), and one task drives them all
//! ([`crate::generation::drive`]). Every prompt's length is checked before anything is
//! submitted; a refusal midway (a full queue) drops the streams already submitted, which aborts
//! their sequences.

use kestrel_engine::{EngineRequest, OutputConstraint, SubmitError};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::generation::{drive, Choice, ChoiceEvent};
use crate::output::OutputProcessor;
use crate::response_cache::Recorder;
use crate::state::Model;
use crate::stream::UsageTally;
use crate::validate::GenerationPlan;

/// Submits `gen.n` choices of each prompt; `processor(prompt)` builds each choice's output
/// processor. `cache_salt` is the salt the engine keys the prefix cache with (the request's, with
/// the API key folded in when the server salts by key); `recorder` stores the answer in the
/// response cache; `constraints[prompt]` is the prompt's compiled structured output (each choice
/// gets its own copy of the grammar's state). Returns the driver's event channel and the usage
/// tally of the response.
#[allow(clippy::too_many_arguments)]
pub fn submit(
    model: &Model,
    response_id: &str,
    prompts: &[Vec<u32>],
    constraints: &[OutputConstraint],
    gen: &GenerationPlan,
    cache_salt: Option<String>,
    recorder: Option<Recorder>,
    mut processor: impl FnMut(&[u32]) -> OutputProcessor,
) -> Result<(mpsc::Receiver<ChoiceEvent>, UsageTally), ApiError> {
    let max_tokens = prompts
        .iter()
        .map(|p| gen.max_tokens_for(p.len(), model.max_model_len))
        .collect::<Result<Vec<_>, _>>()?;
    let stop_token_ids = gen.engine_stop_ids(&model.eos_token_ids);
    let mut choices = Vec::with_capacity(prompts.len() * gen.n);
    for (p, prompt_ids) in prompts.iter().enumerate() {
        for i in 0..gen.n {
            let request_id = format!("{response_id}-{}", p * gen.n + i);
            let stream = model
                .engine
                .submit(EngineRequest {
                    request_id: request_id.clone(),
                    prompt_ids: prompt_ids.clone(),
                    sampling: gen.sampling_for(i),
                    max_tokens: max_tokens[p],
                    min_tokens: gen.min_tokens,
                    stop_token_ids: stop_token_ids.clone(),
                    cache_salt: cache_salt.clone(),
                    constraint: constraints.get(p).cloned().unwrap_or_default(),
                })
                .map_err(|e| submit_error(e, gen, prompt_ids.len(), model.max_model_len))?;
            choices.push(Choice::live(request_id, stream, processor(prompt_ids)));
        }
    }
    let tally = UsageTally::new(prompts.iter().map(Vec::len).collect(), gen.n);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive(choices, Some(model.engine.clone()), tx, recorder));
    Ok((rx, tally))
}

/// The engine's refusal as an HTTP error; a prompt that does not fit names the request field to
/// change (the engine does not know the request's field names).
fn submit_error(
    e: SubmitError,
    gen: &GenerationPlan,
    prompt_len: usize,
    max_model_len: usize,
) -> ApiError {
    match e {
        SubmitError::QueueFull { retry_after_secs } => ApiError::Overloaded {
            message: e.to_string(),
            retry_after_secs,
        },
        SubmitError::TooLong { .. } => ApiError::BadRequest {
            message: e.to_string(),
            param: Some(gen.too_long_param(prompt_len, max_model_len).into()),
        },
        SubmitError::Invalid(message) => ApiError::BadRequest {
            message,
            param: None,
        },
        SubmitError::EngineDead => ApiError::Unavailable(e.to_string()),
    }
}
