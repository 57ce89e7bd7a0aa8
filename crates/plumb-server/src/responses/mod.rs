//! OpenAI's Responses API, stateless: `POST /v1/responses`. A request is translated into the
//! equivalent chat-completions request ([`map`]) and runs through the same prompt building and
//! engine; the answer is a `response` object or its event stream ([`reply`]). Nothing is
//! stored, so `store: true` and `previous_response_id` are refused.

mod map;
mod reply;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::refuse::refusal;
use crate::text_run::{self, TextRun};
use crate::{unix_now, wire, AppState};

/// A Responses request as it arrives. Fields not named here (`user`, `safety_identifier`,
/// `prompt_cache_key`, `service_tier`, `stream_options`, ...) are ignored.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub input: Option<Input>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stream: Option<bool>,
    pub metadata: Option<Map<String, Value>>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text: Option<TextConfig>,
    #[serde(flatten)]
    pub refused: Refused,
}

/// Fields that ask for what a stateless text server does not do; each is refused by name
/// when it asks for something.
#[derive(Debug, Deserialize)]
pub struct Refused {
    store: Option<bool>,
    previous_response_id: Option<String>,
    conversation: Option<Value>,
    background: Option<bool>,
    prompt: Option<Value>,
    include: Option<Vec<String>>,
    reasoning: Option<Value>,
    top_logprobs: Option<i64>,
    truncation: Option<String>,
    max_tool_calls: Option<Value>,
    context_management: Option<Value>,
    moderation: Option<Value>,
}

/// A string, or input items.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// One input item: a message (`type` `message` or left out), a `function_call` or a
/// `function_call_output`.
#[derive(Debug, Deserialize)]
pub struct Item {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub role: Option<String>,
    pub content: Option<ItemContent>,
    pub call_id: Option<String>,
    pub name: Option<String>,
    pub arguments: Option<String>,
    pub output: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ItemContent {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct TextConfig {
    pub format: Option<TextFormat>,
    pub verbosity: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct TextFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

impl Refused {
    fn check(&self) -> Result<(), ApiError> {
        let stateless = "this server is stateless and keeps no responses";
        let asks = [
            (
                "store",
                self.store == Some(true),
                format!("{stateless} (send false or leave it out)"),
            ),
            (
                "previous_response_id",
                self.previous_response_id.is_some(),
                format!("{stateless}: send the whole conversation in `input`"),
            ),
            (
                "conversation",
                self.conversation.is_some(),
                format!("{stateless}: send the whole conversation in `input`"),
            ),
            (
                "background",
                self.background == Some(true),
                "background responses are not supported".into(),
            ),
            (
                "prompt",
                self.prompt.is_some(),
                "stored prompt templates are not supported".into(),
            ),
            (
                "include",
                self.include.as_ref().is_some_and(|i| !i.is_empty()),
                "no additional output data is supported".into(),
            ),
            (
                "reasoning",
                self.reasoning.is_some(),
                "the model is not a reasoning model".into(),
            ),
            (
                "top_logprobs",
                self.top_logprobs.is_some_and(|k| k > 0),
                "logprobs are not supported on this endpoint".into(),
            ),
            (
                "truncation",
                self.truncation.as_deref().is_some_and(|t| t != "disabled"),
                "only `disabled` truncation is supported".into(),
            ),
            (
                "max_tool_calls",
                self.max_tool_calls.is_some(),
                "max_tool_calls is not supported".into(),
            ),
            (
                "context_management",
                self.context_management.is_some(),
                "context management is not supported".into(),
            ),
            (
                "moderation",
                self.moderation.is_some(),
                "moderation is not supported".into(),
            ),
        ];
        match asks.into_iter().find(|(_, on, _)| *on) {
            Some((name, _, why)) => Err(refusal(name, &why)),
            None => Ok(()),
        }
    }
}

pub async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers)?;
    let body = s.body(body)?;
    let req: ResponsesRequest = wire::parse(&body)?;
    req.refused.check()?;
    let chat = map::to_chat(&req)?;
    let (engine_req, tools) = s.chat_request(&chat).await?;
    let request = engine_req.id;
    let reply = reply::Reply::new(
        request,
        unix_now(),
        s.model_id().to_string(),
        engine_req.prompt.len(),
        reply::Echo::of(&req),
        tools.is_some(),
    );
    let run = TextRun::new(s.submit(engine_req)?, s.tokenizer().clone(), Vec::new())
        .reading_calls(tools, request);
    if req.stream.unwrap_or(false) {
        Ok(text_run::sse(run, reply).into_response())
    } else {
        let out = run.collect().await?;
        Ok(Json(reply.response(&out)).into_response())
    }
}
