//! CpuBackend's non-matmul ops against the references, at every SIMD level.

use super::tests::{backends, nmse, Rng};
use crate::backend::{AttnParams, Backend, RopeParams, RopeStyle};
use crate::ops;

#[test]
fn rms_norm_and_fused_add() {
    let mut rng = Rng(21);
    for &(rows, dim) in &[
        (1, 1),
        (1, 7),
        (3, 64),
        (5, 576),
        (64, 576),
        (2, 769),
        (128, 1536),
    ] {
        let x = rng
            .vec(rows * dim)
            .iter()
            .map(|v| v * 3.0)
            .collect::<Vec<_>>();
        let y = rng.vec(rows * dim);
        let w = rng.vec(dim);
        let mut want = vec![0f32; rows * dim];
        ops::rms_norm::reference(&x, &w, 1e-5, rows, dim, &mut want).unwrap();
        let mut res_want = x.clone();
        let mut want2 = vec![0f32; rows * dim];
        ops::rms_norm::reference_add(&mut res_want, &y, &w, 1e-6, rows, dim, &mut want2).unwrap();
        for be in backends() {
            let mut out = vec![f32::NAN; rows * dim + 1];
            be.rms_norm(&x, &w, 1e-5, rows, dim, &mut out).unwrap();
            assert!(out[rows * dim].is_nan());
            let e = nmse(&out[..rows * dim], &want);
            assert!(e < 1e-12, "rms_norm {rows}×{dim} {be:?}: {e:e}");
            let mut res = x.clone();
            let mut out = vec![f32::NAN; rows * dim];
            be.add_rms_norm(&mut res, &y, &w, 1e-6, rows, dim, &mut out)
                .unwrap();
            assert!(nmse(&res, &res_want) < 1e-14);
            let e = nmse(&out, &want2);
            assert!(e < 1e-12, "add_rms_norm {rows}×{dim} {be:?}: {e:e}");
        }
    }
    let be = &backends()[0];
    assert!(be
        .rms_norm(
            &vec![0.0; 10],
            &vec![1.0; 5],
            1e-5,
            3,
            5,
            &mut vec![0.0; 15]
        )
        .is_err());
}

#[test]
fn elementwise_ops() {
    let mut rng = Rng(22);
    for len in [1usize, 17, 576, 100_003] {
        let g: Vec<f32> = rng.vec(len).iter().map(|v| v * 20.0).collect();
        let u = rng.vec(len);
        let mut want = vec![0f32; len];
        ops::elementwise::swiglu(&g, &u, len, &mut want).unwrap();
        let mut sum_want = g.clone();
        ops::elementwise::add(&mut sum_want, &u, len).unwrap();
        for be in backends() {
            let mut out = vec![f32::NAN; len + 1];
            be.swiglu(&g, &u, len, &mut out).unwrap();
            assert!(out[len].is_nan());
            let e = nmse(&out[..len], &want);
            assert!(e < 1e-12, "swiglu {len} {be:?}: {e:e}");
            let mut x = g.clone();
            be.add(&mut x, &u, len).unwrap();
            assert_eq!(x, sum_want);
        }
    }
    for &(rows, dim) in &[(1, 1), (3, 17), (64, 576)] {
        let x = rng.vec(rows * dim);
        let b = rng.vec(dim);
        let mut want = x.clone();
        ops::elementwise::add_bias(&mut want, &b, rows, dim).unwrap();
        for be in backends() {
            let mut got = x.clone();
            be.add_bias(&mut got, &b, rows, dim).unwrap();
            assert_eq!(got, want);
        }
    }
    let be = &backends()[0];
    assert!(be
        .swiglu(&vec![0.0; 3], &vec![0.0; 4], 4, &mut vec![0.0; 4])
        .is_err());
    assert!(be.add(&mut vec![0.0; 3], &vec![0.0; 4], 4).is_err());
}

#[test]
fn rope_both_styles() {
    let mut rng = Rng(23);
    let cases = [
        // (style, theta, n_heads, head_dim, n_rot, positions, freq factors)
        (RopeStyle::Normal, 10000.0, 9, 64, 64, vec![0u32], false),
        (
            RopeStyle::Normal,
            10000.0,
            3,
            64,
            64,
            vec![5, 6, 7, 8, 9],
            false,
        ),
        (
            RopeStyle::Neox,
            1_000_000.0,
            4,
            128,
            128,
            (0..64).collect::<Vec<u32>>(),
            false,
        ),
        (
            RopeStyle::Neox,
            500000.0,
            2,
            64,
            32,
            vec![3, 1000, 70_000, 2],
            true,
        ),
        (RopeStyle::Normal, 10000.0, 1, 4, 2, vec![1, 123_456], true),
    ];
    for (style, theta, nh, hd, n_rot, pos, ff) in cases {
        let p = RopeParams {
            style,
            theta,
            n_rot,
        };
        let ffv: Vec<f32> = (0..n_rot / 2).map(|i| 1.0 + i as f32 * 0.25).collect();
        let x: Vec<f32> = rng.vec(pos.len() * nh * hd);
        let mut want = x.clone();
        ops::rope::reference(&mut want, &pos, nh, hd, p, ff.then_some(&ffv[..])).unwrap();
        for be in backends() {
            // Twice: the second call reads the cached table.
            for _ in 0..2 {
                let mut got = x.clone();
                be.rope(&mut got, &pos, nh, hd, p, ff.then_some(&ffv))
                    .unwrap();
                let e = nmse(&got, &want);
                assert!(
                    e < 1e-12,
                    "rope {style:?} {nh}×{hd} rot {n_rot} {be:?}: {e:e}"
                );
            }
        }
    }
    let be = &backends()[0];
    let p = RopeParams {
        style: RopeStyle::Normal,
        theta: 1e4,
        n_rot: 3,
    };
    assert!(be.rope(&mut vec![0.0; 8], &[0], 2, 4, p, None).is_err());
}

fn check_attention(p: AttnParams, seed: u64) {
    let mut rng = Rng(seed);
    let n_kv = p.pos0 + p.n_tokens;
    let kv_dim = p.n_kv_heads * p.head_dim;
    let q: Vec<f32> = rng
        .vec(p.n_tokens * p.n_heads * p.head_dim)
        .iter()
        .map(|v| v * 3.0)
        .collect();
    // A cache larger than needed (capacity), with garbage after the valid positions.
    let k: Vec<f32> = rng
        .vec((n_kv + 3) * kv_dim)
        .iter()
        .map(|v| v * 3.0)
        .collect();
    let v = rng.vec((n_kv + 3) * kv_dim);
    let len = p.n_tokens * p.n_heads * p.head_dim;
    let mut want = vec![0f32; len];
    ops::attention::reference(&q, &k, &v, p, &mut want).unwrap();
    for be in backends() {
        let mut out = vec![f32::NAN; len + 5];
        be.attention(&q, &k, &v, p, &mut out).unwrap();
        assert!(out[len..].iter().all(|x| x.is_nan()));
        let e = nmse(&out[..len], &want);
        assert!(e < 1e-10, "attention {p:?} {be:?}: {e:e}");
    }
}

#[test]
fn attention_shapes() {
    let mut seed = 100;
    for &(n_heads, n_kv_heads) in &[(9, 3), (4, 4), (8, 2), (16, 2), (8, 1)] {
        for &head_dim in &[64, 17, 128] {
            for &(n_tokens, pos0) in &[(1, 0), (2, 0), (5, 3), (17, 0), (64, 0), (1, 7)] {
                let p = AttnParams {
                    n_tokens,
                    pos0,
                    n_heads,
                    n_kv_heads,
                    head_dim,
                    scale: 1.0 / (head_dim as f32).sqrt(),
                    window: None,
                };
                check_attention(p, seed);
                seed += 1;
            }
        }
    }
}

#[test]
fn attention_long_context() {
    for &(n_tokens, pos0) in &[(1, 1000), (3, 1200), (130, 900)] {
        let p = AttnParams {
            n_tokens,
            pos0,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            scale: 0.125,
            window: None,
        };
        check_attention(p, 7 + pos0 as u64);
    }
    let be = &backends()[0];
    let p = AttnParams {
        n_tokens: 1,
        pos0: 9,
        n_heads: 4,
        n_kv_heads: 3,
        head_dim: 8,
        scale: 1.0,
        window: None,
    };
    assert!(be
        .attention(
            &vec![0.0; 32],
            &vec![0.0; 240],
            &vec![0.0; 240],
            p,
            &mut vec![0.0; 32]
        )
        .is_err());
    let p = AttnParams { n_heads: 3, ..p };
    assert!(be
        .attention(
            &vec![0.0; 24],
            &vec![0.0; 200],
            &vec![0.0; 240],
            p,
            &mut vec![0.0; 24]
        )
        .is_err());
}

#[test]
fn memory_ops() {
    let be = &backends()[0];
    let a = be.upload(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    let mut b = be.alloc(6).unwrap();
    assert_eq!(b, vec![0.0; 6]);
    be.copy(&a, 1, &mut b, 3, 3).unwrap();
    assert_eq!(b, vec![0.0, 0.0, 0.0, 2.0, 3.0, 4.0]);
    assert!(be.copy(&a, 2, &mut b, 0, 3).is_err());
    assert!(be.copy(&a, 0, &mut b, 4, 3).is_err());
    assert!(be.copy(&a, usize::MAX, &mut b, 0, 2).is_err());
    let mut out = [0f32; 2];
    be.download(&b, &mut out).unwrap();
    assert!(be.download(&a, &mut [0f32; 5]).is_err());
    assert_eq!(be.name(), "cpu");
}

#[test]
fn argmax_matches_the_default() {
    let mut rng = Rng(31);
    let mut cases: Vec<Vec<f32>> = vec![
        vec![f32::NAN, f32::NEG_INFINITY, 1.0],
        vec![f32::NEG_INFINITY; 5],
        vec![f32::NAN; 3],
        vec![2.0, 5.0, 5.0, 1.0],
    ];
    for n in [1usize, 17, 49152] {
        cases.push(rng.vec(n));
    }
    let mut tie = rng.vec(1000);
    tie[700] = 3.0;
    tie[300] = 3.0;
    tie[5] = f32::NAN;
    cases.push(tie);
    for x in &cases {
        let want = crate::reference::ReferenceBackend::default()
            .argmax(x, x.len())
            .unwrap();
        for be in backends() {
            assert_eq!(
                be.argmax(x, x.len()).unwrap(),
                want,
                "{be:?} on {} values",
                x.len()
            );
        }
    }
    assert!(backends()[0].argmax(&vec![0.0; 3], 4).is_err());
}
