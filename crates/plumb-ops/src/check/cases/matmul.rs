//! Cases of the matmul: every weight format, single rows, odd heights, batches of every size
//! class a backend may treat differently (1, 2-8, 9-64, above), and `matmul_many`.

use plumb_core::HostWeight;

use super::{cols_for, tolerance, weight_types, Ctx, Output};
use crate::backend::Backend;
use crate::error::Result;
use crate::ops;

pub(super) fn matmul<B: Backend>(cx: &mut Ctx<B>, quick: bool) {
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
    for ty in weight_types() {
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
                let scales = product_scales(&w, &x, n)?;
                Ok(vec![Output::scaled(
                    cx.down(&out, want.len())?,
                    want,
                    scales,
                )])
            })();
            cx.case(
                "matmul",
                ty.name().into(),
                format!("W {rows}×{cols}, n {n}"),
                tolerance("matmul", ty),
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
                    wants.push((want, product_scales(&w, &x, n)?));
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
                    res.push(Output::scaled(cx.down(out, want.len())?, want, scale));
                }
                Ok(res)
            })();
            cx.case(
                "matmul",
                ty.name().into(),
                format!("3 W {heights:?}×{cols}, n {n}, one call"),
                tolerance("matmul", ty),
                run,
            );
        }
    }
}

/// `[n, rows]`: for output (t, r), `Σ_k (W[r,k] · x[t,k])²`, the scale a dot product's
/// rounding error is measured against (it does not vanish when the sum cancels).
fn product_scales(w: &HostWeight, x: &[f32], n: usize) -> Result<Vec<f64>> {
    let (rows, cols) = (w.rows, w.cols);
    let mut row = vec![0f32; cols];
    let mut scales = vec![0f64; n * rows];
    for r in 0..rows {
        w.dequantize_row(r, &mut row)?;
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            scales[t * rows + r] = row
                .iter()
                .zip(xt)
                .map(|(&a, &b)| (a as f64 * b as f64).powi(2))
                .sum::<f64>();
        }
    }
    Ok(scales)
}
