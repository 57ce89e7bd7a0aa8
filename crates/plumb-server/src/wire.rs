//! OpenAI request bodies as they arrive on the wire, and their translation into an engine
//! [`Request`]. Unknown fields are ignored (clients send many); known fields with the wrong
//! type or an out-of-range value are a 400 naming the field. [`ChatBody`] is the chat body
//! that the Messages and Responses requests are translated into.

use std::collections::HashMap;

use plumb_engine::serve::{Request, MAX_TOP_LOGPROBS};
use plumb_engine::SamplingParams;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::refuse::ChatRefused;
use crate::structured::ResponseFormat;
use crate::tools::wire::{MessageToolCall, Tool, ToolChoice};
use crate::tools::{self, ToolPlan};

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
    /// Token id (a string, as JSON keys are) to a bias added to its logit.
    pub logit_bias: Option<HashMap<String, f32>>,
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
    /// Continue the last (assistant) message instead of opening a new turn (vLLM's
    /// extension).
    pub continue_final_message: Option<bool>,
    #[serde(flatten)]
    pub refused: ChatRefused,
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
    pub best_of: Option<i64>,
}

/// What the engine and the tokenizer can take, for the checks that name a field.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Context size: prompt + max_tokens.
    pub ctx: usize,
    /// Most choices (`n`) a request may ask for.
    pub max_batch: usize,
    /// Token ids are below this.
    pub vocab: usize,
}

/// Largest magnitude of a `logit_bias` value, as in OpenAI's API.
const MAX_LOGIT_BIAS: f32 = 100.0;

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
        limits: &Limits,
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
            None => default_max.unwrap_or_else(|| limits.ctx.saturating_sub(prompt.len()).max(1)),
        };
        let top_k = match self.top_k {
            None => 0,
            // -1 is vLLM's "off".
            Some(k) if k <= 0 => 0,
            Some(k) => usize::try_from(k).unwrap_or(usize::MAX),
        };
        for (name, p) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(p) = p.filter(|p| !(-2.0..=2.0).contains(p)) {
                return Err(ApiError::invalid_param(
                    name,
                    format!("{name} must be in [-2, 2], got {p}"),
                ));
            }
        }
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
            logit_bias: self.logit_bias(limits.vocab)?,
        };
        let mut req = Request::new(prompt, max_tokens);
        req.sampling = sampling;
        req.stop = self.stops()?;
        req.n = self.choices(limits.max_batch)?;
        req.logprobs = logprobs;
        req.ignore_eos = self.ignore_eos.unwrap_or(false);
        Ok(req)
    }

    fn choices(&self, max_batch: usize) -> Result<usize, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if n >= 1 && n as u64 <= max_batch as u64 => Ok(n as usize),
            Some(n) => Err(ApiError::invalid_param(
                "n",
                format!("n must be between 1 and {max_batch} (the server's batch size), got {n}"),
            )),
        }
    }

    fn stops(&self) -> Result<Vec<String>, ApiError> {
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
        Ok(stop)
    }

    /// `logit_bias`: token ids (as strings) to a bias in [-100, 100], in id order.
    fn logit_bias(&self, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
        let Some(map) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        let bad = |m: String| ApiError::invalid_param("logit_bias", m);
        let mut bias = map
            .iter()
            .map(|(key, &b)| {
                let id = key
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&id| (id as usize) < vocab)
                    .ok_or_else(|| {
                        bad(format!(
                            "logit_bias keys are token ids below {vocab}, got `{key}`"
                        ))
                    })?;
                if !(-MAX_LOGIT_BIAS..=MAX_LOGIT_BIAS).contains(&b) {
                    return Err(bad(format!(
                        "logit_bias values must be in [-100, 100], got {b} for token {id}"
                    )));
                }
                Ok((id, b))
            })
            .collect::<Result<Vec<_>, _>>()?;
        bias.sort_by_key(|&(id, _)| id);
        Ok(bias)
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

    /// Each message's role and text: text parts are joined, a `developer` message is a
    /// system message (as OpenAI treats it), other parts are refused by index.
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
                    Some(Content::Parts(parts)) => join_parts(i, parts)?,
                };
                let role = match m.role.as_str() {
                    "developer" => "system",
                    r => r,
                };
                Ok((role.to_string(), text))
            })
            .collect()
    }

    /// Whether the prompt continues the last message; that message must be the assistant's.
    pub fn continues_final(&self) -> Result<bool, ApiError> {
        if !self.continue_final_message.unwrap_or(false) {
            return Ok(false);
        }
        match self.messages.last() {
            Some(m) if m.role == "assistant" => Ok(true),
            _ => Err(ApiError::invalid_param(
                "continue_final_message",
                "continue_final_message needs the last message to be the assistant's",
            )),
        }
    }

    /// The tools this request offers and the call it forces, from its `tools`, `tool_choice`
    /// and `parallel_tool_calls`.
    pub fn tool_plan(&self) -> Result<ToolPlan, ApiError> {
        tools::plan(
            self.tools.as_deref(),
            self.tool_choice.as_ref(),
            self.parallel_tool_calls,
        )
    }
}

/// A chat-completions body built field by field: what the Messages and Responses requests are
/// translated into before they run as chat requests.
pub struct ChatBody(Map<String, Value>);

impl ChatBody {
    pub fn new(model: &str, messages: Vec<Value>) -> ChatBody {
        let mut body = Map::new();
        body.insert("model".into(), json!(model));
        body.insert("messages".into(), Value::Array(messages));
        ChatBody(body)
    }

    /// Sets `key` to `v` when there is one.
    pub fn put(&mut self, key: &str, v: Option<Value>) {
        if let Some(v) = v {
            self.0.insert(key.into(), v);
        }
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// A translated chat body as the chat request it stands for, or a 400 saying why it cannot
/// be served.
pub fn chat_request(body: Value) -> Result<ChatRequest, ApiError> {
    serde_json::from_value(body)
        .map_err(|e| ApiError::invalid(format!("the request cannot be served: {e}")))
}

fn join_parts(message: usize, parts: &[ContentPart]) -> Result<String, ApiError> {
    let mut text = String::new();
    for (j, p) in parts.iter().enumerate() {
        match (p.kind.as_str(), &p.text) {
            ("text", Some(t)) => text.push_str(t),
            (kind, _) => {
                let param = format!("messages[{message}].content[{j}]");
                return Err(ApiError::invalid_param(
                    &param,
                    format!("{param}: content parts of type `{kind}` are not supported (only `text` parts with a `text` field)"),
                ));
            }
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ChatRequest, ApiError> {
        parse(body.as_bytes())
    }

    fn limits(ctx: usize) -> Limits {
        Limits {
            ctx,
            max_batch: 4,
            vocab: 1000,
        }
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
            .to_request(vec![1, 2, 3], None, None, &limits(100), Some(3))
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
            .to_request(vec![1], Some(0), None, &limits(10), None)
            .expect_err("0");
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert!(top_count("logprobs", 21).is_err() && top_count("logprobs", -1).is_err());
    }

    #[test]
    fn logit_bias_and_n_are_checked_against_the_limits() {
        let request = |extra: &str| {
            let body = format!(
                r#"{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}]{extra}}}"#
            );
            chat(&body).expect("parses").common.to_request(
                vec![1],
                Some(1),
                None,
                &limits(10),
                None,
            )
        };
        let r = request(r#", "logit_bias": {"7": -100, " 3": 2.5}"#).expect("bias");
        assert_eq!(r.sampling.logit_bias, vec![(3, 2.5), (7, -100.0)]);
        for bad in [r#"{"1000": 1}"#, r#"{"x": 1}"#, r#"{"5": 100.5}"#] {
            let e = request(&format!(r#", "logit_bias": {bad}"#)).expect_err(bad);
            assert_eq!(e.param.as_deref(), Some("logit_bias"), "{bad}: {e:?}");
        }
        assert_eq!(request(r#", "n": 4"#).expect("n = batch").n, 4);
        let e = request(r#", "n": 5"#).expect_err("n over the batch");
        assert!(
            e.param.as_deref() == Some("n") && e.message.contains('4'),
            "{e:?}"
        );
    }

    #[test]
    fn messages_roles_parts_and_continuation() {
        let r = chat(
            r#"{"model": "m", "continue_final_message": true, "messages": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "The answer is"}]}"#,
        )
        .expect("parses");
        let roles: Vec<(String, String)> = r.texts().expect("texts");
        assert_eq!(roles[0], ("system".into(), "rules".into()));
        assert_eq!(roles[1], ("user".into(), "ab".into()));
        assert!(r.continues_final().expect("continues"));
        let r = chat(
            r#"{"model": "m", "continue_final_message": true, "messages": [
                {"role": "user", "content": [{"type": "text", "text": "a"},
                 {"type": "image_url", "image_url": {"url": "x"}}]}]}"#,
        )
        .expect("parses");
        let e = r.texts().expect_err("image part");
        assert_eq!(e.param.as_deref(), Some("messages[0].content[1]"));
        assert!(e.message.contains("image_url"), "{e:?}");
        assert!(
            r.continues_final().is_err(),
            "the last message is the user's"
        );
    }
}
