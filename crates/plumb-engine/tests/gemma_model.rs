//! Gemma 3 270M (Q4_K_M) on the CPU backend against llama.cpp's golden outputs in
//! `fixtures/gemma-3-270m-q4_k_m`: perplexity, and llama.cpp's greedy continuations
//! teacher-forced; and a long input (past the 512-position window of the local layers) run
//! alike through chunked prefill, decode steps and the paged cache. The model is fetched on
//! first use as `--model gemma-3-270m` does; these tests never skip.

mod common;

use std::path::PathBuf;

use plumb_engine::perplexity::perplexity;
use plumb_engine::Session;
use plumb_model::{BlockTable, Logits, PagedItem, PagedKv};
use plumb_ops::CpuBackend;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gemma-3-270m-q4_k_m")
}

fn model_path() -> PathBuf {
    common::fetched(Some("gemma-3-270m"))
}

fn session(ctx: usize) -> Session<CpuBackend> {
    Session::load(&model_path(), CpuBackend::new(), ctx).unwrap()
}

fn json(name: &str) -> serde_json::Value {
    common::json(&fixtures().join(name))
}

/// Logits closer than this to our top token are a near-tie (as for the default model).
const NEAR_TIE: f32 = 0.4;

/// The whole text tokenized with its BOS, each chunk's first token replaced by BOS (the
/// fixture's procedure, which `perplexity` follows for a model that adds BOS).
#[test]
fn perplexity_at_512_is_within_one_percent_of_llama_cpp() {
    let text = std::fs::read_to_string(fixtures().join("apache-2.0.txt")).unwrap();
    let mut s = session(512);
    let ids = s.tokenizer.encode(&text, true, false).unwrap();
    assert_eq!(ids[0], 2);
    let r = perplexity(&mut s, &ids, 512, &mut |_, _, _| {}).unwrap();
    let want = 10.1452;
    let rel = (r.ppl - want).abs() / want;
    eprintln!(
        "perplexity {:.4} ({:+.2}% from {want})",
        r.ppl,
        100.0 * (r.ppl / want - 1.0)
    );
    assert_eq!(r.chunks, 4);
    assert!(
        rel < 0.01,
        "perplexity {:.4} is {:.2}% from llama.cpp's {want}",
        r.ppl,
        rel * 100.0
    );
}

/// Each prompt, then llama.cpp's greedy continuation fed back: at every position llama.cpp's
/// token is our top token or within a near-tie of it.
#[test]
fn llama_cpp_greedy_tokens_are_our_top_tokens_up_to_near_ties() {
    let mut s = session(256);
    common::teacher_forced(&mut s, &json("greedy.json")).assert_agrees(NEAR_TIE);
}

/// 600 tokens, so that the last ones' local layers see only a window of the input: the
/// logits of the last 4 positions agree whether the input goes in as chunks of 256 (a chunk
/// that crosses the window's start), as single decode steps after a prefill of 596, or
/// through the paged cache in blocks of 16 (chunks of 250, 250, 96, then single tokens). (The window's arithmetic is held against the
/// reference by the op check; this proves every path hands each layer its window.)
#[test]
fn a_long_input_gives_the_same_logits_through_prefill_decode_and_paged() {
    let text = std::fs::read_to_string(fixtures().join("apache-2.0.txt")).unwrap();
    let s = session(640);
    let ids = s.tokenizer.encode(&text, true, false).unwrap()[..600].to_vec();
    let (m, vocab) = (&s.model, s.model.config.vocab_size);
    let mut cache = m.new_cache(640).unwrap();
    let prefill = m.forward(&ids, &mut cache, Logits::All).unwrap();
    let tail = |all: &[f32]| all[all.len() - 4 * vocab..].to_vec();
    let want = tail(&prefill);

    let mut cache = m.new_cache(640).unwrap();
    let mut decoded = m.forward(&ids[..596], &mut cache, Logits::Last).unwrap();
    for &t in &ids[596..] {
        decoded.extend(m.forward(&[t], &mut cache, Logits::Last).unwrap());
    }
    let decoded = tail(&decoded);

    let mut kv = PagedKv::with_capacity_tokens(m, 640, 16).unwrap();
    let mut table = BlockTable::default();
    let mut paged = Vec::new();
    let chunks = [
        0..250,
        250..500,
        500..596,
        596..597,
        597..598,
        598..599,
        599..600,
    ];
    for chunk in chunks.map(|r| &ids[r]) {
        let mut items = [PagedItem {
            tokens: chunk,
            table: &mut table,
        }];
        for row in m.forward_paged(&mut kv, &mut items).unwrap() {
            paged.extend(row);
        }
    }
    let paged = tail(&paged);
    for (name, got) in [("decode", &decoded), ("paged", &paged)] {
        for p in 0..4 {
            let (g, w) = (
                &got[p * vocab..(p + 1) * vocab],
                &want[p * vocab..(p + 1) * vocab],
            );
            let d = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let top = |r: &[f32]| plumb_engine::sampler::argmax(r);
            assert_eq!(top(g), top(w), "{name}, position {}", 596 + p);
            assert!(
                d < 0.05,
                "{name}, position {}: logits differ by {d}",
                596 + p
            );
        }
    }
}

/// The model-level check: the CPU backend's logits on a prompt against the reference
/// backend's (every op its frozen reference), within the thresholds of 8-bit activations.
#[test]
fn the_cpu_backend_passes_the_model_check() {
    use plumb_engine::check::{compare_logits, LogitThresholds};
    use plumb_ops::{Backend, ReferenceBackend};
    let prompt = "Q: What is the largest planet in the solar system?\nA: The largest planet";
    fn logits<B: Backend>(s: &mut Session<B>, prompt: &str) -> Vec<f32> {
        let ids = s.encode(prompt).unwrap();
        s.logits_all(&ids).unwrap()
    }
    let mut reference = Session::load(&model_path(), ReferenceBackend::default(), 64).unwrap();
    let want = logits(&mut reference, prompt);
    let cpu = CpuBackend::new();
    let t = LogitThresholds::for_precision(cpu.precision(plumb_core::GgmlType::Q4K));
    let got = logits(&mut session(64), prompt);
    let vocab = reference.model.config.vocab_size;
    let c = compare_logits(&got, &want, vocab, t.decisive_margin);
    eprintln!("{c:?}");
    assert!(c.violations(&t).is_empty(), "{c:?}: {:?}", c.violations(&t));
    assert!(c.decisive > 0 && c.decisive_agree == c.decisive, "{c:?}");
}
