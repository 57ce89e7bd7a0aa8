//! A Responses request as the equivalent chat-completions request:
//!
//! | Responses | chat completions |
//! | --- | --- |
//! | `instructions` | a first `system` message |
//! | `input` as a string | one `user` message |
//! | message items (`input_text` / `output_text` parts) | messages with `text` parts |
//! | `function_call` items | an assistant message's `tool_calls` |
//! | `function_call_output` items | `tool` messages |
//! | `function` tools, `tool_choice`, `parallel_tool_calls` | `function` tools, the same |
//! | `text.format` JSON schema / JSON object | `response_format` |
//! | `max_output_tokens`, `temperature`, `top_p` | `max_tokens`, the same |

use serde_json::{json, Value};

use super::{Input, Item, ItemContent, ResponsesRequest};
use crate::error::ApiError;
use crate::refuse::refusal;
use crate::wire::{self, ChatBody, ChatRequest};

/// The chat request, or a 400 naming the field that cannot be served.
pub fn to_chat(req: &ResponsesRequest) -> Result<ChatRequest, ApiError> {
    wire::chat_request(chat_json(req)?)
}

/// The chat-completions body.
pub fn chat_json(req: &ResponsesRequest) -> Result<Value, ApiError> {
    let mut messages = Vec::new();
    if let Some(i) = &req.instructions {
        messages.push(json!({"role": "system", "content": i}));
    }
    match &req.input {
        None => return Err(refusal("input", "Field required")),
        Some(Input::Text(t)) => messages.push(json!({"role": "user", "content": t})),
        Some(Input::Items(items)) => {
            for (i, item) in items.iter().enumerate() {
                push_item(i, item, &mut messages)?;
            }
        }
    }
    let mut chat = ChatBody::new(&req.model, messages);
    chat.put("max_tokens", req.max_output_tokens.map(Value::from));
    chat.put("temperature", req.temperature.map(Value::from));
    chat.put("top_p", req.top_p.map(Value::from));
    chat.put("stream", req.stream.map(Value::from));
    chat.put(
        "parallel_tool_calls",
        req.parallel_tool_calls.map(Value::from),
    );
    chat.put("tools", tools(req)?);
    if let Some(choice) = &req.tool_choice {
        chat.put("tool_choice", Some(tool_choice(choice)?));
    }
    if let Some(text) = &req.text {
        if text.verbosity.is_some() {
            return Err(refusal("text.verbosity", "verbosity is not supported"));
        }
        chat.put("response_format", response_format(text)?);
    }
    Ok(chat.into_value())
}

/// Item `i` as a chat message; consecutive `function_call`s share one assistant message.
fn push_item(i: usize, item: &Item, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let at = format!("input[{i}]");
    match item.kind.as_deref().unwrap_or("message") {
        "message" => messages.push(message(&at, item)?),
        "function_call" => {
            let call = json!({"id": item.call_id, "type": "function",
                              "function": {"name": item.name, "arguments": item.arguments}});
            match messages.last_mut() {
                Some(m) if m["role"] == "assistant" && m.get("tool_calls").is_some() => {
                    if let Some(calls) = m["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => messages
                    .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match &item.output {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            messages.push(json!({"role": "tool", "tool_call_id": item.call_id, "content": output}));
        }
        kind => {
            let why = format!("input items of type `{kind}` are not supported");
            return Err(refusal(&at, &why));
        }
    }
    Ok(())
}

fn message(at: &str, item: &Item) -> Result<Value, ApiError> {
    let role = item.role.as_deref().unwrap_or("");
    if !["user", "assistant", "system", "developer"].contains(&role) {
        let why = format!("the role must be user, assistant, system or developer, got `{role}`");
        return Err(refusal(&format!("{at}.role"), &why));
    }
    let content = match &item.content {
        None => json!(""),
        Some(ItemContent::Text(t)) => json!(t),
        Some(ItemContent::Parts(parts)) => {
            let mut out = Vec::new();
            for (j, p) in parts.iter().enumerate() {
                match (p.kind.as_str(), &p.text) {
                    ("input_text" | "output_text" | "text", Some(t)) => {
                        out.push(json!({"type": "text", "text": t}));
                    }
                    (kind, _) => {
                        let why =
                            format!("content parts of type `{kind}` are not supported (text only)");
                        return Err(refusal(&format!("{at}.content[{j}]"), &why));
                    }
                }
            }
            Value::Array(out)
        }
    };
    Ok(json!({"role": role, "content": content}))
}

fn tools(req: &ResponsesRequest) -> Result<Option<Value>, ApiError> {
    let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, t) in tools.iter().enumerate() {
        if t.kind != "function" {
            let why = format!(
                "hosted tools (`{}`) are not supported, only `function` tools",
                t.kind
            );
            return Err(refusal(&format!("tools[{i}]"), &why));
        }
        out.push(json!({"type": "function", "function": {
            "name": t.name, "description": t.description,
            "parameters": t.parameters, "strict": t.strict,
        }}));
    }
    Ok(Some(Value::Array(out)))
}

fn tool_choice(choice: &Value) -> Result<Value, ApiError> {
    match choice {
        Value::String(s) if ["auto", "none", "required"].contains(&s.as_str()) => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(refusal(
                    "tool_choice.name",
                    "a function tool choice names the function",
                )),
            }
        }
        other => Err(refusal(
            "tool_choice",
            &format!("{other} is not a supported tool choice (auto, none, required, a function)"),
        )),
    }
}

fn response_format(text: &super::TextConfig) -> Result<Option<Value>, ApiError> {
    let Some(f) = &text.format else {
        return Ok(None);
    };
    let format = match f.kind.as_str() {
        "text" => return Ok(None),
        "json_schema" => json!({"type": "json_schema", "json_schema": {
            "name": f.name, "schema": f.schema, "strict": f.strict,
        }}),
        "json_object" => json!({"type": "json_object"}),
        kind => {
            let why = format!("format type `{kind}` is not supported");
            return Err(refusal("text.format", &why));
        }
    };
    Ok(Some(format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> ResponsesRequest {
        serde_json::from_value(body).expect("a Responses request")
    }

    #[test]
    fn input_and_instructions_map_to_chat_messages() {
        let req = request(json!({
            "model": "m", "instructions": "Be brief.", "max_output_tokens": 20,
            "temperature": 0, "top_p": 0.5, "metadata": {"k": "v"}, "text": {"format": {"type": "text"}},
            "input": [
                {"role": "user", "content": "Hi"},
                {"type": "message", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hello", "annotations": []}]},
                {"role": "developer", "content": [{"type": "input_text", "text": "Use French."}]},
            ],
        }));
        let chat = chat_json(&req).expect("maps");
        assert_eq!(
            chat,
            json!({"model": "m", "max_tokens": 20, "temperature": 0.0, "top_p": 0.5,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            ]})
        );
        let chat = to_chat(&req).expect("a chat request");
        assert_eq!(
            chat.texts().expect("texts")[3],
            ("system".into(), "Use French.".into())
        );
        let plain = request(json!({"model": "m", "input": "Hi"}));
        assert_eq!(
            chat_json(&plain).expect("maps")["messages"],
            json!([{"role": "user", "content": "Hi"}])
        );
    }

    /// Function tools, calls and outputs map onto the chat request's tool fields, and the
    /// result is a chat request the chat path serves.
    #[test]
    fn function_calls_map_to_tool_calls() {
        let req = request(json!({
            "model": "m",
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "input": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": "{\"city\":\"Rome\"}"},
                {"type": "function_call_output", "call_id": "c1", "output": "18 C"},
            ],
        }));
        let chat = chat_json(&req).expect("maps");
        let calls = chat["messages"][1]["tool_calls"].as_array().expect("calls");
        assert_eq!(calls.len(), 2, "{chat}");
        assert_eq!(
            calls[1]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Rome\"}"})
        );
        assert_eq!(
            chat["messages"][2],
            json!({"role": "tool", "tool_call_id": "c1", "content": "18 C"})
        );
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        let chat = to_chat(&req).expect("a chat request");
        let plan = chat.tool_plan().expect("a tool plan");
        assert_eq!(plan.forced_names(), ["weather"]);
        let object = request(json!({"model": "m", "input": "x",
                                    "text": {"format": {"type": "json_object"}}}));
        assert_eq!(
            chat_json(&object).expect("maps")["response_format"],
            json!({"type": "json_object"})
        );
        let nameless = request(json!({"model": "m", "input": "x",
                                      "tool_choice": {"type": "function"}}));
        assert_eq!(
            to_chat(&nameless).expect_err("no name").param.as_deref(),
            Some("tool_choice.name")
        );
    }

    #[test]
    fn unsupported_items_and_parts_are_refused_by_name() {
        for (input, field) in [
            (
                json!([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]),
                "input[0].content[0]",
            ),
            (json!([{"type": "reasoning", "summary": []}]), "input[0]"),
            (json!([{"role": "tool", "content": "x"}]), "input[0].role"),
        ] {
            let e = to_chat(&request(json!({"model": "m", "input": input}))).expect_err(field);
            assert_eq!(e.param.as_deref(), Some(field), "{e:?}");
        }
        let e = to_chat(&request(json!({"model": "m"}))).expect_err("no input");
        assert_eq!(e.param.as_deref(), Some("input"));
        let hosted = json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]});
        assert_eq!(
            to_chat(&request(hosted))
                .expect_err("hosted")
                .param
                .as_deref(),
            Some("tools[0]")
        );
    }
}
