//! A SmolLM2-135M-shaped timing run (ignored by default):
//! `cargo test --release -p plumb-ops cpu::bench -- --ignored --nocapture`.

use std::time::Instant;

use plumb_core::GgmlType;

use super::tests::{random_weight, Rng};
use super::{CpuBackend, CpuWeight};
use crate::backend::{AttnParams, Backend, RopeParams, RopeStyle};

struct Layer {
    q: CpuWeight,
    k: CpuWeight,
    v: CpuWeight,
    o: CpuWeight,
    gate: CpuWeight,
    up: CpuWeight,
    down: CpuWeight,
}

const D: usize = 576;
const FF: usize = 1536;
const KV: usize = 192;
const LAYERS: usize = 30;
const VOCAB: usize = 49152;

fn layers(be: &CpuBackend, ty: GgmlType, rng: &mut Rng) -> Vec<Layer> {
    let mut w = |r, c| be.upload_weight(&random_weight(ty, r, c, rng)).unwrap();
    (0..LAYERS)
        .map(|_| Layer {
            q: w(D, D),
            k: w(KV, D),
            v: w(KV, D),
            o: w(D, D),
            gate: w(FF, D),
            up: w(FF, D),
            down: w(D, FF),
        })
        .collect()
}

/// One forward of `n` tokens at position `pos0`; returns µs per op kind.
#[allow(clippy::too_many_arguments)]
fn forward(
    be: &CpuBackend,
    ls: &[Layer],
    head: &CpuWeight,
    n: usize,
    pos0: usize,
    kc: &mut [Vec<f32>],
    vc: &mut [Vec<f32>],
    t: &mut [f64; 6],
) {
    let mut x = vec![0.1f32; n * D];
    let norm = vec![1f32; D];
    let mut h = vec![0f32; n * D];
    let (mut q, mut k, mut v) = (vec![0f32; n * D], vec![0f32; n * KV], vec![0f32; n * KV]);
    let mut att = vec![0f32; n * D];
    let (mut g, mut u) = (vec![0f32; n * FF], vec![0f32; n * FF]);
    let pos: Vec<u32> = (pos0 as u32..(pos0 + n) as u32).collect();
    let rp = RopeParams {
        style: RopeStyle::Normal,
        theta: 100000.0,
        n_rot: 64,
    };
    let mut clock = Instant::now();
    let mut lap = |i: usize, t: &mut [f64; 6]| {
        t[i] += clock.elapsed().as_secs_f64() * 1e6;
        clock = Instant::now();
    };
    for (li, l) in ls.iter().enumerate() {
        be.rms_norm(&x, &norm, 1e-5, n, D, &mut h).unwrap();
        lap(0, t);
        be.matmul(&l.q, &h, n, &mut q).unwrap();
        be.matmul(&l.k, &h, n, &mut k).unwrap();
        be.matmul(&l.v, &h, n, &mut v).unwrap();
        lap(1, t);
        be.rope(&mut q, &pos, 9, 64, rp, None).unwrap();
        be.rope(&mut k, &pos, 3, 64, rp, None).unwrap();
        kc[li][pos0 * KV..(pos0 + n) * KV].copy_from_slice(&k);
        vc[li][pos0 * KV..(pos0 + n) * KV].copy_from_slice(&v);
        lap(0, t);
        let p = AttnParams {
            n_tokens: n,
            pos0,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            scale: 0.125,
        };
        be.attention(&q, &kc[li], &vc[li], p, &mut att).unwrap();
        lap(2, t);
        be.matmul(&l.o, &att, n, &mut q).unwrap();
        lap(1, t);
        be.add_rms_norm(&mut x, &q, &norm, 1e-5, n, D, &mut h)
            .unwrap();
        lap(0, t);
        be.matmul(&l.gate, &h, n, &mut g).unwrap();
        be.matmul(&l.up, &h, n, &mut u).unwrap();
        lap(1, t);
        be.swiglu(&g.clone(), &u, n * FF, &mut g).unwrap();
        lap(0, t);
        be.matmul(&l.down, &g, n, &mut q).unwrap();
        lap(1, t);
        be.add(&mut x, &q, n * D).unwrap();
        lap(0, t);
    }
    let last = x[(n - 1) * D..].to_vec();
    be.rms_norm(&last, &norm, 1e-5, 1, D, &mut h).unwrap();
    let mut logits = vec![0f32; VOCAB];
    lap(0, t);
    be.matmul(head, &h, 1, &mut logits).unwrap();
    lap(3, t);
}

#[test]
#[ignore]
fn smollm2_shaped() {
    let be = CpuBackend::new();
    let mut rng = Rng(1);
    let ty = std::env::var("PLUMB_BENCH_TYPE")
        .ok()
        .and_then(|s| GgmlType::parse(&s))
        .unwrap_or(GgmlType::Q4_1);
    let ls = layers(&be, ty, &mut rng);
    let head = be
        .upload_weight(&random_weight(GgmlType::Q8_0, VOCAB, D, &mut rng))
        .unwrap();
    let ctx = 1024;
    let mut kc = vec![vec![0f32; ctx * KV]; LAYERS];
    let mut vc = vec![vec![0f32; ctx * KV]; LAYERS];
    let names = ["small ops", "matmul", "attention", "lm head"];
    for (label, n, reps) in [("prefill 128", 128, 3), ("decode", 1, 64)] {
        let mut t = [0f64; 6];
        let mut total = 0f64;
        forward(&be, &ls, &head, n, 0, &mut kc, &mut vc, &mut [0f64; 6]);
        for r in 0..reps {
            let pos0 = if n == 1 { 128 + r } else { 0 };
            let s = Instant::now();
            forward(&be, &ls, &head, n, pos0, &mut kc, &mut vc, &mut t);
            total += s.elapsed().as_secs_f64();
        }
        let per = total / reps as f64;
        println!(
            "{label} ({ty}, {be:?}): {:.2} ms per call, {:.1} tokens/s",
            per * 1e3,
            n as f64 / per
        );
        for (i, name) in names.iter().enumerate() {
            println!("  {name:10} {:8.1} µs", t[i] / reps as f64);
        }
    }
}

/// Fastest µs of `f` over `reps` runs (after a warm-up): the machine is shared, the
/// minimum is the figure least disturbed by other processes.
fn time_us(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[0]
}

#[test]
#[ignore]
fn op_timings() {
    let mut rng = Rng(2);
    let threads: usize = std::env::var("PLUMB_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for be in super::SimdLevel::available()
        .into_iter()
        .rev()
        .map(|l| CpuBackend::with_threads(threads).with_level(l).unwrap())
    {
        println!("{be:?}");
        // Weights large enough in total (many copies) not to sit in cache: 64 MB of Q4_1.
        for (ty, rows, cols) in [
            (GgmlType::Q4_1, D, D),
            (GgmlType::Q4_1, KV, D),
            (GgmlType::Q4_1, FF, D),
            (GgmlType::Q4_1, D, FF),
            (GgmlType::Q8_0, VOCAB, D),
            (GgmlType::Q4K, FF, 768),
            (GgmlType::Q6K, FF, 768),
            (GgmlType::Q4_0, FF, D),
            (GgmlType::F16, FF, D),
        ] {
            let copies = (64 << 20) / ty.row_bytes(cols).unwrap() / rows;
            let copies = copies.clamp(1, 64);
            let hw = random_weight(ty, rows, cols, &mut rng);
            let ws: Vec<_> = (0..copies)
                .map(|_| be.upload_weight(&hw).unwrap())
                .collect();
            for n in [1usize, 128] {
                if n == 128 && rows == VOCAB {
                    continue;
                }
                let x = rng.vec(n * cols);
                let mut out = vec![0f32; n * rows];
                let mut i = 0;
                let us = time_us(if n == 1 { 200 } else { 10 }, || {
                    be.matmul(&ws[i % copies], &x, n, &mut out).unwrap();
                    i += 1;
                });
                let bytes = hw.data.len() as f64;
                println!(
                    "  matmul {ty} {rows}×{cols} n={n:3}: {us:8.1} µs  {:6.1} GB/s  {:7.1} GMAC/s",
                    bytes / us / 1e3,
                    (n * rows * cols) as f64 / us / 1e3
                );
            }
        }
        for (ty, rows) in [
            (GgmlType::Q4_1, FF),
            (GgmlType::Q8_0, VOCAB),
            (GgmlType::Q6K, FF),
        ] {
            let hw = random_weight(ty, rows, 768, &mut rng);
            let us = time_us(3, || drop(be.upload_weight(&hw).unwrap()));
            let mb = hw.data.len() as f64 / 1e6;
            println!(
                "  upload (repack) {ty} {rows}×768: {us:8.1} µs, {:.0} MB/s",
                mb / us * 1e6
            );
        }
        for cols in [576usize, 1536] {
            let groups = super::layout::groups(super::layout::QFmt::Q4_1, cols / 32);
            let x = rng.vec(128 * cols);
            let mut dst = vec![0u8; groups.2 + 64];
            let us = time_us(20, || {
                for t in 0..128 {
                    super::act::quantize_token(
                        be.level(),
                        &groups.0,
                        &x[t * cols..(t + 1) * cols],
                        &mut dst,
                    );
                }
            });
            println!("  quantize 128×{cols} activations: {us:8.1} µs");
        }
        for (n, pos0) in [(1usize, 127usize), (1, 1023), (128, 0)] {
            let p = AttnParams {
                n_tokens: n,
                pos0,
                n_heads: 9,
                n_kv_heads: 3,
                head_dim: 64,
                scale: 0.125,
            };
            let q = rng.vec(n * D);
            let k = rng.vec((n + pos0) * KV);
            let v = rng.vec((n + pos0) * KV);
            let mut out = vec![0f32; n * D];
            let us = time_us(100, || be.attention(&q, &k, &v, p, &mut out).unwrap());
            println!("  attention n={n} pos0={pos0}: {us:8.1} µs");
        }
        for n in [1usize, 128] {
            let x = rng.vec(n * FF);
            let y = rng.vec(n * FF);
            let w = rng.vec(D);
            let mut out = vec![0f32; n * FF];
            let us = time_us(200, || be.rms_norm(&x, &w, 1e-5, n, D, &mut out).unwrap());
            println!("  rms_norm n={n}: {us:6.2} µs");
            let mut r = x.clone();
            let us = time_us(200, || {
                be.add_rms_norm(&mut r, &y, &w, 1e-5, n, D, &mut out)
                    .unwrap()
            });
            println!("  add_rms_norm n={n}: {us:6.2} µs");
            let us = time_us(200, || be.swiglu(&x, &y, n * FF, &mut out).unwrap());
            println!("  swiglu n={n}: {us:6.2} µs");
            let mut r = x.clone();
            let us = time_us(200, || be.add(&mut r, &y, n * D).unwrap());
            println!("  add n={n}: {us:6.2} µs");
            let pos: Vec<u32> = (100..100 + n as u32).collect();
            let rp = RopeParams {
                style: RopeStyle::Normal,
                theta: 100000.0,
                n_rot: 64,
            };
            let mut r = x.clone();
            let us = time_us(200, || be.rope(&mut r, &pos, 9, 64, rp, None).unwrap());
            println!("  rope q n={n}: {us:6.2} µs");
        }
        let pool = &be.pool;
        let us = time_us(1000, || pool.run(2 * pool.threads(), &|_| {}));
        println!("  empty pool job: {us:6.2} µs");
        // Each thread busy for 2 µs: the excess over 2 µs is the cost of a parallel op.
        let busy = |_| {
            let s = Instant::now();
            while s.elapsed().as_secs_f64() < 2e-6 {}
        };
        let us = time_us(1000, || pool.run(pool.threads(), &busy));
        println!("  pool job of 2 µs per thread: {us:6.2} µs");
    }
}
