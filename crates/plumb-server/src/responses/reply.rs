//! Answers in the Responses shape: a `response` object with one assistant `message` item,
//! or its event stream (`response.created`, `response.in_progress`,
//! `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`, `response.output_item.done`,
//! then `response.completed` — or `response.incomplete` when the token budget ran out, or
//! `response.failed`).

use axum::response::sse::Event as SseEvent;
use serde_json::{json, Map, Value};

use super::ResponsesRequest;
use crate::text_run::{Finish, Outcome, TextProtocol};

/// Request fields a response repeats.
pub struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: f32,
    top_p: f32,
    parallel_tool_calls: bool,
    metadata: Map<String, Value>,
}

impl Echo {
    pub fn of(req: &ResponsesRequest) -> Echo {
        Echo {
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            temperature: req.temperature.unwrap_or(1.0),
            top_p: req.top_p.unwrap_or(1.0),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            metadata: req.metadata.clone().unwrap_or_default(),
        }
    }
}

/// A response being written; as a [`TextProtocol`] it also gathers the streamed text.
pub struct Reply {
    pub id: String,
    pub item_id: String,
    pub created_at: u64,
    pub model: String,
    pub input_tokens: usize,
    pub echo: Echo,
    pub text: String,
    pub sequence: u64,
}

/// The state of a response and of its message item, from how the text ended.
fn statuses(end: &Outcome) -> (&'static str, Value) {
    match end.finish {
        Finish::MaxTokens => ("incomplete", json!({"reason": "max_output_tokens"})),
        Finish::EndTurn | Finish::StopSequence(_) => ("completed", Value::Null),
    }
}

impl Reply {
    fn part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    fn item(&self, status: &str, content: Value) -> Value {
        json!({"type": "message", "id": self.item_id, "status": status, "role": "assistant",
               "content": content})
    }

    /// The response object: `status`, its output items, usage (when done), error (failed).
    fn object(&self, status: &str, output: Value, end: Option<&Outcome>, error: Value) -> Value {
        let incomplete = end.map_or(Value::Null, |e| statuses(e).1);
        let usage = end.map_or(Value::Null, |e| {
            json!({
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": e.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + e.completion_tokens,
            })
        });
        let e = &self.echo;
        json!({
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": e.parallel_tool_calls,
            "previous_response_id": null,
            "reasoning": {"effort": null, "summary": null},
            "store": false,
            "background": false,
            "temperature": e.temperature,
            "top_p": e.top_p,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "truncation": "disabled",
            "usage": usage,
            "metadata": e.metadata,
        })
    }

    /// The finished response.
    pub fn response(&self, text: &str, end: &Outcome) -> Value {
        let (status, _) = statuses(end);
        let item = self.item(status, json!([Self::part(text)]));
        self.object(status, json!([item]), Some(end), Value::Null)
    }

    fn event(&mut self, kind: &str, mut data: Value) -> SseEvent {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        SseEvent::default().event(kind).data(data.to_string())
    }

    /// The fields that place an event in the message's text part.
    fn at(&self) -> Value {
        json!({"item_id": self.item_id, "output_index": 0, "content_index": 0})
    }
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

impl TextProtocol for Reply {
    fn start(&mut self) -> Vec<SseEvent> {
        let response = self.object("in_progress", json!([]), None, Value::Null);
        let item = self.item("in_progress", json!([]));
        let part = with(self.at(), "part", Self::part(""));
        vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
            self.event(
                "response.output_item.added",
                json!({"output_index": 0, "item": item}),
            ),
            self.event("response.content_part.added", part),
        ]
    }

    fn text(&mut self, delta: &str) -> Vec<SseEvent> {
        self.text.push_str(delta);
        let data = with(
            with(self.at(), "delta", json!(delta)),
            "logprobs",
            json!([]),
        );
        vec![self.event("response.output_text.delta", data)]
    }

    fn end(&mut self, end: &Outcome) -> Vec<SseEvent> {
        let text = std::mem::take(&mut self.text);
        let response = self.response(&text, end);
        let (status, _) = statuses(end);
        let last = match status {
            "completed" => "response.completed",
            _ => "response.incomplete",
        };
        let done = with(with(self.at(), "text", json!(text)), "logprobs", json!([]));
        let part = with(self.at(), "part", Self::part(&text));
        let item = response["output"][0].clone();
        vec![
            self.event("response.output_text.done", done),
            self.event("response.content_part.done", part),
            self.event(
                "response.output_item.done",
                json!({"output_index": 0, "item": item}),
            ),
            self.event(last, json!({"response": response})),
        ]
    }

    fn fail(&mut self, message: &str) -> Vec<SseEvent> {
        let error = json!({"code": "server_error", "message": message});
        let response = self.object("failed", json!([]), None, error);
        vec![self.event("response.failed", json!({"response": response}))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply {
        let req: ResponsesRequest =
            serde_json::from_value(json!({"model": "m", "input": "x", "instructions": "I",
                                          "metadata": {"k": "v"}, "max_output_tokens": 5}))
            .expect("request");
        Reply {
            id: "resp_1".into(),
            item_id: "msg_1".into(),
            created_at: 10,
            model: "m".into(),
            input_tokens: 4,
            echo: Echo::of(&req),
            text: String::new(),
            sequence: 0,
        }
    }

    #[test]
    fn a_response_carries_its_text_status_and_usage() {
        let r = reply();
        let done = r.response(
            "Paris.",
            &Outcome {
                finish: Finish::EndTurn,
                completion_tokens: 3,
            },
        );
        assert_eq!(
            (done["status"].as_str(), done["object"].as_str()),
            (Some("completed"), Some("response"))
        );
        assert_eq!(done["output"][0]["content"][0]["text"], "Paris.");
        assert_eq!(done["output"][0]["status"], "completed");
        assert_eq!(
            (
                done["usage"]["input_tokens"].as_u64(),
                done["usage"]["total_tokens"].as_u64()
            ),
            (Some(4), Some(7))
        );
        assert_eq!(
            (
                done["instructions"].as_str(),
                done["metadata"]["k"].as_str()
            ),
            (Some("I"), Some("v"))
        );
        let cut = r.response(
            "Par",
            &Outcome {
                finish: Finish::MaxTokens,
                completion_tokens: 5,
            },
        );
        assert_eq!(cut["status"], "incomplete");
        assert_eq!(
            cut["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert!(done["incomplete_details"].is_null());
    }

    #[test]
    fn streamed_events_are_numbered_and_gather_the_text() {
        let mut r = reply();
        let n = r.start().len() + r.text("Pa").len() + r.text("ris").len();
        assert_eq!((n, r.sequence), (6, 6));
        assert_eq!(r.text, "Paris");
        let end = r.end(&Outcome {
            finish: Finish::EndTurn,
            completion_tokens: 2,
        });
        assert_eq!((end.len(), r.sequence), (4, 10));
    }
}
