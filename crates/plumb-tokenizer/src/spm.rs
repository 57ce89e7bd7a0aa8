//! SentencePiece-style BPE (GGUF `tokenizer.ggml.model = "llama"`), like llama.cpp's SPM
//! tokenizer: start from UTF-8 characters, repeatedly merge the adjacent pair whose
//! concatenation is the vocabulary entry with the highest score (ties: leftmost), and emit
//! byte-fallback tokens `<0xXX>` for pieces that are not in the vocabulary.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::error::{Result, TokenizerError};
use crate::vocab::{parse_byte_token, TokenKind};

#[derive(Debug, Clone)]
pub(crate) struct Spm {
    to_id: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_ids: [Option<u32>; 256],
    unk: Option<u32>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(tokens: &[String], kinds: &[TokenKind], scores: Vec<f32>, unk: Option<u32>) -> Self {
        let mut to_id = HashMap::with_capacity(tokens.len());
        let mut byte_ids = [None; 256];
        for (id, (t, kind)) in tokens.iter().zip(kinds).enumerate() {
            to_id.entry(t.clone()).or_insert(id as u32);
            if *kind == TokenKind::Byte {
                if let Some(b) = parse_byte_token(t) {
                    byte_ids[b as usize].get_or_insert(id as u32);
                }
            }
        }
        Spm {
            to_id,
            scores,
            byte_ids,
            unk,
        }
    }

    /// Tokenizes `text` as is (the caller has already replaced spaces with `▁`).
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let idx = syms.len();
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: idx.checked_sub(1),
                next: None,
            });
            if idx > 0 {
                syms[idx - 1].next = Some(idx);
            }
        }
        let mut heap = BinaryHeap::new();
        for i in 1..syms.len() {
            self.try_add(text, &syms, Some(i - 1), Some(i), &mut heap);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (syms[b.left], syms[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue; // stale
            }
            syms[b.left].len += r.len;
            syms[b.right].len = 0;
            syms[b.left].next = r.next;
            if let Some(n) = r.next {
                syms[n].prev = Some(b.left);
            }
            self.try_add(text, &syms, l.prev, Some(b.left), &mut heap);
            self.try_add(text, &syms, Some(b.left), r.next, &mut heap);
        }
        let mut cur = if syms.is_empty() { None } else { Some(0) };
        while let Some(i) = cur {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.to_id.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        match self.byte_ids[byte as usize].or(self.unk) {
                            Some(id) => out.push(id),
                            None => return Err(TokenizerError::UnencodableByte(byte)),
                        }
                    }
                }
            }
            cur = s.next;
        }
        Ok(())
    }

    fn try_add(
        &self,
        text: &str,
        syms: &[Symbol],
        left: Option<usize>,
        right: Option<usize>,
        heap: &mut BinaryHeap<Bigram>,
    ) {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (syms[left], syms[right]);
        let len = l.len + r.len;
        let Some(&id) = text
            .get(l.start..l.start + len)
            .and_then(|s| self.to_id.get(s))
        else {
            return;
        };
        let score = self.scores.get(id as usize).copied().unwrap_or(0.0);
        heap.push(Bigram {
            score,
            left,
            right,
            len,
        });
    }
}
