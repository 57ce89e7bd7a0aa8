//! The cases of each op: shapes (adversarial ones included), input draws, reference, tolerance.

use plumb_core::rng::Rng;
use plumb_core::{GgmlType, HostWeight};

use super::compare::compare_with_scale;
use super::{CaseResult, CheckOptions, Status};
use crate::backend::{AttnParams, Backend, PagedParams, PagedSeq, RopeParams, RopeStyle};
use crate::error::Result;
use crate::ops;

/// Weight formats of the matmul and embedding cases.
const WEIGHT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Relative squared error allowed for a matmul against weights of `ty`: float weights must be
/// near-exact; quantized ones may quantize the activations to 8 bits.
fn matmul_tolerance(ty: GgmlType) -> f64 {
    if ty.is_quantized() {
        5e-4
    } else {
        1e-6
    }
}

struct Ctx<'a, B: Backend> {
    b: &'a B,
    rng: Rng,
    out: Vec<CaseResult>,
}

impl<B: Backend> Ctx<'_, B> {
    /// Records one case: `run` returns (got, want) pairs, or an error that becomes SKIP for an
    /// unsupported case and FAIL otherwise.
    fn case(
        &mut self,
        op: &'static str,
        dtype: String,
        shape: String,
        tol: f64,
        run: Result<Vec<(Vec<f32>, Vec<f32>)>>,
    ) {
        let run = run.map(|v| v.into_iter().map(|(g, w)| (g, w, None)).collect());
        self.case_scaled(op, dtype, shape, tol, run)
    }

    /// Records one case whose outputs carry an optional NMSE denominator.
    #[allow(clippy::type_complexity)]
    fn case_scaled(
        &mut self,
        op: &'static str,
        dtype: String,
        shape: String,
        tol: f64,
        run: Result<Vec<(Vec<f32>, Vec<f32>, Option<f64>)>>,
    ) {
        let backend = self.b.name().to_string();
        let mut r = CaseResult {
            op,
            backend,
            dtype,
            shape,
            status: Status::Pass,
            nmse: 0.0,
            tolerance: tol,
            max_abs: 0.0,
            detail: String::new(),
        };
        match run {
            Err(crate::OpError::Unsupported { what, .. }) => {
                r.status = Status::Skip;
                r.detail = format!("unsupported: {what}");
            }
            Err(e) => {
                r.status = Status::Fail;
                r.nmse = f64::INFINITY;
                r.detail = format!("error: {e}");
            }
            Ok(pairs) => {
                for (got, want, scale) in pairs {
                    let c = compare_with_scale(&got, &want, scale);
                    r.max_abs = r.max_abs.max(c.max_abs);
                    if c.nmse > r.nmse || c.nmse.is_nan() {
                        r.nmse = c.nmse;
                    }
                    if c.nmse.is_nan() || c.nmse > tol {
                        r.status = Status::Fail;
                        r.detail = format!(
                            "{} non-finite; worst element {} (|Δ| {:.3e}); first mismatches (index, got, want): {:?}",
                            c.non_finite, c.worst, c.max_abs, c.first_mismatches
                        );
                    }
                }
            }
        }
        self.out.push(r);
    }

    /// An output buffer of `len` NaNs.
    fn poisoned(&self, len: usize) -> Result<B::Buf> {
        self.b.upload(&vec![f32::NAN; len])
    }

    fn down(&self, buf: &B::Buf, len: usize) -> Result<Vec<f32>> {
        let mut v = vec![0f32; len];
        self.b.download(buf, &mut v)?;
        Ok(v)
    }

    fn weight(&mut self, ty: GgmlType, rows: usize, cols: usize, scale: f32) -> Result<HostWeight> {
        let vals = self.rng.normals(rows * cols, scale);
        let row_bytes = ty.row_bytes(cols)?;
        let mut bytes = vec![0u8; rows * row_bytes];
        for r in 0..rows {
            plumb_core::quant::quantize_row(
                ty,
                &vals[r * cols..(r + 1) * cols],
                &mut bytes[r * row_bytes..(r + 1) * row_bytes],
            )?;
        }
        Ok(HostWeight::new(
            "check",
            ty,
            rows,
            cols,
            plumb_core::Bytes::from_vec(bytes),
        )?)
    }
}

pub fn run_op<B: Backend>(b: &B, op: &'static str, opts: &CheckOptions) -> Vec<CaseResult> {
    // A separate stream per op, so `--op X` sees the same inputs as a full run.
    let salt = op
        .bytes()
        .fold(0u64, |h, c| h.wrapping_mul(31).wrapping_add(c as u64));
    let mut cx = Ctx {
        b,
        rng: Rng::new(opts.seed ^ salt),
        out: Vec::new(),
    };
    match op {
        "embedding" => embedding(&mut cx),
        "rms_norm" | "add_rms_norm" => norms(&mut cx, op),
        "matmul" => matmul(&mut cx, opts.quick),
        "add_bias" | "swiglu" | "add" => elementwise(&mut cx, op),
        "rope" => rope(&mut cx),
        "attention" => attention(&mut cx, opts.quick),
        "attention_paged" => attention_paged(&mut cx),
        "argmax" => argmax(&mut cx),
        _ => {}
    }
    cx.out
}

fn cols_for(ty: GgmlType, wanted: usize) -> usize {
    let bs = ty.block_size();
    wanted.div_ceil(bs) * bs
}

fn embedding<B: Backend>(cx: &mut Ctx<B>) {
    for &ty in WEIGHT_TYPES {
        let (vocab, dim) = (97, cols_for(ty, 576));
        let ids = [0u32, 96, 5, 5, 42];
        let run = (|| {
            let table = cx.weight(ty, vocab, dim, 1.0)?;
            let mut want = vec![0f32; ids.len() * dim];
            ops::embedding::reference(&table, &ids, &mut want)?;
            let w = cx.b.upload_weight(&table)?;
            let mut out = cx.poisoned(ids.len() * dim)?;
            cx.b.embedding(&w, &ids, &mut out)?;
            Ok(vec![(cx.down(&out, want.len())?, want)])
        })();
        cx.case(
            "embedding",
            ty.name().into(),
            format!("vocab {vocab} × {dim}, {} ids", ids.len()),
            0.0,
            run,
        );
    }
}

fn norms<B: Backend>(cx: &mut Ctx<B>, op: &'static str) {
    for (rows, dim) in [(1, 576), (3, 769), (17, 64), (1, 5125), (64, 4096)] {
        let x = cx.rng.normals(rows * dim, 2.0);
        let y = cx.rng.normals(rows * dim, 1.0);
        let w = cx.rng.normals(dim, 1.0);
        let eps = 1e-5;
        let run = (|| {
            let (xb, wb) = (cx.b.upload(&x)?, cx.b.upload(&w)?);
            let mut out = cx.poisoned(rows * dim)?;
            let mut want = vec![0f32; rows * dim];
            if op == "rms_norm" {
                ops::rms_norm::reference(&x, &w, eps, rows, dim, &mut want)?;
                cx.b.rms_norm(&xb, &wb, eps, rows, dim, &mut out)?;
                Ok(vec![(cx.down(&out, want.len())?, want)])
            } else {
                let mut res_want = x.clone();
                ops::rms_norm::reference_add(&mut res_want, &y, &w, eps, rows, dim, &mut want)?;
                let mut res = xb;
                cx.b.add_rms_norm(&mut res, &cx.b.upload(&y)?, &wb, eps, rows, dim, &mut out)?;
                Ok(vec![
                    (cx.down(&out, want.len())?, want),
                    (cx.down(&res, res_want.len())?, res_want),
                ])
            }
        })();
        cx.case(op, "F32".into(), format!("{rows}×{dim}"), 1e-10, run);
    }
}

fn matmul<B: Backend>(cx: &mut Ctx<B>, quick: bool) {
    // (rows, cols wanted, n tokens): single row, odd row counts, prefill batches.
    let mut shapes = vec![
        (1, 576, 1),
        (769, 576, 1),
        (64, 1536, 5),
        (33, 576, 17),
        (96, 256, 2),
        (31, 512, 64),
    ];
    if !quick {
        shapes.push((2048, 1536, 1));
        shapes.push((256, 2048, 128));
    }
    for &ty in WEIGHT_TYPES {
        for &(rows, cols, n) in &shapes {
            let cols = cols_for(ty, cols);
            let x = cx.rng.normals(n * cols, 1.0);
            let run = (|| {
                let w = cx.weight(ty, rows, cols, 0.05)?;
                let mut want = vec![0f32; n * rows];
                ops::matmul::reference(&w, &x, n, &mut want, true)?;
                let wb = cx.b.upload_weight(&w)?;
                let mut out = cx.poisoned(n * rows)?;
                cx.b.matmul(&wb, &cx.b.upload(&x)?, n, &mut out)?;
                Ok(vec![(
                    cx.down(&out, want.len())?,
                    want,
                    Some(product_scale(&w, &x, n)?),
                )])
            })();
            cx.case_scaled(
                "matmul",
                ty.name().into(),
                format!("W {rows}×{cols}, n {n}"),
                matmul_tolerance(ty),
                run,
            );
        }
        // matmul_many: three matrices of different heights on one x, in one call.
        for n in [1, 9, 40] {
            let cols = cols_for(ty, 512);
            let x = cx.rng.normals(n * cols, 1.0);
            let heights = [64, 33, 100];
            let run = (|| {
                let xb = cx.b.upload(&x)?;
                let mut ws = Vec::new();
                let mut wants = Vec::new();
                let mut outs = Vec::new();
                for &rows in &heights {
                    let w = cx.weight(ty, rows, cols, 0.05)?;
                    let mut want = vec![0f32; n * rows];
                    ops::matmul::reference(&w, &x, n, &mut want, true)?;
                    wants.push((want, product_scale(&w, &x, n)?));
                    ws.push(cx.b.upload_weight(&w)?);
                    outs.push(cx.poisoned(n * rows)?);
                }
                {
                    let mut pairs: Vec<(&B::Weight, &mut B::Buf)> =
                        ws.iter().zip(outs.iter_mut()).collect();
                    cx.b.matmul_many(&xb, n, &mut pairs)?;
                }
                let mut res = Vec::new();
                for (out, (want, scale)) in outs.iter().zip(wants) {
                    res.push((cx.down(out, want.len())?, want, Some(scale)));
                }
                Ok(res)
            })();
            cx.case_scaled(
                "matmul",
                ty.name().into(),
                format!("3 W {heights:?}×{cols}, n {n}, one call"),
                matmul_tolerance(ty),
                run,
            );
        }
    }
}

fn elementwise<B: Backend>(cx: &mut Ctx<B>, op: &'static str) {
    for (rows, dim) in [(1, 1), (3, 769), (5, 1536), (1, 5125)] {
        let len = rows * dim;
        let (x, y) = (cx.rng.normals(len, 3.0), cx.rng.normals(len, 1.0));
        let run = (|| {
            let (xb, yb) = (cx.b.upload(&x)?, cx.b.upload(&y)?);
            match op {
                "swiglu" => {
                    let mut want = vec![0f32; len];
                    ops::elementwise::swiglu(&x, &y, len, &mut want)?;
                    let mut out = cx.poisoned(len)?;
                    cx.b.swiglu(&xb, &yb, len, &mut out)?;
                    Ok(vec![(cx.down(&out, len)?, want)])
                }
                "add" => {
                    let mut want = x.clone();
                    ops::elementwise::add(&mut want, &y, len)?;
                    let mut xb = xb;
                    cx.b.add(&mut xb, &yb, len)?;
                    Ok(vec![(cx.down(&xb, len)?, want)])
                }
                _ => {
                    let mut want = x.clone();
                    ops::elementwise::add_bias(&mut want, &y[..dim], rows, dim)?;
                    let mut xb = xb;
                    cx.b.add_bias(&mut xb, &cx.b.upload(&y[..dim])?, rows, dim)?;
                    Ok(vec![(cx.down(&xb, len)?, want)])
                }
            }
        })();
        let tol = if op == "swiglu" { 1e-8 } else { 1e-12 };
        cx.case(op, "F32".into(), format!("{rows}×{dim}"), tol, run);
    }
}

fn rope<B: Backend>(cx: &mut Ctx<B>) {
    // (tokens, heads, head_dim, n_rot, style, freq factors, max position)
    let cases = [
        (1, 9, 64, 64, RopeStyle::Normal, false, 10),
        (7, 3, 64, 64, RopeStyle::Neox, false, 100),
        (5, 8, 128, 128, RopeStyle::Normal, true, 4000),
        (3, 2, 128, 64, RopeStyle::Neox, false, 30000),
        (33, 4, 64, 32, RopeStyle::Normal, false, 1000),
    ];
    for (n, heads, hd, n_rot, style, with_ff, max_pos) in cases {
        let x = cx.rng.normals(n * heads * hd, 1.0);
        let positions: Vec<u32> = (0..n).map(|_| cx.rng.below(max_pos) as u32).collect();
        let ff: Vec<f32> = (0..n_rot / 2).map(|i| 1.0 + (i % 7) as f32).collect();
        let p = RopeParams {
            style,
            theta: 500000.0,
            n_rot,
        };
        let run = (|| {
            let mut want = x.clone();
            ops::rope::reference(
                &mut want,
                &positions,
                heads,
                hd,
                p,
                with_ff.then_some(ff.as_slice()),
            )?;
            let mut xb = cx.b.upload(&x)?;
            let ffb = cx.b.upload(&ff)?;
            cx.b.rope(&mut xb, &positions, heads, hd, p, with_ff.then_some(&ffb))?;
            Ok(vec![(cx.down(&xb, want.len())?, want)])
        })();
        let shape = format!(
            "{n} tok × {heads} heads × {hd}, rot {n_rot}, {style:?}{}",
            if with_ff { ", freq factors" } else { "" }
        );
        cx.case("rope", "F32".into(), shape, 1e-9, run);
    }
}

fn attention<B: Backend>(cx: &mut Ctx<B>, quick: bool) {
    // (n_tokens, pos0, n_heads, n_kv_heads, head_dim): decode and prefill, GQA 1/3/4/8.
    let mut cases = vec![
        (1, 0, 4, 4, 64),
        (1, 37, 9, 3, 64),
        (7, 0, 9, 3, 64),
        (16, 21, 8, 2, 128),
        (5, 3, 8, 1, 64),
        (33, 100, 4, 4, 64),
    ];
    if !quick {
        cases.push((1, 4000, 32, 8, 128));
        cases.push((128, 0, 9, 3, 64));
        cases.push((64, 1000, 8, 8, 128));
    }
    for (n, pos0, h, kvh, hd) in cases {
        let cap = pos0 + n + 3; // a cache larger than what is attended
        let q = cx.rng.normals(n * h * hd, 1.0);
        let k = cx.rng.normals(cap * kvh * hd, 1.0);
        let v = cx.rng.normals(cap * kvh * hd, 1.0);
        let p = AttnParams {
            n_tokens: n,
            pos0,
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let run = (|| {
            let mut want = vec![0f32; n * h * hd];
            ops::attention::reference(&q, &k, &v, p, &mut want)?;
            let mut out = cx.poisoned(n * h * hd)?;
            cx.b.attention(
                &cx.b.upload(&q)?,
                &cx.b.upload(&k)?,
                &cx.b.upload(&v)?,
                p,
                &mut out,
            )?;
            Ok(vec![(cx.down(&out, want.len())?, want)])
        })();
        let shape = format!("{n} tok at {pos0}, heads {h}/{kvh}, dim {hd}");
        cx.case("attention", "F32".into(), shape, 1e-7, run);
    }
}

/// Σ_t Σ_r Σ_k (W[r,k] · x[t,k])²: the scale a dot product's rounding error is measured against.
fn product_scale(w: &HostWeight, x: &[f32], n: usize) -> Result<f64> {
    let cols = w.cols;
    let mut row = vec![0f32; cols];
    let mut total = 0f64;
    for r in 0..w.rows {
        w.dequantize_row(r, &mut row)?;
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            total += row
                .iter()
                .zip(xt)
                .map(|(&a, &b)| (a as f64 * b as f64).powi(2))
                .sum::<f64>();
        }
    }
    Ok(total)
}

fn attention_paged<B: Backend>(cx: &mut Ctx<B>) {
    // (sequences as (n_tokens, pos0), heads, kv heads, head_dim, block size): decode batches,
    // mixed prefill and decode, GQA 1/3/4/8, positions that end mid-block.
    type Case = (&'static [(usize, usize)], usize, usize, usize, usize);
    let cases: [Case; 5] = [
        (&[(1, 0), (1, 17), (1, 40)], 9, 3, 64, 16),
        (&[(5, 0), (1, 100), (3, 31)], 8, 2, 128, 16),
        (&[(1, 63), (1, 64), (1, 65), (1, 1)], 8, 1, 64, 32),
        (&[(7, 9)], 4, 4, 64, 16),
        (&[(2, 200), (16, 0)], 32, 8, 128, 16),
    ];
    for (seq_shapes, h, kvh, hd, bs) in cases {
        let kv_dim = kvh * hd;
        // Give every sequence enough blocks, drawn from a shuffled pool so tables are scattered.
        let need: Vec<usize> = seq_shapes
            .iter()
            .map(|&(n, p0)| (p0 + n).div_ceil(bs))
            .collect();
        let n_blocks: usize = need.iter().sum::<usize>() + 3;
        let mut order: Vec<u32> = (0..n_blocks as u32).collect();
        for i in (1..order.len()).rev() {
            let j = cx.rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut tables = Vec::new();
        let mut next = 0;
        for &nb in &need {
            tables.push(order[next..next + nb].to_vec());
            next += nb;
        }
        let rows: usize = seq_shapes.iter().map(|s| s.0).sum();
        let q = cx.rng.normals(rows * h * hd, 1.0);
        let k = cx.rng.normals(n_blocks * bs * kv_dim, 1.0);
        let v = cx.rng.normals(n_blocks * bs * kv_dim, 1.0);
        let mut row = 0;
        let seqs: Vec<PagedSeq<'_>> = seq_shapes
            .iter()
            .zip(&tables)
            .map(|(&(n, p0), t)| {
                let s = PagedSeq {
                    q_row: row,
                    n_tokens: n,
                    pos0: p0,
                    blocks: t,
                };
                row += n;
                s
            })
            .collect();
        let p = PagedParams {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            block_size: bs,
        };
        let run = (|| {
            let mut want = vec![0f32; rows * h * hd];
            ops::paged_attention::reference(&q, &k, &v, &seqs, p, &mut want)?;
            let mut out = cx.poisoned(rows * h * hd)?;
            cx.b.attention_paged(
                &cx.b.upload(&q)?,
                &cx.b.upload(&k)?,
                &cx.b.upload(&v)?,
                &seqs,
                p,
                &mut out,
            )?;
            Ok(vec![(cx.down(&out, want.len())?, want)])
        })();
        let shape = format!("{} seqs, heads {h}/{kvh}, dim {hd}, block {bs}", seqs.len());
        cx.case("attention_paged", "F32".into(), shape, 1e-7, run);
    }
}

/// `argmax` of one row and `argmax_rows` of many, against a plain scan: exact (indices as
/// floats, tolerance 0). Each row gets its maximum planted twice (the first must win), one
/// row is all equal (index 0), and one holds NaNs (never chosen).
fn argmax<B: Backend>(cx: &mut Ctx<B>) {
    for (rows, len) in [(1, 7), (3, 1000), (5, 49152), (64, 32003)] {
        let mut x = cx.rng.normals(rows * len, 4.0);
        for r in 0..rows {
            let row = &mut x[r * len..(r + 1) * len];
            let (i, j) = (
                cx.rng.below(len as u64) as usize,
                cx.rng.below(len as u64) as usize,
            );
            let (lo, hi) = (i.min(j), i.max(j));
            row[lo] = 100.0 + r as f32;
            row[hi] = 100.0 + r as f32;
            if r == 1 {
                row.fill(-2.5);
            }
            if r == 2 {
                row[len / 2] = f32::NAN;
                row[0] = f32::NAN;
            }
        }
        let want: Vec<f32> = x
            .chunks(len)
            .map(|row| {
                let mut best = (0usize, f32::NEG_INFINITY);
                for (i, &v) in row.iter().enumerate() {
                    if v > best.1 {
                        best = (i, v);
                    }
                }
                best.0 as f32
            })
            .collect();
        let run = (|| {
            let xb = cx.b.upload(&x)?;
            let mut got: Vec<f32> =
                cx.b.argmax_rows(&xb, rows, len)?
                    .into_iter()
                    .map(|i| i as f32)
                    .collect();
            got.push(cx.b.argmax(&xb, len)? as f32);
            let mut want = want.clone();
            want.push(want[0]);
            Ok(vec![(got, want)])
        })();
        cx.case("argmax", "F32".into(), format!("{rows}×{len}"), 0.0, run);
    }
}
