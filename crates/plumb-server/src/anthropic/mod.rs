//! Anthropic's Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens`.
//! A request is translated into the equivalent chat-completions request ([`map`]) and runs
//! through the same prompt building and engine; the answer is written in Anthropic's shape
//! ([`reply`]), errors too.

mod map;
mod reply;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::text_run::{self, TextRun};
use crate::{wire, AppState};
pub use reply::AnthropicError;

/// A Messages request as it arrives. Fields not named here (`metadata`, `cache_control`,
/// `service_tier`, ...) are ignored.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub model: String,
    /// Required by `/v1/messages`, not by `count_tokens`.
    pub max_tokens: Option<i64>,
    pub messages: Vec<InputMessage>,
    pub system: Option<Content>,
    pub stop_sequences: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub tools: Option<Vec<ToolDef>>,
    pub tool_choice: Option<ToolChoice>,
    pub thinking: Option<Thinking>,
    pub output_config: Option<OutputConfig>,
    /// The structured-outputs beta's form of `output_config.format`.
    pub output_format: Option<OutputFormat>,
    pub container: Option<Value>,
    pub mcp_servers: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct InputMessage {
    pub role: String,
    pub content: Content,
}

/// A string, or content blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

/// One content block; which fields matter depends on `type`.
#[derive(Debug, Deserialize)]
pub struct Block {
    #[serde(rename = "type")]
    pub kind: String,
    /// `text`.
    pub text: Option<String>,
    /// `tool_use`: the call's id, the tool's name, its input.
    pub id: Option<String>,
    pub name: Option<String>,
    pub input: Option<Value>,
    /// `tool_result`: the call answered, and the answer.
    pub tool_use_id: Option<String>,
    pub content: Option<Content>,
    pub is_error: Option<bool>,
}

/// A tool the model may call: a client tool has a name, a description and an input schema;
/// other `type`s are Anthropic's server tools.
#[derive(Debug, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: Option<String>,
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct OutputConfig {
    pub format: Option<OutputFormat>,
    pub effort: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct OutputFormat {
    #[serde(rename = "type")]
    pub kind: String,
    pub schema: Option<Value>,
}

pub async fn messages(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    s.authorize(&headers)?;
    let body = s.body(body)?;
    let req: MessagesRequest = wire::parse(&body)?;
    if req.max_tokens.is_none() {
        return Err(crate::refuse::refusal("max_tokens", "Field required").into());
    }
    let chat = map::to_chat(&req)?;
    let (engine_req, tools) = s.chat_request(&chat).await?;
    let request = engine_req.id;
    let reply = reply::Reply::new(
        format!("msg_{request:024}"),
        s.model_id().to_string(),
        engine_req.prompt.len(),
        tools.is_some(),
    );
    let stops = engine_req.stop.clone();
    let run = TextRun::new(s.submit(engine_req)?, s.tokenizer().clone(), stops)
        .reading_calls(tools, request);
    if req.stream.unwrap_or(false) {
        Ok(text_run::sse(run, reply).into_response())
    } else {
        let out = run.collect().await?;
        Ok(Json(reply.message(&out)).into_response())
    }
}

pub async fn count_tokens(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AnthropicError> {
    s.authorize(&headers)?;
    let body = s.body(body)?;
    let req: MessagesRequest = wire::parse(&body)?;
    let prompt = s.chat_prompt(&map::to_chat(&req)?).await?;
    Ok(Json(json!({"input_tokens": prompt.len()})).into_response())
}
