//! A Messages request as the equivalent chat-completions request:
//!
//! | Messages | chat completions |
//! | --- | --- |
//! | `system` (string or text blocks) | a first `system` message |
//! | `text` blocks | `text` content parts |
//! | a final `assistant` message (a prefill) | `continue_final_message` |
//! | `tool_use` blocks | the assistant message's `tool_calls` |
//! | `tool_result` blocks | `tool` messages, before the rest of the user's turn |
//! | `tools` (client tools) | `function` tools |
//! | `tool_choice` auto / any / tool / none | `auto` / `required` / a named function / `none` |
//! | `output_config.format` or `output_format` (JSON schema) | `response_format` (JSON schema) |
//! | `stop_sequences`, `max_tokens`, `temperature`, `top_p`, `top_k`, `stream` | the same |

use serde_json::{json, Value};

use super::{Content, MessagesRequest, ToolChoice};
use crate::error::ApiError;
use crate::refuse::refusal;
use crate::wire::{self, ChatBody, ChatRequest};

/// The chat request, or a 400 naming the field that cannot be served.
pub fn to_chat(req: &MessagesRequest) -> Result<ChatRequest, ApiError> {
    wire::chat_request(chat_json(req)?)
}

/// The chat-completions body.
pub fn chat_json(req: &MessagesRequest) -> Result<Value, ApiError> {
    refuse_unsupported(req)?;
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        messages.push(json!({"role": "system", "content": system_text(system)?}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        turn(i, &m.role, &m.content, &mut messages)?;
    }
    // A final assistant message is continued, unless it calls tools.
    let prefill = req.messages.last().is_some_and(|m| {
        m.role == "assistant"
            && !matches!(&m.content, Content::Blocks(b) if b.iter().any(|b| b.kind == "tool_use"))
    });
    let mut chat = ChatBody::new(&req.model, messages);
    chat.put("max_tokens", req.max_tokens.map(Value::from));
    chat.put("stop", req.stop_sequences.as_ref().map(|s| json!(s)));
    chat.put("temperature", req.temperature.map(Value::from));
    chat.put("top_p", req.top_p.map(Value::from));
    chat.put("top_k", req.top_k.map(Value::from));
    chat.put("stream", req.stream.map(Value::from));
    chat.put(
        "continue_final_message",
        prefill.then_some(Value::Bool(true)),
    );
    if let Some(tools) = req.tools.as_ref().filter(|t| !t.is_empty()) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                }})
            })
            .collect();
        chat.put("tools", Some(Value::Array(tools)));
    }
    if let Some(choice) = &req.tool_choice {
        let (value, parallel) = tool_choice(choice)?;
        chat.put("tool_choice", Some(value));
        chat.put(
            "parallel_tool_calls",
            parallel.then_some(Value::Bool(false)),
        );
    }
    let config_format = req.output_config.as_ref().and_then(|o| o.format.as_ref());
    let format = match (config_format, &req.output_format) {
        (Some(_), Some(_)) => {
            return Err(refusal(
                "output_format",
                "give the format once, in `output_config.format`",
            ))
        }
        (Some(f), None) => Some(("output_config.format", f)),
        (None, Some(f)) => Some(("output_format", f)),
        (None, None) => None,
    };
    if let Some((field, format)) = format {
        if format.kind != "json_schema" {
            return Err(refusal(
                field,
                &format!(
                    "format type `{}` is not supported (only `json_schema`)",
                    format.kind
                ),
            ));
        }
        if format.schema.is_none() {
            return Err(refusal(
                &format!("{field}.schema"),
                "a `json_schema` format needs a schema",
            ));
        }
        let schema = json!({"name": "output", "schema": format.schema});
        chat.put(
            "response_format",
            Some(json!({"type": "json_schema", "json_schema": schema})),
        );
    }
    Ok(chat.into_value())
}

fn refuse_unsupported(req: &MessagesRequest) -> Result<(), ApiError> {
    if let Some(t) = req.thinking.as_ref().filter(|t| t.kind != "disabled") {
        let why = format!("extended thinking (`{}`) is not supported", t.kind);
        return Err(refusal("thinking", &why));
    }
    if req
        .output_config
        .as_ref()
        .is_some_and(|o| o.effort.is_some())
    {
        return Err(refusal("output_config.effort", "effort is not supported"));
    }
    if req.container.is_some() {
        return Err(refusal(
            "container",
            "code-execution containers are not supported",
        ));
    }
    if req.mcp_servers.is_some() {
        return Err(refusal("mcp_servers", "MCP servers are not supported"));
    }
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if let Some(kind) = t.kind.as_deref().filter(|k| *k != "custom") {
            let why = format!("server tools (`{kind}`) are not supported, only client tools");
            return Err(refusal(&format!("tools[{i}]"), &why));
        }
    }
    Ok(())
}

fn system_text(system: &Content) -> Result<String, ApiError> {
    match system {
        Content::Text(t) => Ok(t.clone()),
        Content::Blocks(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| match (b.kind.as_str(), &b.text) {
                ("text", Some(t)) => Ok(t.as_str()),
                (kind, _) => Err(block_refusal(&format!("system[{j}]"), kind)),
            })
            .collect(),
    }
}

/// Message `i` as chat messages: the tool results it carries, then its text and tool calls.
fn turn(
    i: usize,
    role: &str,
    content: &Content,
    messages: &mut Vec<Value>,
) -> Result<(), ApiError> {
    if role != "user" && role != "assistant" {
        let why = format!("the role must be `user` or `assistant`, got `{role}`");
        return Err(refusal(&format!("messages[{i}].role"), &why));
    }
    let blocks = match content {
        Content::Text(t) => {
            messages.push(json!({"role": role, "content": t}));
            return Ok(());
        }
        Content::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let at = format!("messages[{i}].content[{j}]");
        match (b.kind.as_str(), role) {
            ("text", _) => {
                parts.push(json!({"type": "text", "text": b.text.as_deref().unwrap_or("")}))
            }
            ("tool_use", "assistant") => {
                let arguments = b.input.clone().unwrap_or_else(|| json!({})).to_string();
                calls.push(json!({"id": b.id, "type": "function",
                                  "function": {"name": b.name, "arguments": arguments}}));
            }
            ("tool_result", "user") => {
                let text = match &b.content {
                    None => String::new(),
                    Some(c) => system_text(c).map_err(|_| block_refusal(&at, "tool_result"))?,
                };
                let text = if b.is_error == Some(true) {
                    format!("Error: {text}")
                } else {
                    text
                };
                messages
                    .push(json!({"role": "tool", "tool_call_id": b.tool_use_id, "content": text}));
            }
            (kind, _) => return Err(block_refusal(&at, kind)),
        }
    }
    if !calls.is_empty() {
        messages.push(json!({"role": role, "content": (!parts.is_empty()).then_some(parts), "tool_calls": calls}));
    } else if !parts.is_empty() || role == "assistant" {
        messages.push(json!({"role": role, "content": parts}));
    }
    Ok(())
}

fn block_refusal(at: &str, kind: &str) -> ApiError {
    let why = format!("content blocks of type `{kind}` are not supported here");
    refusal(at, &why)
}

/// Anthropic's tool choice as OpenAI's, and whether parallel calls are turned off.
fn tool_choice(c: &ToolChoice) -> Result<(Value, bool), ApiError> {
    let value = match (c.kind.as_str(), &c.name) {
        ("auto", _) => json!("auto"),
        ("any", _) => json!("required"),
        ("none", _) => json!("none"),
        ("tool", Some(name)) => json!({"type": "function", "function": {"name": name}}),
        (kind, _) => {
            let why = format!("`{kind}` is not a tool choice (auto, any, tool with a name, none)");
            return Err(refusal("tool_choice", &why));
        }
    };
    Ok((value, c.disable_parallel_tool_use == Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> MessagesRequest {
        serde_json::from_value(body).expect("a Messages request")
    }

    #[test]
    fn a_conversation_maps_to_chat_messages() {
        let req = request(json!({
            "model": "m", "max_tokens": 9, "stop_sequences": ["END"], "temperature": 0, "top_k": 5,
            "system": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
            "metadata": {"user_id": "u"},
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "user", "content": [{"type": "text", "text": "Name "},
                                              {"type": "text", "text": "a colour"}]},
                {"role": "assistant", "content": "The colour is"},
            ],
        }));
        let chat = chat_json(&req).expect("maps");
        assert_eq!(
            chat,
            json!({
                "model": "m", "max_tokens": 9, "stop": ["END"], "temperature": 0.0, "top_k": 5,
                "continue_final_message": true,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
                    {"role": "user", "content": [{"type": "text", "text": "Name "},
                                                 {"type": "text", "text": "a colour"}]},
                    {"role": "assistant", "content": "The colour is"},
                ],
            })
        );
        let chat = to_chat(&req).expect("a chat request");
        assert!(chat.continues_final().expect("prefill"));
        assert_eq!(chat.texts().expect("texts")[3].1, "Name a colour");
    }

    /// Tools, tool uses and tool results map onto the chat request's tool fields, and the
    /// result is a chat request the chat path serves.
    #[test]
    fn tool_use_maps_to_tool_calls_and_tool_messages() {
        let req = request(json!({
            "model": "m", "max_tokens": 9,
            "tools": [{"name": "weather", "description": "Weather in a city",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "tool", "name": "weather", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "no such "}, {"type": "text", "text": "city"}]},
                    {"type": "text", "text": "Thanks"}]},
            ],
        }));
        let chat = chat_json(&req).expect("maps");
        assert_eq!(
            chat["messages"][1]["tool_calls"],
            json!([{"id": "toolu_1", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(
            chat["messages"][2],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18 C"})
        );
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"})
        );
        assert_eq!(
            chat["messages"][4],
            json!({"role": "user", "content": [{"type": "text", "text": "Thanks"}]})
        );
        assert_eq!(
            chat["tools"][0]["function"]["parameters"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(chat["parallel_tool_calls"], json!(false));
        assert!(chat.get("continue_final_message").is_none());
        let chat = to_chat(&req).expect("a chat request");
        assert_eq!(chat.parallel_tool_calls, Some(false));
        let plan = chat.tool_plan().expect("a tool plan");
        assert_eq!(plan.forced_names(), ["weather"]);
        for (choice, forced, offered) in [
            (json!({"type": "any"}), true, true),
            (json!({"type": "auto"}), false, true),
            (json!({"type": "none"}), false, false),
        ] {
            let mut body = json!({"model": "m", "max_tokens": 9,
                "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "hi"}]});
            body["tool_choice"] = choice.clone();
            let chat = to_chat(&request(body)).expect("maps");
            let plan = chat.tool_plan().expect("a tool plan");
            assert_eq!(
                (plan.forced.is_some(), plan.reads_calls()),
                (forced, offered),
                "{choice}"
            );
        }
    }

    /// Both forms of the structured-output field map onto a JSON-schema `response_format`.
    #[test]
    fn output_formats_map_to_a_json_schema_response_format() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let base = json!({"model": "m", "max_tokens": 9,
                          "messages": [{"role": "user", "content": "hi"}]});
        let format = json!({"type": "json_schema", "schema": schema});
        for key in ["output_config", "output_format"] {
            let mut body = base.clone();
            body[key] = if key == "output_config" {
                json!({"format": format})
            } else {
                format.clone()
            };
            let chat = chat_json(&request(body.clone())).expect("maps");
            assert_eq!(
                chat["response_format"],
                json!({"type": "json_schema", "json_schema": {"name": "output", "schema": schema}})
            );
            assert!(to_chat(&request(body)).is_ok());
        }
        let mut both = base.clone();
        both["output_format"] = format.clone();
        both["output_config"] = json!({"format": format});
        let e = to_chat(&request(both)).expect_err("twice");
        assert_eq!(e.param.as_deref(), Some("output_format"));
        let mut bare = base.clone();
        bare["output_format"] = json!({"type": "json_schema"});
        let e = to_chat(&request(bare)).expect_err("no schema");
        assert_eq!(e.param.as_deref(), Some("output_format.schema"));
    }

    #[test]
    fn unsupported_blocks_and_fields_are_refused_by_name() {
        let image = json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}});
        for (extra, field) in [
            (
                json!({"messages": [{"role": "user", "content": [image]}]}),
                "messages[0].content[0]",
            ),
            (
                json!({"messages": [{"role": "system", "content": "x"}]}),
                "messages[0].role",
            ),
            (
                json!({"thinking": {"type": "enabled", "budget_tokens": 2000}}),
                "thinking",
            ),
            (
                json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools[0]",
            ),
            (json!({"tool_choice": {"type": "tool"}}), "tool_choice"),
            (json!({"mcp_servers": []}), "mcp_servers"),
        ] {
            let mut body = json!({"model": "m", "max_tokens": 4,
                                  "messages": [{"role": "user", "content": "hi"}]});
            for (k, v) in extra.as_object().expect("object") {
                body[k] = v.clone();
            }
            let e = to_chat(&request(body)).expect_err(field);
            assert_eq!(e.param.as_deref(), Some(field), "{e:?}");
        }
        let ok = json!({"model": "m", "max_tokens": 4, "thinking": {"type": "disabled"},
                        "tool_choice": {"type": "auto"},
                        "messages": [{"role": "user", "content": "hi"}]});
        assert!(to_chat(&request(ok)).is_ok());
    }
}
