//! Matrix product against a stored weight: `out[t, r] = Σ_k W[r, k] · x[t, k]`.
//! `W: [rows, cols]` in any stored format, `x: [n, cols]`, `out: [n, rows]`.
//!
//! The reference dequantizes one weight row at a time and accumulates in f64. It may spread
//! weight rows over threads (rows are independent, the sum inside a row is still naive): the
//! whole-model reference would otherwise take minutes per prompt.

use plumb_core::HostWeight;
use rayon::prelude::*;

use crate::error::Result;
use crate::shapes;

pub fn reference(
    w: &HostWeight,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    threads: bool,
) -> Result<()> {
    let (rows, cols) = (w.rows, w.cols);
    shapes::matmul((rows, cols), x.len(), n, out.len())?;
    // Column r of out for all tokens; computed per weight row and scattered.
    let row_dots = |r: usize| -> Result<Vec<f32>> {
        let mut wr = vec![0f32; cols];
        w.dequantize_row(r, &mut wr)?;
        Ok((0..n)
            .map(|t| {
                let xt = &x[t * cols..(t + 1) * cols];
                let s: f64 = wr.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
                s as f32
            })
            .collect())
    };
    let cols_out: Vec<Vec<f32>> = if threads {
        (0..rows)
            .into_par_iter()
            .map(row_dots)
            .collect::<Result<_>>()?
    } else {
        (0..rows).map(row_dots).collect::<Result<_>>()?
    };
    for (r, col) in cols_out.iter().enumerate() {
        for (t, v) in col.iter().enumerate() {
            out[t * rows + r] = *v;
        }
    }
    Ok(())
}
