//! The default model (SmolLM2-135M-Instruct Q4_1, fetched through the model store as the CLI
//! does) generating on wgpu and on the CPU backend: the greedy tokens are the same up to the
//! first position where they differ, and there the two tokens are a near-tie in the CPU's own
//! logits. Both backends meet the model's quantized weights with 8-bit activations, but their
//! roundings differ (block sums, summation order), so a near-tie may resolve either way; a
//! divergence anywhere else fails. On CI the adapter is lavapipe (scripts/test).

use plumb_engine::{FinishReason, GenerateParams, SamplingParams, Session};
use plumb_wgpu::WgpuBackend;

/// Logits closer than this to the top one are a near-tie (as in plumb-engine's real-model
/// tests against llama.cpp).
const NEAR_TIE: f32 = 0.4;
/// Tokens generated per prompt: lavapipe decodes this model at well under a token a second.
const TOKENS: usize = 16;

fn prompts() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/smollm2-135m-instruct-q4_1/greedy.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("fixture JSON");
    let cases = v.as_array().expect("a list of prompts");
    cases
        .iter()
        .map(|c| c["prompt"].as_str().expect("a prompt").to_string())
        .collect()
}

/// The greedy continuation of `ids`, with EOS as its last token when generation stopped there.
fn greedy<B: plumb_ops::Backend>(s: &mut Session<B>, ids: &[u32]) -> Vec<u32> {
    let params = GenerateParams {
        max_tokens: TOKENS,
        sampling: SamplingParams::greedy(),
        ..Default::default()
    };
    let g = s.generate(ids, &params, &mut |_| true).expect("generating");
    let mut out = g.token_ids;
    if g.finish_reason == FinishReason::Stop {
        out.push(s.tokenizer.eos().expect("the model has an EOS token"));
    }
    out
}

#[test]
fn greedy_tokens_match_the_cpu_backend_up_to_near_ties() {
    let path = plumb_engine::store::resolve_model(None, &mut |m| eprintln!("{m}"))
        .expect("fetching the default model");
    let mut cpu = Session::load(&path, plumb_ops::CpuBackend::new(), 256).unwrap();
    let gpu = WgpuBackend::new(0).expect("a wgpu adapter (scripts/test sets up lavapipe)");
    let mut gpu = Session::load(&path, gpu, 256).unwrap();
    let vocab = cpu.model.config.vocab_size;
    let (mut agreed, mut total, mut full) = (0, 0, 0);
    let mut report = String::new();
    let mut failures = String::new();
    for prompt in prompts() {
        let ids = cpu.encode(&prompt).unwrap();
        let theirs = greedy(&mut cpu, &ids);
        let before = gpu.model.backend.submissions();
        let ours = greedy(&mut gpu, &ids);
        let submissions = gpu.model.backend.submissions() - before;
        // One submission per decode step (its argmax-free logits read included) and the
        // prefill's: a forward that fell back to one submission per op would make hundreds.
        assert!(
            submissions <= 2 * (ours.len() as u64 + 1),
            "{prompt:?}: {submissions} submissions for {} tokens",
            ours.len()
        );
        let k = (0..theirs.len().max(ours.len())).find(|&i| theirs.get(i) != ours.get(i));
        total += theirs.len();
        let Some(k) = k else {
            agreed += theirs.len();
            full += 1;
            continue;
        };
        agreed += k;
        let (Some(&t), Some(&o)) = (theirs.get(k), ours.get(k)) else {
            failures.push_str(&format!("{prompt:?}: one backend stopped at +{k}\n"));
            continue;
        };
        let prefix = [&ids[..], &theirs[..k]].concat();
        let logits = cpu.logits_all(&prefix).unwrap();
        let row = &logits[(prefix.len() - 1) * vocab..];
        let top = plumb_engine::sampler::argmax(row) as usize;
        let gap = row[top] - row[o as usize];
        let line = format!(
            "{prompt:?} +{k}: cpu {:?}, wgpu {:?}, gap {gap:.3} in the CPU's logits\n",
            cpu.tokenizer.decode(&[t]),
            cpu.tokenizer.decode(&[o]),
        );
        report.push_str(&line);
        if gap >= NEAR_TIE {
            failures.push_str(&line);
        }
    }
    eprintln!("wgpu vs cpu: {full}/8 prompts agree on every token, {agreed}/{total} tokens before the first divergence\n{report}");
    assert!(
        failures.is_empty(),
        "divergences away from a near-tie:\n{failures}"
    );
}
