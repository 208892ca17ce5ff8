//! `POST /v1/chat/completions`: validate → render the template and tokenize on a blocking
//! worker → submit one engine request per choice → stream `chat.completion.chunk`s (vLLM's and
//! OpenAI's shape: a role chunk, reasoning/content/tool-call deltas, a finish chunk per choice,
//! the usage chunk, `[DONE]`) or collect one `chat.completion`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use kestrel_protocol::{
    parse_request, ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse,
    ChatLogprob, ChatLogprobs, ChunkChoice, Delta, FunctionCallChunk, FunctionCallOut,
    ResponseMessage, ToolCallChunk, ToolCallOut, TopLogprob, Usage,
};
use kestrel_text::tool_calls::{parse_tool_calls, ToolCallIdGenerator};
use kestrel_text::{TemplateInput, Tokenizer};

use crate::auth::{effective_salt, Tenant};
use crate::error::ApiError;
use crate::generation::Finish;
use crate::output::{OutputProcessor, Piece};
use crate::response_cache::key::{ChatFields, Endpoint};
use crate::response_cache::{look_up, replay, CacheDirectives, LookupRequest};
use crate::state::{unix_now, AppState, Model, ReasoningField};
use crate::stream::{collect, sse_response, Framing};
use crate::structured;
use crate::submit::submit;
use crate::validate::{validate_chat, Limits};
use crate::{body_bytes, random_id, random_u64};

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    tenant: Option<Extension<Tenant>>,
    directives: CacheDirectives,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match chat(state, tenant.map(|t| t.0), directives, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Renders the conversation and tokenizes it exactly as generation will (also `/tokenize`,
/// which passes `for_generation: false` to count prompts of any length).
pub fn render_prompt(
    model: &Model,
    messages: &[serde_json::Value],
    tools: Option<&[serde_json::Value]>,
    add_generation_prompt: bool,
    kwargs: &serde_json::Map<String, serde_json::Value>,
    for_generation: bool,
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
    if for_generation {
        model.check_prompt_bytes(&text, "messages")?;
    }
    Ok(model.tokenizer.encode(&text, false)?)
}

async fn chat(
    state: Arc<AppState>,
    tenant: Option<Tenant>,
    directives: CacheDirectives,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let req: ChatCompletionRequest = parse_request(&body)?;
    drop(body);
    let model = state.model()?;
    let plan = validate_chat(&req, &Limits::new(&model, &state.config))?;
    drop(req);

    let plan = Arc::new(plan);
    let (m, p) = (model.clone(), plan.clone());
    let (prompt_ids, constraint) = tokio::task::spawn_blocking(move || {
        let ids = render_prompt(
            &m,
            &p.messages,
            p.tools.as_deref(),
            p.add_generation_prompt,
            &p.chat_template_kwargs,
            true,
        )?;
        // The grammar compiles off the async threads too (a large schema takes milliseconds).
        let constraint = structured::constraint(
            &m,
            p.generation.grammar.as_ref(),
            p.thinking_on,
            p.generation.thinking_budget,
            &ids,
        )?;
        Ok::<_, ApiError>((ids, constraint))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("tokenization task failed: {e}")))??;
    let gen = &plan.generation;
    let id = format!("chatcmpl-{}", random_id());
    let salt = effective_salt(tenant.as_ref(), gen.cache_salt.as_deref());
    let prompts = [prompt_ids];
    let lookup = LookupRequest {
        endpoint: Endpoint::Chat,
        prompts: &prompts,
        generation: gen,
        chat: Some(ChatFields::of(&plan)),
    };
    let mut cache = look_up(&state, &model, &directives, lookup).await;
    let processor = |prompt: &[u32]| {
        OutputProcessor::new(
            model.tokenizer.clone(),
            // `<tool_call>` is a special token in some vocabularies (Qwen2.5 GGUF): keep special
            // tokens in the text when parsing tool calls, as vLLM's Hermes parser does.
            gen.skip_special_tokens && !plan.tool_parsing,
            &gen.stop,
            gen.include_stop_str_in_output,
            model.think_tokens.map(|t| (t, prompt)),
            // Streaming parses tool calls as they come; non-streaming parses the whole content.
            (plan.tool_parsing && gen.stream).then(|| ToolCallIdGenerator::new(random_u64())),
        )
    };
    let (rx, mut tally) = match cache.take_hit() {
        Some(hit) => replay(&id, &prompts, gen.n, hit, processor),
        None => submit(
            &model,
            &id,
            &prompts,
            std::slice::from_ref(&constraint),
            gen,
            salt,
            cache.take_recorder(),
            processor,
        )?,
    };

    let framing = ChatFraming {
        id,
        created: unix_now(),
        model_name: state.config.served_model_name.clone(),
        reasoning_field: state.config.reasoning_field,
        include_reasoning: plan.include_reasoning,
        logprobs: plan.logprobs,
        parallel_tool_calls: plan.parallel_tool_calls,
        tokenizer: model.tokenizer.clone(),
        had_tool_calls: vec![false; tally.num_choices()],
    };
    if gen.stream {
        let mut response =
            sse_response(framing, rx, tally, gen.include_usage, gen.continuous_usage);
        cache.mark(&mut response);
        return Ok(response);
    }
    let collected = collect(rx, &mut tally).await?;
    let mut ids = ToolCallIdGenerator::new(random_u64());
    let choices = collected
        .into_iter()
        .enumerate()
        .map(|(index, c)| framing.message(index, c.piece, &c.finish, plan.tool_parsing, &mut ids))
        .collect();
    let mut response = axum::Json(ChatCompletionResponse {
        id: framing.id,
        object: "chat.completion".into(),
        created: framing.created,
        model: framing.model_name,
        choices,
        usage: tally.total(),
    })
    .into_response();
    cache.mark(&mut response);
    Ok(response)
}

struct ChatFraming {
    id: String,
    created: u64,
    model_name: String,
    reasoning_field: ReasoningField,
    include_reasoning: bool,
    logprobs: bool,
    parallel_tool_calls: bool,
    tokenizer: Arc<Tokenizer>,
    /// Per choice: a tool call was streamed (its `finish_reason` becomes `tool_calls`).
    had_tool_calls: Vec<bool>,
}

impl ChatFraming {
    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<Usage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model_name.clone(),
            choices,
            usage,
        }
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

    /// One choice of a non-streaming response; tool calls are parsed from the whole content.
    fn message(
        &self,
        index: usize,
        piece: Piece,
        finish: &Finish,
        tool_parsing: bool,
        ids: &mut ToolCallIdGenerator,
    ) -> ChatChoice {
        let (content, mut tool_calls) = if tool_parsing {
            let parsed = parse_tool_calls(&piece.content, ids);
            (parsed.content.unwrap_or_default(), parsed.tool_calls)
        } else {
            (piece.content, Vec::new())
        };
        if !self.parallel_tool_calls {
            tool_calls.truncate(1);
        }
        let (reasoning_content, reasoning) = self.reasoning(piece.reasoning);
        let has_other =
            reasoning_content.is_some() || reasoning.is_some() || !tool_calls.is_empty();
        ChatChoice {
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
            logprobs: self.logprobs(&piece.logprobs),
            finish_reason: Some(finish_reason(finish, !tool_calls.is_empty())),
            stop_reason: finish.stop_reason.clone(),
        }
    }
}

impl Framing for ChatFraming {
    type Chunk = ChatCompletionChunk;

    fn head(&mut self, num_choices: usize, usage: Option<Usage>) -> Option<ChatCompletionChunk> {
        let role = Delta {
            role: Some("assistant".into()),
            content: Some(String::new()),
            ..Delta::default()
        };
        let choices = (0..num_choices)
            .map(|index| ChunkChoice {
                index,
                delta: role.clone(),
                logprobs: None,
                finish_reason: None,
                stop_reason: None,
            })
            .collect();
        Some(self.chunk(choices, usage))
    }

    fn delta(
        &mut self,
        index: usize,
        piece: Piece,
        usage: Option<Usage>,
    ) -> Option<ChatCompletionChunk> {
        let Piece {
            reasoning,
            content,
            tool_calls,
            logprobs,
            ..
        } = piece;
        let (reasoning_content, reasoning) = self.reasoning(reasoning);
        let tool_calls: Vec<ToolCallChunk> = tool_calls
            .into_iter()
            // `parallel_tool_calls: false`: only the first call of the choice goes out.
            .filter(|d| self.parallel_tool_calls || d.index == 0)
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
        let logprobs = self.logprobs(&logprobs).filter(|l| !l.content.is_empty());
        if delta == Delta::default() && logprobs.is_none() {
            return None;
        }
        Some(self.chunk(
            vec![ChunkChoice {
                index,
                delta,
                logprobs,
                finish_reason: None,
                stop_reason: None,
            }],
            usage,
        ))
    }

    fn finish(
        &mut self,
        index: usize,
        finish: &Finish,
        usage: Option<Usage>,
    ) -> ChatCompletionChunk {
        let choice = ChunkChoice {
            index,
            delta: Delta {
                content: Some(String::new()),
                ..Delta::default()
            },
            logprobs: None,
            finish_reason: Some(finish_reason(finish, self.had_tool_calls[index])),
            stop_reason: finish.stop_reason.clone(),
        };
        self.chunk(vec![choice], usage)
    }

    fn usage(&mut self, usage: Usage) -> ChatCompletionChunk {
        self.chunk(Vec::new(), Some(usage))
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

fn finish_reason(finish: &Finish, had_tool_calls: bool) -> String {
    if had_tool_calls && finish.finish_reason == "stop" {
        "tool_calls".into()
    } else {
        finish.finish_reason.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kestrel_text::tool_calls::ToolCallParser;
    use kestrel_text::GgufVocab;

    /// A two-token byte-level vocabulary: logprobs are off, so the framing never decodes.
    fn tokenizer() -> Arc<Tokenizer> {
        let vocab = GgufVocab {
            model: "gpt2".into(),
            pre: Some("qwen2".into()),
            tokens: vec!["a".into(), "<|im_end|>".into()],
            token_types: vec![1, 3],
            ..GgufVocab::default()
        };
        Arc::new(Tokenizer::from_gguf_vocab(&vocab).expect("tiny tokenizer"))
    }

    fn framing(parallel_tool_calls: bool) -> ChatFraming {
        ChatFraming {
            id: "chatcmpl-x".into(),
            created: 0,
            model_name: "m".into(),
            reasoning_field: ReasoningField::Both,
            include_reasoning: true,
            logprobs: false,
            parallel_tool_calls,
            tokenizer: tokenizer(),
            had_tool_calls: vec![false],
        }
    }

    const TWO_CALLS: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"London\"}}\n</tool_call>";

    fn stop() -> Finish {
        Finish {
            finish_reason: "stop",
            stop_reason: None,
            prompt_tokens: 5,
            completion_tokens: 9,
            cached_tokens: 0,
        }
    }

    /// Streams the two calls through the tool-call parser and the framing; returns the
    /// OpenAI chunks.
    fn streamed(parallel: bool) -> Vec<serde_json::Value> {
        let mut f = framing(parallel);
        let mut parser = ToolCallParser::new(ToolCallIdGenerator::new(1));
        let mut chunks = Vec::new();
        for piece in TWO_CALLS.split_inclusive(['\n', ',']) {
            let d = parser.push(piece);
            let piece = Piece {
                content: d.content.unwrap_or_default(),
                tool_calls: d.tool_calls,
                ..Piece::default()
            };
            chunks.extend(f.delta(0, piece, None));
        }
        let end = parser.finish();
        chunks.extend(f.delta(
            0,
            Piece {
                tool_calls: end.tool_calls,
                ..Piece::default()
            },
            None,
        ));
        chunks.push(f.finish(0, &stop(), None));
        chunks
            .iter()
            .map(|c| serde_json::to_value(c).unwrap())
            .collect()
    }

    #[test]
    fn streamed_tool_calls_and_parallel_tool_calls_false() {
        for (parallel, want) in [(true, 2), (false, 1)] {
            let chunks = streamed(parallel);
            let mut names = Vec::new();
            let mut arguments = vec![String::new(); 2];
            for c in &chunks {
                for call in c["choices"][0]["delta"]["tool_calls"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let i = call["index"].as_u64().unwrap() as usize;
                    if let Some(name) = call["function"]["name"].as_str() {
                        assert!(call["id"].as_str().unwrap().starts_with("call_"));
                        names.push((i, name.to_string()));
                    }
                    arguments[i].push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                }
                assert!(
                    c["choices"][0]["delta"].get("content").is_none()
                        || c["choices"][0]["finish_reason"].is_string(),
                    "tool-call text leaked into content: {c}"
                );
            }
            assert_eq!(
                names.len(),
                want,
                "parallel_tool_calls {parallel}: {chunks:?}"
            );
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&arguments[0]).unwrap(),
                serde_json::json!({"city": "Paris"})
            );
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        }
    }

    #[test]
    fn collected_tool_calls_and_parallel_tool_calls_false() {
        for (parallel, want) in [(true, 2), (false, 1)] {
            let piece = Piece {
                content: TWO_CALLS.into(),
                ..Piece::default()
            };
            let choice = framing(parallel).message(
                0,
                piece,
                &stop(),
                true,
                &mut ToolCallIdGenerator::new(1),
            );
            let v = serde_json::to_value(&choice).unwrap();
            let calls = v["message"]["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), want, "{v}");
            assert_eq!(calls[0]["type"], "function");
            assert_eq!(calls[0]["function"]["name"], "get_weather");
            assert_eq!(
                calls[0]["function"]["arguments"], r#"{"city":"Paris"}"#,
                "{v}"
            );
            assert!(v["message"]["content"].is_null(), "{v}");
            assert_eq!(v["finish_reason"], "tool_calls");
        }
        // Without tool parsing the same text is content, and the choice just stops.
        let choice = framing(true).message(
            0,
            Piece {
                content: TWO_CALLS.into(),
                ..Piece::default()
            },
            &stop(),
            false,
            &mut ToolCallIdGenerator::new(1),
        );
        assert_eq!(choice.message.content.as_deref(), Some(TWO_CALLS));
        assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    }
}
