//! Fields of OpenAI's chat-completions API that this server knows and does not implement.
//! Each is refused with a 400 that names it when it asks for something; a `null`, or the
//! value that asks for nothing (`modalities: ["text"]`, `store: false`), is accepted. Fields
//! nobody knows stay ignored.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
pub struct ChatRefused {
    audio: Option<Value>,
    modalities: Option<Vec<String>>,
    prediction: Option<Value>,
    reasoning_effort: Option<Value>,
    verbosity: Option<Value>,
    web_search_options: Option<Value>,
    functions: Option<Value>,
    function_call: Option<Value>,
    store: Option<bool>,
}

impl ChatRefused {
    pub fn check(&self) -> Result<(), ApiError> {
        let present = [
            ("audio", self.audio.is_some(), "audio output is not supported (text only)"),
            ("prediction", self.prediction.is_some(), "predicted outputs are not supported"),
            (
                "reasoning_effort",
                self.reasoning_effort.is_some(),
                "reasoning_effort is not supported: the model is not a reasoning model",
            ),
            ("verbosity", self.verbosity.is_some(), "verbosity is not supported"),
            (
                "web_search_options",
                self.web_search_options.is_some(),
                "web search is not supported",
            ),
            (
                "functions",
                self.functions.is_some(),
                "the legacy `functions` field is not supported; use `tools`",
            ),
            (
                "function_call",
                self.function_call.is_some(),
                "the legacy `function_call` field is not supported; use `tool_choice`",
            ),
            (
                "store",
                self.store == Some(true),
                "store is not supported: this server keeps no completions (send false or leave it out)",
            ),
        ];
        if let Some((name, _, why)) = present.into_iter().find(|(_, on, _)| *on) {
            return Err(refusal(name, why));
        }
        if let Some(m) = self
            .modalities
            .iter()
            .flatten()
            .find(|m| m.as_str() != "text")
        {
            return Err(refusal(
                "modalities",
                &format!("output modality `{m}` is not supported (only `text`)"),
            ));
        }
        Ok(())
    }
}

/// A 400 for field `name`, its message starting with the name.
pub fn refusal(name: &str, why: &str) -> ApiError {
    ApiError::invalid_param(name, format!("`{name}`: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<(), ApiError> {
        serde_json::from_str::<ChatRefused>(body)
            .expect("parses")
            .check()
    }

    #[test]
    fn asking_fields_are_refused_by_name_and_neutral_values_pass() {
        for ok in [
            "{}",
            r#"{"audio": null, "store": false, "modalities": ["text"], "prediction": null}"#,
        ] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for (body, name) in [
            (r#"{"audio": {"voice": "alloy", "format": "wav"}}"#, "audio"),
            (r#"{"modalities": ["text", "audio"]}"#, "modalities"),
            (
                r#"{"prediction": {"type": "content", "content": "x"}}"#,
                "prediction",
            ),
            (r#"{"reasoning_effort": "low"}"#, "reasoning_effort"),
            (r#"{"functions": []}"#, "functions"),
            (r#"{"store": true}"#, "store"),
        ] {
            let e = check(body).expect_err(body);
            assert_eq!(e.param.as_deref(), Some(name), "{body}");
            assert!(e.status == 400 && e.message.contains(name), "{e:?}");
        }
    }
}
