//! The conversation as the chat template gets it. A template that takes tools gets Hugging
//! Face's shapes (`tools`, assistant `tool_calls` with arguments as objects, `tool` messages
//! with `tool_call_id`). Any other template gets plain text: a system block that lists the
//! tools and the `<tool_call>` syntax, calls written out in that syntax and tool results as a
//! user turn of `<tool_response>` blocks.

use serde_json::{json, Value};

use super::family::{HERMES_CLOSE, HERMES_OPEN};
use super::wire::{FunctionDef, MessageToolCall};

/// One message of the request, its content already flattened to text.
pub struct Turn<'a> {
    pub role: &'a str,
    pub text: String,
    pub tool_calls: &'a [MessageToolCall],
    pub tool_call_id: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// What the template renders.
#[derive(Debug, PartialEq)]
pub struct Conversation {
    pub messages: Vec<Value>,
    /// `tools` for a template that takes them.
    pub tools: Option<Value>,
}

/// `offered`: the tools the model is told about (none with `tool_choice: none`).
pub fn build(turns: Vec<Turn<'_>>, offered: &[FunctionDef], native: bool) -> Conversation {
    if native {
        let tools = (!offered.is_empty()).then(|| tool_list(offered));
        let messages = turns.into_iter().map(native_message).collect();
        return Conversation { messages, tools };
    }
    let mut messages: Vec<Value> = Vec::new();
    for t in turns {
        match t.role {
            "tool" => {
                let block = format!("<tool_response>\n{}\n</tool_response>", t.text);
                // Results of one round of calls share one user turn.
                match messages.last_mut() {
                    Some(last) if is_response_turn(last) => {
                        let text = format!("{}\n{block}", last["content"].as_str().unwrap_or(""));
                        last["content"] = Value::String(text);
                    }
                    _ => messages.push(json!({"role": "user", "content": block})),
                }
            }
            "assistant" if !t.tool_calls.is_empty() => {
                let mut text = t.text.clone();
                for c in t.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&written_call(c));
                }
                messages.push(json!({"role": "assistant", "content": text}));
            }
            role => messages.push(json!({"role": role, "content": t.text})),
        }
    }
    if !offered.is_empty() {
        let block = system_block(offered);
        match messages.first_mut() {
            Some(first) if first["role"] == "system" => {
                let text = format!("{}\n\n{block}", first["content"].as_str().unwrap_or(""));
                first["content"] = Value::String(text);
            }
            _ => messages.insert(0, json!({"role": "system", "content": block})),
        }
    }
    Conversation {
        messages,
        tools: None,
    }
}

fn is_response_turn(m: &Value) -> bool {
    m["role"] == "user"
        && m["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("<tool_response>"))
}

fn tool_list(offered: &[FunctionDef]) -> Value {
    offered
        .iter()
        .map(|f| json!({"type": "function", "function": f}))
        .collect()
}

fn native_message(t: Turn<'_>) -> Value {
    let mut m = json!({"role": t.role, "content": t.text});
    if !t.tool_calls.is_empty() {
        m["tool_calls"] = t
            .tool_calls
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments().0},
                })
            })
            .collect();
    }
    if let Some(id) = t.tool_call_id {
        m["tool_call_id"] = json!(id);
    }
    if let Some(name) = t.name {
        m["name"] = json!(name);
    }
    m
}

/// A call as the model would have written it.
fn written_call(c: &MessageToolCall) -> String {
    let name = Value::String(c.function.name.clone());
    let (_, args) = c.function.arguments();
    format!("{HERMES_OPEN}\n{{\"name\": {name}, \"arguments\": {args}}}\n{HERMES_CLOSE}")
}

/// The system text that teaches a template without tool support the tools and the syntax.
fn system_block(offered: &[FunctionDef]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call functions to help with the request. Their signatures, \
         as JSON, are between <tools> and </tools>:\n<tools>\n",
    );
    for f in offered {
        s.push_str(&json!({"type": "function", "function": f}).to_string());
        s.push('\n');
    }
    s.push_str(
        "</tools>\n\nTo call a function, write its name and a JSON object of its arguments \
         between <tool_call> and </tool_call>, one call per block:\n<tool_call>\n\
         {\"name\": \"<function name>\", \"arguments\": {<argument>: <value>}}\n</tool_call>",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::wire::CallFunction;

    fn weather() -> FunctionDef {
        FunctionDef {
            name: "get_weather".into(),
            description: Some("Weather of a city".into()),
            parameters: Some(json!({"type": "object", "properties": {"city": {"type": "string"}}})),
        }
    }

    fn turn<'a>(role: &'a str, text: &str, calls: &'a [MessageToolCall]) -> Turn<'a> {
        Turn {
            role,
            text: text.into(),
            tool_calls: calls,
            tool_call_id: (role == "tool").then_some("call_1"),
            name: None,
        }
    }

    fn calls() -> Vec<MessageToolCall> {
        vec![MessageToolCall {
            id: Some("call_1".into()),
            function: CallFunction {
                name: "get_weather".into(),
                arguments: json!("{\"city\": \"Oslo\"}"),
            },
        }]
    }

    #[test]
    fn a_template_without_tools_gets_the_hermes_block_and_written_calls() {
        let calls = calls();
        let p = build(
            vec![
                turn("user", "Weather in Oslo?", &[]),
                turn("assistant", "", &calls),
                turn("tool", "{\"temp\": 21}", &[]),
                turn("tool", "{\"temp\": 22}", &[]),
            ],
            &[weather()],
            false,
        );
        assert_eq!(p.tools, None);
        let roles: Vec<&str> = p
            .messages
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        let system = p.messages[0]["content"].as_str().unwrap();
        assert!(system.starts_with("# Tools") && system.contains("\"name\":\"get_weather\""));
        assert_eq!(
            p.messages[2]["content"],
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"
        );
        assert_eq!(
            p.messages[3]["content"],
            "<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\n{\"temp\": 22}\n</tool_response>"
        );
        // An existing system message gets the block appended; no tools offered, no block.
        let p = build(vec![turn("system", "Be brief.", &[])], &[weather()], false);
        assert!(p.messages[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Be brief.\n\n# Tools"));
        let p = build(vec![turn("user", "hi", &[])], &[], false);
        assert_eq!(p.messages, vec![json!({"role": "user", "content": "hi"})]);
    }

    #[test]
    fn a_template_with_tools_gets_hugging_face_shapes() {
        let calls = calls();
        let p = build(
            vec![turn("assistant", "", &calls), turn("tool", "sunny", &[])],
            &[weather()],
            true,
        );
        assert_eq!(
            p.tools.as_ref().unwrap()[0]["function"]["name"],
            "get_weather"
        );
        let call = &p.messages[0]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], json!({"city": "Oslo"}));
        assert_eq!(call["id"], "call_1");
        assert_eq!(
            p.messages[1],
            json!({"role": "tool", "content": "sunny", "tool_call_id": "call_1"})
        );
    }
}
