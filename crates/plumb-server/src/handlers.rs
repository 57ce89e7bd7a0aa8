//! The route handlers: check the key, parse the body, build the prompt, submit, respond.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plumb_engine::serve::{EventReceiver, Request};
use plumb_tokenizer::Tokenizer;
use serde_json::json;

use crate::error::ApiError;
use crate::respond::{self, Job, Shape};
use crate::tools::prompt::Conversation;
use crate::tools::Family;
use crate::wire::{self, ChatRequest, Common, CompletionRequest, Limits, Prompt};
use crate::{prom, unix_now, AppState};

/// The completions endpoint's default `max_tokens`, as in OpenAI's API.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

impl AppState {
    /// With a key, wants it as `Authorization: Bearer <key>` or `x-api-key: <key>`.
    pub(crate) fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.inner.api_key else {
            return Ok(());
        };
        let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let bearer = get(header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let x_api_key = get("x-api-key").map(str::trim);
        if bearer == Some(key.as_str()) || x_api_key == Some(key.as_str()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    pub(crate) fn body(&self, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::too_large(self.inner.max_body_bytes)
            } else {
                ApiError::invalid(format!("cannot read the request body: {}", r.body_text()))
            }
        })
    }

    pub(crate) fn check_model(&self, model: &str) -> Result<(), ApiError> {
        if model == self.inner.model_id {
            Ok(())
        } else {
            Err(ApiError::model_not_found(model, &self.inner.model_id))
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        let config = self.inner.engine.config();
        Limits {
            ctx: config.ctx,
            max_batch: config.max_batch,
            vocab: self.inner.tokenizer.vocab_size(),
        }
    }

    /// The prompt of a chat request: its messages (and the tools it offers) through the
    /// model's chat template.
    pub(crate) async fn chat_prompt(&self, req: &ChatRequest) -> Result<Vec<u32>, ApiError> {
        self.check_model(&req.common.model)?;
        req.refused.check()?;
        Ok(self.prepare_chat(req).await?.prompt)
    }

    /// The engine request of a chat request (the chat endpoint's, or one translated from
    /// another API), with its output constraint, and the syntax its tool calls are read in
    /// when it offers tools.
    pub(crate) async fn chat_request(
        &self,
        req: &ChatRequest,
    ) -> Result<(Request, Option<Family>), ApiError> {
        self.check_model(&req.common.model)?;
        req.refused.check()?;
        let logprobs = req.logprobs()?;
        let prepared = self.prepare_chat(req).await?;
        let max = req.max_completion_tokens.or(req.common.max_tokens);
        let mut engine_req =
            req.common
                .to_request(prepared.prompt, max, None, &self.limits(), logprobs)?;
        engine_req.constraint = prepared.constraint;
        Ok((engine_req, prepared.tools))
    }

    pub(crate) fn submit(&self, req: Request) -> Result<EventReceiver, ApiError> {
        Ok(self.inner.engine.submit(req)?)
    }

    pub(crate) fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    pub(crate) fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.inner.tokenizer
    }

    /// Submits `req` and answers with the whole response or a stream; with `tools` the
    /// output is read for tool calls in that family's syntax.
    async fn run(
        &self,
        shape: Shape,
        common: &Common,
        req: Request,
        tools: Option<Family>,
    ) -> Result<Response, ApiError> {
        let prefix = match shape {
            Shape::Chat => "chatcmpl",
            Shape::Completion => "cmpl",
        };
        let job = Job {
            shape,
            id: format!("{prefix}-{}", req.id),
            created: unix_now(),
            model: self.inner.model_id.clone(),
            n: req.n,
            prompt_tokens: req.prompt.len(),
            include_usage: common.include_usage(),
            logprobs: req.logprobs.is_some(),
            tok: self.inner.tokenizer.clone(),
            request: req.id,
            tools,
        };
        let rx = self.submit(req)?;
        if common.streaming() {
            Ok(respond::stream(job, rx).into_response())
        } else {
            Ok(Json(respond::collect(job, rx).await?).into_response())
        }
    }

    /// Tokenizes off the async workers (a large prompt takes a while).
    pub(crate) async fn encode(&self, task: EncodeTask) -> Result<Vec<u32>, ApiError> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || {
            let tok = &s.inner.tokenizer;
            match task {
                EncodeTask::Chat {
                    mut prompt,
                    continue_final,
                } => {
                    // A continued message: the turns before it and an opened assistant turn,
                    // then its text.
                    let tail = if continue_final {
                        prompt.messages.pop()
                    } else {
                        None
                    };
                    let tail = tail.and_then(|m| m.get("content")?.as_str().map(str::to_string));
                    let mut text = s
                        .inner
                        .chat_template
                        .render_with_tools(&prompt.messages, prompt.tools.as_ref(), true)
                        .map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
                    text.extend(tail);
                    // The template writes BOS itself where the model wants one.
                    tok.encode(&text, false, true)
                }
                EncodeTask::Text(text) => tok.encode(&text, tok.add_bos_default(), true),
            }
            .map_err(|e| ApiError::invalid(format!("cannot tokenize the prompt: {e}")))
        })
        .await
        .map_err(|e| ApiError::internal(format!("tokenizer task failed: {e}")))?
    }
}

pub(crate) enum EncodeTask {
    Chat {
        prompt: Conversation,
        continue_final: bool,
    },
    Text(String),
}

pub async fn chat(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let body = s.body(body)?;
    let req: ChatRequest = wire::parse(&body)?;
    let (engine_req, tools) = s.chat_request(&req).await?;
    s.run(Shape::Chat, &req.common, engine_req, tools).await
}

pub async fn completions(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let body = s.body(body)?;
    let req: CompletionRequest = wire::parse(&body)?;
    s.check_model(&req.common.model)?;
    if req.echo.unwrap_or(false) {
        return Err(ApiError::invalid_param("echo", "echo is not supported"));
    }
    if req.suffix.as_deref().is_some_and(|x| !x.is_empty()) {
        return Err(ApiError::invalid_param("suffix", "suffix is not supported"));
    }
    if let Some(b) = req.best_of.filter(|&b| b != 1) {
        return Err(ApiError::invalid_param(
            "best_of",
            format!("best_of is not supported (only 1), got {b}; use n for several choices"),
        ));
    }
    let logprobs = req
        .logprobs
        .map(|k| wire::top_count("logprobs", k))
        .transpose()?;
    let one = |n: usize| {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::invalid_param(
                "prompt",
                format!("exactly one prompt per request is supported, got {n}"),
            ))
        }
    };
    let prompt = match req.prompt {
        Prompt::Text(t) => s.encode(EncodeTask::Text(t)).await?,
        Prompt::Texts(mut v) => {
            one(v.len())?;
            s.encode(EncodeTask::Text(v.remove(0))).await?
        }
        Prompt::Ids(ids) => ids,
        Prompt::IdLists(mut v) => {
            one(v.len())?;
            v.remove(0)
        }
    };
    let engine_req = req.common.to_request(
        prompt,
        req.common.max_tokens,
        Some(COMPLETIONS_DEFAULT_MAX_TOKENS),
        &s.limits(),
        logprobs,
    )?;
    s.run(Shape::Completion, &req.common, engine_req, None)
        .await
}

fn model_object(s: &AppState) -> serde_json::Value {
    json!({
        "id": s.inner.model_id,
        "object": "model",
        "created": s.inner.created,
        "owned_by": "plumb",
        "max_model_len": s.limits().ctx,
        "context_length": s.limits().ctx,
    })
}

pub async fn models(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let mut data = vec![model_object(&s)];
    data.extend(
        s.inner
            .embed
            .as_ref()
            .map(|e| e.model_object(s.inner.created)),
    );
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn model(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    if let Some(e) = s.inner.embed.as_ref().filter(|e| e.id == id) {
        return Ok(Json(e.model_object(s.inner.created)).into_response());
    }
    s.check_model(&id)?;
    Ok(Json(model_object(&s)).into_response())
}

pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn metrics(State(s): State<AppState>) -> Response {
    let text = prom::render(
        &s.inner.engine.metrics(),
        &s.inner.engine.kv_stats(),
        &s.inner.model_id,
    );
    ([(header::CONTENT_TYPE, prom::CONTENT_TYPE)], text).into_response()
}

pub async fn fallback(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}
