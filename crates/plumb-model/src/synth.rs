//! Synthetic models: GGUF files with the shapes of real models, random weights and a
//! placeholder vocabulary (byte-level BPE; for gemma3 SentencePiece, laid out like Gemma's),
//! for benchmarks and GPU checks where real weights cannot travel. Every 2-D weight is stored in the requested format (as `llama-quantize --pure`
//! does), except where a row is not a whole number of that format's blocks: then Q8_0.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use plumb_core::rng::Rng;
use plumb_core::GgmlType;
use plumb_gguf::{GgufWriter, Value, ValueType};
use rayon::prelude::*;

use crate::config::Arch;
use crate::quantize::Recipe;
use crate::Result;

/// The shape of a model family member.
#[derive(Debug, Clone, Copy)]
pub struct SynthShape {
    pub name: &'static str,
    pub arch: &'static str,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab: usize,
    pub ctx: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub tied: bool,
    pub qkv_bias: bool,
    /// Width of a query/key/value head when it is not `d_model / n_heads` (written as
    /// `key_length` and `value_length`).
    pub head_dim: Option<usize>,
    /// The window of the sliding-window layers. Which layers those are and their RoPE base
    /// are left to the architecture's defaults (gemma3: every 6th layer global, base 10,000),
    /// as the real files do.
    pub sliding_window: Option<usize>,
}

pub const SHAPES: &[SynthShape] = &[
    SynthShape {
        name: "smollm2-135m",
        arch: "llama",
        n_layers: 30,
        d_model: 576,
        d_ff: 1536,
        n_heads: 9,
        n_kv_heads: 3,
        vocab: 49152,
        ctx: 8192,
        rope_theta: 100000.0,
        rms_eps: 1e-5,
        tied: true,
        qkv_bias: false,
        head_dim: None,
        sliding_window: None,
    },
    SynthShape {
        name: "llama3-1b",
        arch: "llama",
        n_layers: 16,
        d_model: 2048,
        d_ff: 8192,
        n_heads: 32,
        n_kv_heads: 8,
        vocab: 128256,
        ctx: 131072,
        rope_theta: 500000.0,
        rms_eps: 1e-5,
        tied: true,
        qkv_bias: false,
        head_dim: None,
        sliding_window: None,
    },
    SynthShape {
        name: "llama3-8b",
        arch: "llama",
        n_layers: 32,
        d_model: 4096,
        d_ff: 14336,
        n_heads: 32,
        n_kv_heads: 8,
        vocab: 128256,
        ctx: 8192,
        rope_theta: 500000.0,
        rms_eps: 1e-5,
        tied: false,
        qkv_bias: false,
        head_dim: None,
        sliding_window: None,
    },
    SynthShape {
        name: "qwen2.5-0.5b",
        arch: "qwen2",
        n_layers: 24,
        d_model: 896,
        d_ff: 4864,
        n_heads: 14,
        n_kv_heads: 2,
        vocab: 151936,
        ctx: 32768,
        rope_theta: 1000000.0,
        rms_eps: 1e-6,
        tied: true,
        qkv_bias: true,
        head_dim: None,
        sliding_window: None,
    },
    // Gemma 3 270M as `gemma-3-270m-q4_k_m.gguf` has it: 256-wide heads (4 query heads, one
    // KV head over a 640-wide model), QK norms and post-attention/post-FFN norms (from the
    // architecture), five local layers with a 512-position window per global one.
    SynthShape {
        name: "gemma3-270m",
        arch: "gemma3",
        n_layers: 18,
        d_model: 640,
        d_ff: 2048,
        n_heads: 4,
        n_kv_heads: 1,
        vocab: 262144,
        ctx: 32768,
        rope_theta: 1000000.0,
        rms_eps: 1e-6,
        tied: true,
        qkv_bias: false,
        head_dim: Some(256),
        sliding_window: Some(512),
    },
];

pub fn shape(name: &str) -> Option<&'static SynthShape> {
    SHAPES.iter().find(|s| s.name == name)
}

impl SynthShape {
    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.d_model / self.n_heads)
    }

    /// Whether the architecture's files carry a SentencePiece vocabulary (gemma3) rather than
    /// a byte-level BPE one.
    fn sentencepiece(&self) -> bool {
        self.arch == "gemma3"
    }
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves, the rest are shifted
/// past U+0100 so that every byte has a visible, non-space character.
fn byte_char(b: u8) -> char {
    let printable =
        (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable {
        b as char
    } else {
        let rank = (0..b).filter(|&c| {
            !((b'!'..=b'~').contains(&c)
                || (0xA1..=0xAC).contains(&c)
                || (0xAE..=0xFF).contains(&c))
        });
        char::from_u32(256 + rank.count() as u32).unwrap_or('?')
    }
}

/// Writes a synthetic model of `shape` with matrices in `quant` to `out`.
/// `progress(done, total)` is called after each tensor is written.
pub fn write_synthetic(
    shape: &SynthShape,
    quant: GgmlType,
    seed: u64,
    out: &Path,
    progress: Arc<dyn Fn(usize, usize) + Send + Sync>,
) -> Result<()> {
    write_synthetic_recipe(shape, Recipe::Uniform(quant), seed, out, progress)
}

/// [`write_synthetic`] with the matrices in `recipe`'s per-tensor formats (`Q4_K_M`:
/// llama.cpp's mix). A uniform recipe stores a matrix whose rows are not whole blocks in
/// Q8_0; a mix falls back as llama.cpp does.
pub fn write_synthetic_recipe(
    shape: &SynthShape,
    recipe: Recipe,
    seed: u64,
    out: &Path,
    progress: Arc<dyn Fn(usize, usize) + Send + Sync>,
) -> Result<()> {
    let arch = Arch::parse(shape.arch)?;
    let mut w = GgufWriter::new();
    add_hyperparameters(&mut w, shape, &recipe.name());
    if shape.sentencepiece() {
        add_placeholder_spm_vocab(&mut w, shape);
    } else {
        add_placeholder_vocab(&mut w, shape);
    }
    let specs = tensor_specs(shape, arch);
    let total = specs.len();
    let done = Arc::new(AtomicUsize::new(0));
    for (i, (name, rows, cols, vector)) in specs.into_iter().enumerate() {
        let ty = match recipe {
            _ if vector => GgmlType::F32,
            Recipe::Uniform(quant) if cols % quant.block_size() == 0 => quant,
            Recipe::Uniform(_) => GgmlType::Q8_0,
            mix => mix.type_for(&name, cols, shape.n_layers, shape.tied),
        };
        let dims: Vec<u64> = if vector {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        let tensor_seed = seed.wrapping_mul(0x9E37_79B9).wrapping_add(i as u64);
        let is_norm = name.contains("norm");
        let (progress, done) = (progress.clone(), done.clone());
        w.add_tensor_fn(
            name,
            ty,
            &dims,
            Box::new(move |out| {
                write_random(out, ty, rows, cols, tensor_seed, is_norm)?;
                progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                Ok(())
            }),
        )?;
    }
    w.write_file(out)?;
    Ok(())
}

/// The architecture, name and hyperparameter keys of `s`.
fn add_hyperparameters(w: &mut GgufWriter, s: &SynthShape, quant: &str) {
    let a = |k: &str| format!("{}.{k}", s.arch);
    w.add_metadata("general.architecture", Value::String(s.arch.into()));
    w.add_metadata(
        "general.name",
        Value::String(format!("synthetic {} {quant}", s.name)),
    );
    w.add_metadata(a("block_count"), Value::U32(s.n_layers as u32));
    w.add_metadata(a("context_length"), Value::U32(s.ctx as u32));
    w.add_metadata(a("embedding_length"), Value::U32(s.d_model as u32));
    w.add_metadata(a("feed_forward_length"), Value::U32(s.d_ff as u32));
    w.add_metadata(a("attention.head_count"), Value::U32(s.n_heads as u32));
    w.add_metadata(
        a("attention.head_count_kv"),
        Value::U32(s.n_kv_heads as u32),
    );
    w.add_metadata(a("attention.layer_norm_rms_epsilon"), Value::F32(s.rms_eps));
    w.add_metadata(a("rope.freq_base"), Value::F32(s.rope_theta));
    // llama.cpp's gemma3 files carry no vocab_size: the token list's length is the vocabulary.
    if !s.sentencepiece() {
        w.add_metadata(a("vocab_size"), Value::U32(s.vocab as u32));
    }
    if let Some(hd) = s.head_dim {
        w.add_metadata(a("attention.key_length"), Value::U32(hd as u32));
        w.add_metadata(a("attention.value_length"), Value::U32(hd as u32));
    }
    if let Some(window) = s.sliding_window {
        w.add_metadata(a("attention.sliding_window"), Value::U32(window as u32));
    }
}

/// Placeholder vocabulary: the 256 byte tokens, BOS and EOS, then filler words (" w258",
/// " w259", ...: normal tokens, so that generated text has something to show and stream).
fn add_placeholder_vocab(w: &mut GgufWriter, s: &SynthShape) {
    let mut tokens: Vec<Value> = (0..=255u8)
        .map(|b| Value::String(byte_char(b).to_string()))
        .collect();
    tokens.push(Value::String("<s>".into()));
    tokens.push(Value::String("</s>".into()));
    let mut types: Vec<Value> = vec![Value::I32(1); 256];
    types.extend([Value::I32(3), Value::I32(3)]);
    for i in tokens.len()..s.vocab {
        tokens.push(Value::String(format!("{}w{i}", byte_char(b' '))));
        types.push(Value::I32(1));
    }
    w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String("default".into()));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::String, tokens),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types),
    );
    w.add_metadata(
        "tokenizer.ggml.merges",
        Value::Array(ValueType::String, Vec::new()),
    );
    w.add_metadata("tokenizer.ggml.bos_token_id", Value::U32(256));
    w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(257));
    w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(false));
}

/// Placeholder SentencePiece vocabulary laid out like Gemma's: `<pad>`, `<eos>`, `<bos>`,
/// `<unk>` at 0–3, control tokens `<unusedN>` up to 237 with `<start_of_turn>` and
/// `<end_of_turn>` at 105 and 106 (so that Gemma's chat format applies), the 256 byte-fallback
/// tokens `<0x00>`… at 238–493, the word boundary `▁` (so that a space is a token and
/// decodes back to a space), then filler words ("▁w495", ...) with falling scores. Text
/// tokenizes to `▁` and byte tokens; the ids, flags and key set are the real files'.
fn add_placeholder_spm_vocab(w: &mut GgufWriter, s: &SynthShape) {
    const BYTES: usize = 238;
    let mut tokens = Vec::with_capacity(s.vocab);
    let mut types = Vec::with_capacity(s.vocab);
    let mut scores = Vec::with_capacity(s.vocab);
    for i in 0..s.vocab {
        let (text, ty, score) = match i {
            0 => ("<pad>".to_string(), 3, -1000.0),
            1 => ("<eos>".to_string(), 3, -1000.0),
            2 => ("<bos>".to_string(), 3, -1000.0),
            3 => ("<unk>".to_string(), 3, -1000.0),
            105 => ("<start_of_turn>".to_string(), 3, -1000.0),
            106 => ("<end_of_turn>".to_string(), 3, -1000.0),
            _ if i < BYTES => (format!("<unused{i}>"), 3, -1000.0),
            _ if i < BYTES + 256 => (format!("<0x{:02X}>", i - BYTES), 6, 0.0),
            _ if i == BYTES + 256 => ("\u{2581}".to_string(), 1, 0.0),
            _ => (format!("\u{2581}w{i}"), 1, -((i - BYTES - 256) as f32)),
        };
        tokens.push(Value::String(text));
        types.push(Value::I32(ty));
        scores.push(Value::F32(score));
    }
    w.add_metadata("tokenizer.ggml.model", Value::String("llama".into()));
    w.add_metadata("tokenizer.ggml.pre", Value::String("default".into()));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        Value::Array(ValueType::String, tokens),
    );
    w.add_metadata(
        "tokenizer.ggml.scores",
        Value::Array(ValueType::F32, scores),
    );
    w.add_metadata(
        "tokenizer.ggml.token_type",
        Value::Array(ValueType::I32, types),
    );
    w.add_metadata("tokenizer.ggml.bos_token_id", Value::U32(2));
    w.add_metadata("tokenizer.ggml.eos_token_id", Value::U32(1));
    w.add_metadata("tokenizer.ggml.unknown_token_id", Value::U32(3));
    w.add_metadata("tokenizer.ggml.padding_token_id", Value::U32(0));
    w.add_metadata("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.add_metadata("tokenizer.ggml.add_sep_token", Value::Bool(false));
    w.add_metadata("tokenizer.ggml.add_eos_token", Value::Bool(false));
    w.add_metadata("tokenizer.ggml.add_space_prefix", Value::Bool(false));
}

/// Every tensor of `s` in file order: (name, rows, cols, is a norm or bias vector). The
/// architecture adds per-head QK norms (qwen3, gemma3) and post-attention and post-FFN norms
/// (gemma3).
fn tensor_specs(s: &SynthShape, arch: Arch) -> Vec<(String, usize, usize, bool)> {
    let head_dim = s.head_dim();
    let (q, kv) = (s.n_heads * head_dim, s.n_kv_heads * head_dim);
    let mut specs = vec![("token_embd.weight".into(), s.vocab, s.d_model, false)];
    for l in 0..s.n_layers {
        let n = |x: &str| format!("blk.{l}.{x}");
        specs.push((n("attn_norm.weight"), 1, s.d_model, true));
        specs.push((n("attn_q.weight"), q, s.d_model, false));
        specs.push((n("attn_k.weight"), kv, s.d_model, false));
        specs.push((n("attn_v.weight"), kv, s.d_model, false));
        if s.qkv_bias {
            specs.push((n("attn_q.bias"), 1, q, true));
            specs.push((n("attn_k.bias"), 1, kv, true));
            specs.push((n("attn_v.bias"), 1, kv, true));
        }
        if arch.qk_norm() {
            specs.push((n("attn_q_norm.weight"), 1, head_dim, true));
            specs.push((n("attn_k_norm.weight"), 1, head_dim, true));
        }
        specs.push((n("attn_output.weight"), s.d_model, q, false));
        if arch.post_norms() {
            specs.push((n("post_attention_norm.weight"), 1, s.d_model, true));
        }
        specs.push((n("ffn_norm.weight"), 1, s.d_model, true));
        specs.push((n("ffn_gate.weight"), s.d_ff, s.d_model, false));
        specs.push((n("ffn_up.weight"), s.d_ff, s.d_model, false));
        specs.push((n("ffn_down.weight"), s.d_model, s.d_ff, false));
        if arch.post_norms() {
            specs.push((n("post_ffw_norm.weight"), 1, s.d_model, true));
        }
    }
    specs.push(("output_norm.weight".into(), 1, s.d_model, true));
    if !s.tied {
        specs.push(("output.weight".into(), s.vocab, s.d_model, false));
    }
    specs
}

/// Streams `rows × cols` random values in `ty`, a band of rows at a time, quantized in parallel.
/// Matrices draw uniformly with standard deviation 1/√cols (outputs keep the scale of the
/// inputs); norm weights draw near 1.
fn write_random(
    out: &mut dyn std::io::Write,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    seed: u64,
    norm: bool,
) -> std::io::Result<()> {
    let row_bytes = ty.row_bytes(cols).map_err(std::io::Error::other)?;
    let scale = if norm {
        0.1
    } else {
        (3.0f32).sqrt() / (cols as f32).sqrt()
    };
    const BAND: usize = 256;
    let mut buf = vec![0u8; BAND * row_bytes];
    for band_start in (0..rows).step_by(BAND) {
        let n = BAND.min(rows - band_start);
        buf[..n * row_bytes]
            .par_chunks_mut(row_bytes)
            .enumerate()
            .try_for_each(|(r, dst)| {
                let mut rng =
                    Rng::new(seed ^ ((band_start + r) as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
                let vals: Vec<f32> = (0..cols)
                    .map(|_| {
                        let u = (rng.next_f64() * 2.0 - 1.0) as f32 * scale;
                        if norm {
                            1.0 + u
                        } else {
                            u
                        }
                    })
                    .collect();
                plumb_core::quant::quantize_row(ty, &vals, dst).map_err(std::io::Error::other)
            })?;
        out.write_all(&buf[..n * row_bytes])?;
    }
    Ok(())
}
