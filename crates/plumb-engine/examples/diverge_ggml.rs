//! Greedy continuations of `GgmlBackend` in any of its configurations against llama.cpp's
//! (`fixtures/smollm2-135m-instruct-q4_1/greedy.json`), and at each position of llama.cpp's
//! continuation fed back (teacher forcing) the margin of llama.cpp's token over the best other
//! token, printed when below 0.2: which near-ties a configuration resolves differently.
//!
//! `cargo run --release -p plumb-engine --example diverge_ggml -- [flash|softmax]
//! [contract|plain] [avx512|avx2] [case index]`
use plumb_engine::{GenerateParams, SamplingParams, Session};
use plumb_ops::GgmlBackend;

fn main() {
    let path = plumb_engine::store::resolve_model(None, &mut |_| {}).unwrap();
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/smollm2-135m-instruct-q4_1/greedy.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let args: Vec<String> = std::env::args().collect();
    let b = GgmlBackend {
        flash: args.get(1).is_none_or(|a| a != "softmax"),
        contract: args.get(2).is_none_or(|a| a != "plain"),
        avx512: args.get(3).is_none_or(|a| a != "avx2"),
        ..GgmlBackend::default()
    };
    let only: Option<usize> = args.get(4).and_then(|a| a.parse().ok());
    println!(
        "flash {} contract {} avx512 {}",
        b.flash, b.contract, b.avx512
    );
    let mut s = Session::load(&path, b, 512).unwrap();
    let (mut first8, mut all24) = (0, 0);
    for (ci, case) in cases.as_array().unwrap().iter().enumerate() {
        if only.is_some_and(|o| o != ci) {
            continue;
        }
        let prompt = case["prompt"].as_str().unwrap();
        let want = case["greedy_text_24"].as_str().unwrap();
        let ids = s.encode(prompt).unwrap();
        let full = s
            .tokenizer
            .encode(&format!("{prompt}{want}"), false, true)
            .unwrap();
        let params = GenerateParams {
            max_tokens: 24,
            sampling: SamplingParams::greedy(),
            ..Default::default()
        };
        let g = s.generate(&ids, &params, &mut |_| true).unwrap();
        let want_gen = &full[ids.len()..];
        let agree = g
            .token_ids
            .iter()
            .zip(want_gen)
            .take_while(|(a, b)| a == b)
            .count();
        if agree >= 8.min(want_gen.len()) {
            first8 += 1;
        }
        if g.text == want {
            all24 += 1;
        }
        println!(
            "#{ci} {prompt:?}: {agree} agree, text equal {}",
            g.text == want
        );
        if g.text != want {
            println!("   ours {:?}\n   want {:?}", g.text, want);
            println!("   ours ids {:?}\n   want ids {:?}", g.token_ids, want_gen);
        }
        // Teacher-forced margins along llama.cpp's continuation.
        let logits = s.logits_all(&full).unwrap();
        let v = s.model.config.vocab_size;
        let mut worst = String::new();
        for pos in ids.len() - 1..full.len() - 1 {
            let row = &logits[pos * v..(pos + 1) * v];
            let exp = full[pos + 1] as usize;
            let mut best_other = f32::NEG_INFINITY;
            let mut other = 0;
            for (i, &x) in row.iter().enumerate() {
                if i != exp && x > best_other {
                    best_other = x;
                    other = i;
                }
            }
            let margin = row[exp] - best_other;
            if margin < 0.2 {
                let mut idx: Vec<usize> = (0..v).collect();
                idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                let top: Vec<String> = idx[..4]
                    .iter()
                    .map(|&i| format!("{}{:?} {:.3}", i, s.tokenizer.decode(&[i as u32]), row[i]))
                    .collect();
                worst.push_str(&format!(
                    "   +{}: want {:?} vs {:?} margin {margin:.4}  top {}\n",
                    pos + 1 - ids.len(),
                    s.tokenizer.decode(&[exp as u32]),
                    s.tokenizer.decode(&[other as u32]),
                    top.join(", ")
                ));
            }
        }
        print!("{worst}");
    }
    println!("first8 {first8}/8, all24 {all24}/8");
}
