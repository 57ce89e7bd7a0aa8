//! Incremental decoding that never emits half a UTF-8 character.

use crate::tokenizer::Tokenizer;

/// Bytes to text without ever splitting a character: bytes that end in the middle of a UTF-8
/// character are held back until it completes; bytes that can never form a character become
/// U+FFFD. It owns no tokenizer, so a sequence can keep one across steps and feed it
/// [`Tokenizer::token_bytes`]; [`StreamDecoder`] is this over a tokenizer's ids.
#[derive(Debug, Clone, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Adds `bytes`; returns the characters now complete (possibly none).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
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

/// Turns ids into text one at a time through a [`Utf8Decoder`] (byte-fallback tokens and
/// byte-level pieces may end in the middle of a character). Concatenating every
/// [`push`](Self::push) and the final [`finish`](Self::finish) gives the same text as
/// [`Tokenizer::decode`] on all the ids (for [`new`](Self::new)).
#[derive(Debug)]
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    utf8: Utf8Decoder,
    strip: bool,
    skip_special: bool,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder for a sequence from its start (SentencePiece: the first piece's leading
    /// space is dropped, as in [`Tokenizer::decode`]). Special tokens are rendered.
    pub fn new(tok: &'a Tokenizer) -> Self {
        StreamDecoder {
            tok,
            utf8: Utf8Decoder::default(),
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
        let bytes = &mut self.utf8.pending;
        self.tok
            .append_piece(id, self.skip_special, &mut self.strip, bytes);
        self.utf8.take_complete()
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending_bytes(&self) -> &[u8] {
        self.utf8.pending_bytes()
    }

    /// Ends the stream: whatever is still held back, incomplete characters as U+FFFD.
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_never_split() {
        let mut u = Utf8Decoder::default();
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(u.push(&euro[..1]), "");
        assert_eq!(u.push(&euro[1..2]), "");
        assert_eq!(u.pending_bytes(), &euro[..2]);
        assert_eq!(u.push(&[euro[2], b'a']), "€a");
        assert_eq!(u.push(&[0xff, b'b']), "\u{FFFD}b");
        assert_eq!(u.push(&euro[..2]), "");
        assert_eq!(u.finish(), "\u{FFFD}");
        assert!(u.pending_bytes().is_empty());
    }

    #[test]
    fn a_bad_byte_before_an_unfinished_character_is_replaced_and_the_rest_held() {
        let mut u = Utf8Decoder::default();
        // "é" is c3 a9; a lone continuation byte 0x80 can never start a character.
        assert_eq!(u.push(&[b'x', 0x80, 0xc3]), "x\u{FFFD}");
        assert_eq!(u.push(&[0xa9]), "é");
        assert_eq!(u.finish(), "");
    }
}
