//! `plumb quantize` round trips on the default model: quantize → load → perplexity, against
//! the source's perplexity on the same text, within each format's expected loss; in-situ
//! quantization at load gives the same model as the written file.

use std::path::PathBuf;
use std::sync::Arc;

use plumb_core::GgmlType;
use plumb_engine::perplexity::perplexity;
use plumb_engine::Session;
use plumb_gguf::GgufFile;
use plumb_model::quantize::gguf::quantize_gguf;
use plumb_model::quantize::Recipe;

fn text() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/smollm2-135m-instruct-q4_1/apache-2.0.txt");
    std::fs::read_to_string(p).unwrap()
}

fn ppl(s: &mut Session<plumb_ops::CpuBackend>) -> f64 {
    let ids = s.tokenizer.encode(&text(), false, false).unwrap();
    perplexity(s, &ids, 512, &mut |_, _, _| {}).unwrap().ppl
}

fn load(path: &std::path::Path, q: Option<Recipe>) -> Session<plumb_ops::CpuBackend> {
    Session::load_quantized(path, plumb_ops::CpuBackend::new(), 512, q).unwrap()
}

#[test]
fn quantized_files_keep_perplexity_within_the_expected_loss() {
    let src = plumb_engine::store::resolve_model(None, &mut |m| eprintln!("{m}")).unwrap();
    let dir = std::env::temp_dir().join(format!("plumb-quantize-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = ppl(&mut load(&src, None));
    let f = GgufFile::open(&src).unwrap();
    // (recipe, largest relative perplexity change). Q8_0 of a Q4_1 model is nearly
    // lossless; Q4_K_M re-rounds 4-bit weights onto another 4/5-bit grid (+8% measured).
    for (name, bound) in [("q8_0", 0.01), ("q4_k_m", 0.12)] {
        let recipe = Recipe::parse(name).unwrap();
        let out = dir.join(format!("{name}.gguf"));
        let plan = quantize_gguf(&f, recipe, &out, Arc::new(|_, _, _| {})).unwrap();
        let written = GgufFile::open(&out).unwrap();
        for (t, _, to) in &plan.tensors {
            assert_eq!(written.tensor(t).unwrap().ty, *to, "{name}: {t}");
        }
        let got = ppl(&mut load(&out, None));
        let rel = (got - base) / base;
        eprintln!(
            "{name}: perplexity {got:.4} vs source {base:.4} ({:+.2}%)",
            rel * 100.0
        );
        assert!(rel.abs() < bound, "{name}: {got:.4} vs {base:.4}");
        // In-situ quantization is the same quantizer: the same weights, the same figure.
        let in_situ = ppl(&mut load(&src, Some(recipe)));
        assert_eq!(
            in_situ, got,
            "{name}: --quantize at load differs from the file"
        );
    }
    let q4km = GgufFile::open(&dir.join("q4_k_m.gguf")).unwrap();
    let ty = |n: &str| q4km.tensor(n).unwrap().ty;
    // SmolLM2: 30 layers, 576-wide rows (not whole 256-blocks: llama.cpp's fallbacks).
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q6K);
    assert_eq!(ty("blk.4.ffn_down.weight"), GgmlType::Q4K);
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlType::Q8_0);
    assert_eq!(ty("blk.4.attn_v.weight"), GgmlType::Q5_0);
    assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
    let _ = std::fs::remove_dir_all(&dir);
}
