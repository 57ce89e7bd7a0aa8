//! RMS normalization, alone and fused with the residual add.
//!
//! `out[r, i] = x[r, i] / sqrt(mean_j(x[r, j]^2) + eps) * w[i]` for each of `rows` rows of `dim`.

use crate::error::Result;
use crate::shapes;

pub fn reference(
    x: &[f32],
    w: &[f32],
    eps: f32,
    rows: usize,
    dim: usize,
    out: &mut [f32],
) -> Result<()> {
    shapes::rms_norm(x.len(), w.len(), rows, dim, out.len())?;
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
    shapes::add_rms_norm(residual.len(), x.len(), w.len(), rows, dim, out.len())?;
    for i in 0..rows * dim {
        residual[i] += x[i];
    }
    reference(residual, w, eps, rows, dim, out)
}
