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
use crate::text_run::{Finish, Outcome, TextProtocol};

/// What a reply says besides the text.
pub struct Reply {
    pub id: String,
    pub model: String,
    pub input_tokens: usize,
}

impl Reply {
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

    /// The whole message.
    pub fn message(&self, text: &str, end: &Outcome) -> Value {
        let content = json!([{"type": "text", "text": text}]);
        self.envelope(content, Some(end), end.completion_tokens)
    }
}

/// `stop_reason` and `stop_sequence`.
fn stop(end: &Outcome) -> (Value, Value) {
    match &end.finish {
        Finish::EndTurn => (json!("end_turn"), Value::Null),
        Finish::StopSequence(s) => (json!("stop_sequence"), json!(s)),
        Finish::MaxTokens => (json!("max_tokens"), Value::Null),
    }
}

fn event(name: &str, data: Value) -> SseEvent {
    SseEvent::default().event(name).data(data.to_string())
}

impl TextProtocol for Reply {
    fn start(&mut self) -> Vec<SseEvent> {
        let message = self.envelope(json!([]), None, 0);
        vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": message}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
        ]
    }

    fn text(&mut self, delta: &str) -> Vec<SseEvent> {
        vec![event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": delta}}),
        )]
    }

    fn end(&mut self, end: &Outcome) -> Vec<SseEvent> {
        let (reason, sequence) = stop(end);
        vec![
            event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            event(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": reason, "stop_sequence": sequence},
                       "usage": {"input_tokens": self.input_tokens,
                                 "output_tokens": end.completion_tokens}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ]
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
        let reply = Reply {
            id: "msg_1".into(),
            model: "m".into(),
            input_tokens: 7,
        };
        let end = Outcome {
            finish: Finish::StopSequence("END".into()),
            completion_tokens: 3,
        };
        let m = reply.message("abc", &end);
        assert_eq!(m["content"], json!([{"type": "text", "text": "abc"}]));
        assert_eq!(
            (m["stop_reason"].as_str(), m["stop_sequence"].as_str()),
            (Some("stop_sequence"), Some("END"))
        );
        assert_eq!(m["usage"], json!({"input_tokens": 7, "output_tokens": 3}));
        let end = Outcome {
            finish: Finish::MaxTokens,
            completion_tokens: 2,
        };
        assert_eq!(reply.message("", &end)["stop_reason"], "max_tokens");
    }
}
