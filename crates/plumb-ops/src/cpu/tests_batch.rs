//! Batch invariance: a token's results are bitwise the same whatever else shares the call
//! (how many tokens, its place among them, the thread count), at every SIMD level. A greedy
//! request must give the same tokens alone or in a batch.

use plumb_core::GgmlType;

use super::tests::{activations, random_weight, Rng};
use super::{CpuBackend, SimdLevel};
use crate::backend::{AttnParams, Backend, RopeParams, RopeStyle};

const NS: [usize; 9] = [1, 2, 3, 4, 5, 8, 16, 17, 33];
const THREADS: [usize; 3] = [1, 2, 3];

/// Per level: a backend for each thread count of [`THREADS`].
fn backends() -> Vec<(SimdLevel, Vec<CpuBackend>)> {
    SimdLevel::available()
        .into_iter()
        .map(|l| {
            let bs = THREADS
                .iter()
                .map(|&t| CpuBackend::with_threads(t).with_level(l).unwrap())
                .collect();
            (l, bs)
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn matmul_rows_do_not_depend_on_the_batch() {
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
        GgmlType::Mlx2G128,
        GgmlType::Mlx3G32,
        GgmlType::Mlx4G64,
        GgmlType::Mlx5G32,
        GgmlType::Mlx6G64,
        GgmlType::Mlx8G32,
    ];
    let levels = backends();
    let nmax = *NS.iter().max().unwrap();
    for (i, &ty) in types.iter().enumerate() {
        // 70 rows: not a multiple of the decode kernel's 4 or the chunk alignment of 8, and
        // enough work to split over the threads. Legacy columns have groups of 16, 8, 4, 2
        // and 1 blocks; float columns a tail after the vectors.
        let cols = match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1003,
            t if t.block_size() == 256 => 768,
            // As many whole groups as fit in 31 blocks: 31, 30 (16+8+4+2) or 28 (16+8+4).
            t if t.affine().is_some() => 32 * 31 / t.block_size() * t.block_size(),
            _ => 32 * 31,
        };
        let rows = 70;
        let mut rng = Rng(500 + i as u64);
        let hw = random_weight(ty, rows, cols, &mut rng);
        let x = activations(nmax, cols, &mut rng);
        for (level, bs) in &levels {
            let w = bs[0].upload_weight(&hw).unwrap();
            // Each token alone, on one thread.
            let mut alone = vec![0f32; nmax * rows];
            for t in 0..nmax {
                let mut o = vec![0f32; rows];
                bs[0]
                    .matmul(&w, &x[t * cols..(t + 1) * cols].to_vec(), 1, &mut o)
                    .unwrap();
                alone[t * rows..(t + 1) * rows].copy_from_slice(&o);
            }
            for be in bs {
                for &n in &NS {
                    // Tokens in the batch at different places: the batch is tokens
                    // `s .. s + n` of `x`, so token `s + t` sits at place `t`.
                    for s in [0, nmax - n] {
                        let mut out = vec![0f32; n * rows];
                        be.matmul(&w, &x[s * cols..(s + n) * cols].to_vec(), n, &mut out)
                            .unwrap();
                        for t in 0..n {
                            let want = &alone[(s + t) * rows..(s + t + 1) * rows];
                            let got = &out[t * rows..(t + 1) * rows];
                            assert!(
                                same_bits(got, want),
                                "{ty} {level:?} {} threads: token {t} of {n} differs from \
                                 the token alone (max diff {:e})",
                                be.threads(),
                                got.iter()
                                    .zip(want)
                                    .map(|(a, b)| (a - b).abs())
                                    .fold(0f32, f32::max)
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn row_ops_do_not_depend_on_the_batch() {
    let nmax = *NS.iter().max().unwrap();
    let mut rng = Rng(77);
    for dim in [576, 1003] {
        let x: Vec<f32> = rng.vec(nmax * dim).iter().map(|v| v * 3.0).collect();
        let y = rng.vec(nmax * dim);
        let w = rng.vec(dim);
        let positions: Vec<u32> = (0..nmax as u32).map(|p| 3 * p + 1).collect();
        for (level, bs) in backends() {
            // Every op on token `t` alone (one thread), then on batches.
            type Outs = [Vec<f32>; 5];
            let run = |be: &CpuBackend, x: &[f32], y: &[f32], pos: &[u32]| -> Outs {
                let n = pos.len();
                let mut norm = vec![0f32; n * dim];
                be.rms_norm(&x.to_vec(), &w, 1e-5, n, dim, &mut norm)
                    .unwrap();
                let mut res = x.to_vec();
                let mut norm2 = vec![0f32; n * dim];
                be.add_rms_norm(&mut res, &y.to_vec(), &w, 1e-6, n, dim, &mut norm2)
                    .unwrap();
                let mut sw = vec![0f32; n * dim];
                be.swiglu(&x.to_vec(), &y.to_vec(), n * dim, &mut sw)
                    .unwrap();
                // Rope over heads of `dim / heads`: both styles, part of the head rotated.
                let mut r = x.to_vec();
                let hd = if dim == 576 { 64 } else { 17 };
                let rp = RopeParams {
                    style: if dim == 576 {
                        RopeStyle::Neox
                    } else {
                        RopeStyle::Normal
                    },
                    theta: 1e4,
                    n_rot: hd - hd % 2,
                };
                be.rope(&mut r, pos, dim / hd, hd, rp, None).unwrap();
                r.truncate(n * dim);
                [norm, norm2, res, sw, r]
            };
            let names = ["rms_norm", "add_rms_norm", "residual", "swiglu", "rope"];
            let alone: Vec<Outs> = (0..nmax)
                .map(|t| {
                    let e = t * dim..(t + 1) * dim;
                    run(&bs[0], &x[e.clone()], &y[e], &positions[t..t + 1])
                })
                .collect();
            for be in &bs {
                for &n in &NS {
                    let s = nmax - n;
                    let e = s * dim..(s + n) * dim;
                    let got = run(be, &x[e.clone()], &y[e], &positions[s..s + n]);
                    for t in 0..n {
                        for (k, name) in names.iter().enumerate() {
                            assert!(
                                same_bits(&got[k][t * dim..(t + 1) * dim], &alone[s + t][k]),
                                "{name} dim {dim} {level:?} {} threads: token {t} of {n}",
                                be.threads()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn attention_rows_match_decode() {
    // A prefill of `n` tokens at `pos0` against decoding each of them alone at its position:
    // (SmolLM2's 9/3 heads of 64, a group of 1, a head size without the register path).
    let shapes = [(9, 3, 64), (4, 4, 32), (8, 2, 40), (4, 1, 128)];
    for (seed, &(n_heads, n_kv_heads, hd)) in (900..).zip(&shapes) {
        let nmax = *NS.iter().max().unwrap();
        let pos0 = 70;
        let n_kv = pos0 + nmax;
        let kv_dim = n_kv_heads * hd;
        let mut rng = Rng(seed);
        let q: Vec<f32> = rng
            .vec(nmax * n_heads * hd)
            .iter()
            .map(|v| v * 3.0)
            .collect();
        let k: Vec<f32> = rng.vec(n_kv * kv_dim).iter().map(|v| v * 3.0).collect();
        let v = rng.vec(n_kv * kv_dim);
        let qd = n_heads * hd;
        let params = |n_tokens, pos0| AttnParams {
            n_tokens,
            pos0,
            n_heads,
            n_kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            window: None,
        };
        for (level, bs) in backends() {
            let alone: Vec<Vec<f32>> = (0..nmax)
                .map(|t| {
                    let mut o = vec![0f32; qd];
                    let qt = q[t * qd..(t + 1) * qd].to_vec();
                    bs[0]
                        .attention(&qt, &k, &v, params(1, pos0 + t), &mut o)
                        .unwrap();
                    o
                })
                .collect();
            for be in &bs {
                for &n in &NS {
                    let s = nmax - n;
                    let mut out = vec![0f32; n * qd];
                    let qs = q[s * qd..(s + n) * qd].to_vec();
                    be.attention(&qs, &k, &v, params(n, pos0 + s), &mut out)
                        .unwrap();
                    for t in 0..n {
                        assert!(
                            same_bits(&out[t * qd..(t + 1) * qd], &alone[s + t]),
                            "attention {n_heads}/{n_kv_heads}×{hd} {level:?} {} threads: \
                             token {t} of {n}",
                            be.threads()
                        );
                    }
                }
            }
        }
    }
}
