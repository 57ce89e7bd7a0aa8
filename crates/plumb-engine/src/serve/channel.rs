//! The event channel from the engine thread to one request's consumer.
//!
//! The engine sends token ids ([`Raw`]) and never waits: the queue is unbounded, and a
//! request produces at most `n × (max_tokens + 1) + 1` messages, so a consumer that stops
//! reading holds that much memory and stalls nobody. Text is made on the receiving side,
//! off the engine thread: each choice's bytes go through a [`Utf8Decoder`] and a
//! [`StopMatcher`]; when a stop string is hit the receiver ends the choice itself and tells
//! the engine, which frees it at its next step (tokens it generated meanwhile are dropped).
//! Received either blocking ([`EventReceiver::recv`]) or from async code
//! ([`EventReceiver::poll_recv`], [`EventReceiver::next`]) without any runtime. Each side
//! sees when the other is gone.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use plumb_tokenizer::{Tokenizer, Utf8Decoder};

use super::{DoneEvent, Event, TokenEvent, TokenLogprob};
use crate::generate::FinishReason;
use crate::text::StopMatcher;

/// What the engine sends.
pub(crate) enum Raw {
    /// The request was admitted; `cached` of its prompt tokens came from the prefix cache.
    Started {
        cached: usize,
    },
    Token {
        choice: usize,
        id: u32,
        logprob: Option<TokenLogprob>,
    },
    Done {
        choice: usize,
        finish: FinishReason,
    },
    Error(String),
}

struct State {
    items: VecDeque<Raw>,
    sender_alive: bool,
    receiver_alive: bool,
    waker: Option<Waker>,
    /// Choices the receiver ended on a stop string, for the engine to free.
    stopped: Vec<usize>,
}

struct Chan {
    state: Mutex<State>,
    ready: Condvar,
}

impl Chan {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the queue intact; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// [`EventReceiver::recv_timeout`] waited its whole time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout;

/// The engine's side.
pub(crate) struct EventSender(Arc<Chan>);

/// The consumer's side. Dropping it tells the engine to stop the request.
pub struct EventReceiver {
    chan: Arc<Chan>,
    text: Text,
    /// Events made from the messages taken so far, not yet returned.
    ready: VecDeque<Event>,
}

/// How a request's ids become text.
pub(crate) struct TextSpec {
    pub tok: Arc<Tokenizer>,
    pub stop: Vec<String>,
    pub n: usize,
    pub prompt_tokens: usize,
}

struct Text {
    tok: Arc<Tokenizer>,
    prompt_tokens: usize,
    cached_tokens: usize,
    choices: Vec<ChoiceText>,
}

struct ChoiceText {
    utf8: Utf8Decoder,
    stops: StopMatcher,
    tokens: usize,
    done: bool,
}

pub(crate) fn channel(spec: TextSpec) -> (EventSender, EventReceiver) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
            waker: None,
            stopped: Vec::new(),
        }),
        ready: Condvar::new(),
    });
    let choices = (0..spec.n)
        .map(|_| ChoiceText {
            utf8: Utf8Decoder::default(),
            stops: StopMatcher::new(&spec.stop),
            tokens: 0,
            done: false,
        })
        .collect();
    let text = Text {
        tok: spec.tok,
        prompt_tokens: spec.prompt_tokens,
        cached_tokens: 0,
        choices,
    };
    let rx = EventReceiver {
        chan: chan.clone(),
        text,
        ready: VecDeque::new(),
    };
    (EventSender(chan), rx)
}

impl EventSender {
    /// Queues `msg`; false when the receiver is gone (the message is dropped).
    pub(crate) fn send(&self, msg: Raw) -> bool {
        let waker = {
            let mut s = self.0.lock();
            if !s.receiver_alive {
                return false;
            }
            s.items.push_back(msg);
            s.waker.take()
        };
        self.0.ready.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Whether the receiver is still there; appends the choices it ended since the last
    /// call to `stopped`.
    pub(crate) fn poll(&self, stopped: &mut Vec<usize>) -> bool {
        let mut s = self.0.lock();
        stopped.append(&mut s.stopped);
        s.receiver_alive
    }
}

impl Drop for EventSender {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.0.lock();
            s.sender_alive = false;
            s.waker.take()
        };
        self.0.ready.notify_all();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl EventReceiver {
    /// The next event, waiting for it; None once the engine has dropped the request and every
    /// event was read.
    pub fn recv(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            let raw = {
                let mut s = self.chan.lock();
                loop {
                    if let Some(raw) = s.items.pop_front() {
                        break raw;
                    }
                    if !s.sender_alive {
                        return None;
                    }
                    s = self.chan.ready.wait(s).unwrap_or_else(|e| e.into_inner());
                }
            };
            self.take(raw);
        }
    }

    /// Like [`recv`](Self::recv) but gives up after `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Timeout> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            let raw = {
                let mut s = self.chan.lock();
                loop {
                    if let Some(raw) = s.items.pop_front() {
                        break raw;
                    }
                    if !s.sender_alive {
                        return Ok(None);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Timeout);
                    }
                    s = self
                        .chan
                        .ready
                        .wait_timeout(s, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            };
            self.take(raw);
        }
    }

    /// Async receive: `Ready(Some(ev))`, `Ready(None)` at the end, or `Pending` with `cx`'s
    /// waker registered.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Poll::Ready(Some(ev));
            }
            let raw = {
                let mut s = self.chan.lock();
                match s.items.pop_front() {
                    Some(raw) => raw,
                    None if !s.sender_alive => return Poll::Ready(None),
                    None => {
                        s.waker = Some(cx.waker().clone());
                        return Poll::Pending;
                    }
                }
            };
            self.take(raw);
        }
    }

    /// The next event, awaited.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Turns one message into the events it makes (none, one, or a token and its choice's
    /// end when the token completes a stop string).
    fn take(&mut self, raw: Raw) {
        let t = &mut self.text;
        match raw {
            Raw::Started { cached } => t.cached_tokens = cached,
            Raw::Token {
                choice,
                id,
                logprob,
            } => {
                let Some(c) = t.choices.get_mut(choice).filter(|c| !c.done) else {
                    return;
                };
                c.tokens += 1;
                let piece = c.utf8.push(&t.tok.token_bytes(id));
                let (text, hit) = c.stops.push(&piece);
                self.ready.push_back(Event::Token(TokenEvent {
                    choice,
                    token: id,
                    text,
                    logprob,
                }));
                if hit {
                    c.done = true;
                    let done = t.done(choice, FinishReason::Stop, String::new());
                    self.ready.push_back(done);
                    self.chan.lock().stopped.push(choice);
                }
            }
            Raw::Done { choice, finish } => {
                let Some(c) = t.choices.get_mut(choice).filter(|c| !c.done) else {
                    return;
                };
                c.done = true;
                // The text held back: unfinished characters, a possible stop-string start.
                let (mut text, hit) = c.stops.push(&c.utf8.finish());
                if !hit {
                    text.push_str(&c.stops.finish());
                }
                let done = t.done(choice, finish, text);
                self.ready.push_back(done);
            }
            Raw::Error(e) => self.ready.push_back(Event::Error(e)),
        }
    }
}

impl Text {
    fn done(&self, choice: usize, finish_reason: FinishReason, text: String) -> Event {
        Event::Done(DoneEvent {
            choice,
            finish_reason,
            text,
            prompt_tokens: self.prompt_tokens,
            cached_tokens: self.cached_tokens,
            completion_tokens: self.choices.get(choice).map_or(0, |c| c.tokens),
        })
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let mut s = self.chan.lock();
        s.receiver_alive = false;
        s.items.clear();
        s.waker = None;
    }
}
