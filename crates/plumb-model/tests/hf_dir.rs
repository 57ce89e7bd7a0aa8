//! Hugging Face and MLX directories against GGUF files of the same weights: a tiny random llama
//! is written as GGUF (its converter's permuted Wq/Wk rows, normal RoPE), then as a Hugging Face
//! directory (the original rows, rotate-half RoPE), then as an MLX directory (codes, scales and
//! biases); all must give the same logits. Broken directories must name what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use plumb_core::GgmlType;
use plumb_gguf::GgufFile;
use plumb_model::synth::{write_synthetic, SynthShape};
use plumb_model::{Checkpoint, Logits, Model};
use plumb_ops::ReferenceBackend;
use safetensors::Dtype;

const SHAPE: SynthShape = SynthShape {
    name: "tiny",
    arch: "llama",
    n_layers: 2,
    d_model: 64,
    d_ff: 128,
    n_heads: 4,
    n_kv_heads: 2,
    vocab: 300,
    ctx: 256,
    rope_theta: 10000.0,
    rms_eps: 1e-5,
    tied: false,
    qkv_bias: false,
    head_dim: None,
    sliding_window: None,
};
const TOKENS: [u32; 7] = [5, 77, 3, 299, 1, 150, 42];

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("plumb-hfdir-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn logits(m: &Model<ReferenceBackend>) -> Vec<f32> {
    let mut c = m.new_cache(16).unwrap();
    m.forward(&TOKENS, &mut c, Logits::All).unwrap()
}

fn load_dir(dir: &Path) -> plumb_model::Result<Model<ReferenceBackend>> {
    let ck = Checkpoint::open(dir)?;
    Model::load_checkpoint(&ck, ReferenceBackend { threads: false })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tensor to write: name, dtype, shape, bytes.
type St = (String, Dtype, Vec<usize>, Vec<u8>);

fn write_st(path: &Path, tensors: &[St]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

fn config_json(dir: &Path, extra: &str) {
    let s = &SHAPE;
    let text = format!(
        r#"{{"model_type": "llama", "hidden_size": {}, "intermediate_size": {},
        "num_attention_heads": {}, "num_key_value_heads": {}, "num_hidden_layers": {},
        "vocab_size": {}, "max_position_embeddings": {}, "rms_norm_eps": {:e},
        "rope_theta": {}, "tie_word_embeddings": false{extra}}}"#,
        s.d_model,
        s.d_ff,
        s.n_heads,
        s.n_kv_heads,
        s.n_layers,
        s.vocab,
        s.ctx,
        s.rms_eps,
        s.rope_theta
    );
    std::fs::write(dir.join("config.json"), text).unwrap();
}

/// Hugging Face's name of a GGUF tensor, written out here (not taken from the loader).
fn hf_name(gguf: &str) -> String {
    let fixed = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ];
    if let Some((_, h)) = fixed.iter().find(|(g, _)| *g == gguf) {
        return h.to_string();
    }
    let rest = gguf.strip_prefix("blk.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let part = [
        ("attn_norm.weight", "input_layernorm.weight"),
        ("attn_q.weight", "self_attn.q_proj.weight"),
        ("attn_k.weight", "self_attn.k_proj.weight"),
        ("attn_v.weight", "self_attn.v_proj.weight"),
        ("attn_output.weight", "self_attn.o_proj.weight"),
        ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("ffn_gate.weight", "mlp.gate_proj.weight"),
        ("ffn_up.weight", "mlp.up_proj.weight"),
        ("ffn_down.weight", "mlp.down_proj.weight"),
    ]
    .iter()
    .find(|(g, _)| *g == part)
    .unwrap()
    .1;
    format!("model.layers.{layer}.{part}")
}

/// GGUF rows back to Hugging Face order: the converter put HF row `(head, j, i)` (half `j`,
/// pair `i`) at GGUF row `(head, i, j)`.
fn unpermute(rows: &[u8], n_heads: usize, row_bytes: usize) -> Vec<u8> {
    let n_rows = rows.len() / row_bytes;
    let hd = n_rows / n_heads;
    let mut out = vec![0u8; rows.len()];
    for h in 0..n_heads {
        for j in 0..2 {
            for i in 0..hd / 2 {
                let hf = h * hd + j * hd / 2 + i;
                let gg = h * hd + 2 * i + j;
                out[hf * row_bytes..][..row_bytes]
                    .copy_from_slice(&rows[gg * row_bytes..][..row_bytes]);
            }
        }
    }
    out
}

/// The GGUF's tensors as Hugging Face tensors (`permute`: undo the Wq/Wk permutation).
fn hf_tensors(gguf: &GgufFile, permute: bool) -> Vec<St> {
    gguf.tensors
        .iter()
        .map(|t| {
            let w = gguf.weight(&t.name).unwrap();
            let dtype = match w.ty {
                GgmlType::F32 => Dtype::F32,
                GgmlType::BF16 => Dtype::BF16,
                other => panic!("{other}"),
            };
            let shape = if w.rows == 1 {
                vec![w.cols]
            } else {
                vec![w.rows, w.cols]
            };
            let mut bytes = w.data.as_slice().to_vec();
            let heads = if t.name.ends_with("attn_q.weight") {
                SHAPE.n_heads
            } else if t.name.ends_with("attn_k.weight") {
                SHAPE.n_kv_heads
            } else {
                0
            };
            if permute && heads > 0 {
                bytes = unpermute(&bytes, heads, w.row_bytes());
            }
            (hf_name(&t.name), dtype, shape, bytes)
        })
        .collect()
}

/// A GGUF of `ty` weights and the Hugging Face directory of the same weights.
fn gguf_and_hf(tag: &str, ty: GgmlType) -> (GgufFile, PathBuf) {
    let dir = scratch(tag);
    let gguf = dir.join("tiny.gguf");
    write_synthetic(&SHAPE, ty, 11, &gguf, Arc::new(|_, _| {})).unwrap();
    let file = GgufFile::open(&gguf).unwrap();
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    config_json(&hf, "");
    write_st(&hf.join("model.safetensors"), &hf_tensors(&file, true));
    (file, hf)
}

#[test]
fn hf_directory_gives_the_gguf_logits() {
    for (tag, ty) in [("f32", GgmlType::F32), ("bf16", GgmlType::BF16)] {
        let (file, hf) = gguf_and_hf(tag, ty);
        let want = logits(&Model::load(&file, ReferenceBackend { threads: false }).unwrap());
        let got = logits(&load_dir(&hf).unwrap());
        let d = max_diff(&got, &want);
        assert!(d < 1e-4, "{tag}: max |Δlogit| {d}");
        // The same rows without undoing the permutation are another model: the check can
        // tell the two RoPE conventions apart.
        write_st(&hf.join("model.safetensors"), &hf_tensors(&file, false));
        let wrong = logits(&load_dir(&hf).unwrap());
        assert!(
            max_diff(&wrong, &want) > 1e-2,
            "{tag}: the permutation did not matter"
        );
    }
}

#[test]
fn sharded_directory_reads_every_shard() {
    let (file, hf) = gguf_and_hf("shards", GgmlType::F32);
    let want = logits(&load_dir(&hf).unwrap());
    std::fs::remove_file(hf.join("model.safetensors")).unwrap();
    let tensors = hf_tensors(&file, true);
    let (a, b) = tensors.split_at(tensors.len() / 2);
    write_st(&hf.join("model-00001-of-00002.safetensors"), a);
    write_st(&hf.join("model-00002-of-00002.safetensors"), b);
    let map: Vec<String> = tensors
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let shard = if i < a.len() { 1 } else { 2 };
            format!("\"{}\": \"model-0000{shard}-of-00002.safetensors\"", t.0)
        })
        .collect();
    let index = format!(
        "{{\"metadata\": {{}}, \"weight_map\": {{{}}}}}",
        map.join(", ")
    );
    std::fs::write(hf.join("model.safetensors.index.json"), index).unwrap();
    assert_eq!(logits(&load_dir(&hf).unwrap()), want);
    // A shard the index names but that is gone.
    std::fs::remove_file(hf.join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_dir(&hf).err().unwrap().to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
}

/// The error of loading `hf` after `damage`, which must contain every one of `want`.
fn broken(tag: &str, damage: impl FnOnce(&Path, &GgufFile), want: &[&str]) {
    let (file, hf) = gguf_and_hf(tag, GgmlType::F32);
    damage(&hf, &file);
    let e = match load_dir(&hf) {
        Ok(_) => panic!("{tag}: the broken directory loaded"),
        Err(e) => e.to_string(),
    };
    for w in want {
        assert!(e.contains(w), "{tag}: {e:?} does not say {w:?}");
    }
}

#[test]
fn broken_directories_name_the_problem() {
    let without = |drop: &'static str| {
        move |hf: &Path, file: &GgufFile| {
            let t: Vec<St> = hf_tensors(file, true)
                .into_iter()
                .filter(|t| t.0 != drop)
                .collect();
            write_st(&hf.join("model.safetensors"), &t);
        }
    };
    broken(
        "missing",
        without("model.layers.1.mlp.up_proj.weight"),
        &["model.layers.1.mlp.up_proj.weight", "missing"],
    );
    broken(
        "shape",
        |hf, file| {
            let mut t = hf_tensors(file, true);
            let q = t
                .iter_mut()
                .find(|t| t.0 == "model.layers.0.self_attn.q_proj.weight");
            let q = q.unwrap();
            q.2 = vec![32, 128];
            write_st(&hf.join("model.safetensors"), &t);
        },
        &["model.layers.0.self_attn.q_proj.weight", "shape is 32×128"],
    );
    broken(
        "model-type",
        |hf, _| {
            let text = std::fs::read_to_string(hf.join("config.json")).unwrap();
            let text = text.replace("\"llama\"", "\"mamba\"");
            std::fs::write(hf.join("config.json"), text).unwrap();
        },
        &["model_type", "mamba"],
    );
    broken(
        "truncated",
        |hf, _| {
            let p = hf.join("model.safetensors");
            let len = std::fs::metadata(&p).unwrap().len();
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.set_len(len - 100).unwrap();
        },
        &["model.safetensors", "not a valid safetensors file"],
    );
    broken(
        "json",
        |hf, _| std::fs::write(hf.join("config.json"), "{\"model_type\": \"llama\",").unwrap(),
        &["config.json", "invalid JSON"],
    );
    broken(
        "no-weights",
        |hf, _| std::fs::remove_file(hf.join("model.safetensors")).unwrap(),
        &["no model.safetensors"],
    );
    broken(
        "dtype",
        |hf, file| {
            let mut t = hf_tensors(file, true);
            t[3].1 = Dtype::I32;
            write_st(&hf.join("model.safetensors"), &t);
        },
        &["dtype I32"],
    );
}

/// Quantizes a row with plumb's reference quantizer and splits each block into MLX's three
/// tensors: codes, and the scale and bias rounded to bf16. Returns (codes, scales, biases,
/// the values the row now stands for, computed here as s · q + b).
fn mlx_row(x: &[f32], bits: u32, group: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<f32>) {
    let ty = GgmlType::mlx(bits, group).unwrap();
    let mut blocks = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    plumb_core::quant::quantize_row(ty, x, &mut blocks).unwrap();
    let (mut codes, mut scales, mut biases, mut vals) = (vec![], vec![], vec![], vec![]);
    for b in blocks.chunks_exact(ty.type_size()) {
        let f =
            |o: usize| half::bf16::from_f32(f32::from_le_bytes(b[o..o + 4].try_into().unwrap()));
        let (s, bias) = (f(0), f(4));
        scales.extend(s.to_le_bytes());
        biases.extend(bias.to_le_bytes());
        codes.extend_from_slice(&b[8..]);
        for i in 0..group {
            let bit = i * bits as usize;
            let word =
                u32::from_le_bytes([b[8 + bit / 8], *b.get(9 + bit / 8).unwrap_or(&0), 0, 0]);
            let q = (word >> (bit % 8)) & ((1 << bits) - 1);
            vals.push(s.to_f32() * q as f32 + bias.to_f32());
        }
    }
    (codes, scales, biases, vals)
}

/// An MLX directory of the HF f32 tensors (the matrices quantized: 4 bits in groups of 32,
/// the down projections 8-bit groups of 64 by a per-module entry, the head unquantized by
/// one), and the HF f32 directory of exactly the values it stands for: the two give the
/// same logits.
#[test]
fn mlx_directory_gives_the_logits_of_its_dequantized_values() {
    let (file, hf) = gguf_and_hf("mlx", GgmlType::F32);
    let (mut mlx_t, mut deq_t) = (Vec::new(), Vec::new());
    for (name, dtype, shape, bytes) in hf_tensors(&file, true) {
        let module = name.trim_end_matches(".weight");
        let params = match module {
            _ if shape.len() == 1 || module == "lm_head" => None,
            m if m.ends_with("down_proj") => Some((8, 64)),
            _ => Some((4, 32)),
        };
        let Some((bits, group)) = params else {
            mlx_t.push((name.clone(), dtype, shape.clone(), bytes.clone()));
            deq_t.push((name, dtype, shape, bytes));
            continue;
        };
        let vals: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let (rows, cols) = (shape[0], shape[1]);
        let (mut c, mut s, mut b, mut d) = (vec![], vec![], vec![], vec![]);
        for r in vals.chunks_exact(cols) {
            let (rc, rs, rb, rd) = mlx_row(r, bits, group);
            c.extend(rc);
            s.extend(rs);
            b.extend(rb);
            d.extend(rd.iter().flat_map(|v| v.to_le_bytes()));
        }
        let words = cols * bits as usize / 32;
        mlx_t.push((name.clone(), Dtype::U32, vec![rows, words], c));
        mlx_t.push((
            format!("{module}.scales"),
            Dtype::BF16,
            vec![rows, cols / group],
            s,
        ));
        mlx_t.push((
            format!("{module}.biases"),
            Dtype::BF16,
            vec![rows, cols / group],
            b,
        ));
        deq_t.push((name, Dtype::F32, shape, d));
    }
    write_st(&hf.join("model.safetensors"), &deq_t);
    let want = logits(&load_dir(&hf).unwrap());
    let mlx = hf.parent().unwrap().join("mlx");
    std::fs::create_dir_all(&mlx).unwrap();
    let overrides: Vec<String> = (0..SHAPE.n_layers)
        .map(|l| format!("\"model.layers.{l}.mlp.down_proj\": {{\"bits\": 8, \"group_size\": 64}}"))
        .collect();
    let quant = format!(
        ", \"quantization\": {{\"group_size\": 32, \"bits\": 4, \"lm_head\": false, {}}}",
        overrides.join(", ")
    );
    config_json(&mlx, &quant);
    write_st(&mlx.join("model.safetensors"), &mlx_t);
    let ck = Checkpoint::open(&mlx).unwrap();
    assert_eq!(ck.kind(), plumb_model::store::ModelKind::Mlx);
    let got = logits(&Model::load_checkpoint(&ck, ReferenceBackend { threads: false }).unwrap());
    assert_eq!(
        got, want,
        "the MLX directory's logits differ from its values'"
    );
    // A per-module entry the weights do not follow is an error naming the tensor.
    config_json(
        &mlx,
        ", \"quantization\": {\"group_size\": 32, \"bits\": 4, \"lm_head\": false}",
    );
    let e = load_dir(&mlx).err().unwrap().to_string();
    assert!(e.contains("down_proj"), "{e}");
}

/// A tiny gemma3 (QK norms, post norms, local layers with a window shorter than the input)
/// written by `plumb quantize`'s directory writer from a GGUF: the stored norms are the
/// GGUF's minus 1 (Gemma's `x · (1 + w)`), the names are Gemma's, and the directory gives the
/// GGUF's logits.
#[test]
fn gemma3_directory_round_trips_through_the_writer() {
    use plumb_model::quantize::dir::{write_dir, DirFormat};
    let shape = SynthShape {
        name: "tiny-gemma3",
        arch: "gemma3",
        n_layers: 7,
        head_dim: Some(32),
        tied: true,
        sliding_window: Some(3),
        rms_eps: 1e-6,
        ..SHAPE
    };
    let dir = scratch("gemma3");
    let gguf_path = dir.join("m.gguf");
    write_synthetic(&shape, GgmlType::F32, 11, &gguf_path, Arc::new(|_, _| {})).unwrap();
    let ck = Checkpoint::open(&gguf_path).unwrap();
    let hf = dir.join("hf");
    let quiet = Arc::new(|_: usize, _: usize, _: &str| {});
    write_dir(&ck, DirFormat::Hf(GgmlType::F32), &hf, quiet).unwrap();
    let file = GgufFile::open(&gguf_path).unwrap();
    let st = plumb_model::formats::safetensors::Safetensors::open_dir(&hf).unwrap();
    for (gguf, name) in [
        (
            "blk.3.ffn_norm.weight",
            "model.layers.3.pre_feedforward_layernorm.weight",
        ),
        (
            "blk.3.post_attention_norm.weight",
            "model.layers.3.post_attention_layernorm.weight",
        ),
        (
            "blk.3.post_ffw_norm.weight",
            "model.layers.3.post_feedforward_layernorm.weight",
        ),
        (
            "blk.3.attn_k_norm.weight",
            "model.layers.3.self_attn.k_norm.weight",
        ),
        ("output_norm.weight", "model.norm.weight"),
    ] {
        let want = file.weight(gguf).unwrap().to_f32().unwrap();
        let t = st.get(name).unwrap_or_else(|| panic!("{name} missing"));
        let got: Vec<f32> = t
            .data
            .as_slice()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.len(), want.len(), "{name}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(*g, w - 1.0, "{name}");
        }
    }
    assert!(st.get("lm_head.weight").is_none());
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(j["model_type"], "gemma3_text");
    assert_eq!(j["sliding_window"], 3);
    let want = logits(&Model::load_checkpoint(&ck, ReferenceBackend { threads: false }).unwrap());
    let got = logits(&load_dir(&hf).unwrap());
    let d = max_diff(&want, &got);
    assert!(d < 1e-4, "gemma3 directory logits differ by {d}");

    // To GGUF it is refused by name, and nothing is written.
    let Checkpoint::Dir(hf_dir) = Checkpoint::open(&hf).unwrap() else {
        panic!("{} is not read as a directory", hf.display());
    };
    let tokens = vec![(
        "tokenizer.ggml.tokens".to_string(),
        plumb_gguf::Value::Array(
            plumb_gguf::ValueType::String,
            vec![plumb_gguf::Value::String("a".into())],
        ),
    )];
    let out = dir.join("back.gguf");
    let quiet = Arc::new(|_: usize, _: usize, _: &str| {});
    let e = plumb_model::quantize::gguf::quantize_dir(
        &hf_dir,
        plumb_model::quantize::Recipe::parse("q8_0").unwrap(),
        tokens,
        &out,
        quiet,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("gemma3"), "{e}");
    assert!(!out.exists());
}
