//! Tokenizers converted between GGUF metadata and Hugging Face files, held to independent
//! oracles: the default model's GGUF vocabulary (made by llama.cpp's converter from the
//! original tokenizer.json) written out as a tokenizer.json must tokenize apache-2.0.txt to
//! llama.cpp's exact ids when loaded by the `tokenizers` library itself, and by plumb's
//! tokenizer.json loader; read back, it must give every `tokenizer.*` value of the original
//! file. Unsupported inputs must say what is wrong.

mod common;

use std::path::PathBuf;

use common::{fixture, fixture_json, ids, smollm};
use plumb_tokenizer::{GgufVocab, Tokenizer};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plumb-tokconv-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn first_difference(got: &[u32], want: &[u32]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    format!(
        "ids differ at {at} (got {}, want {}): got {:?} want {:?}",
        got.len(),
        want.len(),
        &got[at.saturating_sub(2)..(at + 4).min(got.len())],
        &want[at.saturating_sub(2)..(at + 4).min(want.len())]
    )
}

/// The default model's vocabulary written as a Hugging Face directory.
fn written_dir(tag: &str) -> (plumb_gguf::GgufFile, Tokenizer, PathBuf) {
    let (file, tok) = smollm();
    let vocab = GgufVocab::from_gguf_metadata(|k| file.get(k)).expect("a gpt2 vocabulary");
    let dir = scratch(tag);
    vocab.write_model_dir(&dir).unwrap();
    (file, tok, dir)
}

#[test]
fn written_tokenizer_json_gives_llama_cpp_ids_in_the_tokenizers_library() {
    let (_file, _tok, dir) = written_dir("hf-lib");
    let hf = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json"))
        .expect("the tokenizers library loads the written tokenizer.json");
    let text = fixture("apache-2.0.txt");
    let want = ids(&fixture_json("apache-2.0.tokens.json")["token_ids"]);
    let got = hf.encode(text.as_str(), false).unwrap().get_ids().to_vec();
    assert!(got == want, "{}", first_difference(&got, &want));
    assert_eq!(hf.decode(&got, false).unwrap(), text);
    // Prompts with control tokens in their text: added tokens are matched whole.
    for case in fixture_json("greedy.json").as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want = ids(&case["prompt_token_ids"]);
        let got = hf.encode(prompt, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "prompt {prompt:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn written_directory_loads_in_plumb_like_the_gguf() {
    let (_file, gguf_tok, dir) = written_dir("plumb");
    let tok = Tokenizer::from_model_dir(&dir).unwrap();
    let text = fixture("apache-2.0.txt");
    let want = ids(&fixture_json("apache-2.0.tokens.json")["token_ids"]);
    let got = tok.encode(&text, true, false).unwrap();
    assert!(got == want, "{}", first_difference(&got, &want));
    for case in fixture_json("greedy.json").as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(
            tok.encode(prompt, true, true).unwrap(),
            ids(&case["prompt_token_ids"]),
            "prompt {prompt:?}"
        );
    }
    assert_eq!(tok.vocab_size(), gguf_tok.vocab_size());
    assert_eq!((tok.bos(), tok.eos()), (gguf_tok.bos(), gguf_tok.eos()));
    assert_eq!(tok.add_bos_default(), gguf_tok.add_bos_default());
    assert_eq!(tok.stop_tokens(), gguf_tok.stop_tokens());
    assert_eq!(tok.chat_template_source(), gguf_tok.chat_template_source());
    for id in 0..tok.vocab_size() as u32 {
        assert_eq!(tok.token_kind(id), gguf_tok.token_kind(id), "token {id}");
        assert_eq!(tok.token_bytes(id), gguf_tok.token_bytes(id), "token {id}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn directory_converts_back_to_the_original_metadata() {
    let (file, _tok, dir) = written_dir("back");
    let back = GgufVocab::from_model_dir(&dir, Some(49152)).unwrap();
    let meta = back.to_metadata();
    // Every tokenizer key of the original file, with the same type and value.
    let original: Vec<&String> = file
        .metadata
        .iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("tokenizer."))
        .collect();
    assert!(original.len() >= 12, "{original:?}");
    for key in &original {
        let got = meta.iter().find(|(k, _)| k == *key).map(|(_, v)| v);
        assert!(got == file.get(key), "{key}: differs or missing");
    }
    let written: Vec<&String> = meta.iter().map(|(k, _)| k).collect();
    assert_eq!(written.len(), original.len(), "{written:?} vs {original:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unsupported_tokenizers_are_refused_by_name() {
    let dir = scratch("bad");
    let conv = |j: serde_json::Value| {
        GgufVocab::from_json(&j, None, None, None, None)
            .unwrap_err()
            .to_string()
    };
    let e = conv(serde_json::json!({"model": {"type": "WordPiece", "vocab": {}}}));
    assert!(
        e.contains("WordPiece") && e.contains("byte-level BPE"),
        "{e}"
    );
    let e = conv(serde_json::json!({"model": {"type": "BPE", "byte_fallback": true}}));
    assert!(e.contains("SentencePiece"), "{e}");
    let bpe = |pre: serde_json::Value| {
        serde_json::json!({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
            "decoder": {"type": "ByteLevel"}, "pre_tokenizer": pre})
    };
    let e = conv(bpe(serde_json::json!({"type": "Whitespace"})));
    assert!(e.contains("Whitespace"), "{e}");
    let e = conv(bpe(
        serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]}),
    ));
    assert!(e.contains("not a split llama.cpp names"), "{e}");
    let mut no_merges = bpe(serde_json::json!({"type": "ByteLevel"}));
    no_merges["model"].as_object_mut().unwrap().remove("merges");
    let e = conv(no_merges);
    assert!(e.contains("merges is missing"), "{e}");

    // A directory without tokenizer.json.
    let e = GgufVocab::from_model_dir(&dir, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    // A GGUF SentencePiece vocabulary is not converted.
    let (gemma, _) = common::gemma();
    let e = GgufVocab::from_gguf_metadata(|k| gemma.get(k))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"llama\"") && e.contains("SentencePiece"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
