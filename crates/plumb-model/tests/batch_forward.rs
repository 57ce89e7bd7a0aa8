//! A batched forward gives each sequence the logits it gets alone, and a decode step gives
//! what a prefill of the same tokens gives.

use std::sync::Arc;

use plumb_core::GgmlType;
use plumb_gguf::GgufFile;
use plumb_model::synth::{write_synthetic, SynthShape};
use plumb_model::{BatchItem, Logits, Model};
use plumb_ops::ReferenceBackend;

fn tiny(dir: &std::path::Path) -> std::path::PathBuf {
    let shape = SynthShape {
        name: "tiny",
        arch: "llama",
        n_layers: 2,
        d_model: 64,
        d_ff: 128,
        n_heads: 4,
        n_kv_heads: 2,
        vocab: 300,
        ctx: 256,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        tied: false,
        qkv_bias: false,
    };
    let path = dir.join("tiny.gguf");
    write_synthetic(&shape, GgmlType::Q8_0, 9, &path, Arc::new(|_, _| {})).unwrap();
    path
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn batch_equals_alone_and_decode_equals_prefill() {
    let dir = std::env::temp_dir().join(format!("plumb-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = GgufFile::open(&tiny(&dir)).unwrap();
    let m = Model::load(&file, ReferenceBackend { threads: false }).unwrap();
    let prompts: [&[u32]; 3] = [&[5, 17, 200, 3], &[9], &[42, 42, 7, 1, 299, 8, 77]];

    // Alone: prefill then one decode token each.
    let mut alone = Vec::new();
    for p in prompts {
        let mut c = m.new_cache(32).unwrap();
        m.forward(p, &mut c, Logits::Last).unwrap();
        alone.push(m.forward(&[11], &mut c, Logits::Last).unwrap());
        // Decode equals the last row of a prefill over prompt + token.
        let mut c2 = m.new_cache(32).unwrap();
        let mut all = p.to_vec();
        all.push(11);
        let pre = m.forward(&all, &mut c2, Logits::Last).unwrap();
        assert!(max_diff(&pre, alone.last().unwrap()) < 1e-4);
    }

    // Batched: the prompts as one batch (mixed lengths), then one decode token each as a batch.
    let mut caches: Vec<_> = prompts.iter().map(|_| m.new_cache(32).unwrap()).collect();
    let mut items: Vec<BatchItem<'_, _>> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, c)| BatchItem {
            tokens: p,
            cache: c,
        })
        .collect();
    m.forward_batch(&mut items).unwrap();
    let tok = [11u32];
    let mut items: Vec<BatchItem<'_, _>> = caches
        .iter_mut()
        .map(|c| BatchItem {
            tokens: &tok,
            cache: c,
        })
        .collect();
    let batched = m.forward_batch(&mut items).unwrap();
    for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
        let d = max_diff(a, b);
        assert!(d < 1e-4, "sequence {i}: batched logits differ by {d}");
    }
    for (c, p) in caches.iter().zip(prompts) {
        assert_eq!(c.len, p.len() + 1);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
