//! `POST /v1/completions`: raw prompts (text or token ids, possibly a batch), no template,
//! no reasoning split. Choice `i` of prompt `p` has index `p * n + i`, as in vLLM.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use kestrel_engine::{EngineRequest, TokenLogprobs};
use kestrel_protocol::{
    parse_json, CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse,
    PromptInput, Usage,
};
use kestrel_text::Tokenizer;
use tokio::sync::mpsc;

use crate::chat::{sse_error, sse_json, token_text};
use crate::error::ApiError;
use crate::generation::{drive, Choice, ChoiceEvent};
use crate::output::OutputProcessor;
use crate::state::{unix_now, AppState};
use crate::validate::validate_completion;
use crate::{body_bytes, random_id};

pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match complete(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn complete(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: CompletionRequest = parse_json(&body)?;
    let model = state.model()?;
    let plan = validate_completion(&req, &model, &state.config)?;
    let inputs = req.prompt.into_inputs();
    if inputs.is_empty() {
        return Err(ApiError::bad_request(
            "prompt",
            "`prompt` must not be empty",
        ));
    }
    if inputs.len() * plan.generation.n > state.config.max_n * 4 {
        return Err(ApiError::bad_request(
            "prompt",
            "too many prompts × n in one request",
        ));
    }
    let tokenizer = model.tokenizer.clone();
    let vocab_size = tokenizer.vocab_size();
    let prompts: Vec<Vec<u32>> = tokio::task::spawn_blocking(move || {
        inputs
            .into_iter()
            .map(|input| match input {
                PromptInput::Text(text) => Ok(tokenizer.encode(&text, true)?),
                PromptInput::Ids(ids) => match ids.iter().find(|&&id| id as usize >= vocab_size) {
                    Some(id) => Err(ApiError::bad_request(
                        "prompt",
                        format!("token id {id} is out of the vocabulary ({vocab_size})"),
                    )),
                    None => Ok(ids),
                },
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenization task failed: {e}")))??;

    let gen = &plan.generation;
    let id = format!("cmpl-{}", random_id());
    let mut choices = Vec::new();
    let mut prompt_tokens = 0;
    for (p, prompt_ids) in prompts.iter().enumerate() {
        let max_tokens = gen.max_tokens_for(prompt_ids.len(), model.max_model_len)?;
        prompt_tokens += prompt_ids.len();
        for i in 0..gen.n {
            let index = p * gen.n + i;
            let request_id = format!("{id}-{index}");
            let stream = model.engine.submit(EngineRequest {
                request_id: request_id.clone(),
                prompt_ids: prompt_ids.clone(),
                sampling: gen.sampling_for(i),
                max_tokens,
                min_tokens: gen.min_tokens,
                stop_token_ids: gen.engine_stop_ids(&model.eos_token_ids),
                cache_salt: None,
            })?;
            let processor = OutputProcessor::new(
                model.tokenizer.clone(),
                gen.skip_special_tokens,
                &gen.stop,
                gen.include_stop_str_in_output,
                None,
                None,
            );
            choices.push(Choice {
                request_id,
                stream,
                processor,
            });
        }
    }
    let num_choices = choices.len();
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive(choices, model.engine.clone(), tx));
    let format = Format {
        id,
        created: unix_now(),
        model_name: state.config.served_model_name.clone(),
        logprobs: plan.logprobs.is_some(),
        tokenizer: model.tokenizer.clone(),
    };
    if gen.stream {
        Ok(stream_completion(format, gen.include_usage, prompt_tokens, rx).into_response())
    } else {
        collect_completion(format, num_choices, prompt_tokens, rx)
            .await
            .map(|r| axum::Json(r).into_response())
    }
}

struct Format {
    id: String,
    created: u64,
    model_name: String,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
}

impl Format {
    fn response(&self, choices: Vec<CompletionChoice>, usage: Option<Usage>) -> CompletionResponse {
        CompletionResponse {
            id: self.id.clone(),
            object: "text_completion".into(),
            created: self.created,
            model: self.model_name.clone(),
            choices,
            usage,
        }
    }

    /// Legacy parallel-array logprobs; `offset` is where this text starts in the choice.
    fn logprobs(
        &self,
        entries: &[(u32, TokenLogprobs)],
        offset: &mut usize,
    ) -> Option<CompletionLogprobs> {
        if !self.logprobs {
            return None;
        }
        let mut out = CompletionLogprobs::default();
        for (id, lp) in entries {
            let token = token_text(&self.tokenizer, *id);
            out.text_offset.push(*offset);
            *offset += token.len();
            out.tokens.push(token);
            out.token_logprobs.push(Some(lp.logprob));
            out.top_logprobs.push(Some(
                lp.top
                    .iter()
                    .map(|&(t, l)| (token_text(&self.tokenizer, t), serde_json::Value::from(l)))
                    .collect(),
            ));
        }
        Some(out)
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize, cached_tokens: usize) -> Usage {
    Usage::new(prompt_tokens, completion_tokens, cached_tokens)
}

async fn collect_completion(
    format: Format,
    n: usize,
    prompt_tokens: usize,
    mut rx: mpsc::Receiver<ChoiceEvent>,
) -> Result<CompletionResponse, ApiError> {
    let mut texts = vec![String::new(); n];
    let mut logprobs: Vec<Vec<(u32, TokenLogprobs)>> = vec![Vec::new(); n];
    let mut finishes = vec![None; n];
    while let Some(event) = rx.recv().await {
        match event {
            ChoiceEvent::Piece(i, p) => {
                texts[i].push_str(&p.content);
                logprobs[i].extend(p.logprobs);
            }
            ChoiceEvent::Done(i, f) => finishes[i] = Some(f),
            ChoiceEvent::Error(message) => return Err(ApiError::Internal(message)),
        }
    }
    let (mut completion_tokens, mut cached) = (0, 0);
    let mut choices = Vec::with_capacity(n);
    for (index, ((text, lps), finish)) in texts.into_iter().zip(logprobs).zip(finishes).enumerate()
    {
        let finish =
            finish.ok_or_else(|| ApiError::Internal("a choice ended without finishing".into()))?;
        completion_tokens += finish.completion_tokens;
        cached += finish.cached_tokens;
        choices.push(CompletionChoice {
            index,
            text,
            logprobs: format.logprobs(&lps, &mut 0),
            finish_reason: Some(finish.finish_reason.into()),
            stop_reason: finish.stop_reason,
        });
    }
    Ok(format.response(
        choices,
        Some(usage(prompt_tokens, completion_tokens, cached)),
    ))
}

struct StreamState {
    rx: mpsc::Receiver<ChoiceEvent>,
    format: Format,
    include_usage: bool,
    prompt_tokens: usize,
    completion_tokens: usize,
    cached_tokens: usize,
    offsets: std::collections::HashMap<usize, usize>,
    done: bool,
}

fn stream_completion(
    format: Format,
    include_usage: bool,
    prompt_tokens: usize,
    rx: mpsc::Receiver<ChoiceEvent>,
) -> impl IntoResponse {
    let state = StreamState {
        rx,
        format,
        include_usage,
        prompt_tokens,
        completion_tokens: 0,
        cached_tokens: 0,
        offsets: Default::default(),
        done: false,
    };
    let body = stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let events: Vec<Event> = match st.rx.recv().await {
            Some(ChoiceEvent::Piece(index, p)) => {
                if p.content.is_empty() && p.logprobs.is_empty() {
                    Vec::new()
                } else {
                    let offset = st.offsets.entry(index).or_insert(0);
                    let logprobs = st.format.logprobs(&p.logprobs, offset);
                    let choice = CompletionChoice {
                        index,
                        text: p.content,
                        logprobs,
                        finish_reason: None,
                        stop_reason: None,
                    };
                    vec![sse_json(&st.format.response(vec![choice], None))]
                }
            }
            Some(ChoiceEvent::Done(index, f)) => {
                st.completion_tokens += f.completion_tokens;
                st.cached_tokens += f.cached_tokens;
                let choice = CompletionChoice {
                    index,
                    text: String::new(),
                    logprobs: None,
                    finish_reason: Some(f.finish_reason.into()),
                    stop_reason: f.stop_reason,
                };
                vec![sse_json(&st.format.response(vec![choice], None))]
            }
            Some(ChoiceEvent::Error(message)) => {
                st.include_usage = false;
                vec![sse_error(message)]
            }
            None => {
                st.done = true;
                let mut tail = Vec::new();
                if st.include_usage {
                    let u = usage(st.prompt_tokens, st.completion_tokens, st.cached_tokens);
                    tail.push(sse_json(&st.format.response(Vec::new(), Some(u))));
                }
                tail.push(Event::default().data("[DONE]"));
                tail
            }
        };
        Some((stream::iter(events), st))
    })
    .flatten();
    Sse::new(body.map(Ok::<_, std::convert::Infallible>))
}
