//! GPT-2 style byte-level BPE from a GGUF vocabulary, built on the `tokenizers` crate:
//! a `Split` pre-tokenizer per regex that `tokenizer.ggml.pre` names, then `ByteLevel`
//! (without its own regex), then a BPE model from the vocabulary and merges.

use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;

use crate::error::{Result, TokenizerError};

/// The original GPT-2 split (as in HF's `ByteLevel` pre-tokenizer).
pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3 (`llama-bpe`): case-insensitive contractions, numbers in groups of up to 3.
pub const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2: like Llama 3 but single digits.
pub const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Isolates every digit (applied before [`GPT2_REGEX`] for `smollm`, `starcoder`, ...).
pub const DIGIT_REGEX: &str = r"\p{N}";

/// Which pre-tokenizer a byte-level BPE tokenizer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreTokenizerInfo {
    /// `tokenizer.ggml.pre` as found in the metadata (None when absent).
    pub requested: Option<String>,
    /// The regex set actually used: `gpt2`, `smollm`, `llama3`, `qwen2` or `default`.
    pub used: &'static str,
    /// The regexes, applied in order (each splits the pieces the previous one produced).
    pub regexes: &'static [&'static str],
    /// Whether the requested name was unknown (or absent) and `gpt2` was used instead.
    pub fallback: bool,
    /// Whether a word found whole in the vocabulary skips the merges (llama3).
    pub ignore_merges: bool,
}

/// Resolves a `tokenizer.ggml.pre` name to the regexes llama.cpp uses for it.
pub fn resolve_pre(name: Option<&str>) -> PreTokenizerInfo {
    const GPT2: &[&str] = &[GPT2_REGEX];
    const SMOLLM: &[&str] = &[DIGIT_REGEX, GPT2_REGEX];
    const LLAMA3: &[&str] = &[LLAMA3_REGEX];
    const QWEN2: &[&str] = &[QWEN2_REGEX];
    // llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT.
    const DEFAULT: &[&str] = &[
        r"[\p{P}\$\+<=>\^~\|]+",
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ];
    let (used, regexes, ignore_merges) = match name {
        Some("gpt2" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling") => {
            ("gpt2", GPT2, false)
        }
        Some(
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b",
        ) => ("smollm", SMOLLM, false),
        Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral") => {
            ("llama3", LLAMA3, true)
        }
        Some("dbrx" | "smaug-bpe" | "chatglm-bpe") => ("llama3", LLAMA3, false),
        Some("qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" | "hunyuan") => {
            ("qwen2", QWEN2, false)
        }
        Some("default") => ("default", DEFAULT, false),
        _ => {
            return PreTokenizerInfo {
                requested: name.map(str::to_string),
                used: "gpt2",
                regexes: GPT2,
                fallback: true,
                ignore_merges: false,
            }
        }
    };
    PreTokenizerInfo {
        requested: name.map(str::to_string),
        used,
        regexes,
        fallback: false,
        ignore_merges,
    }
}

/// A GGUF merge `left right` split as llama.cpp splits it: at the first space after the
/// first character (so a left part that is itself a space survives).
pub(crate) fn split_merge(m: &str) -> Option<(&str, &str)> {
    let skip = m.chars().next().map_or(0, char::len_utf8);
    let pos = m[skip..].find(' ')? + skip;
    Some((&m[..pos], &m[pos + 1..]))
}

/// The `tokenizer.ggml.pre` name for a pre-tokenizer that splits by `regexes` (in order)
/// and, with `ignore_merges`, takes a word found whole in the vocabulary as one token: the
/// name llama.cpp's converter writes for the model family that uses exactly this split
/// (`gpt2`; `smollm`, whose split StarCoder and Refact share; `llama-bpe` for Llama 3;
/// `dbrx`, Llama 3's split without ignore_merges; `qwen2`). `None`: no name plumb knows.
pub fn pre_name_for(regexes: &[&str], ignore_merges: bool) -> Option<&'static str> {
    const NAMES: [&str; 6] = ["gpt2", "smollm", "llama-bpe", "dbrx", "qwen2", "default"];
    NAMES.into_iter().find(|&n| {
        let info = resolve_pre(Some(n));
        info.regexes == regexes && info.ignore_merges == ignore_merges
    })
}

/// Builds the `tokenizers` pipeline (no normalizer, no added tokens: special tokens are
/// handled by the caller) for a byte-level BPE vocabulary.
pub(crate) fn build(
    tokens: &[String],
    merges: &[String],
    pre: &PreTokenizerInfo,
) -> Result<tokenizers::Tokenizer> {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(id as u32);
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (l, r) = split_merge(m).ok_or_else(|| {
            TokenizerError::InvalidVocab(format!("merge #{i} {m:?} is not `left right`"))
        })?;
        pairs.push((l.to_string(), r.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| TokenizerError::InvalidVocab(format!("building BPE: {e}")))?;
    let mut steps = Vec::with_capacity(pre.regexes.len() + 1);
    for re in pre.regexes {
        let split = Split::new(
            tokenizers::pre_tokenizers::split::SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Backend(format!("pre-tokenizer regex {re:?}: {e}")))?;
        steps.push(PreTokenizerWrapper::Split(split));
    }
    steps.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(PreTokenizerWrapper::Sequence(Sequence::new(steps))));
    Ok(tok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve() {
        assert_eq!(resolve_pre(Some("smollm")).used, "smollm");
        assert_eq!(resolve_pre(Some("llama-bpe")).used, "llama3");
        assert!(resolve_pre(Some("llama-bpe")).ignore_merges);
        assert_eq!(resolve_pre(Some("qwen2")).used, "qwen2");
        let unknown = resolve_pre(Some("brand-new"));
        assert_eq!((unknown.used, unknown.fallback), ("gpt2", true));
        assert!(resolve_pre(None).fallback);
        assert!(!resolve_pre(Some("gpt2")).fallback);
    }

    #[test]
    fn every_regex_set_has_one_name_that_resolves_back() {
        for name in ["gpt2", "smollm", "llama-bpe", "dbrx", "qwen2", "default"] {
            let info = resolve_pre(Some(name));
            assert_eq!(pre_name_for(info.regexes, info.ignore_merges), Some(name));
        }
        assert_eq!(pre_name_for(&[QWEN2_REGEX], true), None);
        assert_eq!(pre_name_for(&[DIGIT_REGEX], false), None);
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  x"), Some((" ", "x")));
        assert_eq!(split_merge("ab"), None);
    }

    #[test]
    fn all_regexes_compile() {
        for name in ["gpt2", "smollm", "llama3", "qwen2", "default"] {
            for re in resolve_pre(Some(name)).regexes {
                Split::new(
                    tokenizers::pre_tokenizers::split::SplitPattern::Regex(re.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .unwrap();
            }
        }
    }
}
