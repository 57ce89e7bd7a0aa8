//! Tokenizers between GGUF metadata and Hugging Face files, for byte-level BPE vocabularies
//! (`tokenizer.ggml.model = "gpt2"`): [`GgufVocab`] holds the `tokenizer.ggml.*` values,
//! is read from either side and written to either side.
//!
//! GGUF → Hugging Face writes `tokenizer.json` (a BPE model over the same vocabulary and
//! merges, the pre-tokenizer that `tokenizer.ggml.pre` names, a byte-level decoder, the
//! control and user-defined tokens as added tokens), `tokenizer_config.json` (special
//! tokens, `add_bos_token`, the chat template) and `generation_config.json` (BOS and the
//! stop ids).
//!
//! Hugging Face → GGUF follows llama.cpp's converter where it decides something: ids the
//! vocabulary skips become `[PAD{id}]` of type unused, added tokens are control tokens when
//! marked special or when they look special (`<|…|>`), merges given as pairs are joined with a
//! space (a space inside a part written as `Ġ`), special ids are looked up among the added
//! tokens by the text `tokenizer_config.json` gives and else taken from `config.json`'s
//! `*_token_id`. The pre-tokenizer name is derived from the pre-tokenizer itself: its splits
//! (a `Split` regex, `Digits`, `ByteLevel`'s own regex) must be exactly one of the sets
//! plumb and llama.cpp implement ([`crate::bpe::pre_name_for`]); anything else is refused
//! rather than guessed.

use std::path::Path;

use plumb_gguf::{Value, ValueType};
use serde_json::{json, Map, Value as Json};

use crate::bpe::{self, DIGIT_REGEX, GPT2_REGEX};
use crate::error::{Result, TokenizerError};
use crate::gguf::*;
use crate::hf::{read_json, template_text, token_text};

/// GGUF token types.
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

fn convert_err(msg: impl Into<String>) -> TokenizerError {
    TokenizerError::Convert(msg.into())
}

/// A byte-level BPE vocabulary as GGUF metadata stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.pre`: a name [`bpe::resolve_pre`] knows.
    pub pre: String,
    /// Byte-level text of every token (control and user-defined tokens: their raw text).
    pub tokens: Vec<String>,
    /// GGUF token types (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_type: Vec<i32>,
    /// `left right`, highest priority first.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// Byte-level BPE never adds a space prefix; kept so that the key round-trips.
    pub add_space_prefix: Option<bool>,
    pub chat_template: Option<String>,
}

/// Whether an added token's text looks like a control token although it is not marked
/// special (llama.cpp's rule: `<|…|>`, `<｜…｜>`, `<unused…>` and a few names).
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

impl GgufVocab {
    /// Reads the vocabulary from GGUF metadata (`|k| file.get(k)`). Only byte-level BPE
    /// (`gpt2`) with a pre-tokenizer plumb knows by name converts.
    pub fn from_gguf_metadata<'a>(get: impl Fn(&str) -> Option<&'a Value>) -> Result<Self> {
        let m = Meta(get);
        let model = m
            .str(KEY_MODEL)?
            .ok_or_else(|| TokenizerError::MissingKey {
                key: KEY_MODEL.to_string(),
            })?;
        if model != "gpt2" {
            return Err(convert_err(format!(
                "tokenizer.ggml.model is {model:?}: plumb converts byte-level BPE (\"gpt2\") \
                 vocabularies only (SentencePiece \"llama\" vocabularies are not converted)"
            )));
        }
        let pre = m.str(KEY_PRE)?;
        let info = bpe::resolve_pre(pre);
        if info.fallback {
            return Err(convert_err(format!(
                "tokenizer.ggml.pre {pre:?} is not a pre-tokenizer plumb knows, so its \
                 regexes cannot be written out"
            )));
        }
        let tokens = m.strings(KEY_TOKENS)?;
        let n = tokens.len();
        let token_type = m
            .numbers(KEY_TOKEN_TYPE, n, |v| {
                v.as_i64().and_then(|x| i32::try_from(x).ok())
            })?
            .unwrap_or_else(|| vec![NORMAL; n]);
        let merges = m.strings(KEY_MERGES)?;
        for (i, mg) in merges.iter().enumerate() {
            if bpe::split_merge(mg).is_none() {
                return Err(TokenizerError::InvalidVocab(format!(
                    "merge #{i} {mg:?} is not `left right`"
                )));
            }
        }
        let id =
            |key: &str| -> Result<Option<u32>> { Ok(m.id(key)?.filter(|&i| (i as usize) < n)) };
        Ok(GgufVocab {
            pre: pre.unwrap_or_default().to_string(),
            tokens,
            token_type,
            merges,
            bos: id(KEY_BOS)?,
            eos: id(KEY_EOS)?,
            unk: id(KEY_UNK)?,
            pad: id(KEY_PAD)?,
            eot: id(KEY_EOT)?,
            eom: id(KEY_EOM)?,
            add_bos: m.bool(KEY_ADD_BOS)?,
            add_eos: m.bool(KEY_ADD_EOS)?,
            add_space_prefix: m.bool(KEY_ADD_SPACE_PREFIX)?,
            chat_template: m.str(KEY_CHAT_TEMPLATE)?.map(str::to_string),
        })
    }

    /// The `tokenizer.ggml.*` (and `tokenizer.chat_template`) metadata, typed as llama.cpp
    /// writes it (token types INT32, ids UINT32).
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let strings = |v: &[String]| {
            Value::Array(
                ValueType::String,
                v.iter().cloned().map(Value::String).collect(),
            )
        };
        let mut out = vec![
            (KEY_MODEL.to_string(), Value::String("gpt2".into())),
            (KEY_PRE.to_string(), Value::String(self.pre.clone())),
            (KEY_TOKENS.to_string(), strings(&self.tokens)),
            (
                KEY_TOKEN_TYPE.to_string(),
                Value::Array(
                    ValueType::I32,
                    self.token_type.iter().map(|&t| Value::I32(t)).collect(),
                ),
            ),
            (KEY_MERGES.to_string(), strings(&self.merges)),
        ];
        for (key, id) in [
            (KEY_BOS, self.bos),
            (KEY_EOS, self.eos),
            (KEY_UNK, self.unk),
            (KEY_PAD, self.pad),
            (KEY_EOT, self.eot),
            (KEY_EOM, self.eom),
        ] {
            if let Some(id) = id {
                out.push((key.to_string(), Value::U32(id)));
            }
        }
        for (key, b) in [
            (KEY_ADD_BOS, self.add_bos),
            (KEY_ADD_EOS, self.add_eos),
            (KEY_ADD_SPACE_PREFIX, self.add_space_prefix),
        ] {
            if let Some(b) = b {
                out.push((key.to_string(), Value::Bool(b)));
            }
        }
        if let Some(t) = &self.chat_template {
            out.push((KEY_CHAT_TEMPLATE.to_string(), Value::String(t.clone())));
        }
        out
    }

    fn text(&self, id: Option<u32>) -> Option<&str> {
        id.and_then(|i| self.tokens.get(i as usize))
            .map(String::as_str)
    }

    /// The `tokenizer.json` of this vocabulary.
    pub fn tokenizer_json(&self) -> Result<Json> {
        let info = bpe::resolve_pre(Some(&self.pre));
        if info.fallback {
            return Err(convert_err(format!(
                "tokenizer.ggml.pre {:?} is not a pre-tokenizer plumb knows",
                self.pre
            )));
        }
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        // Hugging Face's own spelling where one exists (GPT-2's split is ByteLevel's regex;
        // a digit split before it is `Digits`), else one `Split` per regex.
        let pre_tokenizer = match info.regexes {
            [GPT2_REGEX] => byte_level(true),
            [DIGIT_REGEX, GPT2_REGEX] => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            regexes => {
                let mut steps: Vec<Json> = regexes
                    .iter()
                    .map(|r| {
                        json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated",
                               "invert": false})
                    })
                    .collect();
                steps.push(byte_level(false));
                json!({"type": "Sequence", "pretokenizers": steps})
            }
        };
        let mut vocab = Map::new();
        let mut added = Vec::new();
        for (id, (t, &ty)) in self.tokens.iter().zip(&self.token_type).enumerate() {
            if ty == UNUSED {
                continue;
            }
            if !vocab.contains_key(t) {
                vocab.insert(t.clone(), json!(id));
            }
            if ty == CONTROL || ty == USER_DEFINED || ty == 2 {
                added.push(json!({"id": id, "content": t, "single_word": false,
                    "lstrip": false, "rstrip": false, "normalized": false,
                    "special": ty != USER_DEFINED}));
            }
        }
        let mut merges = Vec::with_capacity(self.merges.len());
        for (i, m) in self.merges.iter().enumerate() {
            let (l, r) = bpe::split_merge(m).ok_or_else(|| {
                TokenizerError::InvalidVocab(format!("merge #{i} {m:?} is not `left right`"))
            })?;
            merges.push(json!([l, r]));
        }
        let post_processor = match (self.add_bos, self.text(self.bos)) {
            (Some(true), Some(bos)) => {
                let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
                let seq = |s: &str, ty: u32| json!({"Sequence": {"id": s, "type_id": ty}});
                json!({"type": "TemplateProcessing",
                    "single": [special(bos), seq("A", 0)],
                    "pair": [special(bos), seq("A", 0), special(bos), seq("B", 1)],
                    "special_tokens": {bos: {"id": bos, "ids": [self.bos], "tokens": [bos]}}})
            }
            _ => Json::Null,
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                        "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false,
                      "ignore_merges": info.ignore_merges, "vocab": vocab, "merges": merges},
        }))
    }

    /// The `tokenizer_config.json` of this vocabulary.
    pub fn tokenizer_config_json(&self) -> Json {
        let mut c = Map::new();
        if let Some(b) = self.add_bos {
            c.insert("add_bos_token".into(), json!(b));
        }
        if let Some(b) = self.add_eos {
            c.insert("add_eos_token".into(), json!(b));
        }
        let mut decoder = Map::new();
        for (id, (t, &ty)) in self.tokens.iter().zip(&self.token_type).enumerate() {
            if ty == CONTROL || ty == USER_DEFINED || ty == 2 {
                decoder.insert(
                    id.to_string(),
                    json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false,
                           "single_word": false, "special": ty != USER_DEFINED}),
                );
            }
        }
        c.insert("added_tokens_decoder".into(), Json::Object(decoder));
        for (key, id) in [
            ("bos_token", self.bos),
            ("eos_token", self.eos),
            ("unk_token", self.unk),
            ("pad_token", self.pad),
        ] {
            if let Some(t) = self.text(id) {
                c.insert(key.into(), json!(t));
            }
        }
        if let Some(t) = &self.chat_template {
            c.insert("chat_template".into(), json!(t));
        }
        c.insert("clean_up_tokenization_spaces".into(), json!(false));
        c.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
        Json::Object(c)
    }

    /// The `generation_config.json` of this vocabulary: BOS, and EOS with the end-of-turn
    /// and end-of-message ids as stops.
    pub fn generation_config_json(&self) -> Json {
        let mut stops: Vec<u32> = Vec::new();
        for id in [self.eos, self.eot, self.eom].into_iter().flatten() {
            if !stops.contains(&id) {
                stops.push(id);
            }
        }
        let mut g = Map::new();
        if let Some(b) = self.bos {
            g.insert("bos_token_id".into(), json!(b));
        }
        match stops[..] {
            [] => {}
            [one] => {
                g.insert("eos_token_id".into(), json!(one));
            }
            _ => {
                g.insert("eos_token_id".into(), json!(stops));
            }
        }
        if let Some(p) = self.pad {
            g.insert("pad_token_id".into(), json!(p));
        }
        Json::Object(g)
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` into
    /// `dir`.
    pub fn write_model_dir(&self, dir: &Path) -> Result<()> {
        let files = [
            ("tokenizer.json", self.tokenizer_json()?),
            ("tokenizer_config.json", self.tokenizer_config_json()),
            ("generation_config.json", self.generation_config_json()),
        ];
        for (name, j) in files {
            let path = dir.join(name);
            let text =
                serde_json::to_string_pretty(&j).map_err(|e| TokenizerError::TokenizerJson {
                    path: path.clone(),
                    msg: format!("cannot serialize: {e}"),
                })?;
            std::fs::write(&path, text).map_err(|source| TokenizerError::Io { path, source })?;
        }
        Ok(())
    }

    /// Reads the vocabulary of a Hugging Face or MLX model directory: `tokenizer.json`,
    /// with `tokenizer_config.json`, `chat_template.jinja` and `config.json` beside it when
    /// present. `vocab_size` (config.json's) pads the vocabulary with unused tokens.
    pub fn from_model_dir(dir: &Path, vocab_size: Option<usize>) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(TokenizerError::TokenizerJson {
                path,
                msg: "missing: converting a directory's tokenizer needs its tokenizer.json".into(),
            });
        }
        let json = read_json(&path)?;
        let sibling = |name: &str| -> Result<Option<Json>> {
            let p = dir.join(name);
            p.is_file().then(|| read_json(&p)).transpose()
        };
        let config = sibling("tokenizer_config.json")?;
        let model_config = sibling("config.json")?;
        let template_file = dir.join("chat_template.jinja");
        let template_file = template_file
            .is_file()
            .then(|| std::fs::read_to_string(&template_file))
            .transpose()
            .map_err(|source| TokenizerError::Io {
                path: dir.join("chat_template.jinja"),
                source,
            })?;
        Self::from_json(
            &json,
            config.as_ref(),
            model_config.as_ref(),
            template_file,
            vocab_size,
        )
        .map_err(|e| match e {
            TokenizerError::Convert(msg) => TokenizerError::TokenizerJson {
                path: path.clone(),
                msg: format!("cannot convert to GGUF metadata: {msg}"),
            },
            other => other,
        })
    }

    /// [`from_model_dir`](Self::from_model_dir) over parsed files.
    pub fn from_json(
        json: &Json,
        config: Option<&Json>,
        model_config: Option<&Json>,
        template_file: Option<String>,
        vocab_size: Option<usize>,
    ) -> Result<Self> {
        let model = &json["model"];
        let model_type = model["type"].as_str().unwrap_or("(none)");
        if model_type != "BPE" {
            return Err(convert_err(format!(
                "the model is {model_type:?}: plumb converts byte-level BPE tokenizers only"
            )));
        }
        if model["byte_fallback"].as_bool() == Some(true) {
            return Err(convert_err(
                "a BPE with byte_fallback is a SentencePiece-style vocabulary, which plumb \
                 does not convert",
            ));
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if !matches!(&model[key], Json::Null) && model[key] != json!("") {
                return Err(convert_err(format!(
                    "{key} {} has no GGUF equivalent",
                    model[key]
                )));
            }
        }
        let decoder = json["decoder"]["type"].as_str().unwrap_or("(none)");
        if decoder != "ByteLevel" {
            return Err(convert_err(format!(
                "the decoder is {decoder:?}, not ByteLevel: not a byte-level vocabulary"
            )));
        }
        match &json["normalizer"] {
            Json::Null => {}
            // llama.cpp's converter drops NFC too: its GGUF tokenizes NFC text identically.
            n if n["type"] == "NFC" => {}
            n => {
                return Err(convert_err(format!(
                    "the normalizer {} has no GGUF equivalent",
                    n["type"]
                )))
            }
        }
        let regexes = split_regexes(&json["pre_tokenizer"])?;
        let ignore_merges = model["ignore_merges"].as_bool().unwrap_or(false);
        let refs: Vec<&str> = regexes.iter().map(String::as_str).collect();
        let pre = bpe::pre_name_for(&refs, ignore_merges).ok_or_else(|| {
            convert_err(format!(
                "the pre-tokenizer splits by {regexes:?} (ignore_merges {ignore_merges}): \
                 not a split llama.cpp names (gpt2, smollm, llama-bpe, dbrx, qwen2, default)"
            ))
        })?;

        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| convert_err("model.vocab is not an object"))?;
        let added: Vec<(u32, String, bool)> = match &json["added_tokens"] {
            Json::Array(list) => list
                .iter()
                .map(|a| {
                    let id = a["id"].as_u64().and_then(|x| u32::try_from(x).ok());
                    let content = a["content"].as_str();
                    match (id, content) {
                        (Some(id), Some(c)) => {
                            Ok((id, c.to_string(), a["special"].as_bool().unwrap_or(false)))
                        }
                        _ => Err(convert_err(format!("added token {a} has no id or content"))),
                    }
                })
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        let mut ids = Vec::with_capacity(vocab.len());
        for (t, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| convert_err(format!("vocabulary entry {t:?} has id {id}")))?;
            ids.push((id, t.as_str()));
        }
        let max_id = ids
            .iter()
            .map(|&(i, _)| i)
            .chain(added.iter().map(|a| a.0))
            .max()
            .map_or(0, |m| m as usize + 1);
        let n = max_id.max(vocab_size.unwrap_or(0));
        if n > 1 << 24 {
            return Err(convert_err(format!("{n} tokens is implausible")));
        }
        let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
        let mut token_type = vec![UNUSED; n];
        for (id, t) in ids {
            tokens[id as usize] = t.to_string();
            token_type[id as usize] = NORMAL;
        }
        for (id, content, special) in &added {
            tokens[*id as usize] = content.clone();
            token_type[*id as usize] = if *special || looks_special(content) {
                CONTROL
            } else {
                USER_DEFINED
            };
        }
        let merges = match &model["merges"] {
            Json::Array(list) => list
                .iter()
                .map(|m| match m {
                    Json::String(s) => Ok(s.clone()),
                    Json::Array(p) => match (p.first().and_then(Json::as_str), p.get(1)) {
                        (Some(l), Some(Json::String(r))) if p.len() == 2 => {
                            let enc = |s: &str| s.replace(' ', "\u{120}");
                            Ok(format!("{} {}", enc(l), enc(r)))
                        }
                        _ => Err(convert_err(format!("merge {m} is not a pair of strings"))),
                    },
                    _ => Err(convert_err(format!("merge {m} is not a string or a pair"))),
                })
                .collect::<Result<Vec<_>>>()?,
            _ => return Err(convert_err("model.merges is missing")),
        };

        // Special ids: the text tokenizer_config.json gives, found among the added tokens
        // (else in the vocabulary), then config.json's `*_token_id`.
        let cfg = |key: &str| config.and_then(|c| c.get(key));
        let by_text = |key: &str| -> Option<u32> {
            let text = token_text(cfg(key))?;
            added
                .iter()
                .find(|a| a.1 == text)
                .map(|a| a.0)
                .or_else(|| vocab.get(text)?.as_u64().map(|x| x as u32))
        };
        let from_model = |key: &str| -> Option<u32> {
            model_config?
                .get(key)?
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
        };
        let special = |typ: &str| {
            by_text(&format!("{typ}_token"))
                .or_else(|| from_model(&format!("{typ}_token_id")))
                .filter(|&i| (i as usize) < n)
        };
        let bos = special("bos");
        // What the post-processor puts in front (llama.cpp reads TemplateProcessing the same
        // way); tokenizer_config.json's add_bos_token, when given, decides.
        let post_bos = post_processor_first(&json["post_processor"]);
        let add_bos = cfg("add_bos_token").and_then(Json::as_bool).or_else(|| {
            let first = post_bos.as_deref()?;
            Some(Some(first) == bos.and_then(|b| tokens.get(b as usize)).map(String::as_str))
        });
        let chat_template = template_text(cfg("chat_template")).or(template_file);
        Ok(GgufVocab {
            pre: pre.to_string(),
            tokens,
            token_type,
            merges,
            bos,
            eos: special("eos"),
            unk: special("unk"),
            pad: special("pad"),
            eot: None,
            eom: None,
            add_bos,
            add_eos: cfg("add_eos_token").and_then(Json::as_bool),
            add_space_prefix: Some(false),
            chat_template,
        })
    }
}

/// The first token of a `TemplateProcessing`'s single-sequence template, when it is a
/// special token.
fn post_processor_first(p: &Json) -> Option<String> {
    let procs = match p["type"].as_str()? {
        "Sequence" => p["processors"].as_array()?.clone(),
        _ => vec![p.clone()],
    };
    procs
        .iter()
        .filter(|q| q["type"] == "TemplateProcessing")
        .find_map(|q| {
            let single = q["single"].as_array()?;
            if single.len() < 2 {
                return None;
            }
            single[0]["SpecialToken"]["id"].as_str().map(str::to_string)
        })
}

/// The regexes a byte-level pre-tokenizer splits by, in order: a `Split` (regex, isolated)
/// gives its regex, `Digits` (one digit each) `\p{N}`, `ByteLevel` with `use_regex` GPT-2's
/// regex. It must end in `ByteLevel` without a prefix space; anything else is refused.
fn split_regexes(pre: &Json) -> Result<Vec<String>> {
    let steps: Vec<&Json> = match pre["type"].as_str() {
        Some("Sequence") => pre["pretokenizers"]
            .as_array()
            .ok_or_else(|| convert_err("a Sequence pre-tokenizer without pretokenizers"))?
            .iter()
            .collect(),
        Some(_) => vec![pre],
        None => return Err(convert_err("no pre-tokenizer: not a byte-level BPE")),
    };
    let mut out = Vec::new();
    let last = steps.len().saturating_sub(1);
    for (i, s) in steps.iter().enumerate() {
        let ty = s["type"].as_str().unwrap_or("(none)");
        match ty {
            "ByteLevel" if i == last => {
                if s["add_prefix_space"].as_bool() == Some(true) {
                    return Err(convert_err(
                        "ByteLevel adds a prefix space, which a GGUF byte-level tokenizer \
                         never does",
                    ));
                }
                if s["use_regex"].as_bool().unwrap_or(true) {
                    out.push(GPT2_REGEX.to_string());
                }
                return Ok(out);
            }
            "Digits" if s["individual_digits"].as_bool() == Some(true) => {
                out.push(DIGIT_REGEX.to_string())
            }
            "Split" if s["behavior"] == "Isolated" && s["invert"].as_bool() != Some(true) => {
                let r = s["pattern"]["Regex"].as_str().ok_or_else(|| {
                    convert_err(format!("a Split on {} (not a regex)", s["pattern"]))
                })?;
                out.push(r.to_string());
            }
            _ => {
                return Err(convert_err(format!(
                    "pre-tokenizer step {ty:?} ({s}) has no GGUF equivalent (byte-level \
                     pre-tokenizers are regex splits, Digits and a final ByteLevel)"
                )))
            }
        }
    }
    Err(convert_err(
        "the pre-tokenizer does not end in ByteLevel: not a byte-level BPE",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokenizers_map_to_names_or_are_refused() {
        let bl = |r: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "use_regex": r});
        assert_eq!(split_regexes(&bl(true)).unwrap(), [GPT2_REGEX]);
        let smol = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, bl(true)]});
        assert_eq!(split_regexes(&smol).unwrap(), [DIGIT_REGEX, GPT2_REGEX]);
        let meta = json!({"type": "Metaspace", "replacement": "▁"});
        let e = split_regexes(&meta).unwrap_err().to_string();
        assert!(e.contains("Metaspace"), "{e}");
        let prefix = json!({"type": "ByteLevel", "add_prefix_space": true});
        assert!(split_regexes(&prefix).is_err());
        let not_last = json!({"type": "Sequence", "pretokenizers": [bl(false), bl(true)]});
        assert!(split_regexes(&not_last).is_err());
    }

    #[test]
    fn looks_special_follows_llama_cpp() {
        assert!(looks_special("<|im_start|>") && looks_special("<unused12>"));
        assert!(!looks_special("<think>") && !looks_special("hello"));
    }
}
