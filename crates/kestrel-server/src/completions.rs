//! `POST /v1/completions`: raw prompts (text or token ids, possibly a batch), no template,
//! no reasoning split. Choice `i` of prompt `p` has index `p * n + i`, as in vLLM.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kestrel_engine::TokenLogprobs;
use kestrel_protocol::{
    parse_request, CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse,
    PromptInput, Usage,
};
use kestrel_text::Tokenizer;

use crate::auth::{effective_salt, Tenant};
use crate::chat::token_text;
use crate::error::ApiError;
use crate::generation::Finish;
use crate::output::{OutputProcessor, Piece};
use crate::response_cache::key::Endpoint;
use crate::response_cache::{look_up, replay, CacheDirectives, LookupRequest};
use crate::state::{unix_now, AppState};
use crate::stream::{collect, sse_response, Framing};
use crate::structured;
use crate::submit::submit;
use crate::validate::{validate_completion, Limits};
use crate::{body_bytes, random_id};

pub async fn completions(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    directives: CacheDirectives,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match complete(state, tenant.map(|t| t.0), directives, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn complete(
    state: Arc<AppState>,
    tenant: Option<Tenant>,
    directives: CacheDirectives,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: CompletionRequest = parse_request(&body)?;
    drop(body);
    let model = state.model()?;
    let plan = validate_completion(&req, &Limits::new(&model, &state.config))?;
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
            format!(
                "too many prompts × n in one request: at most {}",
                state.config.max_n * 4
            ),
        ));
    }
    let m = model.clone();
    let vocab_size = m.tokenizer.vocab_size();
    let grammar = plan.generation.grammar.clone();
    let (prompts, constraint) = tokio::task::spawn_blocking(move || {
        // The grammar compiles off the async threads too (a large schema takes milliseconds).
        let constraint = structured::constraint(&m, grammar.as_ref(), false, None, &[])?;
        let prompts = inputs
            .into_iter()
            .map(|input| match input {
                PromptInput::Text(text) => {
                    m.check_prompt_bytes(&text, "prompt")?;
                    Ok(m.tokenizer.encode(&text, true)?)
                }
                PromptInput::Ids(ids) => match ids.iter().find(|&&id| id as usize >= vocab_size) {
                    Some(id) => Err(ApiError::bad_request(
                        "prompt",
                        format!("token id {id} is out of the vocabulary ({vocab_size})"),
                    )),
                    None => Ok(ids),
                },
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok::<_, ApiError>((prompts, constraint))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenization task failed: {e}")))??;

    let gen = &plan.generation;
    let id = format!("cmpl-{}", random_id());
    let salt = effective_salt(tenant.as_ref(), gen.cache_salt.as_deref());
    let lookup = LookupRequest {
        endpoint: Endpoint::Completions,
        prompts: &prompts,
        generation: gen,
        chat: None,
    };
    let mut cache = look_up(&state, &model, &directives, lookup).await;
    let processor = |_: &[u32]| {
        OutputProcessor::new(
            model.tokenizer.clone(),
            gen.skip_special_tokens,
            &gen.stop,
            gen.include_stop_str_in_output,
            None,
            None,
        )
    };
    let (rx, mut tally) = match cache.take_hit() {
        Some(hit) => replay(&id, &prompts, gen.n, hit, processor),
        None => submit(
            &model,
            &id,
            &prompts,
            &vec![constraint; prompts.len()],
            gen,
            salt,
            cache.take_recorder(),
            processor,
        )?,
    };
    let mut framing = CompletionFraming {
        id,
        created: unix_now(),
        model_name: state.config.served_model_name.clone(),
        logprobs: plan.logprobs.is_some(),
        tokenizer: model.tokenizer.clone(),
        offsets: vec![0; tally.num_choices()],
    };
    if gen.stream {
        let mut response =
            sse_response(framing, rx, tally, gen.include_usage, gen.continuous_usage);
        cache.mark(&mut response);
        return Ok(response);
    }
    let collected = collect(rx, &mut tally).await?;
    let choices = collected
        .into_iter()
        .enumerate()
        .map(|(index, c)| CompletionChoice {
            index,
            text: c.piece.content,
            logprobs: framing.logprobs(index, &c.piece.logprobs),
            finish_reason: Some(c.finish.finish_reason.into()),
            stop_reason: c.finish.stop_reason,
        })
        .collect();
    let mut response = axum::Json(framing.response(choices, Some(tally.total()))).into_response();
    cache.mark(&mut response);
    Ok(response)
}

struct CompletionFraming {
    id: String,
    created: u64,
    model_name: String,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
    /// Per choice: where its next text starts (legacy logprobs' `text_offset`).
    offsets: Vec<usize>,
}

impl CompletionFraming {
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

    /// Legacy parallel-array logprobs of choice `index`'s next tokens.
    fn logprobs(
        &mut self,
        index: usize,
        entries: &[(u32, TokenLogprobs)],
    ) -> Option<CompletionLogprobs> {
        if !self.logprobs {
            return None;
        }
        let offset = &mut self.offsets[index];
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

impl Framing for CompletionFraming {
    type Chunk = CompletionResponse;

    fn head(&mut self, _: usize, _: Option<Usage>) -> Option<CompletionResponse> {
        None
    }

    fn delta(
        &mut self,
        index: usize,
        piece: Piece,
        usage: Option<Usage>,
    ) -> Option<CompletionResponse> {
        if piece.content.is_empty() && piece.logprobs.is_empty() {
            return None;
        }
        let logprobs = self.logprobs(index, &piece.logprobs);
        let choice = CompletionChoice {
            index,
            text: piece.content,
            logprobs,
            finish_reason: None,
            stop_reason: None,
        };
        Some(self.response(vec![choice], usage))
    }

    fn finish(
        &mut self,
        index: usize,
        finish: &Finish,
        usage: Option<Usage>,
    ) -> CompletionResponse {
        let choice = CompletionChoice {
            index,
            text: String::new(),
            logprobs: None,
            finish_reason: Some(finish.finish_reason.into()),
            stop_reason: finish.stop_reason.clone(),
        };
        self.response(vec![choice], usage)
    }

    fn usage(&mut self, usage: Usage) -> CompletionResponse {
        self.response(Vec::new(), Some(usage))
    }
}
