use plumb_gguf::GgufFile;
use plumb_model::{Logits, Model};
use plumb_ops::ReferenceBackend;

fn main() {
    let path = std::env::args().nth(1).unwrap();
    let f = GgufFile::open(std::path::Path::new(&path)).unwrap();
    let toks = f.get_array("tokenizer.ggml.tokens").unwrap().to_vec();
    let m = Model::load(&f, ReferenceBackend::default()).unwrap();
    println!("{:?}", m.config);
    let mut cache = m.new_cache(128).unwrap();
    let mut ids = vec![19556u32, 28, 957, 1462, 314];
    let t = std::time::Instant::now();
    let mut logits = m.forward(&ids, &mut cache, Logits::Last).unwrap();
    println!("prefill {:?}", t.elapsed());
    for _ in 0..12 {
        let id = logits
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0 as u32;
        ids.push(id);
        let mut idx: Vec<usize> = (0..logits.len()).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        eprint!(
            "<{} {:.3} | {} {:.3}>",
            toks[idx[0]].as_str().unwrap(),
            logits[idx[0]],
            toks[idx[1]].as_str().unwrap(),
            logits[idx[1]]
        );
        print!(
            "{}",
            toks[id as usize]
                .as_str()
                .unwrap()
                .replace('Ġ', " ")
                .replace('Ċ', "\n")
        );
        let t = std::time::Instant::now();
        logits = m.forward(&[id], &mut cache, Logits::Last).unwrap();
        eprint!("[{:?}]", t.elapsed());
    }
    println!();
}
