//! Gemma 3's tokenizer (SentencePiece, 262,144 pieces, BOS added) against llama.cpp's ids
//! in the fixtures, its speed, and Gemma's chat format.

mod common;

use std::time::Instant;

use common::{gemma, gemma_fixture, ids};
use plumb_tokenizer::{ChatMessage, ChatTemplate, TokenizerModel};

fn fixture_json(name: &str) -> serde_json::Value {
    serde_json::from_str(&gemma_fixture(name)).expect("fixture JSON")
}

#[test]
fn metadata() {
    let (_f, tok) = gemma();
    assert_eq!(tok.model(), TokenizerModel::SentencePiece);
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!((tok.bos(), tok.eos()), (Some(2), Some(1)));
    assert!(tok.add_bos_default());
    // EOS and <end_of_turn> end generation.
    let eot = tok.token_id("<end_of_turn>").expect("Gemma's end of turn");
    assert!(tok.stop_tokens().contains(&1) && tok.stop_tokens().contains(&eot));
}

#[test]
fn apache_license_ids_match_llama_cpp_in_well_under_a_second() {
    let (_f, tok) = gemma();
    let text = gemma_fixture("apache-2.0.txt");
    let expected = ids(&fixture_json("apache-2.0.tokens.json")["token_ids"]);
    let t0 = Instant::now();
    let got = tok.encode(&text, true, false).unwrap();
    let took = t0.elapsed();
    eprintln!(
        "{} lines, {} ids in {took:?}",
        text.lines().count(),
        got.len()
    );
    if got != expected {
        let at = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        let show = |v: &[u32]| v[at.saturating_sub(3)..(at + 5).min(v.len())].to_vec();
        panic!(
            "ids differ at {at} (got {}, want {}): got {:?} want {:?}",
            got.len(),
            expected.len(),
            show(&got),
            show(&expected)
        );
    }
    // The decoded ids are the text (BOS is a control token: left out).
    assert_eq!(tok.decode_with(&got, true), text);
    // Eleven copies (2,222 lines, ~25,000 ids): measured ~0.02 s; the bound leaves room for
    // a loaded machine.
    let long = text.repeat(11);
    let t0 = Instant::now();
    let n = tok.encode(&long, true, false).unwrap().len();
    let took = t0.elapsed();
    eprintln!("{} lines, {n} ids in {took:?}", long.lines().count());
    assert!(
        n > 11 * 2300 && took.as_secs_f64() < 0.5,
        "{n} ids took {took:?}"
    );
}

#[test]
fn greedy_prompt_ids_match_llama_cpp() {
    let (_f, tok) = gemma();
    let cases = fixture_json("greedy.json");
    let cases = cases.as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let expected = ids(&case["prompt_token_ids"]);
        let got = tok.encode(prompt, true, true).unwrap();
        assert_eq!(got, expected, "prompt {prompt:?}");
        assert_eq!(tok.decode_with(&got, true), prompt);
    }
}

#[test]
fn round_trips() {
    let (_f, tok) = gemma();
    for text in [
        " ",
        "  leading and trailing  ",
        "tabs\tand\n\nnewlines\r\n",
        "naïve café, 世界, emoji 🎉🦀, RTL שלום",
        "\u{1}\u{7f} bytes outside every piece",
    ] {
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(tok.decode(&ids), text, "{ids:?}");
    }
}

#[test]
fn chat_template_is_gemmas_turn_format() {
    let (f, tok) = gemma();
    // The file has no template of its own.
    assert_eq!(tok.chat_template_source(), None);
    let tmpl = tok.chat_template().unwrap();
    assert_eq!(tmpl.source(), ChatTemplate::GEMMA);
    let conv = [
        ChatMessage::system("You are terse."),
        ChatMessage::user(" What is 2+2? "),
        ChatMessage::assistant("4"),
        ChatMessage::user("And 3+3?"),
    ];
    let expected = "<bos><start_of_turn>user\nYou are terse.\n\nWhat is 2+2?<end_of_turn>\n\
                    <start_of_turn>model\n4<end_of_turn>\n\
                    <start_of_turn>user\nAnd 3+3?<end_of_turn>\n\
                    <start_of_turn>model\n";
    assert_eq!(tmpl.render(&conv, true).unwrap(), expected);
    let from_meta = ChatTemplate::from_gguf_metadata(|k| f.get(k)).unwrap();
    assert_eq!(from_meta.render(&conv, true).unwrap(), expected);
    // Turns that do not alternate are refused with the template's message.
    let bad = [ChatMessage::user("a"), ChatMessage::user("b")];
    let e = tmpl.render(&bad, true).unwrap_err().to_string();
    assert!(e.contains("alternate"), "{e}");
    // BOS and the turn markers are single ids.
    let ids = tok
        .encode(&tmpl.render(&conv[1..2], true).unwrap(), false, true)
        .unwrap();
    let sot = tok.token_id("<start_of_turn>").unwrap();
    assert_eq!(ids[..2], [2, sot]);
    assert_eq!(ids.iter().filter(|&&id| id == sot).count(), 2);
}
