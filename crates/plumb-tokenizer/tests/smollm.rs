//! The real model's tokenizer (SmolLM2-135M-Instruct, byte-level BPE, pre-tokenizer `smollm`)
//! against the llama.cpp reference ids in the fixtures.

mod common;

use common::{fixture, fixture_json, ids, smollm};
use plumb_tokenizer::{ChatMessage, ChatTemplate, StreamDecoder, TokenKind, TokenizerModel};

#[test]
fn metadata() {
    let (_f, tok) = smollm();
    assert_eq!(tok.model(), TokenizerModel::Gpt2Bpe);
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert!(!tok.add_bos_default());
    let pre = tok.pre_tokenizer().expect("BPE has a pre-tokenizer");
    assert_eq!(
        (pre.requested.as_deref(), pre.used, pre.fallback),
        (Some("smollm"), "smollm", false)
    );
    assert_eq!(tok.token_str(1), Some("<|im_start|>"));
    assert!(tok.is_special(1) && !tok.is_special(100));
    assert_eq!(tok.token_kind(0), Some(TokenKind::Control));
    // EOS (= <|im_end|>) and <|endoftext|>.
    assert_eq!(tok.stop_tokens(), &[2, 0]);
    assert_eq!(tok.token_bytes(216), b" ".to_vec());
    assert_eq!(tok.token_bytes(1), b"<|im_start|>".to_vec());
    assert_eq!(tok.token_bytes(u32::MAX), "\u{FFFD}".as_bytes().to_vec());
    assert_eq!(tok.decode(&[u32::MAX]), "\u{FFFD}");
}

#[test]
fn apache_license_ids_match_llama_cpp() {
    let (_f, tok) = smollm();
    let text = fixture("apache-2.0.txt");
    let expected = ids(&fixture_json("apache-2.0.tokens.json")["token_ids"]);
    let got = tok.encode(&text, true, false).unwrap(); // add_bos is a no-op: the model says no
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        let show = |v: &[u32]| v[at.saturating_sub(3)..(at + 5).min(v.len())].to_vec();
        panic!(
            "ids differ at {at} (got {} ids, want {}): got {:?} want {:?}",
            got.len(),
            expected.len(),
            show(&got),
            show(&expected)
        );
    }
    assert_eq!(tok.decode(&got), text);
}

#[test]
fn greedy_prompt_ids_match_llama_cpp() {
    let (_f, tok) = smollm();
    let cases = fixture_json("greedy.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let expected = ids(&case["prompt_token_ids"]);
        let got = tok.encode(prompt, true, true).unwrap();
        assert_eq!(got, expected, "prompt {prompt:?}");
        assert_eq!(tok.decode(&got), prompt);
    }
}

#[test]
fn special_tokens_only_with_parse_special() {
    let (_f, tok) = smollm();
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = tok.encode(text, false, true).unwrap();
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&2));
    let plain = tok.encode(text, false, false).unwrap();
    assert!(plain.len() > parsed.len());
    assert!(!plain.iter().any(|&id| tok.is_special(id)));
    assert_eq!(tok.decode(&plain), text);
    assert_eq!(tok.decode_with(&parsed, true), "user\nHi");
}

#[test]
fn round_trips() {
    let (_f, tok) = smollm();
    for text in [
        "",
        " ",
        "  leading and trailing  ",
        "tabs\tand\n\nnewlines\r\n",
        "numbers 1234567 and 3.14159",
        "naïve café, 世界, emoji 🎉🦀, RTL שלום",
        "it's they're we'll I'd you've",
    ] {
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(tok.decode(&ids), text);
    }
}

#[test]
fn stream_decoder_on_byte_level_pieces() {
    let (_f, tok) = smollm();
    let text = "héllo 世界 🎉 done";
    let ids = tok.encode(text, false, false).unwrap();
    let mut dec = StreamDecoder::new(&tok);
    let chunks: Vec<String> = ids.iter().map(|&id| dec.push(id)).collect();
    let rest = dec.finish();
    assert_eq!(rest, "");
    assert_eq!(chunks.concat(), text);
    assert!(!chunks.concat().contains('\u{FFFD}'));
    // Some tokens are partial characters here, so some pushes emit nothing ...
    assert!(chunks.iter().any(|c| c.is_empty()), "{chunks:?}");
    // ... and the text still comes out in several pieces.
    assert!(
        chunks.iter().filter(|c| !c.is_empty()).count() >= 4,
        "{chunks:?}"
    );
}

#[test]
fn chat_template_renders_chatml() {
    let (f, tok) = smollm();
    let tmpl = tok.chat_template().unwrap();
    assert_eq!(Some(tmpl.source()), tok.chat_template_source());
    let conv = [
        ChatMessage::system("You are terse."),
        ChatMessage::user("What is 2+2?"),
    ];
    let expected = "<|im_start|>system\nYou are terse.<|im_end|>\n\
                    <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
                    <|im_start|>assistant\n";
    assert_eq!(tmpl.render(&conv, true).unwrap(), expected);

    // Without a system message the template adds its own.
    let conv = [ChatMessage::user("Hi"), ChatMessage::assistant("Hello!")];
    let expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nHi<|im_end|>\n\
                    <|im_start|>assistant\nHello!<|im_end|>\n";
    assert_eq!(tmpl.render(&conv, false).unwrap(), expected);

    let from_meta = ChatTemplate::from_gguf_metadata(|k| f.get(k)).unwrap();
    assert_eq!(from_meta.render(&conv, false).unwrap(), expected);

    // The rendered prompt tokenizes with the control tokens as single ids.
    let ids = tok
        .encode(&tmpl.render(&conv, true).unwrap(), true, true)
        .unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 4);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<plumb_tokenizer::Tokenizer>();
    check::<plumb_tokenizer::ChatTemplate>();
}
