//! What the real-model tests share: fetching a model once per test binary, reading a fixture,
//! and feeding llama.cpp's greedy continuations back (teacher forcing).

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plumb_engine::Session;
use plumb_ops::Backend;

pub mod mlx;

/// The model a name resolves to (`None`: the default model), fetched on first use as the CLI
/// does; one fetch per test binary, even with tests running in parallel.
pub fn fetched(name: Option<&str>) -> PathBuf {
    static FETCHED: Mutex<Vec<(Option<String>, PathBuf)>> = Mutex::new(Vec::new());
    let mut done = FETCHED.lock().unwrap_or_else(|e| e.into_inner());
    let key = name.map(str::to_string);
    if let Some((_, p)) = done.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let p = plumb_engine::store::resolve_model(name.map(Path::new), &mut |m| eprintln!("{m}"))
        .unwrap_or_else(|e| panic!("fetching {}: {e}", name.unwrap_or("the default model")));
    done.push((key, p.clone()));
    p
}

/// A JSON fixture.
pub fn json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// How a model's logits followed another engine's greedy tokens.
pub struct TeacherForced {
    pub positions: usize,
    /// Positions where the other engine's token is our top token.
    pub agree: usize,
    /// The largest gap between our top logit and the other engine's token's.
    pub worst: f32,
    /// One line per position that disagrees.
    pub report: String,
}

impl TeacherForced {
    /// Every token of the other engine is our top token or within `near_tie` of it, and at
    /// least 95% are exactly our top token.
    pub fn assert_agrees(&self, near_tie: f32) {
        let (agree, positions, worst, report) =
            (self.agree, self.positions, self.worst, &self.report);
        eprintln!("{agree}/{positions} positions agree; worst gap {worst:.3}\n{report}");
        assert!(
            worst < near_tie,
            "the other engine's token is {worst:.3} logits below the top\n{report}"
        );
        assert!(
            agree * 100 >= positions * 95,
            "only {agree}/{positions} positions agree\n{report}"
        );
    }
}

/// Each case of a `greedy.json` (its prompt, the prompt's ids, `greedy_text_24`): the prompt
/// must tokenize to the fixture's ids and the prompt and continuation re-tokenize across the
/// prompt; then every position of the continuation is scored against our logits.
pub fn teacher_forced<B: Backend>(s: &mut Session<B>, cases: &serde_json::Value) -> TeacherForced {
    let cases = cases.as_array().expect("greedy.json is a list");
    assert_eq!(cases.len(), 8);
    let vocab = s.model.config.vocab_size;
    let mut r = TeacherForced {
        positions: 0,
        agree: 0,
        worst: 0.0,
        report: String::new(),
    };
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want_ids: Vec<u32> = case["prompt_token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = s.encode(prompt).unwrap();
        assert_eq!(ids, want_ids, "prompt ids of {prompt:?}");
        let want = case["greedy_text_24"].as_str().unwrap();
        let full = s.encode(&format!("{prompt}{want}")).unwrap();
        assert_eq!(
            &full[..ids.len()],
            &ids[..],
            "{prompt:?}: the continuation re-tokenizes across the prompt"
        );
        let logits = s.logits_all(&full).unwrap();
        for pos in ids.len() - 1..full.len() - 1 {
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            let top = plumb_engine::sampler::argmax(row) as usize;
            let expected = full[pos + 1] as usize;
            let gap = row[top] - row[expected];
            r.positions += 1;
            if gap == 0.0 {
                r.agree += 1;
            } else {
                r.report.push_str(&format!(
                    "{prompt:?} +{}: llama.cpp {:?}, ours {:?}, gap {gap:.3}\n",
                    pos + 1 - ids.len(),
                    s.tokenizer.decode(&[expected as u32]),
                    s.tokenizer.decode(&[top as u32])
                ));
            }
            r.worst = r.worst.max(gap);
        }
    }
    r
}
