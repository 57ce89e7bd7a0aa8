//! Tests that need an NVIDIA GPU are `#[ignore]`d: CI has none. On a GPU machine run
//! `cargo test --release -p plumb-cuda --test gpu -- --ignored`. The first test runs
//! everywhere: without a driver, opening a GPU is an error, never a panic.

use plumb_core::{GgmlType, HostWeight};
use plumb_cuda::{CudaBackend, CudaError};
use plumb_ops::check::{self, CheckOptions, Status};
use plumb_ops::Backend;

const NEEDS_GPU: &str = "needs an NVIDIA GPU; run with --ignored on a GPU machine";

#[test]
fn opening_a_gpu_never_panics() {
    match CudaBackend::new(0) {
        Ok(b) => assert!(b.info().sm_count > 0),
        Err(e) => assert!(
            matches!(e, CudaError::NoDriver | CudaError::NoDevice(_)),
            "unexpected error: {e}"
        ),
    }
    match CudaBackend::new(4096) {
        Ok(_) => panic!("GPU 4096 cannot exist"),
        Err(CudaError::NoDriver) => {
            let msg = CudaError::NoDriver.to_string();
            assert!(msg.contains("no CUDA driver found (libcuda.so)"), "{msg}");
        }
        Err(e) => assert!(
            matches!(e, CudaError::BadOrdinal { .. } | CudaError::NoDevice(_)),
            "{e}"
        ),
    }
}

fn gpu() -> CudaBackend {
    CudaBackend::new(0).unwrap_or_else(|e| panic!("{NEEDS_GPU}: {e}"))
}

/// Every case of `opts` on `b` passes (none fails, none is skipped).
fn assert_all_pass(b: &CudaBackend, opts: &CheckOptions, what: &str) {
    let results = check::run(b, opts, &mut |_| {});
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.status != Status::Pass)
        .map(|r| format!("{} {} {}: {}", r.op, r.dtype, r.shape, r.detail))
        .collect();
    assert!(!results.is_empty(), "{what}: no case ran");
    assert!(bad.is_empty(), "{what}:\n{}", bad.join("\n"));
}

/// The defaults on every op, then every registered variant of every family on its check ops
/// (the same walk as `plumb check --device cuda`).
#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn check_harness_passes_for_every_registered_variant() {
    let b = gpu();
    let opts = CheckOptions {
        op: None,
        seed: 11,
        quick: true,
    };
    assert_all_pass(&b, &opts, "defaults");
    for f in plumb_cuda::FAMILIES {
        let default = b.variant(f.name).unwrap();
        for v in f.variant_names() {
            if b.set_variant(f.name, v).is_err() {
                assert_eq!(
                    (f.name, v),
                    ("prefill", "cublas"),
                    "only cuBLAS may be absent"
                );
                continue;
            }
            for op in f.checks {
                let only = CheckOptions {
                    op: Some(op.to_string()),
                    ..opts.clone()
                };
                assert_all_pass(&b, &only, &format!("{}={v}", f.name));
            }
        }
        b.set_variant(f.name, default).unwrap();
    }
}

/// Every planted fault fails on the GPU backend too (outputs read back from the device).
#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn the_self_test_catches_every_planted_fault_on_the_gpu() {
    let b = gpu();
    let rows = check::self_test(&b, 13);
    let missed: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{} in {}: {:?}", r.fault.name(), r.op, r))
        .collect();
    assert!(missed.is_empty(), "{}", missed.join("\n"));
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn argmax_takes_the_first_maximum_and_ignores_nan() {
    let b = gpu();
    let mut x = vec![f32::NEG_INFINITY; 70001];
    assert_eq!(b.argmax(&b.upload(&x).unwrap(), x.len()).unwrap(), 0);
    x[5] = f32::NAN;
    x[60000] = 3.0;
    x[1234] = 3.0;
    x[69999] = 2.0;
    assert_eq!(b.argmax(&b.upload(&x).unwrap(), x.len()).unwrap(), 1234);
    // Only the first `len` values count.
    assert_eq!(b.argmax(&b.upload(&x).unwrap(), 1000).unwrap(), 0);
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn copies_errors_and_variants() {
    let b = gpu();
    let src = b.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut dst = b.alloc(6).unwrap();
    b.copy(&src, 1, &mut dst, 4, 2).unwrap();
    let mut host = [0f32; 6];
    b.download(&dst, &mut host).unwrap();
    assert_eq!(host, [0.0, 0.0, 0.0, 0.0, 2.0, 3.0]);
    assert!(b.copy(&src, 3, &mut dst, 0, 2).is_err());

    let table = HostWeight::from_f32("t", 2, 3, &[0.0; 6]).unwrap();
    let w = b.upload_weight(&table).unwrap();
    let mut out = b.alloc(3).unwrap();
    let err = b.embedding(&w, &[2], &mut out).unwrap_err().to_string();
    assert!(err.contains("token id 2"), "{err}");

    assert!(b.set_variant("matvec", "nope").is_err());
    assert!(b.set_variant("nope", "tiled").is_err());
    // Each family starts on its registered default (prefill falls back to tiled without
    // cuBLAS).
    for f in plumb_cuda::FAMILIES {
        let v = b.variant(f.name).unwrap();
        assert!(
            v == f.default_variant() || (f.name, v) == ("prefill", "tiled"),
            "{}: {v}",
            f.name
        );
    }
    b.set_variant("matvec", "tiled").unwrap();
    assert_eq!(b.variant("matvec"), Some("tiled"));
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn kernels_come_from_the_disk_cache_the_second_time() {
    let home = std::env::temp_dir().join(format!("plumb-home-{}", std::process::id()));
    std::env::set_var("PLUMB_HOME", &home);
    for round in 0..2 {
        let b = gpu();
        let x = b.upload(&[1.0; 64]).unwrap();
        let mut y = b.alloc(64).unwrap();
        b.swiglu(&x, &x, 64, &mut y).unwrap();
        b.synchronize().unwrap();
        let reports = b.kernel_reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].1, round == 1, "round {round}: {:?}", reports[0]);
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// A small llama with head_dim 64 (the decode kernels' shapes) in `quant`.
fn tiny_model(quant: GgmlType, tag: &str) -> std::path::PathBuf {
    use plumb_model::synth::{write_synthetic, SynthShape};
    let shape = SynthShape {
        name: "tiny",
        arch: "llama",
        n_layers: 3,
        d_model: 256,
        d_ff: 512,
        n_heads: 4,
        n_kv_heads: 2,
        vocab: 1000,
        ctx: 256,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        tied: false,
        qkv_bias: false,
        head_dim: None,
        sliding_window: None,
    };
    let dir = std::env::temp_dir().join(format!("plumb-cuda-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.gguf");
    write_synthetic(&shape, quant, 5, &path, std::sync::Arc::new(|_, _| {})).unwrap();
    path
}

/// Prefill of a prompt, then `steps` greedy decode steps: every step's logits.
fn decode_logits(b: CudaBackend, path: &std::path::Path, steps: usize) -> (Vec<Vec<f32>>, usize) {
    use plumb_gguf::GgufFile;
    use plumb_model::{Logits, Model};
    let file = GgufFile::open(path).unwrap();
    let m = Model::load(&file, b).unwrap();
    let mut cache = m.new_cache(48).unwrap();
    let mut logits = vec![m
        .forward(&[5, 17, 300, 3, 999], &mut cache, Logits::Last)
        .unwrap()];
    for _ in 0..steps {
        let last = logits.last().unwrap();
        let next = (0..last.len()).fold(0, |a, i| if last[i] > last[a] { i } else { a });
        logits.push(m.forward(&[next as u32], &mut cache, Logits::Last).unwrap());
    }
    // decode_argmax (the bench's path) picks what the logits say, step after step.
    let argmax = |v: &Vec<f32>| (0..v.len()).fold(0, |a, i| if v[i] > v[a] { i } else { a });
    let mut c2 = m.new_cache(48).unwrap();
    m.forward(&[5, 17, 300, 3, 999], &mut c2, Logits::Last)
        .unwrap();
    let mut id = argmax(&logits[0]) as u32;
    for (i, l) in logits.iter().enumerate().skip(1).take(4) {
        id = m.decode_argmax(id, &mut c2).unwrap();
        assert_eq!(id as usize, argmax(l), "decode_argmax at step {i}");
    }
    (logits, m.backend.recordings())
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn recorded_decode_steps_equal_plain_ones() {
    for (quant, attention) in [
        (GgmlType::Q4_0, "split_kv"),
        (GgmlType::Q4K, "flash_split"),
        (GgmlType::F16, "split_kv"),
    ] {
        let path = tiny_model(quant, quant.name());
        let recorded = gpu();
        recorded.set_variant("attention", attention).unwrap();
        let plain = gpu();
        plain.set_variant("attention", attention).unwrap();
        plain.set_recording(false).unwrap();
        let (want, none) = decode_logits(plain, &path, 16);
        let (got, kept) = decode_logits(recorded, &path, 16);
        assert_eq!(none, 0);
        assert!(kept >= 1, "{quant}: no step was recorded");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{quant} step {i}: non-finite logits"
            );
            assert!(
                g == w,
                "{quant} step {i}: recorded logits differ from plain ones"
            );
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

/// Three prompts through a paged pool, then `steps` greedy decode passes over all of them
/// (the third leaves after 12 and comes back after 24, so the batch size changes twice):
/// every pass's logits, and how many recordings the backend kept.
fn paged_decode_logits(
    b: CudaBackend,
    path: &std::path::Path,
    steps: usize,
) -> (Vec<Vec<f32>>, usize) {
    use plumb_gguf::GgufFile;
    use plumb_model::{BlockTable, Model, PagedItem, PagedKv};
    let file = GgufFile::open(path).unwrap();
    let m = Model::load(&file, b).unwrap();
    let mut kv = PagedKv::new(&m, 64, 16).unwrap();
    let prompts: [&[u32]; 3] = [&[5, 17, 300, 3, 999], &[8; 14], &[1, 2, 3]];
    let mut tables: Vec<BlockTable> = (0..3)
        .map(|_| BlockTable {
            blocks: Vec::new(),
            len: 0,
        })
        .collect();
    let argmax = |v: &[f32]| (0..v.len()).fold(0, |a, i| if v[i] > v[a] { i } else { a }) as u32;
    let mut next: Vec<u32> = {
        let mut items: Vec<PagedItem<'_>> = prompts
            .iter()
            .zip(tables.iter_mut())
            .map(|(p, table)| PagedItem { tokens: p, table })
            .collect();
        m.forward_paged(&mut kv, &mut items)
            .unwrap()
            .iter()
            .map(|l| argmax(l))
            .collect()
    };
    let mut out = Vec::new();
    for step in 0..steps {
        let live: Vec<usize> = (0..3)
            .filter(|&i| i < 2 || !(12..24).contains(&step))
            .collect();
        let toks: Vec<[u32; 1]> = live.iter().map(|&i| [next[i]]).collect();
        let mut items: Vec<PagedItem<'_>> = Vec::new();
        for (t, table) in tables
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| live.contains(i))
            .map(|(_, table)| table)
            .enumerate()
        {
            items.push(PagedItem {
                tokens: &toks[t],
                table,
            });
        }
        let logits = m.forward_paged(&mut kv, &mut items).unwrap();
        for (&i, l) in live.iter().zip(&logits) {
            next[i] = argmax(l);
        }
        out.extend(logits);
    }
    (out, m.backend.recordings())
}

#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn recorded_paged_decode_passes_equal_plain_ones() {
    for quant in [GgmlType::Q4_0, GgmlType::Q8_0] {
        let path = tiny_model(quant, &format!("paged-{}", quant.name()));
        let plain = gpu();
        plain.set_recording(false).unwrap();
        let (want, none) = paged_decode_logits(plain, &path, 40);
        let (got, kept) = paged_decode_logits(gpu(), &path, 40);
        assert_eq!(none, 0);
        // Two batch sizes (3 and 2), each recorded once it had warmed up.
        assert!(kept >= 2, "{quant}: {kept} recordings");
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{quant} row {i}: non-finite logits"
            );
            assert!(
                g == w,
                "{quant} row {i}: replayed logits differ from plain ones"
            );
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

/// Head size 256 (Gemma 3) on every attention kernel of both variants, against the reference:
/// one token (attn_decode at G 2 and 4; G 8 falls to the flash kernel) over contexts long
/// enough to split, with and without a sliding window, and prefill chunks (attn_prefill, or
/// the flash kernel with split keys for a few rows over many keys). The check harness's
/// head_dim-256 cases have no one-token row.
#[test]
#[ignore = "needs an NVIDIA GPU; run with --ignored on a GPU machine"]
fn head_dim_256_attention_matches_the_reference() {
    let b = gpu();
    let mut seed = 0x9e37_79b9_u32;
    let mut normals = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                // Sum of 4 uniforms, centered: close enough to a normal for attention inputs.
                (0..4)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        seed as f32 / u32::MAX as f32 - 0.5
                    })
                    .sum::<f32>()
                    * 1.7
            })
            .collect()
    };
    let hd = 256;
    // (n_tokens, pos0, n_heads, n_kv_heads, window)
    let cases = [
        (1, 0, 4, 1, None),
        (1, 700, 4, 1, None),
        (1, 3000, 8, 4, Some(512)),
        (1, 900, 16, 2, None),
        (2, 1500, 4, 1, Some(1024)),
        (64, 0, 4, 1, None),
        (40, 300, 8, 4, Some(128)),
    ];
    for variant in ["split_kv", "flash_split"] {
        b.set_variant("attention", variant).unwrap();
        for (n, pos0, h, kvh, window) in cases {
            let cap = pos0 + n + 5;
            let q = normals(n * h * hd);
            let k = normals(cap * kvh * hd);
            let v = normals(cap * kvh * hd);
            let p = plumb_ops::AttnParams {
                n_tokens: n,
                pos0,
                n_heads: h,
                n_kv_heads: kvh,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                window,
            };
            let mut want = vec![0f32; n * h * hd];
            plumb_ops::ops::attention::reference(&q, &k, &v, p, &mut want).unwrap();
            let mut out = b.upload(&vec![f32::NAN; want.len()]).unwrap();
            let (qb, kb, vb) = (
                b.upload(&q).unwrap(),
                b.upload(&k).unwrap(),
                b.upload(&v).unwrap(),
            );
            b.attention(&qb, &kb, &vb, p, &mut out).unwrap();
            let mut got = vec![0f32; want.len()];
            b.download(&out, &mut got).unwrap();
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .fold(
                    0f32,
                    |a, d| if d.is_nan() { f32::INFINITY } else { a.max(d) },
                );
            assert!(
                worst < 1e-3,
                "{variant}: {n} tok at {pos0}, heads {h}/{kvh}, window {window:?}: max error {worst}"
            );
        }
    }
    b.set_variant("attention", "split_kv").unwrap();
}
