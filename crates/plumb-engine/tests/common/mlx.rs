//! What the tests against an mlx-lm record share (mlx_record.rs, gemma_hf.rs): the record's
//! tensor digest of a directory, a session over a directory with its GGUF's tokenizer, and
//! mlx-lm's greedy tokens fed back (teacher forcing) with both engines' near-ties.

use std::path::Path;

use plumb_engine::Session;
use plumb_model::formats::safetensors::Safetensors;
use plumb_model::{Checkpoint, Model};
use sha2::{Digest, Sha256};

use super::TeacherForced;

/// The digest of scripts/make_mlx_fixture.py's `tensor_digest`: sha256 over the tensors in
/// name order of `name\0DTYPE\0d0,d1\0` and the raw bytes.
pub fn tensor_digest(dir: &Path) -> String {
    let st = Safetensors::open_dir(dir).unwrap();
    let mut h = Sha256::new();
    for (name, t) in st.iter() {
        let shape: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        h.update(format!("{name}\0{:?}\0{}\0", t.dtype, shape.join(",")).as_bytes());
        h.update(t.data.as_slice());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A session over a directory, with the GGUF's tokenizer (the directories plumb writes from
/// a GGUF for these records carry weights and config only).
pub fn session<B: plumb_ops::Backend>(
    gguf: &Path,
    dir: &Path,
    backend: B,
    ctx: usize,
) -> Session<B> {
    let (tok, tmpl) = plumb_engine::text_side(&Checkpoint::open(gguf).unwrap()).unwrap();
    let model = Model::load_checkpoint(&Checkpoint::open(dir).unwrap(), backend).unwrap();
    Session::from_parts(model, tok, tmpl, ctx).unwrap()
}

/// mlx-lm's logit of `id` at a step, if `id` is among its top five.
fn mlx_logit(step: &serde_json::Value, id: usize) -> Option<f32> {
    let ids = step["ids"].as_array()?;
    let at = ids.iter().position(|v| v.as_u64() == Some(id as u64))?;
    Some(step["logits"][at].as_f64()? as f32)
}

/// Each of the record's `greedy` cases (prompt ids, mlx-lm's 24 greedy ids, its top five per
/// step) fed back through `s`. Where the engines pick differently, the gap counts from both
/// sides: mlx-lm's token below our top in our logits, and our top below mlx-lm's pick in its
/// logits (∞ when ours is not among its top five).
pub fn teacher_forced<B: plumb_ops::Backend>(
    s: &mut Session<B>,
    name: &str,
    model: &serde_json::Value,
) -> TeacherForced {
    let vocab = s.model.config.vocab_size;
    let mut r = TeacherForced {
        positions: 0,
        agree: 0,
        worst: 0.0,
        report: String::new(),
    };
    for case in model["greedy"].as_array().unwrap() {
        let ids = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let (prompt, theirs) = (ids("prompt_token_ids"), ids("greedy_ids_24"));
        let full: Vec<u32> = prompt.iter().chain(&theirs).copied().collect();
        let logits = s.logits_all(&full).unwrap();
        for (k, &expected) in theirs.iter().enumerate() {
            let pos = prompt.len() - 1 + k;
            let row = &logits[pos * vocab..(pos + 1) * vocab];
            let top = plumb_engine::sampler::argmax(row) as usize;
            let gap = row[top] - row[expected as usize];
            r.positions += 1;
            if gap == 0.0 {
                r.agree += 1;
                continue;
            }
            let step = &case["top5"][k];
            let their_gap = match mlx_logit(step, top) {
                Some(l) => step["logits"][0].as_f64().unwrap() as f32 - l,
                None => f32::INFINITY,
            };
            r.report.push_str(&format!(
                "{name} +{k}: mlx-lm {expected}, ours {top}: {gap:.3} below ours in our logits, \
                 ours {their_gap:.3} below in mlx-lm's\n"
            ));
            r.worst = r.worst.max(gap).max(their_gap);
        }
        s.reset();
    }
    r
}
