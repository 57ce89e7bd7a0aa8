//! OpenAI request bodies as they arrive on the wire, and their translation into an engine
//! [`Request`]. Unknown fields are ignored (clients send many); known fields with the wrong
//! type or an out-of-range value are a 400 naming the field.

use plumb_engine::serve::{Request, MAX_TOP_LOGPROBS};
use plumb_engine::SamplingParams;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::ApiError;
use crate::structured::ResponseFormat;
use crate::tools::wire::{MessageToolCall, Tool, ToolChoice};

/// Parses a JSON body, naming the field that failed (`param`) in the error.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(format!("the body is not valid JSON: {inner}"));
        }
        let what = "the body does not match the request schema";
        if path.is_empty() || path == "." || path.contains('?') {
            ApiError::invalid(format!("{what}: {inner}"))
        } else {
            ApiError::invalid_param(&path, format!("{what}: `{path}`: {inner}"))
        }
    })
}

/// `"stop"`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// The sampling and length fields both endpoints share.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub model: String,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub stop: Option<Stop>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub n: Option<i64>,
    /// Keep generating past end-of-sequence tokens (vLLM's extension).
    pub ignore_eos: Option<bool>,
}

/// `content`: a string or a list of parts (`{"type": "text", "text": ...}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: Option<Content>,
    /// An assistant message's calls.
    pub tool_calls: Option<Vec<MessageToolCall>>,
    /// A `tool` message: the call it answers.
    pub tool_call_id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    pub common: Common,
    pub messages: Vec<Message>,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub response_format: Option<ResponseFormat>,
}

/// `prompt`: text, or token ids; one prompt per request.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(flatten)]
    pub common: Common,
    pub prompt: Prompt,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub suffix: Option<String>,
}

impl Common {
    pub fn streaming(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The engine request for `prompt`. `max_tokens` is the already chosen budget field
    /// (`None`: `default_max`, where `None` means the rest of the context).
    pub fn to_request(
        &self,
        prompt: Vec<u32>,
        max_tokens: Option<i64>,
        default_max: Option<usize>,
        ctx: usize,
        logprobs: Option<usize>,
    ) -> Result<Request, ApiError> {
        let max_tokens = match max_tokens {
            Some(m) if m < 1 => {
                return Err(ApiError::invalid_param(
                    "max_tokens",
                    format!("max_tokens must be ≥ 1, got {m}"),
                ))
            }
            Some(m) => usize::try_from(m).unwrap_or(usize::MAX),
            // The rest of the context, at least 1 (an over-long prompt is then refused with
            // the context message).
            None => default_max.unwrap_or_else(|| ctx.saturating_sub(prompt.len()).max(1)),
        };
        let n = match self.n {
            None => 1,
            Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
            Some(n) => {
                return Err(ApiError::invalid_param(
                    "n",
                    format!("n must be ≥ 1, got {n}"),
                ))
            }
        };
        let top_k = match self.top_k {
            None => 0,
            // -1 is vLLM's "off".
            Some(k) if k <= 0 => 0,
            Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        };
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(1.0),
            top_k,
            top_p: self.top_p.unwrap_or(1.0),
            min_p: self.min_p.unwrap_or(0.0),
            repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            penalty_window: 64,
            seed: self.seed.map(|s| s as u64),
        };
        if let Some(p) = self.presence_penalty.filter(|p| !(-2.0..=2.0).contains(p)) {
            return Err(ApiError::invalid_param(
                "presence_penalty",
                format!("presence_penalty must be in [-2, 2], got {p}"),
            ));
        }
        if let Some(p) = self.frequency_penalty.filter(|p| !(-2.0..=2.0).contains(p)) {
            return Err(ApiError::invalid_param(
                "frequency_penalty",
                format!("frequency_penalty must be in [-2, 2], got {p}"),
            ));
        }
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if stop.len() > 16 {
            return Err(ApiError::invalid_param(
                "stop",
                format!("at most 16 stop sequences, got {}", stop.len()),
            ));
        }
        let mut req = Request::new(prompt, max_tokens);
        req.sampling = sampling;
        req.stop = stop;
        req.n = n;
        req.logprobs = logprobs;
        req.ignore_eos = self.ignore_eos.unwrap_or(false);
        Ok(req)
    }
}

/// The number of alternatives asked for, checked against the engine's limit.
pub fn top_count(param: &str, k: i64) -> Result<usize, ApiError> {
    match usize::try_from(k) {
        Ok(k) if k <= MAX_TOP_LOGPROBS => Ok(k),
        _ => Err(ApiError::invalid_param(
            param,
            format!("{param} must be between 0 and {MAX_TOP_LOGPROBS}, got {k}"),
        )),
    }
}

impl ChatRequest {
    pub fn logprobs(&self) -> Result<Option<usize>, ApiError> {
        match (self.logprobs.unwrap_or(false), self.top_logprobs) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(ApiError::invalid_param(
                "top_logprobs",
                "top_logprobs needs logprobs set to true",
            )),
            (true, k) => top_count("top_logprobs", k.unwrap_or(0)).map(Some),
        }
    }

    /// The text of each message's content.
    pub fn texts(&self) -> Result<Vec<(String, String)>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid_param(
                "messages",
                "messages must not be empty",
            ));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let text = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut text = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => text.push_str(t),
                                (kind, _) => {
                                    return Err(ApiError::invalid_param(
                                        &format!("messages[{i}].content"),
                                        format!("content parts of type `{kind}` are not supported (text only)"),
                                    ))
                                }
                            }
                        }
                        text
                    }
                };
                Ok((m.role.clone(), text))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ChatRequest, ApiError> {
        parse(body.as_bytes())
    }

    #[test]
    fn fields_map_to_the_engine_request() {
        let r = chat(
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "stop": "END", "top_k": -1, "seed": -1, "n": 2, "logprobs": true, "top_logprobs": 3,
                "unknown_field": {"ignored": true}}"#,
        )
        .expect("parses");
        assert_eq!(
            r.texts().expect("texts"),
            vec![("user".into(), "hi".into())]
        );
        assert_eq!(r.logprobs().expect("logprobs"), Some(3));
        let e = r
            .common
            .to_request(vec![1, 2, 3], None, None, 100, Some(3))
            .expect("request");
        assert_eq!(
            (e.max_tokens, e.n, e.stop.clone()),
            (97, 2, vec!["END".to_string()])
        );
        assert_eq!((e.sampling.top_k, e.sampling.seed), (0, Some(u64::MAX)));
        assert_eq!((e.sampling.temperature, e.sampling.top_p), (1.0, 1.0));
    }

    #[test]
    fn bad_bodies_are_400_with_a_reason() {
        let e = chat("{").expect_err("syntax");
        assert!(e.message.contains("not valid JSON") && e.status == 400);
        let e = chat(r#"{"model": "m", "messages": [{"role": 1}]}"#).expect_err("type");
        assert_eq!(e.param.as_deref(), Some("messages[0].role"), "{e:?}");
        let r = chat(r#"{"model": "m", "messages": [], "top_logprobs": 2}"#).expect("parses");
        assert!(r.texts().is_err() && r.logprobs().is_err());
        let e = r
            .common
            .to_request(vec![1], Some(0), None, 10, None)
            .expect_err("0");
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(top_count("logprobs", 21).is_err() && top_count("logprobs", -1).is_err());
    }
}
