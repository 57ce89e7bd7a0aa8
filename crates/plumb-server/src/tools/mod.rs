//! Tool calling on the chat endpoint: `tools`, `tool_choice`, `parallel_tool_calls`.
//!
//! - [`plan`] checks the fields and decides what the model is told ([`prompt`]) and whether
//!   a call is forced: with `required` or a named function the output is constrained to the
//!   model family's call syntax with arguments valid against the function's `parameters`
//!   ([`family`]).
//! - The output is read back by family ([`parse`]): whole ([`message`]) or as it streams
//!   ([`stream`]), into OpenAI's `tool_calls` with ids `call_…` and `finish_reason:
//!   "tool_calls"`.

pub mod family;
pub mod parse;
pub mod prompt;
pub mod stream;
pub mod wire;

use serde_json::{json, Value};

use crate::error::ApiError;
pub use family::{Family, ToolFormat};
use wire::{FunctionDef, Tool, ToolChoice};

/// What a request does with its tools.
#[derive(Debug, Default)]
pub struct ToolPlan {
    /// The tools the prompt lists (none with `tool_choice: none`).
    pub offered: Vec<FunctionDef>,
    /// A call is forced: it names one of these.
    pub forced: Option<Vec<FunctionDef>>,
    /// Several calls may be made at once.
    pub parallel: bool,
}

impl ToolPlan {
    /// Whether the output is read for calls.
    pub fn reads_calls(&self) -> bool {
        !self.offered.is_empty()
    }

    /// The names of the functions one of which a call must name (none when no call is
    /// forced).
    #[cfg(test)]
    pub fn forced_names(&self) -> Vec<&str> {
        self.forced
            .iter()
            .flatten()
            .map(|f| f.name.as_str())
            .collect()
    }
}

/// Checks `tools`, `tool_choice` and `parallel_tool_calls`.
pub fn plan(
    tools: Option<&[Tool]>,
    choice: Option<&ToolChoice>,
    parallel: Option<bool>,
) -> Result<ToolPlan, ApiError> {
    let functions = functions(tools.unwrap_or_default())?;
    let mode = match choice {
        None if functions.is_empty() => "none",
        None => "auto",
        Some(ToolChoice::Mode(m)) => m.as_str(),
        Some(ToolChoice::Named(n)) => {
            if n.kind != "function" {
                return Err(ApiError::invalid_param(
                    "tool_choice.type",
                    format!(
                        "tool_choice of type `{}` is not supported (function only)",
                        n.kind
                    ),
                ));
            }
            let Some(f) = functions.iter().find(|f| f.name == n.function.name) else {
                return Err(ApiError::invalid_param(
                    "tool_choice.function.name",
                    format!(
                        "tool_choice names `{}`, which is not in tools",
                        n.function.name
                    ),
                ));
            };
            return Ok(ToolPlan {
                forced: Some(vec![f.clone()]),
                offered: functions,
                parallel: false,
            });
        }
    };
    let parallel = parallel.unwrap_or(true);
    match mode {
        "none" => Ok(ToolPlan::default()),
        "auto" => Ok(ToolPlan {
            offered: functions,
            forced: None,
            parallel,
        }),
        "required" if functions.is_empty() => Err(ApiError::invalid_param(
            "tool_choice",
            "tool_choice `required` needs at least one tool in tools",
        )),
        "required" => Ok(ToolPlan {
            forced: Some(functions.clone()),
            offered: functions,
            parallel,
        }),
        other => Err(ApiError::invalid_param(
            "tool_choice",
            format!(
                "tool_choice must be `none`, `auto`, `required` or a named function, got `{other}`"
            ),
        )),
    }
}

/// The function definitions of `tools`, checked: functions only, names of letters, digits,
/// `_` and `-` (at most 64), no name twice.
fn functions(tools: &[Tool]) -> Result<Vec<FunctionDef>, ApiError> {
    let mut out: Vec<FunctionDef> = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let bad = |what: &str, m: String| ApiError::invalid_param(&format!("tools[{i}]{what}"), m);
        let Some(f) = t.function.as_ref().filter(|_| t.kind == "function") else {
            return Err(bad(
                ".type",
                format!(
                    "tools of type `{}` are not supported (function only)",
                    t.kind
                ),
            ));
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if f.name.is_empty() || f.name.len() > 64 || !f.name.chars().all(ok) {
            return Err(bad(
                ".function.name",
                format!(
                    "a function name is 1 to 64 letters, digits, `_` or `-`, got `{}`",
                    f.name
                ),
            ));
        }
        if out.iter().any(|o| o.name == f.name) {
            return Err(bad(
                ".function.name",
                format!("the function `{}` is defined twice", f.name),
            ));
        }
        if let Some(p) = f.parameters.as_ref().filter(|p| !p.is_object()) {
            return Err(bad(
                ".function.parameters",
                format!("parameters must be a JSON schema object, got {p}"),
            ));
        }
        out.push(f.clone());
    }
    Ok(out)
}

/// The id of call `index` of choice `choice` of request `request`.
pub fn call_id(request: u64, choice: usize, index: usize) -> String {
    format!("call_{request}_{choice}_{index}")
}

/// One entry of `message.tool_calls`.
pub fn tool_call(id: String, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// The assistant message of a whole output read for calls, and whether it holds any.
pub fn message(family: Family, text: &str, request: u64, choice: usize) -> (Value, bool) {
    let (content, calls) = parse::finish(family, text);
    if calls.is_empty() {
        return (json!({"role": "assistant", "content": content}), false);
    }
    let tool_calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| tool_call(call_id(request, choice, i), name, args))
        .collect();
    let content = (!content.is_empty()).then_some(content);
    (
        json!({"role": "assistant", "content": content, "tool_calls": tool_calls}),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(v: Value) -> Vec<Tool> {
        serde_json::from_value(v).expect("tools")
    }

    fn choice(v: Value) -> ToolChoice {
        serde_json::from_value(v).expect("choice")
    }

    #[test]
    fn choices_decide_what_is_offered_and_forced() {
        let t = tools(json!([
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "b", "parameters": {"type": "object"}}},
        ]));
        let auto = plan(Some(&t), None, None).expect("auto");
        assert_eq!(
            (auto.offered.len(), auto.forced.is_none(), auto.parallel),
            (2, true, true)
        );
        let none = plan(Some(&t), Some(&choice(json!("none"))), None).expect("none");
        assert!(!none.reads_calls() && none.forced.is_none());
        let req = plan(Some(&t), Some(&choice(json!("required"))), Some(false)).expect("required");
        assert_eq!(
            (req.forced.as_ref().map(Vec::len), req.parallel),
            (Some(2), false)
        );
        let named = choice(json!({"type": "function", "function": {"name": "b"}}));
        let named = plan(Some(&t), Some(&named), None).expect("named");
        assert_eq!((named.forced_names(), named.parallel), (vec!["b"], false));
        assert!(!plan(None, None, None).expect("no tools").reads_calls());
    }

    #[test]
    fn bad_tools_and_choices_are_400_naming_the_field() {
        let t = tools(json!([{"type": "function", "function": {"name": "a"}}]));
        let param =
            |r: Result<ToolPlan, ApiError>| r.expect_err("refused").param.unwrap_or_default();
        assert_eq!(
            param(plan(Some(&t), Some(&choice(json!("sometimes"))), None)),
            "tool_choice"
        );
        let other = choice(json!({"type": "function", "function": {"name": "zz"}}));
        assert_eq!(
            param(plan(Some(&t), Some(&other), None)),
            "tool_choice.function.name"
        );
        assert_eq!(
            param(plan(None, Some(&choice(json!("required"))), None)),
            "tool_choice"
        );
        let twice = tools(json!([{"type": "function", "function": {"name": "a"}},
                                 {"type": "function", "function": {"name": "a"}}]));
        assert_eq!(
            param(plan(Some(&twice), None, None)),
            "tools[1].function.name"
        );
        let spaced = tools(json!([{"type": "function", "function": {"name": "a b"}}]));
        assert_eq!(
            param(plan(Some(&spaced), None, None)),
            "tools[0].function.name"
        );
        let kind = tools(json!([{"type": "web_search"}]));
        assert_eq!(param(plan(Some(&kind), None, None)), "tools[0].type");
        let params =
            tools(json!([{"type": "function", "function": {"name": "a", "parameters": 1}}]));
        assert_eq!(
            param(plan(Some(&params), None, None)),
            "tools[0].function.parameters"
        );
    }

    #[test]
    fn whole_outputs_become_tool_calls_or_content() {
        let out =
            "Checking.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>";
        let (m, calls) = message(Family::Hermes, out, 7, 0);
        assert!(calls);
        assert_eq!(m["content"], "Checking.");
        assert_eq!(
            m["tool_calls"][0],
            tool_call("call_7_0_0".into(), "a", "{\"x\": 1}")
        );
        let (m, calls) = message(Family::Hermes, "Just text.", 7, 0);
        assert!(!calls);
        assert_eq!(m, json!({"role": "assistant", "content": "Just text."}));
    }
}
