//! Byte-level BPE from GGUF metadata on a tiny vocabulary: which pre-tokenizer each
//! `tokenizer.ggml.pre` name selects.

use plumb_gguf::{Value, ValueType};
use plumb_tokenizer::Tokenizer;

/// GPT-2's byte -> char table, to spell vocabulary entries.
fn byte_char(b: u8) -> char {
    let mut extra = 0;
    for x in 0..=255u8 {
        let printable = matches!(x, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        if !printable {
            extra += 1;
        }
        if x == b {
            return if printable {
                x as char
            } else {
                char::from_u32(255 + extra).unwrap()
            };
        }
    }
    unreachable!()
}

fn tokenizer(pre: Option<&str>, extra: &[&str], merges: &[&str]) -> Tokenizer {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| byte_char(b).to_string()).collect();
    tokens.extend(extra.iter().map(|s| s.to_string()));
    tokens.push("<|im_end|>".into());
    let mut types = vec![1i32; tokens.len()];
    *types.last_mut().unwrap() = 3;
    let strs = |v: Vec<String>| {
        Value::Array(
            ValueType::String,
            v.into_iter().map(Value::String).collect(),
        )
    };
    let mut md = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strs(tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(ValueType::I32, types.into_iter().map(Value::I32).collect()),
        ),
        (
            "tokenizer.ggml.merges".to_string(),
            strs(merges.iter().map(|s| s.to_string()).collect()),
        ),
        (
            "tokenizer.ggml.eos_token_id".to_string(),
            Value::U32(256 + extra.len() as u32),
        ),
    ];
    if let Some(p) = pre {
        md.push(("tokenizer.ggml.pre".to_string(), Value::String(p.into())));
    }
    Tokenizer::from_gguf_metadata(|k| md.iter().find(|(key, _)| key == k).map(|(_, v)| v)).unwrap()
}

/// The pieces (as text) `text` encodes to.
fn pieces(t: &Tokenizer, text: &str) -> Vec<String> {
    let ids = t.encode(text, false, false).unwrap();
    let out: Vec<String> = ids
        .iter()
        .map(|&i| String::from_utf8(t.token_bytes(i)).unwrap())
        .collect();
    assert_eq!(out.concat(), text);
    out
}

const DIGITS: &[&str] = &["12", "123", "45", "12345"];
const DIGIT_MERGES: &[&str] = &["1 2", "12 3", "4 5", "123 45"];

#[test]
fn digits_per_pre_tokenizer() {
    let t = tokenizer(Some("gpt2"), DIGITS, DIGIT_MERGES);
    assert_eq!(pieces(&t, "12345"), ["12345"]);
    let t = tokenizer(Some("smollm"), DIGITS, DIGIT_MERGES);
    assert_eq!(pieces(&t, "12345"), ["1", "2", "3", "4", "5"]);
    let t = tokenizer(Some("llama-bpe"), DIGITS, DIGIT_MERGES);
    assert_eq!(pieces(&t, "12345"), ["123", "45"]);
    let t = tokenizer(Some("qwen2"), DIGITS, DIGIT_MERGES);
    assert_eq!(pieces(&t, "12345"), ["1", "2", "3", "4", "5"]);
}

#[test]
fn words_and_spaces() {
    let extra = &["Ġa", "Ġb", "ĠĠ"];
    let merges = &["Ġ a", "Ġ b", "Ġ Ġ"];
    for pre in ["gpt2", "smollm", "llama-bpe", "qwen2"] {
        let t = tokenizer(Some(pre), extra, merges);
        // "\s+(?!\S)": the last space of a run goes with the next word.
        assert_eq!(pieces(&t, "a   b"), ["a", "  ", " b"], "{pre}");
    }
    // Llama 3 keeps a punctuation char with the following letters; GPT-2 does not.
    let t = tokenizer(Some("llama-bpe"), &["(a"], &["( a"]);
    assert_eq!(pieces(&t, "(ab"), ["(a", "b"]);
    let t = tokenizer(Some("gpt2"), &["(a"], &["( a"]);
    assert_eq!(pieces(&t, "(ab"), ["(", "a", "b"]);
}

#[test]
fn unknown_pre_falls_back_to_gpt2() {
    let t = tokenizer(Some("some-future-model"), DIGITS, DIGIT_MERGES);
    let pre = t.pre_tokenizer().unwrap();
    assert_eq!(
        (pre.requested.as_deref(), pre.used, pre.fallback),
        (Some("some-future-model"), "gpt2", true)
    );
    assert_eq!(pieces(&t, "12345"), ["12345"]);
    let t = tokenizer(None, &[], &[]);
    assert!(t.pre_tokenizer().unwrap().fallback);
}

#[test]
fn llama3_ignores_merges_for_whole_words() {
    // "abc" is in the vocabulary but no merge builds it.
    let t = tokenizer(Some("llama-bpe"), &["abc"], &[]);
    assert_eq!(pieces(&t, "abc"), ["abc"]);
    let t = tokenizer(Some("gpt2"), &["abc"], &[]);
    assert_eq!(pieces(&t, "abc"), ["a", "b", "c"]);
}

#[test]
fn control_tokens_and_stops() {
    let t = tokenizer(Some("gpt2"), &[], &[]);
    let end = 256;
    assert_eq!(
        t.encode("a<|im_end|>", false, true).unwrap(),
        vec![b'a' as u32, end]
    );
    assert_eq!(t.encode("a<|im_end|>", false, false).unwrap().len(), 11);
    assert_eq!(t.stop_tokens(), &[end]);
    assert_eq!(t.bos(), None);
    assert_eq!(t.encode("a", true, false).unwrap(), vec![b'a' as u32]);
}
