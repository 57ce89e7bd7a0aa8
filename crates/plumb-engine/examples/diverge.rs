// Diagnostic: at each position of llama.cpp's greedy continuation, our top token and margin.
use plumb_engine::Session;
use plumb_ops::{CpuBackend, ReferenceBackend};

fn main() {
    let path = plumb_engine::store::resolve_model(None, &mut |_| {}).unwrap();
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("fixtures/smollm2-135m-instruct-q4_1/greedy.json").unwrap(),
    )
    .unwrap();
    let which: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let cpu = std::env::args().nth(2).is_some();
    let case = &cases[which];
    let prompt = case["prompt"].as_str().unwrap();
    let want = case["greedy_text_24"].as_str().unwrap();
    macro_rules! go {
        ($b:expr) => {{
            let mut s = Session::load(&path, $b, 512).unwrap();
            let p = s.encode(prompt).unwrap();
            let full = s
                .tokenizer
                .encode(&format!("{prompt}{want}"), false, true)
                .unwrap();
            println!(
                "prompt ids {:?}\nfull prefix same: {}",
                p,
                full[..p.len()] == p[..]
            );
            let logits = s.logits_all(&full).unwrap();
            let v = s.model.config.vocab_size;
            for pos in p.len() - 1..full.len() - 1 {
                let row = &logits[pos * v..(pos + 1) * v];
                let top = plumb_engine::sampler::argmax(row) as usize;
                let exp = full[pos + 1] as usize;
                println!(
                    "{pos}: want {:?} {:.3}  top {:?} {:.3}",
                    s.tokenizer.decode(&[exp as u32]),
                    row[exp],
                    s.tokenizer.decode(&[top as u32]),
                    row[top]
                );
            }
        }};
    }
    if cpu {
        go!(CpuBackend::new())
    } else {
        go!(ReferenceBackend::default())
    }
}
