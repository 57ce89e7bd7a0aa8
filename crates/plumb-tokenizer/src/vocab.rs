//! Vocabulary helpers shared by all tokenizer back ends: token kinds, the GPT-2 byte-level
//! alphabet, turning a vocabulary entry into raw bytes, and finding special tokens in text.

use std::collections::HashMap;

/// What a vocabulary entry is (GGUF `tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Ordinary text piece (type 1, and 0 "undefined").
    Normal,
    /// The unknown token (type 2).
    Unknown,
    /// Control / special token such as `<|im_start|>` or `<s>` (type 3).
    Control,
    /// User-defined token, matched literally in text (type 4).
    UserDefined,
    /// Unused slot (type 5).
    Unused,
    /// SentencePiece byte-fallback token `<0xXX>` (type 6).
    Byte,
}

impl TokenKind {
    /// From a GGUF `token_type` value; unknown values are treated as [`TokenKind::Normal`].
    pub fn from_gguf(t: i64) -> Self {
        match t {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }
}

/// How the text of a vocabulary entry maps to the bytes it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PieceStyle {
    /// GPT-2 byte-level: every char is one byte through the `bytes_to_unicode` table.
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xXX>` byte tokens are one byte.
    SentencePiece,
    /// The text is the piece.
    Plain,
}

/// GPT-2's `bytes_to_unicode`: the char that stands for each byte.
pub(crate) fn byte_to_char_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for (b, slot) in table.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let cp = if printable {
            b as u32
        } else {
            extra += 1;
            255 + extra
        };
        *slot = char::from_u32(cp).unwrap_or('\u{FFFD}');
    }
    table
}

/// Inverse of [`byte_to_char_table`], indexed by code point (all are below 324).
fn char_to_byte_table() -> Vec<Option<u8>> {
    let mut inv = vec![None; 324];
    for (b, c) in byte_to_char_table().iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}

/// Parses a SentencePiece byte token `<0xXX>`.
pub(crate) fn parse_byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The raw bytes of every vocabulary entry (what decoding emits for it).
pub(crate) fn token_pieces(
    tokens: &[String],
    kinds: &[TokenKind],
    style: PieceStyle,
) -> Vec<Vec<u8>> {
    let inv = char_to_byte_table();
    tokens
        .iter()
        .zip(kinds)
        .map(|(text, kind)| match (kind, style) {
            (TokenKind::Control | TokenKind::UserDefined, _) => text.as_bytes().to_vec(),
            (TokenKind::Unused, _) => Vec::new(),
            (_, PieceStyle::ByteLevel) => {
                let mut out = Vec::with_capacity(text.len());
                for c in text.chars() {
                    match inv.get(c as usize).copied().flatten() {
                        Some(b) => out.push(b),
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            }
            (TokenKind::Byte, PieceStyle::SentencePiece) => match parse_byte_token(text) {
                Some(b) => vec![b],
                None => text.as_bytes().to_vec(),
            },
            // llama.cpp renders the SentencePiece unknown token as U+2585.
            (TokenKind::Unknown, PieceStyle::SentencePiece) => "\u{2585}".as_bytes().to_vec(),
            (_, PieceStyle::SentencePiece) => text.replace('\u{2581}', " ").into_bytes(),
            (_, PieceStyle::Plain) => text.as_bytes().to_vec(),
        })
        .collect()
}

/// A piece of input text after special tokens have been cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'t> {
    Text(&'t str),
    Token(u32),
}

/// Finds special tokens written literally in text (longest match first at each position).
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialMatcher {
    /// By first byte: (text, id, only_when_parse_special), longest text first.
    by_first: HashMap<u8, Vec<(String, u32, bool)>>,
}

impl SpecialMatcher {
    /// `Control` and `Unknown` tokens are matched only with `parse_special`;
    /// `UserDefined` tokens always (as llama.cpp does).
    pub fn new(tokens: &[String], kinds: &[TokenKind]) -> Self {
        let mut by_first: HashMap<u8, Vec<(String, u32, bool)>> = HashMap::new();
        for (id, (text, kind)) in tokens.iter().zip(kinds).enumerate() {
            let gated = match kind {
                TokenKind::Control | TokenKind::Unknown => true,
                TokenKind::UserDefined => false,
                _ => continue,
            };
            if let Some(&b) = text.as_bytes().first() {
                by_first
                    .entry(b)
                    .or_default()
                    .push((text.clone(), id as u32, gated));
            }
        }
        for list in by_first.values_mut() {
            list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        }
        SpecialMatcher { by_first }
    }

    pub fn split<'t>(&self, text: &'t str, parse_special: bool) -> Vec<Fragment<'t>> {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            let found = self.by_first.get(&bytes[i]).and_then(|cands| {
                cands.iter().find(|(t, _, gated)| {
                    (parse_special || !gated) && bytes[i..].starts_with(t.as_bytes())
                })
            });
            match found {
                Some((t, id, _)) => {
                    if start < i {
                        out.push(Fragment::Text(&text[start..i]));
                    }
                    out.push(Fragment::Token(*id));
                    i += t.len();
                    start = i;
                }
                None => i += 1,
            }
        }
        if start < bytes.len() {
            out.push(Fragment::Text(&text[start..]));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let t = byte_to_char_table();
        assert_eq!(t[b' ' as usize], '\u{120}'); // Ġ
        assert_eq!(t[b'\n' as usize], '\u{10A}'); // Ċ
        assert_eq!(t[b'a' as usize], 'a');
        let mut seen: Vec<char> = t.to_vec();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 256);
    }

    #[test]
    fn special_split() {
        let toks: Vec<String> = ["<a>", "<ab>", "x"].iter().map(|s| s.to_string()).collect();
        let kinds = [
            TokenKind::Control,
            TokenKind::UserDefined,
            TokenKind::Normal,
        ];
        let m = SpecialMatcher::new(&toks, &kinds);
        let f = m.split("1<ab>2<a>", true);
        use Fragment::*;
        assert_eq!(f, vec![Text("1"), Token(1), Text("2"), Token(0)]);
        assert_eq!(m.split("<a><ab>", false), vec![Text("<a>"), Token(1)]);
        assert_eq!(m.split("", true), vec![]);
    }
}
