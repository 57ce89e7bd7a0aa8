//! Engine events to OpenAI responses: a whole `chat.completion` / `text_completion` object,
//! or a server-sent-event stream of chunks ending in `data: [DONE]`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use plumb_engine::serve::{Event, EventReceiver, TokenEvent, TokenLogprob};
use plumb_engine::FinishReason;
use plumb_tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::tools::stream::ToolStream;
use crate::tools::{self, Family};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Chat,
    Completion,
}

/// What a response needs besides the events.
pub struct Job {
    pub shape: Shape,
    pub id: String,
    pub created: u64,
    pub model: String,
    pub n: usize,
    pub prompt_tokens: usize,
    pub include_usage: bool,
    pub logprobs: bool,
    pub tok: Arc<Tokenizer>,
    /// The engine's id of the request (tool call ids derive from it).
    pub request: u64,
    /// Read the output for tool calls in this family's syntax.
    pub tools: Option<Family>,
}

fn finish_str(f: FinishReason) -> &'static str {
    f.as_str()
}

/// A choice that ended by itself after making tool calls says so.
fn finish_with_calls(f: FinishReason, called: bool) -> &'static str {
    if called && f == FinishReason::Stop {
        "tool_calls"
    } else {
        finish_str(f)
    }
}

impl Job {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.shape, chunk) {
            (Shape::Chat, false) => "chat.completion",
            (Shape::Chat, true) => "chat.completion.chunk",
            (Shape::Completion, _) => "text_completion",
        }
    }

    fn token_text(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self.tok.token_bytes(id);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }

    /// Chat shape of one token's logprob entry.
    fn chat_logprob(&self, id: u32, lp: &TokenLogprob) -> Value {
        let entry = |id: u32, logprob: f32| {
            let (token, bytes) = self.token_text(id);
            json!({"token": token, "logprob": logprob, "bytes": bytes})
        };
        let mut e = entry(id, lp.logprob);
        e["top_logprobs"] = lp.top.iter().map(|&(t, l)| entry(t, l)).collect();
        e
    }

    /// `cached_tokens`: prompt tokens whose keys and values came from the prefix cache.
    fn usage(&self, completion_tokens: usize, cached_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        })
    }
}

/// Completions-shape logprobs, built token by token.
#[derive(Default)]
struct CompletionLogprobs {
    tokens: Vec<String>,
    token_logprobs: Vec<f32>,
    top_logprobs: Vec<Value>,
    text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    fn push(&mut self, job: &Job, t: &TokenEvent, lp: &TokenLogprob, offset: usize) {
        self.tokens.push(job.token_text(t.token).0);
        self.token_logprobs.push(lp.logprob);
        let top: serde_json::Map<String, Value> = lp
            .top
            .iter()
            .map(|&(id, l)| (job.token_text(id).0, json!(l)))
            .collect();
        self.top_logprobs.push(Value::Object(top));
        self.text_offset.push(offset);
    }

    fn to_json(&self) -> Value {
        json!({
            "tokens": self.tokens,
            "token_logprobs": self.token_logprobs,
            "top_logprobs": self.top_logprobs,
            "text_offset": self.text_offset,
        })
    }
}

#[derive(Default)]
struct Acc {
    text: String,
    finish: Option<FinishReason>,
    completion_tokens: usize,
    chat_lp: Vec<Value>,
    comp_lp: CompletionLogprobs,
}

/// Waits for every choice and builds the response object.
pub async fn collect(job: Job, mut rx: EventReceiver) -> Result<Value, ApiError> {
    let mut accs: Vec<Acc> = (0..job.n).map(|_| Acc::default()).collect();
    let mut cached_tokens = 0;
    while let Some(ev) = rx.next().await {
        match ev {
            Event::Token(t) => {
                let Some(a) = accs.get_mut(t.choice) else {
                    continue;
                };
                if let Some(lp) = &t.logprob {
                    match job.shape {
                        Shape::Chat => a.chat_lp.push(job.chat_logprob(t.token, lp)),
                        Shape::Completion => a.comp_lp.push(&job, &t, lp, a.text.len()),
                    }
                }
                a.text.push_str(&t.text);
            }
            Event::Done(d) => {
                cached_tokens = d.cached_tokens;
                if let Some(a) = accs.get_mut(d.choice) {
                    a.text.push_str(&d.text);
                    a.finish = Some(d.finish_reason);
                    a.completion_tokens = d.completion_tokens;
                }
            }
            Event::Error(e) => return Err(ApiError::internal(e)),
        }
    }
    if accs.iter().any(|a| a.finish.is_none()) {
        return Err(ApiError::internal("the engine ended the request early"));
    }
    let completion_tokens = accs.iter().map(|a| a.completion_tokens).sum();
    let choices: Vec<Value> = accs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let finish = a.finish.map(finish_str);
            match job.shape {
                Shape::Chat => {
                    let (message, called) = match job.tools {
                        Some(family) => tools::message(family, &a.text, job.request, i),
                        None => (json!({"role": "assistant", "content": a.text}), false),
                    };
                    json!({
                        "index": i,
                        "message": message,
                        "logprobs": job.logprobs.then(|| json!({"content": a.chat_lp})),
                        "finish_reason": a.finish.map(|f| finish_with_calls(f, called)),
                    })
                }
                Shape::Completion => json!({
                    "index": i,
                    "text": a.text,
                    "logprobs": job.logprobs.then(|| a.comp_lp.to_json()),
                    "finish_reason": finish,
                }),
            }
        })
        .collect();
    Ok(json!({
        "id": job.id,
        "object": job.object(false),
        "created": job.created,
        "model": job.model,
        "system_fingerprint": null,
        "choices": choices,
        "usage": job.usage(completion_tokens, cached_tokens),
    }))
}

/// Streaming state: events in, SSE chunks out.
struct Streamer {
    job: Job,
    rx: EventReceiver,
    out: VecDeque<SseEvent>,
    done: usize,
    completion_tokens: usize,
    cached_tokens: usize,
    /// Bytes of text sent per choice (completions `text_offset`).
    offsets: Vec<usize>,
    /// Per choice, when the output is read for tool calls.
    tool_streams: Vec<ToolStream>,
    finished: bool,
}

impl Streamer {
    fn chunk(&self, choice: Value) -> Value {
        let mut c = json!({
            "id": self.job.id,
            "object": self.job.object(true),
            "created": self.job.created,
            "model": self.job.model,
            "system_fingerprint": null,
            "choices": [choice],
        });
        if self.job.include_usage {
            c["usage"] = Value::Null;
        }
        c
    }

    fn push(&mut self, v: Value) {
        self.out.push_back(SseEvent::default().data(v.to_string()));
    }

    fn push_text(&mut self, choice: usize, text: &str, logprobs: Value, finish: Option<&str>) {
        match self.job.shape {
            Shape::Chat => {
                let delta = if text.is_empty() && finish.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                self.push_delta(choice, delta, logprobs, finish);
            }
            Shape::Completion => {
                let c = json!({"index": choice, "text": text, "logprobs": logprobs, "finish_reason": finish});
                let c = self.chunk(c);
                self.push(c);
            }
        }
    }

    fn push_delta(&mut self, choice: usize, delta: Value, logprobs: Value, finish: Option<&str>) {
        let c =
            json!({"index": choice, "delta": delta, "logprobs": logprobs, "finish_reason": finish});
        let c = self.chunk(c);
        self.push(c);
    }

    /// A chat token of a choice read for tool calls: its deltas (the logprobs ride on the
    /// first, or on an empty delta of their own).
    fn push_tool_text(&mut self, choice: usize, text: &str, mut logprobs: Value) {
        let deltas = match self.tool_streams.get_mut(choice) {
            Some(ts) => ts.push(text),
            None => return,
        };
        for d in deltas {
            self.push_delta(choice, d.to_openai(), std::mem::take(&mut logprobs), None);
        }
        if !logprobs.is_null() {
            self.push_delta(choice, json!({}), logprobs, None);
        }
    }

    /// The end of a choice read for tool calls.
    fn finish_tool_text(&mut self, choice: usize, tail: &str, reason: FinishReason) {
        self.push_tool_text(choice, tail, Value::Null);
        let Some(ts) = self.tool_streams.get_mut(choice) else {
            return;
        };
        let (deltas, called) = ts.finish();
        for d in deltas {
            self.push_delta(choice, d.to_openai(), Value::Null, None);
        }
        self.push_delta(
            choice,
            json!({}),
            Value::Null,
            Some(finish_with_calls(reason, called)),
        );
    }

    fn on_event(&mut self, ev: Option<Event>) {
        match ev {
            Some(Event::Token(t)) => {
                let lp = match (&t.logprob, self.job.shape) {
                    (None, _) => Value::Null,
                    (Some(lp), Shape::Chat) => {
                        json!({"content": [self.job.chat_logprob(t.token, lp)]})
                    }
                    (Some(lp), Shape::Completion) => {
                        let mut c = CompletionLogprobs::default();
                        let offset = self.offsets.get(t.choice).copied().unwrap_or(0);
                        c.push(&self.job, &t, lp, offset);
                        c.to_json()
                    }
                };
                if let Some(o) = self.offsets.get_mut(t.choice) {
                    *o += t.text.len();
                }
                if !self.tool_streams.is_empty() {
                    self.push_tool_text(t.choice, &t.text, lp);
                } else if !t.text.is_empty() || !lp.is_null() {
                    self.push_text(t.choice, &t.text, lp, None);
                }
            }
            Some(Event::Done(d)) => {
                if !self.tool_streams.is_empty() {
                    self.finish_tool_text(d.choice, &d.text, d.finish_reason);
                } else {
                    if !d.text.is_empty() {
                        self.push_text(d.choice, &d.text, Value::Null, None);
                    }
                    self.push_text(d.choice, "", Value::Null, Some(finish_str(d.finish_reason)));
                }
                self.completion_tokens += d.completion_tokens;
                self.cached_tokens = d.cached_tokens;
                self.done += 1;
                if self.done >= self.job.n {
                    self.end();
                }
            }
            Some(Event::Error(e)) => {
                let body = ApiError::internal(e).body();
                self.push(body);
                self.end();
            }
            None => {
                let body = ApiError::internal("the engine ended the request early").body();
                self.push(body);
                self.end();
            }
        }
    }

    fn end(&mut self) {
        if self.job.include_usage {
            let mut last = self.chunk(Value::Null);
            last["choices"] = json!([]);
            last["usage"] = self.job.usage(self.completion_tokens, self.cached_tokens);
            self.push(last);
        }
        self.out.push_back(SseEvent::default().data("[DONE]"));
        self.finished = true;
    }
}

/// The SSE response. Dropping it (the client went away) drops the receiver, which frees the
/// request's sequences in the engine.
pub fn stream(
    job: Job,
    rx: EventReceiver,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let tool_streams = match (job.tools, job.shape) {
        (Some(family), Shape::Chat) => (0..job.n)
            .map(|i| ToolStream::new(family, job.request, i))
            .collect(),
        _ => Vec::new(),
    };
    let mut s = Streamer {
        offsets: vec![0; job.n],
        tool_streams,
        job,
        rx,
        out: VecDeque::new(),
        done: 0,
        completion_tokens: 0,
        cached_tokens: 0,
        finished: false,
    };
    if s.job.shape == Shape::Chat {
        for i in 0..s.job.n {
            let c = json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null});
            let c = s.chunk(c);
            s.push(c);
        }
    }
    let events = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(ev) = s.out.pop_front() {
                return Some((Ok(ev), s));
            }
            if s.finished {
                return None;
            }
            let ev = s.rx.next().await;
            s.on_event(ev);
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
