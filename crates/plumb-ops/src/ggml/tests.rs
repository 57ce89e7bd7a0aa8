use plumb_core::GgmlType;

use super::attn::{flash_row, softmax_row, Row};
use super::num::{
    dot_f16_avx2, dot_f16_avx512, exp_avx2, exp_avx512, f16r, fma, silu, sum_by_halves,
    sum_halves_then_neighbours,
};
use super::quant::{dot_q4_1, dot_q8_0, quantize_block, quantize_row, QK};
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
fn lane_sums_follow_their_documented_orders() {
    // Values whose f32 sum depends on the order: the big ones cancel only when paired.
    let a = [1e8f32, 1.0, -1e8, 1.0, 1.0, 1.0, 1.0, 1.0];
    // By halves: (a0+a4) + (a2+a6) = (1e8+1) + (-1e8+1) = 0; (a1+a5) + (a3+a7) = 4.
    assert_eq!(sum_by_halves(a), 4.0);
    // Halves then neighbours: t = (1e8+1, 2, -1e8+1, 2); (t0+t1) + (t2+t3) = 1e8 - 1e8.
    assert_eq!(sum_halves_then_neighbours(a), 0.0);
    let seq: f32 = a.iter().sum();
    assert_eq!(seq, 5.0);
    // 16 lanes: lane i with lane i + 8 first, so 1e8 meets -1e8 before either meets a 1.
    let mut b = [0f32; 16];
    (b[0], b[8], b[4], b[12]) = (1e8, -1e8, 1.0, 1.0);
    assert_eq!(sum_by_halves(b), 2.0);
    assert_eq!(b.iter().sum::<f32>(), 1.0);
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
    assert_eq!(dot_f16_avx2(&x, &y), exact);
    assert_eq!(dot_f16_avx512(&x, &y), exact);
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
        window: None,
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
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
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

/// The spacing of f32 values at the magnitude of `y` (the subnormal spacing below the normal
/// range), read from the exponent of `y` as an f64.
fn f32_ulp(y: f64) -> f64 {
    let exp = ((y.abs().to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(exp.max(-126) - 23)
}

#[test]
fn exp_is_within_its_error_bound_and_saturates_where_exp_leaves_f32() {
    // The polynomial is accurate to 1.45358 ulp and the final rounding adds at most 0.5 (over
    // every f32 of [-104, 88.72] the AVX2 form's worst is 1.9536 ulp). The AVX-512 form rounds
    // the sum of its constant and linear terms before the rest is added: up to 0.5 ulp more
    // (its worst over the same inputs is 2.2378 ulp).
    const BOUND_ULP: [f64; 2] = [1.4536 + 0.5, 1.4536 + 1.0];
    let (lo, hi) = (-104.0f32, 88.8f32);
    let mut worst = [0f64; 2];
    let mut check = |x: f32| {
        let exact = (x as f64).exp();
        for (i, got) in [exp_avx2(x), exp_avx512(x)].into_iter().enumerate() {
            if exact > f32::MAX as f64 * (1.0 + 1e-6) {
                assert_eq!(got, f32::INFINITY, "{x}");
            } else if exact < f32::MAX as f64 * (1.0 - 1e-6) {
                let err = (got as f64 - exact).abs() / f32_ulp(exact);
                assert!(
                    err <= BOUND_ULP[i],
                    "form {i}: exp({x:e}) = {got:e}, {err:.3} ulp"
                );
                worst[i] = worst[i].max(err);
            }
        }
    };
    // Negative and positive halves by their bit patterns, so every binade is visited.
    for bits in (0..=lo.to_bits() & 0x7fff_ffff).step_by(61) {
        check(-f32::from_bits(bits));
    }
    for bits in (0..=hi.to_bits()).step_by(61) {
        check(f32::from_bits(bits));
    }
    // Densely around the edges: overflow, underflow to 0, the split scaling from |n| = 127 on,
    // the subnormal results.
    for edge in [88.72284f32, -103.97208, 87.68321, -87.68321, -87.33655] {
        let mut x = edge;
        for _ in 0..20_000 {
            x = x.next_down();
        }
        for _ in 0..40_000 {
            check(x);
            x = x.next_up();
        }
    }
    eprintln!(
        "exp worst error: {:.3} ulp (AVX2), {:.3} ulp (AVX-512)",
        worst[0], worst[1]
    );
    for exp in [exp_avx2, exp_avx512] {
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(88.722).is_finite() && exp(88.7229) == f32::INFINITY);
        assert!(exp(-103.9) > 0.0 && exp(-103.98) == 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(1e30), f32::INFINITY);
        assert_eq!(exp(-1e30), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }
}

#[test]
fn silu_is_close_to_its_definition() {
    for i in -4000..4000 {
        let x = i as f32 * 0.0273;
        let exact = x as f64 / (1.0 + (-x as f64).exp());
        for avx512 in [false, true] {
            let got = silu(x, avx512) as f64;
            // exp within 2.24 ulp (4.5·u relative, u = 2^-24), then the sum and the quotient
            // each round once: 6.5·u. Below -88.72, exp(-x) overflows and x / inf is -0,
            // where the exact value is below 1e-36.
            let bound = if x > -88.72 {
                exact.abs() * 4.0 * f32::EPSILON as f64
            } else {
                1e-36
            };
            assert!((got - exact).abs() <= bound, "{x}: {got} vs {exact}");
        }
    }
    assert!(silu(-89.0, false) == 0.0 && silu(-89.0, true) == 0.0);
}

/// `γ(k) = k·u / (1 - k·u)`, u the unit roundoff of f32: the relative error bound of `k`
/// successive roundings.
fn gamma(k: usize) -> f64 {
    let ku = k as f64 * f32::EPSILON as f64 / 2.0;
    ku / (1.0 - ku)
}

/// A weight row of `nb` blocks of type `ty` with random scales (and, for Q4_1, offsets) over
/// several binades and random integer parts.
fn random_weight_row(ty: GgmlType, nb: usize, rnd: &mut impl FnMut() -> f32) -> Vec<u8> {
    fn f16_bytes(r: &mut impl FnMut() -> f32) -> [u8; 2] {
        let v = r() * 2f32.powi((r() * 10.0) as i32 - 8);
        half::f16::from_f32(v).to_le_bytes()
    }
    let mut row = Vec::new();
    for _ in 0..nb {
        row.extend(f16_bytes(rnd));
        match ty {
            GgmlType::Q4_1 => {
                row.extend(f16_bytes(rnd));
                row.extend((0..16).map(|_| ((rnd() + 0.5) * 255.99) as u8));
            }
            _ => row.extend((0..32).map(|_| ((rnd() * 254.0) as i32) as i8 as u8)),
        }
    }
    row
}

#[test]
fn block_dots_are_within_a_derived_bound_of_the_f64_dot() {
    // The kernels compute Σ_b (d_w·d_x)·Σ_j q_w·q_x with one rounding for each scale product,
    // one per FMA of a block into a lane (B blocks) and three for the lane sum: at most
    // γ(B + 5) relative to T = Σ|d_w·q_w·x| (with the final addition). Q4_1 adds the offsets
    // Σ_b m·s, two roundings per block and the final addition: γ(2B + 1) of O = Σ|m·s|; and
    // it uses s = f16(d_x·Σq) for d_x·Σq_x, off by at most |m|·(2^-10·D·|Σq| + 2^-25·(1 +
    // |Σq|)) per block, with D the f32 step before its f16 rounding. The f64 reference uses the
    // f32 dequantized weights, each within u = 2^-24 of d·q + m.
    let mut s = 99u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let u = f32::EPSILON as f64 / 2.0;
    let mut worst = 0f64;
    for trial in 0..3000 {
        let nb = 1 + trial % 24;
        let cols = nb * QK;
        let xs = 2f32.powi((trial % 13) as i32 - 6);
        let x: Vec<f32> = (0..cols).map(|_| rnd() * xs).collect();
        let acts = quantize_row(&x);
        let xd: Vec<f64> = acts
            .iter()
            .flat_map(|b| b.q.iter().map(move |&q| q as f64 * b.d as f64))
            .collect();
        for ty in [GgmlType::Q4_1, GgmlType::Q8_0] {
            let w = random_weight_row(ty, nb, &mut rnd);
            let mut wd = vec![0f32; cols];
            plumb_core::quant::dequantize_row(ty, &w, &mut wd).unwrap();
            let exact: f64 = wd.iter().zip(&xd).map(|(&a, &b)| a as f64 * b).sum();
            let bytes = w.len() / nb;
            let offset = |b: usize| match ty {
                GgmlType::Q4_1 => {
                    half::f16::from_le_bytes([w[b * bytes + 2], w[b * bytes + 3]]).to_f32() as f64
                }
                _ => 0.0,
            };
            let (mut t, mut o, mut model) = (0f64, 0f64, 0f64);
            let mut wx = 0f64;
            for (b, a) in acts.iter().enumerate() {
                let m = offset(b);
                let qsum = a.q.iter().map(|&q| q as f64).sum::<f64>().abs();
                for j in 0..QK {
                    let (wj, xj) = (wd[b * QK + j] as f64, xd[b * QK + j]);
                    t += ((wj - m).abs() * (1.0 + u) + m.abs() * u) * xj.abs();
                    wx += (wj * xj).abs();
                }
                let step = (a.d.abs() as f64 + 2f64.powi(-25)) / (1.0 - 2f64.powi(-11));
                o += (m * a.s as f64).abs();
                model += m.abs()
                    * (2f64.powi(-10) * 1.001 * step * qsum + 2f64.powi(-25) * (1.0 + qsum));
            }
            let bound = gamma(nb + 5) * t + gamma(2 * nb + 1) * o + model + u * wx + 1e-30;
            for got in match ty {
                GgmlType::Q4_1 => vec![dot_q4_1(&w, &acts, true), dot_q4_1(&w, &acts, false)],
                _ => vec![dot_q8_0(&w, &acts)],
            } {
                let err = (got as f64 - exact).abs();
                assert!(
                    err <= bound,
                    "{ty:?} {nb} blocks: {got} vs {exact}, bound {bound:e}"
                );
                worst = worst.max(err / bound);
            }
        }
    }
    eprintln!("block dots: worst error {worst:.3} of the bound");
}

/// f64 softmax attention of one query row against `n` keys and values (`hd` wide), and for
/// each output element the f16 accumulation bound of [`flash_row`]: `Σ_j (|P_(j-1)| +
/// |P_j|) / S`, with `P_j` the partial sums `Σ_(i≤j) exp(s_i - max)·v_i` and `S` the total
/// weight (the running output is rounded to f16 at most twice per position, and scaling by
/// later maxima only shrinks what was rounded).
fn attention_f64(q: &[f32], k: &[f32], v: &[f32], hd: usize, scale: f32) -> (Vec<f64>, Vec<f64>) {
    let n = k.len() / hd;
    let scores: Vec<f64> = (0..n)
        .map(|j| {
            let d: f64 = (0..hd).map(|i| q[i] as f64 * k[j * hd + i] as f64).sum();
            d * scale as f64
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut out = vec![0f64; hd];
    let mut acc_bound = vec![0f64; hd];
    for (d, (o, b)) in out.iter_mut().zip(&mut acc_bound).enumerate() {
        let (mut partial, mut rounded) = (0f64, 0f64);
        for (j, &wj) in w.iter().enumerate() {
            let prev = partial.abs();
            partial += wj * v[j * hd + d] as f64;
            rounded += prev + partial.abs();
        }
        *o = partial / total;
        *b = rounded / total;
    }
    (out, acc_bound)
}

#[test]
fn attention_rows_are_within_f16_bounds_of_f64_attention() {
    // Against the f64 attention of the f16-rounded query (the kernels' first step), each
    // output element is off by at most: the score errors (f32 sums of exact f16 products, at
    // most γ(hd/32 + 8) of Σ|q·k|, times the scale) moving the softmax by e^(2Δ) - 1 of the
    // largest |v|; the f16 roundings of the running output (2^-11 of the bound above, plus
    // 2^-25 per rounding of a subnormal); the f32 weights, rescalings and sum ((2n + 6)·u
    // relative). The unfused form rounds each probability to f16 instead (2^-11 of max|v|).
    let mut s = 5u32;
    let mut rnd = move || {
        s = s.wrapping_mul(1664525).wrapping_add(1013904223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let u = f32::EPSILON as f64 / 2.0;
    let (u16, sub16) = (2f64.powi(-11), 2f64.powi(-25));
    let mut worst = [0f64; 2];
    for trial in 0..400 {
        let hd = [64, 80][trial % 2];
        let n = [1, 2, 7, 33, 100, 300, 700][trial % 7];
        let qs = [0.5f32, 2.0, 8.0][trial % 3];
        let q: Vec<f32> = (0..hd).map(|_| f16r(rnd() * qs)).collect();
        let k: Vec<f32> = (0..n * hd).map(|_| f16r(rnd() * 2.0)).collect();
        let v: Vec<f32> = (0..n * hd).map(|_| f16r(rnd() * 4.0)).collect();
        let scale = 1.0 / (hd as f32).sqrt();
        let (want, acc_bound) = attention_f64(&q, &k, &v, hd, scale);
        let delta = (0..n)
            .map(|j| {
                let mag: f64 = (0..hd).map(|i| (q[i] * k[j * hd + i]).abs() as f64).sum();
                (gamma(hd / 32 + 8) * mag + u * mag) * scale as f64
            })
            .fold(0f64, f64::max);
        let shift = (2.0 * delta).exp_m1();
        for (form, flash) in [(0, true), (1, false)] {
            for (contract, avx512) in [(true, true), (false, false)] {
                let row = Row {
                    q: &q,
                    k_at: |j: usize| &k[j * hd..][..hd],
                    v_at: |j: usize| &v[j * hd..][..hd],
                    first: 0,
                    n_kv: n,
                    scale,
                };
                let mut out = vec![f32::NAN; hd];
                if flash {
                    flash_row(row, contract, avx512, &mut out);
                } else {
                    softmax_row(row, avx512, &mut out);
                }
                for d in 0..hd {
                    let vmax = (0..n).map(|j| v[j * hd + d].abs()).fold(0f32, f32::max) as f64;
                    let rounding = if flash {
                        1.01 * u16 * acc_bound[d] + 2.0 * n as f64 * sub16
                    } else {
                        (u16 + gamma(n / 32 + 30) + n as f64 * sub16) * vmax
                    };
                    let bound = shift * vmax + rounding + gamma(2 * n + 6) * vmax + 1e-30;
                    let err = (out[d] as f64 - want[d]).abs();
                    assert!(
                        err <= bound,
                        "flash {flash} n {n} hd {hd} [{d}]: {} vs {}, bound {bound:e}",
                        out[d],
                        want[d]
                    );
                    worst[form] = worst[form].max(err / bound);
                }
            }
        }
    }
    eprintln!(
        "attention: worst error {:.3} (flash), {:.3} (unfused) of the bound",
        worst[0], worst[1]
    );
}
