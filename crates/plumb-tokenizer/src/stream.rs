//! Incremental decoding that never emits half a UTF-8 character.

use crate::tokenizer::Tokenizer;

/// Turns ids into text one at a time. Bytes that end in the middle of a UTF-8 character
/// (byte-fallback tokens, byte-level pieces) are held back until the character completes;
/// bytes that can never form a character become U+FFFD. Concatenating every
/// [`push`](Self::push) and the final [`finish`](Self::finish) gives the same text as
/// [`Tokenizer::decode`] on all the ids (for [`new`](Self::new)).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    pending: Vec<u8>,
    strip: bool,
    skip_special: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder for a sequence from its start (SentencePiece: the first piece's leading
    /// space is dropped, as in [`Tokenizer::decode`]). Special tokens are rendered.
    pub fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            tok,
            pending: Vec::new(),
            strip: tok.strips_leading_space(),
            skip_special: false,
        }
    }

    /// A decoder for ids that continue earlier text (e.g. generated after a prompt): the
    /// first piece keeps its leading space.
    pub fn continuation(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            strip: false,
            ..Self::new(tok)
        }
    }

    /// Leave control tokens out of the text.
    pub fn skip_special(mut self, skip: bool) -> Self {
        self.skip_special = skip;
        self
    }

    /// Adds one id; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.tok
            .append_piece(id, self.skip_special, &mut self.strip, &mut self.pending);
        self.take_complete()
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: whatever is still held back, incomplete characters as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }

    fn take_complete(&mut self) -> String {
        let mut out = String::new();
        let mut pos = 0;
        while pos < self.pending.len() {
            match std::str::from_utf8(&self.pending[pos..]) {
                Ok(s) => {
                    out.push_str(s);
                    pos = self.pending.len();
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[pos..pos + valid]));
                    pos += valid;
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            pos += bad;
                        }
                        None => break, // an incomplete character at the end: wait for more
                    }
                }
            }
        }
        self.pending.drain(..pos);
        out
    }
}
