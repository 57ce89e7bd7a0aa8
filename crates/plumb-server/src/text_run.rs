//! One choice's engine events as text for the APIs that return a single text (Anthropic's
//! Messages, OpenAI's Responses): text pieces, then how it ended — including which stop
//! sequence ended it — and a server-sent-event stream driven by a [`TextProtocol`]. A run
//! that offers tools reads the output for calls as the chat endpoint does ([`ToolStream`]):
//! content pieces, then per call its start and its arguments in fragments, adding up to
//! what the whole output reads as.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use plumb_engine::serve::{DoneEvent, Event, EventReceiver};
use plumb_engine::FinishReason;
use plumb_tokenizer::Tokenizer;

use crate::error::ApiError;
use crate::tools::stream::{Delta, ToolStream};
use crate::tools::Family;

/// Why the text ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn (an end-of-sequence token).
    EndTurn,
    /// This stop sequence was generated (it is not part of the text).
    StopSequence(String),
    /// The token budget ran out.
    MaxTokens,
    /// The model ended its turn, or a stop sequence ended it, after calling tools.
    ToolUse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub finish: Finish,
    pub completion_tokens: usize,
}

pub enum Piece {
    Text(String),
    /// Call `index` begins (only when the output is read for calls).
    CallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments, JSON text.
    CallArguments {
        index: usize,
        fragment: String,
    },
    End(Outcome),
    Failed(String),
}

/// A tool call the output made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// `call_…`, unique in the server's run.
    pub id: String,
    pub name: String,
    /// JSON text.
    pub arguments: String,
}

/// A whole run: its text (the content, without the calls' syntax), its calls, its end.
#[derive(Debug)]
pub struct Output {
    pub text: String,
    pub calls: Vec<ToolCall>,
    pub outcome: Outcome,
}

/// Reads one choice's events.
pub struct TextRun {
    rx: EventReceiver,
    tok: Arc<Tokenizer>,
    stops: Vec<String>,
    /// The bytes of every generated token: the text plus what a stop sequence cut off.
    raw: Vec<u8>,
    /// Bytes of text given out so far.
    text_len: usize,
    /// Pieces ready to give out.
    ready: VecDeque<Piece>,
    ended: bool,
    /// Reads the output for calls.
    tools: Option<ToolStream>,
}

impl TextRun {
    pub fn new(rx: EventReceiver, tok: Arc<Tokenizer>, stops: Vec<String>) -> TextRun {
        TextRun {
            rx,
            tok,
            stops,
            raw: Vec::new(),
            text_len: 0,
            ready: VecDeque::new(),
            ended: false,
            tools: None,
        }
    }

    /// Reads the output for tool calls in `family`'s syntax; `request` is the engine's id of
    /// the request (call ids derive from it).
    pub fn reading_calls(mut self, tools: Option<Family>, request: u64) -> TextRun {
        self.tools = tools.map(|f| ToolStream::new(f, request, 0));
        self
    }

    /// The next piece: texts, then one `End` or `Failed`, then `None`.
    pub async fn next(&mut self) -> Option<Piece> {
        loop {
            if let Some(p) = self.ready.pop_front() {
                return Some(p);
            }
            if self.ended {
                return None;
            }
            match self.rx.next().await {
                Some(Event::Token(t)) => {
                    self.raw.extend(self.tok.token_bytes(t.token));
                    self.push_text(t.text);
                }
                Some(Event::Done(d)) => self.finish(d),
                Some(Event::Error(e)) => self.fail(e),
                None => self.fail("the engine ended the request early".into()),
            }
        }
    }

    fn push_text(&mut self, text: String) {
        self.text_len += text.len();
        match self.tools.as_mut() {
            Some(ts) => {
                let deltas = ts.push(&text);
                self.push_deltas(deltas);
            }
            None if !text.is_empty() => self.ready.push_back(Piece::Text(text)),
            None => {}
        }
    }

    fn push_deltas(&mut self, deltas: Vec<Delta>) {
        self.ready.extend(deltas.into_iter().map(|d| match d {
            Delta::Content(t) => Piece::Text(t),
            Delta::CallStart { index, id, name } => Piece::CallStart { index, id, name },
            Delta::Arguments { index, fragment } => Piece::CallArguments { index, fragment },
        }));
    }

    fn fail(&mut self, message: String) {
        self.ended = true;
        self.ready.push_back(Piece::Failed(message));
    }

    /// The text the end releases, then the end.
    fn finish(&mut self, d: DoneEvent) {
        self.push_text(d.text);
        let called = match self.tools.as_mut() {
            Some(ts) => {
                let (deltas, called) = ts.finish();
                self.push_deltas(deltas);
                called
            }
            None => false,
        };
        let finish = match d.finish_reason {
            FinishReason::Stop if called => Finish::ToolUse,
            FinishReason::Stop => stopped_by(&self.raw, self.text_len, &self.stops),
            FinishReason::Length => Finish::MaxTokens,
            FinishReason::Cancelled => {
                return self.fail("the request was cancelled: the server is stopping".into())
            }
        };
        self.ended = true;
        self.ready.push_back(Piece::End(Outcome {
            finish,
            completion_tokens: d.completion_tokens,
        }));
    }

    /// The whole text, the calls and how it ended.
    pub async fn collect(mut self) -> Result<Output, ApiError> {
        let mut text = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        while let Some(piece) = self.next().await {
            match piece {
                Piece::Text(t) => text.push_str(&t),
                Piece::CallStart { id, name, .. } => calls.push(ToolCall {
                    id,
                    name,
                    arguments: String::new(),
                }),
                Piece::CallArguments { index, fragment } => {
                    if let Some(c) = calls.get_mut(index) {
                        c.arguments.push_str(&fragment);
                    }
                }
                Piece::End(outcome) => {
                    return Ok(Output {
                        text,
                        calls,
                        outcome,
                    })
                }
                Piece::Failed(e) => return Err(ApiError::internal(e)),
            }
        }
        Err(ApiError::internal("the engine ended the request early"))
    }
}

/// How a stop ended: `raw` holds the bytes of every generated token, of which the first
/// `text_len` were given out as text. With text cut off, a stop sequence ended it: the first
/// (in the request's order) that the cut-off part starts with. With nothing cut off, the
/// model's end-of-sequence token did.
fn stopped_by(raw: &[u8], text_len: usize, stops: &[String]) -> Finish {
    let raw = String::from_utf8_lossy(raw);
    let cut = raw.get(text_len..).unwrap_or("");
    stops
        .iter()
        .find(|s| !s.is_empty() && cut.starts_with(s.as_str()))
        .map_or(Finish::EndTurn, |s| Finish::StopSequence(s.clone()))
}

/// An API's server-sent events for a text run.
pub trait TextProtocol: Send + 'static {
    /// Before any text.
    fn start(&mut self) -> Vec<SseEvent>;
    fn text(&mut self, delta: &str) -> Vec<SseEvent>;
    /// Call `index` begins (`id` is the chat endpoint's `call_…` id).
    fn call_start(&mut self, index: usize, id: &str, name: &str) -> Vec<SseEvent>;
    /// More of the arguments of call `index`.
    fn call_arguments(&mut self, index: usize, fragment: &str) -> Vec<SseEvent>;
    /// The last events.
    fn end(&mut self, outcome: &Outcome) -> Vec<SseEvent>;
    /// The last events when the run failed.
    fn fail(&mut self, message: &str) -> Vec<SseEvent>;
}

/// The SSE response of `run` in `proto`'s events. Dropping it (the client went away) drops
/// the receiver, which frees the request's sequence in the engine.
pub fn sse<P: TextProtocol>(
    run: TextRun,
    mut proto: P,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let out: VecDeque<SseEvent> = proto.start().into();
    let events = futures_util::stream::unfold((run, proto, out), |mut state| async move {
        loop {
            let (run, proto, out) = &mut state;
            if let Some(ev) = out.pop_front() {
                return Some((Ok(ev), state));
            }
            let events = match run.next().await? {
                Piece::Text(t) => proto.text(&t),
                Piece::CallStart { index, id, name } => proto.call_start(index, &id, &name),
                Piece::CallArguments { index, fragment } => proto.call_arguments(index, &fragment),
                Piece::End(end) => proto.end(&end),
                Piece::Failed(e) => proto.fail(&e),
            };
            out.extend(events);
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stop_sequence_is_the_one_the_cut_text_starts_with() {
        let stops = ["never".to_string(), "\n\n".to_string(), "END".to_string()];
        let stop = |raw: &str, text: &str| stopped_by(raw.as_bytes(), text.len(), &stops);
        assert_eq!(
            stop("Hi END and more", "Hi "),
            Finish::StopSequence("END".into())
        );
        assert_eq!(stop("a\n\nEND", "a"), Finish::StopSequence("\n\n".into()));
        // Nothing cut off: the end-of-sequence token.
        assert_eq!(stop("all of it", "all of it"), Finish::EndTurn);
        // A cut inside a character, or text that starts no stop sequence, is no stop sequence.
        assert_eq!(stop("é", "\u{1}"), Finish::EndTurn);
        assert_eq!(stop("abc", "a"), Finish::EndTurn);
    }
}
