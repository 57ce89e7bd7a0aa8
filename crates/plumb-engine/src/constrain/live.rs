//! One sequence's constraint while it decodes. Its matcher lives on a worker thread of its
//! own: [`Live::commit`] hands the sampled token over and returns at once, the worker
//! advances the matcher and computes the next mask while the engine runs the step's batched
//! forward, and [`Live::mask`] collects it when the sequence samples again (waiting only if
//! the mask took longer than the forward). The thread ends when the `Live` is dropped.

use std::sync::mpsc::{channel, Receiver, Sender};

use llguidance::Matcher;

use super::{ConstraintError, Grammar};

/// The mask of the next token, or why there is none.
enum Next {
    Ready(Vec<u32>),
    /// The worker is computing it.
    Pending,
    Failed(String),
}

pub(crate) struct Live {
    next: Next,
    tokens: Sender<u32>,
    masks: Receiver<Result<Vec<u32>, String>>,
}

impl Live {
    /// Starts a sequence at the grammar's first token.
    pub(crate) fn start(grammar: &Grammar) -> Live {
        let (matcher, first) = grammar.start();
        let (tokens, token_rx) = channel();
        let (mask_tx, masks) = channel();
        let spawned = std::thread::Builder::new()
            .name("plumb-constrain".into())
            .spawn(move || advance_each(matcher, token_rx, mask_tx));
        let next = match spawned {
            Ok(_) => Next::Ready(first),
            Err(e) => Next::Failed(format!("cannot start the matcher thread: {e}")),
        };
        Live {
            next,
            tokens,
            masks,
        }
    }

    /// The mask of the next token, waiting for the worker if it is still computing it.
    pub(crate) fn mask(&mut self) -> Result<&[u32], ConstraintError> {
        if matches!(self.next, Next::Pending) {
            self.next = match self.masks.recv() {
                Ok(Ok(mask)) => Next::Ready(mask),
                Ok(Err(e)) => Next::Failed(e),
                Err(_) => Next::Failed("the matcher thread stopped".into()),
            };
        }
        match &self.next {
            Next::Ready(mask) => Ok(mask),
            Next::Failed(e) => Err(ConstraintError::Failed(e.clone())),
            Next::Pending => Err(ConstraintError::Failed("no mask was computed".into())),
        }
    }

    /// Feeds the sampled `token` to the matcher; the next mask is computed in the background.
    pub(crate) fn commit(&mut self, token: u32) {
        if matches!(self.next, Next::Failed(_)) {
            return;
        }
        self.next = match self.tokens.send(token) {
            Ok(()) => Next::Pending,
            Err(_) => Next::Failed("the matcher thread stopped".into()),
        };
    }
}

/// The worker: for each token, advance the matcher and send the next mask (only the stop
/// tokens once the grammar is complete). Ends when the sequence drops its sender.
fn advance_each(
    mut matcher: Matcher,
    tokens: Receiver<u32>,
    masks: Sender<Result<Vec<u32>, String>>,
) {
    while let Ok(token) = tokens.recv() {
        let next = matcher
            .consume_token(token)
            .and_then(|()| matcher.compute_mask_or_eos())
            .map(|m| m.as_slice().to_vec())
            .map_err(|e| format!("{e:#}"));
        if masks.send(next).is_err() {
            return;
        }
    }
}
