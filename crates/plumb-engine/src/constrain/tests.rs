//! Constraints on a random-weight model of one layer with the synthetic byte vocabulary (256
//! byte tokens, `<s>` 256, `</s>` 257, then words " w258"…): whatever the weights favour, the
//! output matches the grammar; an unconstrained neighbour's tokens do not change.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plumb_core::GgmlType;
use plumb_gguf::GgufFile;
use plumb_model::synth::{write_synthetic, SynthShape};
use plumb_model::Model;
use plumb_ops::ReferenceBackend;
use plumb_tokenizer::Tokenizer;
use serde_json::{json, Value};

use super::*;
use crate::generate::FinishReason;
use crate::sampler::SamplingParams;
use crate::serve::{EngineConfig, EngineHandle, Event, Request};

const SHAPE: SynthShape = SynthShape {
    name: "constrain",
    arch: "llama",
    n_layers: 1,
    d_model: 32,
    d_ff: 64,
    n_heads: 2,
    n_kv_heads: 1,
    vocab: 300,
    ctx: 256,
    rope_theta: 10000.0,
    rms_eps: 1e-5,
    tied: true,
    qkv_bias: false,
    head_dim: None,
    sliding_window: None,
};

const EOS: u32 = 257;

fn model_file() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("plumb-constrain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("constrain.gguf");
        write_synthetic(&SHAPE, GgmlType::Q8_0, 3, &path, Arc::new(|_, _| {})).expect("synth");
        path
    })
}

fn tokenizer() -> Arc<Tokenizer> {
    let file = GgufFile::open(model_file()).expect("open");
    Arc::new(Tokenizer::from_gguf(&file).expect("tokenizer"))
}

fn constrainer() -> Constrainer {
    Constrainer::new(tokenizer()).expect("constrainer")
}

fn allowed(mask: &[u32]) -> Vec<u32> {
    (0..mask.len() as u32 * 32)
        .filter(|&t| allows(mask, t))
        .collect()
}

#[test]
fn masks_forbid_every_unset_bit_and_everything_past_the_end() {
    // Word 0 allows tokens 0 and 31, word 1 allows 33; logits 64.. lie past the mask.
    let mask = [1 | 1 << 31, 1 << 1];
    let mut logits = vec![1.0f32; 70];
    apply_mask(&mut logits, &mask);
    let kept: Vec<usize> = (0..70).filter(|&i| logits[i].is_finite()).collect();
    assert_eq!(kept, vec![0, 31, 33]);
    assert_eq!(allowed(&mask), vec![0, 31, 33]);
    assert!(!allows(&mask, 64) && !allows(&[], 0));
    let mut all = vec![0.5f32; 40];
    apply_mask(&mut all, &[u32::MAX, u32::MAX]);
    assert!(all.iter().all(|&l| l == 0.5));
}

#[test]
fn control_tokens_are_marked_and_a_complete_grammar_allows_only_the_stop_tokens() {
    let tok = tokenizer();
    let words = trie::trie_words(&tok);
    assert_eq!(words[EOS as usize], b"\xff</s>");
    assert_eq!(words[b'a' as usize], b"a");
    assert_eq!(words[258], b" w258");
    let g = constrainer()
        .compile(GrammarSpec::Regex("ab|ac".into()))
        .expect("compiles");
    let mut live = Live::start(&g);
    assert_eq!(allowed(live.mask().expect("first")), vec![b'a' as u32]);
    live.commit(b'a' as u32);
    assert_eq!(
        allowed(live.mask().expect("second")),
        vec![b'b' as u32, b'c' as u32]
    );
    live.commit(b'c' as u32);
    assert_eq!(allowed(live.mask().expect("done")), tok.stop_tokens());
    // A token outside the mask puts the matcher in error, reported from then on.
    live.commit(b'z' as u32);
    assert!(matches!(live.mask(), Err(ConstraintError::Failed(_))));
    assert!(live.mask().is_err());
}

#[test]
fn malformed_unsupported_and_unsatisfiable_specs_are_rejected_with_a_reason() {
    let c = constrainer();
    let reject = |spec: GrammarSpec| match c.compile(spec) {
        Err(ConstraintError::Grammar(m)) => m,
        other => panic!("not rejected: {other:?}"),
    };
    let m = reject(GrammarSpec::JsonSchema(
        json!({"type": "integer", "minimum": 5, "maximum": 1}),
    ));
    assert!(m.contains("JSON schema"), "{m}");
    let m = reject(GrammarSpec::JsonSchema(json!({"type": "frobnicate"})));
    assert!(m.contains("frobnicate"), "{m}");
    let m = reject(GrammarSpec::Lark("start: ( \"a\"".into()));
    assert!(m.contains("Lark grammar"), "{m}");
    reject(GrammarSpec::Regex("(unclosed".into()));
    assert!(c.compile(GrammarSpec::Lark("start: \"a\"+".into())).is_ok());
}

#[test]
fn layout_defaults_yield_to_the_schema_own_options() {
    let own = json!({"type": "object", "x-guidance": {"whitespace_flexible": true}});
    assert_eq!(with_layout(own.clone()), own);
    let laid = with_layout(json!({"type": "object"}));
    assert_eq!(laid["x-guidance"]["item_separator"], ", ");
    assert_eq!(with_layout(json!(true)), json!(true));
}

fn engine() -> EngineHandle {
    let file = GgufFile::open(model_file()).expect("open");
    let model = Model::load(&file, ReferenceBackend { threads: false }).expect("model");
    let config = EngineConfig {
        max_batch: 4,
        ctx: 256,
        max_queue: 8,
        max_step_tokens: 16,
    };
    EngineHandle::start(model, tokenizer(), config).expect("engine")
}

/// Text, tokens and finish reason of a one-choice request.
fn run(h: &EngineHandle, req: Request) -> (String, Vec<u32>, FinishReason) {
    let mut rx = h.submit(req).expect("submit");
    let (mut text, mut tokens) = (String::new(), Vec::new());
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(Event::Token(t))) => {
                text.push_str(&t.text);
                tokens.push(t.token);
            }
            Ok(Some(Event::Done(d))) => {
                text.push_str(&d.text);
                return (text, tokens, d.finish_reason);
            }
            Ok(Some(Event::Error(e))) => panic!("engine error: {e}"),
            Ok(None) | Err(_) => panic!("no end"),
        }
    }
}

fn request(c: &Constrainer, spec: Option<GrammarSpec>, seed: u64) -> Request {
    let mut r = Request::new(vec![1, 2, 3, 4, 5], 60);
    r.sampling = SamplingParams {
        temperature: 1.0,
        seed: Some(seed),
        ..SamplingParams::default()
    };
    r.constraint = spec.map(|s| c.compile(s).expect("compiles"));
    r
}

#[test]
fn constrained_outputs_match_their_grammar_and_leave_neighbours_unchanged() {
    let c = constrainer();
    let h = engine();
    let schema = json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 999},
            "ok": {"type": "boolean"},
        },
        "required": ["n", "ok"],
        "additionalProperties": false,
    });
    let mut free = request(&c, None, 9);
    free.ignore_eos = true;
    free.max_tokens = 40;
    let alone = run(&h, free.clone());
    let digits = regex_request(&c, 1);
    let json_req = request(&c, Some(GrammarSpec::JsonSchema(schema)), 2);
    // Submitted together: one batch of three rows.
    let rxs: Vec<_> = [free.clone(), digits, json_req]
        .into_iter()
        .map(|r| {
            std::thread::spawn({
                let h = h.clone();
                move || run(&h, r)
            })
        })
        .collect();
    let outs: Vec<_> = rxs.into_iter().map(|t| t.join().expect("thread")).collect();
    assert_eq!(outs[0], alone, "the unconstrained row changed");
    let (text, _, finish) = &outs[1];
    assert_eq!(finish, &FinishReason::Stop);
    let (num, word) = text.split_once('-').expect("a dash");
    assert!(
        num.len() == 3 && num.bytes().all(|b| b.is_ascii_digit()),
        "{text:?}"
    );
    assert!(
        word.len() == 2 && word.bytes().all(|b| b.is_ascii_lowercase()),
        "{text:?}"
    );
    let (text, _, finish) = &outs[2];
    assert_eq!(finish, &FinishReason::Stop, "{text:?}");
    let v: Value = serde_json::from_str(text).expect("valid JSON");
    let o = v.as_object().expect("an object");
    let n = o["n"].as_i64().expect("an integer");
    assert!(
        (0..=999).contains(&n) && o["ok"].is_boolean() && o.len() == 2,
        "{text}"
    );
    // Unconstrained, the same seeds give text of another shape.
    let mut plain = regex_request(&c, 1);
    plain.constraint = None;
    let (text, _, _) = run(&h, plain);
    assert!(
        !text.bytes().take(3).all(|b| b.is_ascii_digit()),
        "{text:?}"
    );
    h.shutdown();
}

fn regex_request(c: &Constrainer, seed: u64) -> Request {
    request(
        c,
        Some(GrammarSpec::Regex("[0-9]{3}-[a-z]{2}".into())),
        seed,
    )
}

#[test]
fn ignore_eos_is_refused_with_a_constraint() {
    let c = constrainer();
    let h = engine();
    let mut r = regex_request(&c, 1);
    r.ignore_eos = true;
    let Err(e) = h.submit(r) else {
        panic!("accepted");
    };
    assert!(e.to_string().contains("ignore_eos"), "{e}");
    h.shutdown();
}
