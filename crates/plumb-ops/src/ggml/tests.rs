use super::num::{dot_f16, f16r, fma, hsum8, v_expf, v_silu};
use super::quant::{dot_q4_1, dot_q8_0, quantize_block, Q4_1_BYTES, QK};
use super::GgmlBackend;
use crate::backend::{Backend, RopeParams, RopeStyle};

#[test]
fn fma_rounds_once() {
    // 1 + 2^-24 is halfway between 1 and its successor: a separate product and sum would
    // round the tiny term away; the fused form keeps it.
    let e = 2f32.powi(-12);
    assert_eq!(fma(1.0 + e, 1.0 + e, -1.0), 2.0 * e + e * e);
    let mut s = 0x1234_5678u32;
    for _ in 0..200_000 {
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 8.0
        };
        let (a, b, c) = (next(), next(), next());
        assert_eq!(
            fma(a, b, c).to_bits(),
            a.mul_add(b, c).to_bits(),
            "{a} {b} {c}"
        );
    }
}

#[test]
fn q8_1_block_of_a_hand_made_row() {
    let mut x = [0f32; QK];
    x[0] = 2.54; // amax: d = 0.02, id = 50
    x[1] = -1.0; // -50
    x[2] = 0.01; // 0.5 -> 0 (ties to even)
    x[3] = 0.03; // 1.5 -> 2
    x[4] = -0.05; // -2.5 -> -2
    let b = quantize_block(&x);
    let d = 2.54f32 / 127.0;
    assert_eq!(b.d, f16r(d));
    let id = 127.0 / 2.54f32;
    let want: Vec<i8> = x
        .iter()
        .map(|&v| (v * id).round_ties_even() as i8)
        .collect();
    assert_eq!(&b.q[..], &want[..]);
    assert_eq!(b.q[0], 127);
    assert_eq!(b.q[1], -50);
    let sum: i32 = b.q.iter().map(|&q| q as i32).sum();
    // s uses the f32 d, not the f16-rounded one.
    assert_eq!(b.s, f16r(d * sum as f32));
    assert_ne!(d, b.d);
    // An all-zero block quantizes to zeros with d = 0.
    let z = quantize_block(&[0f32; QK]);
    assert_eq!((z.d, z.s), (0.0, 0.0));
    assert!(z.q.iter().all(|&q| q == 0));
}

#[test]
fn rounding_is_half_to_even() {
    // x · id lands exactly on halves here (id = 1 with amax 127).
    let mut x = [0f32; QK];
    x[0] = 127.0;
    x[1] = 0.5;
    x[2] = 1.5;
    x[3] = 2.5;
    x[4] = -0.5;
    x[5] = -1.5;
    let b = quantize_block(&x);
    assert_eq!(&b.q[1..6], &[0, 2, 2, 0, -2]);
}

#[test]
fn block_dots_match_dequantized_sums() {
    let mut s = 7u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let cols = 4 * QK;
    let w: Vec<f32> = (0..cols).map(|_| rnd()).collect();
    let x: Vec<f32> = (0..cols).map(|_| rnd() * 3.0).collect();
    let acts = super::quant::quantize_row(&x);
    for ty in [plumb_core::GgmlType::Q4_1, plumb_core::GgmlType::Q8_0] {
        let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap()];
        plumb_core::quant::quantize_row(ty, &w, &mut bytes).unwrap();
        let mut wd = vec![0f32; cols];
        plumb_core::quant::dequantize_row(ty, &bytes, &mut wd).unwrap();
        let mut xd = Vec::new();
        for b in &acts {
            xd.extend(b.q.iter().map(|&q| q as f64 * b.d as f64));
        }
        let exact: f64 = wd.iter().zip(&xd).map(|(&a, &b)| a as f64 * b).sum();
        let got = match ty {
            plumb_core::GgmlType::Q4_1 => dot_q4_1(&bytes, &acts, true),
            _ => dot_q8_0(&bytes, &acts),
        };
        // Q4_1's offset term uses s = f16(d·Σq), so it is close but not exact.
        let tol = if ty == plumb_core::GgmlType::Q4_1 {
            2e-2
        } else {
            1e-4
        };
        assert!((got as f64 - exact).abs() < tol, "{ty:?}: {got} vs {exact}");
        assert_eq!(
            bytes.len(),
            cols / QK
                * if ty == plumb_core::GgmlType::Q4_1 {
                    Q4_1_BYTES
                } else {
                    34
                }
        );
    }
}

#[test]
fn horizontal_sums_follow_the_documented_order() {
    // Values whose f32 sum depends on the order: big ones cancel first in ggml's order.
    let a = [1e8f32, 1.0, -1e8, 1.0, 1.0, 1.0, 1.0, 1.0];
    // (a0+a4) + (a2+a6) = (1e8+1) + (-1e8+1) = 0; (a1+a5) + (a3+a7) = 4.
    assert_eq!(hsum8(&a), 4.0);
    let seq: f32 = a.iter().sum();
    assert_ne!(seq, hsum8(&a));
}

#[test]
fn expf_and_silu_are_close_to_libm() {
    for i in -2000..2000 {
        let x = i as f32 * 0.043;
        let (e, e512, want) = (v_expf(x), super::num::v_expf_512(x), x.exp());
        assert!((e - want).abs() <= want * 4e-7, "{x}: {e} vs {want}");
        assert!((e512 - want).abs() <= want * 4e-7, "{x}: {e512} vs {want}");
        let s = v_silu(x, false);
        let sw = x / (1.0 + (-x).exp());
        assert!(
            (s - sw).abs() <= sw.abs() * 1e-6 + 1e-30,
            "{x}: {s} vs {sw}"
        );
    }
    assert_eq!(v_expf(-200.0), 0.0);
    assert_eq!(super::num::v_expf_512(-200.0), 0.0);
    assert_eq!(v_expf(0.0), 1.0);
}

#[test]
fn f16_accumulation_loses_what_f32_keeps() {
    // Adding 1e-4 a thousand times to 1.0: each step is below half an f16 ulp at 1.0
    // (2^-11), so the f16 accumulator never moves while the f32 one reaches ~1.1.
    let (mut a16, mut a32) = (1f32, 1f32);
    for _ in 0..1000 {
        a16 = f16r(fma(1e-4, 1.0, a16));
        a32 += 1e-4;
    }
    assert_eq!(a16, 1.0);
    assert!((a32 - 1.1).abs() < 1e-3);
    // dot_f16 of f16 values equals the exact dot when every product and sum is exact.
    let x: Vec<f32> = (0..64).map(|i| (i % 7) as f32).collect();
    let y: Vec<f32> = (0..64).map(|i| (i % 5) as f32 - 2.0).collect();
    let exact: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
    assert_eq!(dot_f16(&x, &y), exact);
    assert_eq!(super::num::dot_f16_512(&x, &y), exact);
}

#[test]
fn rope_running_product_is_close_to_but_not_powf() {
    let b = GgmlBackend::new();
    let (head_dim, base) = (64usize, 100000f32);
    let p = RopeParams {
        style: RopeStyle::Normal,
        theta: base,
        n_rot: head_dim,
    };
    let pos = 1000u32;
    let mut x = vec![0f32; head_dim];
    for i in 0..head_dim / 2 {
        x[2 * i] = 1.0; // rotating (1, 0) yields (cos, sin) of each pair's angle
    }
    b.rope(&mut x, &[pos], 1, head_dim, p, None).unwrap();
    let scale = base.powf(-2.0 / head_dim as f32);
    let mut theta = pos as f32;
    let mut differ = 0;
    for i in 0..head_dim / 2 {
        assert_eq!(x[2 * i], theta.cos());
        assert_eq!(x[2 * i + 1], theta.sin());
        let direct = pos as f32 * base.powf(-2.0 * i as f32 / head_dim as f32);
        assert!((direct - theta).abs() <= theta.abs() * 1e-5 + 1e-6);
        if direct != theta {
            differ += 1;
        }
        theta *= scale;
    }
    assert!(
        differ > 0,
        "the running product should round differently somewhere"
    );
}

#[test]
fn kv_writes_round_to_f16_and_attention_matches_the_reference() {
    let b = GgmlBackend::new();
    let src = vec![0.1f32, 1.0 / 3.0, 1000.123, -2.0];
    let mut cache = vec![0f32; 8];
    b.kv_write(&src, &mut cache, 1, 1, 4).unwrap();
    assert_eq!(&cache[..4], &[0.0; 4]);
    for (c, s) in cache[4..].iter().zip(&src) {
        assert_eq!(*c, f16r(*s));
    }
    // Attention over a small cache, both forms, against the f64 reference.
    let (n_heads, n_kv_heads, hd, n) = (4usize, 2usize, 64usize, 5usize);
    let mut s = 3u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let q: Vec<f32> = (0..n * n_heads * hd).map(|_| rnd()).collect();
    let k: Vec<f32> = (0..n * n_kv_heads * hd).map(|_| f16r(rnd())).collect();
    let v: Vec<f32> = (0..n * n_kv_heads * hd).map(|_| f16r(rnd())).collect();
    let p = crate::AttnParams {
        n_tokens: n,
        pos0: 0,
        n_heads,
        n_kv_heads,
        head_dim: hd,
        scale: 0.125,
    };
    let mut want = vec![0f32; q.len()];
    crate::ops::attention::reference(&q, &k, &v, p, &mut want).unwrap();
    for flash in [true, false] {
        for avx512 in [false, true] {
            let g = GgmlBackend {
                flash,
                avx512,
                ..GgmlBackend::new()
            };
            let mut out = vec![f32::NAN; q.len()];
            g.attention(&q, &k, &v, p, &mut out).unwrap();
            for (a, w) in out.iter().zip(&want) {
                assert!((a - w).abs() < 2e-3, "flash {flash}: {a} vs {w}");
            }
        }
    }
}

#[test]
fn matmul_is_close_to_the_reference_and_independent_of_threads_and_batch() {
    let mut s = 11u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let (rows, cols, n) = (37usize, 3 * QK, 3usize);
    let wf: Vec<f32> = (0..rows * cols).map(|_| rnd()).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| rnd()).collect();
    for ty in [plumb_core::GgmlType::Q4_1, plumb_core::GgmlType::Q8_0] {
        let mut bytes = vec![0u8; ty.row_bytes(cols).unwrap() * rows];
        let rb = ty.row_bytes(cols).unwrap();
        for r in 0..rows {
            plumb_core::quant::quantize_row(
                ty,
                &wf[r * cols..(r + 1) * cols],
                &mut bytes[r * rb..(r + 1) * rb],
            )
            .unwrap();
        }
        let w = plumb_core::HostWeight::new(
            "w",
            ty,
            rows,
            cols,
            plumb_core::tensor::Bytes::from_vec(bytes),
        )
        .unwrap();
        let mut want = vec![0f32; n * rows];
        crate::ops::matmul::reference(&w, &x, n, &mut want, false).unwrap();
        let mut outs = Vec::new();
        for threads in [1, 3] {
            let g = GgmlBackend {
                threads,
                ..GgmlBackend::new()
            };
            let mut out = vec![f32::NAN; n * rows];
            g.matmul(&w, &x, n, &mut out).unwrap();
            for (a, b) in out.iter().zip(&want) {
                assert!((a - b).abs() < 0.05, "{ty:?}: {a} vs {b}");
            }
            // One row alone gives the same bits as inside the batch.
            let mut one = vec![0f32; rows];
            g.matmul(&w, &x[cols..2 * cols].to_vec(), 1, &mut one)
                .unwrap();
            assert_eq!(&one[..], &out[rows..2 * rows]);
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1]);
    }
}
