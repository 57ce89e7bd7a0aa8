//! The SentencePiece (`llama`) tokenizer on a small hand-made vocabulary.

use plumb_gguf::{Value, ValueType};
use plumb_tokenizer::{StreamDecoder, TokenKind, Tokenizer, TokenizerError, TokenizerModel};

const UNK: u32 = 0;
const BOS: u32 = 1;
const EOS: u32 = 2;
const BYTE0: u32 = 3; // <0x00> .. <0xFF> are ids 3..=258

/// Metadata for a vocabulary: control/unk tokens, 256 byte tokens, then `pieces` with scores.
fn meta(pieces: &[(&str, f32)]) -> Vec<(String, Value)> {
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (p, s) in pieces {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(*s);
    }
    let arr = |t, v: Vec<Value>| Value::Array(t, v);
    vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            arr(
                ValueType::String,
                tokens.into_iter().map(Value::String).collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            arr(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            arr(ValueType::F32, scores.into_iter().map(Value::F32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(BOS)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(EOS)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(UNK)),
    ]
}

fn build(md: &[(String, Value)]) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_gguf_metadata(|k| md.iter().find(|(key, _)| key == k).map(|(_, v)| v))
}

fn tok(pieces: &[(&str, f32)]) -> Tokenizer {
    build(&meta(pieces)).expect("tokenizer")
}

/// Ids of `pieces` in the vocabulary built by [`meta`].
fn id(pieces: &[(&str, f32)], p: &str) -> u32 {
    259 + pieces
        .iter()
        .position(|(x, _)| *x == p)
        .unwrap_or_else(|| panic!("{p} not in vocab")) as u32
}

const VOCAB: &[(&str, f32)] = &[
    ("▁", -1.0),
    ("a", -2.0),
    ("b", -2.0),
    ("c", -2.0),
    ("▁a", -3.0),
    ("ab", -5.0),
    ("bc", -4.0),
    ("▁ab", -6.0),
    ("▁c", -3.5),
];

#[test]
fn spaces_become_metaspace_with_a_leading_space() {
    let t = tok(VOCAB);
    assert_eq!(t.model(), TokenizerModel::SentencePiece);
    assert!(t.add_bos_default());
    let i = |p| id(VOCAB, p);
    // "a c" -> "▁a▁c": ▁a and ▁c merge directly.
    assert_eq!(
        t.encode("a c", false, false).unwrap(),
        vec![i("▁a"), i("▁c")]
    );
    // BOS only when asked (and the model wants it).
    assert_eq!(
        t.encode("a c", true, false).unwrap(),
        vec![BOS, i("▁a"), i("▁c")]
    );
    assert_eq!(t.decode(&t.encode("a c", false, false).unwrap()), "a c");
    assert_eq!(t.decode(&[BOS, i("▁a")]), "<s> a");
    assert_eq!(t.decode_with(&[BOS, i("▁a")], true), "a");
    // Double spaces: the lone ▁ token.
    assert_eq!(
        t.encode("a  c", false, false).unwrap(),
        vec![i("▁a"), i("▁"), i("▁c")]
    );
    assert_eq!(t.encode("", true, false).unwrap(), vec![BOS]);
}

#[test]
fn merges_follow_scores() {
    // "abc" -> ▁ a b c. ▁a (-3) beats bc (-4) beats ab (-5): ▁a, bc.
    let t = tok(VOCAB);
    let i = |p| id(VOCAB, p);
    assert_eq!(
        t.encode("abc", false, false).unwrap(),
        vec![i("▁a"), i("bc")]
    );

    // Now make "ab" the best pair: a+b first, then ▁+ab.
    let v2: Vec<(&str, f32)> = VOCAB
        .iter()
        .map(|&(p, s)| (p, if p == "ab" { -0.5 } else { s }))
        .collect();
    let t2 = tok(&v2);
    assert_eq!(
        t2.encode("abc", false, false).unwrap(),
        vec![id(&v2, "▁ab"), id(&v2, "c")]
    );

    // Equal scores: the leftmost pair merges first.
    let v3: &[(&str, f32)] = &[("▁", -1.0), ("x", -1.0), ("xx", -2.0)];
    let t3 = tok(v3);
    // ▁ x x x -> (xx) x by leftmost tie-break.
    assert_eq!(
        t3.encode("xxx", false, false).unwrap(),
        vec![id(v3, "▁"), id(v3, "xx"), id(v3, "x")]
    );
}

#[test]
fn byte_fallback_for_unknown_chars() {
    let t = tok(VOCAB);
    let i = |p| id(VOCAB, p);
    // 'é' is not in the vocabulary: its two UTF-8 bytes C3 A9.
    let ids = t.encode("aé", false, false).unwrap();
    assert_eq!(ids, vec![i("▁a"), BYTE0 + 0xC3, BYTE0 + 0xA9]);
    assert_eq!(t.token_kind(BYTE0 + 0xC3), Some(TokenKind::Byte));
    assert_eq!(t.token_bytes(BYTE0 + 0xC3), vec![0xC3]);
    assert_eq!(t.decode(&ids), "aé");
    // A 4-byte char.
    let ids = t.encode("🎉", false, false).unwrap();
    assert_eq!(
        ids,
        vec![
            i("▁"),
            BYTE0 + 0xF0,
            BYTE0 + 0x9F,
            BYTE0 + 0x8E,
            BYTE0 + 0x89
        ]
    );
    assert_eq!(t.decode(&ids), "🎉");
}

#[test]
fn special_tokens_in_text() {
    let t = tok(VOCAB);
    let i = |p| id(VOCAB, p);
    // With parse_special, "</s>" is one token and a space prefix follows it (llama.cpp).
    assert_eq!(
        t.encode("a</s>c", false, true).unwrap(),
        vec![i("▁a"), EOS, i("▁c")]
    );
    // Without, it is text: '<', '/', 's', '>' fall back to bytes.
    let plain = t.encode("a</s>", false, false).unwrap();
    assert!(!plain.contains(&EOS));
    assert_eq!(t.decode(&plain), "a</s>");
    assert_eq!(t.stop_tokens(), &[EOS]);
}

#[test]
fn stream_decoder_waits_for_whole_characters() {
    let t = tok(VOCAB);
    let text = "héllo 世界 🎉";
    let ids = t.encode(text, false, false).unwrap();
    let mut dec = StreamDecoder::new(&t);
    let chunks: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    assert_eq!(dec.finish(), "");
    assert_eq!(chunks.concat(), text);
    assert!(!chunks.iter().any(|c| c.contains('\u{FFFD}')));
    assert!(
        chunks.iter().filter(|c| !c.is_empty()).count() >= 8,
        "{chunks:?}"
    );

    // Exactly: the first byte of 'é' yields nothing, the second the whole char.
    let mut dec = StreamDecoder::continuation(&t);
    assert_eq!(dec.push(BYTE0 + 0xC3), "");
    assert_eq!(dec.pending_bytes(), &[0xC3]);
    assert_eq!(dec.push(BYTE0 + 0xA9), "é");
    // A continuation keeps the leading space; a stray byte becomes U+FFFD at the end.
    assert_eq!(dec.push(id(VOCAB, "▁a")), " a");
    assert_eq!(dec.push(BYTE0 + 0xE4), "");
    assert_eq!(dec.finish(), "\u{FFFD}");
    // An invalid byte followed by text is replaced as soon as it is known to be invalid.
    assert_eq!(dec.push(BYTE0 + 0xFF), "\u{FFFD}");
}

#[test]
fn errors_are_actionable() {
    let mut md = meta(VOCAB);
    md[0].1 = Value::String("bert".into());
    let e = build(&md).unwrap_err();
    assert!(
        matches!(e, TokenizerError::UnsupportedModel(ref m) if m == "bert"),
        "{e}"
    );
    assert!(e.to_string().contains("gpt2"));

    let md: Vec<_> = meta(VOCAB)
        .into_iter()
        .filter(|(k, _)| k != "tokenizer.ggml.tokens")
        .collect();
    let e = build(&md).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.tokens"), "{e}");

    let mut md = meta(VOCAB);
    md[2].1 = Value::Array(ValueType::I32, vec![Value::I32(1)]);
    let e = build(&md).unwrap_err();
    assert!(e.to_string().contains("tokenizer.ggml.token_type"), "{e}");

    assert!(build(&[])
        .unwrap_err()
        .to_string()
        .contains("tokenizer.ggml.model"));
}
