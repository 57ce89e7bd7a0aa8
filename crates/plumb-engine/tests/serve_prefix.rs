//! The serving engine's prefix cache on the default model (SmolLM2-135M-Instruct Q4_1, CPU
//! backend): a long shared prefix (2,000 tokens of the Apache license fixture) taken from the
//! cache gives the greedy tokens of a cold run bit for bit, and its first token comes much
//! sooner. The model is fetched on first use exactly as the CLI does; this test never skips.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plumb_engine::serve::{EngineConfig, EngineHandle, Event, Request};
use plumb_engine::SamplingParams;
use plumb_gguf::GgufFile;
use plumb_model::Model;
use plumb_tokenizer::Tokenizer;

/// Tokens of the fixture text every prompt starts with: 125 whole KV blocks.
const PREFIX: usize = 2000;

fn fixture_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/smollm2-135m-instruct-q4_1/apache-2.0.txt");
    std::fs::read_to_string(path).expect("fixture")
}

fn engine(file: &GgufFile, tok: &Arc<Tokenizer>) -> EngineHandle {
    let model = Model::load(file, plumb_ops::CpuBackend::new()).expect("model");
    let config = EngineConfig {
        max_batch: 4,
        ctx: 2304,
        max_queue: 8,
        max_step_tokens: 512,
    };
    EngineHandle::start(model, tok.clone(), config).expect("engine")
}

/// Greedy tokens of `prompt`, its cached prompt tokens, and the seconds to its first token.
fn run(h: &EngineHandle, prompt: &[u32]) -> (Vec<u32>, usize, f64) {
    let mut r = Request::new(prompt.to_vec(), 16);
    r.sampling = SamplingParams::greedy();
    r.ignore_eos = true;
    let t0 = Instant::now();
    let mut rx = h.submit(r).expect("submit");
    let (mut tokens, mut cached, mut ttft) = (Vec::new(), None, 0.0);
    loop {
        match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(Some(Event::Token(t))) => {
                if tokens.is_empty() {
                    ttft = t0.elapsed().as_secs_f64();
                }
                tokens.push(t.token);
            }
            Ok(Some(Event::Done(d))) => cached = Some(d.cached_tokens),
            Ok(Some(Event::Error(e))) => panic!("engine error: {e}"),
            Ok(None) => break,
            Err(_) => panic!("no event within five minutes"),
        }
    }
    (tokens, cached.expect("a Done event"), ttft)
}

#[test]
fn a_cached_long_prefix_gives_the_cold_tokens_and_a_fast_first_token() {
    let path = plumb_engine::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let file = GgufFile::open(&path).expect("open");
    let tok = Arc::new(Tokenizer::from_gguf(&file).expect("tokenizer"));
    let ids = tok.encode(&fixture_text(), false, false).expect("encode");
    assert!(ids.len() > PREFIX, "the fixture has {} tokens", ids.len());
    let ask = |q: &str| {
        let mut p = ids[..PREFIX].to_vec();
        p.extend(tok.encode(q, false, false).expect("encode"));
        p
    };
    let (p, q) = (
        ask("\n\nIn one sentence, what does this text grant?"),
        ask("\n\nWho wrote it?"),
    );

    // Each prompt cold on one engine and warm (after the other) on another.
    let first = engine(&file, &tok);
    let (p_cold, cached, ttft_p_cold) = run(&first, &p);
    assert_eq!(cached, 0);
    let (q_warm, cached, ttft_q_warm) = run(&first, &q);
    assert_eq!(cached, PREFIX);
    first.shutdown();
    let second = engine(&file, &tok);
    let (q_cold, cached, ttft_q_cold) = run(&second, &q);
    assert_eq!(cached, 0);
    let (p_warm, cached, ttft_p_warm) = run(&second, &p);
    assert_eq!(cached, PREFIX);
    let m = second.metrics();
    second.shutdown();

    assert_eq!(p_warm, p_cold, "a cached prefix changes the greedy tokens");
    assert_eq!(q_warm, q_cold, "a cached prefix changes the greedy tokens");
    assert_eq!(p_cold.len(), 16);
    let (cold, warm) = (ttft_p_cold.min(ttft_q_cold), ttft_p_warm.max(ttft_q_warm));
    eprintln!(
        "time to first token, {PREFIX}-token shared prefix: cold {:.0} / {:.0} ms, warm {:.0} / \
         {:.0} ms (warm / cold ≤ {:.3}); prefix cache {} of {} prompt tokens",
        ttft_p_cold * 1e3,
        ttft_q_cold * 1e3,
        ttft_q_warm * 1e3,
        ttft_p_warm * 1e3,
        warm / cold,
        m.prefix_cache_hits,
        m.prefix_cache_queries,
    );
    // The warm prompts compute ~20 tokens instead of ~2,020.
    assert!(
        warm < 0.5 * cold,
        "warm {warm:.3} s against cold {cold:.3} s"
    );
}
