//! Answers in Anthropic's shape: a `message` object, the streamed event sequence
//! (`message_start`, `content_block_start`, `ping`, `content_block_delta`…,
//! `content_block_stop`, `message_delta`, `message_stop`), and errors as
//! `{"type": "error", "error": {"type", "message"}}`.

use axum::http::StatusCode;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::text_run::{Finish, Outcome, Output, TextProtocol};

/// What a reply says besides the content; as a [`TextProtocol`] it also tracks the stream's
/// open content block.
pub struct Reply {
    pub id: String,
    pub model: String,
    pub input_tokens: usize,
    /// Blocks open as content arrives (tools were offered: the first block may be a
    /// `tool_use`); without tools a text block opens at the start.
    lazy: bool,
    /// The open block's kind, and how many blocks were opened.
    open: Option<Open>,
    blocks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    ToolUse,
}

/// The `tool_use` id of a call: Anthropic's `toolu_` prefix on the call's id.
fn tool_use_id(call_id: &str) -> String {
    format!("toolu_{}", call_id.strip_prefix("call_").unwrap_or(call_id))
}

/// A call's `input`: its arguments as JSON (a forced call's always are); text that is not
/// JSON stays a string.
fn input(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| json!(arguments))
}

impl Reply {
    pub fn new(id: String, model: String, input_tokens: usize, tools: bool) -> Reply {
        Reply {
            id,
            model,
            input_tokens,
            lazy: tools,
            open: None,
            blocks: 0,
        }
    }

    fn envelope(&self, content: Value, end: Option<&Outcome>, output_tokens: usize) -> Value {
        let (reason, sequence) = end.map_or((Value::Null, Value::Null), stop);
        json!({
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": output_tokens},
        })
    }

    /// The whole message: a text block (unless the output is only calls), then a `tool_use`
    /// block per call.
    pub fn message(&self, out: &Output) -> Value {
        let mut content = Vec::new();
        if !out.text.is_empty() || out.calls.is_empty() {
            content.push(json!({"type": "text", "text": out.text}));
        }
        content.extend(out.calls.iter().map(|c| {
            json!({"type": "tool_use", "id": tool_use_id(&c.id), "name": c.name,
                   "input": input(&c.arguments)})
        }));
        self.envelope(
            Value::Array(content),
            Some(&out.outcome),
            out.outcome.completion_tokens,
        )
    }

    /// Closes the open block, if any, and opens one of `kind` with `block`'s fields.
    fn open(&mut self, kind: Open, block: Value) -> Vec<SseEvent> {
        let mut out = self.close();
        out.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": self.blocks,
                   "content_block": block}),
        ));
        self.open = Some(kind);
        self.blocks += 1;
        out
    }

    fn close(&mut self) -> Vec<SseEvent> {
        match self.open.take() {
            Some(_) => vec![event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.blocks - 1}),
            )],
            None => Vec::new(),
        }
    }

    fn delta(&self, delta: Value) -> SseEvent {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.blocks.saturating_sub(1),
                   "delta": delta}),
        )
    }

    fn open_text(&mut self) -> Vec<SseEvent> {
        self.open(Open::Text, json!({"type": "text", "text": ""}))
    }
}

/// `stop_reason` and `stop_sequence`.
fn stop(end: &Outcome) -> (Value, Value) {
    match &end.finish {
        Finish::EndTurn => (json!("end_turn"), Value::Null),
        Finish::StopSequence(s) => (json!("stop_sequence"), json!(s)),
        Finish::MaxTokens => (json!("max_tokens"), Value::Null),
        Finish::ToolUse => (json!("tool_use"), Value::Null),
    }
}

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

impl TextProtocol for Reply {
    fn start(&mut self) -> Vec<SseEvent> {
        let message = self.envelope(json!([]), None, 0);
        let mut out = vec![event(
            "message_start",
            json!({"type": "message_start", "message": message}),
        )];
        if !self.lazy {
            out.extend(self.open_text());
        }
        out.push(event("ping", json!({"type": "ping"})));
        out
    }

    fn text(&mut self, delta: &str) -> Vec<SseEvent> {
        let mut out = match self.open {
            Some(Open::Text) => Vec::new(),
            _ => self.open_text(),
        };
        out.push(self.delta(json!({"type": "text_delta", "text": delta})));
        out
    }

    fn call_start(&mut self, _index: usize, id: &str, name: &str) -> Vec<SseEvent> {
        let block = json!({"type": "tool_use", "id": tool_use_id(id), "name": name,
                           "input": {}});
        self.open(Open::ToolUse, block)
    }

    fn call_arguments(&mut self, _index: usize, fragment: &str) -> Vec<SseEvent> {
        vec![self.delta(json!({"type": "input_json_delta", "partial_json": fragment}))]
    }

    fn end(&mut self, end: &Outcome) -> Vec<SseEvent> {
        let (reason, sequence) = stop(end);
        // The whole message has at least a text block.
        let mut out = if self.blocks == 0 {
            self.open_text()
        } else {
            Vec::new()
        };
        out.extend(self.close());
        out.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": reason, "stop_sequence": sequence},
                   "usage": {"input_tokens": self.input_tokens,
                             "output_tokens": end.completion_tokens}}),
        ));
        out.push(event("message_stop", json!({"type": "message_stop"})));
        out
    }

    fn fail(&mut self, message: &str) -> Vec<SseEvent> {
        vec![event("error", AnthropicError::body("api_error", message))]
    }
}

/// An [`ApiError`] answered in Anthropic's shape, with Anthropic's status for an overloaded
/// server (529).
#[derive(Debug)]
pub struct AnthropicError(pub ApiError);

impl From<ApiError> for AnthropicError {
    fn from(e: ApiError) -> Self {
        AnthropicError(e)
    }
}

impl AnthropicError {
    fn body(kind: &str, message: &str) -> Value {
        json!({"type": "error", "error": {"type": kind, "message": message}})
    }

    /// The status and Anthropic's error type.
    fn kind(&self) -> (StatusCode, &'static str) {
        let status = self.0.status;
        if self.0.code == Some("overloaded") {
            // 529 is a valid three-digit status.
            let overloaded = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (overloaded, "overloaded_error");
        }
        let kind = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            _ => "api_error",
        };
        (status, kind)
    }
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let (status, kind) = self.kind();
        (status, Json(Self::body(kind, &self.0.message))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plumb_engine::serve::SubmitError;

    fn answered(e: ApiError) -> (u16, Value) {
        let (status, kind) = AnthropicError(e.clone()).kind();
        (status.as_u16(), AnthropicError::body(kind, &e.message))
    }

    #[test]
    fn errors_take_anthropic_types_and_statuses() {
        let (status, body) = answered(ApiError::invalid_param(
            "max_tokens",
            "`max_tokens`: Field required",
        ));
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": "invalid_request_error",
                                                           "message": "`max_tokens`: Field required"}})
        );
        assert_eq!(
            answered(ApiError::unauthorized()).1["error"]["type"],
            "authentication_error"
        );
        assert_eq!(
            answered(ApiError::model_not_found("a", "b")).1["error"]["type"],
            "not_found_error"
        );
        assert_eq!(
            answered(ApiError::too_large(1)).1["error"]["type"],
            "request_too_large"
        );
        let (status, body) = answered(SubmitError::Overloaded { waiting: 3 }.into());
        assert_eq!(
            (status, body["error"]["type"].as_str()),
            (529, Some("overloaded_error"))
        );
        assert_eq!(
            answered(ApiError::internal("x")),
            (500, AnthropicError::body("api_error", "x"))
        );
    }

    #[test]
    fn the_message_names_its_stop() {
        let reply = Reply::new("msg_1".into(), "m".into(), 7, false);
        let out = |text: &str, finish, completion_tokens| Output {
            text: text.into(),
            calls: Vec::new(),
            outcome: Outcome {
                finish,
                completion_tokens,
            },
        };
        let m = reply.message(&out("abc", Finish::StopSequence("END".into()), 3));
        assert_eq!(m["content"], json!([{"type": "text", "text": "abc"}]));
        assert_eq!(
            (m["stop_reason"].as_str(), m["stop_sequence"].as_str()),
            (Some("stop_sequence"), Some("END"))
        );
        assert_eq!(m["usage"], json!({"input_tokens": 7, "output_tokens": 3}));
        assert_eq!(
            reply.message(&out("", Finish::MaxTokens, 2))["stop_reason"],
            "max_tokens"
        );
    }

    /// The data of a protocol's events: SSE events do not expose their fields, so the wire
    /// text is read back.
    fn names_and_data(events: Vec<SseEvent>) -> Vec<(String, Value)> {
        use axum::response::IntoResponse;
        let stream =
            futures_util::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
        let body = axum::response::sse::Sse::new(stream)
            .into_response()
            .into_body();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bytes = rt
            .block_on(axum::body::to_bytes(body, usize::MAX))
            .expect("body");
        let text = String::from_utf8(bytes.to_vec()).expect("utf-8");
        text.split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|b| {
                let field = |k: &str| {
                    b.lines()
                        .find_map(|l| l.strip_prefix(k))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                };
                let data = serde_json::from_str(&field("data:")).expect("json data");
                (field("event:"), data)
            })
            .collect()
    }

    #[test]
    fn tool_uses_are_blocks_of_their_own_in_the_message_and_the_stream() {
        let out = Output {
            text: "Checking.".into(),
            calls: vec![crate::text_run::ToolCall {
                id: "call_4_0_0".into(),
                name: "weather".into(),
                arguments: "{\"city\": \"Oslo\"}".into(),
            }],
            outcome: Outcome {
                finish: Finish::ToolUse,
                completion_tokens: 9,
            },
        };
        let mut reply = Reply::new("msg_4".into(), "m".into(), 5, true);
        let m = reply.message(&out);
        assert_eq!(
            m["content"],
            json!([{"type": "text", "text": "Checking."},
                   {"type": "tool_use", "id": "toolu_4_0_0", "name": "weather",
                    "input": {"city": "Oslo"}}])
        );
        assert_eq!(m["stop_reason"], "tool_use");
        let mut events = reply.start();
        events.extend(reply.text("Checking."));
        events.extend(reply.call_start(0, "call_4_0_0", "weather"));
        events.extend(reply.call_arguments(0, "{\"city\": "));
        events.extend(reply.call_arguments(0, "\"Oslo\"}"));
        events.extend(reply.end(&out.outcome));
        let events = names_and_data(events);
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let indices: Vec<i64> = events[2..9]
            .iter()
            .map(|(_, d)| d["index"].as_i64().expect("index"))
            .collect();
        assert_eq!(indices, [0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(
            events[5].1["content_block"],
            json!({"type": "tool_use", "id": "toolu_4_0_0", "name": "weather", "input": {}})
        );
        let partial: String = events[6..8]
            .iter()
            .map(|(_, d)| d["delta"]["partial_json"].as_str().expect("partial_json"))
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&partial).ok(),
            Some(json!({"city": "Oslo"}))
        );
        assert_eq!(events[9].1["delta"]["stop_reason"], "tool_use");
        // An output with nothing in it still has its text block.
        let mut empty = Reply::new("msg_5".into(), "m".into(), 5, true);
        let mut events = empty.start();
        events.extend(empty.end(&Outcome {
            finish: Finish::EndTurn,
            completion_tokens: 1,
        }));
        let names: Vec<String> = names_and_data(events).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
    }
}
