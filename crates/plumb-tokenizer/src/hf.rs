//! Building a [`Tokenizer`] from a Hugging Face `tokenizer.json` (plus the sibling
//! `tokenizer_config.json`, `chat_template.jinja` and `generation_config.json` when present).

use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::error::{Result, TokenizerError};
use crate::tokenizer::{Backend, Parts, Tokenizer, TokenizerModel};
use crate::vocab::{parse_byte_token, PieceStyle, TokenKind};

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn read_json(path: &Path) -> Result<Json> {
    let text = read_text(path)?;
    parse_json(path, &text)
}

fn parse_json(path: &Path, text: &str) -> Result<Json> {
    serde_json::from_str(text).map_err(|e| TokenizerError::TokenizerJson {
        path: path.to_path_buf(),
        msg: format!("invalid JSON: {e}"),
    })
}

/// All `"type"` strings in a JSON tree (the component kinds of a decoder / pre-tokenizer).
fn types_in(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            if let Some(Json::String(t)) = m.get("type") {
                out.push(t.clone());
            }
            m.values().for_each(|x| types_in(x, out));
        }
        Json::Array(a) => a.iter().for_each(|x| types_in(x, out)),
        _ => {}
    }
}

/// `"<s>"` or `{"content": "<s>", ...}`.
pub(crate) fn token_text(v: Option<&Json>) -> Option<&str> {
    match v? {
        Json::String(s) => Some(s),
        Json::Object(m) => m.get("content")?.as_str(),
        _ => None,
    }
}

/// A string, or a list of `{name, template}` (the one named `default`, else the first).
pub(crate) fn template_text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) => Some(s.clone()),
        Json::Array(list) => {
            let named = |n: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(Json::as_str) == Some(n))
            };
            named("default")
                .or(list.first())
                .and_then(|t| t.get("template")?.as_str())
                .map(str::to_string)
        }
        _ => None,
    }
}

/// Every token's text by id; ids the vocabulary skips are empty.
fn vocab_table(hf: &tokenizers::Tokenizer) -> Vec<String> {
    let vocab = hf.get_vocab(true);
    let n = vocab.values().max().map_or(0, |&m| m as usize + 1);
    let mut tokens = vec![String::new(); n];
    for (t, &id) in &vocab {
        tokens[id as usize] = t.clone();
    }
    tokens
}

/// How pieces spell text, told by the decoder's (else the pre-tokenizer's) components, and
/// whether decoding strips the leading space a SentencePiece model puts in front.
fn piece_style(json: &Json) -> (PieceStyle, bool) {
    let (mut dec_types, mut pre_types) = (Vec::new(), Vec::new());
    types_in(&json["decoder"], &mut dec_types);
    types_in(&json["pre_tokenizer"], &mut pre_types);
    let has = |v: &[String], t: &str| v.iter().any(|x| x == t);
    let style = if has(&dec_types, "ByteLevel") {
        PieceStyle::ByteLevel
    } else if ["Metaspace", "ByteFallback", "Replace"]
        .iter()
        .any(|t| has(&dec_types, t))
    {
        PieceStyle::SentencePiece
    } else if has(&pre_types, "ByteLevel") {
        PieceStyle::ByteLevel
    } else {
        PieceStyle::Plain
    };
    let strip_leading_space = style == PieceStyle::SentencePiece
        && (has(&dec_types, "Strip") || has(&dec_types, "Metaspace"));
    (style, strip_leading_space)
}

/// Each token's kind: unused, unknown, byte (`<0x41>` in SentencePiece style) or normal;
/// added tokens are control (special) or user-defined.
fn token_kinds(
    hf: &tokenizers::Tokenizer,
    tokens: &[String],
    json: &Json,
    style: PieceStyle,
) -> Vec<TokenKind> {
    let unk_text = json["model"]["unk_token"].as_str();
    let mut kinds: Vec<TokenKind> = tokens
        .iter()
        .map(|t| {
            if t.is_empty() {
                TokenKind::Unused
            } else if Some(t.as_str()) == unk_text {
                TokenKind::Unknown
            } else if style == PieceStyle::SentencePiece && parse_byte_token(t).is_some() {
                TokenKind::Byte
            } else {
                TokenKind::Normal
            }
        })
        .collect();
    for (id, added) in hf.get_added_tokens_decoder() {
        if let Some(k) = kinds.get_mut(id as usize) {
            *k = if added.special {
                TokenKind::Control
            } else {
                TokenKind::UserDefined
            };
        }
    }
    kinds
}

/// The `eos_token_id` of `generation_config.json`: one id or a list.
fn generation_stops(gen_config: Option<&Json>) -> Vec<u32> {
    match gen_config.and_then(|g| g.get("eos_token_id")) {
        Some(Json::Number(x)) => x.as_u64().into_iter().map(|x| x as u32).collect(),
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

impl Tokenizer {
    /// The tokenizer of a Hugging Face or MLX model directory: its `tokenizer.json`, with
    /// `tokenizer_config.json` (chat template, special tokens, `add_bos_token`) and
    /// `generation_config.json` (stop ids) beside it.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizerError::TokenizerJson {
                path,
                msg: "missing: a model directory needs its tokenizer.json".into(),
            });
        }
        Self::from_tokenizer_json(path)
    }

    /// Loads a Hugging Face `tokenizer.json`. BOS/EOS, `add_bos_token` and the chat template
    /// come from a sibling `tokenizer_config.json` (or `chat_template.jinja`) when present;
    /// extra stop ids from `generation_config.json`. Without `add_bos_token`, BOS is added
    /// when the tokenizer's post-processor adds it.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        let json = parse_json(path, &text)?;
        let err = |msg: String| TokenizerError::TokenizerJson {
            path: path.to_path_buf(),
            msg,
        };
        let mut hf: tokenizers::Tokenizer = serde_json::from_str(&text).map_err(|e| {
            err(format!(
                "not a tokenizer.json the tokenizers library understands: {e}"
            ))
        })?;
        // Special added tokens are found by our own matcher (so that `parse_special` works).
        hf.set_encode_special_tokens(true);
        // Inputs are never padded, and cut only where the caller says (`encode_sequence`).
        hf.with_padding(None);
        hf.with_truncation(None)
            .map_err(|e| err(format!("cannot turn truncation off: {e}")))?;

        let dir = path.parent().unwrap_or(Path::new("."));
        let sibling = |name: &str| -> Option<PathBuf> {
            let p = dir.join(name);
            p.is_file().then_some(p)
        };
        let config = sibling("tokenizer_config.json")
            .map(|p| read_json(&p))
            .transpose()?;
        let gen_config = sibling("generation_config.json").and_then(|p| read_json(&p).ok());

        let tokens = vocab_table(&hf);
        let (style, strip_leading_space) = piece_style(&json);
        let kinds = token_kinds(&hf, &tokens, &json, style);

        let cfg = |key: &str| config.as_ref().and_then(|c| c.get(key));
        let id_of = |key: &str| token_text(cfg(key)).and_then(|t| hf.token_to_id(t));
        let gen_ids = generation_stops(gen_config.as_ref());
        let mut bos = id_of("bos_token");
        let eos = id_of("eos_token").or(gen_ids.first().copied());
        // What the post-processor adds in front of a sequence.
        let probe = hf
            .encode_fast("", true)
            .map(|e| e.get_ids().first().copied())
            .unwrap_or(None)
            .filter(|&id| kinds.get(id as usize) == Some(&TokenKind::Control));
        bos = bos.or(probe);
        let add_bos = match cfg("add_bos_token").and_then(Json::as_bool) {
            Some(b) => b,
            None => probe.is_some() && probe == bos,
        };
        let chat_template = template_text(cfg("chat_template")).or_else(|| {
            sibling("chat_template.jinja").and_then(|p| std::fs::read_to_string(p).ok())
        });
        let pad = id_of("pad_token");
        Tokenizer::assemble(Parts {
            model: TokenizerModel::TokenizerJson,
            backend: Backend::Hf(Box::new(hf)),
            style,
            tokens,
            kinds,
            bos,
            eos,
            eot: None,
            pad,
            extra_stops: gen_ids,
            add_bos,
            add_eos: cfg("add_eos_token")
                .and_then(Json::as_bool)
                .unwrap_or(false),
            add_space_prefix: false,
            strip_leading_space,
            chat_template,
            pre: None,
        })
    }
}
