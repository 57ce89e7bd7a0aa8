//! Tool-call families: which syntax a model writes its calls in, chosen from its chat
//! template and vocabulary, and the grammar that forces a well-formed call in that syntax.

use plumb_engine::constrain::with_layout;
use plumb_tokenizer::Tokenizer;
use serde_json::{json, Value};

use super::wire::FunctionDef;

pub const HERMES_OPEN: &str = "<tool_call>";
pub const HERMES_CLOSE: &str = "</tool_call>";
pub const MISTRAL_CALLS: &str = "[TOOL_CALLS]";
pub const MISTRAL_ARGS: &str = "[ARGS]";
pub const PYTHON_TAG: &str = "<|python_tag|>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Hermes / Qwen: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`.
    Hermes,
    /// Llama 3.x: `{"name": ..., "parameters": {...}}`, or after `<|python_tag|>`.
    Llama3,
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}]`.
    Mistral,
    /// Any other template that takes tools: the output is a call object or a list of them.
    Json,
}

/// How a model takes tools and writes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolFormat {
    pub family: Family,
    /// The chat template renders `tools` and tool messages itself; otherwise plumb writes
    /// them into the conversation in Hermes style.
    pub native: bool,
}

impl ToolFormat {
    /// The format of a model with chat template `template` and tokenizer `tok`.
    pub fn detect(template: &str, tok: &Tokenizer) -> ToolFormat {
        let native = template.contains("tools");
        let family = if !native || template.contains(HERMES_OPEN) {
            Family::Hermes
        } else if template.contains(MISTRAL_CALLS) || tok.token_id(MISTRAL_CALLS).is_some() {
            Family::Mistral
        } else if template.contains(PYTHON_TAG) || template.contains("ipython") {
            Family::Llama3
        } else {
            Family::Json
        };
        ToolFormat { family, native }
    }
}

impl Family {
    /// The key a call's arguments go under.
    fn arguments_key(self) -> &'static str {
        match self {
            Family::Llama3 => "parameters",
            _ => "arguments",
        }
    }

    /// A Lark grammar whose every output is a well-formed call (several with `parallel`) of
    /// one of `functions`, in this family's syntax, arguments valid against the function's
    /// `parameters` schema.
    pub fn forced_grammar(
        self,
        functions: &[FunctionDef],
        parallel: bool,
        tok: &Tokenizer,
    ) -> String {
        let key = self.arguments_key();
        let calls: Vec<Value> = functions
            .iter()
            .map(|f| {
                let params = f
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f.name}, key: params},
                    "required": ["name", key],
                    "additionalProperties": false,
                })
            })
            .collect();
        let one = match <[Value; 1]>::try_from(calls.clone()) {
            Ok([only]) => only,
            Err(_) => json!({"anyOf": calls}),
        };
        let listed = |max: Option<usize>| {
            let mut list = json!({"type": "array", "items": one.clone(), "minItems": 1});
            if let Some(m) = max {
                list["maxItems"] = json!(m);
            }
            list
        };
        let body = |schema: Value| format!("%json {}", with_layout(schema));
        match (self, parallel) {
            (Family::Hermes, _) => format!(
                "start: call{}\ncall: {} \"\\n\" body \"\\n\" {}\nbody: {}\n",
                if parallel { " (\"\\n\" call)*" } else { "" },
                marker(tok, HERMES_OPEN),
                marker(tok, HERMES_CLOSE),
                body(one),
            ),
            (Family::Llama3, true) => format!("start: body (\"; \" body)*\nbody: {}\n", body(one)),
            (Family::Llama3 | Family::Json, false) => format!("start: {}\n", body(one)),
            (Family::Mistral, _) => format!(
                "start: {} {}\n",
                marker(tok, MISTRAL_CALLS),
                body(listed((!parallel).then_some(1)))
            ),
            (Family::Json, true) => format!("start: {}\n", body(listed(None))),
        }
    }
}

/// `text` in a Lark rule: the control token by id when the vocabulary has it as one (text
/// never spells a control token), else the literal.
fn marker(tok: &Tokenizer, text: &str) -> String {
    match tok.token_id(text).filter(|&id| tok.is_special(id)) {
        Some(id) => format!("<[{id}]>"),
        None => Value::String(text.into()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use plumb_engine::constrain::{Constrainer, GrammarSpec};

    use super::*;

    fn default_tokenizer() -> Tokenizer {
        let path = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
            .expect("the default model");
        let file = plumb_gguf::GgufFile::open(&path).expect("open");
        Tokenizer::from_gguf(&file).expect("tokenizer")
    }

    fn function(name: &str) -> FunctionDef {
        FunctionDef {
            name: name.into(),
            description: None,
            parameters: Some(json!({"type": "object", "properties": {"q": {"type": "string"}}})),
        }
    }

    #[test]
    fn families_come_from_the_template() {
        let tok = default_tokenizer();
        let f = |src: &str| ToolFormat::detect(src, &tok);
        let plain = "{% for m in messages %}{{ m.content }}{% endfor %}";
        assert_eq!(
            f(plain),
            ToolFormat {
                family: Family::Hermes,
                native: false
            }
        );
        let qwen = "{% if tools %}<tool_call>{% endif %}";
        assert_eq!(
            f(qwen),
            ToolFormat {
                family: Family::Hermes,
                native: true
            }
        );
        let llama = "{% if tools %}<|python_tag|>{% endif %}";
        assert_eq!(f(llama).family, Family::Llama3);
        assert_eq!(f("{{ tools }}[TOOL_CALLS]").family, Family::Mistral);
        assert_eq!(f("{{ tools | tojson }}").family, Family::Json);
    }

    /// Every family's forced grammar compiles; Hermes's reads as the syntax it forces.
    #[test]
    fn forced_grammars_compile_in_every_family() {
        let tok = default_tokenizer();
        let c = Constrainer::new(Arc::new(default_tokenizer())).expect("constrainer");
        let fs = [function("a"), function("b")];
        for family in [
            Family::Hermes,
            Family::Llama3,
            Family::Mistral,
            Family::Json,
        ] {
            for parallel in [false, true] {
                let lark = family.forced_grammar(&fs, parallel, &tok);
                let r = c.compile(GrammarSpec::Lark(lark.clone()));
                assert!(r.is_ok(), "{family:?} {parallel}: {r:?}\n{lark}");
            }
        }
        let one = Family::Hermes.forced_grammar(&fs[..1], false, &tok);
        let head = "start: call\ncall: \"<tool_call>\" \"\\n\" body \"\\n\" \"</tool_call>\"\nbody: %json ";
        assert!(one.starts_with(head), "{one}");
        assert!(one.contains(r#""name":{"const":"a"}"#), "{one}");
    }
}
