//! RMS normalization, alone and fused with the residual add.
//!
//! `out[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * w[i]` for each of `rows` rows of `dim`.

use crate::error::{ensure, Result};

pub fn reference(
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    check(x.len(), w.len(), out.len(), rows, dim)?;
    for r in 0..rows {
        let row = &x[r * dim..(r + 1) * dim];
        let ss: f64 = row.iter().map(|&v| v as f64 * v as f64).sum();
        let inv = 1.0 / (ss / dim as f64 + eps as f64).sqrt();
        for i in 0..dim {
            out[r * dim + i] = (row[i] as f64 * inv) as f32 * w[i];
        }
    }
    Ok(())
}

/// `residual += x`, then `out = rms_norm(residual)`.
#[allow(clippy::too_many_arguments)]
pub fn reference_add(
    residual: &mut [f32],
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    check(x.len(), w.len(), out.len(), rows, dim)?;
    ensure(residual.len() >= rows * dim, "add_rms_norm", || {
        "residual too short".into()
    })?;
    for i in 0..rows * dim {
        residual[i] += x[i];
    }
    reference(residual, w, eps, rows, dim, out)
}

fn check(x: usize, w: usize, out: usize, rows: usize, dim: usize) -> Result<()> {
    ensure(
        w >= dim && x >= rows * dim && out >= rows * dim,
        "rms_norm",
        || format!("rows {rows} × dim {dim} do not fit x ({x}), weight ({w}) and out ({out})"),
    )
}
