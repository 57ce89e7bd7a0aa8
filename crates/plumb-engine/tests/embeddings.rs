//! all-MiniLM-L6-v2 against sentence-transformers' embeddings in
//! `fixtures/all-minilm-l6-v2/embeddings.json` (made by scripts/make_embedding_fixture.py):
//! the same token ids, and a cosine similarity of at least 0.9999 for every sentence. The
//! model is fetched on first use, as `plumb embed` does; these tests never skip.

use std::path::PathBuf;

use plumb_engine::{EmbedInput, Embedder, TooLong};
use plumb_ops::{CpuBackend, ReferenceBackend};

fn fixture() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/all-minilm-l6-v2/embeddings.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model_dir() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    plumb_engine::store::resolve_embedding_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching all-MiniLM-L6-v2")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn sentences(fx: &serde_json::Value) -> Vec<String> {
    fx["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn vector(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn check<B: plumb_ops::Backend>(e: &Embedder<B>, what: &str) {
    let fx = fixture();
    let sentences = sentences(&fx);
    let inputs: Vec<EmbedInput> = sentences.iter().cloned().map(EmbedInput::Text).collect();
    for (inp, want) in inputs.iter().zip(fx["token_ids"].as_array().unwrap()) {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(e.tokens(inp).unwrap(), want, "{inp:?}");
    }
    let got = e.embed(&inputs, TooLong::Truncate).unwrap();
    // Only the 300-word sentence is longer than the model's 256 tokens.
    let long: Vec<usize> = (0..sentences.len())
        .filter(|&i| sentences[i].split(' ').count() > 256)
        .collect();
    assert_eq!(got.truncated, long);
    let mut worst = 1f64;
    for ((s, v), want) in sentences
        .iter()
        .zip(&got.vectors)
        .zip(fx["embeddings"].as_array().unwrap())
    {
        let want = vector(want);
        assert_eq!(v.len(), 384);
        let c = cosine(v, &want);
        worst = worst.min(c);
        assert!(c >= 0.9999, "{what}: {s:?}: cosine {c}");
    }
    eprintln!(
        "{what}: worst cosine 1 - {:.1e} over {} sentences",
        1.0 - worst,
        sentences.len()
    );
}

#[test]
fn cpu_embeddings_match_sentence_transformers() {
    let e = Embedder::load(&model_dir(), CpuBackend::new()).unwrap();
    assert_eq!((e.dim(), e.encoder.pooling.max_tokens), (384, 256));
    check(&e, "cpu");
    // Ids in, the same vector out; a batch gives each input the vector it gets alone.
    let text = "The quick brown fox jumps over the lazy dog.";
    let ids = e.tokenizer.encode(text, false, false).unwrap();
    let a = e
        .embed(&[EmbedInput::Text(text.into())], TooLong::Refuse)
        .unwrap();
    let b = e
        .embed(
            &[EmbedInput::Text("other".into()), EmbedInput::Ids(ids)],
            TooLong::Refuse,
        )
        .unwrap();
    assert!(cosine(&a.vectors[0], &b.vectors[1]) > 0.999999);
    assert_eq!(a.tokens, 12);
    let norm: f64 = a.vectors[0].iter().map(|&x| (x as f64).powi(2)).sum();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
}

#[test]
fn reference_embeddings_match_sentence_transformers() {
    let e = Embedder::load(&model_dir(), ReferenceBackend::default()).unwrap();
    check(&e, "reference");
}

/// More inputs than one encoder pass takes (33 × 256 tokens > BATCH_TOKENS): every input
/// still gets its own vector, in order.
#[test]
fn inputs_beyond_one_pass_keep_their_vectors() {
    let e = Embedder::load(&model_dir(), CpuBackend::new()).unwrap();
    let fx = fixture();
    let sentences = sentences(&fx);
    let want = fx["embeddings"].as_array().unwrap();
    let long = sentences.len() - 1;
    assert!(33 * e.max_tokens() > plumb_engine::embed::BATCH_TOKENS);
    let mut inputs = vec![EmbedInput::Text(sentences[long].clone()); 33];
    inputs.push(EmbedInput::Text(sentences[0].clone()));
    let got = e.embed(&inputs, TooLong::Truncate).unwrap();
    assert_eq!(got.vectors.len(), 34);
    assert_eq!(got.truncated, (0..33).collect::<Vec<_>>());
    for v in &got.vectors[..33] {
        assert!(cosine(v, &vector(&want[long])) >= 0.9999);
    }
    assert!(cosine(&got.vectors[33], &vector(&want[0])) >= 0.9999);
}

#[test]
fn bad_inputs_are_errors_that_name_the_input() {
    let e = Embedder::load(&model_dir(), CpuBackend::new()).unwrap();
    let msg = |inputs: &[EmbedInput]| e.embed(inputs, TooLong::Refuse).unwrap_err().to_string();
    let ok = EmbedInput::Text("fine".into());
    assert!(msg(&[]).contains("no input"));
    let m = msg(&[ok.clone(), EmbedInput::Text(String::new())]);
    assert!(m.contains("input 1") && m.contains("empty"), "{m}");
    let m = msg(&[EmbedInput::Ids(vec![])]);
    assert!(m.contains("input 0") && m.contains("empty"), "{m}");
    let m = msg(&[ok.clone(), ok.clone(), EmbedInput::Ids(vec![101, 999_999])]);
    assert!(m.contains("input 2") && m.contains("999999"), "{m}");
    // 300 words are 302 tokens with [CLS] and [SEP]; the model takes 256.
    let long = EmbedInput::Text(vec!["word"; 300].join(" "));
    let m = msg(std::slice::from_ref(&long));
    assert!(
        m.contains("input 0") && m.contains("302") && m.contains("256"),
        "{m}"
    );
    let cut = e.embed(&[long], TooLong::Truncate).unwrap();
    assert_eq!((cut.tokens, cut.truncated), (256, vec![0]));
}
