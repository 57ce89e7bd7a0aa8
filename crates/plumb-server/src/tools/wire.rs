//! The tool fields of a chat request as OpenAI's clients send them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One entry of `tools`.
#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<FunctionDef>,
}

/// OpenAI's `strict` is accepted and not used: a forced call always follows the schema, an
/// `auto` one is read as the model wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments object; absent: no arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// `tool_choice`: `"auto"`, `"none"`, `"required"` or `{"type": "function", "function":
/// {"name": ...}}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(NamedChoice),
}

#[derive(Debug, Deserialize)]
pub struct NamedChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// A call in an assistant message of the conversation.
#[derive(Debug, Deserialize)]
pub struct MessageToolCall {
    pub id: Option<String>,
    pub function: CallFunction,
}

#[derive(Debug, Deserialize)]
pub struct CallFunction {
    pub name: String,
    /// OpenAI sends a JSON-encoded string; an object is accepted too.
    pub arguments: Value,
}

impl CallFunction {
    /// The arguments as a JSON value (templates index into them), and as JSON text for a
    /// prompt. A string that is not JSON stays a string.
    pub fn arguments(&self) -> (Value, String) {
        match &self.arguments {
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) => (v, s.clone()),
                Err(_) => (self.arguments.clone(), self.arguments.to_string()),
            },
            v => (v.clone(), v.to_string()),
        }
    }
}
