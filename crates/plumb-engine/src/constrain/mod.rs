//! Constrained decoding (structured output) through llguidance: a JSON schema, a regular
//! expression or a Lark grammar limits which tokens a sequence may sample next.
//!
//! ```text
//! Constrainer::new(tokenizer)        once per model: the token trie, llguidance's factory
//!   └─ compile(GrammarSpec) ─▶ Grammar    per request, off the engine thread (a 400 on error)
//!        └─ Request::constraint          each choice starts its own matcher from it
//! per token of a constrained choice:
//!   sample(mask) ─▶ token ─▶ commit(token) ──▶ worker thread: consume, next mask
//!                                     (overlaps the step's batched forward)
//! ```
//!
//! A mask is one bit per token, `u32` words: bit `t % 32` of word `t / 32` is set when token
//! `t` is allowed — the form the samplers take. When the grammar is complete the mask allows
//! only the tokenizer's stop tokens, so the choice ends with `finish_reason: stop`.

mod live;
mod trie;

use std::fmt;
use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use plumb_tokenizer::Tokenizer;
use serde_json::{json, Value};

pub(crate) use live::Live;

/// Why constrained output cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// This model's tokenizer cannot back a constraint.
    #[error("constrained output is unavailable for this model: {0}")]
    Unavailable(String),
    /// The schema or grammar is malformed, unsupported or allows no output.
    #[error("{0}")]
    Grammar(String),
    /// Matching failed during generation.
    #[error("the output constraint failed: {0}")]
    Failed(String),
}

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// A JSON schema (`{"type": "object"}` for any object). Laid out as [`with_layout`] says
    /// unless the schema carries its own `x-guidance` options.
    JsonSchema(Value),
    /// A regular expression (Rust `regex` syntax) the whole output matches.
    Regex(String),
    /// A grammar in llguidance's Lark dialect (`start:` rule; `%json {…}` inlines a schema).
    Lark(String),
}

impl GrammarSpec {
    fn kind(&self) -> &'static str {
        match self {
            GrammarSpec::JsonSchema(_) => "JSON schema",
            GrammarSpec::Regex(_) => "regular expression",
            GrammarSpec::Lark(_) => "Lark grammar",
        }
    }
}

/// The JSON layout a schema is generated in, unless it says otherwise: one space after `,`
/// and `:`, no other whitespace (a small model given free whitespace can fill its budget with
/// newlines).
pub fn with_layout(schema: Value) -> Value {
    match schema {
        Value::Object(mut o) if !o.contains_key("x-guidance") => {
            o.insert(
                "x-guidance".into(),
                json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
            );
            Value::Object(o)
        }
        other => other,
    }
}

/// Compiles grammars for one tokenizer. Building it walks the whole vocabulary (tens of
/// milliseconds for 50k tokens); compiling a grammar costs about a millisecond for a
/// typical schema.
pub struct Constrainer {
    factory: ParserFactory,
    vocab: usize,
}

impl Constrainer {
    pub fn new(tok: Arc<Tokenizer>) -> Result<Constrainer, ConstraintError> {
        let vocab = tok.vocab_size();
        let env = trie::token_env(tok)?;
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Unavailable(format!("{e:#}")))?;
        // Library code never prints: llguidance's warnings are dropped.
        factory.quiet();
        Ok(Constrainer { factory, vocab })
    }

    /// Compiles `spec` and computes the mask of the first token. An error names what is
    /// wrong with the spec (an unknown keyword, a syntax error, a schema no value satisfies).
    pub fn compile(&self, spec: GrammarSpec) -> Result<Grammar, ConstraintError> {
        let kind = spec.kind();
        let top = match spec {
            GrammarSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_layout(schema))
            }
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(&rx),
            GrammarSpec::Lark(lark) => TopLevelGrammar::from_lark(lark),
        };
        let rejected = |e: String| ConstraintError::Grammar(format!("the {kind} is rejected: {e}"));
        let parser = self
            .factory
            .create_parser(top)
            .map_err(|e| rejected(format!("{e:#}")))?;
        let mut matcher = Matcher::new(Ok(parser));
        let first = matcher
            .compute_mask()
            .map_err(|e| rejected(format!("{e:#}")))?;
        if first.is_zero() {
            return Err(rejected("no output satisfies it".into()));
        }
        Ok(Grammar {
            inner: Arc::new(Compiled {
                matcher: Mutex::new(matcher),
                first: first.as_slice().to_vec(),
                kind,
            }),
        })
    }

    /// Tokens in the vocabulary the masks cover.
    pub fn vocab(&self) -> usize {
        self.vocab
    }
}

/// A compiled constraint, ready for any number of sequences. Cheap to clone.
#[derive(Clone)]
pub struct Grammar {
    inner: Arc<Compiled>,
}

struct Compiled {
    /// The matcher before the first token; every sequence starts from a clone.
    matcher: Mutex<Matcher>,
    /// The mask of the first token.
    first: Vec<u32>,
    kind: &'static str,
}

impl fmt::Debug for Grammar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grammar({})", self.inner.kind)
    }
}

impl Grammar {
    /// A fresh matcher and the mask of its first token.
    fn start(&self) -> (Matcher, Vec<u32>) {
        let m = self
            .inner
            .matcher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (m, self.inner.first.clone())
    }
}

/// Whether `mask` allows `token` (bit `token % 32` of word `token / 32`).
pub fn allows(mask: &[u32], token: u32) -> bool {
    mask.get(token as usize / 32)
        .is_some_and(|w| w >> (token % 32) & 1 == 1)
}

/// Sets the logit of every token `mask` forbids to −∞; logits past the mask's end are
/// forbidden too (a model whose output rows outnumber the tokenizer's tokens).
pub fn apply_mask(logits: &mut [f32], mask: &[u32]) {
    for (w, chunk) in logits.chunks_mut(32).enumerate() {
        let word = mask.get(w).copied().unwrap_or(0);
        if word == u32::MAX {
            continue;
        }
        for (bit, l) in chunk.iter_mut().enumerate() {
            if word >> bit & 1 == 0 {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

#[cfg(test)]
mod tests;
