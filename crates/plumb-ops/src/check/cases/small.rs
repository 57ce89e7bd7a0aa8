//! Cases of the small ops: embedding, the norms, the elementwise ops, RoPE, argmax.

use plumb_core::GgmlType;

use super::{cols_for, tolerance, weight_types, Ctx, Output};
use crate::backend::{Backend, RopeParams, RopeStyle};
use crate::ops;

pub(super) fn embedding<B: Backend>(cx: &mut Ctx<B>) {
    for ty in weight_types() {
        let (vocab, dim) = (97, cols_for(ty, 576));
        let ids = [0u32, 96, 5, 5, 42];
        let run = (|| {
            let table = cx.weight(ty, vocab, dim, 1.0)?;
            let mut want = vec![0f32; ids.len() * dim];
            ops::embedding::reference(&table, &ids, &mut want)?;
            let w = cx.b.upload_weight(&table)?;
            let mut out = cx.poisoned(ids.len() * dim)?;
            cx.b.embedding(&w, &ids, &mut out)?;
            Ok(vec![Output::new(cx.down(&out, want.len())?, want)])
        })();
        cx.case(
            "embedding",
            ty.name().into(),
            format!("vocab {vocab} × {dim}, {} ids", ids.len()),
            tolerance("embedding", ty),
            run,
        );
    }
}

pub(super) fn norms<B: Backend>(cx: &mut Ctx<B>, op: &'static str) {
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
                Ok(vec![Output::new(cx.down(&out, want.len())?, want)])
            } else if op == "layer_norm" {
                // `y` as the bias, and x off-centre so that the mean matters.
                let x: Vec<f32> = x.iter().map(|v| v + 3.0).collect();
                ops::layer_norm::reference(&x, &w, &y[..dim], eps, rows, dim, &mut want)?;
                let (xb, bb) = (cx.b.upload(&x)?, cx.b.upload(&y[..dim])?);
                cx.b.layer_norm(&xb, &wb, &bb, eps, rows, dim, &mut out)?;
                Ok(vec![Output::new(cx.down(&out, want.len())?, want)])
            } else {
                let mut res_want = x.clone();
                ops::rms_norm::reference_add(&mut res_want, &y, &w, eps, rows, dim, &mut want)?;
                let mut res = xb;
                cx.b.add_rms_norm(&mut res, &cx.b.upload(&y)?, &wb, eps, rows, dim, &mut out)?;
                Ok(vec![
                    Output::new(cx.down(&out, want.len())?, want),
                    Output::new(cx.down(&res, res_want.len())?, res_want),
                ])
            }
        })();
        cx.case(op, "F32".into(), format!("{rows}×{dim}"), tol(op), run);
    }
}

pub(super) fn elementwise<B: Backend>(cx: &mut Ctx<B>, op: &'static str) {
    for (rows, dim) in [(1, 1), (3, 769), (5, 1536), (1, 5125)] {
        let len = rows * dim;
        let (x, y) = (cx.rng.normals(len, 3.0), cx.rng.normals(len, 1.0));
        let run = (|| {
            let (xb, yb) = (cx.b.upload(&x)?, cx.b.upload(&y)?);
            match op {
                "swiglu" | "geglu" | "gelu" => {
                    let mut want = vec![0f32; len];
                    let mut out = cx.poisoned(len)?;
                    if op == "swiglu" {
                        ops::elementwise::swiglu(&x, &y, len, &mut want)?;
                        cx.b.swiglu(&xb, &yb, len, &mut out)?;
                    } else if op == "geglu" {
                        ops::elementwise::geglu(&x, &y, len, &mut want)?;
                        cx.b.geglu(&xb, &yb, len, &mut out)?;
                    } else {
                        ops::elementwise::gelu(&x, len, &mut want)?;
                        cx.b.gelu(&xb, len, &mut out)?;
                    }
                    Ok(vec![Output::new(cx.down(&out, len)?, want)])
                }
                // In place: √640 (Gemma 3 270M's embedding scale), and a cap of 5 that
                // values of 3σ pass.
                "scale" | "softcap" => {
                    let mut want = x.clone();
                    let mut xb = xb;
                    if op == "scale" {
                        ops::elementwise::scale(&mut want, 640f32.sqrt(), len)?;
                        cx.b.scale(&mut xb, 640f32.sqrt(), len)?;
                    } else {
                        ops::elementwise::softcap(&mut want, 5.0, len)?;
                        cx.b.softcap(&mut xb, 5.0, len)?;
                    }
                    Ok(vec![Output::new(cx.down(&xb, len)?, want)])
                }
                "add" => {
                    let mut want = x.clone();
                    ops::elementwise::add(&mut want, &y, len)?;
                    let mut xb = xb;
                    cx.b.add(&mut xb, &yb, len)?;
                    Ok(vec![Output::new(cx.down(&xb, len)?, want)])
                }
                _ => {
                    let mut want = x.clone();
                    ops::elementwise::add_bias(&mut want, &y[..dim], rows, dim)?;
                    let mut xb = xb;
                    cx.b.add_bias(&mut xb, &cx.b.upload(&y[..dim])?, rows, dim)?;
                    Ok(vec![Output::new(cx.down(&xb, len)?, want)])
                }
            }
        })();
        cx.case(op, "F32".into(), format!("{rows}×{dim}"), tol(op), run);
    }
}

pub(super) fn rope<B: Backend>(cx: &mut Ctx<B>) {
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
            Ok(vec![Output::new(cx.down(&xb, want.len())?, want)])
        })();
        let shape = format!(
            "{n} tok × {heads} heads × {hd}, rot {n_rot}, {style:?}{}",
            if with_ff { ", freq factors" } else { "" }
        );
        cx.case("rope", "F32".into(), shape, tol("rope"), run);
    }
}

/// `argmax` of one row and `argmax_rows` of many, against a plain scan: exact (indices as
/// floats, tolerance 0). Each row gets its maximum planted twice (the first must win), one
/// row is all equal (index 0), and one holds NaNs (never chosen).
pub(super) fn argmax<B: Backend>(cx: &mut Ctx<B>) {
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
            Ok(vec![Output::new(got, want)])
        })();
        cx.case(
            "argmax",
            "F32".into(),
            format!("{rows}×{len}"),
            tol("argmax"),
            run,
        );
    }
}

/// The tolerance of an op on f32 data.
fn tol(op: &str) -> super::Tolerance {
    tolerance(op, GgmlType::F32)
}
