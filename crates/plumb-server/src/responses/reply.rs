//! Answers in the Responses shape: a `response` object whose output is an assistant
//! `message` item (unless the output is only tool calls) and a `function_call` item per call,
//! or its event stream: `response.created`, `response.in_progress`, then per item
//! `response.output_item.added`, for a message `response.content_part.added`,
//! `response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`,
//! for a call `response.function_call_arguments.delta`…,
//! `response.function_call_arguments.done`, then `response.output_item.done`; last
//! `response.completed` — or `response.incomplete` when the token budget ran out, or
//! `response.failed`.

use axum::response::sse::Event as SseEvent;
use serde_json::{json, Map, Value};

use super::ResponsesRequest;
use crate::text_run::{Finish, Outcome, Output, TextProtocol};

/// Request fields a response repeats.
pub struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: f32,
    top_p: f32,
    parallel_tool_calls: bool,
    metadata: Map<String, Value>,
    tools: Value,
    tool_choice: Value,
    format: Value,
}

impl Echo {
    pub fn of(req: &ResponsesRequest) -> Echo {
        let tools = req
            .tools
            .iter()
            .flatten()
            .map(|t| {
                json!({"type": t.kind, "name": t.name, "description": t.description,
                       "parameters": t.parameters, "strict": t.strict.unwrap_or(true)})
            })
            .collect();
        let format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
            Some(f) if f.kind == "json_schema" => json!({"type": "json_schema", "name": f.name,
                "schema": f.schema, "strict": f.strict, "description": null}),
            Some(f) => json!({"type": f.kind}),
            None => json!({"type": "text"}),
        };
        Echo {
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            temperature: req.temperature.unwrap_or(1.0),
            top_p: req.top_p.unwrap_or(1.0),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            metadata: req.metadata.clone().unwrap_or_default(),
            tools: Value::Array(tools),
            tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
            format,
        }
    }
}

/// The item open in a stream.
enum Open {
    Message {
        text: String,
    },
    Call {
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// A response being written; as a [`TextProtocol`] it also gathers the streamed items.
pub struct Reply {
    id: String,
    /// The engine's request id: item ids derive from it.
    request: u64,
    created_at: u64,
    model: String,
    input_tokens: usize,
    echo: Echo,
    /// Items open as content arrives (tools were offered: the first item may be a call);
    /// without tools the message item opens at the start.
    lazy: bool,
    open: Option<Open>,
    /// The items closed so far.
    items: Vec<Value>,
    sequence: u64,
}

/// The state of a response and of its message item, from how the text ended.
fn statuses(end: &Outcome) -> (&'static str, Value) {
    match end.finish {
        Finish::MaxTokens => ("incomplete", json!({"reason": "max_output_tokens"})),
        Finish::EndTurn | Finish::StopSequence(_) | Finish::ToolUse => ("completed", Value::Null),
    }
}

impl Reply {
    pub fn new(
        request: u64,
        created_at: u64,
        model: String,
        input_tokens: usize,
        echo: Echo,
        tools: bool,
    ) -> Reply {
        Reply {
            id: format!("resp_{request:024}"),
            request,
            created_at,
            model,
            input_tokens,
            echo,
            lazy: tools,
            open: None,
            items: Vec::new(),
            sequence: 0,
        }
    }

    fn message_id(&self) -> String {
        format!("msg_{:024}", self.request)
    }

    /// The item id of the call with this `call_…` id.
    fn call_item_id(call_id: &str) -> String {
        format!("fc_{}", call_id.strip_prefix("call_").unwrap_or(call_id))
    }

    fn part(text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    }

    fn message_item(&self, status: &str, content: Value) -> Value {
        json!({"type": "message", "id": self.message_id(), "status": status,
               "role": "assistant", "content": content})
    }

    fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
        json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
               "arguments": arguments, "status": status})
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
            "text": {"format": e.format},
            "tool_choice": e.tool_choice,
            "tools": e.tools,
            "truncation": "disabled",
            "usage": usage,
            "metadata": e.metadata,
        })
    }

    /// The finished response.
    pub fn response(&self, out: &Output) -> Value {
        let (status, _) = statuses(&out.outcome);
        let mut items = Vec::new();
        if !out.text.is_empty() || out.calls.is_empty() {
            items.push(self.message_item(status, json!([Self::part(&out.text)])));
        }
        items.extend(out.calls.iter().map(|c| {
            Self::call_item(
                &Self::call_item_id(&c.id),
                &c.id,
                &c.name,
                &c.arguments,
                "completed",
            )
        }));
        self.object(status, Value::Array(items), Some(&out.outcome), Value::Null)
    }

    fn event(&mut self, kind: &str, mut data: Value) -> SseEvent {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        SseEvent::default().event(kind).data(data.to_string())
    }

    /// The fields that place an event in the open message's text part.
    fn at(&self) -> Value {
        json!({"item_id": self.message_id(), "output_index": self.items.len(),
               "content_index": 0})
    }

    fn open_message(&mut self) -> Vec<SseEvent> {
        let mut out = self.close("completed");
        let item = self.message_item("in_progress", json!([]));
        let part = with(self.at(), "part", Self::part(""));
        let index = self.items.len();
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        out.push(self.event("response.content_part.added", part));
        self.open = Some(Open::Message {
            text: String::new(),
        });
        out
    }

    /// Closes the open item with `status` (a message's; a call is complete).
    fn close(&mut self, status: &str) -> Vec<SseEvent> {
        let index = self.items.len();
        match self.open.take() {
            None => Vec::new(),
            Some(Open::Message { text }) => {
                let done = with(with(self.at(), "text", json!(text)), "logprobs", json!([]));
                let part = with(self.at(), "part", Self::part(&text));
                let item = self.message_item(status, json!([Self::part(&text)]));
                self.items.push(item.clone());
                vec![
                    self.event("response.output_text.done", done),
                    self.event("response.content_part.done", part),
                    self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ),
                ]
            }
            Some(Open::Call {
                id,
                call_id,
                name,
                arguments,
            }) => {
                let item = Self::call_item(&id, &call_id, &name, &arguments, "completed");
                self.items.push(item.clone());
                vec![
                    self.event(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "name": name,
                               "arguments": arguments}),
                    ),
                    self.event(
                        "response.output_item.done",
                        json!({"output_index": index, "item": item}),
                    ),
                ]
            }
        }
    }
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

impl TextProtocol for Reply {
    fn start(&mut self) -> Vec<SseEvent> {
        let response = self.object("in_progress", json!([]), None, Value::Null);
        let mut out = vec![
            self.event("response.created", json!({"response": response})),
            self.event("response.in_progress", json!({"response": response})),
        ];
        if !self.lazy {
            out.extend(self.open_message());
        }
        out
    }

    fn text(&mut self, delta: &str) -> Vec<SseEvent> {
        let mut out = match self.open {
            Some(Open::Message { .. }) => Vec::new(),
            _ => self.open_message(),
        };
        if let Some(Open::Message { text }) = self.open.as_mut() {
            text.push_str(delta);
        }
        let data = with(
            with(self.at(), "delta", json!(delta)),
            "logprobs",
            json!([]),
        );
        out.push(self.event("response.output_text.delta", data));
        out
    }

    fn call_start(&mut self, _index: usize, call_id: &str, name: &str) -> Vec<SseEvent> {
        let mut out = self.close("completed");
        let id = Self::call_item_id(call_id);
        let item = Self::call_item(&id, call_id, name, "", "in_progress");
        let index = self.items.len();
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        self.open = Some(Open::Call {
            id,
            call_id: call_id.to_string(),
            name: name.to_string(),
            arguments: String::new(),
        });
        out
    }

    fn call_arguments(&mut self, _index: usize, fragment: &str) -> Vec<SseEvent> {
        let index = self.items.len();
        let Some(Open::Call { id, arguments, .. }) = self.open.as_mut() else {
            return Vec::new();
        };
        arguments.push_str(fragment);
        let data = json!({"item_id": id, "output_index": index, "delta": fragment});
        vec![self.event("response.function_call_arguments.delta", data)]
    }

    fn end(&mut self, end: &Outcome) -> Vec<SseEvent> {
        let (status, _) = statuses(end);
        // The whole response has at least a message item.
        let mut out = if self.items.is_empty() && self.open.is_none() {
            self.open_message()
        } else {
            Vec::new()
        };
        out.extend(self.close(status));
        let items = std::mem::take(&mut self.items);
        let response = self.object(status, Value::Array(items), Some(end), Value::Null);
        let last = match status {
            "completed" => "response.completed",
            _ => "response.incomplete",
        };
        out.push(self.event(last, json!({"response": response})));
        out
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
    use crate::text_run::ToolCall;

    fn reply(body: Value, tools: bool) -> Reply {
        let req: ResponsesRequest = serde_json::from_value(body).expect("request");
        Reply::new(1, 10, "m".into(), 4, Echo::of(&req), tools)
    }

    fn plain() -> Reply {
        reply(
            json!({"model": "m", "input": "x", "instructions": "I",
                   "metadata": {"k": "v"}, "max_output_tokens": 5}),
            false,
        )
    }

    fn output(text: &str, calls: Vec<ToolCall>, finish: Finish, n: usize) -> Output {
        Output {
            text: text.into(),
            calls,
            outcome: Outcome {
                finish,
                completion_tokens: n,
            },
        }
    }

    #[test]
    fn a_response_carries_its_text_status_and_usage() {
        let r = plain();
        let done = r.response(&output("Paris.", vec![], Finish::EndTurn, 3));
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
        let cut = r.response(&output("Par", vec![], Finish::MaxTokens, 5));
        assert_eq!(cut["status"], "incomplete");
        assert_eq!(
            cut["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert!(done["incomplete_details"].is_null());
    }

    #[test]
    fn streamed_events_are_numbered_and_gather_the_text() {
        let mut r = plain();
        let n = r.start().len() + r.text("Pa").len() + r.text("ris").len();
        assert_eq!((n, r.sequence), (6, 6));
        let end = r.end(&Outcome {
            finish: Finish::EndTurn,
            completion_tokens: 2,
        });
        assert_eq!((end.len(), r.sequence), (4, 10));
    }

    /// The streamed items, gathered as the stream closes them, are the whole response's.
    #[test]
    fn calls_are_function_call_items_streamed_and_whole() {
        let body = json!({"model": "m", "input": "x",
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": "required"});
        let call = ToolCall {
            id: "call_1_0_0".into(),
            name: "weather".into(),
            arguments: "{\"city\": \"Oslo\"}".into(),
        };
        let out = output("", vec![call], Finish::ToolUse, 8);
        let whole = reply(body.clone(), true).response(&out);
        assert_eq!(
            whole["output"],
            json!([{"type": "function_call", "id": "fc_1_0_0", "call_id": "call_1_0_0",
                    "name": "weather", "arguments": "{\"city\": \"Oslo\"}",
                    "status": "completed"}])
        );
        assert_eq!(whole["tools"][0]["name"], "weather");
        assert_eq!(whole["tool_choice"], "required");
        let mut r = reply(body, true);
        let mut n = r.start().len();
        assert_eq!(n, 2, "no message item before content");
        n += r.call_start(0, "call_1_0_0", "weather").len();
        n += r.call_arguments(0, "{\"city\": ").len();
        n += r.call_arguments(0, "\"Oslo\"}").len();
        assert_eq!(n, 5);
        let open = match &r.open {
            Some(Open::Call { arguments, .. }) => arguments.clone(),
            _ => String::new(),
        };
        assert_eq!(open, "{\"city\": \"Oslo\"}");
        // Arguments done, item done, completed.
        assert_eq!(r.end(&out.outcome).len(), 3);
        let mut r = reply(json!({"model": "m", "input": "x"}), true);
        r.start();
        r.text("Hi");
        r.call_start(0, "call_1_0_0", "weather");
        r.close("completed");
        let types: Vec<&str> = r.items.iter().filter_map(|i| i["type"].as_str()).collect();
        assert_eq!(types, ["message", "function_call"]);
    }
}
