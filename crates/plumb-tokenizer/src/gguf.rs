//! Building a [`Tokenizer`] from GGUF metadata (`tokenizer.ggml.*`).

use plumb_gguf::{GgufFile, Value};

use crate::bpe;
use crate::error::{Result, TokenizerError};
use crate::spm::Spm;
use crate::tokenizer::{Backend, Parts, Tokenizer, TokenizerModel};
use crate::vocab::{PieceStyle, TokenKind};

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
pub const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
pub const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
pub const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
pub const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
pub const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// Typed access to metadata through a lookup function.
pub(crate) struct Meta<F>(pub F);

impl<'a, F: Fn(&str) -> Option<&'a Value>> Meta<F> {
    fn bad(key: &str, expected: &str) -> TokenizerError {
        TokenizerError::BadValue {
            key: key.to_string(),
            expected: expected.to_string(),
        }
    }

    fn required(&self, key: &str) -> Result<&'a Value> {
        (self.0)(key).ok_or_else(|| TokenizerError::MissingKey {
            key: key.to_string(),
        })
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>> {
        (self.0)(key)
            .map(|v| v.as_str().ok_or_else(|| Self::bad(key, "a string")))
            .transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        (self.0)(key)
            .map(|v| v.as_bool().ok_or_else(|| Self::bad(key, "a bool")))
            .transpose()
    }

    pub fn id(&self, key: &str) -> Result<Option<u32>> {
        (self.0)(key)
            .map(|v| {
                v.as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| Self::bad(key, "a token id (non-negative integer)"))
            })
            .transpose()
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        (self.0)(key)
            .map(|v| v.as_array().ok_or_else(|| Self::bad(key, "an array")))
            .transpose()
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.required(key)?;
        let arr = self.array(key)?.unwrap_or_default();
        arr.iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Self::bad(key, "an array of strings"))
    }

    pub(crate) fn numbers<T>(
        &self,
        key: &str,
        n: usize,
        conv: impl Fn(&Value) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(arr) = self.array(key)? else {
            return Ok(None);
        };
        let out = arr
            .iter()
            .map(conv)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Self::bad(key, "an array of numbers"))?;
        if out.len() != n {
            return Err(Self::bad(
                key,
                &format!("{n} entries (one per token), found {}", out.len()),
            ));
        }
        Ok(Some(out))
    }
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata given by a lookup function, e.g.
    /// `Tokenizer::from_gguf_metadata(|k| file.get(k))`.
    ///
    /// Supports `tokenizer.ggml.model` = `gpt2` (byte-level BPE; pre-tokenizer from
    /// `tokenizer.ggml.pre`, unknown names fall back to `gpt2`, see
    /// [`pre_tokenizer`](Self::pre_tokenizer)) and `llama` (SentencePiece).
    pub fn from_gguf_metadata<'a>(get: impl Fn(&str) -> Option<&'a Value>) -> Result<Self> {
        let m = Meta(get);
        let model = m
            .str(KEY_MODEL)?
            .ok_or_else(|| TokenizerError::MissingKey {
                key: KEY_MODEL.to_string(),
            })?;
        let spm = match model {
            "gpt2" => false,
            "llama" => true,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let tokens = m.strings(KEY_TOKENS)?;
        let n = tokens.len();
        let kinds = m
            .numbers(KEY_TOKEN_TYPE, n, |v| v.as_i64().map(TokenKind::from_gguf))?
            .unwrap_or_else(|| vec![TokenKind::Normal; n]);
        let (bos_default, eos_default, unk_default) = if spm {
            (Some(1), Some(2), Some(0))
        } else {
            (None, None, None)
        };
        // Ids out of range (some files declare a padding id == vocab size) are ignored.
        let id = |key: &str, default: Option<u32>| -> Result<Option<u32>> {
            Ok(m.id(key)?.or(default).filter(|&i| (i as usize) < n))
        };
        let (bos, eos, unk) = (
            id(KEY_BOS, bos_default)?,
            id(KEY_EOS, eos_default)?,
            id(KEY_UNK, unk_default)?,
        );
        let mut pre = None;
        let (backend, style) = if spm {
            let scores = m
                .numbers(KEY_SCORES, n, |v| v.as_f64().map(|x| x as f32))?
                .unwrap_or_else(|| vec![0.0; n]);
            let spm = Spm::new(&tokens, &kinds, scores, unk);
            (Backend::Spm(Box::new(spm)), PieceStyle::SentencePiece)
        } else {
            let merges = m.strings(KEY_MERGES)?;
            let info = bpe::resolve_pre(m.str(KEY_PRE)?);
            let hf = bpe::build(&tokens, &merges, &info)?;
            pre = Some(info);
            (Backend::Hf(Box::new(hf)), PieceStyle::ByteLevel)
        };
        let add_space_prefix = m.bool(KEY_ADD_SPACE_PREFIX)?.unwrap_or(spm);
        Tokenizer::assemble(Parts {
            model: if spm {
                TokenizerModel::SentencePiece
            } else {
                TokenizerModel::Gpt2Bpe
            },
            backend,
            style,
            tokens,
            kinds,
            bos,
            eos,
            eot: id(KEY_EOT, None)?,
            pad: id(KEY_PAD, None)?,
            extra_stops: id(KEY_EOM, None)?.into_iter().collect(),
            add_bos: m.bool(KEY_ADD_BOS)?.unwrap_or(spm),
            add_eos: m.bool(KEY_ADD_EOS)?.unwrap_or(false),
            add_space_prefix: spm && add_space_prefix,
            strip_leading_space: spm && add_space_prefix,
            chat_template: m.str(KEY_CHAT_TEMPLATE)?.map(str::to_string),
            pre,
        })
    }

    /// Builds the tokenizer from an opened GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        Self::from_gguf_metadata(|k| file.get(k))
    }
}
