//! `plumb quantize` across formats with the tokenizer converted, as a user runs it, on the
//! default model (SmolLM2-135M-Instruct, Q4_1 GGUF made by llama.cpp's converter):
//!
//! * GGUF → Hugging Face directory (`--hf f32`, every value exact) → GGUF Q8_0 must equal a
//!   direct GGUF → GGUF Q8_0 quantization tensor for tensor, byte for byte, with the same
//!   tokenizer and architecture metadata, and give the same logits;
//! * the directory runs by itself (`plumb run --model DIR`) and its greedy tokens are the
//!   GGUF's;
//! * a directory without a tokenizer.json, or with one plumb cannot convert, is refused with
//!   a message that names the problem.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use plumb_gguf::GgufFile;
use plumb_model::{Checkpoint, Logits, Model};

use common::{ok, plumb, text};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct Files {
    root: PathBuf,
    model: PathBuf,
    hf: PathBuf,
    direct: PathBuf,
    from_dir: PathBuf,
}

/// The default model; its f32 Hugging Face directory; the model quantized to Q8_0 directly
/// and through the directory. Made once for all tests.
fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| {
        let model = plumb_model::store::resolve_model(None, &mut |m| eprintln!("{m}"))
            .unwrap_or_else(|e| panic!("the default model is needed: {e}"));
        let dir = std::env::temp_dir().join(format!("plumb-qconv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = Files {
            root: dir.clone(),
            hf: dir.join("hf"),
            direct: dir.join("direct-q8_0.gguf"),
            from_dir: dir.join("from-dir-q8_0.gguf"),
            model,
        };
        let out = ok(&["quantize", "-m", s(&f.model), "--hf", "f32", "-o", s(&f.hf)]);
        assert!(text(&out).contains("tokenizer.json"), "{}", text(&out));
        for name in [
            "tokenizer.json",
            "tokenizer_config.json",
            "generation_config.json",
        ] {
            assert!(f.hf.join(name).is_file(), "{name} missing");
        }
        ok(&[
            "quantize",
            "-m",
            s(&f.model),
            "--quant",
            "q8_0",
            "-o",
            s(&f.direct),
        ]);
        ok(&[
            "quantize",
            "-m",
            s(&f.hf),
            "--quant",
            "q8_0",
            "-o",
            s(&f.from_dir),
        ]);
        f
    })
}

/// Each test calls this when it is done; the last removes the files (about 0.8 GB).
fn done() {
    static DONE: AtomicUsize = AtomicUsize::new(0);
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
        let _ = std::fs::remove_dir_all(&files().root);
    }
}

#[test]
fn a_directory_quantizes_to_the_same_gguf_as_its_source() {
    let f = files();
    let direct = GgufFile::open(&f.direct).unwrap();
    let via = GgufFile::open(&f.from_dir).unwrap();
    assert_eq!(direct.tensors.len(), via.tensors.len());
    for t in &direct.tensors {
        let u = via
            .tensor(&t.name)
            .unwrap_or_else(|| panic!("{} missing", t.name));
        assert_eq!((t.ty, &t.dims), (u.ty, &u.dims), "{}", t.name);
        let (a, b) = (
            direct.weight(&t.name).unwrap(),
            via.weight(&t.name).unwrap(),
        );
        assert!(
            a.data.as_slice() == b.data.as_slice(),
            "{}: bytes differ",
            t.name
        );
    }
    // The tokenizer, the architecture and the file type, key for key.
    let mut compared = 0;
    for (k, v) in &direct.metadata {
        if k.starts_with("tokenizer.") || k.starts_with("llama.") || k == "general.file_type" {
            assert!(via.get(k) == Some(v), "{k}: {:?} vs {v:?}", via.get(k));
            compared += 1;
        }
    }
    // 12 tokenizer keys, 10 of the architecture, the file type.
    assert_eq!(compared, 23);
    assert_eq!(via.architecture().unwrap(), "llama");

    // The same logits (the same bytes make the same arithmetic).
    let tokens = [1u32, 9690, 198, 2683, 359, 253, 5356, 2, 198];
    let logits = |p: &Path| {
        let m = Model::load_checkpoint(&Checkpoint::open(p).unwrap(), plumb_ops::CpuBackend::new())
            .unwrap();
        let mut c = m.new_cache(16).unwrap();
        m.forward(&tokens, &mut c, Logits::All).unwrap()
    };
    assert_eq!(logits(&f.direct), logits(&f.from_dir));
    done();
}

fn greedy(model: &Path, prompt: &str) -> Vec<u64> {
    let out = ok(&[
        "run",
        "--model",
        s(model),
        "--backend",
        "reference",
        "--temp",
        "0",
        "-n",
        "12",
        "--json",
        "-p",
        prompt,
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn a_directory_written_from_the_gguf_runs_by_itself() {
    let f = files();
    for prompt in [
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
        "The licence grants you the right to",
    ] {
        let want = greedy(&f.model, prompt);
        assert!(want.len() >= 4, "{want:?}");
        assert_eq!(greedy(&f.hf, prompt), want, "prompt {prompt:?}");
    }
    done();
}

#[test]
fn directories_without_a_convertible_tokenizer_are_refused() {
    let f = files();
    let dir = std::env::temp_dir().join(format!("plumb-qconv-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["config.json", "model.safetensors"] {
        // A link is enough: the weights are only read.
        std::os::unix::fs::symlink(f.hf.join(name), dir.join(name)).unwrap();
    }
    let out_file = dir.join("out.gguf");
    let to_gguf = || {
        plumb(&[
            "quantize",
            "-m",
            s(&dir),
            "--quant",
            "q8_0",
            "-o",
            s(&out_file),
        ])
    };
    let o = to_gguf();
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("tokenizer.json") && msg.contains("missing"),
        "{msg}"
    );
    assert!(!out_file.exists());

    // A WordPiece tokenizer.json (BERT's kind) is not a byte-level BPE.
    let wordpiece = serde_json::json!({
        "version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
        "post_processor": null, "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1}}
    });
    std::fs::write(dir.join("tokenizer.json"), wordpiece.to_string()).unwrap();
    let o = to_gguf();
    let msg = text(&o);
    assert!(!o.status.success(), "{msg}");
    assert!(
        msg.contains("WordPiece") && msg.contains("byte-level BPE"),
        "{msg}"
    );
    assert!(!out_file.exists());
    let _ = std::fs::remove_dir_all(&dir);
    done();
}
