//! The references against analytic oracles: answers known without running any implementation.

use plumb_core::HostWeight;
use plumb_ops::ops;
use plumb_ops::{AttnParams, RopeParams, RopeStyle};

#[test]
fn attention_with_unit_values_returns_ones_and_single_key_copies_v() {
    let p = AttnParams {
        n_tokens: 3,
        pos0: 2,
        n_heads: 6,
        n_kv_heads: 2,
        head_dim: 4,
        scale: 0.5,
        window: None,
    };
    let kv = 5 * 2 * 4;
    let q: Vec<f32> = (0..3 * 6 * 4).map(|i| (i as f32 * 0.37).sin()).collect();
    let k: Vec<f32> = (0..kv).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut out = vec![f32::NAN; 3 * 6 * 4];
    ops::attention::reference(&q, &k, &vec![1.0; kv], p, &mut out).unwrap();
    assert!(out.iter().all(|v| (v - 1.0).abs() < 1e-6));
    // The first position attends only to itself: output = v[0] of its KV head.
    let p1 = AttnParams {
        n_tokens: 1,
        pos0: 0,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 2,
        scale: 1.0,
        window: None,
    };
    let mut o = vec![0f32; 4];
    ops::attention::reference(
        &[1.0, 2.0, 3.0, 4.0],
        &[9.0, 9.0],
        &[0.25, -7.0],
        p1,
        &mut o,
    )
    .unwrap();
    assert_eq!(o, vec![0.25, -7.0, 0.25, -7.0]);
}

#[test]
fn attention_over_two_keys_is_the_hand_computed_softmax() {
    // q·k0 = 0, q·k1 = ln 3 → weights 1/4, 3/4 → out = 0.25·v0 + 0.75·v1.
    let l3 = 3f32.ln();
    let p = AttnParams {
        n_tokens: 1,
        pos0: 1,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 1,
        scale: 1.0,
        window: None,
    };
    let mut o = [0f32];
    ops::attention::reference(&[1.0], &[0.0, l3], &[4.0, 8.0], p, &mut o).unwrap();
    assert!((o[0] - 7.0).abs() < 1e-5, "{}", o[0]);
}

#[test]
fn rope_worked_example_and_norm_preservation() {
    // Normal style, head_dim 4, base 10000, position 1: pair 0 turns by 1 rad, pair 1 by 0.01 rad.
    let p = RopeParams {
        style: RopeStyle::Normal,
        theta: 10000.0,
        n_rot: 4,
    };
    let mut x = vec![1.0, 0.0, 1.0, 0.0];
    ops::rope::reference(&mut x, &[1], 1, 4, p, None).unwrap();
    let want = [1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin()];
    for (a, b) in x.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{x:?}");
    }
    // NeoX pairs x[i] with x[i + 2]; position 0 is the identity.
    let p = RopeParams {
        style: RopeStyle::Neox,
        theta: 10000.0,
        n_rot: 4,
    };
    let mut y = vec![0.5, -1.0, 2.0, 3.0];
    ops::rope::reference(&mut y, &[0], 1, 4, p, None).unwrap();
    assert_eq!(y, vec![0.5, -1.0, 2.0, 3.0]);
    let mut z = vec![1.0, 0.0, 0.0, 0.0];
    ops::rope::reference(&mut z, &[1], 1, 4, p, None).unwrap();
    assert!((z[0] - 1f32.cos()).abs() < 1e-6 && (z[2] - 1f32.sin()).abs() < 1e-6 && z[1] == 0.0);
}

#[test]
fn rms_norm_of_a_constant_row_is_the_weight() {
    let mut out = vec![0f32; 4];
    ops::rms_norm::reference(&[3.0; 4], &[1.0, 2.0, 3.0, 4.0], 0.0, 1, 4, &mut out).unwrap();
    for (o, w) in out.iter().zip([1.0, 2.0, 3.0, 4.0]) {
        assert!((o - w).abs() < 1e-6);
    }
}

#[test]
fn matmul_by_a_known_matrix() {
    // W = [[1, 2], [3, 4], [0, -1]] (F32); x rows (1, 1) and (2, -1).
    let w = HostWeight::from_f32("w", 3, 2, &[1.0, 2.0, 3.0, 4.0, 0.0, -1.0]).unwrap();
    let mut out = vec![0f32; 6];
    ops::matmul::reference(&w, &[1.0, 1.0, 2.0, -1.0], 2, &mut out, false).unwrap();
    assert_eq!(out, vec![3.0, 7.0, -1.0, 0.0, 2.0, 1.0]);
}

#[test]
fn swiglu_and_bad_shapes() {
    let mut out = [0f32; 2];
    ops::elementwise::swiglu(&[0.0, 1.0], &[5.0, 2.0], 2, &mut out).unwrap();
    let silu1 = 1.0 / (1.0 + (-1f32).exp());
    assert_eq!(out[0], 0.0);
    assert!((out[1] - 2.0 * silu1).abs() < 1e-6);
    assert!(ops::elementwise::swiglu(&[0.0], &[1.0], 2, &mut out).is_err());
    let w = HostWeight::from_f32("w", 1, 2, &[1.0, 2.0]).unwrap();
    assert!(
        ops::embedding::reference(&w, &[1], &mut [0.0; 2]).is_err(),
        "id past the vocabulary"
    );
}
