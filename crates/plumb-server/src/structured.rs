//! `response_format`: what the assistant's text must be. OpenAI's `text`, `json_object` and
//! `json_schema`, and plumb's `grammar` (a Lark grammar or a regular expression, in the shape
//! of OpenAI's grammar objects: `{"syntax": "lark" | "regex", "definition": "..."}`).

use plumb_engine::constrain::GrammarSpec;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        json_schema: JsonSchemaFormat,
    },
    /// plumb's extension.
    Grammar {
        grammar: GrammarFormat,
    },
}

/// OpenAI's `name`, `description` and `strict` are accepted and not used: the schema is
/// always enforced.
#[derive(Debug, Deserialize)]
pub struct JsonSchemaFormat {
    /// Absent: any JSON value.
    pub schema: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct GrammarFormat {
    pub syntax: GrammarSyntax,
    pub definition: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrammarSyntax {
    Lark,
    Regex,
}

impl ResponseFormat {
    /// The constraint this format asks for (`None`: free text).
    pub fn spec(&self) -> Result<Option<GrammarSpec>, ApiError> {
        Ok(match self {
            ResponseFormat::Text => None,
            ResponseFormat::JsonObject => Some(GrammarSpec::JsonSchema(json!({"type": "object"}))),
            ResponseFormat::JsonSchema { json_schema } => {
                let schema = json_schema.schema.clone().unwrap_or_else(|| json!({}));
                if !(schema.is_object() || schema.is_boolean()) {
                    return Err(ApiError::invalid_param(
                        "response_format.json_schema.schema",
                        "the schema must be a JSON object",
                    ));
                }
                Some(GrammarSpec::JsonSchema(schema))
            }
            ResponseFormat::Grammar { grammar } => {
                let text = grammar.definition.clone();
                Some(match grammar.syntax {
                    GrammarSyntax::Lark => GrammarSpec::Lark(text),
                    GrammarSyntax::Regex => GrammarSpec::Regex(text),
                })
            }
        })
    }
}

/// The `param` a compile error of this format is reported under.
pub fn param_of(format: &ResponseFormat) -> &'static str {
    match format {
        ResponseFormat::JsonSchema { .. } => "response_format.json_schema.schema",
        ResponseFormat::Grammar { .. } => "response_format.grammar.definition",
        ResponseFormat::Text | ResponseFormat::JsonObject => "response_format",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(v: Value) -> Result<ResponseFormat, ApiError> {
        crate::wire::parse(v.to_string().as_bytes())
    }

    #[test]
    fn every_format_maps_to_its_constraint() {
        let spec = |v| format(v).expect("parses").spec().expect("valid");
        assert_eq!(spec(json!({"type": "text"})), None);
        assert_eq!(
            spec(json!({"type": "json_object"})),
            Some(GrammarSpec::JsonSchema(json!({"type": "object"})))
        );
        let s = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert_eq!(
            spec(
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": s, "strict": true}})
            ),
            Some(GrammarSpec::JsonSchema(s))
        );
        assert_eq!(
            spec(
                json!({"type": "grammar", "grammar": {"syntax": "regex", "definition": "[0-9]+"}})
            ),
            Some(GrammarSpec::Regex("[0-9]+".into()))
        );
        assert_eq!(
            spec(
                json!({"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: \"a\""}})
            ),
            Some(GrammarSpec::Lark("start: \"a\"".into()))
        );
    }

    #[test]
    fn unknown_types_and_non_object_schemas_are_400() {
        assert!(format(json!({"type": "yaml"})).is_err());
        let e = format(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}))
            .expect("parses")
            .spec()
            .expect_err("refused");
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema")
        );
    }
}
