//! The scheduler on a tiny synthetic model (2 layers, d_model 64, byte vocabulary): batched
//! greedy results equal the ones run alone, chunked prefill changes nothing, cancellation and
//! dropped receivers free their sequences, the queue limit refuses, a tiny KV cache preempts
//! and recomputes without changing any text, forks share their prompt's blocks. Streams and
//! the prefix cache: `tests_cache.rs`.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use plumb_core::GgmlType;
use plumb_gguf::GgufFile;
use plumb_model::synth::{write_synthetic, SynthShape};
use plumb_model::Model;
use plumb_ops::ReferenceBackend;
use plumb_tokenizer::Tokenizer;

use super::*;

const TINY: SynthShape = SynthShape {
    name: "tiny",
    arch: "llama",
    n_layers: 2,
    d_model: 64,
    d_ff: 128,
    n_heads: 4,
    n_kv_heads: 2,
    vocab: 320,
    ctx: 512,
    rope_theta: 10000.0,
    rms_eps: 1e-5,
    tied: true,
    qkv_bias: false,
    head_dim: None,
    sliding_window: None,
};

fn model_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("plumb-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tiny.gguf");
        write_synthetic(&TINY, GgmlType::Q8_0, 7, &path, Arc::new(|_, _| {})).expect("synth");
        path
    })
}

pub(super) fn start(config: EngineConfig) -> EngineHandle {
    start_kv(config, KvBudget::Default)
}

pub(super) fn start_kv(config: EngineConfig, kv: KvBudget) -> EngineHandle {
    let file = GgufFile::open(model_file()).expect("open");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer");
    let model = Model::load(&file, ReferenceBackend { threads: false }).expect("model");
    EngineHandle::start_with_kv(model, Arc::new(tok), config, kv).expect("engine")
}

pub(super) fn config(max_batch: usize) -> EngineConfig {
    EngineConfig {
        max_batch,
        ctx: 256,
        max_queue: 8,
        max_step_tokens: 8,
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Out {
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: Option<FinishReason>,
    pub logprobs: Vec<TokenLogprob>,
}

/// Reads every event of a request, choices apart.
pub(super) fn collect(rx: EventReceiver, n: usize) -> Vec<Out> {
    collect_cached(rx, n).0
}

/// [`collect`], and the prompt tokens the request found in the prefix cache.
pub(super) fn collect_cached(mut rx: EventReceiver, n: usize) -> (Vec<Out>, usize) {
    let mut outs = vec![Out::default(); n];
    let mut cached = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Event::Token(t))) => {
                let o = &mut outs[t.choice];
                assert!(o.finish.is_none(), "token after done");
                o.tokens.push(t.token);
                o.text.push_str(&t.text);
                o.logprobs.extend(t.logprob);
            }
            Ok(Some(Event::Done(d))) => {
                let o = &mut outs[d.choice];
                o.text.push_str(&d.text);
                assert_eq!(d.completion_tokens, o.tokens.len());
                assert!(cached.is_none_or(|c| c == d.cached_tokens));
                cached = Some(d.cached_tokens);
                o.finish = Some(d.finish_reason);
            }
            Ok(Some(Event::Error(e))) => panic!("engine error: {e}"),
            Ok(None) => break,
            Err(_) => panic!("no event within a minute"),
        }
    }
    assert!(outs.iter().all(|o| o.finish.is_some()), "{outs:?}");
    (outs, cached.unwrap_or(0))
}

pub(super) fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Request {
    let mut r = Request::new(prompt, max_tokens);
    r.sampling = SamplingParams::greedy();
    r.ignore_eos = true;
    r
}

pub(super) fn prompt(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| (seed * 31 + i * 7) % 256).collect()
}

pub(super) fn wait_for(h: &EngineHandle, what: &str, ok: impl Fn(&MetricsSnapshot) -> bool) {
    let t0 = Instant::now();
    while !ok(&h.metrics()) {
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn greedy_alone_equals_batched_with_chunked_prefill_and_forks() {
    let h = start(config(6));
    // Prompt lengths around the prefill chunk of 8: 3, 8, 21 (three chunks).
    let reqs = [
        greedy(prompt(1, 3), 12),
        greedy(prompt(2, 8), 9),
        greedy(prompt(3, 21), 14),
    ];
    let alone: Vec<Out> = reqs
        .iter()
        .map(|r| collect(h.submit(r.clone()).expect("submit"), 1).remove(0))
        .collect();
    for (o, r) in alone.iter().zip(&reqs) {
        assert_eq!(o.tokens.len(), r.max_tokens);
        assert_eq!(o.finish, Some(FinishReason::Length));
    }
    // All at once, plus the third as n = 2 (prefilled once, forked).
    let mut forked = reqs[2].clone();
    forked.n = 2;
    let rxs: Vec<EventReceiver> = reqs
        .iter()
        .cloned()
        .chain([forked])
        .map(|r| h.submit(r).expect("submit"))
        .collect();
    let mut outs: Vec<Vec<Out>> = rxs
        .into_iter()
        .zip([1, 1, 1, 2])
        .map(|(rx, n)| collect(rx, n))
        .collect();
    let two = outs.pop().expect("forked");
    for (batched, alone) in outs.iter().zip(&alone) {
        assert_eq!(&batched[0], alone);
    }
    assert_eq!(two[0], alone[2]);
    assert_eq!(two[1], alone[2]);
    // Metrics are published after the step that sent the last events.
    wait_for(&h, "all completed", |m| {
        m.requests_with(RequestStatus::Completed) == 7 && m.running_sequences == 0
    });
    let m = h.metrics();
    assert_eq!(m.generated_tokens, 2 * (12 + 9 + 14) + 2 * 14);
    assert_eq!(m.prompt_tokens, 2 * (3 + 8 + 21) + 21);
    assert_eq!(m.time_to_first_token.count, 7);
    assert_eq!(m.kv_bytes_used, 0);
    h.shutdown();
}

/// A step larger than the model's default batch (256 tokens) runs, and gives the text of
/// small steps.
#[test]
fn a_step_above_the_model_batch_runs() {
    let long = greedy(prompt(4, 300), 6);
    let mut big = config(2);
    big.ctx = 512;
    big.max_step_tokens = 400;
    let h = start(big);
    let one_chunk = collect(h.submit(long.clone()).expect("submit"), 1).remove(0);
    h.shutdown();
    let mut small = config(2);
    small.ctx = 512;
    let h = start(small);
    let chunks = collect(h.submit(long).expect("submit"), 1).remove(0);
    h.shutdown();
    assert_eq!(one_chunk.tokens.len(), 6);
    assert_eq!(one_chunk, chunks);
}

#[test]
fn seeds_reproduce_stops_cut_and_logprobs_add_up() {
    let h = start(config(4));
    let mut r = Request::new(prompt(5, 6), 16);
    r.sampling.temperature = 1.0;
    r.sampling.seed = Some(42);
    r.ignore_eos = true;
    r.n = 2;
    let a = collect(h.submit(r.clone()).expect("submit"), 2);
    let b = collect(h.submit(Request { id: 0, ..r.clone() }).expect("submit"), 2);
    assert_eq!(a, b);
    assert_ne!(
        a[0].tokens, a[1].tokens,
        "choices draw with different seeds"
    );

    // A stop string taken from the greedy text cuts it right before.
    let base = collect(h.submit(greedy(prompt(6, 5), 24)).expect("submit"), 1).remove(0);
    let chars: Vec<char> = base.text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let mut with_stop = greedy(prompt(6, 5), 24);
    with_stop.stop = vec![stop.clone()];
    let cut = collect(h.submit(with_stop).expect("submit"), 1).remove(0);
    let at = base.text.find(&stop).expect("stop in text");
    assert_eq!(cut.text, base.text[..at]);
    assert_eq!(cut.finish, Some(FinishReason::Stop));

    let mut lp = greedy(prompt(7, 4), 5);
    lp.logprobs = Some(3);
    let out = collect(h.submit(lp).expect("submit"), 1).remove(0);
    assert_eq!(out.logprobs.len(), 5);
    for (l, &t) in out.logprobs.iter().zip(&out.tokens) {
        assert_eq!(l.top.len(), 3);
        assert_eq!(l.top[0].0, t, "greedy picks the most likely token");
        assert!((l.top[0].1 - l.logprob).abs() < 1e-6 && l.logprob <= 0.0);
    }
    h.shutdown();
}

#[test]
fn cancel_and_dropped_receivers_free_their_sequences() {
    let h = start(config(4));
    let mut rx = h.submit(greedy(prompt(8, 4), 200)).expect("submit");
    // Wait for a token so the request is running, then hang up.
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(30)),
        Ok(Some(Event::Token(_)))
    ));
    drop(rx);
    wait_for(&h, "dropped receiver freed", |m| {
        m.running_sequences == 0 && m.requests_with(RequestStatus::Cancelled) == 1
    });

    let req = greedy(prompt(9, 4), 200);
    let id = req.id;
    let mut rx = h.submit(req).expect("submit");
    assert!(matches!(
        rx.recv_timeout(Duration::from_secs(30)),
        Ok(Some(Event::Token(_)))
    ));
    h.cancel(id);
    let mut cancelled = false;
    while let Ok(Some(ev)) = rx.recv_timeout(Duration::from_secs(30)) {
        if let Event::Done(d) = ev {
            cancelled = d.finish_reason == FinishReason::Cancelled;
        }
    }
    assert!(cancelled);
    wait_for(&h, "cancelled request freed", |m| {
        m.running_sequences == 0
            && m.kv_bytes_used == 0
            && m.requests_with(RequestStatus::Cancelled) == 2
    });
    h.shutdown();
}

#[test]
fn queue_limit_context_and_bad_requests_are_refused() {
    let h = start(EngineConfig {
        max_queue: 1,
        ..config(1)
    });
    let mut running = h.submit(greedy(prompt(10, 4), 200)).expect("submit");
    assert!(matches!(
        running.recv_timeout(Duration::from_secs(30)),
        Ok(Some(Event::Token(_)))
    ));
    let waiting = h.submit(greedy(prompt(11, 4), 4)).expect("one may wait");
    match h.submit(greedy(prompt(12, 4), 4)) {
        Err(SubmitError::Overloaded { waiting: 1 }) => {}
        other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
    }
    let too_long = h.submit(greedy(prompt(13, 100), 200)).map(|_| ());
    assert_eq!(
        too_long,
        Err(SubmitError::TooLong {
            prompt: 100,
            max_tokens: 200,
            ctx: 256
        })
    );
    let msg = too_long.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("300 tokens") && msg.contains("256"), "{msg}");
    for bad in [
        greedy(vec![], 4),
        greedy(vec![9999], 4),
        greedy(prompt(1, 2), 0),
        Request {
            n: 2,
            ..greedy(prompt(1, 2), 4)
        },
        Request {
            sampling: SamplingParams {
                temperature: -1.0,
                ..SamplingParams::default()
            },
            ..greedy(prompt(1, 2), 4)
        },
    ] {
        assert!(matches!(h.submit(bad), Err(SubmitError::Invalid(_))));
    }
    drop(running);
    assert_eq!(collect(waiting, 1)[0].tokens.len(), 4);
    wait_for(&h, "done", |m| {
        m.requests_with(RequestStatus::Completed) == 1
    });
    let m = h.metrics();
    assert_eq!(m.requests_with(RequestStatus::RejectedOverloaded), 1);
    assert_eq!(m.requests_with(RequestStatus::RejectedTooLong), 1);
    assert_eq!(m.requests_with(RequestStatus::RejectedInvalid), 5);
    h.shutdown();
    assert!(matches!(
        h.submit(greedy(prompt(1, 2), 4)),
        Err(SubmitError::Closed)
    ));
}

#[test]
fn a_tiny_kv_cache_preempts_without_changing_any_text() {
    // 6 blocks of 16 positions: each request fits alone, all together do not.
    let h = start_kv(config(8), KvBudget::Tokens(6 * KV_BLOCK_SIZE));
    assert_eq!(h.kv_stats().blocks_total, 6);
    let mut forked = greedy(prompt(20, 10), 14);
    forked.n = 2;
    let reqs = [
        greedy(prompt(21, 10), 30),
        greedy(prompt(22, 12), 30),
        forked,
        greedy(prompt(23, 5), 40),
    ];
    let ns = [1, 1, 2, 1];
    let alone: Vec<Vec<Out>> = reqs
        .iter()
        .zip(ns)
        .map(|(r, n)| collect(h.submit(r.clone()).expect("submit"), n))
        .collect();
    assert_eq!(h.kv_stats().preemptions, 0, "alone, every request fits");
    let rxs: Vec<EventReceiver> = reqs
        .iter()
        .map(|r| h.submit(r.clone()).expect("submit"))
        .collect();
    for ((rx, n), alone) in rxs.into_iter().zip(ns).zip(&alone) {
        assert_eq!(&collect(rx, n), alone);
    }
    wait_for(&h, "all completed", |m| {
        m.requests_with(RequestStatus::Completed) == 8 && m.running_sequences == 0
    });
    let kv = h.kv_stats();
    assert!(kv.preemptions > 0, "the pool is too small for all at once");
    assert_eq!((kv.blocks_used, kv.blocks_free), (0, 6));
    assert_eq!(h.metrics().kv_bytes_used, 0);
    assert_eq!(h.metrics().prompt_tokens, 2 * (10 + 12 + 10 + 5));
    // More than the whole pool can never run.
    assert!(matches!(
        h.submit(greedy(prompt(24, 10), 200)),
        Err(SubmitError::TooLong { .. })
    ));
    h.shutdown();
}

#[test]
fn choices_share_their_prompt_blocks() {
    let h = start(config(4));
    // 64 prompt positions = 4 full blocks; 8 tokens more per choice = 1 block each.
    let alone = collect(h.submit(greedy(prompt(30, 64), 8)).expect("submit"), 1).remove(0);
    let mut two = greedy(prompt(30, 64), 8);
    two.n = 2;
    let h = {
        h.shutdown();
        start(config(4))
    };
    let outs = collect(h.submit(two).expect("submit"), 2);
    assert_eq!(outs[0], alone);
    assert_eq!(outs[1], alone);
    wait_for(&h, "done", |m| m.running_sequences == 0);
    let kv = h.kv_stats();
    assert!(
        (5..=6).contains(&kv.peak_blocks_used),
        "two copies would hold 10 blocks, shared ones 6: {kv:?}"
    );
    assert_eq!(kv.blocks_used, 0);
    h.shutdown();
}
