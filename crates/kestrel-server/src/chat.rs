//! `POST /v1/chat/completions`: validate → render the template and tokenize on a blocking
//! worker → submit one engine request per choice → stream `chat.completion.chunk`s (PEERS §3.1:
//! role chunk, reasoning/content/tool-call deltas, finish chunk, usage chunk, `[DONE]`) or
//! collect one `chat.completion`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt};
use kestrel_engine::EngineRequest;
use kestrel_protocol::{
    parse_json, ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    ChatLogprob, ChatLogprobs, ChunkChoice, Delta, FunctionCallChunk, FunctionCallOut,
    ResponseMessage, ToolCallChunk, ToolCallOut, TopLogprob, Usage,
};
use kestrel_text::tool_calls::{parse_tool_calls, ToolCallIdGenerator};
use kestrel_text::{TemplateInput, Tokenizer};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::generation::{drive, Choice, ChoiceEvent, Finish};
use crate::output::{OutputProcessor, Piece};
use crate::state::{unix_now, AppState, Model, ReasoningField};
use crate::validate::validate_chat;
use crate::{body_bytes, random_id, random_u64};

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat(state, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Renders the conversation and tokenizes it exactly as generation will (also `/tokenize`).
pub fn render_prompt(
    model: &Model,
    messages: &[serde_json::Value],
    tools: Option<&[serde_json::Value]>,
    add_generation_prompt: bool,
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Result<Vec<u32>, ApiError> {
    let template = model.template.as_ref().ok_or_else(|| {
        ApiError::bad_request(None, "this model has no chat template; use /v1/completions")
    })?;
    let text = template.render(&TemplateInput {
        messages,
        tools,
        add_generation_prompt,
        chat_template_kwargs: Some(kwargs),
    })?;
    Ok(model.tokenizer.encode(&text, false)?)
}

async fn chat(
    state: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: ChatCompletionRequest = parse_json(&body)?;
    let model = state.model()?;
    let plan = validate_chat(&req, &model, &state.config)?;
    drop(req);

    let plan = Arc::new(plan);
    let (m, p) = (model.clone(), plan.clone());
    let prompt_ids = tokio::task::spawn_blocking(move || {
        render_prompt(
            &m,
            &p.messages,
            p.tools.as_deref(),
            p.add_generation_prompt,
            &p.chat_template_kwargs,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenization task failed: {e}")))??;
    let gen = &plan.generation;
    let max_tokens = gen.max_tokens_for(prompt_ids.len(), model.max_model_len)?;

    let id = format!("chatcmpl-{}", random_id());
    let mut choices = Vec::with_capacity(gen.n);
    for i in 0..gen.n {
        let request_id = format!("{id}-{i}");
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
            // `<tool_call>` is a special token in some vocabularies (Qwen2.5 GGUF): keep special
            // tokens in the text when parsing tool calls, as vLLM's Hermes parser does.
            gen.skip_special_tokens && !plan.tool_parsing,
            &gen.stop,
            gen.include_stop_str_in_output,
            model.think_tokens.map(|t| (t, prompt_ids.as_slice())),
            // Streaming parses tool calls as they come; non-streaming parses the whole content.
            (plan.tool_parsing && gen.stream).then(|| ToolCallIdGenerator::new(random_u64())),
        );
        choices.push(Choice {
            request_id,
            stream,
            processor,
        });
    }
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(drive(choices, model.engine.clone(), tx));

    let format = ChatFormat {
        id,
        created: unix_now(),
        model_name: state.config.served_model_name.clone(),
        reasoning_field: state.config.reasoning_field,
        include_reasoning: plan.include_reasoning,
        logprobs: plan.logprobs,
        tokenizer: model.tokenizer.clone(),
    };
    if gen.stream {
        Ok(stream_chat(format, gen.n, gen.include_usage, rx).into_response())
    } else {
        collect_chat(format, gen.n, plan.tool_parsing, rx)
            .await
            .map(|r| axum::Json(r).into_response())
    }
}

struct ChatFormat {
    id: String,
    created: u64,
    model_name: String,
    reasoning_field: ReasoningField,
    include_reasoning: bool,
    logprobs: bool,
    tokenizer: Arc<Tokenizer>,
}

impl ChatFormat {
    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> Event {
        let chunk = ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model_name.clone(),
            choices,
            usage,
        };
        sse_json(&chunk)
    }

    fn reasoning(&self, text: String) -> (Option<String>, Option<String>) {
        let text = (self.include_reasoning && !text.is_empty()).then_some(text);
        self.reasoning_field.split(text)
    }

    fn logprobs(&self, entries: &[(u32, kestrel_engine::TokenLogprobs)]) -> Option<ChatLogprobs> {
        if !self.logprobs {
            return None;
        }
        Some(ChatLogprobs {
            content: entries
                .iter()
                .map(|(id, lp)| chat_logprob(&self.tokenizer, *id, lp))
                .collect(),
        })
    }
}

pub(crate) fn token_text(tokenizer: &Tokenizer, id: u32) -> String {
    tokenizer.decode(&[id], false).unwrap_or_default()
}

fn chat_logprob(tokenizer: &Tokenizer, id: u32, lp: &kestrel_engine::TokenLogprobs) -> ChatLogprob {
    let token = token_text(tokenizer, id);
    ChatLogprob {
        bytes: Some(token.as_bytes().to_vec()),
        token,
        logprob: lp.logprob,
        top_logprobs: lp
            .top
            .iter()
            .map(|&(tid, logprob)| {
                let token = token_text(tokenizer, tid);
                TopLogprob {
                    bytes: Some(token.as_bytes().to_vec()),
                    token,
                    logprob,
                }
            })
            .collect(),
    }
}

pub(crate) fn sse_json<T: serde::Serialize>(value: &T) -> Event {
    Event::default()
        .data(serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")))
}

pub(crate) fn sse_error(message: String) -> Event {
    sse_json(&ApiError::Internal(message).body())
}

struct StreamState {
    rx: mpsc::Receiver<ChoiceEvent>,
    format: ChatFormat,
    include_usage: bool,
    /// Per choice: whether a tool call was streamed (finish_reason becomes `tool_calls`).
    had_tool_calls: Vec<bool>,
    usage: Usage,
    done: bool,
}

fn stream_chat(
    format: ChatFormat,
    n: usize,
    include_usage: bool,
    rx: mpsc::Receiver<ChoiceEvent>,
) -> impl IntoResponse {
    let role = Delta {
        role: Some("assistant".into()),
        content: Some(String::new()),
        ..Delta::default()
    };
    let head: Vec<Event> = vec![format.chunk(
        (0..n)
            .map(|index| ChunkChoice {
                index,
                delta: role.clone(),
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            })
            .collect(),
        None,
    )];
    let state = StreamState {
        rx,
        format,
        include_usage,
        had_tool_calls: vec![false; n],
        usage: Usage::default(),
        done: false,
    };
    let body = stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let events = match st.rx.recv().await {
            Some(event) => st.on_event(event),
            None => {
                st.done = true;
                let mut tail = Vec::new();
                if st.include_usage {
                    tail.push(st.format.chunk(Vec::new(), Some(st.usage.clone())));
                }
                tail.push(Event::default().data("[DONE]"));
                tail
            }
        };
        Some((stream::iter(events), st))
    })
    .flatten();
    Sse::new(
        stream::iter(head)
            .chain(body)
            .map(Ok::<_, std::convert::Infallible>),
    )
}

impl StreamState {
    fn on_event(&mut self, event: ChoiceEvent) -> Vec<Event> {
        match event {
            ChoiceEvent::Piece(index, piece) => {
                let Piece {
                    reasoning,
                    content,
                    tool_calls,
                    logprobs,
                    ..
                } = piece;
                let (reasoning_content, reasoning) = self.format.reasoning(reasoning);
                let tool_calls: Vec<ToolCallChunk> = tool_calls
                    .into_iter()
                    .map(|d| ToolCallChunk {
                        index: d.index,
                        id: d.id,
                        kind: d.kind,
                        function: FunctionCallChunk {
                            name: d.function.name,
                            arguments: d.function.arguments,
                        },
                    })
                    .collect();
                if !tool_calls.is_empty() {
                    self.had_tool_calls[index] = true;
                }
                let delta = Delta {
                    role: None,
                    content: (!content.is_empty()).then_some(content),
                    reasoning_content,
                    reasoning,
                    tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
                };
                let logprobs = self
                    .format
                    .logprobs(&logprobs)
                    .filter(|l| !l.content.is_empty());
                if delta == Delta::default() && logprobs.is_none() {
                    return Vec::new();
                }
                vec![self.format.chunk(
                    vec![ChunkChoice {
                        index,
                        delta,
                        logprobs,
                        finish_reason: None,
                        stop_reason: None,
                    }],
                    None,
                )]
            }
            ChoiceEvent::Done(index, finish) => {
                self.add_usage(&finish);
                let reason = finish_reason(&finish, self.had_tool_calls[index]);
                let choice = ChunkChoice {
                    index,
                    delta: Delta {
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    logprobs: None,
                    finish_reason: Some(reason),
                    stop_reason: finish.stop_reason,
                };
                vec![self.format.chunk(vec![choice], None)]
            }
            ChoiceEvent::Error(message) => {
                // The HTTP status is already sent: the error goes in-band, then the stream ends.
                self.include_usage = false;
                vec![sse_error(message)]
            }
        }
    }

    fn add_usage(&mut self, finish: &Finish) {
        // The prompt counts once for n choices (vLLM).
        self.usage.prompt_tokens = finish.prompt_tokens;
        self.usage.completion_tokens += finish.completion_tokens;
        self.usage.total_tokens = self.usage.prompt_tokens + self.usage.completion_tokens;
        let cached = self
            .usage
            .prompt_tokens_details
            .get_or_insert_with(Default::default);
        cached.cached_tokens = cached.cached_tokens.max(finish.cached_tokens);
    }
}

fn finish_reason(finish: &Finish, had_tool_calls: bool) -> String {
    if had_tool_calls && finish.finish_reason == "stop" {
        "tool_calls".into()
    } else {
        finish.finish_reason.into()
    }
}

#[derive(Default)]
struct Collected {
    piece: Piece,
    finish: Option<Finish>,
}

async fn collect_chat(
    format: ChatFormat,
    n: usize,
    tool_parsing: bool,
    mut rx: mpsc::Receiver<ChoiceEvent>,
) -> Result<ChatCompletionResponse, ApiError> {
    let mut collected: Vec<Collected> = (0..n).map(|_| Collected::default()).collect();
    while let Some(event) = rx.recv().await {
        match event {
            ChoiceEvent::Piece(i, p) => {
                let c = &mut collected[i].piece;
                c.reasoning.push_str(&p.reasoning);
                c.content.push_str(&p.content);
                c.logprobs.extend(p.logprobs);
            }
            ChoiceEvent::Done(i, f) => collected[i].finish = Some(f),
            ChoiceEvent::Error(message) => return Err(ApiError::Internal(message)),
        }
    }
    let mut ids = ToolCallIdGenerator::new(random_u64());
    let mut usage = Usage::default();
    let mut choices = Vec::with_capacity(n);
    for (index, c) in collected.into_iter().enumerate() {
        let finish = c
            .finish
            .ok_or_else(|| ApiError::Internal("a choice ended without finishing".into()))?;
        let (content, tool_calls) = if tool_parsing {
            let parsed = parse_tool_calls(&c.piece.content, &mut ids);
            (parsed.content.unwrap_or_default(), parsed.tool_calls)
        } else {
            (c.piece.content, Vec::new())
        };
        let (reasoning_content, reasoning) = format.reasoning(c.piece.reasoning);
        let has_other =
            reasoning_content.is_some() || reasoning.is_some() || !tool_calls.is_empty();
        usage.prompt_tokens = finish.prompt_tokens;
        usage.completion_tokens += finish.completion_tokens;
        let cached = usage
            .prompt_tokens_details
            .get_or_insert_with(Default::default);
        cached.cached_tokens = cached.cached_tokens.max(finish.cached_tokens);
        choices.push(ChatChoice {
            index,
            message: ResponseMessage {
                role: "assistant".into(),
                // Reasoning cut by max_tokens leaves no answer: content is null (vLLM).
                content: if content.is_empty() && has_other {
                    None
                } else {
                    Some(content)
                },
                reasoning_content,
                reasoning,
                tool_calls: tool_calls
                    .iter()
                    .map(|t| ToolCallOut {
                        id: t.id.clone(),
                        kind: "function".into(),
                        function: FunctionCallOut {
                            name: t.name.clone(),
                            arguments: t.arguments.clone(),
                        },
                    })
                    .collect(),
            },
            logprobs: format.logprobs(&c.piece.logprobs),
            finish_reason: Some(finish_reason(&finish, !tool_calls.is_empty())),
            stop_reason: finish.stop_reason,
        });
    }
    usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
    Ok(ChatCompletionResponse {
        id: format.id,
        object: "chat.completion".into(),
        created: format.created,
        model: format.model_name,
        choices,
        usage,
    })
}
