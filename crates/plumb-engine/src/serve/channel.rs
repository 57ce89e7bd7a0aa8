//! The event channel from the engine thread to one request's consumer: unbounded (a request
//! produces at most `n × (max_tokens + 1)` events), sent from plain threads, received either
//! blocking ([`EventReceiver::recv`]) or from async code ([`EventReceiver::poll_recv`],
//! [`EventReceiver::next`]) without any runtime. Each side sees when the other is gone.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::Event;

struct State {
    items: VecDeque<Event>,
    sender_alive: bool,
    receiver_alive: bool,
    waker: Option<Waker>,
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
pub struct EventSender(Arc<Chan>);

/// The consumer's side. Dropping it tells the engine to stop the request.
pub struct EventReceiver(Arc<Chan>);

pub(crate) fn channel() -> (EventSender, EventReceiver) {
    let chan = Arc::new(Chan {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
            waker: None,
        }),
        ready: Condvar::new(),
    });
    (EventSender(chan.clone()), EventReceiver(chan))
}

impl EventSender {
    /// Queues `ev`; false when the receiver is gone (the event is dropped).
    pub fn send(&self, ev: Event) -> bool {
        let waker = {
            let mut s = self.0.lock();
            if !s.receiver_alive {
                return false;
            }
            s.items.push_back(ev);
            s.waker.take()
        };
        self.0.ready.notify_one();
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Whether the receiver has been dropped.
    pub fn is_closed(&self) -> bool {
        !self.0.lock().receiver_alive
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
    pub fn recv(&self) -> Option<Event> {
        let mut s = self.0.lock();
        loop {
            if let Some(ev) = s.items.pop_front() {
                return Some(ev);
            }
            if !s.sender_alive {
                return None;
            }
            s = self.0.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Like [`recv`](Self::recv) but gives up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Event>, Timeout> {
        let deadline = Instant::now() + timeout;
        let mut s = self.0.lock();
        loop {
            if let Some(ev) = s.items.pop_front() {
                return Ok(Some(ev));
            }
            if !s.sender_alive {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Timeout);
            }
            s = self
                .0
                .ready
                .wait_timeout(s, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Async receive: `Ready(Some(ev))`, `Ready(None)` at the end, or `Pending` with `cx`'s
    /// waker registered.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let mut s = self.0.lock();
        if let Some(ev) = s.items.pop_front() {
            return Poll::Ready(Some(ev));
        }
        if !s.sender_alive {
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// The next event, awaited.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.receiver_alive = false;
        s.items.clear();
        s.waker = None;
    }
}
