//! Loading a Hugging Face tokenizer.json (+ tokenizer_config.json) written by the test.

use std::path::PathBuf;

use plumb_tokenizer::{ChatMessage, StreamDecoder, Tokenizer, TokenizerError, TokenizerModel};

const TOKENIZER_JSON: &str = r#"{
  "version": "1.0",
  "truncation": null,
  "padding": null,
  "added_tokens": [
    {"id": 17, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 18, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
  "post_processor": null,
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {
    "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
    "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
    "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7, "he": 8, "ll": 9,
              "hell": 10, "hello": 11, "Ġw": 12, "or": 13, "Ġwor": 14, "ld": 15, "Ġworld": 16},
    "merges": ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
  }
}"#;

const CONFIG_JSON: &str = r#"{
  "add_bos_token": false,
  "bos_token": "<|im_start|>",
  "eos_token": {"content": "<|im_end|>", "special": true},
  "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
}"#;

/// A fresh directory under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plumb-tokenizer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn loads_and_encodes() {
    let dir = temp_dir("json");
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER_JSON).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), CONFIG_JSON).unwrap();
    let tok = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.model(), TokenizerModel::TokenizerJson);
    assert_eq!(tok.vocab_size(), 19);
    assert_eq!((tok.bos(), tok.eos()), (Some(17), Some(18)));
    assert!(!tok.add_bos_default());
    assert_eq!(tok.stop_tokens(), &[18]);
    assert!(tok.is_special(17) && !tok.is_special(11));

    assert_eq!(
        tok.encode("hello world", true, false).unwrap(),
        vec![11, 16]
    );
    let ids = tok
        .encode("<|im_start|>hello world<|im_end|>", true, true)
        .unwrap();
    assert_eq!(ids, vec![17, 11, 16, 18]);
    assert_eq!(tok.decode(&ids), "<|im_start|>hello world<|im_end|>");
    assert_eq!(tok.decode_with(&ids, true), "hello world");
    assert_eq!(tok.token_bytes(16), b" world".to_vec());

    let mut dec = StreamDecoder::new(&tok).skip_special(true);
    let text: String = ids.iter().map(|&i| dec.push(i)).collect();
    assert_eq!(text, "hello world");

    let chat = tok.chat_template().unwrap();
    let out = chat
        .render(
            &[
                ChatMessage::user("  hello  "),
                ChatMessage::assistant("world"),
            ],
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nworld<|im_end|>\n<|im_start|>assistant\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn without_config_uses_defaults() {
    let dir = temp_dir("json-bare");
    std::fs::write(dir.join("tokenizer.json"), TOKENIZER_JSON).unwrap();
    let tok = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.bos(), None);
    assert!(!tok.add_bos_default());
    // <|im_end|> is a known end-of-turn token.
    assert_eq!(tok.stop_tokens(), &[18]);
    assert_eq!(tok.chat_template_source(), None);
    let chat = tok.chat_template().unwrap(); // ChatML default
    assert_eq!(
        chat.render(&[ChatMessage::user("hi")], false).unwrap(),
        "<|im_start|>user\nhi<|im_end|>\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = temp_dir("json-bad");
    let e = Tokenizer::from_tokenizer_json(dir.join("missing.json")).unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e}");
    assert!(e.to_string().contains("missing.json"));
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": 1}").unwrap();
    let e = Tokenizer::from_tokenizer_json(dir.join("tokenizer.json")).unwrap_err();
    assert!(e.to_string().contains("tokenizer.json"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
